// Builds the page into ../internal/web/dist, where the Go package embeds it.
// Run with `npm run build`; CI (web/ci.sh) rebuilds and fails when the
// committed bundle differs, so the build must be deterministic: no
// timestamps, no absolute paths, no source maps in the output.
import * as esbuild from "esbuild";
import { copyFile, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "internal", "web", "dist");
await mkdir(out, { recursive: true });

await esbuild.build({
  absWorkingDir: here,
  entryPoints: ["src/main.js"],
  outfile: join(out, "app.js"),
  bundle: true,
  format: "esm",
  target: ["es2022"],
  platform: "browser",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
});
await esbuild.build({
  absWorkingDir: here,
  entryPoints: ["src/app.css"],
  outfile: join(out, "app.css"),
  bundle: true,
  minify: true,
  logLevel: "warning",
});
await copyFile(join(here, "index.html"), join(out, "index.html"));
