// GPU time of every kernel of one MoBA and one full-attention forward (and backward), from
// timestamp queries: where MoBA's time goes beside the ideal FLOP ratio.
// Usage: node --import tsx dev/profile-attention.mts [TOKENS] [HEADS] [f32|f16] [BLOCK] [TOPK] [backward]
import { fullProblem, mobaProblem, type Precision } from "../src/attention/problem.ts";
import { backwardOnGpu, forwardOnGpu } from "../src/webgpu/attention/index.ts";
import { getDevice } from "../src/webgpu/device.ts";
import { Buffers, startProfile, stopProfile } from "../src/webgpu/kernel.ts";
import { seeded, table, uniformTensor } from "../src/run/util.ts";

const [tokens, heads] = [Number(process.argv[2] ?? 32768), Number(process.argv[3] ?? 8)];
const precision = (process.argv[4] ?? "f16") as Precision;
const [blockSize, topK] = [Number(process.argv[5] ?? 512), Number(process.argv[6] ?? 3)];
const withBackward = process.argv[7] === "backward";
const headDim = 128;
const gpu = await getDevice();
const random = seeded(3);
const shape = [tokens, heads, headDim];
const [q, k, v, dout] = [2, 2, 1, 1].map((spread) => uniformTensor(random, shape, spread));
const inputs = new Buffers(gpu);
const t = { q: inputs.storage(q.data, "q"), k: inputs.storage(k.data, "k"), v: inputs.storage(v.data, "v") };
const g = inputs.storage(dout.data, "dout");

const rows: string[][] = [];
for (const [name, p] of [
  ["MoBA", mobaProblem({ q, k, v }, { blockSize, topK, precision })],
  ["full", fullProblem({ q, k, v }, { precision })],
] as const) {
  // runs for half a second first: compiling, filling the buffer pool and bringing the GPU's clock up
  // from idle (the H100 idles at 345 MHz: a short run right after idle measured up to 5x slow)
  const warmUp = performance.now();
  for (;;) {
    const last = performance.now() - warmUp > 500;
    const mem = new Buffers(gpu);
    if (last) startProfile(gpu);
    const wall = performance.now();
    const r = await forwardOnGpu(mem, p, t);
    if (withBackward) await backwardOnGpu(mem, p, t, r.out, r.lse, g, r.routed);
    await gpu.device.queue.onSubmittedWorkDone();
    const wallMs = performance.now() - wall;
    mem.destroy();
    if (!last) continue;
    const times = await stopProfile();
    const byKind = new Map<string, { count: number; ms: number }>();
    for (const { label, ms } of times) {
      const kind = label.replace(/^poison .*/, "poison");
      const e = byKind.get(kind) ?? { count: 0, ms: 0 };
      byKind.set(kind, { count: e.count + 1, ms: e.ms + ms });
    }
    const gpuMs = times.reduce((a, x) => a + x.ms, 0);
    for (const [kind, e] of byKind) rows.push([name, kind, String(e.count), e.ms.toFixed(3), `${((100 * e.ms) / gpuMs).toFixed(1)}%`]);
    rows.push([name, "sum of kernels", "", gpuMs.toFixed(3), ""], [name, "wall clock", "", wallMs.toFixed(3), ""]);
    break;
  }
}
console.log(
  `${tokens} tokens x ${heads} heads, headDim ${headDim}, ${precision}, block ${blockSize} / top-${topK}${withBackward ? ", forward + backward" : ""} on ${gpu.adapterInfo}`,
);
console.log(table(["attention", "kernel", "dispatches", "GPU ms", "share"], rows));
process.exit(0);
