// The model's dense ops on the CPU. Every function takes float32 or float64 arrays, so the same
// code runs the model (float32) and the finite-difference checks of its backward (float64).
import type { Floats } from "../tensor.js";

/**
 * y[M, N] = x[M, K] · w[N, K]ᵀ — the one GEMM the model needs (a Linear layer stores w as
 * [out, in]); both backward products are written as this one after a transpose.
 * Four output rows × four columns share each load of x and w.
 */
export function matmulXWt(y: Floats, x: Floats, w: Floats, M: number, K: number, N: number): void {
  let i = 0;
  for (; i + 4 <= M; i += 4) {
    const x0 = i * K,
      x1 = x0 + K,
      x2 = x1 + K,
      x3 = x2 + K;
    let n = 0;
    for (; n + 4 <= N; n += 4) {
      const w0 = n * K,
        w1 = w0 + K,
        w2 = w1 + K,
        w3 = w2 + K;
      let s00 = 0,
        s01 = 0,
        s02 = 0,
        s03 = 0,
        s10 = 0,
        s11 = 0,
        s12 = 0,
        s13 = 0;
      let s20 = 0,
        s21 = 0,
        s22 = 0,
        s23 = 0,
        s30 = 0,
        s31 = 0,
        s32 = 0,
        s33 = 0;
      for (let k = 0; k < K; k++) {
        const a0 = x[x0 + k],
          a1 = x[x1 + k],
          a2 = x[x2 + k],
          a3 = x[x3 + k];
        const b0 = w[w0 + k],
          b1 = w[w1 + k],
          b2 = w[w2 + k],
          b3 = w[w3 + k];
        s00 += a0 * b0;
        s01 += a0 * b1;
        s02 += a0 * b2;
        s03 += a0 * b3;
        s10 += a1 * b0;
        s11 += a1 * b1;
        s12 += a1 * b2;
        s13 += a1 * b3;
        s20 += a2 * b0;
        s21 += a2 * b1;
        s22 += a2 * b2;
        s23 += a2 * b3;
        s30 += a3 * b0;
        s31 += a3 * b1;
        s32 += a3 * b2;
        s33 += a3 * b3;
      }
      const y0 = i * N + n;
      y[y0] = s00;
      y[y0 + 1] = s01;
      y[y0 + 2] = s02;
      y[y0 + 3] = s03;
      y[y0 + N] = s10;
      y[y0 + N + 1] = s11;
      y[y0 + N + 2] = s12;
      y[y0 + N + 3] = s13;
      y[y0 + 2 * N] = s20;
      y[y0 + 2 * N + 1] = s21;
      y[y0 + 2 * N + 2] = s22;
      y[y0 + 2 * N + 3] = s23;
      y[y0 + 3 * N] = s30;
      y[y0 + 3 * N + 1] = s31;
      y[y0 + 3 * N + 2] = s32;
      y[y0 + 3 * N + 3] = s33;
    }
    for (; n < N; n++) for (let r = 0; r < 4; r++) y[(i + r) * N + n] = dot(x, (i + r) * K, w, n * K, K);
  }
  for (; i < M; i++) for (let n = 0; n < N; n++) y[i * N + n] = dot(x, i * K, w, n * K, K);
}

function dot(a: Floats, aOffset: number, b: Floats, bOffset: number, K: number): number {
  let s = 0;
  for (let k = 0; k < K; k++) s += a[aOffset + k] * b[bOffset + k];
  return s;
}

/** out[C, R] = a[R, C]ᵀ */
export function transpose<T extends Floats>(a: T, R: number, C: number): T {
  const out = new (a.constructor as new (n: number) => T)(R * C);
  for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) out[c * R + r] = a[r * C + c];
  return out;
}

/** a += b */
export function addInto(a: Floats, b: Floats): void {
  for (let i = 0; i < a.length; i++) a[i] += b[i];
}
