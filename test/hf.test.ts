// Hugging Face Llamas in and out, against fixtures made by transformers (dev/hf/make-fixtures.py):
// our float32 logits within 1e-4 (norm-wise relative) of transformers' on each fixture, the
// tokenizer's ids identical to the Rust tokenizers library's, configs of transformers 4.x and 5.x
// read alike, the browser path (ArrayBuffers, fetch Responses) equal to the directory path, an
// exported model read back exactly, and one-line errors for what cannot be loaded.
import assert from "node:assert/strict";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { cpuBackend } from "../src/cpu/model.js";
import { readWholeFile } from "../src/io/modelDir.js";
import { parseSafetensors, toFloat32, toIntegers } from "../src/io/safetensors.js";
import { checkConfig, kindsFromSpec } from "../src/model/config.js";
import { fromHfConfig } from "../src/model/hfConfig.js";
import { forward, initModel, type Model } from "../src/model/llama.js";
import { exportModel, loadModel } from "../src/model/pretrained.js";
import { byteLevelTokenizerJson, loadTokenizer } from "../src/model/tokenizer.js";
import { generateText } from "../src/run/generate.js";
import { generate } from "../src/model/decode.js";
import { MobaError } from "../src/tensor.js";
import { webgpuModelBackend } from "../src/webgpu/model.js";
import type { ModelBackend } from "../src/backend.js";
import { relativeError, webgpuSkip } from "./helpers.js";

const FIXTURES = new URL("fixtures/hf/", import.meta.url).pathname;
const MODELS = ["gqa-untied-f32", "tied-f16-v4", "llama3-bf16-sharded"];

/** Our logits [T, V] of one sequence (full attention unless the model's config says otherwise). */
async function logitsOf(model: Model, ids: Int32Array, backend: ModelBackend = cpuBackend): Promise<Float32Array> {
  const T = ids.length;
  return backend.scope("test", async () => {
    const trace = await forward(
      model,
      { tokens: ids, targets: new Int32Array(T), weights: new Float32Array(T), cuSeqlens: Int32Array.of(0, T) },
      backend,
    );
    return Float32Array.from(await backend.download(trace.logits));
  });
}

function expected(dir: string): { ids: Int32Array; logits: Float32Array }[] {
  const file = parseSafetensors(readFileSync(join(dir, "expected.safetensors")));
  return [0, 1, 2].map((i) => ({
    ids: Int32Array.from(toIntegers(file.tensors.get(`input_ids.${i}`)!, "ids")),
    logits: toFloat32(file.tensors.get(`logits.${i}`)!, "logits"),
  }));
}

for (const name of MODELS) {
  test(`${name}: our float32 logits are within 1e-4 of transformers'`, async () => {
    const dir = join(FIXTURES, name);
    const { model } = await loadModel(dir);
    for (const { ids, logits } of expected(dir)) {
      const ours = await logitsOf(model, ids);
      const error = relativeError(ours, logits);
      assert.ok(error <= 1e-4, `${ids.length} tokens: relative error ${error}`);
    }
  });
}

test(
  "on WebGPU too: Llama-3 rope scaling, head_dim != hidden / heads, BF16 shards within 1e-4 of transformers",
  { skip: webgpuSkip },
  async () => {
    const dir = join(FIXTURES, "llama3-bf16-sharded");
    const { model } = await loadModel(dir);
    const gpu = await webgpuModelBackend();
    for (const { ids, logits } of expected(dir)) {
      const error = relativeError(await logitsOf(model, ids, gpu), logits);
      assert.ok(error <= 1e-4, `${ids.length} tokens: relative error ${error}`);
    }
  },
);

test("the tokenizer's ids of a multilingual text equal the tokenizers library's, and decode back to the text", async () => {
  const e = JSON.parse(readFileSync(join(FIXTURES, "tokenizer-expected.json"), "utf8")) as { text: string; ids: number[]; decoded: string };
  const { tokenizer } = await loadModel(join(FIXTURES, "gqa-untied-f32"));
  const ids = tokenizer!.encode(e.text);
  assert.deepEqual(Array.from(ids), e.ids);
  assert.equal(tokenizer!.decode(ids), e.decoded);
});

test("config.json of transformers 4.x and 5.x read to the same config; MoBA fields and overrides apply", async () => {
  const read = (path: string) => fromHfConfig(JSON.parse(readFileSync(join(FIXTURES, path), "utf8"))).config;
  assert.deepEqual(read("llama3-bf16-sharded/config.v4.json"), read("llama3-bf16-sharded/config.json"));
  assert.deepEqual(read("tied-f16-v4/config.json"), { ...read("tied-f16-v4/config.v5.json"), moba_chunk_size: 8, moba_topk: 2 });
  // 4.x's top-level rope_theta (and its older rope_scaling "type" key) read as 5.x's rope_parameters
  const v5 = JSON.parse(readFileSync(join(FIXTURES, "gqa-untied-f32/config.json"), "utf8")) as Record<string, unknown>;
  const { rope_parameters: _, ...rest } = v5;
  assert.deepEqual(fromHfConfig({ ...rest, rope_theta: 500000, torch_dtype: "float32" }).config, fromHfConfig(v5).config);
  const llama3 = JSON.parse(readFileSync(join(FIXTURES, "llama3-bf16-sharded/config.v4.json"), "utf8")) as {
    rope_scaling: Record<string, unknown>;
  };
  const { rope_type, ...scaling } = llama3.rope_scaling;
  assert.deepEqual(
    fromHfConfig({ ...llama3, rope_scaling: { type: rope_type, ...scaling } }).config,
    read("llama3-bf16-sharded/config.json"),
  );
  assert.ok(fromHfConfig({ ...v5, quantization: "none" }).notes.includes("ignored in config.json: quantization"));
  const c = read("llama3-bf16-sharded/config.json");
  assert.equal(c.head_dim, 16);
  assert.deepEqual(c.rope_scaling, {
    rope_type: "llama3",
    factor: 8,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 32,
  });
  assert.deepEqual(c.layer_attention, ["full", "full"]);
  const { model } = await loadModel(join(FIXTURES, "tied-f16-v4"), { attention: "hybrid-last-1" });
  assert.deepEqual(model.config.layer_attention, ["moba", "full"]);
  assert.deepEqual(kindsFromSpec("hybrid-last-0", 2), ["moba", "moba"]);
  assert.throws(
    () => kindsFromSpec("hybrid-last-3", 2),
    /--attention: expected "moba", "full" or "hybrid-last-N" with N from 0 to 2, got "hybrid-last-3"/,
  );
});

test("MoBA selecting every block equals full attention on an imported model; smaller top-k changes the logits", async () => {
  const dir = join(FIXTURES, "tied-f16-v4");
  const [{ ids }] = expected(dir).slice(2);
  const full = await logitsOf((await loadModel(dir)).model, ids);
  const all = await logitsOf((await loadModel(dir, { attention: "moba", blockSize: 8, topK: 5 })).model, ids);
  assert.ok(relativeError(all, full) <= 1e-5, `${relativeError(all, full)}`);
  const sparse = await logitsOf((await loadModel(dir, { attention: "moba", blockSize: 8, topK: 2 })).model, ids);
  assert.ok(relativeError(sparse, full) > 1e-3);
});

test("in a browser's way (ArrayBuffers by name, or fetch Responses) the model loads as from its directory", async () => {
  const dir = join(FIXTURES, "llama3-bf16-sharded");
  const files = [
    "config.json",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "tokenizer.json",
  ];
  const buffers = Object.fromEntries(files.map((f) => [f, new Uint8Array(readFileSync(join(dir, f))).buffer]));
  const fetched = async (name: string) =>
    files.includes(name) ? new Response(readFileSync(join(dir, name))) : new Response(null, { status: 404 });
  const [{ ids }] = expected(dir).slice(1);
  const reference = await logitsOf((await loadModel(dir)).model, ids);
  for (const source of [buffers, fetched]) {
    const { model, tokenizer } = await loadModel(source);
    assert.deepEqual(await logitsOf(model, ids), reference);
    assert.equal(tokenizer!.decode(tokenizer!.encode("héllo")), "héllo");
  }
  // the path browsers take imports no Node module (the directory reader is imported only for a path)
  for (const file of ["model/pretrained.ts", "model/tokenizer.ts", "model/hfConfig.ts", "io/safetensors.ts"]) {
    assert.doesNotMatch(readFileSync(new URL(`../src/${file}`, import.meta.url), "utf8"), /^import .*"node:/m, file);
  }
});

test("an exported model loads back with the same logits; its byte-level tokenizer's ids are the UTF-8 bytes", async () => {
  for (const tie of [true, false]) {
    const model = initModel(
      checkConfig({
        hidden_size: 32,
        num_hidden_layers: 2,
        tie_word_embeddings: tie,
        layer_attention: ["moba", "full"],
        moba_chunk_size: 4,
        moba_topk: 2,
      }),
      3,
    );
    const files = exportModel(model);
    const back = await loadModel(files);
    assert.deepEqual(back.model.config, model.config);
    const ids = Int32Array.from(new TextEncoder().encode("Fourscore and seven years ago"));
    assert.deepEqual(await logitsOf(back.model, ids), await logitsOf(model, ids));
    const header = parseSafetensors(files["model.safetensors"]);
    assert.deepEqual(header.metadata, { format: "pt" });
    assert.equal(header.tensors.has("lm_head.weight"), !tie);
    // above the shard size: shards and an index, which load back the same
    const sharded = exportModel(model, undefined, 40_000);
    const shards = Object.keys(sharded).filter((name) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(name));
    assert.ok(shards.length >= 3 && !("model.safetensors" in sharded), Object.keys(sharded).join(", "));
    assert.deepEqual(
      (await loadModel(sharded)).model.params.map((p) => p.data),
      model.params.map((p) => p.data),
    );
  }
  const text = "Hello, wörld — привет 你好 🙂\n\ttabs";
  const bytes = await loadTokenizer(byteLevelTokenizerJson());
  assert.deepEqual(Array.from(bytes.encode(text)), Array.from(new TextEncoder().encode(text)));
  assert.equal(bytes.decode(bytes.encode(text)), text);
});

test("generation stops at the config's eos_token_id and does not print it", async () => {
  const { model, tokenizer, eosTokenIds } = await loadModel(join(FIXTURES, "tied-f16-v4"));
  assert.deepEqual(eosTokenIds, [1]);
  const o = { prompt: "Liberté", tokens: 8, temperature: 0, topP: 1, seed: 1, backend: "cpu" as const };
  const ids: number[] = [];
  for await (const id of generate(model, tokenizer!.encode(o.prompt), o.tokens, o, cpuBackend)) ids.push(id);
  const stop = ids[3]; // as if the fourth token were the end of the sequence
  const stopped = await generateText(model, { ...o, stop: [stop] }, () => undefined, tokenizer);
  assert.equal(stopped.tokens, ids.indexOf(stop));
  assert.equal(stopped.text, tokenizer!.decode(ids.slice(0, ids.indexOf(stop))));
});

test("files are read whole in chunks (fs.readFile stops at 2 GiB)", async () => {
  const path = join(FIXTURES, "tied-f16-v4", "model.safetensors");
  assert.deepEqual(await readWholeFile(path, 4093), new Uint8Array(readFileSync(path)));
});

test("what cannot be loaded is a one-line MobaError naming it", async () => {
  const scratch = mkdtempSync(join(tmpdir(), "moba-hf-"));
  const copy = (name: string) => {
    const dir = join(scratch, name + Math.random().toString(36).slice(2));
    cpSync(join(FIXTURES, name), dir, { recursive: true });
    return dir;
  };
  const rejects = async (dir: string, pattern: RegExp) => {
    await assert.rejects(loadModel(dir), (error: Error) => {
      assert.ok(error instanceof MobaError, String(error));
      assert.match(error.message, pattern);
      assert.doesNotMatch(error.message, /\n/);
      return true;
    });
  };
  try {
    const gpt2 = copy("gqa-untied-f32");
    writeFileSync(join(gpt2, "config.json"), JSON.stringify({ architectures: ["GPT2LMHeadModel"], model_type: "gpt2", vocab_size: 320 }));
    await rejects(
      gpt2,
      /config\.json: architectures \["GPT2LMHeadModel"\] is not a Llama \(expected one of LlamaForCausalLM, MistralForCausalLM\)/,
    );
    const shard = copy("llama3-bf16-sharded");
    rmSync(join(shard, "model-00002-of-00002.safetensors"));
    await rejects(shard, /missing shard model-00002-of-00002\.safetensors \(listed in model\.safetensors\.index\.json\)/);
    const shape = copy("gqa-untied-f32");
    const config = JSON.parse(readFileSync(join(shape, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(shape, "config.json"), JSON.stringify({ ...config, intermediate_size: 96 }));
    await rejects(
      shape,
      /tensor model\.layers\.0\.mlp\.gate_proj\.weight: shape \[64,48\] does not match config\.json \(expected \[96,48\]\)/,
    );
    const tokenizer = copy("gqa-untied-f32");
    writeFileSync(join(tokenizer, "tokenizer.json"), JSON.stringify({ version: "1.0" }));
    await rejects(tokenizer, /tokenizer\.json: cannot read the tokenizer \(/);
    writeFileSync(join(tokenizer, "tokenizer.json"), "{ not json");
    await rejects(tokenizer, /tokenizer\.json: cannot read the tokenizer \(not valid JSON/);
    const tokenizerConfig = copy("gqa-untied-f32");
    writeFileSync(join(tokenizerConfig, "tokenizer_config.json"), "{ not json");
    await rejects(tokenizerConfig, /tokenizer\.json: cannot read the tokenizer \(tokenizer_config\.json: not valid JSON/);
    const eos = copy("gqa-untied-f32");
    writeFileSync(join(eos, "config.json"), JSON.stringify({ ...config, eos_token_id: "</s>" }));
    await rejects(eos, /config\.json: config\.eos_token_id: expected a token id or a list of them \(integers >= 0\), got "<\/s>"/);
    const yarn = copy("gqa-untied-f32");
    writeFileSync(
      join(yarn, "config.json"),
      JSON.stringify({ ...config, rope_parameters: { rope_type: "yarn", rope_theta: 1e4, factor: 4 } }),
    );
    await rejects(yarn, /rope type "yarn" is not supported \(expected "default", "linear" or "llama3"\)/);
    await rejects(join(scratch, "nothing-here"), /no config\.json/);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
});
