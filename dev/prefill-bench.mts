// A Llama with a public model's shapes (its config.json: Llama-3.2-1B's by default; random weights
// made here, nothing downloaded) on the WebGPU backend in f16 (f16 operands on tensor cores where the
// GPU has them; weights, activations and the KV cache float32): at each length, the prompt's prefill
// (src/model/llama.ts prefillForward: the MLP in row chunks, only the last logits) and then greedy
// decoding on the GPU, with MoBA on every layer, the paper's hybrid (MoBA but the last 3 layers full)
// and full attention. Before each row it estimates the GPU memory the row needs and skips, with
// one line, what cannot fit the budget or one storage binding (--plan: only that, no GPU needed).
// dev/torch/prefill.py is the PyTorch twin (transformers' LlamaForCausalLM in bf16, SDPA and the
// official MoBA) on the same shapes.
// Usage: node --import tsx dev/prefill-bench.mts [--config dev/hf/llama-3.2-1b.json]
//   [--lengths 32768:512:3,131072:4096:12 (tokens:block:top-k)] [--kinds moba,hybrid-last-3,full]
//   [--decode 16] [--budget-gib 139] [--precision f16|f32] [--jsonl FILE] [--plan]
import { appendFileSync, readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { type AttentionKind, checkConfig, headDim, kindsFromSpec, type LlamaConfig, parameterEstimate } from "../src/model/config.js";
import { openDecoding } from "../src/model/decode.js";
import { fromHfConfig } from "../src/model/hfConfig.js";
import { type Model, PREFILL_ROWS, paramSpecs, parameterCount } from "../src/model/llama.js";
import { Rng } from "../src/model/rng.js";
import { table } from "../src/run/util.js";
import { getDevice } from "../src/webgpu/device.js";
import { webgpuModelBackend } from "../src/webgpu/model.js";

const { values: args } = parseArgs({
  options: {
    config: { type: "string", default: "dev/hf/llama-3.2-1b.json" },
    lengths: { type: "string", default: "32768:512:3,131072:4096:12" },
    kinds: { type: "string", default: "moba,hybrid-last-3,full" },
    decode: { type: "string", default: "16" },
    "budget-gib": { type: "string", default: "139" },
    precision: { type: "string", default: "f16" },
    jsonl: { type: "string" },
    plan: { type: "boolean", default: false },
  },
});
const GiB = 2 ** 30;
const lengths = args.lengths.split(",").map((spec) => {
  const [tokens, block, topK] = spec.split(":").map(Number);
  if (![tokens, block, topK].every((n) => Number.isInteger(n) && n > 0))
    throw new Error(`--lengths: expected tokens:block:top-k entries, got "${spec}"`);
  return { tokens, block, topK };
});
const decodeTokens = Number(args.decode);
const budget = Number(args["budget-gib"]) * GiB;
const precision = args.precision === "f32" ? "f32" : "f16";

const read = fromHfConfig(JSON.parse(readFileSync(args.config, "utf8")), args.config);
for (const note of read.notes) console.log(`note: ${note}`);
const longest = Math.max(...lengths.map((l) => l.tokens)) + decodeTokens;
// the prompt and the decoded tokens; Llama-3.2-1B's 131072 positions hold a 128K prompt but not the tokens after it
const config = checkConfig({ ...read.config, max_position_embeddings: Math.max(read.config.max_position_embeddings, longest) });

/**
 * Random weights with the initializer's spread: uniform in ±√3·σ (the normal's variance; a normal
 * per weight would take a minute for 1.2B of them), norms at 1.
 */
function randomModel(c: LlamaConfig): Model {
  let state = 12345;
  const params = paramSpecs(c).map(({ name, shape, decay }) => {
    const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (name.endsWith("norm.weight")) data.fill(1);
    else {
      const spread = 2 * Math.sqrt(3) * c.initializer_range;
      for (let i = 0; i < data.length; i++) {
        state = (Math.imul(state, 1664525) + 1013904223) >>> 0; // an LCG: spread matters here, not quality
        data[i] = (state / 2 ** 32 - 0.5) * spread;
      }
    }
    return { name, shape, data, grad: new Float32Array(data.length), decay };
  });
  return { config: c, params, byName: new Map(params.map((p) => [p.name, p])) };
}

/** The GPU memory a prefill of T tokens and a decode cache of T + decodeTokens need, by our count (the parts the backend holds at once). */
function estimate(c: LlamaConfig, T: number, kinds: AttentionKind[], topK: number) {
  const H = c.hidden_size,
    F = c.intermediate_size,
    D = headDim(c),
    q = c.num_attention_heads * D,
    kv = c.num_key_value_heads * D,
    L = c.num_hidden_layers,
    R = Math.min(T, PREFILL_ROWS);
  const moba = kinds.filter((k) => k === "moba").length;
  const parts = {
    // weights and their gradients, float32 (the backend uploads both)
    weights: 8 * parameterEstimate(c),
    // every layer's keys and values, kept for the cache, and each MoBA layer's routing table and inverted index
    keys: L * 2 * 4 * T * kv + moba * 2 * 4 * T * c.num_attention_heads * (topK - 1),
    // the largest layer's transients: attention (x, its norm, q, out; the f16 copies of q, k, v and the softmax state),
    // or the MLP (mid and the next x, a chunk's norm, gate, up, product, output)
    activations: Math.max(
      4 * T * (2 * H + 2 * q) + T * (2 * q + 8 * kv + 8 * c.num_attention_heads),
      4 * (2 * T * H + R * (3 * H + 3 * F)),
    ),
    // the GPU decoder's cache: keys, values and block key sums of T + decodeTokens positions
    cache: L * 2 * 4 * (T + decodeTokens) * kv,
  };
  // buffers come in size classes of up to 1/8 more
  return { parts, total: 1.125 * Object.values(parts).reduce((a, b) => a + b, 0) };
}

const gib = (x: number) => (x / GiB).toFixed(2);

/** Why a row cannot run here (one line), or null: a tensor larger than one storage binding, or more memory than the budget. */
function skipReason(T: number, spec: string, topK: number, binding: number): string | null {
  // the largest tensors: an activation [T, hidden or heads × D], an MLP chunk [rows, intermediate], the embedding [V, hidden]
  const [rows, width] = [
    [T, Math.max(config.hidden_size, config.num_attention_heads * headDim(config))],
    [Math.min(T, PREFILL_ROWS), config.intermediate_size],
    [config.vocab_size, config.hidden_size],
  ].reduce((a, b) => (a[0] * a[1] >= b[0] * b[1] ? a : b));
  if (4 * rows * width > binding)
    return `skip ${T} tokens, ${spec}: one [${rows}, ${width}] float32 tensor is ${gib(4 * rows * width)} GiB, more than one storage binding (${gib(binding)} GiB)`;
  const need = estimate(config, T, kindsFromSpec(spec, config.num_hidden_layers), topK);
  const p = need.parts;
  const parts =
    `weights and gradients ${gib(p.weights)}, keys, values and routing ${gib(p.keys)}, ` +
    `a layer's activations ${gib(p.activations)}, decode cache ${gib(p.cache)}; +1/8 size classes`;
  if (need.total > budget)
    return `skip ${T} tokens, ${spec}: needs ~${gib(need.total)} GiB (${parts}), more than the ${gib(budget)} GiB budget`;
  return args.plan ? `${T} tokens, ${spec}: ~${gib(need.total)} GiB (${parts})` : null;
}

if (args.plan) {
  // a storage binding of 2 GiB, the H100's and H200's under Dawn
  for (const { tokens, topK } of lengths) for (const spec of args.kinds.split(",")) console.log(skipReason(tokens, spec, topK, 2 * GiB));
  process.exit(0);
}
const gpu = await getDevice();
console.log(`${gpu.adapterInfo}; shader-f16 ${gpu.f16}, tensor cores ${gpu.mma16}; one storage binding ${gib(gpu.maxStorageBinding)} GiB`);
let t0 = performance.now();
const model = randomModel(config);
console.log(
  `${args.config}: ${(parameterCount(model) / 1e9).toFixed(3)}B parameters, ${config.num_hidden_layers} layers, hidden ${config.hidden_size}, ` +
    `${config.num_attention_heads}/${config.num_key_value_heads} heads of ${headDim(config)}, vocab ${config.vocab_size}; random weights in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
);
const backend = await webgpuModelBackend(precision, false); // no NaN fill of fresh tensors: as training runs
interface Row {
  tokens: number;
  block: number;
  topK: number;
  attention: string;
  prefill_ms: number;
  decode_ms_per_token: number;
  gpu_gib: number;
  estimated_gib: number;
}
const rows: Row[] = [];
const random = new Rng(7);

for (const { tokens: T, block, topK } of lengths) {
  const view: Model = { ...model, config: checkConfig({ ...config, moba_chunk_size: block, moba_topk: topK }) };
  const prompt = Int32Array.from({ length: T }, () => random.below(config.vocab_size));
  for (const spec of args.kinds.split(",")) {
    const skip = skipReason(T, spec, topK, gpu.maxStorageBinding);
    if (skip) {
      console.log(skip);
      continue;
    }
    const kinds = kindsFromSpec(spec, config.num_hidden_layers);
    const need = estimate(config, T, kinds, topK);
    try {
      // a short prompt first compiles this shape's kernels (and the decoder's), so the timed run is only the run
      const warm = await openDecoding(view, Math.min(T, block * (topK + 1)) + 2, backend, kinds);
      await warm.prefill(prompt.subarray(0, Math.min(T, block * (topK + 1))));
      await warm.step(1);
      warm.free();
      backend.resetPeak!();
      const decoding = await openDecoding(view, T + decodeTokens, backend, kinds);
      t0 = performance.now();
      let logits = await decoding.prefill(prompt);
      const prefill = performance.now() - t0;
      const steps: number[] = [];
      for (let i = 0; i < decodeTokens; i++) {
        let next = 0;
        for (let v = 1; v < logits.length; v++) if (logits[v] > logits[next]) next = v;
        const s0 = performance.now();
        logits = await decoding.step(next);
        steps.push(performance.now() - s0);
      }
      decoding.free();
      if (!logits.every(Number.isFinite)) throw new Error("non-finite logits");
      const row: Row = {
        tokens: T,
        block,
        topK,
        attention: spec,
        prefill_ms: prefill,
        decode_ms_per_token: steps.sort((a, b) => a - b)[steps.length >> 1] ?? NaN,
        // the decoder's cache is its own buffers, outside the backend's count
        gpu_gib: (backend.peakBytes! + need.parts.cache) / GiB,
        estimated_gib: need.total / GiB,
      };
      rows.push(row);
      if (args.jsonl) appendFileSync(args.jsonl, JSON.stringify({ ...row, precision: backend.precision, device: gpu.adapterInfo }) + "\n");
      console.log(JSON.stringify(row));
    } catch (error) {
      console.log(`${T} tokens, ${spec}: failed: ${(error as Error).message.split("\n")[0]}`);
    }
  }
}
console.log(
  `\nprefill: the prompt's forward and the decode cache's fill until the last logits are read back (one prompt, after a short warm-up of each shape); ` +
    `greedy decoding (median of ${decodeTokens} steps) on ${backend.name} ${backend.precision}; ` +
    `GPU GiB: the backend's peak during the prefill plus the decoder's cache, by our count; est.: the estimate the skips use`,
);
console.log(
  table(
    [
      "tokens",
      "block/top-k",
      "attention",
      "prefill ms",
      "prefill tok/s",
      "decode ms/token",
      "decode tok/s",
      "GPU GiB",
      "est. GiB",
      "prefill vs full",
    ],
    rows.map((r) => {
      const full = rows.find((f) => f.tokens === r.tokens && f.attention === "full");
      return [
        String(r.tokens),
        `${r.block}/${r.topK}`,
        r.attention,
        r.prefill_ms.toFixed(0),
        ((r.tokens / r.prefill_ms) * 1000).toFixed(0),
        r.decode_ms_per_token.toFixed(2),
        (1000 / r.decode_ms_per_token).toFixed(1),
        r.gpu_gib.toFixed(2),
        r.estimated_gib.toFixed(2),
        full && r !== full ? `${(full.prefill_ms / r.prefill_ms).toFixed(2)}x` : "",
      ];
    }),
  ),
);
