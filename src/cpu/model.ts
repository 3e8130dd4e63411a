// The model backend on the CPU: tensors are Float32Arrays, the layers are src/model/layers.ts,
// the GEMMs one kernel (matmulXWt) split by output rows over the worker threads when the
// product is large enough to pay for them, attention the CPU MoBA/flash kernels.
import { type AttentionProblem, fullProblem, mobaProblem } from "../attention/problem.js";
import type { AdamWScalars, AttentionCall, AttentionSaved, ModelBackend } from "../backend.js";
import {
  crossEntropyBackward,
  crossEntropyForward,
  embeddingBackward,
  embeddingForward,
  rmsNormBackward,
  rmsNormForward,
  rope,
  swigluBackward,
  swigluForward,
} from "../model/layers.js";
import { cpuBackward, cpuForward } from "./index.js";
import { addInto, matmulXWt, transpose } from "./ops.js";
import { cores, type Job, runJobs, shared } from "./pool.js";

/** Multiply-adds below which one thread is faster than posting jobs. */
const THREAD_THRESHOLD = 4e6;

const isShared = (a: Float32Array) => typeof SharedArrayBuffer !== "undefined" && a.buffer instanceof SharedArrayBuffer;

/** y[M, N] = x[M, K] · w[N, K]ᵀ on up to `threads` threads. */
export async function matmul(x: Float32Array, w: Float32Array, M: number, K: number, N: number, threads?: number): Promise<Float32Array> {
  const n = M * K * N < THREAD_THRESHOLD ? 1 : Math.min(threads ?? (await cores()), Math.ceil(M / 4));
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

/** The checked problem of a layer's attention call (the kernels' own entry points, not the public API). */
function attentionProblem(c: AttentionCall, q: Float32Array, k: Float32Array, v: Float32Array): AttentionProblem {
  const inputs = {
    q: { data: q, shape: [c.tokens, c.qHeads, c.headDim] },
    k: { data: k, shape: [c.tokens, c.kvHeads, c.headDim] },
    v: { data: v, shape: [c.tokens, c.kvHeads, c.headDim] },
    cuSeqlens: c.cuSeqlens,
  };
  return c.kind === "moba" ? mobaProblem(inputs, { blockSize: c.blockSize, topK: c.topK }) : fullProblem(inputs);
}

export const cpuBackend: ModelBackend<Float32Array> = {
  name: "cpu",
  precision: "f32",
  scope: (_what, work) => work(),
  zeros: (n) => new Float32Array(n),
  empty: (n) => new Float32Array(n),
  upload: (data) => data,
  download: async (x) => x,
  free: () => {},
  clear: (x) => x.fill(0),

  embedding: async (out, table, tokens, H) => embeddingForward(out, table, tokens, H),
  embeddingBackward: async (dTable, dOut, tokens, H) => embeddingBackward(dTable, dOut, tokens, H),
  rmsNorm: async (y, rstd, x, w, M, H, eps) => rmsNormForward(y, rstd, x, w, M, H, eps),
  async rmsNormBackward(dx, dw, dy, x, w, rstd, M, H, accumulate) {
    if (!accumulate) return rmsNormBackward(dx, dw, dy, x, w, rstd, M, H);
    const part = new Float32Array(dx.length);
    rmsNormBackward(part, dw, dy, x, w, rstd, M, H);
    addInto(dx, part);
  },
  rope: async (x, cos, sin, heads, D, direction) => rope(x, { cos, sin }, heads, D, direction),
  swiglu: async (m, g, u) => swigluForward(m, g, u),
  swigluBackward: async (dg, du, dm, g, u) => swigluBackward(dg, du, dm, g, u),
  addInto: async (out, a) => addInto(out, a),
  async linear(y, x, w, M, K, N) {
    y.set(await matmul(x, w, M, K, N));
  },
  async linearBackward(dx, dw, dy, x, w, M, K, N, accumulate) {
    const part = await matmul(dy, transpose(w, N, K), M, N, K); // dx[M, K] = dy · w
    if (accumulate) addInto(dx, part);
    else dx.set(part);
    addInto(dw, await matmul(transpose(dy, M, N), transpose(x, M, K), N, M, K)); // dw[N, K] += dyᵀ · x
  },
  crossEntropy: async (lse, logits, targets, weights, V) => crossEntropyForward(lse, logits, targets, weights, V),
  crossEntropyBackward: async (dLogits, logits, lse, targets, weights, V, scale) =>
    crossEntropyBackward(dLogits, logits, lse, targets, weights, V, scale),
  async attention(c, q, k, v): Promise<AttentionSaved<Float32Array>> {
    const a = await cpuForward(attentionProblem(c, q, k, v), q, k, v);
    return { out: a.out, lse: a.lse, routing: c.kind === "moba" ? a.past : undefined };
  },
  async attentionBackward(c, q, k, v, saved, dout) {
    return cpuBackward(attentionProblem(c, q, k, v), q, k, v, saved.out, saved.lse, dout, saved.routing as Int32Array | undefined);
  },

  async sumOfSquares(xs) {
    let sum = 0;
    for (const x of xs) for (let i = 0; i < x.length; i++) sum += x[i] * x[i];
    return sum;
  },
  async adamw(w, g, m, v, s: AdamWScalars) {
    for (let i = 0; i < w.length; i++) {
      const grad = g[i] * s.gradScale;
      m[i] = s.beta1 * m[i] + (1 - s.beta1) * grad;
      v[i] = s.beta2 * v[i] + (1 - s.beta2) * grad * grad;
      w[i] = w[i] * s.decayFactor - (s.lr * (m[i] / s.c1)) / (Math.sqrt(v[i] / s.c2) + s.eps);
    }
  },
};
