// `moba bench --backend webgpu`: MoBA against full attention on the GPU. Inputs stay on the GPU;
// each measurement is the wall time from the first command recorded to the queue being idle
// (onSubmittedWorkDone), so it includes the routing kernels and the host's work between dispatches:
// what a user waits for. Median of several runs after a warm-up.
import { attendedKeys, type AttentionProblem, fullProblem, mobaProblem, type Precision } from "../attention/problem.js";
import { checked, getDevice, type MobaDevice } from "../webgpu/device.js";
import { Buffers } from "../webgpu/kernel.js";
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
  mobaForwardMs: number;
  fullForwardMs: number;
  mobaTrainMs: number;
  fullTrainMs: number;
  idealRatio: number;
  fullForwardTflops: number;
  /** GPU memory of the forward: the inputs plus every buffer the call takes (our own count), MiB. */
  mobaForwardMiB: number;
  fullForwardMiB: number;
  runs: number;
}

const WARM_UP_MS = 500;

async function time(gpu: MobaDevice, run: () => Promise<unknown>): Promise<number> {
  await gpu.device.queue.onSubmittedWorkDone();
  const start = performance.now();
  await run();
  await gpu.device.queue.onSubmittedWorkDone();
  return performance.now() - start;
}

/** Times forward and forward+backward of one problem; buffers of each run are freed after it. */
async function measure(gpu: MobaDevice, p: AttentionProblem, t: GpuTensors, dout: GPUBuffer, runs: number, maxSeconds: number, forwardOnly: boolean): Promise<{ forward: number; train: number; runs: number; bytes: number }> {
  let bytes = 0;
  const once = async (): Promise<{ forward: number; train: number }> => {
    const mem = new Buffers(gpu);
    try {
      let result!: Awaited<ReturnType<typeof forwardOnGpu>>;
      const forward = await time(gpu, async () => { result = await forwardOnGpu(mem, p, t); });
      bytes = mem.bytes;
      const backward = forwardOnly ? NaN : await time(gpu, () => backwardOnGpu(mem, p, t, result.out, result.lse, dout, result.routed));
      return { forward, train: forward + backward };
    } finally {
      mem.destroy();
    }
  };
  // Warm-up runs for at least WARM_UP_MS (one run at least): compiling, filling the buffer pool and
  // bringing the GPU's clock up from idle. The H100 idles at 345 MHz, and MoBA's ~10 ms runs at 32K
  // measured up to 1.8x slower right after idle than after a few hundred milliseconds of load.
  const warmUp = performance.now();
  do await once(); while (performance.now() - warmUp < WARM_UP_MS);
  const forwards: number[] = [];
  const trains: number[] = [];
  const started = performance.now();
  for (let run = 0; run < runs; run++) {
    const { forward, train } = await once();
    forwards.push(forward);
    trains.push(train);
    if (run >= 2 && (performance.now() - started) / 1000 > maxSeconds) break; // long rows: fewer runs, said in the table
  }
  return { forward: median(forwards), train: median(trains), runs: forwards.length, bytes };
}

/**
 * fullUpTo: longer inputs time MoBA only (full attention in float32 would take minutes per run there);
 * forwardOnly: no backward (the f16 path's backward runs the f32 kernels).
 */
export async function benchGpu(cases: GpuBenchCase[], runs: number, print: (line: string) => void, maxSeconds = 60, fullUpTo = Infinity, forwardOnly = false): Promise<GpuBenchRow[]> {
  const gpu = await getDevice();
  const precisions = [...new Set(cases.map((c) => c.precision))].join(", ");
  print(`moba bench --backend webgpu on ${gpu.adapterInfo} (shader-f16 ${gpu.f16}, subgroup matrices ${gpu.subgroupMatrixConfigs.join(", ") || "none"}); ` +
    `precision ${precisions}; median of up to ${runs} runs`);
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
      const f = c.tokens <= fullUpTo ? await measure(gpu, full, t, g, runs, maxSeconds, forwardOnly) : { forward: NaN, train: NaN, runs: Infinity, bytes: NaN };
      const inputBytes = 3 * q.data.byteLength;
      const fullKeys = attendedKeys([0, c.tokens], c.blockSize, Infinity); // no block choice: the block size does not matter
      return {
        ...c, mobaForwardMs: m.forward, fullForwardMs: f.forward, mobaTrainMs: m.train, fullTrainMs: f.train,
        idealRatio: fullKeys / attendedKeys([0, c.tokens], c.blockSize, c.topK),
        fullForwardTflops: (4 * c.headDim * c.heads * fullKeys) / (f.forward / 1000) / 1e12, runs: Math.min(m.runs, f.runs),
        mobaForwardMiB: (inputBytes + m.bytes) / 2 ** 20, fullForwardMiB: (inputBytes + f.bytes) / 2 ** 20,
      };
    });
    rows.push(row);
    print(`  ${c.precision} ${c.tokens} tokens x ${c.heads} heads, block ${c.blockSize} / top-${c.topK}: MoBA ${row.mobaForwardMs.toFixed(2)} / ${row.mobaTrainMs.toFixed(2)} ms, full ${row.fullForwardMs.toFixed(2)} / ${row.fullTrainMs.toFixed(2)} ms (fwd / fwd+bwd, ${row.runs} runs)`);
    await appendResult(row);
  }
  print("");
  const ms = (x: number) => (Number.isNaN(x) ? "-" : x.toFixed(2));
  const ratio = (a: number, b: number) => (Number.isNaN(a) ? "-" : `${(a / b).toFixed(2)}x`);
  print(table(
    ["precision", "tokens", "heads", "block/top-k", "MoBA fwd ms", "full fwd ms", "fwd speedup", "MoBA fwd+bwd ms", "full fwd+bwd ms", "fwd+bwd speedup", "ideal", "full fwd TFLOP/s", "MoBA fwd MiB", "full fwd MiB", "runs"],
    rows.map((r) => [
      r.precision, String(r.tokens), String(r.heads), `${r.blockSize}/${r.topK}`, ms(r.mobaForwardMs), ms(r.fullForwardMs), ratio(r.fullForwardMs, r.mobaForwardMs),
      ms(r.mobaTrainMs), ms(r.fullTrainMs), ratio(r.fullTrainMs, r.mobaTrainMs), `${r.idealRatio.toFixed(2)}x`, ms(r.fullForwardTflops), r.mobaForwardMiB.toFixed(1), Number.isNaN(r.fullForwardMiB) ? "-" : r.fullForwardMiB.toFixed(1), String(r.runs),
    ]),
  ));
  return rows;
}

/** Measured MoBA/full speedups of the GPU rows beside the ideal ratio and the official MoBA figures. */
export function gpuBenchPlot(rows: GpuBenchRow[], official: Record<number, number>): string {
  const measured = rows.filter((r) => Number.isFinite(r.fullForwardMs));
  return barChart(
    `MoBA forward speedup over full attention, WebGPU (headDim 128, ${[...new Set(measured.map((r) => r.heads))].join(" or ")} head(s))`,
    measured.map((r) => `${r.tokens / 1024}K ${r.blockSize}/${r.topK} ${r.precision}${r.heads > 1 ? ` ${r.heads}h` : ""}`),
    [
      { name: "ours (measured)", color: "#4c78a8", values: measured.map((r) => r.fullForwardMs / r.mobaForwardMs) },
      { name: "official MoBA (paper)", color: "#f58518", values: measured.map((r) => official[r.tokens] ?? NaN) },
      { name: "ideal (FLOP ratio)", color: "#bab0ac", values: measured.map((r) => r.idealRatio) },
    ],
    "speedup (x)",
  );
}
