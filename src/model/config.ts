// The model's configuration: Hugging Face LlamaConfig names, plus MoBA's block size and top-k and
// which attention each layer uses. Every field is checked before any work starts.
import { MobaError } from "../tensor.js";

export type AttentionKind = "moba" | "full";

/** Rotary frequency scaling as Hugging Face's rope_scaling names it: "linear" divides every frequency by factor; "llama3" divides the low ones, keeps the high ones and blends between. */
export type RopeScaling =
  | { rope_type: "linear"; factor: number }
  | { rope_type: "llama3"; factor: number; low_freq_factor: number; high_freq_factor: number; original_max_position_embeddings: number };

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
  /** Size of each attention head; absent: hidden_size / num_attention_heads. */
  head_dim?: number;
  /** Absent: plain rotary angles pos · rope_theta^(−2i / D). */
  rope_scaling?: RopeScaling;
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
  const optional = ["layer_attention", "head_dim", "rope_scaling"];
  for (const key of Object.keys(input)) {
    if (!(key in SMALL_CONFIG) && !optional.includes(key)) fail(`config.${key}: unknown field (expected one of ${[...Object.keys(SMALL_CONFIG), ...optional].join(", ")})`);
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
  if (c.head_dim !== undefined) positiveInteger("head_dim", c.head_dim);
  else if (c.hidden_size % c.num_attention_heads !== 0) {
    fail(`config.num_attention_heads: expected a divisor of hidden_size ${c.hidden_size}, got ${c.num_attention_heads}`);
  }
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    fail(`config.num_key_value_heads: expected a divisor of num_attention_heads ${c.num_attention_heads}, got ${c.num_key_value_heads}`);
  }
  if (headDim(c) % 2 !== 0) fail(`config.head_dim: expected an even head size for rotary embeddings, got ${headDim(c)}`);
  if (c.rope_scaling !== undefined) checkRopeScaling(c.rope_scaling);
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

function checkRopeScaling(r: RopeScaling): void {
  const type = (r as { rope_type?: unknown } | null)?.rope_type;
  if (type !== "linear" && type !== "llama3") fail(`config.rope_scaling.rope_type: expected "linear" or "llama3", got ${JSON.stringify(type)}`);
  positiveNumber("rope_scaling.factor", r.factor);
  if (r.rope_type === "llama3") {
    positiveNumber("rope_scaling.low_freq_factor", r.low_freq_factor);
    positiveNumber("rope_scaling.high_freq_factor", r.high_freq_factor);
    positiveInteger("rope_scaling.original_max_position_embeddings", r.original_max_position_embeddings);
    if (!(r.high_freq_factor > r.low_freq_factor)) fail(`config.rope_scaling.high_freq_factor: expected more than low_freq_factor ${r.low_freq_factor}, got ${r.high_freq_factor}`);
  }
}

export function headDim(config: LlamaConfig): number {
  return config.head_dim ?? config.hidden_size / config.num_attention_heads;
}

/**
 * The attention of every layer from a command-line spec: "moba", "full" or "hybrid-last-N"
 * (MoBA except the last N layers, the paper's recipe).
 */
export function kindsFromSpec(spec: string, layers: number): AttentionKind[] {
  if (spec === "moba" || spec === "full") return Array<AttentionKind>(layers).fill(spec);
  const n = /^hybrid-last-(\d+)$/.exec(spec)?.[1];
  if (n === undefined || Number(n) > layers) fail(`--attention: expected "moba", "full" or "hybrid-last-N" with N from 0 to ${layers}, got "${spec}"`);
  return layerKinds({ num_hidden_layers: layers, full_attention_last_layers: Number(n) } as LlamaConfig);
}
