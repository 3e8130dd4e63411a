// The CPU implementation against the float64 reference on fresh random configurations.
// Set MOBA_SEED to replay a run; the seed of every failing case is printed.
import assert from "node:assert/strict";
import { test } from "node:test";
import { type Case, compareWithReference, int, makeCase, pick, rng } from "./helpers.js";

const HEADS = [[1, 1], [4, 1], [4, 2], [8, 8], [6, 3]] as const;
const HEAD_DIMS = [1, 3, 16, 64, 128] as const;
/** Reference multiply-adds per case (sum of squared lengths x heads x headDim); keeps a run to about a minute. */
const REFERENCE_BUDGET = 4e6;

function logUniform(random: () => number, lo: number, hi: number): number {
  return Math.floor(Math.exp(Math.log(lo) + random() * (Math.log(hi + 1) - Math.log(lo))));
}

/** Lengths of 1..5 sequences with empty and length-1 sequences mixed in. */
function randomLengths(random: () => number, tokens: number): number[] {
  const batch = int(random, 1, 5);
  const cuts = Array.from({ length: batch - 1 }, () => int(random, 0, tokens)).sort((a, b) => a - b);
  const bounds = [0, ...cuts, tokens];
  const lengths = bounds.slice(1).map((b, i) => b - bounds[i]);
  if (random() < 0.2) lengths.splice(int(random, 0, lengths.length), 0, 0);
  if (random() < 0.2) lengths.splice(int(random, 0, lengths.length), 0, 1);
  return lengths;
}

export function randomCase(seed: number): Case {
  const random = rng(seed);
  const lengths = randomLengths(random, logUniform(random, 1, 3000));
  const cuSeqlens = [0];
  for (const n of lengths) cuSeqlens.push(cuSeqlens[cuSeqlens.length - 1] + n);
  const work = lengths.reduce((a, n) => a + n * n, 0);
  let heads = pick(random, HEADS);
  let headDim = pick(random, HEAD_DIMS);
  for (let tries = 0; work * heads[0] * headDim > REFERENCE_BUDGET && tries < 30; tries++) {
    heads = pick(random, HEADS);
    headDim = pick(random, HEAD_DIMS);
  }
  if (work * heads[0] * headDim > REFERENCE_BUDGET) [heads, headDim] = [HEADS[0], 1];
  const blockSize = logUniform(random, 1, 700);
  const blocks = Math.max(1, ...lengths.map((n) => Math.ceil(n / blockSize)));
  const topK = random() < 0.1 ? Infinity : int(random, 1, blocks + 2);
  return makeCase(seed, { cuSeqlens, qHeads: heads[0], kvHeads: heads[1], headDim, blockSize, topK });
}

const runSeed = Number(process.env.MOBA_SEED ?? Math.floor(Math.random() * 2 ** 31));
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
