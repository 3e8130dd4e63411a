// Checkpoints in safetensors: the weights under their Hugging Face names, AdamW's moments under
// optimizer.exp_avg.* / optimizer.exp_avg_sq.*, and in __metadata__ the config, the training
// options, the step, the data position and the data RNG, and for a model started from a Hugging Face
// directory its tokenizer.json (so the checkpoint exports whole). Written atomically: a run killed while
// saving leaves the previous checkpoint whole.
import { writeFileAtomic } from "../io/files.js";
import { readSafetensors, serializeSafetensors, type TensorToWrite, toFloat32 } from "../io/safetensors.js";
import { MobaError } from "../tensor.js";
import type { Moments } from "./adamw.js";
import { checkConfig, type LlamaConfig } from "./config.js";
import { initModel, type Model } from "./llama.js";

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
}

export async function saveCheckpoint(path: string, model: Model, moments?: Moments, state?: TrainingState, tokenizer?: string): Promise<void> {
  const tensors: Record<string, TensorToWrite> = {};
  model.params.forEach((p, j) => {
    tensors[p.name] = { dtype: "F32", shape: p.shape, data: p.data };
    if (moments) {
      tensors[`optimizer.exp_avg.${p.name}`] = { dtype: "F32", shape: p.shape, data: moments.m[j] };
      tensors[`optimizer.exp_avg_sq.${p.name}`] = { dtype: "F32", shape: p.shape, data: moments.v[j] };
    }
  });
  const metadata: Record<string, string> = { format: FORMAT, config: JSON.stringify(model.config) };
  if (moments) metadata.optimizer_step = String(moments.step);
  if (state) metadata.training_state = JSON.stringify(state);
  if (tokenizer !== undefined) metadata.tokenizer = tokenizer;
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}

export async function loadCheckpoint(path: string): Promise<Checkpoint> {
  const file = await readSafetensors(path);
  const fail = (message: string): never => {
    throw new MobaError(`${path}: ${message}`);
  };
  if (file.metadata.format !== FORMAT) fail(`expected a moba checkpoint (metadata format "${FORMAT}"), got ${JSON.stringify(file.metadata.format)}`);
  let config: LlamaConfig;
  try {
    config = checkConfig(JSON.parse(file.metadata.config) as Partial<LlamaConfig>);
  } catch (error) {
    return fail(`bad model config in metadata (${(error as Error).message})`);
  }
  const model = initModel(config, 0);
  const read = (name: string, shape: number[]) => {
    const t = file.tensors.get(name) ?? fail(`missing tensor ${name}`);
    if (t.shape.length !== shape.length || t.shape.some((s, i) => s !== shape[i])) fail(`tensor ${name}: expected shape [${shape}], got [${t.shape}]`);
    return toFloat32(t, name);
  };
  for (const p of model.params) p.data = read(p.name, p.shape);
  let moments: Moments | undefined;
  if (file.metadata.optimizer_step !== undefined) {
    moments = {
      m: model.params.map((p) => read(`optimizer.exp_avg.${p.name}`, p.shape)),
      v: model.params.map((p) => read(`optimizer.exp_avg_sq.${p.name}`, p.shape)),
      step: Number(file.metadata.optimizer_step),
    };
  }
  const state = file.metadata.training_state === undefined ? undefined : (JSON.parse(file.metadata.training_state) as TrainingState);
  return { model, moments, state, tokenizer: file.metadata.tokenizer };
}
