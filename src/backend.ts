// What a backend gives the model besides attention (which has its own API): the Linear layer's
// GEMMs. Types only; the CPU and WebGPU backends implement them.
import type { Backend } from "./attention/problem.js";

export interface ModelBackend {
  readonly name: Backend;
  /** y[M, N] = x[M, K] · w[N, K]ᵀ */
  linear(x: Float32Array, w: Float32Array, M: number, K: number, N: number): Promise<Float32Array>;
  /** Returns dx[M, K] = dy[M, N] · w[N, K] and adds dyᵀ · x into dw[N, K]. */
  linearBackward(dy: Float32Array, x: Float32Array, w: Float32Array, dw: Float32Array, M: number, K: number, N: number): Promise<Float32Array>;
}
