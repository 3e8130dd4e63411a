// Generation with a KV cache, and MoBA decoding: the new token's query is gated against the mean
// keys of the cache's completed blocks (sums kept up to date as tokens arrive, in float64 and in
// token order, so the means equal the forward's bit for bit), keeps its own partial block and
// the top-k − 1 past blocks, and attends to their keys: what a full forward pass computes for
// that position. Decoding runs on the CPU; the prompt (prefill) runs on the model's backend.
import type { AttentionProblem } from "../attention/problem.js";
import type { ModelBackend } from "../backend.js";
import { routeQuery } from "../attention/blocks.js";
import { MobaError } from "../tensor.js";
import { type AttentionKind, headDim, layerKinds } from "./config.js";
import { embeddingForward, rmsNormForward, rope, rotary, swigluForward } from "./layers.js";
import { forward, type Model } from "./llama.js";
import { Rng } from "./rng.js";

export class KvCache {
  readonly k: Float32Array[]; // per layer [capacity, kvHeads, D], after rotary
  readonly v: Float32Array[]; // per layer [capacity, kvHeads, D]
  readonly blockSums: Float64Array[]; // per layer [capacity / blockSize, kvHeads, D] key sums per block
  length = 0;

  constructor(
    readonly model: Model,
    readonly capacity: number,
  ) {
    const c = model.config;
    const row = c.num_key_value_heads * headDim(c);
    const L = c.num_hidden_layers;
    this.k = Array.from({ length: L }, () => new Float32Array(capacity * row));
    this.v = Array.from({ length: L }, () => new Float32Array(capacity * row));
    this.blockSums = Array.from({ length: L }, () => new Float64Array(Math.ceil(capacity / c.moba_chunk_size) * row));
  }

  /** Stores token t's keys and values of one layer and adds the keys into their block's sum. */
  append(layer: number, t: number, k: Float32Array, v: Float32Array): void {
    const row = k.length;
    this.k[layer].set(k, t * row);
    this.v[layer].set(v, t * row);
    const sums = this.blockSums[layer],
      at = Math.floor(t / this.model.config.moba_chunk_size) * row;
    for (let i = 0; i < row; i++) sums[at + i] += k[i];
  }
}

/** Runs the prompt through the model's forward (on its backend) and fills the cache; returns the last position's logits. */
export async function prefill(
  model: Model,
  cache: KvCache,
  prompt: Int32Array,
  backend: ModelBackend,
  kinds = layerKinds(model.config),
): Promise<Float32Array> {
  if (prompt.length < 1) throw new MobaError(`prompt: expected at least 1 token, got 0`);
  if (cache.length !== 0) throw new MobaError(`prefill: expected an empty cache, got ${cache.length} tokens`);
  if (prompt.length > cache.capacity)
    throw new MobaError(`prompt: expected at most ${cache.capacity} tokens (the cache), got ${prompt.length}`);
  const T = prompt.length;
  const V = model.config.vocab_size;
  const row = model.config.num_key_value_heads * headDim(model.config);
  return backend.scope("prefill", async () => {
    const trace = await forward(
      model,
      { tokens: prompt, targets: new Int32Array(T), weights: new Float32Array(T), cuSeqlens: Int32Array.of(0, T) },
      backend,
      kinds,
    );
    for (const [l, layer] of trace.layers.entries()) {
      const [k, v] = [await backend.download(layer.k), await backend.download(layer.v)];
      for (let t = 0; t < T; t++) cache.append(l, t, k.subarray(t * row, (t + 1) * row), v.subarray(t * row, (t + 1) * row));
    }
    cache.length = T;
    return (await backend.download(trace.logits)).slice((T - 1) * V, T * V);
  });
}

/** y[N] = w[N, K] · x[K], one token's Linear (each sum in k order, as cpu/ops.ts's matmulXWt sums a lone row). */
function linear1(x: Float32Array, w: Float32Array, N: number): Float32Array {
  const K = x.length;
  const y = new Float32Array(N);
  for (let n = 0; n < N; n++) {
    let s = 0;
    for (let k = 0; k < K; k++) s += x[k] * w[n * K + k];
    y[n] = s;
  }
  return y;
}

/** Feeds one token at position cache.length; returns its next-token logits [V]. */
export function decodeStep(model: Model, cache: KvCache, token: number, kinds: AttentionKind[] = layerKinds(model.config)): Float32Array {
  const c = model.config;
  const t = cache.length;
  if (t >= cache.capacity) throw new MobaError(`decode: the cache is full (${cache.capacity} tokens)`);
  const H = c.hidden_size,
    nH = c.num_attention_heads,
    nKV = c.num_key_value_heads,
    D = headDim(c);
  const w = (name: string) => model.byName.get(name)!.data;
  const rot = rotary(Int32Array.of(t), D, c.rope_theta);
  let x = new Float32Array(H);
  embeddingForward(x, w("model.embed_tokens.weight"), Int32Array.of(token), H);
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const p = `model.layers.${l}.`;
    const h1 = new Float32Array(H);
    rmsNormForward(h1, new Float32Array(1), x, w(p + "input_layernorm.weight"), 1, H, c.rms_norm_eps);
    const q = linear1(h1, w(p + "self_attn.q_proj.weight"), nH * D);
    const k = linear1(h1, w(p + "self_attn.k_proj.weight"), nKV * D);
    const v = linear1(h1, w(p + "self_attn.v_proj.weight"), nKV * D);
    rope(q, rot, nH, D);
    rope(k, rot, nKV, D);
    cache.append(l, t, k, v);
    const attn = attendCached(model, cache, l, q, t, kinds[l]);
    const o = linear1(attn, w(p + "self_attn.o_proj.weight"), H);
    const mid = x.map((xi, i) => xi + o[i]);
    const h2 = new Float32Array(H);
    rmsNormForward(h2, new Float32Array(1), mid, w(p + "post_attention_layernorm.weight"), 1, H, c.rms_norm_eps);
    const F = c.intermediate_size;
    const g = linear1(h2, w(p + "mlp.gate_proj.weight"), F),
      u = linear1(h2, w(p + "mlp.up_proj.weight"), F);
    const m = new Float32Array(F);
    swigluForward(m, g, u);
    const down = linear1(m, w(p + "mlp.down_proj.weight"), H);
    x = mid.map((mi, i) => mi + down[i]);
  }
  cache.length = t + 1;
  const hN = new Float32Array(H);
  rmsNormForward(hN, new Float32Array(1), x, w("model.norm.weight"), 1, H, c.rms_norm_eps);
  return linear1(hN, w(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"), c.vocab_size);
}

/** Attention of query q (position t, every head) over the cached keys it may see: [qHeads · D]. */
function attendCached(model: Model, cache: KvCache, layer: number, q: Float32Array, t: number, kind: AttentionKind): Float32Array {
  const c = model.config;
  const nH = c.num_attention_heads,
    nKV = c.num_key_value_heads,
    D = headDim(c),
    B = c.moba_chunk_size;
  const own = Math.floor(t / B);
  const width = c.moba_topk - 1;
  const out = new Float32Array(nH * D);
  const K = cache.k[layer],
    Vc = cache.v[layer];
  // the completed blocks' means, computed as the forward's blockMeans does (sum in order, then divide)
  let means: Float64Array | null = null;
  if (kind === "moba" && own > width) {
    means = cache.blockSums[layer].slice(0, own * nKV * D);
    for (let i = 0; i < means.length; i++) means[i] /= B;
  }
  const problem: AttentionProblem = {
    tokens: 1,
    qHeads: nH,
    kvHeads: nKV,
    headDim: D,
    scale: 1 / Math.sqrt(D),
    blockSize: B,
    topK: c.moba_topk,
    cuSeqlens: Int32Array.of(0, 1),
  };
  const past = new Int32Array(nH * Math.max(1, width));
  const scratch = new Float64Array(Math.max(1, width)),
    chosen = new Int32Array(Math.max(1, width));
  const scores = new Float64Array(t + 1);
  for (let h = 0; h < nH; h++) {
    const g = Math.floor(h / (nH / nKV));
    // the key ranges this head attends: selected past blocks (or all of them), then its own block up to t
    const ranges: [number, number][] = [];
    if (kind === "full" || own <= width) ranges.push([0, own * B]);
    else {
      routeQuery(problem, q, means!, past, 0, h, own, 0, scratch, chosen);
      for (let r = 0; r < width; r++) ranges.push([past[h * width + r] * B, (past[h * width + r] + 1) * B]);
    }
    ranges.push([own * B, t + 1]);
    let max = -Infinity,
      n = 0;
    for (const [k0, k1] of ranges) {
      for (let key = k0; key < k1; key++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += q[h * D + d] * K[(key * nKV + g) * D + d];
        scores[n++] = s * problem.scale;
        max = Math.max(max, s * problem.scale);
      }
    }
    const acc = new Float64Array(D);
    let sum = 0;
    n = 0;
    for (const [k0, k1] of ranges) {
      for (let key = k0; key < k1; key++) {
        const pr = Math.exp(scores[n++] - max);
        sum += pr;
        for (let d = 0; d < D; d++) acc[d] += pr * Vc[(key * nKV + g) * D + d];
      }
    }
    for (let d = 0; d < D; d++) out[h * D + d] = acc[d] / sum;
  }
  return out;
}

export interface SampleOptions {
  /** 0: greedy. */
  temperature: number;
  /** Nucleus: sample from the smallest set of tokens whose probability reaches topP. */
  topP: number;
}

/** Picks the next token from logits: argmax at temperature 0, else a top-p sample. */
export function sampleToken(logits: Float32Array, o: SampleOptions, rng: Rng): number {
  // broken weights (hand-edited, or a diverged run) would otherwise sample token 0 forever
  const bad = logits.findIndex((x) => !Number.isFinite(x));
  if (bad >= 0) throw new MobaError(`model: expected finite logits, got ${logits[bad]} for token ${bad} (are the weights broken?)`);
  if (o.temperature === 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
    return best;
  }
  const max = Math.max(...logits);
  const probs = Array.from(logits, (x, i) => ({ i, p: Math.exp((x - max) / o.temperature) }));
  const total = probs.reduce((s, e) => s + e.p, 0);
  probs.sort((a, b) => b.p - a.p);
  const kept: typeof probs = [];
  let mass = 0;
  for (const e of probs) {
    kept.push(e);
    mass += e.p / total;
    if (mass >= o.topP) break;
  }
  let r = rng.next() * kept.reduce((s, e) => s + e.p, 0);
  for (const e of kept) if ((r -= e.p) < 0) return e.i;
  return kept[kept.length - 1].i;
}

/** Prompt, then `tokens` new tokens; yields each as it comes. */
export async function* generate(
  model: Model,
  prompt: Int32Array,
  tokens: number,
  o: SampleOptions & { seed: number },
  backend: ModelBackend,
): AsyncGenerator<number> {
  const cache = new KvCache(model, prompt.length + tokens);
  const rng = new Rng(o.seed);
  let logits = await prefill(model, cache, prompt, backend);
  for (let i = 0; i < tokens; i++) {
    const next = sampleToken(logits, o, rng);
    yield next;
    if (i + 1 < tokens) logits = decodeStep(model, cache, next);
  }
}
