// The CPU implementation against the float64 reference on fresh random configurations.
// Set MOBA_SEED to replay a run; the seed of every failing case is printed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { compareWithReference, randomCase } from "./helpers.js";

const runSeed = Number(process.env.MOBA_SEED || Math.floor(Math.random() * 2 ** 31));
const CASES = 320;

test(`CPU MoBA and full attention equal the reference on ${CASES} random configurations (MOBA_SEED=${runSeed})`, async () => {
  const failures: string[] = [];
  let longest = 0;
  for (let i = 0; i < CASES; i++) {
    const c = randomCase(runSeed + i);
    longest = Math.max(longest, c.tokens);
    // every fourth case forces the worker pool, so both paths meet small and odd shapes
    failures.push(...(await compareWithReference(c, i % 4 === 0 ? 2 : undefined)));
  }
  assert.deepEqual(failures.slice(0, 5), [], `${failures.length} failures; replay with MOBA_SEED=${runSeed}`);
  assert.ok(longest > 1000, `the run must reach long inputs, longest was ${longest}`);
});

test('precision "f16" on the CPU is the f32 computation on f16-rounded q, k, v and dout (the reference the GPU\'s f16 path is held to)', async () => {
  const { roundToF16 } = await import("../src/io/half.js");
  const { runImplementation, makeCase } = await import("./helpers.js");
  for (const [seed, topK] of [
    [61, 3],
    [62, Infinity],
  ] as const) {
    const c = makeCase(seed, { cuSeqlens: [0, 90, 200], qHeads: 4, kvHeads: 2, headDim: 24, blockSize: 16, topK });
    const half = await runImplementation(c, undefined, "cpu", "f16");
    const rounded = {
      ...c,
      q: { ...c.q, data: roundToF16(c.q.data) },
      k: { ...c.k, data: roundToF16(c.k.data) },
      v: { ...c.v, data: roundToF16(c.v.data) },
      dout: { ...c.dout, data: roundToF16(c.dout.data) },
    };
    const exact = await runImplementation(rounded, undefined, "cpu", "f32");
    const unrounded = await runImplementation(c, undefined, "cpu", "f32");
    for (const name of ["out", "lse", "dq", "dk", "dv"] as const) {
      assert.deepEqual(half[name].data, exact[name].data, name);
      assert.notDeepEqual(half[name].data, unrounded[name].data, `${name} must see the rounding`);
    }
  }
});
