// Checkpoints in safetensors: the weights under their Hugging Face names, AdamW's moments under
// optimizer.exp_avg.* / optimizer.exp_avg_sq.*, and in __metadata__ the config, the training
// options, the step, the data position, the data RNG, a SHA-256 of every tensor's bytes, and for a
// model started from a Hugging Face directory its tokenizer.json and tokenizer_config.json (its
// bos/eos token ids are in the config), so the checkpoint exports whole.
// Written atomically and durably (io/files.ts): a run killed while saving leaves the previous
// checkpoint whole. Verified on load: a changed byte, a non-finite weight or moment, or a state
// that does not parse is one error naming the tensor or field. The bytes are made and read here
// without node:fs or node:crypto (WebCrypto hashes), so browsers load and write checkpoints too;
// only saveCheckpoint and loadCheckpoint given a path reach the file system, in Node, at run time.
import {
  parseSafetensors,
  readSafetensors,
  serializeSafetensors,
  type StoredTensor,
  type TensorToWrite,
  toFloat32,
} from "../io/safetensors.js";
import { floatToF16 } from "../io/half.js";
import { importAtRunTime } from "../runtime.js";
import { MobaError, shown } from "../tensor.js";
import type { Moments } from "./adamw.js";
import { checkConfig, type LlamaConfig } from "./config.js";
import { initModel, type Model } from "./llama.js";
import { loadTokenizer, type TextTokenizer } from "./tokenizer.js";

const FORMAT = "moba-checkpoint-1";

/** Everything besides weights and moments that a resumed run needs, JSON in the file's metadata. */
export interface TrainingState {
  step: number;
  /** Opaque to the checkpoint: the trainer's options, data position and RNG state. */
  [key: string]: unknown;
}

export interface Checkpoint {
  model: Model;
  moments: Moments | undefined;
  state: TrainingState | undefined;
  /** The tokenizer.json text of a model with a tokenizer; undefined: byte-level. */
  tokenizer: string | undefined;
  /** Its tokenizer_config.json text, where it was read with one. */
  tokenizerConfig: string | undefined;
}

/**
 * The SHA-256 of a tensor's bytes as stored (little-endian: the host's order on every platform we run on), in hex.
 * WebCrypto: Node, Deno and browsers have it; a browser only in a secure context (https, or localhost).
 */
async function sha256(bytes: Uint8Array, where: string): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (subtle === undefined)
    throw new MobaError(`${where}: checksums need WebCrypto (crypto.subtle), which this page lacks: serve it over https or from localhost`);
  const digest = new Uint8Array(await subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The first element that is NaN or infinite, or -1. */
function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return i;
  return -1;
}

export interface CheckpointContents {
  /** AdamW's state: a checkpoint that resumes training has it; weights alone load for generation and export. */
  moments?: Moments;
  state?: TrainingState;
  /** tokenizer.json's text, or a tokenizer (its tokenizer.json and tokenizer_config.json); absent: byte-level. */
  tokenizer?: string | Pick<TextTokenizer, "json" | "config">;
  /**
   * How the weights are stored: "F32" (the default; training resumes exactly) or "F16", half the bytes for a
   * checkpoint that is only read (the playground's bundled model). Moments are always F32.
   */
  dtype?: "F32" | "F16";
}

/** A checkpoint file's bytes: the weights, and what `contents` adds. Refuses non-finite values, naming the tensor. */
export async function serializeCheckpoint(model: Model, contents: CheckpointContents = {}, where = "checkpoint"): Promise<Uint8Array> {
  const { moments, state, tokenizer, dtype = "F32" } = contents;
  const tensors: Record<string, TensorToWrite & { data: Float32Array }> = {};
  model.params.forEach((p, j) => {
    tensors[p.name] = { dtype, shape: p.shape, data: p.data };
    if (moments) {
      tensors[`optimizer.exp_avg.${p.name}`] = { dtype: "F32", shape: p.shape, data: moments.m[j] };
      tensors[`optimizer.exp_avg_sq.${p.name}`] = { dtype: "F32", shape: p.shape, data: moments.v[j] };
    }
  });
  const checksums: Record<string, string> = {};
  for (const [name, t] of Object.entries(tensors)) {
    // a diverged run must not replace its last good checkpoint with NaNs
    const bad = firstNonFinite(t.data);
    if (bad >= 0) throw new MobaError(`${where}: not written: tensor ${name} has ${t.data[bad]} at element ${bad} (the run diverged?)`);
    // the bytes as the file stores them (little-endian, as every host we run on)
    const stored = t.dtype === "F32" ? t.data : Uint16Array.from(t.data, floatToF16);
    const overflow = stored instanceof Uint16Array ? stored.findIndex((h) => (h & 0x7c00) === 0x7c00) : -1;
    if (overflow >= 0)
      throw new MobaError(
        `${where}: not written: tensor ${name} has ${t.data[overflow]} at element ${overflow}, beyond F16's range (±65504)`,
      );
    checksums[name] = await sha256(new Uint8Array(stored.buffer, stored.byteOffset, stored.byteLength), where);
  }
  const metadata: Record<string, string> = { format: FORMAT, config: JSON.stringify(model.config), sha256: JSON.stringify(checksums) };
  if (moments) metadata.optimizer_step = String(moments.step);
  if (state) metadata.training_state = JSON.stringify(state);
  if (typeof tokenizer === "string") metadata.tokenizer = tokenizer;
  else if (tokenizer !== undefined) {
    metadata.tokenizer = tokenizer.json;
    if (tokenizer.config !== undefined) metadata.tokenizer_config = tokenizer.config;
  }
  return serializeSafetensors(tensors, metadata);
}

/** Writes the checkpoint to `path` in Node, atomically and durably (io/files.ts). */
export async function saveCheckpoint(
  path: string,
  model: Model,
  moments?: Moments,
  state?: TrainingState,
  tokenizer?: CheckpointContents["tokenizer"],
): Promise<void> {
  const bytes = await serializeCheckpoint(model, { moments, state, tokenizer }, path);
  // node:fs at run time (the specifier resolves against src/runtime.ts): the browser entry never reaches it
  const { writeFileAtomic } = await importAtRunTime<typeof import("../io/files.js")>("./io/files.js");
  await writeFileAtomic(path, bytes);
}

/** Metadata field `name` parsed as JSON; a field that does not parse is an error naming it. */
function parseField(path: string, metadata: Record<string, string>, name: string): unknown {
  try {
    return JSON.parse(metadata[name]);
  } catch (error) {
    throw new MobaError(`${path}: metadata ${name}: expected JSON, got ${shown(metadata[name], 40)} (${(error as Error).message})`);
  }
}

/**
 * A checkpoint from a file (a path: Node) or its bytes (anywhere; `path` then names it in errors), verified:
 * every tensor's checksum and finite values, the config and the training state checked.
 */
export async function loadCheckpoint(
  source: string | Uint8Array,
  path = typeof source === "string" ? source : "checkpoint",
): Promise<Checkpoint> {
  const file = typeof source === "string" ? await readSafetensors(source) : parseSafetensors(source, path);
  const fail = (message: string): never => {
    throw new MobaError(`${path}: ${message}`);
  };
  if (file.metadata.format !== FORMAT) fail(`expected a moba checkpoint (metadata format "${FORMAT}"), got ${shown(file.metadata.format)}`);
  if (file.metadata.config === undefined) fail(`metadata config: expected the model's config, got nothing`);
  const stored = parseField(path, file.metadata, "config") as Partial<LlamaConfig>;
  let config: LlamaConfig;
  try {
    config = checkConfig(stored);
  } catch (error) {
    return fail(`bad model config in metadata (${(error as Error).message})`);
  }
  // checkpoints written before checksums have none; every one written since is verified tensor by tensor
  const checksums = file.metadata.sha256 === undefined ? undefined : parseField(path, file.metadata, "sha256");
  if (checksums !== undefined && (typeof checksums !== "object" || checksums === null))
    fail(`metadata sha256: expected an object of checksums, got ${shown(checksums)}`);
  const verify = async (name: string, t: StoredTensor) => {
    if (checksums === undefined) return;
    const stored = (checksums as Record<string, unknown>)[name];
    if (typeof stored !== "string") fail(`tensor ${name}: no checksum in metadata sha256`);
    if ((await sha256(t.bytes, path)) !== stored) fail(`tensor ${name}: its bytes do not match their SHA-256 (the file is corrupt)`);
  };
  const model = initModel(config, 0);
  const read = async (name: string, shape: number[]) => {
    const t = file.tensors.get(name) ?? fail(`missing tensor ${name}`);
    if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i]))
      fail(`tensor ${name}: expected shape [${shape}], got [${t.shape}]`);
    await verify(name, t);
    const data = toFloat32(t, name);
    const bad = firstNonFinite(data);
    if (bad >= 0) fail(`tensor ${name}: expected finite values, got ${data[bad]} at element ${bad}`);
    return data;
  };
  for (const p of model.params) p.data = await read(p.name, p.shape);
  let moments: Moments | undefined;
  if (file.metadata.optimizer_step !== undefined) {
    const step = Number(file.metadata.optimizer_step);
    if (!Number.isSafeInteger(step) || step < 0)
      fail(`metadata optimizer_step: expected an integer >= 0, got ${shown(file.metadata.optimizer_step)}`);
    const m: Float32Array[] = [],
      v: Float32Array[] = [];
    for (const p of model.params) m.push(await read(`optimizer.exp_avg.${p.name}`, p.shape));
    for (const p of model.params) v.push(await read(`optimizer.exp_avg_sq.${p.name}`, p.shape));
    moments = { m, v, step };
  }
  const state = file.metadata.training_state === undefined ? undefined : parseField(path, file.metadata, "training_state");
  if (state !== undefined && (typeof state !== "object" || state === null || Array.isArray(state)))
    fail(`metadata training_state: expected an object, got ${shown(state)}`);
  return {
    model,
    moments,
    state: state as TrainingState | undefined,
    tokenizer: file.metadata.tokenizer,
    tokenizerConfig: file.metadata.tokenizer_config,
  };
}

/** The tokenizer a checkpoint keeps (with its tokenizer_config.json); undefined: a byte-level model. */
export async function checkpointTokenizer(saved: Checkpoint, path: string): Promise<TextTokenizer | undefined> {
  return saved.tokenizer === undefined ? undefined : loadTokenizer(saved.tokenizer, `${path} (tokenizer)`, saved.tokenizerConfig);
}
