// Where a WebGPU training step's host time goes: the JavaScript of STEPS steps of the bench-train model
// (hidden 512, 8 layers, 8/4 heads, after two warm-up steps) under V8's sampling profiler, as self and
// inclusive milliseconds per step by function, beside the steps' wall time with the profiler off, and
// each step's submits on the host's clock: when the first and last went in, and how long the queue sat
// empty waiting for the next (when a submit's work was done, by onSubmittedWorkDone, to the next submit). Runs
// the built package (dist/), so the profile names real lines; `npx tsc -p tsconfig.json` first.
// Usage: node dev/profile-step-host.mjs TOKENS [moba|full] [f32|f16] [STEPS] [FILE.cpuprofile]
import fs from "node:fs";
import { Session } from "node:inspector/promises";
import { benchModel, benchStep } from "../dist/run/benchTrain.js";
import { getDevice } from "../dist/webgpu/device.js";
import { webgpuModelBackend } from "../dist/webgpu/model.js";

const T = Number(process.argv[2] ?? 8192);
const kind = process.argv[3] ?? "moba";
const precision = process.argv[4] ?? "f16";
const steps = Number(process.argv[5] ?? 5);
const file = process.argv[6];
const backend = await webgpuModelBackend(precision, false); // as training runs: no poison fills
const { step } = benchStep(benchModel(), T, kind, backend);
const timed = async () => {
  const ms = [];
  for (let s = 0; s < steps; s++) {
    const t0 = performance.now();
    await step();
    ms.push(performance.now() - t0);
  }
  return ms.map((x) => x.toFixed(1)).join(", ");
};
for (let s = 0; s < 2; s++) await step();
console.log(`${kind} ${precision} T=${T}: step ms without the profiler ${await timed()}`);

// the submits of one step: host times (ms after the step began) of each submit and of its work being done
const { queue } = (await getDevice()).device;
const submit = queue.submit.bind(queue);
const submits = [];
queue.submit = (buffers) => {
  const entry = { at: performance.now(), done: Infinity };
  submits.push(entry);
  submit(buffers);
  queue.onSubmittedWorkDone().then(() => (entry.done = performance.now()));
};
const t0 = performance.now();
await step();
const end = performance.now() - t0;
queue.submit = submit;
let empty = 0;
const waits = [];
for (let i = 1; i < submits.length; i++) {
  const wait = submits[i].at - submits[i - 1].done;
  if (wait > 0) ((empty += wait), waits.push(wait));
}
console.log(
  `  one step, ${end.toFixed(1)} ms: ${submits.length} submits, the first at ${(submits[0].at - t0).toFixed(1)} ms, the last at ` +
    `${(submits.at(-1).at - t0).toFixed(1)} ms (its work done at ${(submits.at(-1).done - t0).toFixed(1)}); the queue empty ${empty.toFixed(1)} ms ` +
    `between submits (longest ${waits
      .sort((a, b) => b - a)
      .slice(0, 4)
      .map((w) => w.toFixed(1))
      .join(", ")})`,
);
const session = new Session();
session.connect();
await session.post("Profiler.enable");
await session.post("Profiler.setSamplingInterval", { interval: 100 }); // µs
await session.post("Profiler.start");
console.log(`  with the profiler ${await timed()}`);
const { profile } = await session.post("Profiler.stop");
if (file) fs.writeFileSync(file, JSON.stringify(profile));

// self time per sampled node, summed by function; inclusive time counts each function once per sample's stack
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const name = (n) =>
  `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.split("/").slice(-2).join("/")}:${n.callFrame.lineNumber + 1}`;
const self = new Map();
const inclusive = new Map();
profile.samples.forEach((id, i) => {
  const us = profile.timeDeltas[i + 1] ?? 0; // a sample's time runs until the next one
  const n = byId.get(id);
  self.set(name(n), (self.get(name(n)) ?? 0) + us);
  const seen = new Set();
  for (let x = id; x !== undefined; x = parent.get(x)) {
    const nm = name(byId.get(x));
    if (!seen.has(nm)) inclusive.set(nm, (inclusive.get(nm) ?? 0) + us);
    seen.add(nm);
  }
});
const top = (m, k) =>
  [...m]
    .sort((a, b) => b[1] - a[1])
    .slice(0, k)
    .map(([n, us]) => `  ${(us / 1000 / steps).toFixed(2).padStart(8)} ms/step  ${n}`)
    .join("\n");
console.log(`self time\n${top(self, 30)}\ninclusive time\n${top(inclusive, 45)}`);
process.exit(0);
