// Bad input, as a hostile user gives it: every case through the CLI's main() in-process (no process per case),
// each asserting exit code 2, one line on stderr that names the argument, no stack trace, nothing on stdout,
// and the work folder unchanged: no new, partial or temporary file, no existing file touched.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, test } from "node:test";
import { streams } from "../src/cli/args.js";
import { main } from "../src/cli/main.js";
import { serializeSafetensors, type TensorToWrite } from "../src/io/safetensors.js";
import { TINY } from "./helpers.js";

const dir = mkdtempSync(join(tmpdir(), "moba-bad-input-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const at = (...parts: string[]) => join(dir, ...parts);

/** Runs `moba ...args` in this process, capturing what it writes. */
async function moba(...args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  const saved = { ...streams };
  let stdout = "",
    stderr = "";
  streams.out = (text) => void (stdout += text);
  streams.err = (text) => void (stderr += text);
  try {
    return { status: await main(args), stdout, stderr };
  } finally {
    Object.assign(streams, saved);
  }
}

/** Every file under the work folder with a hash of its bytes. */
function snapshot(): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (folder: string) => {
    for (const e of readdirSync(folder, { withFileTypes: true })) {
      const path = join(folder, e.name);
      if (e.isDirectory()) walk(path);
      else if (e.isFile()) files.set(path, createHash("sha256").update(readFileSync(path)).digest("hex"));
      else files.set(path, e.isSymbolicLink() ? "symlink" : "special");
    }
  };
  walk(dir);
  return files;
}

// ---- the inputs the cases spoil ----

const f32 = (shape: number[], fill: number | ((i: number) => number) = 0.5): TensorToWrite => {
  const n = shape.reduce((a, b) => a * b, 1);
  return { dtype: "F32", shape, data: Float32Array.from({ length: n }, (_, i) => (typeof fill === "number" ? fill : fill(i))) };
};
const good = { q: f32([8, 2, 4], (i) => Math.sin(i)), k: f32([8, 1, 4], (i) => Math.cos(i)), v: f32([8, 1, 4], 1) };
const safetensors = (name: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): string => {
  writeFileSync(at(name), serializeSafetensors(tensors, metadata));
  return at(name);
};
/** A file of a raw header (any JSON text) and `buffer` bytes after it. */
const raw = (name: string, header: string, buffer = 0, length?: bigint): string => {
  const json = new TextEncoder().encode(header);
  const file = new Uint8Array(8 + json.length + buffer);
  new DataView(file.buffer).setBigUint64(0, length ?? BigInt(json.length), true);
  file.set(json, 8);
  writeFileSync(at(name), file);
  return at(name);
};
const cu = (dtype: "I32" | "I64", data: number[]): TensorToWrite => ({ dtype, shape: [data.length], data });

const corpus = at("corpus");
mkdirSync(corpus);
const text = "Fellow-Citizens of the Senate and House of Representatives: it is a pleasure to report. ".repeat(8);
for (let i = 0; i < 6; i++) writeFileSync(join(corpus, `doc${i}.txt`), text.slice(i * 40, i * 40 + 300));
const tiny = {
  model: TINY,
  data: corpus,
  steps: 2,
  contextLength: 32,
  batchRows: 1,
  evalEvery: 2,
  evalRows: 1,
  checkpointEvery: 1,
  backend: "cpu",
};
const config = (name: string, value: unknown): string => {
  writeFileSync(at(name), typeof value === "string" ? value : JSON.stringify(value));
  return at(name);
};
const tinyConfig = config("tiny.json", tiny);

// a trained run to resume and to spoil; the files the cases write are made by the first test
const run = at("run");
const checkpoint = join(run, "checkpoint.safetensors");
const existing = at("existing.safetensors");
writeFileSync(existing, "a previous result that no failed run may change");
symlinkSync(existing, at("link.safetensors"));
const input = safetensors("in.safetensors", good);

/** A copy of the trained checkpoint with its header or bytes changed by `edit`. */
function spoiled(name: string, edit: (header: Record<string, unknown>, data: Uint8Array) => void): string {
  const original = readFileSync(checkpoint);
  const n = Number(original.readBigUInt64LE(0));
  const header = JSON.parse(original.subarray(8, 8 + n).toString("utf8")) as Record<string, unknown>;
  const data = new Uint8Array(original.subarray(8 + n));
  edit(header, data);
  const json = Buffer.from(JSON.stringify(header));
  const file = Buffer.alloc(8 + json.length + data.length);
  file.writeBigUInt64LE(BigInt(json.length), 0);
  json.copy(file, 8);
  file.set(data, 8 + json.length);
  writeFileSync(at(name), file);
  return at(name);
}
type Header = Record<string, { data_offsets: [number, number] } & Record<string, unknown>> & { __metadata__: Record<string, string> };
const meta = (h: Record<string, unknown>) => (h as Header).__metadata__;
const range = (h: Record<string, unknown>, name: string) => (h as Header)[name].data_offsets;
const state = (h: Record<string, unknown>) =>
  JSON.parse(meta(h).training_state) as { data: { doc: number; offset: number; rng: unknown }; [key: string]: unknown };
const withState = (h: Record<string, unknown>, edit: (s: ReturnType<typeof state>) => void) => {
  const s = state(h);
  edit(s);
  meta(h).training_state = JSON.stringify(s);
};
/** A run folder holding a spoiled checkpoint, for --resume. */
function spoiledRun(name: string, edit: (header: Record<string, unknown>, data: Uint8Array) => void): string {
  mkdirSync(at(name));
  spoiled(join(name, "checkpoint.safetensors"), edit);
  return at(name);
}

// ---- the cases: [what, arguments, what stderr must say (naming the argument)] ----

type Case = [string, () => string[], RegExp];
const cases: Case[] = [];
const add = (name: string, args: () => string[], pattern: RegExp) => cases.push([name, args, pattern]);

// the command line itself
add("unknown command", () => ["fly"], /unknown command "fly"/);
for (const command of ["attention", "train", "generate", "eval", "demo", "bench", "bench-train", "tour", "experiment"]) {
  add(
    `${command}: unknown option`,
    () => [command, "--frobnicate"],
    new RegExp(`unknown option --frobnicate for moba ${command} \\(moba ${command} --help lists its options\\)`),
  );
}
add("option without its value", () => ["train", "--steps"], /--steps <value>' argument missing/);
add("positional where none is taken", () => ["train", "extra"], /Unexpected argument 'extra'/);
add(
  "a string option given as a flag value",
  () => ["generate", "--checkpoint", checkpoint, "--tokens=--x"],
  /--tokens: expected a positive integer, got "--x"/,
);

// moba attention: options
const attention =
  (...extra: string[]) =>
  () => ["attention", "--input", input, "--output", at("out.safetensors"), ...extra];
for (const [flag, value] of [
  ["block-size", "0"],
  ["block-size", "-1"],
  ["block-size", "2.5"],
  ["block-size", "abc"],
  ["block-size", "1e3"],
  ["block-size", ""],
  ["block-size", "99999999999999999999"],
  ["top-k", "0"],
  ["top-k", "-3"],
  ["top-k", "x"],
  ["top-k", "3.0"],
] as const) {
  add(
    `attention --${flag} ${value}`,
    attention(`--${flag}`, value),
    new RegExp(`--${flag}: expected a positive integer, got "${value.replace(/\./g, "\\.")}"`),
  );
}
add("attention --block-size 2^31", attention("--block-size", String(2 ** 31)), /blockSize: expected at most 2\^31 - 1/);
add("attention --top-k 2^40", attention("--top-k", String(2 ** 40)), /topK: expected at most 2\^31 - 1/);
for (const value of ["abc", "Infinity", "NaN", "", "-Infinity"])
  add(`attention --scale ${value}`, attention("--scale", value), /--scale: expected a finite number/);
add("attention --backend tpu", attention("--backend", "tpu"), /--backend: expected "cpu" or "webgpu", got "tpu"/);
add("attention --precision bf16", attention("--precision", "bf16"), /--precision: expected "f32" or "f16", got "bf16"/);
add(
  "attention without --input",
  () => ["attention", "--output", at("out.safetensors")],
  /--input: expected a safetensors file path, got nothing/,
);
add("attention without --output", () => ["attention", "--input", input], /--output: expected a file path to write, got nothing/);
add(
  "attention --input missing",
  () => ["attention", "--input", at("none.safetensors"), "--output", at("out.safetensors")],
  /none\.safetensors: cannot read \(ENOENT\)/,
);
add(
  "attention --input a folder",
  () => ["attention", "--input", corpus, "--output", at("out.safetensors")],
  /corpus: cannot read \(EISDIR\)/,
);
add(
  "attention --output a folder",
  () => ["attention", "--input", input, "--output", corpus],
  /--output: expected a regular file to write, got .*\(a folder; not replaced\)/,
);
add(
  "attention --output a symlink",
  () => ["attention", "--input", input, "--output", at("link.safetensors")],
  /--output: expected a regular file to write, got .*\(a symbolic link; not replaced\)/,
);
// a FIFO stands for a device: were the check broken, a test run as root must not replace the machine's /dev/null
add(
  "attention --output a FIFO (a device node alike)",
  () => (execFileSync("mkfifo", [at("fifo")]), ["attention", "--input", input, "--output", at("fifo")]),
  /--output: expected a regular file to write, got ".*fifo" \(a device, FIFO or socket; not replaced\)/,
);
add(
  "attention --output in a missing folder",
  () => ["attention", "--input", input, "--output", at("nowhere", "out.safetensors")],
  /--output: expected a file in an existing folder/,
);
add(
  "attention --output under a file",
  () => ["attention", "--input", input, "--output", join(existing, "out.safetensors")],
  /--output: expected a file in a folder, got .*is not a folder/,
);

// moba attention: the file
const file = (name: string, tensors: Record<string, TensorToWrite>, pattern: RegExp) => {
  const path = safetensors(`bad-${cases.length}.safetensors`, tensors);
  add(
    `attention input: ${name}`,
    () => ["attention", "--input", path, "--output", at("out.safetensors"), "--block-size", "2", "--top-k", "2"],
    pattern,
  );
};
const header = (name: string, text: string, buffer: number, pattern: RegExp, length?: bigint) => {
  const path = raw(`raw-${cases.length}.safetensors`, text, buffer, length);
  add(`attention header: ${name}`, () => ["attention", "--input", path, "--output", at("out.safetensors")], pattern);
};
file(
  "cu_seqlens I64 2^32 + 5 (wrapped to 5 before)",
  { ...good, cu_seqlens: cu("I64", [0, 2 ** 32 + 5, 8]) },
  /cuSeqlens\[1\]: expected an offset of at most the number of tokens 8, got 4294967301/,
);
file(
  "cu_seqlens I64 2^32 - 1 (NaN out before)",
  { ...good, cu_seqlens: cu("I64", [0, 2 ** 32 - 1, 8]) },
  /cuSeqlens\[1\]: expected an offset of at most the number of tokens 8, got 4294967295/,
);
file(
  "cu_seqlens I64 2^31 (3 GB then abort before)",
  { ...good, cu_seqlens: cu("I64", [0, 2 ** 31, 8]) },
  /cuSeqlens\[1\]: expected an offset of at most the number of tokens 8, got 2147483648/,
);
file(
  "cu_seqlens I64 -2^40 (wrapped to 0)",
  { ...good, cu_seqlens: cu("I64", [-(2 ** 40), 4, 8]) },
  /cuSeqlens\[0\]: expected 0, got -1099511627776/,
);
file(
  "cu_seqlens I64 beyond 2^53",
  { ...good, cu_seqlens: { dtype: "I64", shape: [3], data: [0, 2 ** 60, 8] } },
  /cu_seqlens.*element 1 .* is out of range/,
);
file("cu_seqlens not starting at 0", { ...good, cu_seqlens: cu("I32", [1, 4, 8]) }, /cuSeqlens\[0\]: expected 0, got 1/);
file(
  "cu_seqlens not ending at tokens",
  { ...good, cu_seqlens: cu("I32", [0, 4, 7]) },
  /cuSeqlens\[2\]: expected the number of tokens 8, got 7/,
);
file(
  "cu_seqlens past the tokens",
  { ...good, cu_seqlens: cu("I32", [0, 9, 9]) },
  /cuSeqlens\[1\]: expected an offset of at most the number of tokens 8, got 9/,
);
file(
  "cu_seqlens decreasing",
  { ...good, cu_seqlens: cu("I32", [0, 6, 3, 8]) },
  /cuSeqlens\[2\]: expected non-decreasing offsets \(>= 6\), got 3/,
);
file(
  "cu_seqlens negative",
  { ...good, cu_seqlens: cu("I32", [0, -2, 8]) },
  /cuSeqlens\[1\]: expected non-decreasing offsets \(>= 0\), got -2/,
);
file("cu_seqlens one entry", { ...good, cu_seqlens: cu("I32", [0]) }, /cuSeqlens: expected at least 2 offsets/);
file("cu_seqlens empty", { ...good, cu_seqlens: cu("I32", []) }, /cuSeqlens: expected at least 2 offsets/);
file(
  "cu_seqlens as floats",
  { ...good, cu_seqlens: { dtype: "F32", shape: [2], data: [0, 8] } },
  /tensor "cu_seqlens": expected an integer dtype \(I32, I64\), got F32/,
);
file(
  "q as integers",
  { ...good, q: { dtype: "I32", shape: [8, 2, 4], data: new Array(64).fill(1) } },
  /tensor "q": expected a float dtype/,
);
file("q missing", { k: good.k, v: good.v }, /missing tensor "q" \(found: k, v\)/);
file("k missing", { q: good.q, v: good.v }, /missing tensor "k"/);
file("v missing", { q: good.q, k: good.k }, /missing tensor "v"/);
file("q 2-D", { ...good, q: f32([8, 8]) }, /q: expected shape \[tokens, heads, headDim\], got \[8, 8\]/);
file("q 4-D", { ...good, q: f32([8, 2, 2, 2]) }, /q: expected shape \[tokens, heads, headDim\], got \[8, 2, 2, 2\]/);
file("k with fewer tokens", { ...good, k: f32([7, 1, 4]) }, /k: expected 8 tokens \(as q\), got 7/);
file("k with another headDim", { ...good, k: f32([8, 1, 3]), v: f32([8, 1, 3]) }, /k: expected headDim 4 \(as q\), got 3/);
file("v unlike k", { ...good, v: f32([8, 2, 4]) }, /v: expected shape \[8, 1, 4\], got \[8, 2, 4\]/);
file(
  "heads not a multiple",
  { ...good, q: f32([8, 3, 4]), k: f32([8, 2, 4]), v: f32([8, 2, 4]) },
  /qHeads \(3\) to be a multiple of kvHeads/,
);
file("zero kv heads", { ...good, k: f32([8, 0, 4]), v: f32([8, 0, 4]) }, /heads: expected at least 1 query and 1 kv head/);
file("headDim 0", { q: f32([8, 2, 0]), k: f32([8, 1, 0]), v: f32([8, 1, 0]) }, /q: expected headDim >= 1, got 0/);
file("NaN in q", { ...good, q: f32([8, 2, 4], (i) => (i === 9 ? NaN : 1)) }, /q: expected finite values, got NaN at element 9/);
file(
  "Infinity in k",
  { ...good, k: f32([8, 1, 4], (i) => (i === 2 ? Infinity : 1)) },
  /k: expected finite values, got Infinity at element 2/,
);
file(
  "-Infinity in v",
  { ...good, v: f32([8, 1, 4], (i) => (i === 31 ? -Infinity : 1)) },
  /v: expected finite values, got -Infinity at element 31/,
);
file("NaN in dout", { ...good, dout: f32([8, 2, 4], NaN) }, /dout: expected finite values, got NaN at element 0/);
file("dout of another shape", { ...good, dout: f32([8, 1, 4]) }, /dout: expected shape \[8, 2, 4\], got \[8, 1, 4\]/);
file(
  "F16 infinity in q",
  { ...good, q: { dtype: "F16", shape: [8, 2, 4], data: new Float32Array(64).fill(70000) } },
  /q: expected finite values, got Infinity/,
);
file(
  "F64 beyond float32 in k",
  { ...good, k: { dtype: "F64", shape: [8, 1, 4], data: new Float64Array(32).fill(1e300) } },
  /k: expected finite values, got Infinity/,
);
{
  writeFileSync(at("five.safetensors"), new Uint8Array(5));
  add(
    "attention header: a 5-byte file",
    () => ["attention", "--input", at("five.safetensors"), "--output", at("out.safetensors")],
    /expected at least 8 bytes \(the header length\), got 5/,
  );
  writeFileSync(at("empty.safetensors"), new Uint8Array(0));
  add(
    "attention header: an empty file",
    () => ["attention", "--input", at("empty.safetensors"), "--output", at("out.safetensors")],
    /expected at least 8 bytes \(the header length\), got 0/,
  );
}
header("length field past the end", "{}", 0, /header length 1000 exceeds the 2 bytes after it \(truncated file\?\)/, 1000n);
header("length field over the 100 MB cap", "{}", 0, /header length 1099511627776: expected at most 100000000 bytes/, 2n ** 40n);
header("not JSON", "{q:", 0, /header is not valid UTF-8 JSON/);
header("not UTF-8", "\udc00{}", 0, /header is not valid UTF-8 JSON/);
header(
  "100k-deep nesting (a stack overflow before)",
  `{"q":${"[".repeat(100000)}${"]".repeat(100000)}}`,
  0,
  /tensor "q": expected \{ dtype, shape, data_offsets \}, got \[\.\.\.\]/,
);
header(
  "100k-deep nesting in metadata",
  `{"__metadata__":${"[".repeat(100000)}${"]".repeat(100000)}}`,
  0,
  /__metadata__: expected an object of strings/,
);
header("null", "null", 0, /header: expected a JSON object, got null/);
header("a number", "42", 0, /header: expected a JSON object, got 42/);
header("a list", "[]", 0, /header: expected a JSON object, got \[\]/);
header("metadata of numbers", `{"__metadata__":{"a":1}}`, 0, /__metadata__: expected an object of strings, got \{"a":1\}/);
header("tensor entry null", `{"q":null}`, 0, /tensor "q": expected \{ dtype, shape, data_offsets \}, got null/);
header(
  "unknown dtype",
  `{"q":{"dtype":"F8_E4M3","shape":[1],"data_offsets":[0,1]}}`,
  1,
  /tensor "q": expected dtype F64, F32, F16, BF16, I64 or I32, got "F8_E4M3"/,
);
header(
  "negative shape",
  `{"q":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`,
  0,
  /tensor "q": expected shape as non-negative integers, got \[-1\]/,
);
header(
  "fractional shape",
  `{"q":{"dtype":"F32","shape":[1.5],"data_offsets":[0,6]}}`,
  6,
  /tensor "q": expected shape as non-negative integers, got \[1.5\]/,
);
header(
  "shape a string",
  `{"q":{"dtype":"F32","shape":"8,2,4","data_offsets":[0,4]}}`,
  4,
  /tensor "q": expected shape as non-negative integers, got "8,2,4"/,
);
header(
  "offsets reversed",
  `{"q":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}}`,
  4,
  /tensor "q": expected data_offsets \[begin, end\] with 0 <= begin <= end, got \[4,0\]/,
);
header(
  "offsets out of range",
  `{"q":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`,
  8,
  /tensor "q": data_offsets \[0, 16\] out of range of the 8-byte buffer/,
);
header(
  "offsets overlapping",
  `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`,
  12,
  /tensor "b": data_offsets \[4, 12\] overlap the tensor before it/,
);
header(
  "shape and bytes disagree",
  `{"q":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`,
  8,
  /tensor "q": shape \[3\] of F32 needs 12 bytes, data_offsets give 8/,
);
header(
  "a hole in the buffer",
  `{"q":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`,
  8,
  /bytes \[0, 4\) of the buffer belong to no tensor/,
);
header(
  "bytes after the last tensor",
  `{"q":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`,
  12,
  /bytes \[4, 12\) at the end of the buffer belong to no tensor/,
);

// moba train: flags
const train =
  (...extra: string[]) =>
  () => ["train", "--config", tinyConfig, "--out", at("new-run"), ...extra];
for (const flag of ["steps", "context-length", "batch-rows", "accumulation", "seed"]) {
  for (const value of ["0", "-1", "1.5", "abc"])
    add(
      `train --${flag} ${value}`,
      train(`--${flag}`, value),
      new RegExp(`--${flag}: expected a positive integer, got "${value.replace(".", "\\.")}"`),
    );
}
for (const value of ["0", "-1", "abc", "Infinity"])
  add(
    `train --lr ${value}`,
    train("--lr", value),
    value === "0" ? /train\.learningRate: expected a positive number, got 0/ : /--lr: expected a number in \[0, Infinity\]/,
  );
add("train --backend tpu", train("--backend", "tpu"), /--backend: expected "auto", "cpu" or "webgpu", got "tpu"/);
add(
  "train --attention sparse",
  train("--attention", "sparse"),
  /--attention: expected "moba", "full" or "hybrid-last-N" with N from 0 to 2, got "sparse"/,
);
add("train --full-last abc (got null before)", train("--full-last", "abc"), /--full-last: expected an integer >= 0, got "abc"/);
add("train --full-last -1", train("--full-last", "-1"), /--full-last: expected an integer >= 0, got "-1"/);
add(
  "train --full-last 3 of 2 layers",
  train("--full-last", "3"),
  /config\.full_attention_last_layers: expected an integer from 0 to 2, got 3/,
);
add(
  "train --data missing",
  train("--data", at("none")),
  /train\.data: expected "sotu", "gutenberg", "sotu\+gutenberg" or an existing file or folder, got ".*none" \(not found\)/,
);
add(
  "train --data an empty folder",
  () => (
    mkdirSync(at("empty-data"), { recursive: true }),
    ["train", "--config", tinyConfig, "--out", at("new-run"), "--data", at("empty-data")]
  ),
  /--data: expected at least one document of 2 or more bytes/,
);
add("train --out a file", train("--out", existing), /train\.out: expected a folder, got ".*existing\.safetensors" \(a file\)/);
add(
  "train --context-length past max_position_embeddings",
  train("--context-length", "9000"),
  /train\.contextLength: expected at most max_position_embeddings 8192, got 9000/,
);
add(
  "train over an existing checkpoint",
  () => ["train", "--config", tinyConfig, "--out", run],
  /train\.out: .*checkpoint\.safetensors exists \(--resume continues it, --overwrite starts over\)/,
);
add(
  "train --resume --overwrite",
  () => ["train", "--config", tinyConfig, "--out", run, "--resume", "--overwrite"],
  /train: expected resume or overwrite, got both/,
);

// moba train: config files
const withConfig = (name: string, value: unknown, pattern: RegExp) => {
  const path = config(`config-${cases.length}.json`, value);
  add(`train --config ${name}`, () => ["train", "--config", path, "--out", at("new-run")], pattern);
};
add(
  "train --config missing",
  () => ["train", "--config", at("none.json")],
  /--config: expected a JSON file, got ".*none\.json" \(cannot read it\)/,
);
add("train --config a folder", () => ["train", "--config", corpus], /--config: expected a JSON file, got ".*corpus" \(cannot read it\)/);
withConfig("not JSON", "{steps: 3}", /--config: .* is not valid JSON/);
withConfig("empty", "", /--config: .* is not valid JSON/);
withConfig("null", "null", /--config: expected a JSON object of training options in .*, got null/);
withConfig("42", "42", /--config: expected a JSON object of training options in .*, got 42/);
withConfig("[] (a 150-step default run before)", "[]", /--config: expected a JSON object of training options in .*, got \[\]/);
withConfig("a string", '"sotu"', /--config: expected a JSON object of training options in .*, got "sotu"/);
withConfig("100k-deep nesting", `{"model":${"[".repeat(100000)}${"]".repeat(100000)}}`, /config: expected an object, got \[\.\.\.\]/);
withConfig("unknown option", { ...tiny, lr: 1 }, /train\.lr: unknown option/);
withConfig("steps a string", { ...tiny, steps: "10" }, /train\.steps: expected a positive integer, got "10"/);
withConfig("evalEvery 0", { ...tiny, evalEvery: 0 }, /train\.evalEvery: expected a positive integer, got 0/);
withConfig("checkpointEvery -1", { ...tiny, checkpointEvery: -1 }, /train\.checkpointEvery: expected a positive integer, got -1/);
withConfig("evalRows 1.5", { ...tiny, evalRows: 1.5 }, /train\.evalRows: expected a positive integer, got 1.5/);
withConfig("adamEps 0", { ...tiny, adamEps: 0 }, /train\.adamEps: expected a positive number, got 0/);
withConfig("gradClip null", { ...tiny, gradClip: null }, /train\.gradClip: expected a positive number, got null/);
withConfig("beta1 1", { ...tiny, beta1: 1 }, /train\.beta1: expected a number in \[0, 1\), got 1/);
withConfig("beta2 -0.1", { ...tiny, beta2: -0.1 }, /train\.beta2: expected a number in \[0, 1\), got -0.1/);
withConfig(
  "minLearningRateFraction 2",
  { ...tiny, minLearningRateFraction: 2 },
  /train\.minLearningRateFraction: expected a number in \[0, 1\], got 2/,
);
withConfig("passkeyShare 1.5", { ...tiny, passkeyShare: 1.5 }, /train\.passkeyShare: expected a fraction in \[0, 1\], got 1.5/);
withConfig(
  "passkeyShare with short rows",
  { ...tiny, passkeyShare: 0.5 },
  /train\.contextLength: expected at least 128 with passkeyShare > 0/,
);
withConfig("weightDecay -1", { ...tiny, weightDecay: -1 }, /train\.weightDecay: expected a number >= 0, got -1/);
withConfig("warmupSteps 1.5", { ...tiny, warmupSteps: 1.5 }, /train\.warmupSteps: expected an integer >= 0, got 1.5/);
withConfig("seed a string", { ...tiny, seed: "1" }, /train\.seed: expected an integer, got "1"/);
withConfig("backend tpu", { ...tiny, backend: "tpu" }, /train\.backend: expected "auto", "cpu" or "webgpu", got "tpu"/);
withConfig("data a number", { ...tiny, data: 5 }, /train\.data: expected "sotu", "gutenberg", "sotu\+gutenberg" or a path, got 5/);
add(
  "train --config out empty",
  () => ["train", "--config", config("out-empty.json", { ...tiny, out: "" })],
  /train\.out: expected a folder path, got ""/,
);
withConfig("stages not a list", { ...tiny, stages: {} }, /train\.stages: expected a list, got \{\}/);
withConfig(
  "stages [null] (a TypeError before)",
  { ...tiny, stages: [null] },
  /train\.stages\[0\]: expected \{ start, attention or fullAttentionLastLayers \}, got null/,
);
withConfig(
  "stage start 1.5",
  { ...tiny, stages: [{ start: 1.5, attention: "full" }] },
  /train\.stages\[0\]\.start: expected a fraction of the steps in \[0, 1\), got 1.5/,
);
withConfig(
  "stages out of order",
  {
    ...tiny,
    stages: [
      { start: 0.5, attention: "full" },
      { start: 0.2, attention: "moba" },
    ],
  },
  /train\.stages\[1\]\.start: expected stages in increasing order/,
);
withConfig(
  "stage attention dense",
  { ...tiny, stages: [{ start: 0.5, attention: "dense" }] },
  /train\.stages\[0\]\.attention: expected "moba", "full" or a list of 2 of them, got "dense"/,
);
withConfig(
  "stage with both",
  { ...tiny, stages: [{ start: 0.5, attention: "full", fullAttentionLastLayers: 1 }] },
  /train\.stages\[0\]: expected either attention or fullAttentionLastLayers, got both/,
);
withConfig("stage unknown field", { ...tiny, stages: [{ start: 0.5, layers: 1 }] }, /train\.stages\[0\]\.layers: unknown field/);
withConfig(
  "stage fullAttentionLastLayers 5 of 2",
  { ...tiny, stages: [{ start: 0.5, fullAttentionLastLayers: 5 }] },
  /fullAttentionLastLayers: expected an integer from 0 to 2, got 5/,
);

// moba train: the model config
const model = (name: string, fields: Record<string, unknown>, pattern: RegExp) =>
  withConfig(`model ${name}`, { ...tiny, model: { ...TINY, ...fields } }, pattern);
withConfig("model null", { ...tiny, model: null }, /config: expected an object, got null/);
withConfig("model a list", { ...tiny, model: [] }, /config: expected an object, got \[\]/);
model("unknown field", { hidden: 3 }, /config\.hidden: unknown field/);
model(
  "vocab_size 100 (a diverged loss before)",
  { vocab_size: 100 },
  /config\.vocab_size: expected at least 256 \(one token per byte value\), got 100/,
);
for (const field of [
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "max_position_embeddings",
  "moba_chunk_size",
  "moba_topk",
]) {
  model(`${field} 0`, { [field]: 0 }, new RegExp(`config\\.${field}: expected a positive integer, got 0`));
}
model("hidden_size 2.5", { hidden_size: 2.5 }, /config\.hidden_size: expected a positive integer, got 2.5/);
model(
  "hidden_size 1e6 (an allocation crash before)",
  { hidden_size: 1_000_000, num_attention_heads: 4, num_key_value_heads: 2 },
  /config\.hidden_size: expected a model of at most 2\^31 parameters/,
);
model("intermediate_size 1e9", { intermediate_size: 1e9 }, /config\.hidden_size: expected a model of at most 2\^31 parameters/);
model("num_hidden_layers 1e7", { num_hidden_layers: 1e7 }, /expected a model of at most 2\^31 parameters/);
model("heads not dividing hidden", { hidden_size: 30 }, /config\.num_attention_heads: expected a divisor of hidden_size 30, got 4/);
model(
  "kv heads not dividing heads",
  { num_key_value_heads: 3 },
  /config\.num_key_value_heads: expected a divisor of num_attention_heads 4, got 3/,
);
model("odd head size", { hidden_size: 12 }, /config\.hidden_size: expected an even head size/);
model("rope_theta -1", { rope_theta: -1 }, /config\.rope_theta: expected a positive number, got -1/);
model("rms_norm_eps 0", { rms_norm_eps: 0 }, /config\.rms_norm_eps: expected a positive number, got 0/);
model("initializer_range a string", { initializer_range: "0.02" }, /config\.initializer_range: expected a positive number, got "0.02"/);
model("tie_word_embeddings 1", { tie_word_embeddings: 1 }, /config\.tie_word_embeddings: expected true or false, got 1/);
model("layer_attention too short", { layer_attention: ["moba"] }, /config\.layer_attention: expected a list of 2 entries/);
model(
  "layer_attention sparse",
  { layer_attention: ["moba", "sparse"] },
  /config\.layer_attention\[1\]: expected "moba" or "full", got "sparse"/,
);
model(
  "full_attention_last_layers 3 of 2",
  { full_attention_last_layers: 3 },
  /config\.full_attention_last_layers: expected an integer from 0 to 2, got 3/,
);

// moba train --resume: a different model or data, a spoiled state
const resume = (name: string, extra: string[], pattern: RegExp) =>
  add(`train --resume ${name}`, () => ["train", "--config", tinyConfig, "--out", run, "--resume", ...extra], pattern);
const resumeWith = (name: string, fields: Record<string, unknown>, pattern: RegExp) => {
  const path = config(`resume-${cases.length}.json`, { ...tiny, ...fields });
  add(`train --resume with ${name}`, () => ["train", "--config", path, "--out", run, "--resume"], pattern);
};
resumeWith(
  "1 layer of 2 (ran layer 1 as full attention before)",
  { model: { ...TINY, num_hidden_layers: 1, layer_attention: undefined } },
  /cannot resume with config\.num_hidden_layers 1: the checkpoint has 2/,
);
resumeWith(
  "another hidden size (ignored before)",
  { model: { ...TINY, hidden_size: 32 } },
  /cannot resume with config\.hidden_size 32: the checkpoint has 16/,
);
resumeWith(
  "another block size",
  { model: { ...TINY, moba_chunk_size: 16 } },
  /cannot resume with config\.moba_chunk_size 16: the checkpoint has 8/,
);
resumeWith(
  "another attention",
  { model: { ...TINY, full_attention_last_layers: 1 } },
  /cannot resume with the layers' attention \["moba","full"\]: the checkpoint has \["moba","moba"\]/,
);
resumeWith("another context length", { contextLength: 64 }, /cannot resume with train\.contextLength 64: the checkpoint has 32/);
resumeWith("another batch", { batchRows: 2 }, /cannot resume with train\.batchRows 2: the checkpoint has 1/);
resumeWith("another seed", { seed: 9 }, /cannot resume with train\.seed 9: the checkpoint has 1/);
resumeWith("other data", { data: "sotu" }, /cannot resume with train\.data "sotu": the checkpoint has ".*corpus"/);
resumeWith("other stages", { stages: [{ start: 0.5, attention: "full" }] }, /cannot resume with train\.stages/);
resumeWith("another weight decay", { weightDecay: 0 }, /cannot resume with train\.weightDecay 0: the checkpoint has 0.1/);
resume("--attention full", ["--attention", "full"], /cannot resume with train\.attention "full": the checkpoint has null/);
resume("--context-length 16", ["--context-length", "16"], /cannot resume with train\.contextLength 16/);
const resumeSpoiled = (name: string, edit: (h: Record<string, unknown>, d: Uint8Array) => void, pattern: RegExp) => {
  const folder = `spoiled-run-${cases.length}`;
  // --steps 3: the run has a step left to take, so a bad data position would be used (a hang, a TypeError) if it were not refused
  add(
    `train --resume from ${name}`,
    () => ["train", "--config", tinyConfig, "--out", spoiledRun(folder, edit), "--resume", "--steps", "3"],
    pattern,
  );
};
resumeSpoiled(
  "an unparsable training_state",
  (h) => (meta(h).training_state = "{step: 1"),
  /metadata training_state: expected JSON, got "\{step: 1"/,
);
resumeSpoiled("a training_state list", (h) => (meta(h).training_state = "[]"), /metadata training_state: expected an object, got \[\]/);
resumeSpoiled(
  "a weights-only checkpoint",
  (h) => {
    delete meta(h).training_state;
  },
  /expected a training checkpoint \(weights, moments and state\), got weights only/,
);
resumeSpoiled("a negative step", (h) => withState(h, (s) => (s.step = -1)), /training_state\.step: expected an integer >= 0, got -1/);
resumeSpoiled(
  "an rng of 3 words",
  (h) => withState(h, (s) => (s.rng = [1, 2, 3])),
  /training_state\.rng: expected 4 unsigned 32-bit integers, got \[1,2,3\]/,
);
resumeSpoiled("options a string", (h) => withState(h, (s) => (s.options = "x")), /training_state\.options: expected an object, got "x"/);
resumeSpoiled(
  "a document past the data (the data shrank: a TypeError before)",
  (h) => withState(h, (s) => (s.data.doc = 99)),
  /data position .*: doc: expected an index below the 5 documents, got 99 \(has the data changed since the checkpoint\?\)/,
);
resumeSpoiled(
  "an offset past the document (the documents were shortened: a hang before)",
  (h) => withState(h, (s) => (s.data.offset = 100000)),
  /data position .*: offset: expected a byte offset below the document's \d+ bytes, got 100000/,
);
resumeSpoiled(
  "a negative offset",
  (h) => withState(h, (s) => (s.data.offset = -5)),
  /offset: expected a byte offset below the document's \d+ bytes, got -5/,
);
resumeSpoiled(
  "a data rng of strings",
  (h) => withState(h, (s) => (s.data.rng = ["a", "b", "c", "d"])),
  /data position .*: rng: expected null or 4 unsigned 32-bit integers/,
);
resumeSpoiled(
  "an Infinity moment",
  (h, d) => {
    const [begin] = range(h, "optimizer.exp_avg_sq.model.norm.weight");
    new DataView(d.buffer, d.byteOffset).setFloat32(begin, Infinity, true);
    delete meta(h).sha256; // a file without checksums (as written before them): the finite check still holds
  },
  /tensor optimizer\.exp_avg_sq\.model\.norm\.weight: expected finite values, got Infinity at element 0/,
);

// moba generate
const generate =
  (...extra: string[]) =>
  () => ["generate", "--checkpoint", checkpoint, ...extra];
add(
  "generate without --checkpoint",
  () => ["generate"],
  /--checkpoint or --model: expected a checkpoint file or a model directory, got nothing/,
);
add(
  "generate --checkpoint missing (printed the prompt before)",
  () => ["generate", "--checkpoint", at("nope.safetensors")],
  /nope\.safetensors: cannot read \(ENOENT\)/,
);
add("generate --checkpoint a folder", () => ["generate", "--checkpoint", corpus], /corpus: cannot read \(EISDIR\)/);
add(
  "generate --checkpoint not a checkpoint",
  () => ["generate", "--checkpoint", input],
  /expected a moba checkpoint \(metadata format "moba-checkpoint-1"\), got undefined/,
);
for (const value of ["0", "-5", "abc", "1e8", "2.5"])
  add(
    `generate --tokens ${value}`,
    generate("--tokens", value),
    new RegExp(`--tokens: expected a positive integer, got "${value.replace(".", "\\.")}"`),
  );
add(
  "generate --tokens 100000000 (an allocation crash before)",
  generate("--tokens", "100000000"),
  /--tokens: expected at most 8188 \(max_position_embeddings 8192 less the 4-token prompt\), got 100000000/,
);
add("generate --tokens past max_position_embeddings", generate("--tokens", "8189"), /--tokens: expected at most 8188/);
add(
  "generate --prompt past max_position_embeddings",
  generate("--prompt", "x".repeat(8192)),
  /--tokens: expected at most 0 \(max_position_embeddings 8192 less the 8192-token prompt\)/,
);
add("generate --prompt empty", generate("--prompt", ""), /--prompt: expected at least one token, got ""/);
for (const value of ["-1 (ambiguous before)", "abc", "Infinity", ""]) {
  const v = value.split(" ")[0];
  add(`generate --temperature ${value}`, generate("--temperature", v), /--temperature: expected a number in \[0, Infinity\]/);
}
for (const value of ["2", "-0.1", "x"])
  add(`generate --top-p ${value}`, generate("--top-p", value), new RegExp(`--top-p: expected a number in \\[0, 1\\], got "${value}"`));
add("generate --seed -1", generate("--seed", "-1"), /--seed: expected a positive integer, got "-1"/);
add("generate --backend tpu", generate("--backend", "tpu"), /--backend: expected "auto", "cpu" or "webgpu", got "tpu"/);

// checkpoints, spoiled, read by generate
const spoil = (name: string, edit: (h: Record<string, unknown>, d: Uint8Array) => void, pattern: RegExp) => {
  const path = `spoiled-${cases.length}.safetensors`;
  add(`checkpoint: ${name}`, () => ["generate", "--checkpoint", spoiled(path, edit), "--tokens", "4"], pattern);
};
const setWeight =
  (name: string, value: number, element = 0) =>
  (h: Record<string, unknown>, d: Uint8Array) =>
    new DataView(d.buffer, d.byteOffset).setFloat32(range(h, name)[0] + 4 * element, value, true);
spoil(
  "one flipped bit in a weight",
  (h, d) => (d[range(h, "model.layers.1.mlp.down_proj.weight")[0] + 17] ^= 4),
  /tensor model\.layers\.1\.mlp\.down_proj\.weight: its bytes do not match their SHA-256/,
);
spoil(
  "a zeroed tensor (loaded silently before)",
  (h, d) => d.fill(0, ...range(h, "model.embed_tokens.weight")),
  /tensor model\.embed_tokens\.weight: its bytes do not match their SHA-256/,
);
spoil(
  "a zeroed moment",
  (h, d) => d.fill(0, ...range(h, "optimizer.exp_avg.lm_head.weight")),
  /tensor optimizer\.exp_avg\.lm_head\.weight: its bytes do not match/,
);
spoil(
  "a NaN weight without checksums (printed NUL bytes before)",
  (h, d) => {
    setWeight("model.norm.weight", NaN, 3)(h, d);
    delete meta(h).sha256;
  },
  /tensor model\.norm\.weight: expected finite values, got NaN at element 3/,
);
spoil(
  "an Infinity weight without checksums",
  (h, d) => {
    setWeight("lm_head.weight", -Infinity, 7)(h, d);
    delete meta(h).sha256;
  },
  /tensor lm_head\.weight: expected finite values, got -Infinity at element 7/,
);
spoil(
  "a huge output layer without checksums",
  (h, d) => {
    for (let i = 0; i < 16 * 256; i++) setWeight("lm_head.weight", 3e38 * (i % 2 ? 1 : -1), i)(h, d);
    delete meta(h).sha256;
  },
  /model: expected finite logits, got -?(Infinity|NaN)/,
);
spoil(
  "a checksum missing",
  (h) => {
    const c = JSON.parse(meta(h).sha256) as Record<string, string>;
    delete c["model.norm.weight"];
    meta(h).sha256 = JSON.stringify(c);
  },
  /tensor model\.norm\.weight: no checksum in metadata sha256/,
);
spoil("checksums not JSON", (h) => (meta(h).sha256 = "abc"), /metadata sha256: expected JSON, got "abc"/);
spoil("checksums a number", (h) => (meta(h).sha256 = "7"), /metadata sha256: expected an object of checksums, got 7/);
spoil(
  "another format",
  (h) => (meta(h).format = "moba-checkpoint-0"),
  /expected a moba checkpoint \(metadata format "moba-checkpoint-1"\), got "moba-checkpoint-0"/,
);
spoil(
  "no config",
  (h) => {
    delete meta(h).config;
  },
  /metadata config: expected the model's config, got nothing/,
);
spoil("config not JSON", (h) => (meta(h).config = "{hidden"), /metadata config: expected JSON, got "\{hidden"/);
spoil("config null", (h) => (meta(h).config = "null"), /bad model config in metadata \(config: expected an object, got null\)/);
spoil(
  "config with another hidden size",
  (h) => (meta(h).config = JSON.stringify({ ...JSON.parse(meta(h).config), hidden_size: 32 })),
  /tensor model\.embed_tokens\.weight: expected shape \[256,32\], got \[256,16\]/,
);
spoil(
  "config with 1e6 hidden",
  (h) => (meta(h).config = JSON.stringify({ ...JSON.parse(meta(h).config), hidden_size: 1e6 })),
  /bad model config in metadata \(config\.hidden_size: expected a model of at most 2\^31 parameters/,
);
spoil(
  "optimizer_step not a number",
  (h) => (meta(h).optimizer_step = "seven"),
  /metadata optimizer_step: expected an integer >= 0, got "seven"/,
);
spoil(
  "a tensor renamed",
  (h) => {
    (h as Record<string, unknown>)["model.norm.weight2"] = h["model.norm.weight"];
    delete h["model.norm.weight"];
  },
  /missing tensor model\.norm\.weight/,
);
spoil(
  "a tensor reshaped",
  (h) => {
    (h as Header)["model.norm.weight"].shape = [4, 4];
  },
  /tensor model\.norm\.weight: expected shape \[16\], got \[4,4\]/,
);
spoil(
  "a tensor as F16",
  (h) => {
    (h as Header)["model.norm.weight"].dtype = "F16";
  },
  /tensor "model\.norm\.weight": shape \[16\] of F16 needs 32 bytes, data_offsets give 64/,
);
add(
  "checkpoint: truncated",
  () => {
    writeFileSync(at("truncated.safetensors"), readFileSync(checkpoint).subarray(0, 5000));
    return ["generate", "--checkpoint", at("truncated.safetensors")];
  },
  /truncated\.safetensors: header length \d+ exceeds the 4992 bytes after it \(truncated file\?\)/,
);
add(
  "checkpoint: its last 100 bytes cut",
  () => {
    const whole = readFileSync(checkpoint);
    writeFileSync(at("cut.safetensors"), whole.subarray(0, whole.length - 100));
    return ["generate", "--checkpoint", at("cut.safetensors")];
  },
  /cut\.safetensors: tensor ".*": data_offsets .* out of range of the \d+-byte buffer \(truncated file\?\)/,
);

// moba eval
const evaluate =
  (...extra: string[]) =>
  () => ["eval", "--checkpoint", checkpoint, "--data", corpus, "--backend", "cpu", ...extra];
add("eval without --checkpoint", () => ["eval"], /--checkpoint or --model: expected a checkpoint file or a model directory, got nothing/);
add("eval --checkpoint missing", () => ["eval", "--checkpoint", at("nope.safetensors")], /nope\.safetensors: cannot read \(ENOENT\)/);
for (const flag of ["context-length", "rows", "buckets", "trailing", "passkey-trials"]) {
  for (const value of ["0", "x"])
    add(`eval --${flag} ${value}`, evaluate(`--${flag}`, value), new RegExp(`--${flag}: expected a positive integer, got "${value}"`));
}
add(
  "eval --context-length past max_position_embeddings",
  evaluate("--context-length", "10000"),
  /--context-length: expected at most the checkpoint's max_position_embeddings 8192, got 10000/,
);
add(
  "eval --passkey-lengths past max_position_embeddings",
  evaluate("--context-length", "64", "--passkey-lengths", "128,9000"),
  /--passkey-lengths: expected at most the checkpoint's max_position_embeddings 8192, got 9000/,
);
add("eval --passkey-lengths 1,x", evaluate("--passkey-lengths", "1,x"), /--passkey-lengths: expected a positive integer, got "x"/);
add(
  "eval --passkey-depths 101",
  evaluate("--passkey-lengths", "128", "--passkey-depths", "0,101"),
  /--passkey-depths: expected a number in \[0, 100\], got "101"/,
);
add(
  "eval --passkey-depths -1",
  evaluate("--passkey-lengths", "128", "--passkey-depths", "-1"),
  /--passkey-depths: expected a number in \[0, 100\], got "-1"/,
);
add("eval --attention sparse", evaluate("--attention", "sparse"), /--attention: expected "moba" or "full", got "sparse"/);
add(
  "eval --data missing",
  evaluate("--data", at("none")),
  /--data: expected "sotu", "gutenberg", "sotu\+gutenberg" or a file or folder of text files, got ".*none" \(not found\)/,
);
add("eval --backend tpu", evaluate("--backend", "tpu"), /--backend: expected "auto", "cpu" or "webgpu", got "tpu"/);
add("eval --svg in a missing folder", evaluate("--svg", at("nowhere", "plot")), /--svg: expected a file in an existing folder/);
add(
  "eval --svg onto a symlink",
  () => (symlinkSync(existing, at("plot-position.svg")), ["eval", "--checkpoint", checkpoint, "--data", corpus, "--svg", at("plot")]),
  /--svg: expected a regular file to write, got .*plot-position\.svg" \(a symbolic link; not replaced\)/,
);

// Hugging Face models: moba export, generate / eval --model, train --init
const hf = fileURLToPath(new URL("fixtures/hf/gqa-untied-f32", import.meta.url));
const gpt2 = at("gpt2");
mkdirSync(gpt2);
writeFileSync(join(gpt2, "config.json"), JSON.stringify({ model_type: "gpt2", vocab_size: 100, n_embd: 16, n_layer: 2, n_head: 2 }));
const short = config("short.txt", "Fellow-Citizens of the Senate");
add("export without --checkpoint", () => ["export", "--out", at("exported")], /--checkpoint: expected a checkpoint file, got nothing/);
add("export without --out", () => ["export", "--checkpoint", checkpoint], /--out: expected a folder to write, got nothing/);
add(
  "export --checkpoint missing",
  () => ["export", "--checkpoint", at("nope.safetensors"), "--out", at("exported")],
  /nope\.safetensors: cannot read \(ENOENT\)/,
);
add(
  "export --out an existing file",
  () => ["export", "--checkpoint", checkpoint, "--out", existing],
  /existing\.safetensors: cannot create the folder/,
);
add(
  "eval --model a missing folder",
  () => ["eval", "--model", at("none"), "--text", short],
  /none: no config\.json \(expected a Hugging Face model directory\)/,
);
add("eval --model without --text", () => ["eval", "--model", hf], /--text: expected a text file to score, got nothing/);
add("eval --model --text missing", () => ["eval", "--model", hf, "--text", at("none.txt")], /--text: cannot read ".*none\.txt" \(ENOENT\)/);
add(
  "eval --model --rows (a --checkpoint option)",
  () => ["eval", "--model", hf, "--text", short, "--rows", "2"],
  /--rows: expected only with --checkpoint/,
);
add(
  "eval --model and --checkpoint",
  () => ["eval", "--model", hf, "--checkpoint", checkpoint],
  /--checkpoint and --model: expected one of them, got both/,
);
add(
  "eval --model --context-length past max_position_embeddings",
  () => ["eval", "--model", hf, "--text", short, "--context-length", "129"],
  /--context-length: expected at most the model's max_position_embeddings 128, got 129/,
);
add(
  "generate --model with a non-Llama config",
  () => ["generate", "--model", gpt2],
  /config\.json: model_type "gpt2" is not a Llama \(expected "llama" or "mistral"/,
);
add(
  "generate --model --tokens past max_position_embeddings",
  () => ["generate", "--model", hf, "--prompt", "The ", "--tokens", "200"],
  /--tokens: expected at most \d+ \(max_position_embeddings 128 less the \d+-token prompt\), got 200/,
);
add(
  "generate --model --attention hybrid-last-9",
  () => ["generate", "--model", hf, "--attention", "hybrid-last-9"],
  /--attention: expected "moba", "full" or "hybrid-last-N" with N from 0 to 2, got "hybrid-last-9"/,
);
add(
  "generate --checkpoint --top-k (a --model option)",
  generate("--top-k", "3"),
  /--top-k: expected only with --model, got it with --checkpoint/,
);
add("train --init a missing folder", train("--init", at("none")), /none: no config\.json \(expected a Hugging Face model directory\)/);
add(
  "train --init with a model field that changes the weights' shapes",
  () => ["train", "--init", hf, "--config", config("init-wider.json", { ...tiny, model: { hidden_size: 64 } }), "--out", at("init-run")],
  /config\.hidden_size: expected 48 \(the init model's; its weights have that shape\), got 64/,
);
add(
  "train --init with passkeyShare",
  () => [
    "train",
    "--init",
    hf,
    "--config",
    config("init-passkey.json", { ...tiny, model: {}, passkeyShare: 0.5 }),
    "--out",
    at("init-run"),
  ],
  /train\.passkeyShare: expected 0 with init/,
);

// the other commands
for (const [flag, value] of [
  ["tokens", "0"],
  ["heads", "abc"],
  ["kv-heads", "-2"],
  ["head-dim", "1.5"],
  ["block-size", ""],
  ["top-k", "0"],
  ["seed", "x"],
] as const) {
  add(
    `demo --${flag} ${value}`,
    () => ["demo", `--${flag}`, value],
    new RegExp(`--${flag}: expected a positive integer, got "${value.replace(".", "\\.")}"`),
  );
}
add("bench --lengths 1,x", () => ["bench", "--lengths", "1,x"], /--lengths: expected a positive integer, got "x"/);
add("bench --runs 0", () => ["bench", "--runs", "0"], /--runs: expected a positive integer, got "0"/);
add("bench --backend tpu", () => ["bench", "--backend", "tpu"], /--backend: expected "cpu" or "webgpu", got "tpu"/);
add(
  "bench --svg in a missing folder",
  () => ["bench", "--lengths", "64", "--runs", "1", "--svg", at("nowhere", "b.svg")],
  /--svg: expected a file in an existing folder/,
);
add("bench-train --hidden 0", () => ["bench-train", "--hidden", "0"], /--hidden: expected a positive integer, got "0"/);
add(
  "bench-train --decode-context -1",
  () => ["bench-train", "--decode-context", "-1"],
  /--decode-context: expected an integer >= 0, got "-1"/,
);
add("bench-train --lengths abc", () => ["bench-train", "--lengths", "abc"], /--lengths: expected a positive integer, got "abc"/);
add("experiment without a name", () => ["experiment"], /experiment: expected a name/);
add("experiment nonesuch", () => ["experiment", "nonesuch"], /experiment: expected the name of a config in experiments\//);
add("tour --steps 0", () => ["tour", "--steps", "0", "--out", at("tour")], /--steps: expected a positive integer, got "0"/);

test("the run the cases resume and spoil trains", async () => {
  const r = await moba("train", "--config", tinyConfig, "--out", run);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(statSync(checkpoint).size > 0);
});

test(
  `bad input: ${cases.length} cases, each exit code 2, one line naming the argument, no stack trace, no file written or changed`,
  { timeout: 120_000 },
  async () => {
    assert.ok(cases.length >= 150, `${cases.length} cases`);
    assert.equal(new Set(cases.map(([name]) => name)).size, cases.length, "distinct names");
    const failures: string[] = [];
    for (const [name, args, pattern] of cases) {
      const argv = args(); // may create the input it spoils
      const before = snapshot();
      const r = await moba(...argv);
      const after = snapshot();
      const lines = r.stderr.trimEnd().split("\n");
      const problems = [
        r.status !== 2 && `exit code ${r.status}`,
        lines.length !== 1 && `${lines.length} lines on stderr`,
        !/^moba: error: /.test(lines.at(-1) ?? "") && "no 'moba: error:' line",
        !pattern.test(r.stderr) && `not ${pattern}`,
        /\n\s+at /.test(r.stderr) && "a stack trace",
        r.stdout !== "" && `stdout ${JSON.stringify(r.stdout.slice(0, 80))}`,
        [...after].some(([path, hash]) => before.get(path) !== hash) &&
          `files written or changed: ${[...after]
            .filter(([p, h]) => before.get(p) !== h)
            .map(([p]) => p)
            .join(", ")}`,
        [...before.keys()].some((path) => !after.has(path)) && "a file removed",
      ].filter(Boolean);
      if (problems.length > 0) failures.push(`${name}: ${problems.join("; ")}\n    stderr: ${r.stderr.slice(0, 300)}`);
    }
    console.log(`bad-input cases: ${cases.length}, failed: ${failures.length}`);
    assert.deepEqual(failures, []);
  },
);

// ---- the command line's conventions, and the failures that print more than one line ----

test("help is exit 0 on stdout (moba, moba --help, moba CMD --help); moba --version; usage errors exit 2 on stderr", async () => {
  for (const args of [[], ["--help"], ["help"], ["-h"]]) {
    const r = await moba(...args);
    assert.deepEqual([r.status, r.stderr], [0, ""], args.join(" "));
    assert.match(r.stdout, /^Usage: moba <command>/m);
    // the columns line up: every summary starts where the first does
    const starts = r.stdout
      .split("\n")
      .filter((l) => /^ {2}[a-z-]+ {2,}\S/.test(l))
      .map((l) => l.search(/(?<=^ {2}[a-z-]+ {2,})\S/));
    assert.equal(new Set(starts).size, 1, `summary columns ${starts}`);
  }
  for (const command of ["attention", "train", "generate", "eval", "experiment", "bench-train", "tour", "demo", "bench"]) {
    const r = await moba(command, "--help");
    assert.deepEqual([r.status, r.stderr], [0, ""], command);
    assert.match(r.stdout, new RegExp(`^moba ${command}`));
  }
  const version = await moba("--version");
  assert.deepEqual(
    [version.status, version.stdout],
    [0, `moba ${(JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }).version}\n`],
  );
});

test("negative numbers parse as values (--temperature -1 is a range error, not an ambiguous option); --temperature -0 works", async () => {
  const r = await moba("generate", "--checkpoint", checkpoint, "--temperature", "-0", "--tokens", "3", "--prompt", "ab");
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^ab[^]{0,12}\n$/);
});

test("generate: the text alone on stdout (prompt, bytes, newline), the timing on stderr", async () => {
  const r = await moba("generate", "--checkpoint", checkpoint, "--tokens", "5", "--prompt", "Hi", "--temperature", "0");
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^Hi[^]+\n$/);
  assert.doesNotMatch(r.stdout, /tokens in/);
  assert.match(r.stderr, /^\(5 tokens in \d+\.\d\d s\)\n$/);
});

test("train refuses an existing checkpoint, --overwrite starts over, and the tour replaces its own (npm start twice works)", async () => {
  const out = at("clobber");
  assert.equal((await moba("train", "--config", tinyConfig, "--out", out)).status, 0);
  const first = readFileSync(join(out, "checkpoint.safetensors"));
  const refused = await moba("train", "--config", tinyConfig, "--out", out, "--seed", "2");
  assert.equal(refused.status, 2);
  assert.deepEqual(readFileSync(join(out, "checkpoint.safetensors")), first, "untouched");
  const again = await moba("train", "--config", tinyConfig, "--out", out, "--seed", "2", "--overwrite");
  assert.equal(again.status, 0, again.stderr);
  assert.notDeepEqual(readFileSync(join(out, "checkpoint.safetensors")), first, "replaced");
  const tour = at("tour-twice");
  for (const round of [1, 2]) {
    const r = await moba("tour", "--config", tinyConfig, "--out", tour);
    assert.equal(r.status, 0, `round ${round}: ${r.stderr}`);
    assert.equal(/replacing the previous tour's checkpoint/.test(r.stdout), round === 2, r.stdout);
  }
});

test("a diverging run (learning rate 1e30) fails naming the learning rate, and keeps its last good checkpoint", async () => {
  const out = at("diverge");
  assert.equal((await moba("train", "--config", tinyConfig, "--out", out, "--steps", "1")).status, 0);
  const good = readFileSync(join(out, "checkpoint.safetensors"));
  const r = await moba("train", "--config", tinyConfig, "--out", out, "--resume", "--steps", "2", "--lr", "1e30");
  assert.equal(r.status, 2);
  assert.match(
    r.stderr.trimEnd().split("\n").at(-1)!,
    /^moba: error: train\.learningRate: the run diverged at step 2 \(.*\); lower the learning rate \(1e\+30\)/,
  );
  assert.deepEqual(readFileSync(join(out, "checkpoint.safetensors")), good, "the last good checkpoint kept");
  assert.deepEqual(
    readdirSync(out).filter((f) => f.includes(".tmp-")),
    [],
  );
});

test("resume accepts its own options restated (both ways of naming the attention) and changes to steps and the learning rate", async () => {
  const out = at("restated");
  const both = config("both.json", { ...tiny, model: { ...TINY, layer_attention: ["moba", "full"], full_attention_last_layers: 0 } });
  assert.equal((await moba("train", "--config", both, "--out", out, "--steps", "1")).status, 0);
  const r = await moba("train", "--config", both, "--out", out, "--resume", "--steps", "2", "--lr", "0.002");
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /resumed .* at step 1/);
  assert.match(r.stderr, /layers \[moba, full\]/, "the checkpoint's model");
});
