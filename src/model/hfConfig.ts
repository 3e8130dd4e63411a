// Hugging Face's config.json (LlamaConfig, as transformers 4.x and 5.x write it) to and from ours.
// 4.x writes rope_theta and rope_scaling ({"rope_type" or "type", ...}) and torch_dtype; 5.x
// writes rope_parameters ({"rope_type", "rope_theta", ...}) and dtype. The MoBA fields are the
// official MoBA's (moba_chunk_size, moba_topk) plus our per-layer kinds (layer_attention).
import { MobaError } from "../tensor.js";
import { type AttentionKind, checkConfig, eosTokenIds, headDim, type LlamaConfig, layerKinds, type RopeScaling } from "./config.js";

/** Architectures whose weights and forward are Llama's (Mistral without a sliding window). */
const ARCHITECTURES = ["LlamaForCausalLM", "MistralForCausalLM"];

/** Keys that need no note: read below, or saying nothing about the forward pass. */
const KNOWN = new Set([
  "architectures",
  "model_type",
  "transformers_version",
  "torch_dtype",
  "dtype",
  "bos_token_id",
  "eos_token_id",
  "pad_token_id",
  "use_cache",
  "attention_dropout",
  "pretraining_tp",
  "hidden_act",
  "attention_bias",
  "mlp_bias",
  "rope_theta",
  "rope_scaling",
  "rope_parameters",
  "head_dim",
  "sliding_window",
  "use_sliding_window",
  "_name_or_path",
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "max_position_embeddings",
  "rms_norm_eps",
  "initializer_range",
  "tie_word_embeddings",
  "moba_chunk_size",
  "moba_topk",
  "layer_attention",
  "full_attention_last_layers",
]);

/** The official MoBA's defaults, for a model whose config names no block size or top-k. */
const MOBA_DEFAULTS = { moba_chunk_size: 4096, moba_topk: 12 };

export interface HfConfigResult {
  config: LlamaConfig;
  /** What was ignored or assumed, one line each. */
  notes: string[];
  /** eos_token_id (one id or several): where generation stops. */
  eosTokenIds: number[];
}

/** Our LlamaConfig from a parsed config.json; refuses what the model cannot compute, by name. `source` names the file in errors. */
export function fromHfConfig(json: unknown, source = "config.json"): HfConfigResult {
  const fail = (message: string): never => {
    throw new MobaError(`${source}: ${message}`);
  };
  if (typeof json !== "object" || json === null || Array.isArray(json))
    return fail(`expected a JSON object, got ${JSON.stringify(json)?.slice(0, 40)}`);
  const j = json as Record<string, unknown>;
  const notes: string[] = [];
  const architectures = j.architectures;
  if (architectures !== undefined && architectures !== null) {
    if (!Array.isArray(architectures) || !architectures.some((a) => ARCHITECTURES.includes(a as string))) {
      fail(`architectures ${JSON.stringify(architectures)} is not a Llama (expected one of ${ARCHITECTURES.join(", ")})`);
    }
  } else if (j.model_type !== "llama" && j.model_type !== "mistral") {
    fail(
      `model_type ${JSON.stringify(j.model_type)} is not a Llama (expected "llama" or "mistral", or architectures naming ${ARCHITECTURES.join(" or ")})`,
    );
  }
  if ((j.hidden_act ?? "silu") !== "silu") fail(`hidden_act ${JSON.stringify(j.hidden_act)} is not supported (expected "silu")`);
  for (const key of ["attention_bias", "mlp_bias"])
    if (j[key] === true) fail(`${key}: true is not supported (expected false: Llama has no biases)`);
  const max = j.max_position_embeddings ?? 2048;
  if (typeof j.sliding_window === "number" && j.use_sliding_window !== false && j.sliding_window < (max as number)) {
    fail(`sliding_window ${j.sliding_window} is not supported (sliding-window attention; expected null)`);
  }
  for (const key of ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads"]) {
    if (j[key] === undefined) fail(`missing ${key}`);
  }

  // rotary: 5.x rope_parameters, else 4.x rope_theta + rope_scaling (whose type key was once "type")
  const rope = (j.rope_parameters ?? j.rope_scaling ?? {}) as Record<string, unknown>;
  if (typeof rope !== "object" || rope === null) fail(`rope_parameters: expected an object, got ${JSON.stringify(rope)}`);
  const ropeType = rope.rope_type ?? rope.type ?? "default";
  let rope_scaling: RopeScaling | undefined;
  if (ropeType === "llama3") {
    rope_scaling = {
      rope_type: "llama3",
      factor: rope.factor as number,
      low_freq_factor: rope.low_freq_factor as number,
      high_freq_factor: rope.high_freq_factor as number,
      original_max_position_embeddings: rope.original_max_position_embeddings as number,
    };
  } else if (ropeType === "linear") rope_scaling = { rope_type: "linear", factor: rope.factor as number };
  else if (ropeType !== "default")
    fail(`rope type ${JSON.stringify(ropeType)} is not supported (expected "default", "linear" or "llama3")`);

  const kinds =
    j.layer_attention ??
    (j.full_attention_last_layers === undefined
      ? undefined
      : layerKinds({ num_hidden_layers: j.num_hidden_layers, full_attention_last_layers: j.full_attention_last_layers } as LlamaConfig));
  if (kinds === undefined)
    notes.push(`no per-layer attention in ${source}: full attention on every layer unless --attention says otherwise`);
  if (j.moba_chunk_size === undefined || j.moba_topk === undefined) {
    notes.push(
      `no moba_chunk_size / moba_topk in ${source}: MoBA layers would use the official MoBA's ${MOBA_DEFAULTS.moba_chunk_size} / ${MOBA_DEFAULTS.moba_topk}`,
    );
  }
  const ignored = Object.keys(j).filter((k) => !KNOWN.has(k));
  if (ignored.length > 0) notes.push(`ignored in ${source}: ${ignored.join(", ")}`);

  const input: Partial<LlamaConfig> = {
    vocab_size: j.vocab_size as number,
    hidden_size: j.hidden_size as number,
    intermediate_size: j.intermediate_size as number,
    num_hidden_layers: j.num_hidden_layers as number,
    num_attention_heads: j.num_attention_heads as number,
    num_key_value_heads: (j.num_key_value_heads ?? j.num_attention_heads) as number,
    rms_norm_eps: (j.rms_norm_eps ?? 1e-6) as number,
    rope_theta: (rope.rope_theta ?? j.rope_theta ?? 10000) as number,
    max_position_embeddings: max as number,
    tie_word_embeddings: (j.tie_word_embeddings ?? false) as boolean,
    initializer_range: (j.initializer_range ?? 0.02) as number,
    moba_chunk_size: (j.moba_chunk_size ?? MOBA_DEFAULTS.moba_chunk_size) as number,
    moba_topk: (j.moba_topk ?? MOBA_DEFAULTS.moba_topk) as number,
    layer_attention: (kinds ?? Array<AttentionKind>(j.num_hidden_layers as number).fill("full")) as AttentionKind[],
  };
  // kept only where it differs from hidden_size / num_attention_heads (transformers 5 always writes it)
  if (j.head_dim !== undefined && j.head_dim !== null && j.head_dim !== (j.hidden_size as number) / (j.num_attention_heads as number))
    input.head_dim = j.head_dim as number;
  if (rope_scaling) input.rope_scaling = rope_scaling;
  // kept (and checked) so that a model trained on from here exports them again; null means none
  if (j.bos_token_id !== undefined && j.bos_token_id !== null) input.bos_token_id = j.bos_token_id as number;
  if (j.eos_token_id !== undefined && j.eos_token_id !== null) input.eos_token_id = j.eos_token_id as number | number[];
  try {
    const config = checkConfig(input);
    return { config, notes, eosTokenIds: eosTokenIds(config) };
  } catch (error) {
    return fail((error as Error).message);
  }
}

/** config.json for LlamaForCausalLM (transformers 4.x keys, which 5.x reads too), plus the MoBA fields. */
export function toHfConfig(c: LlamaConfig): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    vocab_size: c.vocab_size,
    hidden_size: c.hidden_size,
    intermediate_size: c.intermediate_size,
    num_hidden_layers: c.num_hidden_layers,
    num_attention_heads: c.num_attention_heads,
    num_key_value_heads: c.num_key_value_heads,
    head_dim: headDim(c),
    hidden_act: "silu",
    max_position_embeddings: c.max_position_embeddings,
    initializer_range: c.initializer_range,
    rms_norm_eps: c.rms_norm_eps,
    rope_theta: c.rope_theta,
    rope_scaling: c.rope_scaling ?? null,
    tie_word_embeddings: c.tie_word_embeddings,
    attention_bias: false,
    mlp_bias: false,
    attention_dropout: 0,
    torch_dtype: "float32",
    use_cache: true,
    moba_chunk_size: c.moba_chunk_size,
    moba_topk: c.moba_topk,
    layer_attention: layerKinds(c),
    ...specialTokenIds(c),
  };
}

/** bos_token_id and eos_token_id where the config has them (a model imported from Hugging Face), for config.json and generation_config.json. */
export function specialTokenIds(c: LlamaConfig): { bos_token_id?: number; eos_token_id?: number | number[] } {
  return {
    ...(c.bos_token_id !== undefined && { bos_token_id: c.bos_token_id }),
    ...(c.eos_token_id !== undefined && { eos_token_id: c.eos_token_id }),
  };
}
