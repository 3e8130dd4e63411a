// Passkey retrieval (Mohtashami & Jaggi 2023, used by the MoBA paper's long-context checks): a
// five-digit number hidden at a chosen depth in repetitive filler, asked for at the end.
import { MobaError } from "../tensor.js";

const FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. ";
const QUESTION = "What is the pass key? The pass key is ";

export interface PasskeySample {
  bytes: Uint8Array; // the whole text, answer included
  /** Where the answer's digits start: the model must predict bytes[answerStart .. end). */
  answerStart: number;
  key: string;
}

/** A sample of exactly `length` bytes with the key's sentence starting at `depth` (0 = start, 1 = just before the question). */
export function passkeySample(length: number, depth: number, rng: { below(n: number): number }): PasskeySample {
  const key = String(10000 + rng.below(90000));
  const needle = `The pass key is ${key}. Remember it. ${key} is the pass key. `;
  const tail = QUESTION + key;
  const fillerBytes = length - needle.length - tail.length;
  if (fillerBytes < 0)
    throw new MobaError(
      `passkey length: expected at least ${needle.length + tail.length} bytes (the key's sentence and the question), got ${length}`,
    );
  const before = Math.round(fillerBytes * depth);
  const filler = (n: number, from: number) => Array.from({ length: n }, (_, i) => FILLER[(from + i) % FILLER.length]).join("");
  const text = filler(before, 0) + needle + filler(fillerBytes - before, before) + tail;
  return { bytes: new TextEncoder().encode(text), answerStart: length - key.length, key };
}
