// What the host copies cost: one forward through the host-array API (q, k, v uploaded, out, lse and
// routing read back; f16 inputs rounded on the host) against the GPU-buffer API on buffers already
// on the device (until the queue is idle), MoBA (block 512, top-3) and full attention, 32K tokens.
// Usage (device): node --import tsx dev/host-copies.mts [TOKENS] [HEADS]
import { flashAttention, flashAttentionOnGpu, mobaAttention, mobaAttentionOnGpu, type Tensor } from "../src/index.ts";
import { getDevice } from "../src/webgpu/device.ts";
import { median, seeded, uniformTensor } from "../src/run/util.ts";

const tokens = Number(process.argv[2] ?? 32768);
const heads = Number(process.argv[3] ?? 8);
const D = 128;
const gpu = await getDevice();
const r = seeded(1);
const [q, k, v] = [0, 1, 2].map(() => uniformTensor(r, [tokens, heads, D], 1));
const onGpu = (t: Tensor) => {
  const buffer = gpu.device.createBuffer({ size: t.data.byteLength, usage: GPUBufferUsage.STORAGE, mappedAtCreation: true });
  new Float32Array(buffer.getMappedRange()).set(t.data);
  buffer.unmap();
  return { buffer, shape: t.shape };
};
const buffers = { q: onGpu(q), k: onGpu(k), v: onGpu(v) };

async function time(run: () => Promise<unknown>): Promise<number> {
  const ms: number[] = [];
  for (let i = 0; i < 8; i++) {
    await gpu.device.queue.onSubmittedWorkDone();
    const t0 = performance.now();
    await run();
    await gpu.device.queue.onSubmittedWorkDone();
    if (i >= 3) ms.push(performance.now() - t0);
  }
  return median(ms);
}

console.log(`${gpu.adapterInfo}; ${tokens} tokens x ${heads} heads x headDim ${D}; median of 5 after 3 warm-ups, ms`);
console.log("| attention | precision | host arrays (upload + read back) | GPU buffers | host copies cost |");
console.log("| --- | --- | ---: | ---: | ---: |");
for (const precision of ["f16", "f32"] as const) {
  for (const [name, host, device] of [
    [
      "MoBA 512/3",
      () => mobaAttention({ q, k, v }, { blockSize: 512, topK: 3, precision, backend: "webgpu" }),
      async () => (await mobaAttentionOnGpu(buffers, { blockSize: 512, topK: 3, precision })).release(),
    ],
    [
      "full",
      () => flashAttention({ q, k, v }, { precision, backend: "webgpu" }),
      async () => (await flashAttentionOnGpu(buffers, { precision })).release(),
    ],
  ] as const) {
    const [a, b] = [await time(host), await time(device)];
    console.log(
      `| ${name} | ${precision} | ${a.toFixed(1)} | ${b.toFixed(1)} | ${(a - b).toFixed(1)} (${((100 * (a - b)) / a).toFixed(0)} %) |`,
    );
  }
}
process.exit(0);
