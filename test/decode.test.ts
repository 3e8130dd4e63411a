// Decoding on the GPU (src/webgpu/decode.ts) against decoding on the CPU (src/model/decode.ts):
// the same greedy tokens, step for step, and every step's logits within 1e-5 (norm-wise relative),
// for MoBA, full and hybrid models, GQA, prompts several blocks long (so the gate chooses) and
// generations that cross block boundaries. On lavapipe in CI.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ModelBackend } from "../src/backend.js";
import { cpuBackend } from "../src/cpu/model.js";
import { checkConfig, type LlamaConfig } from "../src/model/config.js";
import { openDecoding } from "../src/model/decode.js";
import { initModel, type Model, release } from "../src/model/llama.js";
import { webgpuModelBackend } from "../src/webgpu/model.js";
import { relativeError, TINY, webgpuSkip } from "./helpers.js";

const skip = webgpuSkip;

function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/** Greedy decoding of `steps` tokens after the prompt: each step's logits and the token chosen from them. */
async function greedy(
  model: Model,
  prompt: Int32Array,
  steps: number,
  backend: ModelBackend,
): Promise<{ logits: Float32Array[]; tokens: number[] }> {
  const decoding = await openDecoding(model, prompt.length + steps, backend);
  try {
    const logits = [await decoding.prefill(prompt)];
    const tokens = [argmax(logits[0])];
    for (let i = 1; i < steps; i++) {
      logits.push(await decoding.step(tokens[i - 1]));
      tokens.push(argmax(logits[i]));
    }
    return { logits, tokens };
  } finally {
    decoding.free();
    await release(model); // the weights leave the backend: the next run uploads them to its own
  }
}

/** CPU decoding, then GPU decoding of the same model: the same tokens, logits within 1e-5 at every step. */
async function compare(model: Model, prompt: Int32Array, steps: number): Promise<void> {
  const cpu = await greedy(model, prompt, steps, cpuBackend);
  const gpu = await greedy(model, prompt, steps, await webgpuModelBackend());
  for (let i = 0; i < steps; i++) {
    const error = relativeError(gpu.logits[i], cpu.logits[i]);
    assert.ok(error < 1e-5, `position ${prompt.length + i - 1}: logits differ by ${error}`);
    assert.equal(gpu.tokens[i], cpu.tokens[i], `position ${prompt.length + i - 1}: token`);
  }
}

const prompt = (n: number, seed: number) => Int32Array.from({ length: n }, (_, i) => (i * 37 + seed * 11) % 256);

const CASES: [string, Partial<LlamaConfig>, number, number][] = [
  // name, config, prompt tokens, generated tokens
  ["MoBA, GQA 4/2, block 8, top-2", { ...TINY, layer_attention: ["moba", "moba"] }, 43, 30],
  ["full, GQA 4/2", { ...TINY, layer_attention: ["full", "full"] }, 43, 30],
  ["hybrid (MoBA, full)", { ...TINY, layer_attention: ["moba", "full"] }, 43, 30],
  [
    "MoBA, 4 heads over 1 kv head, block 4, top-3, headDim 8",
    { ...TINY, hidden_size: 32, num_key_value_heads: 1, moba_chunk_size: 4, moba_topk: 3, layer_attention: ["moba", "moba"] },
    29,
    24,
  ],
  ["MoBA, top-1 (the own block alone)", { ...TINY, moba_topk: 1, layer_attention: ["moba", "moba"] }, 19, 12],
  // scaled rotary frequencies (Llama-3's rope_scaling, as imported models have): the GPU step's angles must be scaled too
  [
    "hybrid, Llama-3 rope scaling",
    {
      ...TINY,
      layer_attention: ["moba", "full"],
      rope_scaling: { rope_type: "llama3", factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 },
    },
    43,
    30,
  ],
  [
    "MoBA, 3 layers, no GQA, block 16, top-3, a prompt shorter than the blocks it ends with",
    { ...TINY, num_hidden_layers: 3, num_key_value_heads: 4, moba_chunk_size: 16, moba_topk: 3, layer_attention: undefined },
    5,
    70,
  ],
  [
    "hybrid, hidden 64, block 128, top-3, a 600-token prompt (the attended keys span 2 and 3 chunks of 256)",
    { ...TINY, hidden_size: 64, intermediate_size: 100, moba_chunk_size: 128, moba_topk: 3, layer_attention: ["moba", "full"] },
    600,
    6,
  ],
];

for (const [name, config, promptTokens, steps] of CASES) {
  test(`GPU decoding equals CPU decoding: ${name}`, { skip }, async () => {
    await compare(initModel(checkConfig(config), 21), prompt(promptTokens, 1), steps);
  });
}

test("GPU decoding equals CPU decoding when every gate score ties (keys all zero: the lowest blocks win)", { skip }, async () => {
  // k_proj = 0: every key and block mean is zero, every block scores 0, and the gate must keep
  // blocks 0 .. topK − 2 as the CPU does; the values differ per position, so another choice shows in the logits
  const model = initModel(checkConfig({ ...TINY, moba_chunk_size: 4, moba_topk: 3, layer_attention: ["moba", "moba"] }), 5);
  for (const l of [0, 1]) model.byName.get(`model.layers.${l}.self_attn.k_proj.weight`)!.data.fill(0);
  await compare(model, prompt(30, 2), 10);
});

for (const [name, make, skipIt] of [
  ["CPU", async () => cpuBackend, false],
  ["GPU", webgpuModelBackend, skip],
] as const) {
  test(`${name}: a cache rewound into a block (length set lower) decodes bit for bit as a fresh one`, { skip: skipIt }, async () => {
    const model = initModel(checkConfig({ ...TINY, moba_chunk_size: 4, moba_topk: 2, layer_attention: ["moba", "moba"] }), 9);
    const backend: ModelBackend = await make();
    const p = prompt(10, 3);
    const later = [9, 8, 7, 6, 5, 4, 3]; // positions 13 .. 19: blocks 3 and 4 complete, and are gated, again
    const rewound = await openDecoding(model, 40, backend);
    await rewound.prefill(p);
    for (const token of [1, 2, 3, 4, 5, 6, 7, 8]) await rewound.step(token); // positions 10 .. 17
    rewound.length = 13;
    const fresh = await openDecoding(model, 40, backend);
    await fresh.prefill(p);
    for (const token of [1, 2, 3]) await fresh.step(token);
    for (const token of later) assert.deepEqual(await rewound.step(token), await fresh.step(token), `token ${token}`);
    rewound.free();
    fresh.free();
    await release(model);
  });
}
