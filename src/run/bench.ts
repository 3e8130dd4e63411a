// `moba bench`: MoBA against full attention at several lengths, forward and forward+backward,
// median of several runs, each measured ratio beside the ideal FLOP ratio.
import { cpus } from "node:os";
import { flashAttention, flashAttentionBackward, mobaAttention, mobaAttentionBackward } from "../api.js";
import { attendedKeys, type Backend } from "../attention/problem.js";
import { barChart } from "./plot.js";
import { median, randomInputs, table } from "./util.js";

export interface BenchOptions {
  lengths: number[];
  qHeads: number;
  kvHeads: number;
  headDim: number;
  blockSize: number;
  topK: number;
  runs: number;
  backend: Backend;
}

export const BENCH_DEFAULTS: BenchOptions = {
  lengths: [4096, 8192, 16384],
  qHeads: 1,
  kvHeads: 1,
  headDim: 64,
  blockSize: 512,
  topK: 3,
  runs: 3,
  backend: "cpu",
};

export interface BenchRow {
  tokens: number;
  mobaForwardMs: number;
  fullForwardMs: number;
  mobaTrainMs: number; // forward + backward
  fullTrainMs: number;
  idealRatio: number; // attended keys of full / of MoBA
}

export async function bench(o: BenchOptions, print: (line: string) => void): Promise<BenchRow[]> {
  const rows: BenchRow[] = [];
  print(
    `moba bench --backend ${o.backend}: heads ${o.qHeads}/${o.kvHeads}, headDim ${o.headDim}, blockSize ${o.blockSize}, topK ${o.topK}, median of ${o.runs} runs; ${cpus()[0]?.model ?? "cpu"} x${cpus().length}, node ${process.version}`,
  );
  for (const tokens of o.lengths) {
    const { q, k, v, dout } = randomInputs(tokens, tokens, o.qHeads, o.kvHeads, o.headDim);
    const inputs = { q, k, v };
    const moba = { blockSize: o.blockSize, topK: o.topK, backend: o.backend };
    const full = { backend: o.backend };
    const times = { mf: [] as number[], ff: [] as number[], mt: [] as number[], ft: [] as number[] };
    // one warm-up run of each (worker start-up, JIT), then the timed runs
    for (let run = -1; run < o.runs; run++) {
      let t = performance.now();
      const m = await mobaAttention(inputs, moba);
      const mf = performance.now() - t;
      await mobaAttentionBackward({ ...inputs, ...m, dout }, moba);
      const mt = performance.now() - t;
      t = performance.now();
      const f = await flashAttention(inputs, full);
      const ff = performance.now() - t;
      await flashAttentionBackward({ ...inputs, ...f, dout }, full);
      const ft = performance.now() - t;
      if (run >= 0) {
        times.mf.push(mf);
        times.ff.push(ff);
        times.mt.push(mt);
        times.ft.push(ft);
      }
      print(
        `  ${tokens} tokens, run ${run < 0 ? "warm-up" : run + 1}: MoBA ${mf.toFixed(0)} / ${mt.toFixed(0)} ms, full ${ff.toFixed(0)} / ${ft.toFixed(0)} ms (fwd / fwd+bwd)`,
      );
    }
    rows.push({
      tokens,
      mobaForwardMs: median(times.mf),
      fullForwardMs: median(times.ff),
      mobaTrainMs: median(times.mt),
      fullTrainMs: median(times.ft),
      idealRatio: attendedKeys([0, tokens], o.blockSize, Infinity) / attendedKeys([0, tokens], o.blockSize, o.topK),
    });
  }
  print("");
  print(
    table(
      [
        "tokens",
        "MoBA fwd ms",
        "full fwd ms",
        "fwd speedup",
        "MoBA fwd+bwd ms",
        "full fwd+bwd ms",
        "fwd+bwd speedup",
        "ideal ratio",
        "fwd % of ideal",
      ],
      rows.map((r) => [
        String(r.tokens),
        r.mobaForwardMs.toFixed(0),
        r.fullForwardMs.toFixed(0),
        `${(r.fullForwardMs / r.mobaForwardMs).toFixed(2)}x`,
        r.mobaTrainMs.toFixed(0),
        r.fullTrainMs.toFixed(0),
        `${(r.fullTrainMs / r.mobaTrainMs).toFixed(2)}x`,
        `${r.idealRatio.toFixed(2)}x`,
        `${((100 * r.fullForwardMs) / r.mobaForwardMs / r.idealRatio).toFixed(0)}%`,
      ]),
    ),
  );
  return rows;
}

/** The measured speedups beside the ideal ratio, one group per length. */
export function benchPlot(rows: BenchRow[], o: BenchOptions): string {
  return barChart(
    `MoBA speedup over full attention (${o.backend}, block ${o.blockSize}, top-${o.topK}, headDim ${o.headDim})`,
    rows.map((r) => `${r.tokens} tokens`),
    [
      { name: "forward (measured)", color: "#4c78a8", values: rows.map((r) => r.fullForwardMs / r.mobaForwardMs) },
      { name: "fwd+bwd (measured)", color: "#f58518", values: rows.map((r) => r.fullTrainMs / r.mobaTrainMs) },
      { name: "ideal (FLOP ratio)", color: "#bab0ac", values: rows.map((r) => r.idealRatio) },
    ],
    "speedup (x)",
  );
}
