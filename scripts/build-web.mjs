// Builds the playground (web/) into static files in web/dist: index.html and main.js, the page's
// code and the package's browser entry (src/index.ts) bundled by esbuild. Serve web/dist with any
// static server, or run `npm run playground` (scripts/playground.mjs), which builds and serves it.
import { copyFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const web = fileURLToPath(new URL("../web/", import.meta.url));

/** Writes web/dist/index.html and web/dist/main.js; returns the folder. */
export async function buildWeb() {
  mkdirSync(`${web}dist`, { recursive: true });
  await build({
    entryPoints: [`${web}main.ts`],
    outfile: `${web}dist/main.js`,
    // "moba" is the package's browser entry; bundled from its source, so the page follows src/ without a tsc build
    alias: { moba: fileURLToPath(new URL("../src/index.ts", import.meta.url)) },
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    minify: true,
    sourcemap: true,
    logLevel: "warning",
  });
  copyFileSync(`${web}index.html`, `${web}dist/index.html`);
  return `${web}dist`;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.log(`built ${await buildWeb()}`);
