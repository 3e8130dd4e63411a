// The model backend on the CPU: tensors are Float32Arrays, the layers are src/model/layers.ts,
// the GEMMs gemm.ts (WebAssembly SIMD, split by output rows over the worker threads), attention
// the CPU MoBA/flash kernels.
import { mobaAttention, mobaAttentionBackward, flashAttention, flashAttentionBackward, type Tensor32i } from "../attention/api.js";
import type { AdamWScalars, AttentionCall, AttentionSaved, ModelBackend } from "../backend.js";
import {
  crossEntropyBackward, crossEntropyForward, embeddingBackward, embeddingForward, rmsNormBackward, rmsNormForward, rope, swigluBackward, swigluForward,
} from "../model/layers.js";
import { gemm } from "./gemm.js";
import { addInto } from "./ops.js";

function attentionInputs(c: AttentionCall, q: Float32Array, k: Float32Array, v: Float32Array) {
  return { q: { data: q, shape: [c.tokens, c.qHeads, c.headDim] }, k: { data: k, shape: [c.tokens, c.kvHeads, c.headDim] }, v: { data: v, shape: [c.tokens, c.kvHeads, c.headDim] }, cuSeqlens: c.cuSeqlens };
}

export const cpuBackend: ModelBackend<Float32Array> = {
  name: "cpu",
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
  // y[M, N] = x[M, K] · w[N, K]ᵀ
  linear: (y, x, w, M, K, N) => gemm({ c: y, a: x, b: w, M, N, K, aRow: K, aCol: 1, bRow: 1, bCol: K, accumulate: false }),
  async linearBackward(dx, dw, dy, x, w, M, K, N, accumulate) {
    // dx[M, K] (+)= dy[M, N] · w[N, K]
    await gemm({ c: dx, a: dy, b: w, M, N: K, K: N, aRow: N, aCol: 1, bRow: K, bCol: 1, accumulate });
    // dw[N, K] += dyᵀ · x[M, K]
    await gemm({ c: dw, a: dy, b: x, M: N, N: K, K: M, aRow: 1, aCol: N, bRow: K, bCol: 1, accumulate: true });
  },
  crossEntropy: async (lse, logits, targets, weights, V) => crossEntropyForward(lse, logits, targets, weights, V),
  crossEntropyBackward: async (dLogits, logits, lse, targets, weights, V, scale) => crossEntropyBackward(dLogits, logits, lse, targets, weights, V, scale),
  async attention(c, q, k, v): Promise<AttentionSaved<Float32Array>> {
    const inputs = attentionInputs(c, q, k, v);
    const a = c.kind === "moba" ? await mobaAttention(inputs, { blockSize: c.blockSize, topK: c.topK }) : await flashAttention(inputs);
    return { out: a.out.data, lse: a.lse.data, routing: c.kind === "moba" ? a.routing : undefined };
  },
  async attentionBackward(c, q, k, v, saved, dout) {
    const inputs = {
      ...attentionInputs(c, q, k, v), out: { data: saved.out, shape: [c.tokens, c.qHeads, c.headDim] }, lse: { data: saved.lse, shape: [c.tokens, c.qHeads] },
      dout: { data: dout, shape: [c.tokens, c.qHeads, c.headDim] }, routing: saved.routing as Tensor32i | undefined,
    };
    const g = c.kind === "moba" ? await mobaAttentionBackward(inputs, { blockSize: c.blockSize, topK: c.topK }) : await flashAttentionBackward(inputs);
    return { dq: g.dq.data, dk: g.dk.data, dv: g.dv.data };
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
