// Shared test helpers: a seeded generator, random attention problems, the reference comparison.
import { type Backend, type Gradients, type Tensor32i, mobaAttention, mobaAttentionBackward, flashAttention, flashAttentionBackward, type Tensor } from "../src/index.js";
import { relativeError, seeded, uniformTensor } from "../src/run/util.js";
export { relativeError };
import { referenceBackward, referenceForward, type ReferenceProblem } from "../src/reference/attention.js";

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

export function makeCase(seed: number, shape: Omit<Case, "seed" | "tokens" | "q" | "k" | "v" | "dout" | "scale"> & { scale?: number }): Case {
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
  return { tokens: c.tokens, qHeads: c.qHeads, kvHeads: c.kvHeads, headDim: c.headDim, cuSeqlens: c.cuSeqlens, blockSize: c.blockSize, topK: c.topK, scale: c.scale };
}

/** Runs an implementation forward and backward on the case. */
export async function runImplementation(c: Case, threads?: number, backend: Backend = "cpu"): Promise<{ out: Tensor; lse: Tensor; routing: Tensor32i } & Gradients> {
  const inputs = { q: c.q, k: c.k, v: c.v, cuSeqlens: c.cuSeqlens };
  const options = { blockSize: c.blockSize, topK: c.topK, scale: c.scale, threads, backend };
  const full = c.topK === Infinity;
  const fwd = full ? await flashAttention(inputs, options) : await mobaAttention(inputs, options);
  const bwdInputs = { ...inputs, out: fwd.out, lse: fwd.lse, dout: c.dout, routing: fwd.routing };
  const grads = full ? await flashAttentionBackward(bwdInputs, options) : await mobaAttentionBackward(bwdInputs, options);
  return { out: fwd.out, lse: fwd.lse, routing: fwd.routing, ...grads };
}

export const F32_TOLERANCE = 1e-5;

/**
 * Compares an implementation with the float64 reference on one case: shapes, out, lse, dq, dk, dv.
 * Returns the list of failures (empty when everything is within tolerance).
 */
export async function compareWithReference(c: Case, threads?: number, implementation = runImplementation): Promise<string[]> {
  const tolerance = F32_TOLERANCE;
  const got = await implementation(c, threads);
  const p = referenceProblem(c);
  const ref = referenceForward(p, c.q.data, c.k.data, c.v.data);
  const grads = referenceBackward(p, c.q.data, c.k.data, c.v.data, c.dout.data);
  const failures: string[] = [];
  const expectShape = (name: string, t: Tensor, shape: number[]) => {
    if (t.shape.join() !== shape.join()) failures.push(`${name} shape [${t.shape}] != [${shape}]`);
  };
  expectShape("out", got.out, [c.tokens, c.qHeads, c.headDim]);
  expectShape("lse", got.lse, [c.tokens, c.qHeads]);
  expectShape("dq", got.dq, [c.tokens, c.qHeads, c.headDim]);
  expectShape("dk", got.dk, [c.tokens, c.kvHeads, c.headDim]);
  expectShape("dv", got.dv, [c.tokens, c.kvHeads, c.headDim]);
  const pairs: [string, Float32Array, Float64Array][] = [
    ["out", got.out.data, ref.out], ["lse", got.lse.data, ref.lse], ["dq", got.dq.data, grads.dq], ["dk", got.dk.data, grads.dk], ["dv", got.dv.data, grads.dv],
  ];
  for (const [name, a, b] of pairs) {
    const error = relativeError(a, b);
    if (!(error <= tolerance)) failures.push(`${name} relative error ${error.toExponential(2)} > ${tolerance}`);
  }
  return failures.map((f) => `${describe(c)}: ${f}`);
}
