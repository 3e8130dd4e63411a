// What a backend gives the model: tensors of its own kind (B: a Float32Array on the CPU, a GPU
// buffer on WebGPU) and every op of the Llama forward/backward and of AdamW on them, so the model
// code (src/model/llama.ts) is one walk through the layers whatever runs it, and on WebGPU the
// activations, weights, gradients and moments never leave the GPU during a training step.
// Shapes are row-major; ops write their outputs (=) unless they say they accumulate (+=).
import type { Backend, Precision } from "./attention/problem.js";

/** A backend tensor: its element count, whatever holds it. */
export interface Sized {
  readonly length: number;
}

/** MoBA or full causal attention over a packed batch, as one layer calls it. */
export interface AttentionCall {
  kind: "moba" | "full";
  tokens: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  blockSize: number;
  topK: number;
  cuSeqlens: Int32Array;
}

/** What an attention forward keeps for its backward. */
export interface AttentionSaved<B> {
  out: B; // [tokens, qHeads, headDim]
  lse: B; // [tokens, qHeads]
  /** The block choice, in the backend's own form (a constant for the backward). */
  routing: unknown;
}

/** One AdamW update's scalars, computed on the host. */
export interface AdamWScalars {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** 1 − lr · weightDecay where the tensor decays, else 1. */
  decayFactor: number;
  /** Bias corrections 1 − β₁ᵗ and 1 − β₂ᵗ. */
  c1: number;
  c2: number;
  /** Gradients are multiplied by this first (clipping). */
  gradScale: number;
}

export interface ModelBackend<B extends Sized = Sized> {
  readonly name: Backend;
  /** "f16": GEMMs and attention on f16 operands with float32 accumulation (WebGPU); tensors stay float32. */
  readonly precision: Precision;

  // ---- memory ----
  /** Runs `work`; tensors it makes with `zeros`/`empty`/`upload` are freed when it ends (on the GPU: errors become one clear error). */
  scope<T>(what: string, work: () => Promise<T>): Promise<T>;
  /** n zeros (an accumulator). */
  zeros(n: number): B;
  /** n elements the next op overwrites (the GPU poisons them with NaN so unwritten ones show). */
  empty(n: number): B;
  /** A copy of host data: scoped, or `persistent` (weights, moments) until `free`. */
  upload(data: Float32Array, persistent?: boolean): B;
  /** The tensor's contents on the host (the CPU returns the array itself). */
  download(x: B): Promise<Float32Array>;
  /** Frees persistent tensors. */
  free(xs: B[]): void;
  /** x = 0 */
  clear(x: B): void;
  /** The most device memory this backend's tensors have held at once, in bytes (where it owns a device). */
  readonly peakBytes?: number;

  // ---- layers: the same pairs as src/model/layers.ts ----
  embedding(out: B, table: B, tokens: Int32Array, H: number): Promise<void>;
  /** dTable[V, H] += scatter of dOut[T, H] by token */
  embeddingBackward(dTable: B, dOut: B, tokens: Int32Array, H: number): Promise<void>;
  rmsNorm(y: B, rstd: B, x: B, w: B, M: number, H: number, eps: number): Promise<void>;
  /** dx = (or += when accumulate) the input gradient; dw += the weight gradient. */
  rmsNormBackward(dx: B, dw: B, dy: B, x: B, w: B, rstd: B, M: number, H: number, accumulate: boolean): Promise<void>;
  /** Rotates x [T, heads, D] in place by the angles in cos/sin [T, D / 2]; direction −1 is the inverse (the backward). */
  rope(x: B, cos: B, sin: B, heads: number, D: number, direction: 1 | -1): Promise<void>;
  swiglu(m: B, g: B, u: B): Promise<void>;
  swigluBackward(dg: B, du: B, dm: B, g: B, u: B): Promise<void>;
  /** out += a */
  addInto(out: B, a: B): Promise<void>;
  /** y[M, N] = x[M, K] · w[N, K]ᵀ */
  linear(y: B, x: B, w: B, M: number, K: number, N: number): Promise<void>;
  /** dx[M, K] = (or += when accumulate) dy[M, N] · w[N, K]; dw[N, K] += dyᵀ · x. */
  linearBackward(dx: B, dw: B, dy: B, x: B, w: B, M: number, K: number, N: number, accumulate: boolean): Promise<void>;
  /** Writes each row's log-sum-exp; returns Σ weight · (lse − logit[target]) (nats). */
  crossEntropy(lse: B, logits: B, targets: Int32Array, weights: Float32Array, V: number): Promise<number>;
  /** dLogits = scale · weight · (softmax − onehot(target)) */
  crossEntropyBackward(dLogits: B, logits: B, lse: B, targets: Int32Array, weights: Float32Array, V: number, scale: number): Promise<void>;
  attention(call: AttentionCall, q: B, k: B, v: B): Promise<AttentionSaved<B>>;
  attentionBackward(call: AttentionCall, q: B, k: B, v: B, saved: AttentionSaved<B>, dout: B): Promise<{ dq: B; dk: B; dv: B }>;

  // ---- optimizer ----
  /** Σ x² over every tensor (float64 on the host). */
  sumOfSquares(xs: B[]): Promise<number>;
  /** One AdamW update of w from g with moments m, v. */
  adamw(w: B, g: B, m: B, v: B, s: AdamWScalars): Promise<void>;
}
