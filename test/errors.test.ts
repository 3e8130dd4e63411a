// Bad input through the API: a MobaError naming the argument, the expected and the actual value.
import assert from "node:assert/strict";
import { test } from "node:test";
import { blockGating, flashAttention, mobaAttention, mobaAttentionBackward, MobaError, tensor } from "../src/index.js";
import { checkProblem } from "../src/attention/problem.js";
import { cpuForward } from "../src/cpu/index.js";
import { makeCase } from "./helpers.js";

const c = makeCase(31, { cuSeqlens: [0, 20], qHeads: 2, kvHeads: 1, headDim: 4, blockSize: 4, topK: 2 });
const inputs = { q: c.q, k: c.k, v: c.v };

const cases: [string, () => Promise<unknown>, RegExp][] = [
  ["blockSize 0", () => mobaAttention(inputs, { blockSize: 0, topK: 2 }), /^blockSize: expected a positive integer, got 0$/],
  ["blockSize 1.5", () => mobaAttention(inputs, { blockSize: 1.5, topK: 2 }), /^blockSize: expected a positive integer, got 1.5$/],
  ["topK 0", () => mobaAttention(inputs, { blockSize: 4, topK: 0 }), /^topK: expected a positive integer, got 0$/],
  ["topK NaN", () => mobaAttention(inputs, { blockSize: 4, topK: NaN }), /^topK: expected a positive integer, got NaN$/],
  [
    "scale Infinity",
    () => mobaAttention(inputs, { blockSize: 4, topK: 2, scale: Infinity }),
    /^scale: expected a finite number, got Infinity$/,
  ],
  ["threads 0", () => flashAttention(inputs, { threads: 0 }), /^threads: expected a positive integer, got 0$/],
  ["backend", () => flashAttention(inputs, { backend: "gpu" as "cpu" }), /^backend: expected "cpu" or "webgpu", got "gpu"$/],
  [
    "cuSeqlens too short",
    () => flashAttention({ ...inputs, cuSeqlens: [0] }),
    /^cuSeqlens: expected at least 2 offsets \[0, \.\.\., 20\], got 1$/,
  ],
  // checked before the Int32Array stores them: 2^32 - 1 was stored as -1 (NaN out), 2^32 + 5 as 5 (wrong results)
  [
    "cuSeqlens 2^32 - 1",
    () => mobaAttention({ ...inputs, cuSeqlens: [0, 2 ** 32 - 1, 20] }, { blockSize: 4, topK: 2 }),
    /^cuSeqlens\[1\]: expected an offset of at most the number of tokens 20, got 4294967295$/,
  ],
  [
    "cuSeqlens 2^32 + 5",
    () => flashAttention({ ...inputs, cuSeqlens: [0, 2 ** 32 + 5, 20] }),
    /^cuSeqlens\[1\]: expected an offset of at most the number of tokens 20, got 4294967301$/,
  ],
  ["cuSeqlens -2^32", () => flashAttention({ ...inputs, cuSeqlens: [-(2 ** 32), 5, 20] }), /^cuSeqlens\[0\]: expected 0, got -4294967296$/],
  [
    "blockSize 2^32 (a u32 on the GPU)",
    () => mobaAttention(inputs, { blockSize: 2 ** 32, topK: 2 }),
    /^blockSize: expected at most 2\^31 - 1 \(the kernels index in 32 bits\), got 4294967296$/,
  ],
  ["cuSeqlens fraction", () => flashAttention({ ...inputs, cuSeqlens: [0, 2.5, 20] }), /^cuSeqlens\[1\]: expected an integer, got 2.5$/],
  [
    "data length",
    () => flashAttention({ ...inputs, q: { data: new Float32Array(3), shape: [20, 2, 4] } }),
    /^q: expected 160 elements for shape \[20, 2, 4\], got 3$/,
  ],
  [
    "routing shape",
    () =>
      mobaAttentionBackward(
        {
          ...inputs,
          out: c.dout,
          lse: { data: new Float32Array(40), shape: [20, 2] },
          dout: c.dout,
          routing: { data: new Int32Array(3), shape: [3, 1, 1] },
        },
        { blockSize: 4, topK: 2 },
      ),
    /^routing: expected shape \[20, 2, 1\] from the forward \(topK - 1 past blocks a query, 0 when topK covers every block\), got \[3, 1, 1\]$/,
  ],
  // blockGating: one sequence, the forward's routing for the same options (a wider table would be read as other blocks)
  [
    "blockGating, two sequences",
    async () =>
      blockGating({ ...inputs, cuSeqlens: [0, 8, 20] }, { blockSize: 4, topK: 2 }, { data: new Int32Array(40), shape: [20, 2, 1] }),
    /^cuSeqlens: expected one sequence \[0, 20\], got 2$/,
  ],
  [
    "blockGating, routing of topK 3",
    async () => blockGating(inputs, { blockSize: 4, topK: 2 }, { data: new Int32Array(80), shape: [20, 2, 2] }),
    /^routing: expected shape \[20, 2, 1\] from the forward .*, got \[20, 2, 2\]$/,
  ],
  ["precision", () => flashAttention(inputs, { precision: "bf16" as "f16" }), /^precision: expected "f32" or "f16", got "bf16"$/],
  [
    "f16 range",
    () => flashAttention({ ...inputs, k: { data: c.k.data.map((x, i) => (i === 7 ? 70000 : x)), shape: c.k.shape } }, { precision: "f16" }),
    /^k: expected \|values\| <= 65504 for precision "f16", got 70000 at element 7$/,
  ],
  // an infinity is not finite before it is out of f16's range: every backend names it so
  [
    "f16 infinity",
    () =>
      flashAttention({ ...inputs, k: { data: c.k.data.map((x, i) => (i === 7 ? -Infinity : x)), shape: c.k.shape } }, { precision: "f16" }),
    /^k: expected finite values, got -Infinity at element 7$/,
  ],
  [
    "lse shape",
    () =>
      mobaAttentionBackward(
        { ...inputs, out: c.dout, lse: { data: new Float32Array(20), shape: [20] }, dout: c.dout },
        { blockSize: 4, topK: 2 },
      ),
    /^lse: expected shape \[20, 2\], got \[20\]$/,
  ],
];

for (const [name, run, pattern] of cases) {
  test(`API error: ${name}`, async () => {
    await assert.rejects(run, (error: unknown) => {
      assert.ok(error instanceof MobaError, `a MobaError, got ${String(error)}`);
      assert.match(error.message, pattern);
      return true;
    });
  });
}

test("a NaN or infinity in q, k or v is named on every CPU forward path: WebAssembly on one thread and on two (the shared memory), the scalar kernels; the next call still runs", async () => {
  const bad: [string, number, number][] = [
    ["q", 9, NaN],
    ["k", c.k.data.length - 1, Infinity], // the last element: past the check's 16-float steps
    ["v", 3, -Infinity],
  ];
  const options = { blockSize: 4, topK: 2 };
  for (const [name, at, value] of bad) {
    const data = inputs[name as "q"].data.slice();
    data[at] = value;
    const withBad = { ...inputs, [name]: { data, shape: inputs[name as "q"].shape } };
    const message = new RegExp(`MobaError: ${name}: expected finite values, got ${value} at element ${at}$`);
    for (const threads of [1, 2]) {
      await assert.rejects(mobaAttention(withBad, { ...options, threads }), message, `${threads} thread(s)`);
      await assert.rejects(flashAttention(withBad, { threads }), message, `full, ${threads} thread(s)`);
    }
    const p = checkProblem(withBad, 4, 2, undefined, "f32", false);
    await assert.rejects(cpuForward(p, withBad.q.data, withBad.k.data, withBad.v.data, 1, null), message, "scalar kernels");
  }
  const after = await mobaAttention(inputs, { ...options, threads: 2 });
  assert.deepEqual(after.out.data, (await mobaAttention(inputs, { ...options, threads: 1 })).out.data);
});

test("tensor() checks the element count", () => {
  assert.throws(() => tensor(new Float32Array(5), [2, 3]), /tensor: expected 6 elements for shape \[2, 3\], got 5/);
});

test("empty inputs and empty sequences are valid", async () => {
  const empty = { data: new Float32Array(0), shape: [0, 2, 4] };
  const emptyKv = { data: new Float32Array(0), shape: [0, 1, 4] };
  const r = await mobaAttention({ q: empty, k: emptyKv, v: emptyKv, cuSeqlens: [0, 0, 0] }, { blockSize: 4, topK: 2 });
  assert.deepEqual(r.out.shape, [0, 2, 4]);
  assert.equal(r.lse.data.length, 0);
});

test("the library loads outside Node: no static node: import is reachable from src/index.ts", async () => {
  const { readFileSync } = await import("node:fs");
  const { fileURLToPath } = await import("node:url");
  const seen = new Set<string>();
  const offenders: string[] = [];
  const visit = (url: URL) => {
    if (seen.has(url.href)) return;
    seen.add(url.href);
    const source = readFileSync(fileURLToPath(url), "utf8");
    for (const [, spec] of source.matchAll(/^(?:import|export)\s(?!type\b)[^;]*?\sfrom\s"([^"]+)"/gm)) {
      if (spec.startsWith("node:")) offenders.push(`${fileURLToPath(url)} imports ${spec}`);
      else if (spec.startsWith(".")) visit(new URL(spec.replace(/\.js$/, ".ts"), url));
    }
  };
  visit(new URL("../src/index.ts", import.meta.url));
  assert.ok(seen.size > 10, `walked ${seen.size} files`);
  assert.deepEqual(offenders, []);
});

test("a block size far beyond the sequence allocates nothing in proportion to it, and equals one block per sequence", async () => {
  const huge = await mobaAttention(inputs, { blockSize: 2 ** 31 - 1, topK: 2 });
  const one = await mobaAttention(inputs, { blockSize: 20, topK: 2 });
  assert.deepEqual(huge.out.data, one.out.data);
});

test("the parameter cap's estimate is the parameter count initModel allocates", async () => {
  const { checkConfig, initModel, parameterCount } = await import("../src/index.js");
  const { parameterEstimate } = await import("../src/model/config.js");
  for (const fields of [
    {},
    { tie_word_embeddings: false, num_key_value_heads: 1 },
    { hidden_size: 64, intermediate_size: 100, num_hidden_layers: 3 },
  ]) {
    const config = checkConfig(fields);
    assert.equal(parameterEstimate(config), parameterCount(initModel(config, 1)), JSON.stringify(fields));
  }
});
