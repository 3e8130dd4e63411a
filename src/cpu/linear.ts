// The Linear layer's GEMMs on the CPU: one kernel (matmulXWt), split by output rows over the
// worker threads when the product is large enough to pay for them.
import type { ModelBackend } from "../backend.js";
import { addInto, matmulXWt, transpose } from "./ops.js";
import { cores, type Job, runJobs, shared } from "./pool.js";

/** Multiply-adds below which one thread is faster than posting jobs. */
const THREAD_THRESHOLD = 4e6;

const isShared = (a: Float32Array) => typeof SharedArrayBuffer !== "undefined" && a.buffer instanceof SharedArrayBuffer;

/** y[M, N] = x[M, K] · w[N, K]ᵀ on up to `threads` threads. */
export async function matmul(x: Float32Array, w: Float32Array, M: number, K: number, N: number, threads = cores): Promise<Float32Array> {
  const n = M * K * N < THREAD_THRESHOLD ? 1 : Math.min(threads, Math.ceil(M / 4));
  if (n === 1) {
    const y = new Float32Array(M * N);
    matmulXWt(y, x, w, M, K, N);
    return y;
  }
  const y = shared(new Float32Array(M * N), false);
  const xs = isShared(x) ? x : shared(x);
  const ws = isShared(w) ? w : shared(w);
  // rows in multiples of 4 so every part but the last runs the 4×4 kernel throughout
  const step = Math.ceil(M / (2 * n) / 4) * 4;
  const jobs: Job[] = [];
  for (let from = 0; from < M; from += step) jobs.push({ kind: "matmul", y, x: xs, w: ws, K, N, from, to: Math.min(M, from + step) });
  await runJobs(jobs, n);
  return y;
}

export const cpuBackend: ModelBackend = {
  name: "cpu",
  linear: (x, w, M, K, N) => matmul(x, w, M, K, N),
  async linearBackward(dy, x, w, dw, M, K, N) {
    const dx = await matmul(dy, transpose(w, N, K), M, N, K); // dx[M, K] = dy · w
    addInto(dw, await matmul(transpose(dy, M, N), transpose(x, M, K), N, M, K)); // dw[N, K] += dyᵀ · x
    return dx;
  },
};
