// Input checks shared by every backend: each bad input becomes a MobaError that names the
// argument, what was expected and what was given. Nothing is clamped.
import { MobaError, type Tensor } from "../tensor.js";

export type Backend = "cpu" | "webgpu";

/**
 * "f32": float32 inputs and arithmetic. "f16": q, k and v (and dout in the backward) are rounded to f16 (storage), arithmetic
 * accumulates in float32; on WebGPU the forward and backward run on tensor cores (subgroup matrices) where the
 * device has them, P = softmax numerators also rounded to f16 there. The CPU rounds the inputs only.
 */
export type Precision = "f32" | "f16";

export interface AttentionInputs {
  q: Tensor; // [tokens, qHeads, headDim]
  k: Tensor; // [tokens, kvHeads, headDim]
  v: Tensor; // [tokens, kvHeads, headDim]
  /** [batch + 1] offsets of the packed sequences; default: one sequence of all tokens. */
  cuSeqlens?: ArrayLike<number>;
}

export interface MobaOptions {
  blockSize: number;
  topK: number;
  /** Softmax scale; default 1 / sqrt(headDim). */
  scale?: number;
  backend?: Backend;
  /** CPU worker threads; default: all cores for large inputs, the calling thread for small ones. */
  threads?: number;
  /** Default "f32". */
  precision?: Precision;
}

export type FullOptions = Omit<MobaOptions, "blockSize" | "topK">;

/** A checked problem: what every kernel receives. */
export interface AttentionProblem {
  tokens: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  scale: number;
  /** MoBA block size; for full attention the tile size of the kernels. */
  blockSize: number;
  /** Blocks per query including its own; Infinity = every past block (full attention). */
  topK: number;
  cuSeqlens: Int32Array; // [batch + 1]
  /** Default "f32"; with "f16" the inputs given to the kernels are already rounded to f16 values. */
  precision?: Precision;
}

/** Full causal attention runs the MoBA kernels with every past block selected, in tiles of this many keys. */
export const FULL_ATTENTION_TILE = 64;

function fail(message: string): never {
  throw new MobaError(message);
}

/** Offsets, block sizes and top-k go to the kernels as 32-bit integers (Int32Array, WGSL u32/i32). */
const INT32_MAX = 2 ** 31 - 1;

function checkPositiveInteger(name: string, value: number): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) {
    fail(`${name}: expected a positive integer, got ${String(value)}`);
  }
  if (value > INT32_MAX) fail(`${name}: expected at most 2^31 - 1 (the kernels index in 32 bits), got ${value}`);
}

/** First NaN or infinite element of a tensor, reported with its name and index. */
export function checkFinite(name: string, data: ArrayLike<number>): void {
  // x · 0 is 0 for a finite x and NaN for NaN and ±Infinity: four sums of them, no branch in the loop,
  // tell whether there is any (3-4x faster than testing each element: 1.5 ms for q, k and v at 16K
  // tokens, a fixed cost of every call); only then is the first one looked for
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0;
  let i = 0;
  for (; i + 3 < data.length; i += 4) {
    s0 += data[i] * 0;
    s1 += data[i + 1] * 0;
    s2 += data[i + 2] * 0;
    s3 += data[i + 3] * 0;
  }
  for (; i < data.length; i++) s0 += data[i] * 0;
  if (s0 + s1 + s2 + s3 === 0) return;
  for (let i = 0; i < data.length; i++) {
    if (!Number.isFinite(data[i])) fail(`${name}: expected finite values, got ${data[i]} at element ${i}`);
  }
}

/** q, k or v as the GPU-buffer API takes them: a shape, the values in a buffer this code does not read. */
export interface ShapedInput {
  readonly shape: readonly number[];
}

/** Checks the shape, and with `host` the Float32Array data's length. */
function checkShape(name: string, t: Tensor | ShapedInput, expected: readonly number[] | null, host = true): void {
  if (host && (!t || !((t as Tensor).data instanceof Float32Array)))
    fail(`${name}: expected a tensor with Float32Array data, got ${typeof t}`);
  if (!t || !Array.isArray(t.shape)) fail(`${name}: expected { buffer, shape }, got ${typeof t}`);
  const shape = t.shape;
  if (expected === null) {
    if (shape.length !== 3) fail(`${name}: expected shape [tokens, heads, headDim], got [${shape.join(", ")}]`);
  } else if (shape.length !== expected.length || shape.some((s, i) => s !== expected[i])) {
    fail(`${name}: expected shape [${expected.join(", ")}], got [${shape.join(", ")}]`);
  }
  const size = shape.reduce((a, b) => a * b, 1);
  if (host && (t as Tensor).data.length !== size)
    fail(`${name}: expected ${size} elements for shape [${shape.join(", ")}], got ${(t as Tensor).data.length}`);
}

export function checkCuSeqlens(cuSeqlens: ArrayLike<number> | undefined, tokens: number): Int32Array {
  if (cuSeqlens === undefined) return Int32Array.of(0, tokens);
  if (cuSeqlens.length < 2) fail(`cuSeqlens: expected at least 2 offsets [0, ..., ${tokens}], got ${cuSeqlens.length}`);
  const out = new Int32Array(cuSeqlens.length);
  for (let i = 0; i < cuSeqlens.length; i++) {
    const x = Number(cuSeqlens[i]);
    if (!Number.isInteger(x)) fail(`cuSeqlens[${i}]: expected an integer, got ${cuSeqlens[i]}`);
    if (i === 0 && x !== 0) fail(`cuSeqlens[0]: expected 0, got ${x}`);
    if (i > 0 && x < out[i - 1]) fail(`cuSeqlens[${i}]: expected non-decreasing offsets (>= ${out[i - 1]}), got ${x}`);
    // checked before the Int32Array stores it: 2^32 + 5 would be stored as 5
    if (x > tokens) fail(`cuSeqlens[${i}]: expected an offset of at most the number of tokens ${tokens}, got ${x}`);
    out[i] = x;
  }
  const last = out[out.length - 1];
  if (last !== tokens) fail(`cuSeqlens[${out.length - 1}]: expected the number of tokens ${tokens}, got ${last}`);
  return out;
}

/** The largest finite f16. */
const F16_MAX = 65504;

function checkPrecision(precision: Precision | undefined): Precision {
  if (precision === undefined) return "f32";
  if (precision !== "f32" && precision !== "f16") fail(`precision: expected "f32" or "f16", got ${JSON.stringify(precision)}`);
  return precision;
}

/**
 * Checks that every finite element fits f16 (the f16 path would turn it into an infinity); NaN and
 * infinities are the finite check's, so that every backend names them the same way.
 */
export function checkF16Range(name: string, data: ArrayLike<number>): void {
  for (let i = 0; i < data.length; i++) {
    if (Math.abs(data[i]) > F16_MAX && Number.isFinite(data[i]))
      fail(`${name}: expected |values| <= ${F16_MAX} for precision "f16", got ${data[i]} at element ${i}`);
  }
}

/**
 * Checks q, k, v, cuSeqlens and the MoBA options; topK = Infinity asks for full attention. Inputs
 * that live in GPU buffers (shapes only) have their shapes checked, not their values. finite false:
 * the caller's backend checks that q, k, v are finite itself (the CPU forward, on its copies).
 */
export function checkProblem(
  inputs: AttentionInputs | ShapedInputs,
  blockSize: number,
  topK: number,
  scale: number | undefined,
  precision?: Precision,
  finite = true,
): AttentionProblem {
  const { q, k, v } = inputs;
  const host = !isShaped(inputs);
  checkShape("q", q, null, host);
  const [tokens, qHeads, headDim] = q.shape;
  checkShape("k", k, null, host);
  const kvHeads = k.shape[1];
  if (k.shape[0] !== tokens) fail(`k: expected ${tokens} tokens (as q), got ${k.shape[0]}`);
  if (k.shape[2] !== headDim) fail(`k: expected headDim ${headDim} (as q), got ${k.shape[2]}`);
  checkShape("v", v, k.shape, host);
  if (headDim < 1) fail(`q: expected headDim >= 1, got ${headDim}`);
  if (qHeads < 1 || kvHeads < 1) fail(`heads: expected at least 1 query and 1 kv head, got ${qHeads} and ${kvHeads}`);
  if (qHeads % kvHeads !== 0) fail(`heads: expected qHeads (${qHeads}) to be a multiple of kvHeads, got kvHeads ${kvHeads}`);
  checkPositiveInteger("blockSize", blockSize);
  if (topK !== Infinity) checkPositiveInteger("topK", topK);
  const s = scale ?? 1 / Math.sqrt(headDim);
  if (typeof s !== "number" || !Number.isFinite(s)) fail(`scale: expected a finite number, got ${String(scale)}`);
  const cu = checkCuSeqlens(inputs.cuSeqlens, tokens);
  const checkedPrecision = checkPrecision(precision);
  if (!isShaped(inputs)) checkValues(inputs, checkedPrecision, finite);
  return { tokens, qHeads, kvHeads, headDim, scale: s, blockSize, topK, cuSeqlens: cu, precision: checkedPrecision };
}

/** q, k, v in GPU buffers: { buffer, shape } each (see gpuApi.ts). */
export interface ShapedInputs {
  q: ShapedInput;
  k: ShapedInput;
  v: ShapedInput;
  cuSeqlens?: ArrayLike<number>;
  onGpu: true;
}

function isShaped(inputs: AttentionInputs | ShapedInputs): inputs is ShapedInputs {
  return (inputs as ShapedInputs).onGpu === true;
}

function checkValues({ q, k, v }: AttentionInputs, precision: Precision, finite: boolean): void {
  if (finite) {
    checkFinite("q", q.data);
    checkFinite("k", k.data);
    checkFinite("v", v.data);
  }
  if (precision === "f16")
    for (const [name, t] of [
      ["q", q],
      ["k", k],
      ["v", v],
    ] as const)
      checkF16Range(name, t.data);
}

export function mobaProblem(inputs: AttentionInputs | ShapedInputs, options: MobaOptions, finite = true): AttentionProblem {
  if (!options || typeof options !== "object") fail(`options: expected { blockSize, topK }, got ${String(options)}`);
  return checkProblem(inputs, options.blockSize, options.topK, options.scale, options.precision, finite);
}

export function fullProblem(inputs: AttentionInputs | ShapedInputs, options: FullOptions = {}, finite = true): AttentionProblem {
  return checkProblem(inputs, FULL_ATTENTION_TILE, Infinity, options.scale, options.precision, finite);
}

/** Checks the tensors the backward receives besides q, k, v. */
export function checkBackwardInputs(problem: AttentionProblem, out: Tensor, lse: Tensor, dout: Tensor): void {
  const { tokens, qHeads, headDim } = problem;
  checkShape("out", out, [tokens, qHeads, headDim]);
  checkShape("lse", lse, [tokens, qHeads]);
  checkShape("dout", dout, [tokens, qHeads, headDim]);
  checkFinite("out", out.data);
  checkFinite("lse", lse.data);
  checkFinite("dout", dout.data);
}

/** Keys attended by all queries of one head (the FLOP count of attention is 4 · headDim · this). */
export function attendedKeys(cuSeqlens: ArrayLike<number>, blockSize: number, topK: number): number {
  let total = 0;
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const length = cuSeqlens[b + 1] - cuSeqlens[b];
    for (let i = 0; i * blockSize < length; i++) {
      const rows = Math.min(blockSize, length - i * blockSize);
      total += rows * Math.min(i, topK - 1) * blockSize + (rows * (rows + 1)) / 2;
    }
  }
  return total;
}
