// Records which sources the committed build came from: a SHA-256 over the files that
// decide the build, which tests/test_dashboard_build.py recomputes (no Node needed).
import { createHash } from "node:crypto";
import { readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL(".", import.meta.url).pathname;
const out = process.argv[2] ?? join(root, "../src/unspool/dashboard/static");
const fixed = ["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts"];

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? walk(path) : [path];
  });
}

const files = [...fixed.map((f) => join(root, f)), ...walk(join(root, "src"))]
  .map((p) => relative(root, p).split("\\").join("/"))
  .sort();
const hash = createHash("sha256");
for (const f of files) {
  hash.update(f + "\0");
  hash.update(readFileSync(join(root, f)));
  hash.update("\0");
}
writeFileSync(join(out, "build-info.json"), JSON.stringify({ sources_sha256: hash.digest("hex"), files }, null, 1) + "\n");
