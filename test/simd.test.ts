// The WebAssembly SIMD kernels — both builds, relaxed (fused multiply-add) and plain — and the scalar
// fallback, each against the float64 reference: the GEMM on every operand layout the model uses, the
// attention tiles on random configurations. The default suites (attention.test.ts, model.test.ts)
// run whichever build this runtime loads; this file makes sure the others stay right too.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { checkProblem } from "../src/attention/problem.js";
import { gemm, gemmRows } from "../src/cpu/gemm.js";
import { cpuBackward, cpuForward } from "../src/cpu/index.js";
import { loadKernels, type GemmOp, type SimdKernels } from "../src/cpu/simd.js";
import { type Case, compareWithReference, randomCase, relativeError, rng } from "./helpers.js";

const BUILDS: [string, SimdKernels | null][] = [
  ["scalar", null],
  ["relaxed", await loadKernels("relaxed")],
  ["plain", await loadKernels("plain")],
];

test("both SIMD builds load on Node 20 (relaxed SIMD through V8's flag)", () => {
  for (const [name, kernels] of BUILDS.slice(1)) assert.equal(kernels?.variant, name);
});

test("a layout fits a module's memory up to wasm32's 4 GiB, not beyond (the threads then each work in their own)", () => {
  const kernels = BUILDS[1][1]!;
  assert.ok(kernels.fits([2 ** 20, 2 ** 30]));
  assert.ok(!kernels.fits([2 ** 31, 2 ** 31]));
  assert.ok(!kernels.fits([2 ** 32]));
});

// C = A·B (+ C0) in float64, A[i][k] = a[i·aRow + k·aCol], B[k][j] = b[k·bRow + j·bCol]
function referenceGemm(op: GemmOp, c0: Float32Array): Float64Array {
  const { M, N, K, a, b, aRow, aCol, bRow, bCol } = op;
  const c = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    for (let j = 0; j < N; j++) {
      let s = op.accumulate ? c0[i * N + j] : 0;
      for (let k = 0; k < K; k++) s += a[i * aRow + k * aCol] * b[k * bRow + j * bCol];
      c[i * N + j] = s;
    }
  }
  return c;
}

test("GEMM: each build equals float64 for x·wᵀ, dy·w and dyᵀ·x, with and without accumulating, on edge sizes", () => {
  const random = rng(7);
  const values = (n: number) => Float32Array.from({ length: n }, () => 2 * random() - 1);
  // sizes around the micro-tile (4 x 8), the packing slices (256 deep, 128 rows) and the 4 x 4 transposes
  const shapes = [
    [1, 1, 1],
    [3, 7, 5],
    [4, 8, 4],
    [5, 9, 257],
    [37, 70, 300],
    [130, 17, 13],
    [129, 264, 513],
  ];
  for (const [name, kernels] of BUILDS) {
    for (const [M, N, K] of shapes) {
      for (const layout of ["forward", "dX", "dW"] as const) {
        for (const accumulate of [false, true]) {
          const a = values(M * K),
            b = values(K * N),
            c0 = values(M * N);
          const [aRow, aCol] = layout === "dW" ? [1, M] : [K, 1];
          const [bRow, bCol] = layout === "forward" ? [1, K] : [N, 1];
          const op: GemmOp = { c: c0.slice(), a, b, M, N, K, aRow, aCol, bRow, bCol, accumulate };
          // two row ranges, as the worker threads split C
          const half = Math.floor(M / 2);
          gemmRows(op, 0, half, kernels);
          gemmRows(op, half, M, kernels);
          const error = relativeError(op.c, referenceGemm(op, c0));
          assert.ok(error <= 1e-6, `${name} ${layout} ${M}x${N}x${K} accumulate=${accumulate}: relative error ${error}`);
        }
      }
    }
  }
});

test("GEMM on two threads (shared buffers recycled from call to call) equals one thread bit for bit", async () => {
  const random = rng(8);
  const values = (n: number) => Float32Array.from({ length: n }, () => 2 * random() - 1);
  // sizes alternate, so a recycled buffer is sometimes larger than its array
  for (const [M, N, K] of [
    [300, 260, 400],
    [96, 512, 700],
    [300, 260, 400],
    [520, 130, 450],
  ]) {
    for (const accumulate of [false, true]) {
      const a = values(M * K),
        b = values(K * N),
        c0 = values(M * N);
      const op: GemmOp = { c: c0.slice(), a, b, M, N, K, aRow: K, aCol: 1, bRow: N, bCol: 1, accumulate };
      const one = { ...op, c: c0.slice() };
      gemmRows(one, 0, M);
      await gemm(op, 2);
      assert.deepEqual(op.c, one.c, `${M}x${N}x${K} accumulate=${accumulate}`);
    }
  }
});

// cpuForward / cpuBackward on the calling thread with the given kernels
function onThread(kernels: SimdKernels | null) {
  return async (c: Case) => {
    const inputs = { q: c.q, k: c.k, v: c.v, cuSeqlens: c.cuSeqlens };
    const p = checkProblem(inputs, c.blockSize, c.topK, c.scale);
    const f = await cpuForward(p, c.q.data, c.k.data, c.v.data, 1, kernels);
    const g = await cpuBackward(p, c.q.data, c.k.data, c.v.data, f.out, f.lse, c.dout.data, f.width > 0 ? f.past : undefined, 1, kernels);
    const t = (data: Float32Array, shape: number[]) => ({ data, shape });
    return {
      out: t(f.out, [c.tokens, c.qHeads, c.headDim]),
      lse: t(f.lse, [c.tokens, c.qHeads]),
      routing: { data: f.past, shape: [c.tokens, c.qHeads, f.width] },
      dq: t(g.dq, [c.tokens, c.qHeads, c.headDim]),
      dk: t(g.dk, [c.tokens, c.kvHeads, c.headDim]),
      dv: t(g.dv, [c.tokens, c.kvHeads, c.headDim]),
    };
  };
}

test("attention tiles: each build (and the scalar fallback) equals the float64 reference on 24 random configurations, a negative scale among them", async () => {
  for (const [name, kernels] of BUILDS) {
    const failures: string[] = [];
    for (let i = 0; i < 24; i++) {
      const c = randomCase(9000 + i, 5e5, 1200);
      // a negative scale: the row maximum of scale·S is then at the smallest score
      failures.push(...(await compareWithReference(i === 0 ? { ...c, scale: -c.scale } : c, undefined, onThread(kernels))));
    }
    assert.deepEqual(failures.slice(0, 5), [], `${name}: ${failures.length} failures`);
  }
});

test("src/cpu/wasm/binary.ts is what scripts/build-wasm.sh builds from src/cpu/wasm/assembly/", () => {
  const out = join(mkdtempSync(join(tmpdir(), "moba-wasm-")), "binary.ts");
  execFileSync("bash", [new URL("../scripts/build-wasm.sh", import.meta.url).pathname, out], { stdio: "pipe" });
  assert.ok(
    readFileSync(out, "utf8") === readFileSync(new URL("../src/cpu/wasm/binary.ts", import.meta.url), "utf8"),
    "run scripts/build-wasm.sh and commit src/cpu/wasm/binary.ts",
  );
});
