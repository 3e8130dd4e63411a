// moba generate: text from a checkpoint or a Hugging Face model directory, token by token, with the
// KV cache and MoBA decoding; the model's tokenizer (UTF-8 bytes for byte-level models) in and out.
import type { Backend } from "../attention/problem.js";
import { checkpointTokenizer, loadCheckpoint } from "../model/checkpoint.js";
import { eosTokenIds } from "../model/config.js";
import { generate, type SampleOptions } from "../model/decode.js";
import type { Model } from "../model/llama.js";
import { type LoadModelOptions, loadModel } from "../model/pretrained.js";
import { byteTokenizer, type TextTokenizer } from "../model/tokenizer.js";
import { MobaError, shown } from "../tensor.js";
import { modelBackend } from "./backends.js";

export interface GenerateOptions extends SampleOptions {
  prompt: string;
  /** At most this many tokens: fewer when one of `stop` comes (it is not printed). */
  tokens: number;
  /** End-of-sequence ids (a Hugging Face model's eos_token_id). */
  stop?: number[];
  seed: number;
  backend: Backend | "auto";
  /** Stops the generation after the token in flight (the playground's Stop button). */
  signal?: AbortSignal;
}

/**
 * Generates `tokens` tokens after the prompt; `write` receives the prompt, then the text as it comes (the decoded
 * text's new end, held back while it ends inside a character that needs more tokens) with the count of tokens
 * generated so far. Everything is checked before the first write: a bad option or a model that gives non-finite
 * logits prints nothing but its error.
 */
export async function generateText(
  model: Model,
  o: GenerateOptions,
  write: (text: string, tokens: number) => void,
  tokenizer: TextTokenizer = byteTokenizer,
): Promise<{ text: string; tokens: number; seconds: number }> {
  const prompt = tokenizer.encode(o.prompt);
  const { vocab_size: vocab, max_position_embeddings: positions } = model.config;
  if (prompt.length === 0) throw new MobaError(`--prompt: expected at least one token, got ${shown(o.prompt)}`);
  const outside = prompt.findIndex((id) => id >= vocab);
  if (outside >= 0)
    throw new MobaError(`--prompt: expected token ids below the model's vocab_size ${vocab}, got ${prompt[outside]} at token ${outside}`);
  if (prompt.length + o.tokens > positions) {
    throw new MobaError(
      `--tokens: expected at most ${positions - prompt.length} (max_position_embeddings ${positions} less the ${prompt.length}-token prompt), got ${o.tokens}`,
    );
  }
  const backend = await modelBackend(o.backend);
  const ids: number[] = [];
  let text = "",
    first = true;
  const started = performance.now();
  for await (const id of generate(model, prompt, o.tokens, o, backend)) {
    // the prompt once the first token is sampled: broken weights fail at it, and then nothing has been printed
    if (first) write(o.prompt, 0);
    first = false;
    if (o.stop?.includes(id)) break;
    ids.push(id);
    if (o.signal?.aborted) break;
    const decoded = tokenizer.decode(ids);
    if (decoded.endsWith("\uFFFD") || !decoded.startsWith(text)) continue;
    write(decoded.slice(text.length), ids.length);
    text = decoded;
  }
  const decoded = tokenizer.decode(ids);
  if (decoded.startsWith(text)) write(decoded.slice(text.length), ids.length);
  return { text: decoded, tokens: ids.length, seconds: (performance.now() - started) / 1000 };
}

/** Loads the checkpoint (and its tokenizer), then generateText: nothing is written before both have checked their input. */
export async function generateFromCheckpoint(
  path: string,
  o: GenerateOptions,
  write: (text: string) => void,
): Promise<{ text: string; tokens: number; seconds: number }> {
  const saved = await loadCheckpoint(path);
  // a run from a Hugging Face model keeps its eos_token_id in the config: generation stops there, as with --model
  return generateText(saved.model, { ...o, stop: eosTokenIds(saved.model.config) }, write, await checkpointTokenizer(saved, path));
}

/** Loads a Hugging Face model directory, then generateText with its tokenizer, stopping at its eos_token_id. */
export async function generateFromModel(
  dir: string,
  o: GenerateOptions & LoadModelOptions,
  write: (text: string) => void,
): Promise<{ text: string; tokens: number; seconds: number }> {
  const { model, tokenizer, eosTokenIds } = await loadModel(dir, o);
  if (!tokenizer) throw new MobaError(`--model: ${dir} has no tokenizer.json (expected one to encode the prompt)`);
  return generateText(model, { ...o, stop: eosTokenIds }, write, tokenizer);
}
