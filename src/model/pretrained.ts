// A Hugging Face Llama directory in and out: config.json, model.safetensors (or
// model.safetensors.index.json and its shards; F32, F16 or BF16, read as float32), tokenizer.json.
// Nothing here touches node:fs: in Node a directory path is read through io/modelDir.ts (imported
// only then), in a browser the files come as ArrayBuffers, or fetch Responses from a function.
import { parseSafetensors, serializeSafetensors, type StoredTensor, type TensorToWrite, toFloat32 } from "../io/safetensors.js";
import { importAtRunTime } from "../runtime.js";
import { MobaError } from "../tensor.js";
import { checkConfig, kindsFromSpec, type LlamaConfig } from "./config.js";
import { fromHfConfig, specialTokenIds, toHfConfig } from "./hfConfig.js";
import { type Model, type Param, paramSpecs } from "./llama.js";
import { byteTokenizer, loadTokenizer, type TextTokenizer } from "./tokenizer.js";

/** One file's bytes: as read, or a fetch Response (a non-ok one counts as missing). */
export type ModelFile = ArrayBuffer | Uint8Array | Response;

/**
 * Where a model's files come from: a directory (Node), the files by name, or a function that
 * fetches one by name (browsers: `(name) => fetch(`${url}/${name}`)`), undefined when absent.
 */
export type ModelSource = string | Record<string, ModelFile> | ((name: string) => Promise<ModelFile | undefined>);

export interface LoadModelOptions {
  /** "moba", "full" or "hybrid-last-N" for every layer, overriding the config's per-layer kinds. */
  attention?: string;
  /** MoBA's block size and top-k, overriding moba_chunk_size / moba_topk. */
  blockSize?: number;
  topK?: number;
}

export interface Pretrained {
  model: Model;
  /** From tokenizer.json; undefined when the directory has none. */
  tokenizer: TextTokenizer | undefined;
  /** What the config left out or we ignored, one line each. */
  notes: string[];
  /** The config's eos_token_id(s): generation stops there. */
  eosTokenIds: number[];
}

type Reader = (name: string) => Promise<Uint8Array | undefined>;

async function reader(source: ModelSource): Promise<{ read: Reader; name: string }> {
  if (typeof source === "string") {
    // loaded at run time (bundlers do not follow it): the browser entry never reaches node:fs; the specifier resolves against src/runtime.ts
    const { directoryReader } = await importAtRunTime<typeof import("../io/modelDir.js")>("./io/modelDir.js");
    return { read: directoryReader(source), name: source };
  }
  const get = typeof source === "function" ? source : async (name: string) => (Object.hasOwn(source, name) ? source[name] : undefined);
  const read: Reader = async (name) => {
    const file = await get(name);
    if (file === undefined) return undefined;
    if (file instanceof Uint8Array) return file;
    if (file instanceof ArrayBuffer) return new Uint8Array(file);
    return file.ok ? new Uint8Array(await file.arrayBuffer()) : undefined;
  };
  return { read, name: "model" };
}

/** Every tensor of model.safetensors, or of the shards model.safetensors.index.json lists. */
async function readTensors(read: Reader, where: string): Promise<Map<string, StoredTensor>> {
  const fail = (message: string): never => {
    throw new MobaError(`${where}: ${message}`);
  };
  const index = await read("model.safetensors.index.json");
  if (index === undefined) {
    const file = (await read("model.safetensors")) ?? fail("no model.safetensors or model.safetensors.index.json");
    return parseSafetensors(file, `${where}/model.safetensors`).tensors;
  }
  let weightMap: Record<string, string>;
  try {
    weightMap = (JSON.parse(new TextDecoder().decode(index)) as { weight_map: Record<string, string> }).weight_map;
  } catch (error) {
    return fail(`model.safetensors.index.json is not valid JSON (${(error as Error).message})`);
  }
  if (typeof weightMap !== "object" || weightMap === null)
    fail(`model.safetensors.index.json: expected a weight_map object, got ${JSON.stringify(weightMap)}`);
  const tensors = new Map<string, StoredTensor>();
  for (const shard of [...new Set(Object.values(weightMap))]) {
    const file = (await read(shard)) ?? fail(`missing shard ${shard} (listed in model.safetensors.index.json)`);
    for (const [name, t] of parseSafetensors(file, `${where}/${shard}`).tensors) tensors.set(name, t);
  }
  for (const [name, shard] of Object.entries(weightMap))
    if (!tensors.has(name)) fail(`tensor ${name}: not in ${shard}, where model.safetensors.index.json puts it`);
  return tensors;
}

/** The model's weights from the tensors, each checked against the shape the config implies. */
function modelFromTensors(config: LlamaConfig, tensors: Map<string, StoredTensor>, where: string): Model {
  const fail = (message: string): never => {
    throw new MobaError(`${where}: ${message}`);
  };
  const specs = paramSpecs(config);
  const expected = new Set(specs.map((s) => s.name));
  for (const name of tensors.keys()) {
    // tied checkpoints may still carry lm_head (transformers ties it anyway); old ones saved rotary tables
    const harmless = (name === "lm_head.weight" && config.tie_word_embeddings) || name.endsWith("rotary_emb.inv_freq");
    if (!expected.has(name) && !harmless) fail(`unexpected tensor ${name} (not a weight of LlamaForCausalLM with this config.json)`);
  }
  const params: Param[] = specs.map(({ name, shape, decay }) => {
    const t = tensors.get(name) ?? fail(`missing tensor ${name}`);
    if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i]))
      fail(`tensor ${name}: shape [${t.shape}] does not match config.json (expected [${shape}])`);
    const data = toFloat32(t, name);
    return { name, shape, data, grad: new Float32Array(data.length), decay };
  });
  return { config, params, byName: new Map(params.map((p) => [p.name, p])) };
}

/** A Hugging Face Llama (or a directory written by exportModel) with its tokenizer. */
export async function loadModel(source: ModelSource, options: LoadModelOptions = {}): Promise<Pretrained> {
  const { read, name: where } = await reader(source);
  const text = async (name: string) => {
    const bytes = await read(name);
    return bytes === undefined ? undefined : new TextDecoder().decode(bytes);
  };
  const configText =
    (await text("config.json")) ??
    (() => {
      throw new MobaError(`${where}: no config.json (expected a Hugging Face model directory)`);
    })();
  let json: unknown;
  try {
    json = JSON.parse(configText);
  } catch (error) {
    throw new MobaError(`${where}/config.json: not valid JSON (${(error as Error).message})`);
  }
  const { config: read0, notes, eosTokenIds } = fromHfConfig(json, `${where}/config.json`);
  let config = read0;
  const override: Partial<LlamaConfig> = {};
  if (options.blockSize !== undefined) override.moba_chunk_size = options.blockSize;
  if (options.topK !== undefined) override.moba_topk = options.topK;
  if (options.attention !== undefined) override.layer_attention = kindsFromSpec(options.attention, config.num_hidden_layers);
  if (Object.keys(override).length > 0) config = checkConfig({ ...config, ...override });
  const model = modelFromTensors(config, await readTensors(read, where), where);
  const tokenizerText = await text("tokenizer.json");
  if (tokenizerText === undefined) notes.push(`${where}: no tokenizer.json`);
  const tokenizer =
    tokenizerText === undefined
      ? undefined
      : await loadTokenizer(tokenizerText, `${where}/tokenizer.json`, await text("tokenizer_config.json"));
  return { model, tokenizer, notes, eosTokenIds };
}

/** The weights in files of at most maxShardBytes (a typed array holds at most 4 GiB): one model.safetensors, or shards and their index. */
function weightFiles(model: Model, maxShardBytes: number): Record<string, Uint8Array> {
  const shards: Param[][] = [[]];
  let bytes = 0;
  for (const p of model.params) {
    if (bytes > 0 && bytes + 4 * p.data.length > maxShardBytes) (shards.push([]), (bytes = 0));
    shards.at(-1)!.push(p);
    bytes += 4 * p.data.length;
  }
  const file = (params: Param[]) =>
    serializeSafetensors(
      Object.fromEntries(params.map((p): [string, TensorToWrite] => [p.name, { dtype: "F32", shape: p.shape, data: p.data }])),
      { format: "pt" },
    );
  if (shards.length === 1) return { "model.safetensors": file(shards[0]) };
  const n = shards.length,
    names = shards.map((_, i) => `model-${String(i + 1).padStart(5, "0")}-of-${String(n).padStart(5, "0")}.safetensors`);
  const weightMap = Object.fromEntries(shards.flatMap((params, i) => params.map((p) => [p.name, names[i]])));
  const index = { metadata: { total_size: model.params.reduce((t, p) => t + 4 * p.data.length, 0) }, weight_map: weightMap };
  return {
    ...Object.fromEntries(shards.map((params, i) => [names[i], file(params)])),
    "model.safetensors.index.json": new TextEncoder().encode(JSON.stringify(index, null, 2) + "\n"),
  };
}

/**
 * The files of a directory LlamaForCausalLM.from_pretrained reads: config.json (with the MoBA
 * fields, and bos_token_id / eos_token_id where the config has them), model.safetensors (float32
 * weights only, metadata format "pt"; above maxShardBytes, default 2 GiB, shards and
 * model.safetensors.index.json), generation_config.json, tokenizer.json and tokenizer_config.json
 * (the tokenizer's own where it was read with one; byte-level models: ids are the byte values).
 */
export function exportModel(model: Model, tokenizer: TextTokenizer = byteTokenizer, maxShardBytes = 2 ** 31): Record<string, Uint8Array> {
  const c = model.config;
  if (tokenizer === byteTokenizer && c.vocab_size < 256)
    throw new MobaError(`exportModel: a byte-level model needs vocab_size >= 256, got ${c.vocab_size}`);
  const json = (x: unknown) => new TextEncoder().encode(JSON.stringify(x, null, 2) + "\n");
  return {
    "config.json": json(toHfConfig(c)),
    "generation_config.json": json({ _from_model_config: true, ...specialTokenIds(c) }),
    ...weightFiles(model, maxShardBytes),
    "tokenizer.json": new TextEncoder().encode(tokenizer.json),
    "tokenizer_config.json":
      tokenizer.config !== undefined
        ? new TextEncoder().encode(tokenizer.config)
        : json({
            tokenizer_class: "PreTrainedTokenizerFast",
            model_max_length: c.max_position_embeddings,
            clean_up_tokenization_spaces: false,
          }),
  };
}
