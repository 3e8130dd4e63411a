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
  /**
   * q, k, v as the backward reads them: the caller's own tensors, or (a training forward in f16 on
   * WebGPU with tensor cores) the backend's f16 copies of them, after which the caller's may end.
   * The caller ends these with out and lse when the backward is done.
   */
  inputs: { q: B; k: B; v: B };
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
}

/** The shapes a device decoder is built for: one model, every layer's attention, a cache of `capacity` tokens. */
export interface DecodeShape {
  hidden: number;
  intermediate: number;
  vocab: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  blockSize: number;
  topK: number;
  eps: number;
  kinds: ("moba" | "full")[]; // one per layer
  capacity: number;
}

/** A model's weights as backend tensors, for decoding (Hugging Face shapes: Linear weights [out, in]). */
export interface DecoderWeights<B> {
  embedding: B; // [V, H]
  layers: { inputNorm: B; q: B; k: B; v: B; o: B; postNorm: B; gate: B; up: B; down: B }[];
  finalNorm: B; // [H]
  head: B; // [V, H]
}

/**
 * Decoding with the KV cache (keys after rotary, values, the block key sums MoBA's gate reads) on
 * the backend's device: a step uploads one token and its rotary angles and reads back only the
 * logits. src/model/decode.ts drives it (and decodes on the host where a backend has none).
 */
export interface DeviceDecoder<B> {
  /** Cached tokens: the next step's position. Setting it lower rewinds the cache (a benchmark decodes one position again). */
  length: number;
  /** Fills the empty cache with each layer's keys [tokens, kvHeads, D] (after rotary) and values (tensors of this backend). */
  fill(keys: B[], values: B[], tokens: number): Promise<void>;
  /** Feeds one token at position `length` with its rotary angles cos, sin [D / 2]; returns its next-token logits [V]. */
  step(token: number, cos: Float32Array, sin: Float32Array): Promise<Float32Array>;
  /** Frees the cache. */
  free(): void;
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
  /** Ends scoped tensors early: no op recorded after this call reads or writes them, so later tensors may reuse their memory. */
  release(xs: B[]): void;
  /** x = 0 */
  clear(x: B): void;
  /** dst[dstOffset, dstOffset + n) = src[srcOffset, srcOffset + n) (elements): rows in and out of a chunk. */
  copy(dst: B, dstOffset: number, src: B, srcOffset: number, n: number): void;
  /** The most device memory this backend's tensors have held at once, in bytes (where it owns a device). */
  readonly peakBytes?: number;
  /** Starts peakBytes again from what is held now (a benchmark measures each of its rows). */
  resetPeak?(): void;

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
  /** y[M, N] = x[M, K] · w[N, K]ᵀ (+ residual[M, N]: the residual stream's add, in the GEMM's epilogue on a GPU) */
  linear(y: B, x: B, w: B, M: number, K: number, N: number, residual?: B): Promise<void>;
  /** dx[M, K] = (or += when accumulate) dy[M, N] · w[N, K]; dw[N, K] += dyᵀ · x. */
  linearBackward(dx: B, dw: B, dy: B, x: B, w: B, M: number, K: number, N: number, accumulate: boolean): Promise<void>;
  /**
   * Writes each row's log-sum-exp and its loss weight · (lse − logit[target]) (nats): the loss stays
   * on the device until the step's end reads it (a read-back here would stall the GPU mid-step).
   */
  crossEntropy(lse: B, losses: B, logits: B, targets: Int32Array, weights: Float32Array, V: number): Promise<void>;
  /** dLogits = scale · weight · (softmax − onehot(target)) */
  crossEntropyBackward(dLogits: B, logits: B, lse: B, targets: Int32Array, weights: Float32Array, V: number, scale: number): Promise<void>;
  /** `training`: a backward follows (the backend may keep its own copies of q, k, v for it: AttentionSaved.inputs). */
  attention(call: AttentionCall, q: B, k: B, v: B, training: boolean): Promise<AttentionSaved<B>>;
  attentionBackward(call: AttentionCall, saved: AttentionSaved<B>, dout: B): Promise<{ dq: B; dk: B; dv: B }>;
  /**
   * The block choice of an attention forward on the host: each query's chosen past blocks [tokens, qHeads, topK − 1],
   * ascending, as the api's routing (width 0 for full attention, or when top-k covers every block).
   */
  routingTable(call: AttentionCall, saved: AttentionSaved<B>): Promise<Int32Array>;

  // ---- optimizer ----
  /**
   * Global-norm clipping, computed on the device: clip[0] = √(Σ g² over every tensor) / lossScale
   * (the norm of the true gradients, which hold lossScale times them), clip[1] = min(1, maxNorm /
   * clip[0]) / lossScale (what AdamW multiplies the gradients by). Where guard[0] is not finite (the
   * step before overflowed, and this one was recorded before the host knew) clip[0] = guard[0]: no
   * update is taken, and the host records the step again.
   */
  gradientClip(clip: B, grads: B[], maxNorm: number, lossScale: number, guard: B): Promise<void>;
  /** One AdamW update of w from g · clip[1] with moments m, v; none where clip[0] is not finite (the gradients overflowed). */
  adamw(w: B, g: B, m: B, v: B, s: AdamWScalars, clip: B): Promise<void>;

  // ---- decoding ----
  /** A decoder with the KV cache on this backend's device; absent where decoding runs on the host (the CPU). */
  decoder?(shape: DecodeShape, weights: DecoderWeights<B>): Promise<DeviceDecoder<B>>;
}
