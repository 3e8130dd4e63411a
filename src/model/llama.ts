// A Llama-style decoder: embedding, per layer RMSNorm → attention (MoBA or full, GQA, rotary) →
// residual → RMSNorm → SwiGLU MLP → residual, final RMSNorm, LM head. The forward keeps what the
// backward needs (llm.c style); the backward walks the same layers in reverse. Weight names and
// shapes are Hugging Face's, so a checkpoint maps onto LlamaForCausalLM.
import { flashAttention, flashAttentionBackward, mobaAttention, mobaAttentionBackward, type Tensor32i } from "../attention/api.js";
import type { ModelBackend } from "../backend.js";
import { addInto } from "../cpu/ops.js";
import { MobaError } from "../tensor.js";
import { type AttentionKind, headDim, type LlamaConfig, layerKinds } from "./config.js";
import {
  crossEntropyBackward, crossEntropyForward, embeddingBackward, embeddingForward, rmsNormBackward, rmsNormForward,
  rope, rotary, type Rotary, swigluBackward, swigluForward,
} from "./layers.js";
import { Rng } from "./rng.js";

export interface Param {
  readonly name: string;
  readonly shape: number[];
  data: Float32Array;
  grad: Float32Array;
  /** AdamW decays matrices, not norms or embeddings. */
  readonly decay: boolean;
}

export interface Model {
  readonly config: LlamaConfig;
  readonly params: Param[];
  readonly byName: Map<string, Param>;
}

/** Packed training sequences: documents never attend to each other. */
export interface Batch {
  tokens: Int32Array; // [T]
  targets: Int32Array; // [T] the next token (ignored where weight is 0)
  weights: Float32Array; // [T] loss weight of each token (0: not counted)
  cuSeqlens: Int32Array; // [segments + 1] offsets of the packed sequences
}

/** Parameter names and shapes, in Hugging Face's naming. */
export function paramSpecs(c: LlamaConfig): { name: string; shape: number[]; decay: boolean }[] {
  const H = c.hidden_size, F = c.intermediate_size, D = headDim(c);
  const specs = [{ name: "model.embed_tokens.weight", shape: [c.vocab_size, H], decay: false }];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    specs.push(
      { name: p + "input_layernorm.weight", shape: [H], decay: false },
      { name: p + "self_attn.q_proj.weight", shape: [c.num_attention_heads * D, H], decay: true },
      { name: p + "self_attn.k_proj.weight", shape: [c.num_key_value_heads * D, H], decay: true },
      { name: p + "self_attn.v_proj.weight", shape: [c.num_key_value_heads * D, H], decay: true },
      { name: p + "self_attn.o_proj.weight", shape: [H, c.num_attention_heads * D], decay: true },
      { name: p + "post_attention_layernorm.weight", shape: [H], decay: false },
      { name: p + "mlp.gate_proj.weight", shape: [F, H], decay: true },
      { name: p + "mlp.up_proj.weight", shape: [F, H], decay: true },
      { name: p + "mlp.down_proj.weight", shape: [H, F], decay: true },
    );
  }
  specs.push({ name: "model.norm.weight", shape: [H], decay: false });
  if (!c.tie_word_embeddings) specs.push({ name: "lm_head.weight", shape: [c.vocab_size, H], decay: true });
  return specs;
}

/** A model with weights drawn from N(0, initializer_range²) and norms at 1. */
export function initModel(config: LlamaConfig, seed: number): Model {
  const rng = new Rng(seed);
  const params = paramSpecs(config).map(({ name, shape, decay }) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(size);
    if (name.endsWith("norm.weight")) data.fill(1);
    else for (let i = 0; i < size; i++) data[i] = rng.normal() * config.initializer_range;
    return { name, shape, data, grad: new Float32Array(size), decay };
  });
  return { config, params, byName: new Map(params.map((p) => [p.name, p])) };
}

export function parameterCount(model: Model): number {
  return model.params.reduce((n, p) => n + p.data.length, 0);
}

function weight(model: Model, name: string): Param {
  const p = model.byName.get(name);
  if (!p) throw new MobaError(`model: missing parameter ${name}`);
  return p;
}

/** Each token's position within its packed sequence (rotary angles restart with every document). */
export function positionsOf(cuSeqlens: Int32Array): Int32Array {
  const positions = new Int32Array(cuSeqlens[cuSeqlens.length - 1]);
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    for (let t = cuSeqlens[b]; t < cuSeqlens[b + 1]; t++) positions[t] = t - cuSeqlens[b];
  }
  return positions;
}

/** What one layer's forward keeps for its backward. */
interface LayerTrace {
  x: Float32Array; // [T, H] layer input
  h1: Float32Array; // [T, H] normed input of attention
  rstd1: Float32Array; // [T]
  q: Float32Array; // [T, qHeads, D] after rotary
  k: Float32Array; // [T, kvHeads, D] after rotary
  v: Float32Array; // [T, kvHeads, D]
  attn: Float32Array; // [T, qHeads, D]
  lse: Float32Array; // [T, qHeads]
  routing: Tensor32i | undefined; // MoBA's block choice, reused by the backward
  mid: Float32Array; // [T, H] after the attention residual
  h2: Float32Array; // [T, H] normed input of the MLP
  rstd2: Float32Array; // [T]
  g: Float32Array; // [T, F] gate projection
  u: Float32Array; // [T, F] up projection
  m: Float32Array; // [T, F] silu(g) · u
}

export interface Trace {
  batch: Batch;
  kinds: AttentionKind[];
  rot: Rotary;
  layers: LayerTrace[];
  final: Float32Array; // [T, H] output of the last layer
  hN: Float32Array; // [T, H] after the final norm
  rstdN: Float32Array; // [T]
  logits: Float32Array; // [T, V]
  lse: Float32Array; // [T]
  /** Σ weight · negative log-likelihood over the batch (nats). */
  loss: number;
}

function attentionOptions(model: Model, backend: ModelBackend) {
  return { blockSize: model.config.moba_chunk_size, topK: model.config.moba_topk, backend: backend.name };
}

/** The forward pass; `kinds` overrides the config's attention per layer (training stages). */
export async function forward(model: Model, batch: Batch, backend: ModelBackend, kinds: AttentionKind[] = layerKinds(model.config)): Promise<Trace> {
  const c = model.config;
  const T = batch.tokens.length, H = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const nH = c.num_attention_heads, nKV = c.num_key_value_heads, D = headDim(c);
  const rot = rotary(positionsOf(batch.cuSeqlens), D, c.rope_theta);
  let x = new Float32Array(T * H);
  embeddingForward(x, weight(model, "model.embed_tokens.weight").data, batch.tokens, H);
  const layers: LayerTrace[] = [];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const w = (name: string) => weight(model, `model.layers.${l}.${name}.weight`).data;
    const h1 = new Float32Array(T * H), rstd1 = new Float32Array(T);
    rmsNormForward(h1, rstd1, x, w("input_layernorm"), T, H, c.rms_norm_eps);
    const q = await backend.linear(h1, w("self_attn.q_proj"), T, H, nH * D);
    const k = await backend.linear(h1, w("self_attn.k_proj"), T, H, nKV * D);
    const v = await backend.linear(h1, w("self_attn.v_proj"), T, H, nKV * D);
    rope(q, rot, nH, D);
    rope(k, rot, nKV, D);
    const inputs = { q: { data: q, shape: [T, nH, D] }, k: { data: k, shape: [T, nKV, D] }, v: { data: v, shape: [T, nKV, D] }, cuSeqlens: batch.cuSeqlens };
    const a = kinds[l] === "moba" ? await mobaAttention(inputs, attentionOptions(model, backend)) : await flashAttention(inputs, { backend: backend.name });
    const o = await backend.linear(a.out.data, w("self_attn.o_proj"), T, nH * D, H);
    const mid = new Float32Array(T * H);
    for (let i = 0; i < mid.length; i++) mid[i] = x[i] + o[i];
    const h2 = new Float32Array(T * H), rstd2 = new Float32Array(T);
    rmsNormForward(h2, rstd2, mid, w("post_attention_layernorm"), T, H, c.rms_norm_eps);
    const g = await backend.linear(h2, w("mlp.gate_proj"), T, H, F);
    const u = await backend.linear(h2, w("mlp.up_proj"), T, H, F);
    const m = new Float32Array(T * F);
    swigluForward(m, g, u);
    const down = await backend.linear(m, w("mlp.down_proj"), T, F, H);
    layers.push({ x, h1, rstd1, q, k, v, attn: a.out.data, lse: a.lse.data, routing: kinds[l] === "moba" ? a.routing : undefined, mid, h2, rstd2, g, u, m });
    x = new Float32Array(T * H);
    for (let i = 0; i < x.length; i++) x[i] = mid[i] + down[i];
  }
  const hN = new Float32Array(T * H), rstdN = new Float32Array(T);
  rmsNormForward(hN, rstdN, x, weight(model, "model.norm.weight").data, T, H, c.rms_norm_eps);
  const logits = await backend.linear(hN, headWeight(model).data, T, H, V);
  const lse = new Float32Array(T);
  const loss = crossEntropyForward(lse, logits, batch.targets, batch.weights, V);
  if (!Number.isFinite(loss)) throw new MobaError(`model: the loss is ${loss} (diverged); lower the learning rate or check the data`);
  return { batch, kinds, rot, layers, final: x, hN, rstdN, logits, lse, loss };
}

function headWeight(model: Model): Param {
  return weight(model, model.config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
}

/** Adds the gradients of lossScale · trace.loss into every param.grad. */
export async function backward(model: Model, trace: Trace, backend: ModelBackend, lossScale: number): Promise<void> {
  const c = model.config;
  const { batch, rot } = trace;
  const T = batch.tokens.length, H = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const nH = c.num_attention_heads, nKV = c.num_key_value_heads, D = headDim(c);
  const dLogits = new Float32Array(T * V);
  crossEntropyBackward(dLogits, trace.logits, trace.lse, batch.targets, batch.weights, V, lossScale);
  const head = headWeight(model);
  const dhN = await backend.linearBackward(dLogits, trace.hN, head.data, head.grad, T, H, V);
  let dx = new Float32Array(T * H);
  const norm = weight(model, "model.norm.weight");
  rmsNormBackward(dx, norm.grad, dhN, trace.final, norm.data, trace.rstdN, T, H);
  for (let l = c.num_hidden_layers - 1; l >= 0; l--) {
    const s = trace.layers[l];
    const p = (name: string) => weight(model, `model.layers.${l}.${name}.weight`);
    // MLP: dx flows to mid both through the residual and through the norm
    const down = p("mlp.down_proj");
    const dm = await backend.linearBackward(dx, s.m, down.data, down.grad, T, F, H);
    const dg = new Float32Array(T * F), du = new Float32Array(T * F);
    swigluBackward(dg, du, dm, s.g, s.u);
    const gate = p("mlp.gate_proj"), up = p("mlp.up_proj");
    const dh2 = await backend.linearBackward(dg, s.h2, gate.data, gate.grad, T, H, F);
    addInto(dh2, await backend.linearBackward(du, s.h2, up.data, up.grad, T, H, F));
    const dMid = new Float32Array(T * H);
    const post = p("post_attention_layernorm");
    rmsNormBackward(dMid, post.grad, dh2, s.mid, post.data, s.rstd2, T, H);
    addInto(dMid, dx);
    // attention
    const o = p("self_attn.o_proj");
    const dAttn = await backend.linearBackward(dMid, s.attn, o.data, o.grad, T, nH * D, H);
    const inputs = {
      q: { data: s.q, shape: [T, nH, D] }, k: { data: s.k, shape: [T, nKV, D] }, v: { data: s.v, shape: [T, nKV, D] }, cuSeqlens: batch.cuSeqlens,
      out: { data: s.attn, shape: [T, nH, D] }, lse: { data: s.lse, shape: [T, nH] }, dout: { data: dAttn, shape: [T, nH, D] }, routing: s.routing,
    };
    const grads = trace.kinds[l] === "moba" ? await mobaAttentionBackward(inputs, attentionOptions(model, backend)) : await flashAttentionBackward(inputs, { backend: backend.name });
    const dq = grads.dq.data, dk = grads.dk.data;
    rope(dq, rot, nH, D, -1);
    rope(dk, rot, nKV, D, -1);
    const wq = p("self_attn.q_proj"), wk = p("self_attn.k_proj"), wv = p("self_attn.v_proj");
    const dh1 = await backend.linearBackward(dq, s.h1, wq.data, wq.grad, T, H, nH * D);
    addInto(dh1, await backend.linearBackward(dk, s.h1, wk.data, wk.grad, T, H, nKV * D));
    addInto(dh1, await backend.linearBackward(grads.dv.data, s.h1, wv.data, wv.grad, T, H, nKV * D));
    const input = p("input_layernorm");
    const dIn = new Float32Array(T * H);
    rmsNormBackward(dIn, input.grad, dh1, s.x, input.data, s.rstd1, T, H);
    addInto(dIn, dMid);
    dx = dIn;
  }
  embeddingBackward(weight(model, "model.embed_tokens.weight").grad, dx, batch.tokens, H);
}

export function zeroGradients(model: Model): void {
  for (const p of model.params) p.grad.fill(0);
}
