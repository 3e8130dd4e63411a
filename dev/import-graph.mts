// Prints the import graph between src/'s folders (a file directly in src/ counts as its own node,
// e.g. "tensor.ts") with the files behind each edge, and any cycle between folders; exits 1 on a cycle.
//   node --import tsx dev/import-graph.mts
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";

const SRC = resolve(import.meta.dirname, "../src");

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    return statSync(path).isDirectory() ? files(path) : path.endsWith(".ts") ? [path] : [];
  });
}

/** The node of a file: its first folder under src/ (webgpu/attention counts as webgpu), or its name. */
const node = (path: string) => relative(SRC, path).split("/")[0];

const edges = new Map<string, Map<string, string[]>>();
for (const file of files(SRC)) {
  const from = node(file);
  for (const m of readFileSync(file, "utf8").matchAll(/^(?:import|export)\s[^;]*?from\s+"(\.[^"]+)"/gm)) {
    const target = resolve(dirname(file), m[1].replace(/\.js$/, ".ts"));
    const to = node(target);
    if (to === from) continue;
    const byTarget = edges.get(from) ?? new Map<string, string[]>();
    edges.set(from, byTarget);
    byTarget.set(to, [...(byTarget.get(to) ?? []), `${relative(SRC, file)} -> ${relative(SRC, target)}`]);
  }
}

for (const from of [...edges.keys()].sort()) {
  const targets = edges.get(from)!;
  console.log(`${from} -> ${[...targets.keys()].sort().join(", ")}`);
}

// cycles: a depth-first search over folders; a back edge closes one
const cycles: string[][] = [];
const state = new Map<string, "open" | "done">();
function visit(n: string, path: string[]): void {
  state.set(n, "open");
  for (const to of edges.get(n)?.keys() ?? []) {
    if (state.get(to) === "open") cycles.push([...path.slice(path.indexOf(to)), n, to]);
    else if (!state.has(to)) visit(to, [...path, n]);
  }
  state.set(n, "done");
}
for (const n of [...edges.keys()].sort()) if (!state.has(n)) visit(n, []);

if (cycles.length === 0) {
  console.log("no cycles between folders");
} else {
  for (const cycle of cycles) {
    console.log(`cycle: ${cycle.join(" -> ")}`);
    for (let i = 0; i + 1 < cycle.length; i++) for (const e of edges.get(cycle[i])!.get(cycle[i + 1])!) console.log(`  ${e}`);
  }
  process.exitCode = 1;
}
