// Where a WebGPU training step's GPU time goes, by timestamp queries on every dispatch of one step
// (after two warm-up steps): GPU milliseconds per dispatch label, summed into GEMMs, attention and
// the rest, beside the step's wall time, and the longest idle gaps between dispatches (where the GPU waited for the host). The bench-train model (hidden 512, 8 layers, 8/4 heads).
// Usage: node --import tsx dev/profile-step-gpu.mts TOKENS [moba|full] [f32|f16]
import { benchModel, benchStep } from "../src/run/benchTrain.js";
import { getDevice } from "../src/webgpu/device.js";
import { startProfile, stopProfile } from "../src/webgpu/kernel.js";
import { webgpuModelBackend } from "../src/webgpu/model.js";

const T = Number(process.argv[2] ?? 32768);
const kind = (process.argv[3] ?? "moba") as "moba" | "full";
const precision = (process.argv[4] ?? "f16") as "f32" | "f16";
const gpu = await getDevice();
const backend = await webgpuModelBackend(precision, false); // as training runs: no poison fills
const { step } = benchStep(benchModel(), T, kind, backend);
for (let s = 0; s < 2; s++) await step();
await gpu.device.queue.onSubmittedWorkDone();
startProfile(gpu, 4096 / 2);
const t0 = performance.now();
await step();
await gpu.device.queue.onSubmittedWorkDone();
const wall = performance.now() - t0;
const dispatches = await stopProfile();
const byLabel = new Map<string, { ms: number; calls: number }>();
for (const d of dispatches) {
  const label = d.label.replace(/\d+/g, "#");
  const e = byLabel.get(label) ?? { ms: 0, calls: 0 };
  e.ms += d.ms;
  e.calls++;
  byLabel.set(label, e);
}
const category = (label: string) =>
  /gemm/.test(label)
    ? "GEMM"
    : /poison|fill/.test(label)
      ? "poison fills"
      : /adamw|square/.test(label)
        ? "optimizer"
        : /rms|rope|swiglu|add|embedding|cross|column/.test(label)
          ? "other layers"
          : "attention";
const sums = new Map<string, number>();
for (const [label, e] of byLabel) sums.set(category(label), (sums.get(category(label)) ?? 0) + e.ms);
const total = [...byLabel.values()].reduce((a, e) => a + e.ms, 0);
const span = Math.max(...dispatches.map((d) => d.start + d.ms));
console.log(
  `${kind} ${precision} T=${T}: wall ${wall.toFixed(1)} ms, GPU busy ${total.toFixed(1)} ms (sum of dispatches), first start to last end ${span.toFixed(1)} ms, ${dispatches.length} dispatches`,
);
for (const [name, ms] of [...sums].sort((a, b) => b[1] - a[1]))
  console.log(`  ${name.padEnd(14)} ${ms.toFixed(1).padStart(8)} ms  ${((100 * ms) / total).toFixed(0).padStart(3)}%`);
for (const [label, e] of [...byLabel].sort((a, b) => b[1].ms - a[1].ms).slice(0, 14))
  console.log(`    ${label.padEnd(34)} ${e.ms.toFixed(2).padStart(8)} ms ${String(e.calls).padStart(5)} calls`);
// idle gaps: the GPU waiting for the host to record or submit (dispatches in recording order)
const gaps = dispatches
  .slice(1)
  .map((d, i) => ({ ms: d.start - (dispatches[i].start + dispatches[i].ms), after: dispatches[i].label, before: d.label, at: d.start }));
const idle = gaps.reduce((a, g) => a + Math.max(0, g.ms), 0);
console.log(
  `  idle between dispatches ${idle.toFixed(1)} ms; before the first dispatch and after the last: ${(wall - span).toFixed(1)} ms; longest gaps:`,
);
for (const g of gaps.sort((a, b) => b.ms - a.ms).slice(0, 8))
  console.log(`    ${g.ms.toFixed(2).padStart(7)} ms at ${g.at.toFixed(1).padStart(6)} ms: ${g.after} -> ${g.before}`);
process.exit(0);
