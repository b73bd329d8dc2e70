import { defineConfig, type Plugin } from "vite";

// pixi.js probes, when its module loads, whether a 2D canvas can tint by "multiply": it draws
// and reads back pixels, a GPU read-back that held the main thread 0.3-0.8 s in headless
// Chromium. Only pixi's 2D-canvas renderer tints that way, and the dashboard draws with WebGL.
function skipCanvasTintProbe(): Plugin {
  const probe = "canUseMultiply: canUseNewCanvasBlendModes(),";
  return {
    name: "unspool-skip-canvas-tint-probe",
    transform(code: string, id: string) {
      if (!id.includes("renderers/canvas/utils/canvasUtils")) return null;
      if (!code.includes(probe)) throw new Error(`pixi.js changed: ${probe} not found in ${id}`);
      return code.replace(probe, "canUseMultiply: false,");
    },
  };
}

// The build goes into the Python package, which serves it: no Node at run time.
export default defineConfig({
  base: "./",
  plugins: [skipCanvasTintProbe()],
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
