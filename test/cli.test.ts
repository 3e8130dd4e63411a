// The CLI on safetensors files: round trips in every dtype, and one clear error per bad input.
import assert from "node:assert/strict";
import { getDevice } from "../src/webgpu/device.js";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Dtype, parseSafetensors, serializeSafetensors, type TensorToWrite, toFloat32 } from "../src/io/safetensors.js";
import { bf16ToFloat, f16ToFloat, floatToBf16, floatToF16, roundToF16 } from "../src/io/half.js";
import { referenceBackward, referenceForward } from "../src/reference/attention.js";
import { makeCase, relativeError, rng, webgpuSkip } from "./helpers.js";

const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));
const dir = mkdtempSync(join(tmpdir(), "moba-cli-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function moba(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ["--import", "tsx", main, ...args], { encoding: "utf8" });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function write(name: string, tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): string {
  const path = join(dir, name);
  writeFileSync(path, serializeSafetensors(tensors, metadata));
  return path;
}

const c = makeCase(21, { cuSeqlens: [0, 37, 37, 90], qHeads: 4, kvHeads: 2, headDim: 8, blockSize: 10, topK: 3 });
const roundTo = (dtype: Dtype, data: Float32Array): Float32Array =>
  dtype === "F16" ? data.map((x) => f16ToFloat(floatToF16(x))) : dtype === "BF16" ? data.map((x) => bf16ToFloat(floatToBf16(x))) : data;

for (const dtype of ["F64", "F32", "F16", "BF16"] as const) {
  for (const cuDtype of ["I32", "I64"] as const) {
    test(`moba attention round trip: ${dtype} inputs, ${cuDtype} cu_seqlens, with dout`, () => {
      const t = (x: Float32Array, shape: readonly number[]): TensorToWrite => ({ dtype, shape, data: x });
      const input = write(
        `in-${dtype}-${cuDtype}.safetensors`,
        {
          q: t(c.q.data, c.q.shape),
          k: t(c.k.data, c.k.shape),
          v: t(c.v.data, c.v.shape),
          dout: t(c.dout.data, c.dout.shape),
          cu_seqlens: { dtype: cuDtype, shape: [4], data: c.cuSeqlens },
        },
        { note: "made by the test" },
      );
      const output = join(dir, `out-${dtype}-${cuDtype}.safetensors`);
      const r = moba("attention", "--input", input, "--output", output, "--block-size", "10", "--top-k", "3");
      assert.equal(r.status, 0, r.stderr);
      const file = parseSafetensors(readFileSync(output));
      assert.deepEqual([...file.tensors.keys()].sort(), ["dk", "dq", "dv", "lse", "out"]);
      assert.equal(file.metadata.block_size, "10");
      // the reference on the same (rounded) values
      const [q, k, v, dout] = [c.q, c.k, c.v, c.dout].map((x) => roundTo(dtype, x.data));
      const p = { tokens: c.tokens, qHeads: 4, kvHeads: 2, headDim: 8, cuSeqlens: c.cuSeqlens, blockSize: 10, topK: 3, scale: c.scale };
      const ref = { ...referenceForward(p, q, k, v), ...referenceBackward(p, q, k, v, dout) };
      for (const name of ["out", "lse", "dq", "dk", "dv"] as const) {
        const got = file.tensors.get(name)!;
        assert.equal(got.dtype, "F32");
        assert.deepEqual(got.shape, name === "lse" ? [c.tokens, 4] : name === "dk" || name === "dv" ? [c.tokens, 2, 8] : [c.tokens, 4, 8]);
        const error = relativeError(toFloat32(got, name), ref[name]);
        assert.ok(error <= 1e-5, `${name}: ${error}`);
      }
    });
  }
}

test("moba attention --full without dout writes out and lse only", () => {
  const input = write("full.safetensors", {
    q: { dtype: "F32", shape: c.q.shape, data: c.q.data },
    k: { dtype: "F32", shape: c.k.shape, data: c.k.data },
    v: { dtype: "F32", shape: c.v.shape, data: c.v.data },
  });
  const output = join(dir, "full-out.safetensors");
  const r = moba("attention", "--input", input, "--output", output, "--full", "--scale", "0.25");
  assert.equal(r.status, 0, r.stderr);
  const file = parseSafetensors(readFileSync(output));
  assert.deepEqual([...file.tensors.keys()], ["out", "lse"]);
  const p = { tokens: c.tokens, qHeads: 4, kvHeads: 2, headDim: 8, cuSeqlens: [0, c.tokens], blockSize: 1, topK: Infinity, scale: 0.25 };
  assert.ok(relativeError(toFloat32(file.tensors.get("out")!, "out"), referenceForward(p, c.q.data, c.k.data, c.v.data).out) <= 1e-5);
});

test("f16 and bf16 conversions round to nearest even and keep special values", () => {
  assert.equal(floatToF16(1), 0x3c00);
  assert.equal(floatToF16(65504), 0x7bff);
  assert.equal(floatToF16(65520), 0x7c00); // rounds up to Inf
  assert.equal(floatToF16(2 ** -24), 0x0001);
  assert.equal(floatToF16(1 + 2 ** -11), 0x3c00); // tie to even
  assert.equal(floatToF16(1 + 3 * 2 ** -11), 0x3c02);
  assert.equal(f16ToFloat(0xc000), -2);
  assert.ok(Number.isNaN(f16ToFloat(floatToF16(NaN))));
  assert.equal(floatToBf16(1 + 2 ** -8), 0x3f80); // tie to even
  assert.equal(bf16ToFloat(floatToBf16(-3.5)), -3.5);
  for (let h = 0; h < 0x7c00; h += 7) assert.equal(floatToF16(f16ToFloat(h)), h);
});

test("roundToF16 gives what a round trip through f16 bits gives, at every magnitude, ties and range edges included", () => {
  const random = rng(5);
  const values: number[] = [
    0,
    -0,
    1,
    -1,
    65504,
    -65504,
    65519,
    32767.99,
    32768,
    2 ** -14,
    2 ** -14 * (1 - 2 ** -12),
    2 ** -24,
    2 ** -25,
    1e-30,
    1 + 2 ** -11,
    1 + 3 * 2 ** -11,
    -(1 + 2 ** -11),
    2 ** 15 - 2 ** -9,
    Infinity,
    -Infinity,
    NaN,
  ];
  for (let e = -30; e <= 17; e++) for (let i = 0; i < 200; i++) values.push((random() * 2 - 1) * 2 ** e);
  for (let h = 0; h < 0x7c00; h += 3) values.push(f16ToFloat(h) * (1 + 2 ** -11), f16ToFloat(h) + 2 ** -25); // near ties
  const x = Float32Array.from(values);
  const got = roundToF16(x);
  x.forEach((value, i) => assert.ok(Object.is(got[i], Math.fround(f16ToFloat(floatToF16(value)))), `${value}: ${got[i]}`));
});

// ---- bad input: exit code 2, one line naming what is wrong, no output file left behind ----

const good = {
  q: { dtype: "F32", shape: [6, 2, 4], data: new Float32Array(48).fill(0.5) },
  k: { dtype: "F32", shape: [6, 1, 4], data: new Float32Array(24).fill(0.25) },
  v: { dtype: "F32", shape: [6, 1, 4], data: new Float32Array(24).fill(1) },
} satisfies Record<string, TensorToWrite>;

function expectError(name: string, args: string[] | ((output: string) => string[]), pattern: RegExp): void {
  test(`bad input is one clear error: ${name}`, () => {
    const output = join(dir, `never-${name.replace(/\W+/g, "-")}.safetensors`);
    const r = moba(...(typeof args === "function" ? args(output) : args));
    assert.equal(r.status, 2, `exit status (stderr: ${r.stderr})`);
    assert.equal(r.stderr.trim().split("\n").length, 1, `one line: ${r.stderr}`);
    assert.match(r.stderr, /^moba: error: /);
    assert.match(r.stderr, pattern);
    assert.ok(!existsSync(output), "no output file");
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes(".tmp-")),
      [],
      "no temporary file",
    );
  });
}

function withInput(name: string, tensors: Record<string, TensorToWrite>, extra: string[], pattern: RegExp): void {
  const input = write(`bad-${name.replace(/\W+/g, "-")}.safetensors`, tensors);
  expectError(name, (output) => ["attention", "--input", input, "--output", output, ...extra], pattern);
}

function rawFile(name: string, bytes: Uint8Array, pattern: RegExp): void {
  const input = join(dir, `raw-${name.replace(/\W+/g, "-")}.safetensors`);
  writeFileSync(input, bytes);
  expectError(name, (output) => ["attention", "--input", input, "--output", output], pattern);
}

function headerFile(header: object, bufferBytes: number): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(header));
  const file = new Uint8Array(8 + json.length + bufferBytes);
  new DataView(file.buffer).setBigUint64(0, BigInt(json.length), true);
  file.set(json, 8);
  return file;
}

withInput(
  "headDim mismatch",
  {
    ...good,
    k: { dtype: "F32", shape: [6, 1, 3], data: new Float32Array(18) },
    v: { dtype: "F32", shape: [6, 1, 3], data: new Float32Array(18) },
  },
  [],
  /k: expected headDim 4 \(as q\), got 3/,
);
withInput(
  "token count mismatch",
  { ...good, k: { dtype: "F32", shape: [5, 1, 4], data: new Float32Array(20) } },
  [],
  /k: expected 6 tokens \(as q\), got 5/,
);
withInput(
  "v shape differs from k",
  { ...good, v: { dtype: "F32", shape: [6, 2, 4], data: new Float32Array(48) } },
  [],
  /v: expected shape \[6, 1, 4\], got \[6, 2, 4\]/,
);
withInput(
  "q not 3-D",
  { ...good, q: { dtype: "F32", shape: [6, 8], data: new Float32Array(48) } },
  [],
  /q: expected shape \[tokens, heads, headDim\], got \[6, 8\]/,
);
withInput(
  "heads not divisible",
  {
    ...good,
    q: { dtype: "F32", shape: [6, 3, 4], data: new Float32Array(72) },
    k: { dtype: "F32", shape: [6, 2, 4], data: new Float32Array(48) },
    v: { dtype: "F32", shape: [6, 2, 4], data: new Float32Array(48) },
  },
  [],
  /qHeads \(3\) to be a multiple of kvHeads, got kvHeads 2/,
);
withInput(
  "cu_seqlens not starting at 0",
  { ...good, cu_seqlens: { dtype: "I32", shape: [3], data: [1, 3, 6] } },
  [],
  /cuSeqlens\[0\]: expected 0, got 1/,
);
withInput(
  "cu_seqlens not ending at tokens",
  { ...good, cu_seqlens: { dtype: "I32", shape: [3], data: [0, 3, 5] } },
  [],
  /cuSeqlens\[2\]: expected the number of tokens 6, got 5/,
);
withInput(
  "cu_seqlens decreasing",
  { ...good, cu_seqlens: { dtype: "I64", shape: [4], data: [0, 4, 2, 6] } },
  [],
  /cuSeqlens\[2\]: expected non-decreasing offsets \(>= 4\), got 2/,
);
withInput(
  "cu_seqlens not integers",
  { ...good, cu_seqlens: { dtype: "F32", shape: [2], data: [0, 6] } },
  [],
  /cu_seqlens.*expected an integer dtype \(I32, I64\), got F32/,
);
withInput(
  "NaN in q",
  { ...good, q: { dtype: "F32", shape: [6, 2, 4], data: new Float32Array(48).fill(NaN, 5, 6) } },
  [],
  /q: expected finite values, got NaN at element 5/,
);
withInput(
  "Inf in v",
  { ...good, v: { dtype: "F16", shape: [6, 1, 4], data: new Float32Array(24).fill(Infinity, 3, 4) } },
  [],
  /v: expected finite values, got Infinity at element 3/,
);
withInput(
  "NaN in dout",
  { ...good, dout: { dtype: "F32", shape: [6, 2, 4], data: new Float32Array(48).fill(NaN) } },
  [],
  /dout: expected finite values, got NaN at element 0/,
);
withInput(
  "dout shape",
  { ...good, dout: { dtype: "F32", shape: [6, 1, 4], data: new Float32Array(24) } },
  [],
  /dout: expected shape \[6, 2, 4\], got \[6, 1, 4\]/,
);
withInput("missing tensor", { q: good.q, k: good.k }, [], /missing tensor "v" \(found: q, k\)/);
withInput("block size zero", good, ["--block-size", "0"], /--block-size: expected a positive integer, got "0"/);
withInput("block size not an integer", good, ["--block-size", "2.5"], /--block-size: expected a positive integer, got "2.5"/);
withInput("top-k negative", good, ["--top-k=-1"], /--top-k: expected a positive integer, got "-1"/);
withInput("scale not a number", good, ["--scale", "abc"], /--scale: expected a finite number, got "abc"/);
withInput("unknown backend", good, ["--backend", "tpu"], /--backend: expected "cpu" or "webgpu", got "tpu"/);
withInput("unknown precision", good, ["--precision", "f8"], /--precision: expected "f32" or "f16", got "f8"/);
expectError(
  "unknown option",
  ["attention", "--bogus"],
  /unknown option --bogus for moba attention \(moba attention --help lists its options\)/,
);
expectError("missing --input", ["attention", "--output", "x"], /--input: expected a safetensors file path, got nothing/);
expectError(
  "input file missing",
  (o) => ["attention", "--input", join(dir, "nope.safetensors"), "--output", o],
  /nope\.safetensors: cannot read \(ENOENT\)/,
);
rawFile("truncated header length", new Uint8Array(5), /expected at least 8 bytes \(the header length\), got 5/);
rawFile("header longer than file", headerFile({}, 0).subarray(0, 9), /header length 2 exceeds the 1 bytes after it \(truncated file\?\)/);
rawFile(
  "header not JSON",
  (() => {
    const f = headerFile({}, 0);
    f[8] = 0x78;
    return f;
  })(),
  /header is not valid UTF-8 JSON/,
);
rawFile(
  "unknown dtype",
  headerFile({ q: { dtype: "F8_E4M3", shape: [1], data_offsets: [0, 1] } }, 1),
  /tensor "q": expected dtype F64, F32, F16, BF16, I64 or I32, got "F8_E4M3"/,
);
rawFile(
  "offsets out of range (truncated data)",
  headerFile({ q: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, 8),
  /tensor "q": data_offsets \[0, 16\] out of range of the 8-byte buffer/,
);
rawFile(
  "overlapping offsets",
  headerFile({ a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, 12),
  /tensor "b": data_offsets \[4, 12\] overlap the tensor before it/,
);
rawFile(
  "shape and byte length disagree",
  headerFile({ q: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, 8),
  /tensor "q": shape \[3\] of F32 needs 12 bytes, data_offsets give 8/,
);
rawFile(
  "hole in the buffer",
  headerFile({ q: { dtype: "F32", shape: [1], data_offsets: [4, 8] } }, 8),
  /bytes \[0, 4\) of the buffer belong to no tensor/,
);

test("a failed run keeps an existing output file untouched", () => {
  const output = join(dir, "keep.safetensors");
  writeFileSync(output, "previous result");
  const input = write("bad-keep.safetensors", { ...good, q: { dtype: "F32", shape: [6, 2, 4], data: new Float32Array(48).fill(NaN) } });
  const r = moba("attention", "--input", input, "--output", output);
  assert.equal(r.status, 2);
  assert.equal(readFileSync(output, "utf8"), "previous result");
});

test("moba --help lists the commands; each command has --help", () => {
  const r = moba("--help");
  assert.equal(r.status, 0);
  for (const name of ["attention", "demo", "bench"]) {
    assert.match(r.stdout, new RegExp(`^  ${name} `, "m"));
    const h = moba(name, "--help");
    assert.equal(h.status, 0);
    assert.match(h.stdout, new RegExp(`^moba ${name}`));
  }
});

test("moba demo runs on a small input and checks itself against the reference", () => {
  const r = moba("demo", "--tokens", "300", "--block-size", "32", "--heads", "2", "--kv-heads", "1", "--head-dim", "8");
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /✓ within 1e-5/);
  assert.match(r.stdout, /^MoBA +\d+/m);
  assert.equal(r.stdout.match(/│/g)?.length, 2 * Math.ceil(300 / 32));
});

test("moba attention --backend webgpu writes what the CPU backend writes", { skip: webgpuSkip }, () => {
  const t = (x: Float32Array, shape: readonly number[]): TensorToWrite => ({ dtype: "F32", shape, data: x });
  const input = write("webgpu-in.safetensors", {
    q: t(c.q.data, c.q.shape),
    k: t(c.k.data, c.k.shape),
    v: t(c.v.data, c.v.shape),
    dout: t(c.dout.data, c.dout.shape),
    cu_seqlens: { dtype: "I32", shape: [4], data: c.cuSeqlens },
  });
  const outputs = ["cpu", "webgpu"].map((backend) => {
    const output = join(dir, `webgpu-out-${backend}.safetensors`);
    const r = moba("attention", "--input", input, "--output", output, "--block-size", "10", "--top-k", "3", "--backend", backend);
    assert.equal(r.status, 0, r.stderr);
    return parseSafetensors(readFileSync(output));
  });
  assert.equal(outputs[1].metadata.backend, "webgpu");
  for (const name of ["out", "lse", "dq", "dk", "dv"]) {
    const error = relativeError(toFloat32(outputs[1].tensors.get(name)!, name), toFloat32(outputs[0].tensors.get(name)!, name));
    assert.ok(error <= 1e-5, `${name}: ${error}`);
  }
});

test(
  "moba bench --backend webgpu prints a row per length and precision, with GPU times, the ideal ratio and memory, and writes the plot",
  { skip: webgpuSkip },
  async () => {
    const timed = (await getDevice()).timestamps;
    const svg = join(dir, "bench-webgpu.svg");
    const r = moba(
      "bench",
      "--backend",
      "webgpu",
      "--lengths",
      "200,300",
      "--head-dim",
      "16",
      "--block-size",
      "32",
      "--top-k",
      "2",
      "--runs",
      "1",
      "--precision",
      "f32,f16",
      "--forward-only",
      "--svg",
      svg,
    );
    assert.equal(r.status, 0, r.stderr);
    const rows = r.stdout.split("\n").filter((line) => /^f(32|16) +[23]00 /.test(line));
    assert.equal(rows.length, 4, r.stdout);
    for (const row of rows) {
      const cells = row.trim().split(/ {2,}/);
      const gpuTime = timed ? /^\d+\.\d\d$/ : /^-$/;
      assert.match(cells[7], gpuTime, `MoBA GPU ms in ${row}`);
      assert.match(cells[8], gpuTime, `full GPU ms in ${row}`);
      assert.match(cells[9], timed ? /^\d+\.\d\dx$/ : /^-$/, `GPU speedup in ${row}`);
      assert.match(cells[10], /^\d+\.\d\d$/, `MoBA host ms in ${row}`);
      assert.match(cells[11], /^\d+\.\d\d$/, `full host ms in ${row}`);
      assert.deepEqual(cells.slice(12, 16), ["-", "-", "-", "-"], `no backward in ${row}`);
      assert.match(cells[16], /^\d+\.\d\dx$/, `ideal ratio in ${row}`);
      assert.match(cells[18], /^\d+\.\d$/, `MoBA MiB in ${row}`);
    }
    assert.match(readFileSync(svg, "utf8"), /^<svg/);
  },
);

test("moba attention --precision f16 computes on f16-rounded q, k, v and records the precision", () => {
  const t = (x: Float32Array, shape: readonly number[]): TensorToWrite => ({ dtype: "F32", shape, data: x });
  const input = write("f16-in.safetensors", {
    q: t(c.q.data, c.q.shape),
    k: t(c.k.data, c.k.shape),
    v: t(c.v.data, c.v.shape),
    cu_seqlens: { dtype: "I32", shape: [4], data: c.cuSeqlens },
  });
  const output = join(dir, "f16-out.safetensors");
  const r = moba("attention", "--input", input, "--output", output, "--block-size", "10", "--top-k", "3", "--precision", "f16");
  assert.equal(r.status, 0, r.stderr);
  const file = parseSafetensors(readFileSync(output));
  assert.equal(file.metadata.precision, "f16");
  const [q, k, v] = [c.q, c.k, c.v].map((x) => roundTo("F16", x.data));
  const p = { tokens: c.tokens, qHeads: 4, kvHeads: 2, headDim: 8, cuSeqlens: c.cuSeqlens, blockSize: 10, topK: 3, scale: c.scale };
  const out = toFloat32(file.tensors.get("out")!, "out");
  assert.ok(relativeError(out, referenceForward(p, q, k, v).out) <= 1e-5, "the reference on rounded inputs");
  assert.ok(relativeError(out, referenceForward(p, c.q.data, c.k.data, c.v.data).out) > 1e-5, "not the unrounded result");
});
