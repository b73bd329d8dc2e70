import { defineConfig } from "vite";

// The build goes into the Python package, which serves it: no Node at run time.
export default defineConfig({
  base: "./",
  build: {
    outDir: "../src/unspool/dashboard/static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 2000,
  },
  worker: { format: "es" },
});
