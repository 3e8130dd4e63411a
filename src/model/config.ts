// The model's configuration: Hugging Face LlamaConfig names, plus MoBA's block size and top-k and
// which attention each layer uses. Every field is checked before any work starts.
import { MobaError } from "../tensor.js";

export type AttentionKind = "moba" | "full";

export interface LlamaConfig {
  vocab_size: number;
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_key_value_heads: number;
  rms_norm_eps: number;
  rope_theta: number;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  /** Standard deviation of the normal the weights start from (HF initializer_range). */
  initializer_range: number;
  moba_chunk_size: number;
  moba_topk: number;
  /** One entry per layer; when absent every layer is "moba" except the last full_attention_last_layers. */
  layer_attention?: AttentionKind[];
  /** Shorthand: the last N layers use full attention (the paper's hybrid recipe). */
  full_attention_last_layers?: number;
}

/** A small byte-level model: trains in minutes on two CPU cores. */
export const SMALL_CONFIG: LlamaConfig = {
  vocab_size: 256,
  hidden_size: 128,
  intermediate_size: 352,
  num_hidden_layers: 4,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  rms_norm_eps: 1e-5,
  rope_theta: 10000,
  max_position_embeddings: 8192,
  tie_word_embeddings: true,
  initializer_range: 0.02,
  moba_chunk_size: 64,
  moba_topk: 3,
  full_attention_last_layers: 0,
};

function fail(message: string): never {
  throw new MobaError(message);
}

function positiveInteger(name: string, value: unknown): void {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1) fail(`config.${name}: expected a positive integer, got ${JSON.stringify(value)}`);
}

function positiveNumber(name: string, value: unknown): void {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) fail(`config.${name}: expected a positive number, got ${JSON.stringify(value)}`);
}

/** The attention of every layer, from layer_attention or the full_attention_last_layers shorthand. */
export function layerKinds(config: LlamaConfig): AttentionKind[] {
  const L = config.num_hidden_layers;
  if (config.layer_attention !== undefined) return [...config.layer_attention];
  const full = config.full_attention_last_layers ?? 0;
  return Array.from({ length: L }, (_, i) => (i >= L - full ? "full" : "moba"));
}

/** Fills defaults from SMALL_CONFIG for missing fields and checks every field; unknown fields are errors. */
export function checkConfig(input: Partial<LlamaConfig>): LlamaConfig {
  if (!input || typeof input !== "object") fail(`config: expected an object, got ${JSON.stringify(input)}`);
  for (const key of Object.keys(input)) {
    if (!(key in SMALL_CONFIG) && key !== "layer_attention") fail(`config.${key}: unknown field (expected one of ${[...Object.keys(SMALL_CONFIG), "layer_attention"].join(", ")})`);
  }
  const c: LlamaConfig = { ...SMALL_CONFIG, ...input };
  if (input.layer_attention !== undefined) delete c.full_attention_last_layers;
  for (const name of ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "max_position_embeddings", "moba_chunk_size", "moba_topk"] as const) {
    positiveInteger(name, c[name]);
  }
  positiveNumber("rms_norm_eps", c.rms_norm_eps);
  positiveNumber("rope_theta", c.rope_theta);
  positiveNumber("initializer_range", c.initializer_range);
  if (typeof c.tie_word_embeddings !== "boolean") fail(`config.tie_word_embeddings: expected true or false, got ${JSON.stringify(c.tie_word_embeddings)}`);
  if (c.hidden_size % c.num_attention_heads !== 0) {
    fail(`config.num_attention_heads: expected a divisor of hidden_size ${c.hidden_size}, got ${c.num_attention_heads}`);
  }
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    fail(`config.num_key_value_heads: expected a divisor of num_attention_heads ${c.num_attention_heads}, got ${c.num_key_value_heads}`);
  }
  if ((c.hidden_size / c.num_attention_heads) % 2 !== 0) {
    fail(`config.hidden_size: expected an even head size (hidden_size / num_attention_heads) for rotary embeddings, got ${c.hidden_size / c.num_attention_heads}`);
  }
  if (c.layer_attention !== undefined) {
    if (!Array.isArray(c.layer_attention) || c.layer_attention.length !== c.num_hidden_layers) {
      fail(`config.layer_attention: expected a list of ${c.num_hidden_layers} entries ("moba" or "full"), got ${JSON.stringify(c.layer_attention)}`);
    }
    c.layer_attention.forEach((kind, i) => {
      if (kind !== "moba" && kind !== "full") fail(`config.layer_attention[${i}]: expected "moba" or "full", got ${JSON.stringify(kind)}`);
    });
  } else {
    const full = c.full_attention_last_layers ?? 0;
    if (!Number.isInteger(full) || full < 0 || full > c.num_hidden_layers) {
      fail(`config.full_attention_last_layers: expected an integer from 0 to ${c.num_hidden_layers}, got ${JSON.stringify(full)}`);
    }
  }
  return c;
}

export function headDim(config: LlamaConfig): number {
  return config.hidden_size / config.num_attention_heads;
}
