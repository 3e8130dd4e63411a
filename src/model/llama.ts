// A Llama-style decoder: embedding, per layer RMSNorm → attention (MoBA or full, GQA, rotary) →
// residual → RMSNorm → SwiGLU MLP → residual, final RMSNorm, LM head. The forward keeps what the
// backward needs (llm.c style); the backward walks the same layers in reverse. Every op runs on
// the backend's own tensors (B), so on WebGPU only the loss and the gradient norm leave the GPU, at the step's end.
// Weight names and shapes are Hugging Face's, so a checkpoint maps onto LlamaForCausalLM.
import type { AttentionCall, AttentionSaved, ModelBackend, Sized } from "../backend.js";
import { MobaError } from "../tensor.js";
import { type AttentionKind, headDim, type LlamaConfig, layerKinds } from "./config.js";
import { rotary } from "./layers.js";
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
  const H = c.hidden_size,
    F = c.intermediate_size,
    D = headDim(c);
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

/** The parameters a model of config `c` has (paramSpecs), without making one. */
export function configParameterCount(c: LlamaConfig): number {
  return paramSpecs(c).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
}

/** A model's weights and gradients as one backend's tensors, in model.params order. */
interface Resident<B extends Sized> {
  backend: ModelBackend<B>;
  data: B[];
  grad: B[];
  /** Index into data / grad by parameter name. */
  index: Map<string, number>;
}

/** By the weights, not the Model: views of one model with other configs (attention kinds, MoBA's block and top-k) share one copy. */
const residents = new WeakMap<Param[], Resident<Sized>>();

/**
 * The model's weights and gradients on `backend`: uploaded on first use and kept there, so
 * training steps update them in place (on the CPU they are the host arrays themselves).
 * Host edits to param.data after that are not seen until `release(model)`.
 */
async function resident<B extends Sized>(model: Model, backend: ModelBackend<B>): Promise<Resident<B>> {
  const held = residents.get(model.params);
  if (held?.backend === backend) return held as unknown as Resident<B>;
  if (held) await release(model);
  const r: Resident<B> = {
    backend,
    data: model.params.map((p) => backend.upload(p.data, true)),
    grad: model.params.map((p) => backend.upload(p.grad, true)),
    index: new Map(model.params.map((p, j) => [p.name, j])),
  };
  residents.set(model.params, r as unknown as Resident<Sized>);
  return r;
}

/** Copies the weights and gradients a backend holds back into param.data / param.grad. */
export async function syncToHost(model: Model): Promise<void> {
  const r = residents.get(model.params);
  if (!r) return;
  for (const [j, p] of model.params.entries()) {
    const [data, grad] = [await r.backend.download(r.data[j]), await r.backend.download(r.grad[j])];
    if (data !== p.data) p.data.set(data);
    if (grad !== p.grad) p.grad.set(grad);
  }
}

/** Copies the weights back to the host and frees the backend's copies. */
export async function release(model: Model): Promise<void> {
  const r = residents.get(model.params);
  if (!r) return;
  await syncToHost(model);
  residents.delete(model.params);
  r.backend.free([...r.data, ...r.grad]);
  const rotaryHeld = residentRotary.get(model.params);
  if (rotaryHeld) {
    residentRotary.delete(model.params);
    rotaryHeld.backend.free([rotaryHeld.cos, rotaryHeld.sin]);
  }
}

/** The resident weights and gradients by parameter name. */
function lookup<B extends Sized>(r: Resident<B>): (name: string) => { data: B; grad: B } {
  return (name) => {
    const j = r.index.get(name);
    if (j === undefined) throw new MobaError(`model: missing parameter ${name}`);
    return { data: r.data[j], grad: r.grad[j] };
  };
}

/** The model's gradients and weights on `backend` (for the optimizer). */
export async function residentTensors<B extends Sized>(model: Model, backend: ModelBackend<B>): Promise<{ data: B[]; grad: B[] }> {
  const r = await resident(model, backend);
  return { data: r.data, grad: r.grad };
}

/** Rotary angles of positions 0, 1, ... per model, grown as longer sequences come: [positions, D / 2]. */
const rotaryTables = new WeakMap<Model, { cos: Float32Array; sin: Float32Array; positions: number }>();

/** The model's rotary table (rotaryTables), grown to at least `positions` rows. */
function rotaryTable(model: Model, positions: number): { cos: Float32Array; sin: Float32Array; positions: number } {
  const c = model.config;
  let table = rotaryTables.get(model);
  if (!table || table.positions < positions) {
    const rows = Math.max(positions, 2 * (table?.positions ?? 0));
    table = {
      ...rotary(
        Int32Array.from({ length: rows }, (_, p) => p),
        headDim(c),
        c.rope_theta,
        c.rope_scaling,
      ),
      positions: rows,
    };
    rotaryTables.set(model, table);
  }
  return table;
}

/** The rotary table on a backend, uploaded once per model and size (persistent, like the weights). */
const residentRotary = new WeakMap<Param[], { backend: ModelBackend<Sized>; cos: Sized; sin: Sized }>();

/**
 * The rotary angles of a batch's tokens on the backend, [≥ T, D / 2] (computing cos and sin of every
 * token's angles anew took ~30 ms a step at 32K tokens). One sequence from position 0 reads the first
 * rows of the model's table, kept on the backend across steps (uploading 8 MiB of it a step at 32K
 * held the step's first dispatch back); packed sequences restart their positions, so their rows are
 * gathered and uploaded into the scope (`owned`: the caller's to release).
 */
function rotaryOn<B extends Sized>(model: Model, backend: ModelBackend<B>, cuSeqlens: Int32Array): { cos: B; sin: B; owned: boolean } {
  const half = headDim(model.config) / 2;
  let longest = 0;
  for (let b = 0; b + 1 < cuSeqlens.length; b++) longest = Math.max(longest, cuSeqlens[b + 1] - cuSeqlens[b]);
  const table = rotaryTable(model, longest);
  if (cuSeqlens.length === 2 && cuSeqlens[0] === 0) {
    let held = residentRotary.get(model.params);
    // the table only grows, so a held copy of another length is an older one
    if (!held || held.backend !== backend || held.cos.length !== table.cos.length) {
      if (held) held.backend.free([held.cos, held.sin]);
      held = { backend, cos: backend.upload(table.cos, true), sin: backend.upload(table.sin, true) };
      residentRotary.set(model.params, held as unknown as { backend: ModelBackend<Sized>; cos: Sized; sin: Sized });
    }
    return { cos: held.cos as B, sin: held.sin as B, owned: false };
  }
  const T = cuSeqlens[cuSeqlens.length - 1],
    cos = new Float32Array(T * half),
    sin = new Float32Array(T * half);
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const n = (cuSeqlens[b + 1] - cuSeqlens[b]) * half,
      at = cuSeqlens[b] * half;
    cos.set(table.cos.subarray(0, n), at);
    sin.set(table.sin.subarray(0, n), at);
  }
  return { cos: backend.upload(cos), sin: backend.upload(sin), owned: true };
}

/** What one layer's forward keeps for its backward. */
interface LayerTrace<B> {
  x: B; // [T, H] layer input
  h1: B; // [T, H] normed input of attention
  rstd1: B; // [T]
  attn: AttentionSaved<B>; // out [T, qHeads, D], lse [T, qHeads], MoBA's block choice, q/k/v after rotary (or the backend's copies)
  call: AttentionCall;
  mid: B; // [T, H] after the attention residual
  h2: B; // [T, H] normed input of the MLP
  rstd2: B; // [T]
  g: B; // [T, F] gate projection
  u: B; // [T, F] up projection
  m: B; // [T, F] silu(g) · u
}

export interface Trace<B> {
  batch: Batch;
  kinds: AttentionKind[];
  cos: B; // [≥ T, D / 2] rotary angles (rotaryOn)
  sin: B;
  layers: LayerTrace<B>[];
  final: B; // [T, H] output of the last layer
  hN: B; // [T, H] after the final norm
  rstdN: B; // [T]
  logits: B; // [T, V]
  lse: B; // [T]
  losses: B; // [T] weight · negative log-likelihood of each token (nats); lossOf sums them
}

function headName(model: Model): string {
  return model.config.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
}

/** Layer l's attention call over the batch's sequences (`kind` from the layer kinds in use). */
function attentionCall(c: LlamaConfig, kind: AttentionKind, cuSeqlens: Int32Array): AttentionCall {
  return {
    kind,
    tokens: cuSeqlens[cuSeqlens.length - 1],
    qHeads: c.num_attention_heads,
    kvHeads: c.num_key_value_heads,
    headDim: headDim(c),
    blockSize: c.moba_chunk_size,
    topK: c.moba_topk,
    cuSeqlens,
  };
}

/** What a layer's attention read and chose: q [T, qHeads, D] and k [T, kvHeads, D] after rotary, the call and its result (MoBA's routing among it). */
export interface AttentionSeen<B> {
  layer: number;
  call: AttentionCall;
  q: B;
  k: B;
  attn: AttentionSaved<B>;
}

/**
 * A layer's attention half on x [T, H]: RMSNorm, the q/k/v projections, rotary, the attention, and
 * mid = o_proj(attention) + x. With `keep` every tensor stays for the backward (forward); without
 * (prefill) each ends as soon as it is used (backend.release) but k, v (the cache's) and mid.
 * `seen` hears the attention's inputs and result before any of them ends.
 */
async function attentionHalf<B extends Sized>(
  backend: ModelBackend<B>,
  c: LlamaConfig,
  w: (name: string) => B,
  x: B,
  call: AttentionCall,
  cos: B,
  sin: B,
  keep: boolean,
  seen?: (q: B, k: B, attn: AttentionSaved<B>) => Promise<void>,
) {
  const { tokens: T, qHeads: nH, kvHeads: nKV, headDim: D } = call;
  const H = c.hidden_size;
  const h1 = backend.empty(T * H),
    rstd1 = backend.empty(T);
  await backend.rmsNorm(h1, rstd1, x, w("input_layernorm"), T, H, c.rms_norm_eps);
  const q = backend.empty(T * nH * D), // [T, nH, D]
    k = backend.empty(T * nKV * D), // [T, nKV, D]
    v = backend.empty(T * nKV * D);
  await backend.linear(q, h1, w("self_attn.q_proj"), T, H, nH * D);
  await backend.linear(k, h1, w("self_attn.k_proj"), T, H, nKV * D);
  await backend.linear(v, h1, w("self_attn.v_proj"), T, H, nKV * D);
  await backend.rope(q, cos, sin, nH, D, 1);
  await backend.rope(k, cos, sin, nKV, D, 1);
  const attn = await backend.attention(call, q, k, v, keep);
  await seen?.(q, k, attn);
  if (!keep) backend.release([h1, rstd1, q, attn.lse]);
  else if (attn.inputs.q !== q) backend.release([q, k, v]); // the backward reads the backend's copies
  const mid = backend.empty(T * H); // the attention's projection plus the residual
  await backend.linear(mid, attn.out, w("self_attn.o_proj"), T, nH * D, H, x);
  if (!keep) backend.release([attn.out, x]);
  return { h1, rstd1, k, v, attn, mid };
}

/** The MLP up to its down projection on `rows` rows of mid [rows, H]: RMSNorm, the gate and up projections, SwiGLU. */
async function mlpIn<B extends Sized>(backend: ModelBackend<B>, c: LlamaConfig, w: (name: string) => B, mid: B, rows: number) {
  const [H, F] = [c.hidden_size, c.intermediate_size];
  const h2 = backend.empty(rows * H),
    rstd2 = backend.empty(rows);
  await backend.rmsNorm(h2, rstd2, mid, w("post_attention_layernorm"), rows, H, c.rms_norm_eps);
  const g = backend.empty(rows * F), // [rows, F]
    u = backend.empty(rows * F),
    m = backend.empty(rows * F);
  await backend.linear(g, h2, w("mlp.gate_proj"), rows, H, F);
  await backend.linear(u, h2, w("mlp.up_proj"), rows, H, F);
  await backend.swiglu(m, g, u);
  return { h2, rstd2, g, u, m };
}

/**
 * The forward pass; `kinds` overrides the config's attention per layer (training stages).
 * Call it inside backend.scope(): the trace's tensors live until the scope ends.
 */
export async function forward<B extends Sized>(
  model: Model,
  batch: Batch,
  backend: ModelBackend<B>,
  kinds: AttentionKind[] = layerKinds(model.config),
): Promise<Trace<B>> {
  const c = model.config;
  const T = batch.tokens.length,
    H = c.hidden_size,
    F = c.intermediate_size,
    V = c.vocab_size;
  const weights = lookup(await resident(model, backend));
  const { cos, sin } = rotaryOn(model, backend, batch.cuSeqlens);
  let x = backend.empty(T * H);
  await backend.embedding(x, weights("model.embed_tokens.weight").data, batch.tokens, H);
  const layers: LayerTrace<B>[] = [];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const w = (name: string) => weights(`model.layers.${l}.${name}.weight`).data;
    const call = attentionCall(c, kinds[l], batch.cuSeqlens);
    const { h1, rstd1, attn, mid } = await attentionHalf(backend, c, w, x, call, cos, sin, true);
    const { h2, rstd2, g, u, m } = await mlpIn(backend, c, w, mid, T);
    layers.push({ x, h1, rstd1, attn, call, mid, h2, rstd2, g, u, m });
    x = backend.empty(T * H); // the MLP's output plus the residual
    await backend.linear(x, m, w("mlp.down_proj"), T, F, H, mid);
  }
  const hN = backend.empty(T * H),
    rstdN = backend.empty(T);
  await backend.rmsNorm(hN, rstdN, x, weights("model.norm.weight").data, T, H, c.rms_norm_eps);
  const logits = backend.empty(T * V),
    lse = backend.empty(T),
    losses = backend.empty(T);
  await backend.linear(logits, hN, weights(headName(model)).data, T, H, V);
  await backend.crossEntropy(lse, losses, logits, batch.targets, batch.weights, V);
  return { batch, kinds, cos, sin, layers, final: x, hN, rstdN, logits, lse, losses };
}

/**
 * Rows per chunk of the MLP in prefillForward: its [rows, intermediate_size] float32 tensors stay
 * far below one storage binding (2 GiB on the H100; a 1B Llama's [131072, 8192] would be 4 GiB).
 */
export const PREFILL_ROWS = 8192;

/** A prompt's keys and values of every layer ([T, kvHeads, D], after rotary) and its last position's logits [V]. */
export interface Prefill<B> {
  keys: B[];
  values: B[];
  logits: B;
}

export interface PrefillOptions<B> {
  /** Each layer's attention kind; default the config's. */
  kinds?: AttentionKind[];
  /** Rows per chunk of the MLP; default PREFILL_ROWS. */
  rows?: number;
  /** Hears each layer's attention (q, k, its routing) before its q ends: what MoBA's gate chose (modelGating). */
  onAttention?: (seen: AttentionSeen<B>) => Promise<void>;
}

/**
 * The forward of a prompt for decoding, with no backward to serve: each layer's activations end
 * with the layer (backend.release) except its keys and values, which a KV cache takes; the MLP
 * runs on chunks of `rows` tokens; only the last position's logits are made (a 1B Llama's [T, V]
 * at 128K tokens would be 64 GiB). The same values as forward()'s (rows are independent outside
 * attention). Call it inside backend.scope(): the keys, values and logits live until it ends.
 */
export async function prefillForward<B extends Sized>(
  model: Model,
  tokens: Int32Array,
  backend: ModelBackend<B>,
  { kinds = layerKinds(model.config), rows = PREFILL_ROWS, onAttention }: PrefillOptions<B> = {},
): Promise<Prefill<B>> {
  const c = model.config;
  const T = tokens.length,
    H = c.hidden_size,
    F = c.intermediate_size,
    V = c.vocab_size;
  const weights = lookup(await resident(model, backend));
  const cuSeqlens = Int32Array.of(0, T);
  const { cos, sin, owned } = rotaryOn(model, backend, cuSeqlens);
  /** Rows [from, from + n) of x [T, width]: x itself when they are all of it, else a copy. */
  const rowsOf = (x: B, from: number, n: number, width: number): B => {
    if (n === T) return x;
    const part = backend.empty(n * width);
    backend.copy(part, 0, x, from * width, n * width);
    return part;
  };
  let x = backend.empty(T * H);
  await backend.embedding(x, weights("model.embed_tokens.weight").data, tokens, H);
  const keys: B[] = [],
    values: B[] = [];
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const w = (name: string) => weights(`model.layers.${l}.${name}.weight`).data;
    const call = attentionCall(c, kinds[l], cuSeqlens);
    const seen = onAttention && ((q: B, k: B, attn: AttentionSaved<B>) => onAttention({ layer: l, call, q, k, attn }));
    const { k, v, mid } = await attentionHalf(backend, c, w, x, call, cos, sin, false, seen);
    x = backend.empty(T * H); // the MLP's output plus the residual, chunk by chunk
    for (let from = 0; from < T; from += rows) {
      const n = Math.min(rows, T - from);
      const part = rowsOf(mid, from, n, H);
      const { h2, rstd2, g, u, m } = await mlpIn(backend, c, w, part, n);
      const y = n === T ? x : backend.empty(n * H);
      await backend.linear(y, m, w("mlp.down_proj"), n, F, H, part);
      if (y !== x) backend.copy(x, from * H, y, 0, n * H);
      backend.release([h2, rstd2, g, u, m, ...(part === mid ? [] : [part]), ...(y === x ? [] : [y])]);
    }
    backend.release([mid]);
    keys.push(k);
    values.push(v);
  }
  const last = rowsOf(x, T - 1, 1, H);
  const hN = backend.empty(H),
    rstdN = backend.empty(1);
  await backend.rmsNorm(hN, rstdN, last, weights("model.norm.weight").data, 1, H, c.rms_norm_eps);
  const logits = backend.empty(V);
  await backend.linear(logits, hN, weights(headName(model)).data, 1, H, V);
  backend.release([x, ...(last === x ? [] : [last]), hN, rstdN, ...(owned ? [cos, sin] : [])]);
  return { keys, values, logits };
}

/**
 * Σ weight · negative log-likelihood over the trace's batch (nats), summed in float64 on the host.
 * A read-back: a training step calls it after its backward and update are recorded.
 */
export async function lossOf<B extends Sized>(trace: Trace<B>, backend: ModelBackend<B>): Promise<number> {
  let loss = 0;
  for (const l of await backend.download(trace.losses)) loss += l;
  if (!Number.isFinite(loss)) throw new MobaError(`model: the loss is ${loss} (diverged); lower the learning rate or check the data`);
  return loss;
}

/**
 * Adds the gradients of lossScale · the trace's loss into the model's gradients on the backend.
 * It ends each layer's tensors of the trace as it goes (backend.release): a trace has one backward.
 */
export async function backward<B extends Sized>(model: Model, trace: Trace<B>, backend: ModelBackend<B>, lossScale: number): Promise<void> {
  const c = model.config;
  const { batch, cos, sin } = trace;
  const T = batch.tokens.length,
    H = c.hidden_size,
    F = c.intermediate_size,
    V = c.vocab_size;
  const nH = c.num_attention_heads,
    nKV = c.num_key_value_heads,
    D = headDim(c);
  const weights = lookup(await resident(model, backend));
  const dLogits = backend.empty(T * V);
  await backend.crossEntropyBackward(dLogits, trace.logits, trace.lse, batch.targets, batch.weights, V, lossScale);
  const head = weights(headName(model));
  const dhN = backend.empty(T * H);
  await backend.linearBackward(dhN, head.grad, dLogits, trace.hN, head.data, T, H, V, false);
  const dx = backend.empty(T * H); // the residual stream's gradient, updated in place layer by layer
  const norm = weights("model.norm.weight");
  await backend.rmsNormBackward(dx, norm.grad, dhN, trace.final, norm.data, trace.rstdN, T, H, false);
  backend.release([dLogits, dhN]);
  for (let l = c.num_hidden_layers - 1; l >= 0; l--) {
    const s = trace.layers[l];
    const p = (name: string) => weights(`model.layers.${l}.${name}.weight`);
    // MLP: dx flows to mid both through the residual and through the norm
    const down = p("mlp.down_proj");
    const dm = backend.empty(T * F);
    await backend.linearBackward(dm, down.grad, dx, s.m, down.data, T, F, H, false);
    const dg = backend.empty(T * F),
      du = backend.empty(T * F);
    await backend.swigluBackward(dg, du, dm, s.g, s.u);
    const gate = p("mlp.gate_proj"),
      up = p("mlp.up_proj");
    const dh2 = backend.empty(T * H);
    await backend.linearBackward(dh2, gate.grad, dg, s.h2, gate.data, T, H, F, false);
    await backend.linearBackward(dh2, up.grad, du, s.h2, up.data, T, H, F, true);
    // mid's gradient: dx through the residual, plus the norm's (added into dx in place)
    const post = p("post_attention_layernorm");
    const dMid = dx;
    await backend.rmsNormBackward(dMid, post.grad, dh2, s.mid, post.data, s.rstd2, T, H, true);
    // the MLP's activations and gradients are done: the attention's backward below reuses their
    // memory, so the step's peak holds one half-layer's gradients beside the forward's activations
    backend.release([dm, dg, du, dh2, s.mid, s.h2, s.rstd2, s.g, s.u, s.m]);
    // attention
    const o = p("self_attn.o_proj");
    const dAttn = backend.empty(T * nH * D);
    await backend.linearBackward(dAttn, o.grad, dMid, s.attn.out, o.data, T, nH * D, H, false);
    const grads = await backend.attentionBackward(s.call, s.attn, dAttn);
    await backend.rope(grads.dq, cos, sin, nH, D, -1);
    await backend.rope(grads.dk, cos, sin, nKV, D, -1);
    const wq = p("self_attn.q_proj"),
      wk = p("self_attn.k_proj"),
      wv = p("self_attn.v_proj");
    const dh1 = backend.empty(T * H);
    await backend.linearBackward(dh1, wq.grad, grads.dq, s.h1, wq.data, T, H, nH * D, false);
    await backend.linearBackward(dh1, wk.grad, grads.dk, s.h1, wk.data, T, H, nKV * D, true);
    await backend.linearBackward(dh1, wv.grad, grads.dv, s.h1, wv.data, T, H, nKV * D, true);
    // the residual's gradient plus the norm's: dx of this layer's input
    const input = p("input_layernorm");
    await backend.rmsNormBackward(dMid, input.grad, dh1, s.x, input.data, s.rstd1, T, H, true);
    // the attention's half is done too: the next layer's reuse this memory, so a step holds the
    // forward's activations and one layer's gradients (not every layer's)
    const { x, h1, rstd1, attn } = s;
    const { q, k, v } = attn.inputs;
    backend.release([x, h1, rstd1, q, k, v, attn.out, attn.lse, dAttn, grads.dq, grads.dk, grads.dv, dh1]);
  }
  await backend.embeddingBackward(weights("model.embed_tokens.weight").grad, dx, batch.tokens, H);
}

/** Zeroes the model's gradients (on the backend it trains on). */
export async function zeroGradients<B extends Sized>(model: Model, backend: ModelBackend<B>): Promise<void> {
  for (const g of (await resident(model, backend)).grad) backend.clear(g);
}
