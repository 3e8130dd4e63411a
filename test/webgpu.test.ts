// The WebGPU backend against the float64 reference, on whatever adapter is present (lavapipe in
// CI). Under CI=true a missing adapter fails; elsewhere these tests are skipped without one.
// Outputs are poisoned with NaN before every run (src/webgpu/kernel.ts), so an unwritten element
// fails the comparison.
import assert from "node:assert/strict";
import { test } from "node:test";
import { flashAttention, mobaAttention, MobaError } from "../src/index.js";
import { getDevice } from "../src/webgpu/device.js";
import { halfTiled } from "../src/webgpu/attention/index.js";
import { mmaKeyTiles } from "../src/webgpu/attention/mma.wgsl.js";
import { Buffers, readBack, startProfile, stopProfile } from "../src/webgpu/kernel.js";
import { floatToF16 } from "../src/io/half.js";
import { dkdvPass, dqPass, forwardPass, storesDs } from "../src/webgpu/attention/paths.js";
import { plan, storedDsBytes } from "../src/webgpu/attention/plan.js";
import {
  compareWithReference,
  F16_TOLERANCE,
  makeCase,
  problemOf,
  runOnGpu,
  randomCase,
  relativeError,
  runImplementation,
  type Case,
  webgpuSkip,
} from "./helpers.js";

const adapter = await getDevice().then(
  (d) => d.adapterInfo,
  (error: Error) => error,
);
const skip = webgpuSkip;

const gpu = (c: Case, threads?: number) => runImplementation(c, threads, "webgpu");
const runSeed = Number(process.env.MOBA_SEED || Math.floor(Math.random() * 2 ** 31));
/** lavapipe runs kernels on the CPU: a smaller budget than the CPU suite keeps the file to a few minutes. */
const GPU_BUDGET = 1e6;
const CASES = 60;

test("a WebGPU adapter is present", { skip }, () => {
  assert.ok(!(adapter instanceof Error), String(adapter));
  console.log(`# adapter: ${adapter}`);
});

test(`WebGPU MoBA and full attention equal the reference on ${CASES} random configurations (MOBA_SEED=${runSeed})`, { skip }, async () => {
  const failures: string[] = [];
  for (let i = 0; i < CASES; i++)
    failures.push(...(await compareWithReference(randomCase(runSeed + i, GPU_BUDGET, 1500), undefined, gpu, true)));
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} failures; replay with MOBA_SEED=${runSeed}`);
});

const edges: [string, Parameters<typeof makeCase>[1]][] = [
  ["empty and length-1 sequences, GQA 4/1", { cuSeqlens: [0, 0, 1, 1, 40, 41], qHeads: 4, kvHeads: 1, headDim: 16, blockSize: 8, topK: 3 }],
  ["blockSize not a multiple of the tile, 6/3 heads", { cuSeqlens: [0, 203], qHeads: 6, kvHeads: 3, headDim: 64, blockSize: 37, topK: 2 }],
  ["topK beyond the block count", { cuSeqlens: [0, 150, 300], qHeads: 2, kvHeads: 2, headDim: 3, blockSize: 20, topK: 40 }],
  ["topK 1 (own block only), headDim 1", { cuSeqlens: [0, 100], qHeads: 1, kvHeads: 1, headDim: 1, blockSize: 9, topK: 1 }],
  ["headDim 128, blockSize 1", { cuSeqlens: [0, 70], qHeads: 2, kvHeads: 1, headDim: 128, blockSize: 1, topK: 5 }],
  [
    "full attention, headDim 128, varlen",
    { cuSeqlens: [0, 65, 65, 260], qHeads: 8, kvHeads: 8, headDim: 128, blockSize: 64, topK: Infinity },
  ],
];
for (const [name, shape] of edges) {
  test(`WebGPU edge case: ${name}`, { skip }, async () => {
    assert.deepEqual(await compareWithReference(makeCase(41, shape), undefined, gpu, true), []);
  });
}

const F16_CASES = 30;
test(
  `the f16 path (tensor cores where the device has them, else f32 arithmetic on f16 inputs) equals the reference on f16-rounded inputs within ${F16_TOLERANCE} on ${F16_CASES} random configurations (MOBA_SEED=${runSeed})`,
  { skip },
  async () => {
    const half = (c: Case, threads?: number) => runImplementation(c, threads, "webgpu", "f16");
    const failures: string[] = [];
    for (let i = 0; i < F16_CASES; i++)
      failures.push(...(await compareWithReference(randomCase(runSeed + 1000 + i, GPU_BUDGET, 1500), undefined, half, true, "f16")));
    for (const [, shape] of edges) failures.push(...(await compareWithReference(makeCase(42, shape), undefined, half, true, "f16")));
    assert.deepEqual(failures.slice(0, 5), [], `${failures.length} failures; replay with MOBA_SEED=${runSeed}`);
  },
);

test(
  "MoBA's forward over union tiles and over rounds of gathered tiles both equal the reference (f32 and f16; the backward builds the index a union forward skips)",
  { skip },
  async () => {
    const device = await getDevice();
    const cases = [
      // 3 sequences of 1-13 blocks, block 37 (not a multiple of a tile), GQA 4/2, headDim 80
      makeCase(47, { cuSeqlens: [0, 1, 150, 481], qHeads: 4, kvHeads: 2, headDim: 80, blockSize: 37, topK: 3 }),
      // 32 blocks (the most a union tile holds), topK 5, headDim 16
      makeCase(48, { cuSeqlens: [0, 256], qHeads: 2, kvHeads: 1, headDim: 16, blockSize: 8, topK: 5 }),
    ];
    const failures: string[] = [];
    for (const c of cases)
      for (const precision of ["f32", "f16"] as const)
        for (const union of [true, false]) {
          const forward = forwardPass(device, problemOf(c, precision), undefined, union);
          assert.equal(forward.union, union);
          const run = () => runOnGpu(device, c, precision, { forward });
          failures.push(...(await compareWithReference(c, undefined, run, true, precision)).map((f) => `union ${union}: ${f}`));
        }
    assert.deepEqual(failures, []);
    // more blocks than a union tile's bits: a clear error, not a wrong result
    const long = makeCase(49, { cuSeqlens: [0, 264], qHeads: 1, kvHeads: 1, headDim: 16, blockSize: 8, topK: 3 });
    await assert.rejects(
      runOnGpu(device, long, "f32", { forward: forwardPass(device, problemOf(long, "f32"), undefined, true) }),
      (e: unknown) => e instanceof MobaError && /at most 32 blocks a sequence/.test(e.message),
    );
  },
);

test(
  "MoBA's f16 backward with dq over the dS the dk/dv kernel stores, and with dq recomputing dS, both equal the reference (tensor cores)",
  { skip },
  async (t) => {
    const device = await getDevice();
    const cases = [
      // blocks of 48 (not a multiple of a 32- or 64-key tile), two sequences, GQA 4/2, headDim 64: dk/dv on 32 keys
      makeCase(50, { cuSeqlens: [0, 48, 400], qHeads: 4, kvHeads: 2, headDim: 64, blockSize: 48, topK: 3 }),
      // an empty sequence, headDim 128 (dk/dv on 64 keys), topK 4
      makeCase(51, { cuSeqlens: [0, 16, 16, 528], qHeads: 2, kvHeads: 1, headDim: 128, blockSize: 64, topK: 4 }),
    ];
    if (!storesDs(device, problemOf(cases[0], "f16")))
      return t.skip(`${device.adapterInfo}: no tensor-core backward with 9 storage buffers a stage`);
    const failures: string[] = [];
    for (const c of cases)
      for (const stored of [true, false]) {
        const p = problemOf(c, "f16");
        const kernels = { dq: dqPass(device, p, undefined, stored), dkdv: dkdvPass(device, p, undefined, stored) };
        assert.deepEqual([kernels.dq.storedDs, kernels.dkdv.storedDs], [stored, stored]);
        // the stored dS comes from the pool unwritten: a new buffer's zeros would hide any element dq reads and
        // the dk/dv kernel never writes, so the pool is handed NaN-filled buffers of its size first (8: the
        // run's tensors of the same size class take some)
        const pool = new Buffers(device);
        for (let i = 0; i < 8; i++) pool.poisoned(storedDsBytes(plan(p)) / 4, "poisoned dS");
        pool.destroy();
        const run = () => runOnGpu(device, c, "f16", kernels);
        failures.push(...(await compareWithReference(c, undefined, run, true, "f16")).map((f) => `stored dS ${stored}: ${f}`));
      }
    assert.deepEqual(failures, []);
  },
);

test(
  "constant buffers (tile lists, sequence tables) are made once per key; past 64 MiB the least recently used are made again",
  { skip },
  async () => {
    const mem = new Buffers(await getDevice());
    let made = 0;
    const make = (words: number) => () => (made++, new Uint32Array(words));
    const a = mem.constant("test a", make(4), "a");
    assert.equal(mem.constant("test a", make(4), "a"), a);
    assert.equal(made, 1);
    assert.notEqual(mem.constant("test b", make(4), "b"), a);
    assert.equal(made, 2);
    for (let i = 0; i < 5; i++) mem.constant(`test big ${i}`, make(4 * 2 ** 20), "big"); // 16 MiB each
    assert.equal(made, 7);
    mem.constant("test big 4", make(4 * 2 ** 20), "big"); // the most recent stays
    mem.constant("test a", make(4), "a"); // pushed out by 80 MiB of later ones
    assert.equal(made, 8);
    mem.destroy();
  },
);

test("WebGPU rejects a head dimension beyond its kernels with a clear error", { skip }, async () => {
  const c = makeCase(43, { cuSeqlens: [0, 4], qHeads: 1, kvHeads: 1, headDim: 257, blockSize: 2, topK: 1 });
  await assert.rejects(
    mobaAttention(c, { blockSize: 2, topK: 1, backend: "webgpu" }),
    (e: unknown) => e instanceof MobaError && /headDim: expected at most 256 on webgpu, got 257/.test(e.message),
  );
  await assert.rejects(flashAttention(c, { backend: "webgpu" }), MobaError);
});

test("inputs larger than one storage binding run in head groups, with the same result", { skip }, async () => {
  const c = makeCase(44, { cuSeqlens: [0, 120, 200], qHeads: 8, kvHeads: 4, headDim: 16, blockSize: 16, topK: 3 });
  const whole = await gpu(c);
  const device = await getDevice();
  const limit = device.maxStorageBinding;
  try {
    device.maxStorageBinding = 200 * 2 * 16 * 4; // one kv head (two query heads) per binding: four groups
    const split = await gpu(c);
    for (const name of ["out", "lse", "routing", "dq"] as const) assert.deepEqual(split[name].data, whole[name].data, name);
    // dk/dv sum each block's query list in the order atomics filled it: equal up to rounding
    for (const name of ["dk", "dv"] as const) assert.ok(relativeError(split[name].data, whole[name].data) < 1e-6, name);
    device.maxStorageBinding = 1000;
    await assert.rejects(
      gpu(c),
      (e: unknown) => e instanceof MobaError && /more than one storage binding allows \(1000\); pass fewer tokens per call/.test(e.message),
    );
  } finally {
    device.maxStorageBinding = limit;
  }
});

test("the profiler times every dispatch of a call on the GPU (or says the device cannot)", { skip }, async () => {
  const device = await getDevice();
  if (!device.timestamps) {
    assert.throws(
      () => startProfile(device),
      (e: unknown) => e instanceof MobaError && /profiling needs timestamp-query/.test(e.message),
    );
    return;
  }
  const profiled = async (blockSize: number) => {
    const c = makeCase(45, { cuSeqlens: [0, 100], qHeads: 2, kvHeads: 1, headDim: 16, blockSize, topK: 3 });
    startProfile(device);
    await mobaAttention(c, { blockSize, topK: 3, backend: "webgpu" });
    const times = await stopProfile();
    assert.ok(
      times.every((t) => Number.isFinite(t.ms) && t.ms >= 0),
      JSON.stringify(times),
    );
    return times.map((t) => t.label);
  };
  // 25 blocks (more than UNION_MAX_BLOCKS): rounds of own and gathered tiles
  const labels = await profiled(4);
  for (const label of ["block sums", "gate", "scatter", "gathered tiles", "forward round 1", "forward round 2", "forward round 0"])
    assert.ok(labels.includes(label), `${label} in ${labels}`);
  // the own blocks' round runs last and finalizes (no separate pass)
  assert.ok(labels.indexOf("forward round 0") > labels.indexOf("forward round 2") && !labels.includes("finalize"), String(labels));
  // 7 blocks: one round of union tiles, no inverted index
  const union = await profiled(16);
  assert.deepEqual(
    union.filter((label) => !label.startsWith("poison")),
    ["block sums", "gate", "forward round 0"],
  );
  await assert.rejects(stopProfile(), MobaError);
});

test('precision "f16" on a device without shader-f16 is a clear error', { skip }, async () => {
  const device = await getDevice();
  const [f16, mma16] = [device.f16, device.mma16];
  try {
    [device.f16, device.mma16] = [false, false];
    const c = makeCase(46, { cuSeqlens: [0, 40], qHeads: 1, kvHeads: 1, headDim: 16, blockSize: 8, topK: 2 });
    await assert.rejects(
      flashAttention(c, { backend: "webgpu", precision: "f16" }),
      (e: unknown) => e instanceof MobaError && /precision: "f16" needs a device with shader-f16/.test(e.message),
    );
  } finally {
    [device.f16, device.mma16] = [f16, mma16];
  }
});

test(
  "the tensor-core kernels' tiled f16 copies of k and v (from float32, or from the f16 copies a training forward keeps) hold every element in its 16 x 16 tile, rounded to f16, and zeros past the tokens",
  { skip },
  async (t) => {
    const device = await getDevice();
    if (!device.f16) return t.skip("no shader-f16 on this adapter");
    const [tokens, heads, headDim] = [70, 3, 48]; // tokens not a multiple of the 16-key tile
    const x = new Float32Array(tokens * heads * headDim).map((_, i) => Math.sin(i * 1.7) * 3);
    const keyTiles = mmaKeyTiles(tokens);
    const halves = Uint16Array.from(x, floatToF16);
    for (const [transpose, input] of [
      [false, "f32"],
      [true, "f32"],
      [false, "f16"],
      [true, "f16"],
    ] as const) {
      const mem = new Buffers(device);
      const encoder = device.device.createCommandEncoder();
      const from = mem.storage(input === "f32" ? x : halves, "x");
      const y = await halfTiled(mem, encoder, from, tokens, heads, headDim, transpose, "x f16 tiles", input);
      device.device.queue.submit([encoder.finish()]);
      const [bytes] = await readBack(device, [{ buffer: y, bytes: heads * keyTiles * 16 * headDim * 2 }]);
      mem.destroy();
      const got = new Uint16Array(bytes);
      let wrong = 0;
      for (let h = 0; h < heads; h++) {
        for (let key = 0; key < keyTiles * 16; key++) {
          for (let d = 0; d < headDim; d++) {
            const want = key < tokens ? floatToF16(x[(key * heads + h) * headDim + d]) : 0;
            const tile = ((h * keyTiles + Math.floor(key / 16)) * (headDim / 16) + Math.floor(d / 16)) * 256;
            if (got[tile + (transpose ? (d % 16) * 16 + (key % 16) : (key % 16) * 16 + (d % 16))] !== want) wrong++;
          }
        }
      }
      assert.equal(wrong, 0, `transpose ${transpose}, from ${input}: ${wrong} of ${got.length} elements differ`);
    }
  },
);
