// The browser entry bundles: esbuild (platform=browser) follows every import of the package's
// "browser" export and the test fails on any Node builtin or on Dawn (the `webgpu` package), which
// only Node loads, at run time (src/runtime.ts). Prints the minified bundle's gzipped size (README).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { builtinModules } from "node:module";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build, type Plugin } from "esbuild";

const root = fileURLToPath(new URL("..", import.meta.url));

test("the browser entry bundles for the browser without a Node builtin or Dawn", async () => {
  const pkg = JSON.parse(readFileSync(`${root}package.json`, "utf8"));
  const entry: string = pkg.exports["."].browser.default;
  assert.equal(entry, "./dist/index.js");
  const builtins = new Set(builtinModules);
  const nodeOnly: string[] = [];
  // every import esbuild resolves passes here: a Node builtin (with or without "node:") or Dawn is recorded
  const guard: Plugin = {
    name: "node-only",
    setup(b) {
      b.onResolve({ filter: /.*/ }, (args) => {
        const name = args.path.replace(/^node:/, "");
        if (args.path.startsWith("node:") || builtins.has(name) || builtins.has(name.split("/")[0]) || /^webgpu(\/|$)/.test(args.path)) {
          nodeOnly.push(`${args.path} (imported by ${args.importer.replace(root, "")})`);
          return { path: args.path, external: true };
        }
        return undefined;
      });
    },
  };
  const result = await build({
    entryPoints: [`${root}${entry}`],
    bundle: true,
    platform: "browser",
    format: "esm",
    minify: true,
    write: false,
    logLevel: "silent",
    plugins: [guard],
  });
  assert.deepEqual(nodeOnly, [], "the browser entry reaches Node-only modules");
  const bytes = result.outputFiles[0].contents;
  console.log(
    `browser bundle: ${(bytes.length / 1024).toFixed(1)} KiB minified, ${(gzipSync(bytes).length / 1024).toFixed(1)} KiB gzipped`,
  );
});
