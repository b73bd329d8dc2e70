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
    rollupOptions: {
      output: {
        // pixi.js loads parts of itself with import(): split into chunks that import each other,
        // a chunk could run before one it needs had initialised ("Cannot access 'D' before
        // initialization", seen in the browser tests). One chunk for all of pixi has no such order.
        manualChunks: (id: string) => (id.includes("node_modules/pixi.js") ? "pixi" : undefined),
      },
    },
  },
  worker: { format: "es" },
});
