// moba generate: text from a checkpoint, byte by byte, with the KV cache and MoBA decoding.
import type { Backend } from "../attention/problem.js";
import { loadCheckpoint } from "../model/checkpoint.js";
import { generate, type SampleOptions } from "../model/decode.js";
import type { Model } from "../model/llama.js";
import { MobaError } from "../tensor.js";
import { modelBackend } from "./backends.js";

export interface GenerateOptions extends SampleOptions {
  prompt: string;
  tokens: number;
  seed: number;
  backend: Backend | "auto";
}

/**
 * Generates `tokens` bytes after the prompt; `write` receives the prompt, then the text as it comes. Everything is
 * checked before the first write: a bad option or a model that gives non-finite logits prints nothing but its error.
 */
export async function generateText(
  model: Model,
  o: GenerateOptions,
  write: (text: string) => void,
): Promise<{ text: string; tokens: number; seconds: number }> {
  const prompt = new TextEncoder().encode(o.prompt);
  const { vocab_size: vocab, max_position_embeddings: positions } = model.config;
  if (prompt.length === 0) throw new MobaError(`--prompt: expected at least one character, got ""`);
  const outside = prompt.findIndex((b) => b >= vocab);
  if (outside >= 0)
    throw new MobaError(`--prompt: expected bytes below the model's vocab_size ${vocab}, got ${prompt[outside]} at byte ${outside}`);
  if (prompt.length + o.tokens > positions) {
    throw new MobaError(
      `--tokens: expected at most ${positions - prompt.length} (max_position_embeddings ${positions} less the ${prompt.length}-byte prompt), got ${o.tokens}`,
    );
  }
  const backend = await modelBackend(o.backend);
  const decoder = new TextDecoder("utf-8", { fatal: false });
  let text = "",
    tokens = 0;
  const started = performance.now();
  for await (const byte of generate(model, Int32Array.from(prompt), o.tokens, o, backend)) {
    // the prompt once the first byte is sampled: broken weights fail at it, and then nothing has been printed
    if (tokens === 0) write(o.prompt);
    const piece = decoder.decode(Uint8Array.of(byte), { stream: true });
    text += piece;
    tokens++;
    write(piece);
  }
  const rest = decoder.decode();
  write(rest);
  return { text: text + rest, tokens, seconds: (performance.now() - started) / 1000 };
}

/** Loads the checkpoint, then generateText: nothing is written before both have checked their input. */
export async function generateFromCheckpoint(
  path: string,
  o: GenerateOptions,
  write: (text: string) => void,
): Promise<{ text: string; tokens: number; seconds: number }> {
  const { model } = await loadCheckpoint(path);
  return generateText(model, o, write);
}
