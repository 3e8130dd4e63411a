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
