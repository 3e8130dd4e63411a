// npm start: train a small MoBA model on the bundled corpus, evaluate it, sample from it, and
// leave the checkpoint, the log and the loss curve in the output folder.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { generateText } from "./generate.js";
import { train, TRAIN_DEFAULTS, type TrainIo, type TrainOptions } from "./train.js";

export const TOUR_PROMPT = "Fellow-Citizens of the Senate and House of Representatives: ";

/** Starts over in its folder each time (a tour is a demonstration: npm start twice shows it twice), or resumes with `resume`. */
export async function tour(
  options: Partial<TrainOptions>,
  io: TrainIo & { write(text: string): void },
  resume = false,
): Promise<{ validationLoss: number | undefined }> {
  const started = performance.now();
  io.print("moba tour: a byte-level Llama with MoBA attention, trained on State of the Union addresses (1790-2021)");
  const out = options.out ?? TRAIN_DEFAULTS.out;
  if (!resume && existsSync(join(out, "checkpoint.safetensors")))
    io.print(`(replacing the previous tour's checkpoint in ${out}; moba tour --resume would continue it)`);
  const result = await train(options, io, resume, !resume);
  io.print(
    `validation loss ${result.validationLoss?.toFixed(4)} nats/byte (${((result.validationLoss ?? NaN) / Math.LN2).toFixed(3)} bits/byte; uniform bytes: 8)`,
  );
  io.print(`sample (temperature 0.8, top-p 0.95, MoBA decoding with the KV cache):\n`);
  await generateText(
    result.model,
    { prompt: TOUR_PROMPT, tokens: 300, temperature: 0.8, topP: 0.95, seed: 1, backend: result.backend },
    io.write,
  );
  io.print(
    `\n\nwrote ${result.checkpoint}, ${join(out, "log.jsonl")} and ${join(out, "loss.svg")} in ${((performance.now() - started) / 1000).toFixed(0)} s`,
  );
  io.print(`next: moba generate --checkpoint ${result.checkpoint} --prompt "..."   or   moba train --help`);
  return { validationLoss: result.validationLoss };
}
