// Generation with a KV cache, and MoBA decoding: the new token's query is gated against the mean
// keys of the cache's completed blocks (each block's sum taken when its last token arrives, in
// float64 and in token order, so the means equal the forward's bit for bit), keeps its own partial block and
// the top-k − 1 past blocks, and attends to their keys: what a full forward pass computes for
// that position. The prompt (prefill) runs on the model's backend; the steps run there too where
// the backend has a decoder (WebGPU: src/webgpu/decode.ts, the cache on the GPU), else here on the CPU.
import type { AttentionProblem } from "../attention/problem.js";
import type { DecodeShape, DecoderWeights, ModelBackend, Sized } from "../backend.js";
import { routeQuery } from "../attention/blocks.js";
import { MobaError } from "../tensor.js";
import { type AttentionKind, headDim, layerKinds } from "./config.js";
import { embeddingForward, rmsNormForward, rope, rotary, swigluForward } from "./layers.js";
import { type Model, prefillForward, residentTensors } from "./llama.js";
import { Rng } from "./rng.js";

export class KvCache {
  readonly k: Float32Array[]; // per layer [capacity, kvHeads, D], after rotary
  readonly v: Float32Array[]; // per layer [capacity, kvHeads, D]
  readonly blockSums: Float64Array[]; // per layer [capacity / blockSize, kvHeads, D] key sums of the completed blocks
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

  /**
   * Stores token t's keys and values of one layer; the token that completes its block sums the
   * block's keys (so a cache rewound by setting `length` lower stays exact: blocks before it keep
   * their sums, later ones are summed again when they complete).
   */
  append(layer: number, t: number, k: Float32Array, v: Float32Array): void {
    const row = k.length,
      B = this.model.config.moba_chunk_size;
    this.k[layer].set(k, t * row);
    this.v[layer].set(v, t * row);
    if ((t + 1) % B !== 0) return;
    const sums = this.blockSums[layer],
      keys = this.k[layer],
      at = Math.floor(t / B) * row;
    sums.fill(0, at, at + row);
    for (let s = t + 1 - B; s <= t; s++) for (let i = 0; i < row; i++) sums[at + i] += keys[s * row + i];
  }

  /** Fills the empty cache with each layer's keys [tokens, kvHeads, D] (after rotary) and values, token by token. */
  fill(keys: Float32Array[], values: Float32Array[], tokens: number): void {
    const c = this.model.config;
    const row = c.num_key_value_heads * headDim(c);
    for (let l = 0; l < c.num_hidden_layers; l++) {
      for (let t = 0; t < tokens; t++)
        this.append(l, t, keys[l].subarray(t * row, (t + 1) * row), values[l].subarray(t * row, (t + 1) * row));
    }
    this.length = tokens;
  }
}

/** Runs the prompt through the model's prefill forward (on its backend); `store` keeps its keys and values; returns the last position's logits. */
async function runPrompt<B extends Sized>(
  model: Model,
  capacity: number,
  cached: number,
  prompt: Int32Array,
  backend: ModelBackend<B>,
  kinds: AttentionKind[],
  store: (keys: B[], values: B[]) => Promise<void>,
): Promise<Float32Array> {
  if (prompt.length < 1) throw new MobaError(`prompt: expected at least 1 token, got 0`);
  if (cached !== 0) throw new MobaError(`prefill: expected an empty cache, got ${cached} tokens`);
  if (prompt.length > capacity) throw new MobaError(`prompt: expected at most ${capacity} tokens (the cache), got ${prompt.length}`);
  return backend.scope("prefill", async () => {
    const { keys, values, logits } = await prefillForward(model, prompt, backend, { kinds });
    await store(keys, values);
    return backend.download(logits);
  });
}

/** Runs the prompt through the model's forward (on its backend) and fills the host cache; returns the last position's logits. */
export async function prefill(
  model: Model,
  cache: KvCache,
  prompt: Int32Array,
  backend: ModelBackend,
  kinds = layerKinds(model.config),
): Promise<Float32Array> {
  return runPrompt(model, cache.capacity, cache.length, prompt, backend, kinds, async (keys, values) => {
    const download = (xs: Sized[]) => Promise.all(xs.map((x) => backend.download(x)));
    cache.fill(await download(keys), await download(values), prompt.length);
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
  const rot = rotary(Int32Array.of(t), D, c.rope_theta, c.rope_scaling);
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

/** A KV cache and the steps that fill it: on the backend's device where it has a decoder (WebGPU), else on the host. */
export interface Decoding {
  /** Cached tokens; setting it lower rewinds the cache (a benchmark decodes one position again). */
  length: number;
  /** Runs the prompt through the model's forward and fills the empty cache; returns the last position's logits. */
  prefill(prompt: Int32Array): Promise<Float32Array>;
  /** Fills the empty cache with each layer's keys [tokens, kvHeads, D] (after rotary) and values (benchmarks: no forward). */
  fill(keys: Float32Array[], values: Float32Array[], tokens: number): Promise<void>;
  /** Feeds one token at position `length`; returns its next-token logits [V]. */
  step(token: number): Promise<Float32Array>;
  /** Frees the cache (on the device). */
  free(): void;
}

/** The model's weights on `backend` as a decoder takes them. */
async function decoderWeights<B extends Sized>(model: Model, backend: ModelBackend<B>): Promise<DecoderWeights<B>> {
  const { data } = await residentTensors(model, backend);
  const byName = new Map(model.params.map((p, j) => [p.name, data[j]]));
  const w = (name: string) => byName.get(name)!;
  const c = model.config;
  return {
    embedding: w("model.embed_tokens.weight"),
    layers: Array.from({ length: c.num_hidden_layers }, (_, l) => {
      const p = (name: string) => w(`model.layers.${l}.${name}.weight`);
      return {
        inputNorm: p("input_layernorm"),
        q: p("self_attn.q_proj"),
        k: p("self_attn.k_proj"),
        v: p("self_attn.v_proj"),
        o: p("self_attn.o_proj"),
        postNorm: p("post_attention_layernorm"),
        gate: p("mlp.gate_proj"),
        up: p("mlp.up_proj"),
        down: p("mlp.down_proj"),
      };
    }),
    finalNorm: w("model.norm.weight"),
    head: w(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight"),
  };
}

/** Decoding of `capacity` tokens at most: on the backend's device where it has a decoder, else decodeStep on the host. */
export async function openDecoding<B extends Sized>(
  model: Model,
  capacity: number,
  backend: ModelBackend<B>,
  kinds: AttentionKind[] = layerKinds(model.config),
): Promise<Decoding> {
  const c = model.config;
  const D = headDim(c);
  if (!backend.decoder) {
    const cache = new KvCache(model, capacity);
    return {
      get length() {
        return cache.length;
      },
      set length(n: number) {
        cache.length = n;
      },
      prefill: (prompt) => prefill(model, cache, prompt, backend, kinds),
      fill: async (keys, values, tokens) => cache.fill(keys, values, tokens),
      step: async (token) => decodeStep(model, cache, token, kinds),
      free: () => undefined,
    };
  }
  const shape: DecodeShape = {
    hidden: c.hidden_size,
    intermediate: c.intermediate_size,
    vocab: c.vocab_size,
    qHeads: c.num_attention_heads,
    kvHeads: c.num_key_value_heads,
    headDim: D,
    blockSize: c.moba_chunk_size,
    topK: c.moba_topk,
    eps: c.rms_norm_eps,
    kinds,
    capacity,
  };
  const decoder = await backend.decoder(shape, await decoderWeights(model, backend));
  return {
    get length() {
      return decoder.length;
    },
    set length(n: number) {
      decoder.length = n;
    },
    prefill: (prompt) =>
      runPrompt(model, capacity, decoder.length, prompt, backend, kinds, (keys, values) => decoder.fill(keys, values, prompt.length)),
    // a tensor uploaded once per distinct array (a benchmark gives every layer the same keys)
    fill: (keys, values, tokens) =>
      backend.scope("decode fill", async () => {
        const uploads = new Map<Float32Array, B>();
        const upload = (x: Float32Array) => uploads.get(x) ?? uploads.set(x, backend.upload(x)).get(x)!;
        await decoder.fill(keys.map(upload), values.map(upload), tokens);
      }),
    step: (token) => {
      const { cos, sin } = rotary(Int32Array.of(decoder.length), D, c.rope_theta, c.rope_scaling);
      return decoder.step(token, cos, sin);
    },
    free: () => decoder.free(),
  };
}

/** Prompt, then `tokens` new tokens; yields each as it comes. */
export async function* generate(
  model: Model,
  prompt: Int32Array,
  tokens: number,
  o: SampleOptions & { seed: number },
  backend: ModelBackend,
): AsyncGenerator<number> {
  const decoding = await openDecoding(model, prompt.length + tokens, backend);
  try {
    const rng = new Rng(o.seed);
    let logits = await decoding.prefill(prompt);
    for (let i = 0; i < tokens; i++) {
      const next = sampleToken(logits, o, rng);
      yield next;
      if (i + 1 < tokens) logits = await decoding.step(next);
    }
  } finally {
    decoding.free();
  }
}
