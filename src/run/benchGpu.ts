// `moba bench --backend webgpu`: MoBA against full attention on the GPU. Inputs stay on the GPU.
// Each measurement is timed twice: on the GPU by timestamp queries (first dispatch's start to the
// last one's end: the kernels and the gaps between them, as the issue asks), where the device has
// them; and as wall time from the first command recorded to the queue being idle
// (onSubmittedWorkDone), which adds the host's recording and the fence's latency: what a user
// waits for. Median of several runs after a warm-up.
import { attendedKeys, type AttentionProblem, fullProblem, mobaProblem, type Precision } from "../attention/problem.js";
import { checked, getDevice, type MobaDevice } from "../webgpu/device.js";
import { Buffers, startProfile, stopProfile } from "../webgpu/kernel.js";
import { backwardOnGpu, forwardOnGpu, type GpuTensors } from "../webgpu/attention/index.js";
import { appendFile } from "node:fs/promises";
import { barChart } from "./plot.js";
import { median, table, uniformTensor, seeded } from "./util.js";

/** Each row is also appended as JSON to $MOBA_BENCH_JSONL when set, so a cut-off run keeps what it measured. */
async function appendResult(row: GpuBenchRow): Promise<void> {
  if (process.env.MOBA_BENCH_JSONL) await appendFile(process.env.MOBA_BENCH_JSONL, JSON.stringify(row) + "\n");
}

export interface GpuBenchCase {
  tokens: number;
  heads: number; // query heads = kv heads
  headDim: number;
  blockSize: number;
  topK: number;
  precision: Precision;
}

export interface GpuBenchRow extends GpuBenchCase {
  /** Wall clock, ms. */
  mobaForwardMs: number;
  fullForwardMs: number;
  mobaTrainMs: number;
  fullTrainMs: number;
  /** Host time of the forward (recording and submitting, until the call returns; the GPU may work meanwhile), ms. */
  mobaForwardHostMs: number;
  fullForwardHostMs: number;
  /** GPU time by timestamp queries, ms (NaN without timestamp-query). */
  mobaForwardGpuMs: number;
  fullForwardGpuMs: number;
  mobaTrainGpuMs: number;
  fullTrainGpuMs: number;
  idealRatio: number;
  fullForwardTflops: number;
  /** GPU memory of the forward: the inputs plus every buffer the call takes (our own count), MiB. */
  mobaForwardMiB: number;
  fullForwardMiB: number;
  /** The same for forward and backward: the inputs and dout plus the most the two calls' buffers held at once, MiB. */
  mobaTrainMiB: number;
  fullTrainMiB: number;
  runs: number;
}

const WARM_UP_MS = 500;

/**
 * Wall time of `run` to an idle queue; the host's part of it, until `run` returns (recording and
 * submitting: the GPU may work meanwhile); and its GPU time (first dispatch's start to last
 * dispatch's end; NaN without timestamps).
 */
export async function time(gpu: MobaDevice, run: () => Promise<unknown>): Promise<{ wall: number; host: number; gpu: number }> {
  await gpu.device.queue.onSubmittedWorkDone();
  if (gpu.timestamps) startProfile(gpu);
  const start = performance.now();
  await run();
  const host = performance.now() - start;
  await gpu.device.queue.onSubmittedWorkDone();
  const wall = performance.now() - start;
  if (!gpu.timestamps) return { wall, host, gpu: NaN };
  const dispatches = await stopProfile();
  return { wall, host, gpu: Math.max(...dispatches.map((d) => d.start + d.ms)) };
}

interface Measured {
  forward: number;
  train: number;
  /** The forward's host time: recording and submitting, until forwardOnGpu returns. */
  forwardHost: number;
  forwardGpu: number;
  trainGpu: number;
  runs: number;
  bytes: number;
  /** The most bytes the forward's and backward's buffers held at once (NaN without a backward). */
  trainBytes: number;
}

/** Times forward and forward+backward of one problem; buffers of each run are freed after it. */
async function measure(
  gpu: MobaDevice,
  p: AttentionProblem,
  t: GpuTensors,
  dout: GPUBuffer,
  runs: number,
  maxSeconds: number,
  forwardOnly: boolean,
): Promise<Measured> {
  let bytes = 0;
  let trainBytes = NaN;
  const once = async () => {
    const mem = new Buffers(gpu);
    try {
      let result!: Awaited<ReturnType<typeof forwardOnGpu>>;
      const forward = await time(gpu, async () => {
        result = await forwardOnGpu(mem, p, t);
      });
      bytes = mem.bytes;
      const backward = forwardOnly
        ? { wall: NaN, gpu: NaN }
        : await time(gpu, () => backwardOnGpu(mem, p, t, result.out, result.lse, dout, result.routed));
      if (!forwardOnly) trainBytes = mem.peakBytes;
      return {
        forward: forward.wall,
        train: forward.wall + backward.wall,
        forwardHost: forward.host,
        forwardGpu: forward.gpu,
        trainGpu: forward.gpu + backward.gpu,
      };
    } finally {
      mem.destroy();
    }
  };
  // Warm-up runs for at least WARM_UP_MS (one run at least): compiling, filling the buffer pool and
  // bringing the GPU's clock up from idle. The H100 idles at 345 MHz, and MoBA's ~10 ms runs at 32K
  // measured up to 1.8x slower right after idle than after a few hundred milliseconds of load.
  const warmUp = performance.now();
  do await once();
  while (performance.now() - warmUp < WARM_UP_MS);
  const times: Awaited<ReturnType<typeof once>>[] = [];
  const started = performance.now();
  for (let run = 0; run < runs; run++) {
    times.push(await once());
    if (run >= 2 && (performance.now() - started) / 1000 > maxSeconds) break; // long rows: fewer runs, said in the table
  }
  const middle = (key: keyof (typeof times)[number]) => median(times.map((x) => x[key]));
  return {
    forward: middle("forward"),
    train: middle("train"),
    forwardHost: middle("forwardHost"),
    forwardGpu: middle("forwardGpu"),
    trainGpu: middle("trainGpu"),
    runs: times.length,
    bytes,
    trainBytes,
  };
}

/**
 * fullUpTo: longer inputs time MoBA only (full attention in float32 would take minutes per run there);
 * forwardOnly: no backward (the f16 path's backward runs the f32 kernels).
 */
export async function benchGpu(
  cases: GpuBenchCase[],
  runs: number,
  print: (line: string) => void,
  maxSeconds = 60,
  fullUpTo = Infinity,
  forwardOnly = false,
): Promise<GpuBenchRow[]> {
  const gpu = await getDevice();
  const precisions = [...new Set(cases.map((c) => c.precision))].join(", ");
  print(
    `moba bench --backend webgpu on ${gpu.adapterInfo} (shader-f16 ${gpu.f16}, subgroup matrices ${gpu.subgroupMatrixConfigs.join(", ") || "none"}); ` +
      `precision ${precisions}; median of up to ${runs} runs`,
  );
  const rows: GpuBenchRow[] = [];
  for (const c of cases) {
    const random = seeded(c.tokens + c.heads);
    const shape = [c.tokens, c.heads, c.headDim];
    const [q, k, v, dout] = [2, 2, 1, 1].map((spread) => uniformTensor(random, shape, spread));
    const mem = new Buffers(gpu);
    const row = await checked(gpu, `bench ${c.tokens} tokens`, mem, async () => {
      const t = { q: mem.storage(q.data, "q"), k: mem.storage(k.data, "k"), v: mem.storage(v.data, "v") };
      const g = mem.storage(dout.data, "dout");
      const moba = mobaProblem({ q, k, v }, c);
      const full = fullProblem({ q, k, v }, { precision: c.precision });
      const m = await measure(gpu, moba, t, g, runs, maxSeconds, forwardOnly);
      const f =
        c.tokens <= fullUpTo
          ? await measure(gpu, full, t, g, runs, maxSeconds, forwardOnly)
          : { forward: NaN, train: NaN, forwardHost: NaN, forwardGpu: NaN, trainGpu: NaN, runs: Infinity, bytes: NaN, trainBytes: NaN };
      const inputBytes = 3 * q.data.byteLength;
      const fullKeys = attendedKeys([0, c.tokens], c.blockSize, Infinity); // no block choice: the block size does not matter
      return {
        ...c,
        mobaForwardMs: m.forward,
        fullForwardMs: f.forward,
        mobaTrainMs: m.train,
        fullTrainMs: f.train,
        mobaForwardHostMs: m.forwardHost,
        fullForwardHostMs: f.forwardHost,
        mobaForwardGpuMs: m.forwardGpu,
        fullForwardGpuMs: f.forwardGpu,
        mobaTrainGpuMs: m.trainGpu,
        fullTrainGpuMs: f.trainGpu,
        idealRatio: fullKeys / attendedKeys([0, c.tokens], c.blockSize, c.topK),
        // by GPU time where there is one
        fullForwardTflops: (4 * c.headDim * c.heads * fullKeys) / ((Number.isNaN(f.forwardGpu) ? f.forward : f.forwardGpu) / 1000) / 1e12,
        runs: Math.min(m.runs, f.runs),
        mobaForwardMiB: (inputBytes + m.bytes) / 2 ** 20,
        fullForwardMiB: (inputBytes + f.bytes) / 2 ** 20,
        mobaTrainMiB: (inputBytes + dout.data.byteLength + m.trainBytes) / 2 ** 20,
        fullTrainMiB: (inputBytes + dout.data.byteLength + f.trainBytes) / 2 ** 20,
      };
    });
    rows.push(row);
    print(
      `  ${c.precision} ${c.tokens} tokens x ${c.heads} heads, block ${c.blockSize} / top-${c.topK}: MoBA ${row.mobaForwardMs.toFixed(2)} / ${row.mobaTrainMs.toFixed(2)} ms, full ${row.fullForwardMs.toFixed(2)} / ${row.fullTrainMs.toFixed(2)} ms (fwd / fwd+bwd, ${row.runs} runs); forward on the GPU: MoBA ${row.mobaForwardGpuMs.toFixed(2)} ms, full ${row.fullForwardGpuMs.toFixed(2)} ms`,
    );
    await appendResult(row);
  }
  print("");
  const ms = (x: number) => (Number.isNaN(x) ? "-" : x.toFixed(2));
  const ratio = (a: number, b: number) => (Number.isNaN(a) ? "-" : `${(a / b).toFixed(2)}x`);
  print(
    table(
      [
        "precision",
        "tokens",
        "heads",
        "block/top-k",
        "MoBA fwd ms",
        "full fwd ms",
        "fwd speedup",
        "MoBA fwd GPU ms",
        "full fwd GPU ms",
        "GPU fwd speedup",
        "MoBA fwd host ms",
        "full fwd host ms",
        "MoBA fwd+bwd ms",
        "full fwd+bwd ms",
        "fwd+bwd speedup",
        "GPU fwd+bwd speedup",
        "ideal",
        "full fwd TFLOP/s",
        "MoBA fwd MiB",
        "full fwd MiB",
        "MoBA fwd+bwd MiB",
        "full fwd+bwd MiB",
        "runs",
      ],
      rows.map((r) => [
        r.precision,
        String(r.tokens),
        String(r.heads),
        `${r.blockSize}/${r.topK}`,
        ms(r.mobaForwardMs),
        ms(r.fullForwardMs),
        ratio(r.fullForwardMs, r.mobaForwardMs),
        ms(r.mobaForwardGpuMs),
        ms(r.fullForwardGpuMs),
        ratio(r.fullForwardGpuMs, r.mobaForwardGpuMs),
        ms(r.mobaForwardHostMs),
        ms(r.fullForwardHostMs),
        ms(r.mobaTrainMs),
        ms(r.fullTrainMs),
        ratio(r.fullTrainMs, r.mobaTrainMs),
        ratio(r.fullTrainGpuMs, r.mobaTrainGpuMs),
        `${r.idealRatio.toFixed(2)}x`,
        ms(r.fullForwardTflops),
        ...[r.mobaForwardMiB, r.fullForwardMiB, r.mobaTrainMiB, r.fullTrainMiB].map((x) => (Number.isNaN(x) ? "-" : x.toFixed(1))),
        String(r.runs),
      ]),
    ),
  );
  return rows;
}

/** The official MoBA's forward speedup over FlashAttention-2 on an H100 (MoBA paper), by tokens. */
export const OFFICIAL_MOBA_SPEEDUP: Record<number, number> = { 32768: 0.68, 131072: 1.13, 262144: 2.17, 524288: 4.11, 1048576: 6.88 };

/** Measured MoBA/full speedups of the GPU rows beside the ideal ratio and the official MoBA figures. */
export function gpuBenchPlot(rows: GpuBenchRow[], official: Record<number, number>): string {
  const measured = rows.filter((r) => Number.isFinite(r.fullForwardMs));
  return barChart(
    `MoBA forward speedup over full attention, WebGPU (headDim 128, ${[...new Set(measured.map((r) => r.heads))].join(" or ")} head(s))`,
    measured.map((r) => `${r.tokens / 1024}K ${r.blockSize}/${r.topK} ${r.precision}${r.heads > 1 ? ` ${r.heads}h` : ""}`),
    [
      {
        name: "ours (measured; GPU time where timed)",
        color: "#4c78a8",
        values: measured.map((r) =>
          Number.isNaN(r.mobaForwardGpuMs) ? r.fullForwardMs / r.mobaForwardMs : r.fullForwardGpuMs / r.mobaForwardGpuMs,
        ),
      },
      { name: "official MoBA (paper)", color: "#f58518", values: measured.map((r) => official[r.tokens] ?? NaN) },
      { name: "ideal (FLOP ratio)", color: "#bab0ac", values: measured.map((r) => r.idealRatio) },
    ],
    "speedup (x)",
  );
}
