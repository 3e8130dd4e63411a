// Host time of one forward call: recording until submit, then submit until idle (GPU), and the
// latency of an empty submit + onSubmittedWorkDone; MoBA and full attention, f16, head dim 128.
// Usage (device): node --import tsx dev/host-overhead.mts [TOKENS] [HEADS,...]   (default 32768 1,8)
import { getDevice } from "../src/webgpu/device.ts";
import { Buffers } from "../src/webgpu/kernel.ts";
import { forwardOnGpu } from "../src/webgpu/attention/index.ts";
import { fullProblem, mobaProblem } from "../src/attention/problem.ts";
import { uniformTensor, seeded, median } from "../src/run/util.ts";
const gpu = await getDevice();
const fence: number[] = [];
for (let i = 0; i < 50; i++) {
  const t0 = performance.now();
  gpu.device.queue.submit([gpu.device.createCommandEncoder().finish()]);
  await gpu.device.queue.onSubmittedWorkDone();
  fence.push(performance.now() - t0);
}
console.log(`empty submit + onSubmittedWorkDone: median ${median(fence).toFixed(3)} ms`);
const T = Number(process.argv[2] ?? 32768);
for (const heads of (process.argv[3] ?? "1,8").split(",").map(Number)) {
  const r = seeded(1);
  const [q, k, v] = [0, 1, 2].map(() => uniformTensor(r, [T, heads, 128], 1));
  for (const [name, p] of [
    ["MoBA", mobaProblem({ q, k, v }, { blockSize: 512, topK: 3, precision: "f16" })],
    ["full", fullProblem({ q, k, v }, { precision: "f16" })],
  ] as const) {
    const rec: number[] = [],
      rest: number[] = [];
    const mem0 = new Buffers(gpu);
    const t = { q: mem0.storage(q.data, "q"), k: mem0.storage(k.data, "k"), v: mem0.storage(v.data, "v") };
    for (let i = 0; i < 20; i++) {
      const mem = new Buffers(gpu);
      await gpu.device.queue.onSubmittedWorkDone();
      const t0 = performance.now();
      await forwardOnGpu(mem, p, t);
      const t1 = performance.now();
      await gpu.device.queue.onSubmittedWorkDone();
      const t2 = performance.now();
      if (i >= 5) {
        rec.push(t1 - t0);
        rest.push(t2 - t1);
      }
      mem.destroy();
    }
    console.log(`${name} ${T} x ${heads}: recording to submit ${median(rec).toFixed(2)} ms, then to idle ${median(rest).toFixed(2)} ms`);
  }
}
process.exit(0);
