// Shared test helpers: a seeded generator, random attention problems, the reference comparison.
import { roundToF16 } from "../src/io/half.js";
import { type AttentionProblem, fullProblem, mobaProblem, type Precision } from "../src/attention/problem.js";
import { pastPerQuery } from "../src/attention/blocks.js";
import {
  type Backend,
  type Gradients,
  type Tensor32i,
  mobaAttention,
  mobaAttentionBackward,
  flashAttention,
  flashAttentionBackward,
  type Tensor,
} from "../src/index.js";
import { relativeError, seeded, uniformTensor } from "../src/run/util.js";
import { checked, getDevice, type MobaDevice } from "../src/webgpu/device.js";
import { backwardOnGpu } from "../src/webgpu/attention/backward.js";
import { forwardOnGpu, type GpuTensors } from "../src/webgpu/attention/forward.js";
import type { Pass } from "../src/webgpu/attention/paths.js";
import { Buffers, readBack } from "../src/webgpu/kernel.js";
import { webgpuModelBackend } from "../src/webgpu/model.js";
import type { ModelBackend } from "../src/backend.js";
import { cpuBackend } from "../src/cpu/model.js";
import type { LlamaConfig } from "../src/model/config.js";
import { backward, type Batch, forward, lossOf, type Model, syncToHost, zeroGradients } from "../src/model/llama.js";
export { relativeError };
import {
  referenceBackward,
  referenceForward,
  type ReferenceProblem,
  referenceSelection,
  type Selection,
} from "../src/reference/attention.js";

/** Why the WebGPU tests are skipped (no adapter, outside CI), or false when they run. Under CI=true a missing adapter fails. */
export const webgpuSkip: string | false = await getDevice().then(
  () => false,
  (error: Error) => (process.env.CI === "true" ? false : `no WebGPU adapter (${error.message})`),
);

/** Every backend, each with its skip reason. */
export const BACKENDS: [Backend, string | false][] = [
  ["cpu", false],
  ["webgpu", webgpuSkip],
];

/** Every model backend (made on first use), each with its skip reason. */
export const MODEL_BACKENDS: [Backend, () => Promise<ModelBackend>, string | false][] = [
  ["cpu", async () => cpuBackend, false],
  ["webgpu", webgpuModelBackend, webgpuSkip],
];

export const rng = seeded;
export const randomTensor = uniformTensor;

export function pick<T>(random: () => number, items: readonly T[]): T {
  return items[Math.floor(random() * items.length)];
}

export function int(random: () => number, lo: number, hi: number): number {
  return lo + Math.floor(random() * (hi - lo + 1));
}

export interface Case {
  seed: number;
  tokens: number;
  cuSeqlens: number[];
  qHeads: number;
  kvHeads: number;
  headDim: number;
  blockSize: number;
  topK: number; // Infinity = full attention
  scale: number;
  q: Tensor;
  k: Tensor;
  v: Tensor;
  dout: Tensor;
}

export function describe(c: Case): string {
  return `seed=${c.seed} cuSeqlens=[${c.cuSeqlens}] heads=${c.qHeads}/${c.kvHeads} headDim=${c.headDim} blockSize=${c.blockSize} topK=${c.topK}`;
}

export function makeCase(
  seed: number,
  shape: Omit<Case, "seed" | "tokens" | "q" | "k" | "v" | "dout" | "scale"> & { scale?: number },
): Case {
  const random = rng(seed);
  const tokens = shape.cuSeqlens[shape.cuSeqlens.length - 1];
  return {
    ...shape,
    seed,
    tokens,
    scale: shape.scale ?? 1 / Math.sqrt(shape.headDim),
    q: randomTensor(random, [tokens, shape.qHeads, shape.headDim], 2),
    k: randomTensor(random, [tokens, shape.kvHeads, shape.headDim], 2),
    v: randomTensor(random, [tokens, shape.kvHeads, shape.headDim]),
    dout: randomTensor(random, [tokens, shape.qHeads, shape.headDim]),
  };
}

export function referenceProblem(c: Case): ReferenceProblem {
  return {
    tokens: c.tokens,
    qHeads: c.qHeads,
    kvHeads: c.kvHeads,
    headDim: c.headDim,
    cuSeqlens: c.cuSeqlens,
    blockSize: c.blockSize,
    topK: c.topK,
    scale: c.scale,
  };
}

/** Runs an implementation forward and backward on the case. */
export async function runImplementation(
  c: Case,
  threads?: number,
  backend: Backend = "cpu",
  precision: Precision = "f32",
): Promise<{ out: Tensor; lse: Tensor; routing: Tensor32i } & Gradients> {
  const inputs = { q: c.q, k: c.k, v: c.v, cuSeqlens: c.cuSeqlens };
  const options = { blockSize: c.blockSize, topK: c.topK, scale: c.scale, threads, backend, precision };
  const full = c.topK === Infinity;
  const fwd = full ? await flashAttention(inputs, options) : await mobaAttention(inputs, options);
  const bwdInputs = { ...inputs, out: fwd.out, lse: fwd.lse, dout: c.dout, routing: fwd.routing };
  const grads = full ? await flashAttentionBackward(bwdInputs, options) : await mobaAttentionBackward(bwdInputs, options);
  return { out: fwd.out, lse: fwd.lse, routing: fwd.routing, ...grads };
}

/** A case's attention problem at a precision. */
export function problemOf(c: Case, precision: Precision): AttentionProblem {
  const inputs = { q: c.q, k: c.k, v: c.v, cuSeqlens: c.cuSeqlens };
  return c.topK === Infinity
    ? fullProblem(inputs, { scale: c.scale, precision })
    : mobaProblem(inputs, { blockSize: c.blockSize, topK: c.topK, scale: c.scale, precision });
}

/** q, k, v and dout on the GPU as the kernels see them: rounded to f16 values in the f16 path (as api.ts does). */
export function uploadCase(mem: Buffers, c: Case, precision: Precision): { t: GpuTensors; dout: GPUBuffer } {
  const stored = (x: Float32Array) => (precision === "f16" ? roundToF16(x) : x);
  const t = { q: mem.storage(stored(c.q.data), "q"), k: mem.storage(stored(c.k.data), "k"), v: mem.storage(stored(c.v.data), "v") };
  return { t, dout: mem.storage(stored(c.dout.data), "dout") };
}

/** Kernels forced in place of src/'s picks (paths.ts), per pass. */
export type GpuPasses = { forward?: Pass; dq?: Pass; dkdv?: Pass };

/**
 * Forward and backward of a case through forwardOnGpu and backwardOnGpu, with `passes` forced,
 * read back as runImplementation's result. src/ fills out, lse, dq, dk and dv with NaN before its
 * kernels run (Buffers.poisoned), so an element no kernel writes stays NaN.
 */
export async function runOnGpu(gpu: MobaDevice, c: Case, precision: Precision, passes: GpuPasses = {}) {
  const p = problemOf(c, precision);
  const mem = new Buffers(gpu);
  return checked(gpu, "runOnGpu", mem, async () => {
    const { t, dout } = uploadCase(mem, c, precision);
    const f = await forwardOnGpu(mem, p, t, undefined, mem, passes.forward);
    const g = await backwardOnGpu(mem, p, t, f.out, f.lse, dout, f.routed, undefined, mem, passes);
    const width = pastPerQuery(p);
    const [rows, kvRows] = [c.tokens * c.qHeads, c.tokens * c.kvHeads];
    const [out, lse, routing, dq, dkdv] = await readBack(gpu, [
      { buffer: f.out, bytes: rows * c.headDim * 4 },
      { buffer: f.lse, bytes: rows * 4 },
      { buffer: f.routed?.routing ?? f.lse, bytes: f.routed ? rows * width * 4 : 0 },
      { buffer: g.dq, bytes: rows * c.headDim * 4 },
      { buffer: g.dkdv, bytes: 2 * kvRows * c.headDim * 4 },
    ]);
    const n = kvRows * c.headDim;
    return {
      out: { data: new Float32Array(out), shape: [c.tokens, c.qHeads, c.headDim] },
      lse: { data: new Float32Array(lse), shape: [c.tokens, c.qHeads] },
      routing: { data: new Int32Array(routing), shape: [c.tokens, c.qHeads, width] },
      dq: { data: new Float32Array(dq), shape: [c.tokens, c.qHeads, c.headDim] },
      dk: { data: new Float32Array(dkdv, 0, n), shape: [c.tokens, c.kvHeads, c.headDim] },
      dv: { data: new Float32Array(dkdv, n * 4, n), shape: [c.tokens, c.kvHeads, c.headDim] },
    };
  });
}

export const F32_TOLERANCE = 1e-5;
export const F32_RMS_FLOOR = 2e-6;
/**
 * The f16 path against float64 on the same f16-rounded inputs. Its one rounding beyond float32 is
 * P (the softmax numerators) to f16 before P·V on tensor cores: each term off by at most 2^-11
 * relative, about 3e-4 norm-wise on out, carried into the gradients through delta = rowsum(dout · out).
 */
export const F16_TOLERANCE = 2e-3;

/**
 * Compares an implementation with the float64 reference on one case: shapes, out, lse, dq, dk, dv.
 * Returns the list of failures (empty when everything is within tolerance).
 */
/** float32Gate: the implementation gates and computes in float32 (the WebGPU backend); see replayRouting. */
/** errors, when given, receives each tensor's norm-wise relative error. */
export async function compareWithReference(
  c: Case,
  threads?: number,
  implementation = runImplementation,
  float32Gate = false,
  precision: Precision = "f32",
  errors?: Record<string, number>,
): Promise<string[]> {
  const tolerance = precision === "f16" ? F16_TOLERANCE : F32_TOLERANCE;
  const got = await implementation(c, threads);
  const p = referenceProblem(c);
  if (precision === "f16") c = { ...c, q: rounded(c.q), k: rounded(c.k), v: rounded(c.v), dout: rounded(c.dout) };
  const failures: string[] = [];
  // a float32 gate may break near-ties differently: check its choice is a top-k, then replay it
  const select = float32Gate && c.topK !== Infinity ? replayRouting(c, got.routing, failures) : referenceSelection;
  const ref = referenceForward(p, c.q.data, c.k.data, c.v.data, select);
  const grads = referenceBackward(p, c.q.data, c.k.data, c.v.data, c.dout.data, select);
  const expectShape = (name: string, t: Tensor, shape: number[]) => {
    if (t.shape.join() !== shape.join()) failures.push(`${name} shape [${t.shape}] != [${shape}]`);
  };
  expectShape("out", got.out, [c.tokens, c.qHeads, c.headDim]);
  expectShape("lse", got.lse, [c.tokens, c.qHeads]);
  expectShape("dq", got.dq, [c.tokens, c.qHeads, c.headDim]);
  expectShape("dk", got.dk, [c.tokens, c.kvHeads, c.headDim]);
  expectShape("dv", got.dv, [c.tokens, c.kvHeads, c.headDim]);
  const pairs: [string, Float32Array, Float64Array][] = [
    ["out", got.out.data, ref.out],
    ["lse", got.lse.data, ref.lse],
    ["dq", got.dq.data, grads.dq],
    ["dk", got.dk.data, grads.dk],
    ["dv", got.dv.data, grads.dv],
  ];
  for (const [name, a, b] of pairs) {
    const error = relativeError(a, b);
    if (errors) errors[name] = error;
    // Gradients that cancel to nearly zero (e.g. dq of a short sequence, Σ p (dp − delta) k, which
    // is exactly zero for one token) keep the rounding of the float32 out, lse and arithmetic at the
    // size of the terms, so they also pass within an RMS floor of 2e-6 per element (inputs are O(1)).
    const rms = Math.sqrt(a.reduce((acc, x, i) => acc + (x - b[i]) ** 2, 0) / Math.max(1, a.length));
    if (!(error <= tolerance) && !(rms <= F32_RMS_FLOOR))
      failures.push(`${name} relative error ${error.toExponential(2)} > ${tolerance} (rms ${rms.toExponential(2)})`);
  }
  return failures.map((f) => `${describe(c)}: ${f}`);
}

function rounded(t: Tensor): Tensor {
  return { data: roundToF16(t.data), shape: t.shape };
}

/** Relative slack for a float32 gate: scores within it of the k-th best may be swapped. */
const GATE_SLACK = 1e-5;

/**
 * Checks an implementation's routing table against float64 gate scores — every query keeps
 * min(topK - 1, i) distinct past blocks and no unchosen block beats a chosen one by more than
 * GATE_SLACK — and returns a Selection that replays it in the reference.
 */
export function replayRouting(c: Case, routing: Tensor32i, failures: string[]): Selection {
  const width = routing.shape[2];
  const { qHeads, kvHeads, headDim: D, blockSize: B } = c;
  // a table narrower than topK - 1 means every past block is selected (topK >= blocks)
  if (width < c.topK - 1) return (p, q, k, start, length, head) => referenceSelection({ ...p, topK: Infinity }, q, k, start, length, head);
  return (_p, q, k, start, length, head) => {
    const g = Math.floor(head / (qHeads / kvHeads));
    const blocks = Math.ceil(length / B);
    const sums = Array.from({ length: blocks }, (_, j) => {
      const sum = new Float64Array(D);
      for (let t = j * B; t < Math.min((j + 1) * B, length); t++)
        for (let d = 0; d < D; d++) sum[d] += k[((start + t) * kvHeads + g) * D + d];
      return sum;
    });
    const sel: boolean[][] = [];
    for (let pos = 0; pos < length; pos++) {
      const i = Math.floor(pos / B);
      const row = new Array<boolean>(blocks).fill(false);
      row[i] = true;
      const at = ((start + pos) * qHeads + head) * width;
      const chosen = [...routing.data.subarray(at, at + Math.min(width, i))];
      const score = (j: number) => sums[j].reduce((acc, x, d) => acc + x * q[((start + pos) * qHeads + head) * D + d], 0);
      if (chosen.some((j, n) => j < 0 || j >= i || (n > 0 && j <= chosen[n - 1])))
        failures.push(`routing of token ${start + pos} head ${head}: [${chosen}] is not ascending past blocks of block ${i}`);
      for (const j of chosen) row[j] = true;
      if (i > width) {
        const scores = Array.from({ length: i }, (_, j) => score(j));
        const scale = Math.max(1, ...scores.map(Math.abs));
        const worstChosen = Math.min(...chosen.map((j) => scores[j]));
        const bestOther = Math.max(-Infinity, ...scores.filter((_, j) => !row[j]));
        if (bestOther > worstChosen + GATE_SLACK * scale)
          failures.push(
            `routing of token ${start + pos} head ${head}: chose [${chosen}] but block scoring ${bestOther} beats ${worstChosen}`,
          );
      }
      sel.push(row);
    }
    return sel;
  };
}

const HEADS = [
  [1, 1],
  [4, 1],
  [4, 2],
  [8, 8],
  [6, 3],
] as const;
const HEAD_DIMS = [1, 3, 16, 64, 128] as const;
/** Reference multiply-adds per random case (sum of squared lengths x heads x headDim); keeps a CPU run to about a minute. */
const REFERENCE_BUDGET = 4e6;

function logUniform(random: () => number, lo: number, hi: number): number {
  return Math.floor(Math.exp(Math.log(lo) + random() * (Math.log(hi + 1) - Math.log(lo))));
}

/** Lengths of 1..5 sequences with empty and length-1 sequences mixed in. */
function randomLengths(random: () => number, tokens: number): number[] {
  const batch = int(random, 1, 5);
  const cuts = Array.from({ length: batch - 1 }, () => int(random, 0, tokens)).sort((a, b) => a - b);
  const bounds = [0, ...cuts, tokens];
  const lengths = bounds.slice(1).map((b, i) => b - bounds[i]);
  if (random() < 0.2) lengths.splice(int(random, 0, lengths.length), 0, 0);
  if (random() < 0.2) lengths.splice(int(random, 0, lengths.length), 0, 1);
  return lengths;
}

/** A random configuration of the ranges; `budget` caps the reference's work, `maxTokens` the length. */
export function randomCase(seed: number, budget = REFERENCE_BUDGET, maxTokens = 3000): Case {
  const random = rng(seed);
  const lengths = randomLengths(random, logUniform(random, 1, maxTokens));
  const cuSeqlens = [0];
  for (const n of lengths) cuSeqlens.push(cuSeqlens[cuSeqlens.length - 1] + n);
  const work = lengths.reduce((a, n) => a + n * n, 0);
  let heads = pick(random, HEADS);
  let headDim = pick(random, HEAD_DIMS);
  for (let tries = 0; work * heads[0] * headDim > budget && tries < 30; tries++) {
    heads = pick(random, HEADS);
    headDim = pick(random, HEAD_DIMS);
  }
  if (work * heads[0] * headDim > budget) [heads, headDim] = [HEADS[0], 1];
  const blockSize = logUniform(random, 1, 700);
  const blocks = Math.max(1, ...lengths.map((n) => Math.ceil(n / blockSize)));
  const topK = random() < 0.1 ? Infinity : int(random, 1, blocks + 2);
  return makeCase(seed, { cuSeqlens, qHeads: heads[0], kvHeads: heads[1], headDim, blockSize, topK });
}

/** A model small enough for finite differences: 2 layers, 4 query / 2 kv heads of size 4, MoBA blocks of 8, top-2. */
export const TINY: Partial<LlamaConfig> = {
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  moba_chunk_size: 8,
  moba_topk: 2,
  tie_word_embeddings: false,
  initializer_range: 0.3,
};

/** A batch of random tokens and targets over the packed sequences of `cuSeqlens`, every fifth token unweighted. */
export function randomBatch(seed: number, cuSeqlens: number[]): Batch {
  let s = seed;
  const next = () => (s = (Math.imul(s, 1103515245) + 12345) >>> 0) % 256;
  const T = cuSeqlens[cuSeqlens.length - 1];
  return {
    tokens: Int32Array.from({ length: T }, next),
    targets: Int32Array.from({ length: T }, next),
    weights: Float32Array.from({ length: T }, (_, i) => (i % 5 === 4 ? 0 : 1)),
    cuSeqlens: Int32Array.from(cuSeqlens),
  };
}

/** The loss and every parameter's gradient of `scale` · loss for one batch, on the host. */
export async function gradients(
  model: Model,
  batch: Batch,
  backend: ModelBackend,
  kinds?: ("moba" | "full")[],
  scale = 1,
): Promise<{ loss: number; grads: Float32Array[] }> {
  const loss = await backend.scope("test", async () => {
    await zeroGradients(model, backend);
    const trace = await forward(model, batch, backend, kinds);
    await backward(model, trace, backend, scale);
    return lossOf(trace, backend);
  });
  await syncToHost(model);
  return { loss, grads: model.params.map((p) => Float32Array.from(p.grad)) };
}

/**
 * The gate of one head over one sequence of `problem` (cuSeqlens [0, tokens]), block by block, from the reference:
 * chosen [blocks, blocks] counts the queries of block i whose referenceSelection holds block j; score [blocks, blocks]
 * is the mean over block i's queries of q · mean(K_j), j < i, each dot product in float64.
 */
export function referenceGating(
  problem: ReferenceProblem,
  q: Float32Array,
  k: Float32Array,
  head: number,
): { chosen: number[]; score: number[] } {
  const { tokens: T, qHeads, kvHeads, headDim: D, blockSize: B } = problem;
  const blocks = Math.ceil(T / B);
  const kvHead = Math.floor(head / (qHeads / kvHeads));
  const selection = referenceSelection(problem, q, k, 0, T, head);
  const means = Array.from({ length: blocks }, (_, j) => {
    const keys = Array.from({ length: Math.min(B, T - j * B) }, (_, t) => (j * B + t) * kvHeads + kvHead);
    return Array.from({ length: D }, (_, d) => keys.reduce((s, row) => s + k[row * D + d], 0) / keys.length);
  });
  const chosen = new Array<number>(blocks * blocks).fill(0);
  const score = new Array<number>(blocks * blocks).fill(0);
  for (let p = 0; p < T; p++) {
    const i = Math.floor(p / B);
    const rows = Math.min(B, T - i * B);
    selection[p].forEach((on, j) => on && chosen[i * blocks + j]++);
    for (let j = 0; j < i; j++) {
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[(p * qHeads + head) * D + d] * means[j][d];
      score[i * blocks + j] += dot / rows;
    }
  }
  return { chosen, score };
}
