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

/** Generates `tokens` bytes after the prompt; `write` receives the text as it comes. */
export async function generateText(model: Model, o: GenerateOptions, write: (text: string) => void): Promise<{ text: string; tokens: number; seconds: number }> {
  const prompt = new TextEncoder().encode(o.prompt);
  if (prompt.length === 0) throw new MobaError(`--prompt: expected at least one character, got ""`);
  const backend = await modelBackend(o.backend);
  const decoder = new TextDecoder("utf-8", { fatal: false });
  let text = "", tokens = 0;
  const started = performance.now();
  for await (const byte of generate(model, Int32Array.from(prompt), o.tokens, o, backend)) {
    const piece = decoder.decode(Uint8Array.of(byte), { stream: true });
    text += piece;
    tokens++;
    write(piece);
  }
  const rest = decoder.decode();
  write(rest);
  return { text: text + rest, tokens, seconds: (performance.now() - started) / 1000 };
}

export async function generateFromCheckpoint(path: string, o: GenerateOptions, write: (text: string) => void): Promise<{ text: string; tokens: number; seconds: number }> {
  const { model } = await loadCheckpoint(path);
  return generateText(model, o, write);
}
