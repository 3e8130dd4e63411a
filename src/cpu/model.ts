// The model backend on the CPU: tensors are Float32Arrays, the layers are src/model/layers.ts,
// the GEMMs gemm.ts (WebAssembly SIMD, split by output rows over the worker threads), attention
// the CPU MoBA/flash kernels.
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
import { gemm } from "./gemm.js";
import { cpuBackward, cpuForward } from "./index.js";
import { addInto } from "./ops.js";

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
  release: () => {},
  clear: (x) => x.fill(0),
  copy: (dst, dstOffset, src, srcOffset, n) => dst.set(src.subarray(srcOffset, srcOffset + n), dstOffset),

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
  // y[M, N] = x[M, K] · w[N, K]ᵀ (+ residual)
  async linear(y, x, w, M, K, N, residual) {
    if (residual) y.set(residual);
    await gemm({ c: y, a: x, b: w, M, N, K, aRow: K, aCol: 1, bRow: 1, bCol: K, accumulate: residual !== undefined });
  },
  async linearBackward(dx, dw, dy, x, w, M, K, N, accumulate) {
    // dx[M, K] (+)= dy[M, N] · w[N, K]
    await gemm({ c: dx, a: dy, b: w, M, N: K, K: N, aRow: N, aCol: 1, bRow: K, bCol: 1, accumulate });
    // dw[N, K] += dyᵀ · x[M, K]
    await gemm({ c: dw, a: dy, b: x, M: N, N: K, K: M, aRow: 1, aCol: N, bRow: K, bCol: 1, accumulate: true });
  },
  async crossEntropy(lse, losses, logits, targets, weights, V) {
    crossEntropyForward(lse, losses, logits, targets, weights, V);
  },
  crossEntropyBackward: async (dLogits, logits, lse, targets, weights, V, scale) =>
    crossEntropyBackward(dLogits, logits, lse, targets, weights, V, scale),
  async attention(c, q, k, v): Promise<AttentionSaved<Float32Array>> {
    const a = await cpuForward(attentionProblem(c, q, k, v), q, k, v);
    return { out: a.out, lse: a.lse, routing: c.kind === "moba" ? a.past : undefined, inputs: { q, k, v } };
  },
  async attentionBackward(c, saved, dout) {
    const { q, k, v } = saved.inputs;
    return cpuBackward(attentionProblem(c, q, k, v), q, k, v, saved.out, saved.lse, dout, saved.routing as Int32Array | undefined);
  },
  routingTable: async (_c, saved) => (saved.routing as Int32Array | undefined) ?? new Int32Array(0),

  async gradientClip(clip, grads, maxNorm, lossScale, guard) {
    if (!Number.isFinite(guard[0])) return void (clip[0] = guard[0]);
    let sum = 0;
    for (const x of grads) for (let i = 0; i < x.length; i++) sum += x[i] * x[i];
    const norm = Math.sqrt(sum) / lossScale;
    clip[0] = norm;
    clip[1] = (norm > maxNorm ? maxNorm / norm : 1) / lossScale;
  },
  async adamw(w, g, m, v, s: AdamWScalars, clip) {
    if (!Number.isFinite(clip[0])) return;
    // the scalars as locals: the objects s come in have several shapes (decayFactor 1 or a fraction),
    // and V8 read s.beta1 ... in the loop as a generic property lookup, 15x slower (170 ms a step for the tour's model)
    const { beta1, beta2, eps, lr, decayFactor, c1, c2 } = s;
    const multiplier = clip[1];
    for (let i = 0; i < w.length; i++) {
      const grad = g[i] * multiplier;
      m[i] = beta1 * m[i] + (1 - beta1) * grad;
      v[i] = beta2 * v[i] + (1 - beta2) * grad * grad;
      w[i] = w[i] * decayFactor - (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + eps);
    }
  },
};
