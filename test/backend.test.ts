// Every op of the model backends (CPU and WebGPU: the same cases) against float64 loops: the
// layers of src/model/layers.ts run in float64 (their backward is checked against finite
// differences in layers.test.ts), GEMMs and AdamW as plain loops. Odd sizes throughout; outputs
// that accumulate start from random values so a missing "+=" shows; the WebGPU backend poisons
// every output it allocates. Float32 against float64: norm-wise relative error ≤ 1e-5.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ModelBackend, Sized } from "../src/backend.js";
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
import { roundToF16 } from "../src/io/half.js";
import { webgpuModelBackend } from "../src/webgpu/model.js";
import { MODEL_BACKENDS, relativeError, rng } from "./helpers.js";

const TOLERANCE = 1e-5;

type Random = () => number;
const randoms = (random: Random, n: number, spread = 1) => Float64Array.from({ length: n }, () => (random() * 2 - 1) * spread);
const f32 = (x: Float64Array) => Float32Array.from(x);

/** Runs `work` on the backend with host inputs; returns the named outputs on the host. */
async function on<B extends Sized>(
  backend: ModelBackend<B>,
  inputs: Record<string, Float64Array>,
  work: (t: Record<string, B>) => Promise<void>,
  outputs: string[],
): Promise<Record<string, Float32Array>> {
  return backend.scope("test", async () => {
    const t = Object.fromEntries(Object.entries(inputs).map(([name, x]) => [name, backend.upload(f32(x))]));
    await work(t);
    return Object.fromEntries(
      await Promise.all(outputs.map(async (name) => [name, Float32Array.from(await backend.download(t[name]))] as const)),
    );
  });
}

function close(name: string, got: Float32Array, want: Float64Array, where: string): void {
  assert.equal(got.length, want.length, `${name} ${where}: length`);
  const error = relativeError(got, want);
  assert.ok(error <= TOLERANCE, `${name} ${where}: relative error ${error}`);
}

for (const [name, make, skip] of MODEL_BACKENDS) {
  // precision f16 (WebGPU): the reference rounds every operand to f16 (the sums stay float32, so the same 1e-5 holds);
  // lavapipe runs the plain f16-operand kernel, a GPU with subgroup matrices the tensor-core one
  for (const precision of name === "webgpu" ? (["f32", "f16"] as const) : (["f32"] as const))
    test(
      `${name} backend: GEMMs (forward with or without a residual, dx written or accumulated, dw accumulated) match float64 loops, precision ${precision}`,
      { skip },
      async () => {
        const backend = precision === "f16" ? await webgpuModelBackend("f16") : await make();
        const round = (x: Float32Array) => (precision === "f16" ? roundToF16(x) : x);
        const random = rng(6);
        for (const [M, K, N] of [
          [1, 1, 1],
          [5, 3, 7],
          [9, 17, 6],
          [67, 65, 130],
          [300, 64, 131],
          [300, 64, 132], // tensor cores: tiles wholly inside y (direct stores, a residual loaded into the accumulators)
          [70, 2112, 68], // tensor cores: K split (split-K partials, the reduction adds the residual)
        ]) {
          for (const accumulate of [false, true]) {
            const x = randoms(random, M * K),
              w = randoms(random, N * K),
              dy = randoms(random, M * N),
              dx0 = randoms(random, M * K),
              dw0 = randoms(random, N * K),
              residual = randoms(random, M * N);
            // the forward with a residual add where the backward accumulates (both variants of each GEMM)
            const r = await on(
              backend,
              { x, w, dy, dx: dx0, dw: dw0, residual, y: new Float64Array(M * N) },
              async (t) => {
                t.y = backend.empty(M * N);
                await backend.linear(t.y, t.x, t.w, M, K, N, accumulate ? t.residual : undefined);
                await backend.linearBackward(t.dx, t.dw, t.dy, t.x, t.w, M, K, N, accumulate);
              },
              ["y", "dx", "dw"],
            );
            const y = accumulate ? Float64Array.from(f32(residual)) : new Float64Array(M * N),
              dx = accumulate ? Float64Array.from(f32(dx0)) : new Float64Array(M * K),
              dw = Float64Array.from(f32(dw0));
            const [xs, ws, dys] = [round(f32(x)), round(f32(w)), round(f32(dy))];
            for (let i = 0; i < M; i++)
              for (let n = 0; n < N; n++)
                for (let k = 0; k < K; k++) {
                  y[i * N + n] += xs[i * K + k] * ws[n * K + k];
                  dx[i * K + k] += dys[i * N + n] * ws[n * K + k];
                  dw[n * K + k] += dys[i * N + n] * xs[i * K + k];
                }
            const where = `M=${M} K=${K} N=${N} accumulate (and residual)=${accumulate}`;
            close("y", r.y, y, where);
            close("dx", r.dx, dx, where);
            close("dw", r.dw, dw, where);
          }
        }
      },
    );

  test(`${name} backend: embedding, RMSNorm, rotary, SwiGLU and their backwards match float64; copy is exact`, { skip }, async () => {
    const backend = await make();
    const random = rng(7);
    for (const [T, H, V, heads, D] of [
      [1, 2, 3, 1, 2],
      [37, 24, 11, 3, 8],
      [300, 300, 256, 5, 60],
      [129, 530, 7, 5, 106], // RMSNorm's backward: three columns a thread, three chunks of rows, the last short
      [2100, 40, 5, 2, 20], // 33 chunks: the weight gradient's column sum takes four chunks at a time, then the rest
    ]) {
      const where = `T=${T} H=${H}`;
      const tokens = Int32Array.from({ length: T }, () => Math.floor(random() * V));
      const table = randoms(random, V * H),
        dOut = randoms(random, T * H),
        dTable0 = randoms(random, V * H);
      const e = await on(
        backend,
        { table, dOut, dTable: dTable0 },
        async (t) => {
          t.out = backend.empty(T * H);
          await backend.embedding(t.out, t.table, tokens, H);
          await backend.embeddingBackward(t.dTable, t.dOut, tokens, H);
        },
        ["out", "dTable"],
      );
      const out = new Float64Array(T * H),
        dTable = Float64Array.from(f32(dTable0));
      embeddingForward(out, Float64Array.from(f32(table)), tokens, H);
      embeddingBackward(dTable, Float64Array.from(f32(dOut)), tokens, H);
      close("embedding", e.out, out, where);
      close("embedding dTable", e.dTable, dTable, where);

      for (const accumulate of [false, true]) {
        const x = randoms(random, T * H, 3),
          w = randoms(random, H),
          dy = randoms(random, T * H),
          dx0 = randoms(random, T * H),
          dw0 = randoms(random, H);
        const n = await on(
          backend,
          { x, w, dy, dx: dx0, dw: dw0 },
          async (t) => {
            t.y = backend.empty(T * H);
            t.rstd = backend.empty(T);
            await backend.rmsNorm(t.y, t.rstd, t.x, t.w, T, H, 1e-5);
            await backend.rmsNormBackward(t.dx, t.dw, t.dy, t.x, t.w, t.rstd, T, H, accumulate);
          },
          ["y", "rstd", "dx", "dw"],
        );
        const [x64, w64, dy64] = [x, w, dy].map((a) => Float64Array.from(f32(a)));
        const y = new Float64Array(T * H),
          rstd = new Float64Array(T),
          dx = new Float64Array(T * H),
          dw = Float64Array.from(f32(dw0));
        rmsNormForward(y, rstd, x64, w64, T, H, 1e-5);
        rmsNormBackward(dx, dw, dy64, x64, w64, rstd, T, H);
        if (accumulate) f32(dx0).forEach((v, i) => (dx[i] += v));
        close("rmsNorm y", n.y, y, where);
        close("rmsNorm rstd", n.rstd, rstd, where);
        close("rmsNorm dx", n.dx, dx, `${where} accumulate=${accumulate}`);
        close("rmsNorm dw", n.dw, dw, where);
      }

      const rot = rotary(
        Int32Array.from({ length: T }, (_, i) => (i * 7919) % 4000),
        D,
        10000,
      );
      const q = randoms(random, T * heads * D);
      for (const direction of [1, -1] as const) {
        const r = await on(
          backend,
          { q, cos: Float64Array.from(rot.cos), sin: Float64Array.from(rot.sin) },
          (t) => backend.rope(t.q, t.cos, t.sin, heads, D, direction),
          ["q"],
        );
        const want = Float64Array.from(f32(q));
        rope(want, rot, heads, D, direction);
        close("rope", r.q, want, `${where} direction=${direction}`);
      }

      const g = randoms(random, T * H, 4),
        u = randoms(random, T * H),
        dm = randoms(random, T * H),
        a = randoms(random, T * H);
      // copy: rows [1, T) of a into rows [0, T - 1) of a fresh tensor, and a's first row over into the middle of g's copy
      const from = Math.min(1, T - 1);
      const s = await on(
        backend,
        { g, u, dm, a, into: g },
        async (t) => {
          for (const k of ["m", "dg", "du"]) t[k] = backend.empty(T * H);
          await backend.swiglu(t.m, t.g, t.u);
          await backend.swigluBackward(t.dg, t.du, t.dm, t.g, t.u);
          t.rows = backend.empty((T - from) * H);
          backend.copy(t.rows, 0, t.a, from * H, (T - from) * H);
          backend.copy(t.into, Math.floor(T / 2) * H, t.a, 0, H);
        },
        ["m", "dg", "du", "rows", "into"],
      );
      assert.deepEqual(s.rows, f32(a).subarray(from * H), `copy ${where}`);
      const into = f32(g);
      into.set(f32(a).subarray(0, H), Math.floor(T / 2) * H);
      assert.deepEqual(s.into, into, `copy into the middle ${where}`);
      const [g64, u64, dm64] = [g, u, dm].map((x) => Float64Array.from(f32(x)));
      const m = new Float64Array(T * H),
        dg = new Float64Array(T * H),
        du = new Float64Array(T * H);
      swigluForward(m, g64, u64);
      swigluBackward(dg, du, dm64, g64, u64);
      close("swiglu", s.m, m, where);
      close("swiglu dg", s.dg, dg, where);
      close("swiglu du", s.du, du, where);
    }
  });

  test(
    `${name} backend: cross-entropy (loss, lse, dlogits with weights and scale), sum of squares and AdamW match float64`,
    { skip },
    async () => {
      const backend = await make();
      const random = rng(8);
      for (const [M, V] of [
        [1, 2],
        [13, 256],
        [301, 300],
      ]) {
        const where = `M=${M} V=${V}`;
        const logits = randoms(random, M * V, 8),
          targets = Int32Array.from({ length: M }, () => Math.floor(random() * V));
        const weights = Float32Array.from({ length: M }, (_, i) => (i % 4 === 3 ? 0 : 0.5 + random()));
        const r = await on(
          backend,
          { logits },
          async (t) => {
            t.lse = backend.empty(M);
            t.losses = backend.empty(M);
            t.d = backend.empty(M * V);
            await backend.crossEntropy(t.lse, t.losses, t.logits, targets, weights, V);
            await backend.crossEntropyBackward(t.d, t.logits, t.lse, targets, weights, V, 0.3);
          },
          ["lse", "losses", "d"],
        );
        const l64 = Float64Array.from(f32(logits)),
          lse = new Float64Array(M),
          losses = new Float64Array(M),
          d = new Float64Array(M * V);
        crossEntropyForward(lse, losses, l64, targets, weights, V);
        crossEntropyBackward(d, l64, lse, targets, weights, V, 0.3);
        close("lse", r.lse, lse, where);
        close("losses", r.losses, losses, where);
        close("dLogits", r.d, d, where);
      }
      // the clip over tensors of odd sizes (one larger than a reduction group), active and not, and an overflowed one
      const xs = [randoms(random, 1), randoms(random, 1000), randoms(random, 70001)];
      const norm64 = Math.sqrt(xs.reduce((s, x) => s + f32(x).reduce((a, v) => a + v * v, 0), 0));
      for (const [maxNorm, lossScale] of [
        [norm64 / 1024 / 2, 1024],
        [norm64 * 2, 1],
      ]) {
        const { clip } = await on(
          backend,
          {},
          (t) =>
            backend.gradientClip(
              (t.clip = backend.empty(2)),
              xs.map((x) => backend.upload(f32(x))),
              maxNorm,
              lossScale,
              backend.upload(Float32Array.of(0)), // a finite guard: the step before was clean
            ),
          ["clip"],
        );
        const norm = norm64 / lossScale;
        close("clip", clip, Float64Array.of(norm, Math.min(1, maxNorm / norm) / lossScale), `max ${maxNorm} scale ${lossScale}`);
      }
      const overflowed = await on(
        backend,
        {},
        (t) =>
          backend.gradientClip(
            (t.clip = backend.empty(2)),
            [backend.upload(Float32Array.of(1, Infinity, 2))],
            1,
            1,
            backend.upload(Float32Array.of(0)),
          ),
        ["clip"],
      );
      assert.ok(!Number.isFinite(overflowed.clip[0]), `an infinite gradient gives a norm of ${overflowed.clip[0]}`);
      // a guard that is not finite (the step before overflowed): its value, whatever the gradients
      const guarded = await on(
        backend,
        {},
        (t) =>
          backend.gradientClip(
            (t.clip = backend.empty(2)),
            [backend.upload(Float32Array.of(1, 2))],
            1,
            1,
            backend.upload(Float32Array.of(-Infinity)),
          ),
        ["clip"],
      );
      assert.equal(guarded.clip[0], -Infinity, `a guarded clip gives a norm of ${guarded.clip[0]}`);
      // AdamW: two updates, with clipping scale and decay
      const n = 1001;
      const w0 = randoms(random, n),
        m0 = randoms(random, n, 0.1),
        v0 = randoms(random, n, 0.1).map(Math.abs);
      const grads = [randoms(random, n), randoms(random, n)];
      const scalars = (step: number) => ({
        lr: 0.01,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        decayFactor: 1 - 0.01 * 0.1,
        c1: 1 - 0.9 ** step,
        c2: 1 - 0.95 ** step,
      });
      const gradScale = 0.7;
      const r = await on(
        backend,
        { w: w0, m: m0, v: v0, g1: grads[0], g2: grads[1], clip: Float64Array.of(3, gradScale), overflowed: Float64Array.of(Infinity, 1) },
        async (t) => {
          await backend.adamw(t.w, t.g1, t.m, t.v, scalars(4), t.clip);
          await backend.adamw(t.w, t.g2, t.m, t.v, scalars(5), t.clip);
          await backend.adamw(t.w, t.g2, t.m, t.v, scalars(6), t.overflowed); // skipped: no change
        },
        ["w", "m", "v"],
      );
      const [w, m, v] = [w0, m0, v0].map((x) => Float64Array.from(f32(x)));
      grads.forEach((g32, j) => {
        const s = scalars(4 + j),
          g = f32(g32);
        for (let i = 0; i < n; i++) {
          const grad = g[i] * gradScale;
          m[i] = s.beta1 * m[i] + (1 - s.beta1) * grad;
          v[i] = s.beta2 * v[i] + (1 - s.beta2) * grad * grad;
          w[i] = w[i] * s.decayFactor - (s.lr * (m[i] / s.c1)) / (Math.sqrt(v[i] / s.c2) + s.eps);
        }
      });
      close("adamw w", r.w, w, "");
      close("adamw m", r.m, m, "");
      close("adamw v", r.v, v, "");
    },
  );
}
