// moba bench-train: training-step throughput of a model at long context, MoBA against full
// attention, beside the FLOPs each step implies; and decode speed with a long KV cache.
import { attendedKeys } from "../attention/problem.js";
import { AdamW } from "../model/adamw.js";
import { type AttentionKind, checkConfig, headDim, type LlamaConfig } from "../model/config.js";
import { decodeStep, KvCache } from "../model/decode.js";
import { backward, type Batch, forward, initModel, parameterCount, release, zeroGradients } from "../model/llama.js";
import { Rng } from "../model/rng.js";
import type { Backend, Precision } from "../attention/problem.js";
import { modelBackend } from "./backends.js";
import { median, table } from "./util.js";

export interface TrainBenchOptions {
  model: Partial<LlamaConfig>;
  lengths: number[];
  steps: number;
  backend: Backend | "auto";
  precision: Precision;
  /** Cached tokens for the decode timing (0: skip it). */
  decodeContext: number;
}

/** FLOPs of one training step (forward + backward = 3 × forward) split into GEMMs and attention. */
export function stepFlops(c: LlamaConfig, T: number, kind: AttentionKind): { gemm: number; attention: number } {
  const H = c.hidden_size,
    F = c.intermediate_size,
    D = headDim(c),
    nH = c.num_attention_heads,
    nKV = c.num_key_value_heads;
  const perToken = 2 * (H * (nH + 2 * nKV) * D + nH * D * H + 3 * H * F) * c.num_hidden_layers + 2 * H * c.vocab_size;
  const keys = kind === "moba" ? attendedKeys([0, T], c.moba_chunk_size, c.moba_topk) : attendedKeys([0, T], T, 1);
  return { gemm: 3 * perToken * T, attention: 3 * 4 * D * keys * nH * c.num_hidden_layers };
}

/** `print` gets the tables, `progress` each row as it is measured (the table repeats it). */
export async function benchTrain(
  o: TrainBenchOptions,
  print: (line: string) => void,
  progress: (line: string) => void = () => undefined,
): Promise<void> {
  const rows: string[][] = [];
  let name = "";
  for (const T of o.lengths) {
    const seconds: Record<AttentionKind, number> = { moba: NaN, full: NaN };
    for (const kind of ["moba", "full"] as const) {
      const backend = await modelBackend(o.backend, o.precision, print, false); // a fresh one per row: its peak memory is this row's
      name = backend.name;
      const config = checkConfig({
        ...o.model,
        max_position_embeddings: Math.max(T, o.model.max_position_embeddings ?? 0),
        layer_attention: undefined,
        full_attention_last_layers: kind === "full" ? (o.model.num_hidden_layers ?? 4) : 0,
      });
      const model = initModel(config, 1);
      const optimizer = new AdamW(model, backend);
      const rng = new Rng(2);
      const tokens = Int32Array.from({ length: T }, () => rng.below(config.vocab_size));
      const batch: Batch = {
        tokens,
        targets: tokens.map((t) => (t + 1) % config.vocab_size),
        weights: new Float32Array(T).fill(1),
        cuSeqlens: Int32Array.of(0, T),
      };
      const times: number[] = [];
      for (let s = 0; s <= o.steps; s++) {
        const t0 = performance.now();
        await backend.scope("training step", async () => {
          await zeroGradients(model, backend);
          await backward(model, await forward(model, batch, backend), backend, 1 / T);
          await optimizer.update(1e-4, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 });
        });
        if (s > 0) times.push((performance.now() - t0) / 1000); // the first step compiles kernels
      }
      optimizer.free();
      await release(model);
      seconds[kind] = median(times);
      const f = stepFlops(config, T, kind);
      rows.push([
        String(T),
        kind,
        backend.precision,
        (parameterCount(model) / 1e6).toFixed(1) + "M",
        (seconds[kind] * 1000).toFixed(0),
        (T / seconds[kind]).toFixed(0),
        (f.gemm / 1e9).toFixed(1),
        (f.attention / 1e9).toFixed(1),
        ((f.gemm + f.attention) / seconds[kind] / 1e12).toFixed(3),
        backend.peakBytes === undefined ? "-" : (backend.peakBytes / 2 ** 30).toFixed(2),
        kind === "full" ? (seconds.full / seconds.moba).toFixed(2) + "x" : "",
        kind === "full" ? ((f.gemm + f.attention) / (f.gemm + stepFlops(config, T, "moba").attention)).toFixed(2) + "x" : "",
      ]);
      progress(rows[rows.length - 1].join("  "));
    }
  }
  print(
    `\ntraining step on ${name}, ${o.steps} timed steps each (median), one sequence per step; GPU GiB: peak of the tensors held at once`,
  );
  print(
    table(
      [
        "tokens",
        "attention",
        "precision",
        "params",
        "step ms",
        "tok/s",
        "GEMM GFLOP",
        "attn GFLOP",
        "TFLOP/s",
        "GPU GiB",
        "MoBA speedup",
        "ideal",
      ],
      rows,
    ),
  );
  if (o.decodeContext > 0) await benchDecode(o, print);
}

/** Per-token decode time with `decodeContext` cached tokens (random keys and values), MoBA vs full. */
async function benchDecode(o: TrainBenchOptions, print: (line: string) => void): Promise<void> {
  const T = o.decodeContext;
  const config = checkConfig({ ...o.model, max_position_embeddings: T + 64, layer_attention: undefined });
  const model = initModel(config, 1);
  const cache = new KvCache(model, T + 64);
  const rng = new Rng(3);
  const row = config.num_key_value_heads * headDim(config);
  for (let l = 0; l < config.num_hidden_layers; l++) {
    for (let t = 0; t < T; t++)
      cache.append(
        l,
        t,
        Float32Array.from({ length: row }, () => rng.normal()),
        Float32Array.from({ length: row }, () => rng.normal()),
      );
  }
  const out: string[][] = [];
  const ms: Record<string, number> = {};
  for (const kind of ["moba", "full"] as const) {
    const kinds = Array(config.num_hidden_layers).fill(kind);
    const times: number[] = [];
    for (let i = 0; i < 21; i++) {
      cache.length = T; // every step decodes position T against the same cache
      const t0 = performance.now();
      decodeStep(model, cache, 65, kinds);
      if (i > 0) times.push(performance.now() - t0);
    }
    ms[kind] = median(times);
    out.push([kind, String(T), ms[kind].toFixed(2), (1000 / ms[kind]).toFixed(1)]);
  }
  const keys = Math.min(T + 1, config.moba_topk * config.moba_chunk_size);
  print(
    `\ndecode (CPU, one token, ${T} cached tokens): MoBA ${(ms.full / ms.moba).toFixed(2)}x faster than full; attended keys ${keys} vs ${T + 1}`,
  );
  print(table(["attention", "cached", "ms/token", "tokens/s"], out));
}
