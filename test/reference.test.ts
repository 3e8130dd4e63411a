// The reference's backward against central finite differences of sum(out · dout), in float64.
import assert from "node:assert/strict";
import { test } from "node:test";
import { referenceBackward, referenceForward, type ReferenceProblem } from "../src/reference/attention.js";
import { relativeError, rng } from "./helpers.js";

function objective(p: ReferenceProblem, q: Float64Array, k: Float64Array, v: Float64Array, dout: Float64Array): number {
  const { out } = referenceForward(p, q, k, v);
  let sum = 0;
  for (let i = 0; i < out.length; i++) sum += out[i] * dout[i];
  return sum;
}

const problems: ReferenceProblem[] = [
  { tokens: 9, qHeads: 2, kvHeads: 1, headDim: 3, cuSeqlens: [0, 9], blockSize: 2, topK: 2, scale: 0.7 },
  { tokens: 11, qHeads: 4, kvHeads: 2, headDim: 2, cuSeqlens: [0, 4, 4, 5, 11], blockSize: 3, topK: 1, scale: 0.5 },
  { tokens: 7, qHeads: 1, kvHeads: 1, headDim: 4, cuSeqlens: [0, 7], blockSize: 2, topK: Infinity, scale: 0.5 },
];

for (const [index, p] of problems.entries()) {
  test(`reference backward equals finite differences (problem ${index})`, () => {
    const random = rng(100 + index);
    const fill = (n: number) => Float64Array.from({ length: n }, () => random() * 2 - 1);
    const q = fill(p.tokens * p.qHeads * p.headDim);
    const k = fill(p.tokens * p.kvHeads * p.headDim);
    const v = fill(p.tokens * p.kvHeads * p.headDim);
    const dout = fill(p.tokens * p.qHeads * p.headDim);
    const grads = referenceBackward(p, q, k, v, dout);
    const eps = 1e-6;
    for (const [name, x, analytic] of [
      ["q", q, grads.dq],
      ["k", k, grads.dk],
      ["v", v, grads.dv],
    ] as const) {
      const numeric = new Float64Array(x.length);
      for (let i = 0; i < x.length; i++) {
        const keep = x[i];
        x[i] = keep + eps;
        const up = objective(p, q, k, v, dout);
        x[i] = keep - eps;
        const down = objective(p, q, k, v, dout);
        x[i] = keep;
        numeric[i] = (up - down) / (2 * eps);
      }
      const error = relativeError(analytic, numeric);
      assert.ok(error < 1e-7, `d${name}: relative error ${error} against finite differences`);
      assert.ok(
        numeric.some((g) => Math.abs(g) > 1e-3),
        `d${name} must not be trivially zero`,
      );
    }
  });
}

test("reference lse is the log of the softmax denominator", () => {
  // one query, one key: out = v and lse = scale * q·k
  const p: ReferenceProblem = { tokens: 1, qHeads: 1, kvHeads: 1, headDim: 2, cuSeqlens: [0, 1], blockSize: 4, topK: 1, scale: 0.5 };
  const { out, lse } = referenceForward(p, [1, 2], [3, 4], [5, 6]);
  assert.deepEqual([...out], [5, 6]);
  assert.equal(lse[0], 0.5 * 11);
});
