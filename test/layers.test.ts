// Every model layer's backward against central finite differences of sum(out · dout), in float64.
import assert from "node:assert/strict";
import { test } from "node:test";
import { matmulXWt } from "../src/cpu/ops.js";
import {
  crossEntropyBackward,
  crossEntropyForward,
  embeddingBackward,
  embeddingForward,
  rmsNormBackward,
  rmsNormForward,
  rope,
  rotary,
  swigluBackward,
  swigluForward,
} from "../src/model/layers.js";
import { relativeError, rng } from "./helpers.js";

const FD_STEP = 1e-6;
/** Central differences in float64 agree with exact gradients to ~1e-9; 1e-7 leaves room and still catches any wrong term. */
const FD_TOLERANCE = 1e-7;

function random64(random: () => number, n: number, spread = 1): Float64Array {
  return Float64Array.from({ length: n }, () => (random() * 2 - 1) * spread);
}

/** Checks `analytic` (the gradient of loss w.r.t. `input`) against central differences of loss(). */
function checkGradient(name: string, input: Float64Array, analytic: Float64Array, loss: () => number): void {
  const numeric = new Float64Array(input.length);
  for (let i = 0; i < input.length; i++) {
    const x = input[i];
    input[i] = x + FD_STEP;
    const up = loss();
    input[i] = x - FD_STEP;
    const down = loss();
    input[i] = x;
    numeric[i] = (up - down) / (2 * FD_STEP);
  }
  const error = relativeError(analytic, numeric);
  assert.ok(error < FD_TOLERANCE, `${name}: relative error ${error} against finite differences`);
}

const dotWith = (a: Float64Array, b: Float64Array) => a.reduce((s, x, i) => s + x * b[i], 0);

test("RMSNorm backward matches finite differences (dx, dw)", () => {
  const random = rng(1);
  for (const [M, H] of [
    [1, 2],
    [3, 5],
    [4, 16],
  ]) {
    const x = random64(random, M * H, 2),
      w = random64(random, H),
      dy = random64(random, M * H);
    const loss = () => {
      const y = new Float64Array(M * H);
      rmsNormForward(y, new Float64Array(M), x, w, M, H, 1e-5);
      return dotWith(y, dy);
    };
    const y = new Float64Array(M * H),
      rstd = new Float64Array(M);
    rmsNormForward(y, rstd, x, w, M, H, 1e-5);
    const dx = new Float64Array(M * H),
      dw = new Float64Array(H);
    rmsNormBackward(dx, dw, dy, x, w, rstd, M, H);
    checkGradient(`dx M=${M} H=${H}`, x, dx, loss);
    checkGradient(`dw M=${M} H=${H}`, w, dw, loss);
  }
});

test("rotary embedding backward (inverse rotation) matches finite differences", () => {
  const random = rng(2);
  const T = 5,
    heads = 3,
    D = 8;
  const r = rotary(Int32Array.of(0, 1, 2, 7, 300), D, 10000);
  const x = random64(random, T * heads * D),
    dy = random64(random, T * heads * D);
  const loss = () => {
    const y = Float64Array.from(x);
    rope(y, r, heads, D);
    return dotWith(y, dy);
  };
  const dx = Float64Array.from(dy);
  rope(dx, r, heads, D, -1);
  checkGradient("dx", x, dx, loss);
  // position 0 is the identity
  const y = Float64Array.from(x.subarray(0, heads * D));
  rope(y, rotary(Int32Array.of(0), D, 10000), heads, D);
  assert.deepEqual(y, x.subarray(0, heads * D));
});

test("SwiGLU backward matches finite differences (dg, du)", () => {
  const random = rng(3);
  const n = 40;
  const g = random64(random, n, 4),
    u = random64(random, n, 2),
    dm = random64(random, n);
  const loss = () => {
    const m = new Float64Array(n);
    swigluForward(m, g, u);
    return dotWith(m, dm);
  };
  const dg = new Float64Array(n),
    du = new Float64Array(n);
  swigluBackward(dg, du, dm, g, u);
  checkGradient("dg", g, dg, loss);
  checkGradient("du", u, du, loss);
});

test("cross-entropy backward matches finite differences, weights respected", () => {
  const random = rng(4);
  const M = 6,
    V = 7;
  const logits = random64(random, M * V, 3);
  const targets = Int32Array.from({ length: M }, () => Math.floor(random() * V));
  const weights = Float64Array.of(1, 0, 1, 0.5, 1, 0);
  const scale = 0.25;
  const loss = () => scale * crossEntropyForward(new Float64Array(M), new Float64Array(M), logits, targets, weights, V);
  const lse = new Float64Array(M);
  crossEntropyForward(lse, new Float64Array(M), logits, targets, weights, V);
  const dLogits = new Float64Array(M * V);
  crossEntropyBackward(dLogits, logits, lse, targets, weights, V, scale);
  checkGradient("dlogits", logits, dLogits, loss);
  // a uniform distribution costs log V per counted token
  const flat = crossEntropyForward(
    new Float64Array(2),
    new Float64Array(2),
    new Float64Array(2 * V),
    Int32Array.of(3, 1),
    Float64Array.of(1, 1),
    V,
  );
  assert.ok(Math.abs(flat - 2 * Math.log(V)) < 1e-12);
});

test("embedding backward matches finite differences (repeated tokens accumulate)", () => {
  const random = rng(5);
  const V = 5,
    H = 3;
  const table = random64(random, V * H),
    tokens = Int32Array.of(1, 4, 1, 0);
  const dOut = random64(random, tokens.length * H);
  const loss = () => {
    const out = new Float64Array(tokens.length * H);
    embeddingForward(out, table, tokens, H);
    return dotWith(out, dOut);
  };
  const dTable = new Float64Array(V * H);
  embeddingBackward(dTable, dOut, tokens, H);
  checkGradient("dtable", table, dTable, loss);
});

test("the 4×4 GEMM kernel equals a plain dot product", () => {
  const random = rng(6);
  const x = random64(random, 7 * 5),
    w = random64(random, 6 * 5),
    y = new Float64Array(42);
  matmulXWt(y, x, w, 7, 5, 6);
  for (let i = 0; i < 7; i++)
    for (let n = 0; n < 6; n++) {
      let s = 0;
      for (let k = 0; k < 5; k++) s += x[i * 5 + k] * w[n * 5 + k];
      assert.ok(Math.abs(y[i * 6 + n] - s) < 1e-12);
    }
});
