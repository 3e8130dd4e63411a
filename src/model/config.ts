// The model's configuration: Hugging Face LlamaConfig names, plus MoBA's block size and top-k and
// which attention each layer uses. Every field is checked before any work starts.
import { MobaError, shown } from "../tensor.js";

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
  /** A Hugging Face model's special token ids (config.json), kept so that its export has them; byte-level models have none. */
  bos_token_id?: number;
  /** One id or several (Llama 3.1 lists three); generation stops at any of them. */
  eos_token_id?: number | number[];
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
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1)
    fail(`config.${name}: expected a positive integer, got ${shown(value)}`);
}

function positiveNumber(name: string, value: unknown): void {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0)
    fail(`config.${name}: expected a positive number, got ${shown(value)}`);
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
  if (!input || typeof input !== "object" || Array.isArray(input)) fail(`config: expected an object, got ${shown(input)}`);
  const optional = ["layer_attention", "head_dim", "rope_scaling", "bos_token_id", "eos_token_id"];
  for (const key of Object.keys(input)) {
    if (!(key in SMALL_CONFIG) && !optional.includes(key))
      fail(`config.${key}: unknown field (expected one of ${[...Object.keys(SMALL_CONFIG), ...optional].join(", ")})`);
  }
  const c: LlamaConfig = { ...SMALL_CONFIG, ...input };
  if (input.layer_attention !== undefined) delete c.full_attention_last_layers;
  for (const name of [
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "moba_chunk_size",
    "moba_topk",
  ] as const) {
    positiveInteger(name, c[name]);
  }
  positiveNumber("rms_norm_eps", c.rms_norm_eps);
  positiveNumber("rope_theta", c.rope_theta);
  positiveNumber("initializer_range", c.initializer_range);
  if (typeof c.tie_word_embeddings !== "boolean")
    fail(`config.tie_word_embeddings: expected true or false, got ${shown(c.tie_word_embeddings)}`);
  if (c.head_dim !== undefined) positiveInteger("head_dim", c.head_dim);
  else if (c.hidden_size % c.num_attention_heads !== 0) {
    fail(`config.num_attention_heads: expected a divisor of hidden_size ${c.hidden_size}, got ${c.num_attention_heads}`);
  }
  if (c.num_attention_heads % c.num_key_value_heads !== 0) {
    fail(`config.num_key_value_heads: expected a divisor of num_attention_heads ${c.num_attention_heads}, got ${c.num_key_value_heads}`);
  }
  // rotary embeddings turn pairs of a head's dimensions
  if (headDim(c) % 2 !== 0) {
    if (c.head_dim !== undefined) fail(`config.head_dim: expected an even head size for rotary embeddings, got ${c.head_dim}`);
    fail(`config.hidden_size: expected an even head size (hidden_size / num_attention_heads) for rotary embeddings, got ${headDim(c)}`);
  }
  if (c.rope_scaling !== undefined) checkRopeScaling(c.rope_scaling);
  if (c.bos_token_id !== undefined && !tokenId(c.bos_token_id))
    fail(`config.bos_token_id: expected a token id (an integer >= 0), got ${shown(c.bos_token_id)}`);
  if (c.eos_token_id !== undefined && !(Array.isArray(c.eos_token_id) ? c.eos_token_id.every(tokenId) : tokenId(c.eos_token_id)))
    fail(`config.eos_token_id: expected a token id or a list of them (integers >= 0), got ${shown(c.eos_token_id)}`);
  if (c.layer_attention !== undefined) {
    if (!Array.isArray(c.layer_attention) || c.layer_attention.length !== c.num_hidden_layers) {
      fail(`config.layer_attention: expected a list of ${c.num_hidden_layers} entries ("moba" or "full"), got ${shown(c.layer_attention)}`);
    }
    c.layer_attention.forEach((kind, i) => {
      if (kind !== "moba" && kind !== "full") fail(`config.layer_attention[${i}]: expected "moba" or "full", got ${shown(kind)}`);
    });
  } else {
    const full = c.full_attention_last_layers ?? 0;
    if (!Number.isInteger(full) || full < 0 || full > c.num_hidden_layers) {
      fail(`config.full_attention_last_layers: expected an integer from 0 to ${c.num_hidden_layers}, got ${shown(full)}`);
    }
  }
  const n = parameterEstimate(c);
  if (n > MAX_PARAMETERS) {
    fail(
      `config.hidden_size: expected a model of at most 2^31 parameters (8 GiB of float32 weights, 32 GiB to train), got ${n.toExponential(2)} ` +
        `(hidden_size ${c.hidden_size}, intermediate_size ${c.intermediate_size}, num_hidden_layers ${c.num_hidden_layers}, vocab_size ${c.vocab_size})`,
    );
  }
  return c;
}

function tokenId(x: unknown): boolean {
  return typeof x === "number" && Number.isInteger(x) && x >= 0;
}

/** The config's eos_token_id as a list (empty: none). */
export function eosTokenIds(config: LlamaConfig): number[] {
  const eos = config.eos_token_id;
  return eos === undefined ? [] : Array.isArray(eos) ? [...eos] : [eos];
}

function checkRopeScaling(r: RopeScaling): void {
  const type = (r as { rope_type?: unknown } | null)?.rope_type;
  if (type !== "linear" && type !== "llama3") fail(`config.rope_scaling.rope_type: expected "linear" or "llama3", got ${shown(type)}`);
  positiveNumber("rope_scaling.factor", r.factor);
  if (r.rope_type === "llama3") {
    positiveNumber("rope_scaling.low_freq_factor", r.low_freq_factor);
    positiveNumber("rope_scaling.high_freq_factor", r.high_freq_factor);
    positiveInteger("rope_scaling.original_max_position_embeddings", r.original_max_position_embeddings);
    if (!(r.high_freq_factor > r.low_freq_factor))
      fail(`config.rope_scaling.high_freq_factor: expected more than low_freq_factor ${r.low_freq_factor}, got ${r.high_freq_factor}`);
  }
}

/** Parameters a model may have: checked before anything is allocated, so a typo in a size is one line, not a crash. */
const MAX_PARAMETERS = 2 ** 31;

/** The parameter count from the sizes alone (what initModel will allocate). */
export function parameterEstimate(c: LlamaConfig): number {
  const H = c.hidden_size,
    q = c.num_attention_heads * headDim(c),
    kv = c.num_key_value_heads * headDim(c);
  const layer = 2 * H * q + 2 * H * kv + 3 * H * c.intermediate_size + 2 * H;
  return c.vocab_size * H * (c.tie_word_embeddings ? 1 : 2) + c.num_hidden_layers * layer + H;
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
  if (n === undefined || Number(n) > layers)
    fail(`--attention: expected "moba", "full" or "hybrid-last-N" with N from 0 to ${layers}, got ${shown(spec)}`);
  return layerKinds({ num_hidden_layers: layers, full_attention_last_layers: Number(n) } as LlamaConfig);
}
