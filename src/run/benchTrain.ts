// moba bench-train: training-step throughput of a model at long context, MoBA against full
// attention, beside the FLOPs each step implies; and decode speed with a long KV cache.
import { attendedKeys } from "../attention/problem.js";
import { AdamW } from "../model/adamw.js";
import { type AttentionKind, checkConfig, headDim, layerKinds, type LlamaConfig } from "../model/config.js";
import { openDecoding } from "../model/decode.js";
import { type Batch, initModel, parameterCount, release } from "../model/llama.js";
import { type RecordedStep, recordTrainingStep, TRAIN_DEFAULTS, type TrainOptions } from "../model/training.js";
import { Rng } from "../model/rng.js";
import type { Backend, Precision } from "../attention/problem.js";
import type { ModelBackend, Sized } from "../backend.js";
import { cpuBackend } from "../cpu/model.js";
import { modelBackend } from "./backends.js";
import { median, table } from "./util.js";

export interface TrainBenchOptions {
  model: Partial<LlamaConfig>;
  lengths: number[];
  steps: number;
  backend: Backend | "auto";
  precision: Precision;
  /** Cached tokens of each decode timing (none: skip it). */
  decodeContext: number[];
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

/**
 * bench-train's model: intermediate size 8/3 of `hidden` (rounded to 64), half as many kv heads as heads. Its
 * defaults (22.9M parameters) are the model of every training-speed number in docs/benchmarks.md.
 */
export function benchModel(hidden = 512, layers = 8, heads = 8, blockSize = 512, topK = 3): Partial<LlamaConfig> {
  return {
    hidden_size: hidden,
    intermediate_size: Math.round((hidden * 8) / 3 / 64) * 64 || 64,
    num_hidden_layers: layers,
    num_attention_heads: heads,
    num_key_value_heads: Math.max(1, heads / 2),
    moba_chunk_size: blockSize,
    moba_topk: topK,
  };
}

/**
 * A training step as bench-train times it (the step profilers in dev/ too): `model` at T tokens with every
 * layer MoBA or every layer full, one sequence of random tokens, recorded as training records it
 * (recordTrainingStep: the gradients zeroed, forward, backward, AdamW, the read-backs of the loss and the
 * norm, in one scope). `record` returns without waiting for the step, `speculative` as training passes it
 * (recorded while the step before runs); `step` records one and waits for it. `free` gives back the
 * optimizer's moments and the weights.
 */
export function benchStep<B extends Sized>(
  model: Partial<LlamaConfig>,
  T: number,
  kind: AttentionKind,
  backend: ModelBackend<B>,
): {
  config: LlamaConfig;
  parameters: number;
  record: (speculative: boolean) => Promise<RecordedStep>;
  step: () => Promise<void>;
  free: () => Promise<void>;
} {
  const config = checkConfig({
    ...model,
    max_position_embeddings: Math.max(T, model.max_position_embeddings ?? 0),
    layer_attention: undefined,
    full_attention_last_layers: kind === "full" ? (model.num_hidden_layers ?? 4) : 0,
  });
  const weights = initModel(config, 1);
  const optimizer = new AdamW(weights, backend);
  const rng = new Rng(2);
  const tokens = Int32Array.from({ length: T }, () => rng.below(config.vocab_size));
  const batch: Batch = {
    tokens,
    targets: tokens.map((t) => (t + 1) % config.vocab_size),
    weights: new Float32Array(T).fill(1),
    cuSeqlens: Int32Array.of(0, T),
  };
  // a constant learning rate of 1e-4 (no warmup, no decay), the usual AdamW settings
  const o: TrainOptions = { ...TRAIN_DEFAULTS, steps: 1, warmupSteps: 0, learningRate: 1e-4, minLearningRateFraction: 1 };
  const kinds = layerKinds(config);
  const record = (speculative: boolean) => recordTrainingStep(weights, backend, optimizer, [batch], kinds, 0, o, 1, speculative);
  const step = async () => void (await (await record(false)).result);
  const free = async () => {
    optimizer.free();
    await release(weights);
  };
  return { config, parameters: parameterCount(weights), record, step, free };
}

/**
 * Seconds per step of steps back to back, each recorded while the one before runs (as training records them:
 * the queue never waits for the host between steps): from the first step's result to the result `count`
 * steps later, so the first step's recording, done while the GPU was idle, is not counted.
 */
export async function pipelinedSeconds(record: (speculative: boolean) => Promise<RecordedStep>, count: number): Promise<number> {
  let pending = await record(false);
  let t0 = 0;
  for (let s = 1; s <= count; s++) {
    const next = await record(true);
    await pending.result;
    if (s === 1) t0 = performance.now();
    pending = next;
  }
  await pending.result;
  return (performance.now() - t0) / 1000 / count;
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
      const { config, parameters, record, step, free } = benchStep(o.model, T, kind, backend);
      const times: number[] = [];
      for (let s = 0; s <= o.steps; s++) {
        const t0 = performance.now();
        await step();
        if (s > 0) times.push((performance.now() - t0) / 1000); // the first step compiles kernels
      }
      seconds[kind] = await pipelinedSeconds(record, o.steps);
      await free();
      const f = stepFlops(config, T, kind);
      rows.push([
        String(T),
        kind,
        backend.precision,
        (parameters / 1e6).toFixed(1) + "M",
        (seconds[kind] * 1000).toFixed(0),
        (median(times) * 1000).toFixed(0),
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
    `\ntraining step on ${name}, one sequence per step: step ms over ${o.steps} steps back to back (each recorded while the one ` +
      `before runs, as training does), serial ms the median of ${o.steps} steps each waited for; GPU GiB: peak of the tensors held at once`,
  );
  print(
    table(
      [
        "tokens",
        "attention",
        "precision",
        "params",
        "step ms",
        "serial ms",
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
  if (o.decodeContext.length > 0) await benchDecode(o, print);
}

/**
 * Per-token decode time with each `decodeContext` of cached tokens (random keys and values, the
 * same in every layer), MoBA vs full: on the CPU, and on the GPU where the backend is WebGPU.
 */
async function benchDecode(o: TrainBenchOptions, print: (line: string) => void): Promise<void> {
  const gpu = await modelBackend(o.backend); // the training rows said which backend "auto" took, and why
  const backends: ModelBackend[] = gpu.decoder ? [cpuBackend, gpu] : [cpuBackend];
  const out: string[][] = [];
  for (const T of o.decodeContext) {
    const config = checkConfig({ ...o.model, max_position_embeddings: T + 64, layer_attention: undefined });
    const model = initModel(config, 1);
    const rng = new Rng(3);
    const row = config.num_key_value_heads * headDim(config);
    const keys = Float32Array.from({ length: T * row }, () => rng.normal()),
      values = Float32Array.from({ length: T * row }, () => rng.normal());
    const everyLayer = (x: Float32Array) => Array<Float32Array>(config.num_hidden_layers).fill(x);
    for (const backend of backends) {
      const ms: Record<string, number> = {};
      for (const kind of ["moba", "full"] as const) {
        const decoding = await openDecoding(model, T + 64, backend, Array(config.num_hidden_layers).fill(kind));
        await decoding.fill(everyLayer(keys), everyLayer(values), T);
        const times: number[] = [];
        for (let i = 0; i < 21; i++) {
          decoding.length = T; // every step decodes position T against the same cache
          const t0 = performance.now();
          await decoding.step(65);
          if (i > 0) times.push(performance.now() - t0); // the first step compiles kernels
        }
        decoding.free();
        ms[kind] = median(times);
        out.push([backend.name, kind, String(T), ms[kind].toFixed(2), (1000 / ms[kind]).toFixed(1), ""]);
      }
      out[out.length - 1][5] = `${(ms.full / ms.moba).toFixed(2)}x`;
      await release(model);
    }
  }
  const c = checkConfig({ ...o.model, layer_attention: undefined });
  print(
    `\ndecode (one token; random keys and values cached; median of 20 steps): attended keys per head MoBA ${c.moba_topk} × ${c.moba_chunk_size}, full all`,
  );
  print(table(["backend", "attention", "cached", "ms/token", "tokens/s", "MoBA speedup"], out));
}
