// GFLOP/s of the CPU backend's GEMM (src/cpu/gemm.ts) for every Linear of the tour's model and of
// `moba bench-train`'s default model (forward x·wᵀ, dX = dy·w, dW = dyᵀ·x), beside numpy's
// OpenBLAS float32 on the same machine in the same run (dev/gemm-bench-numpy.py, run with
// OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset so OpenBLAS picks its own kernel).
//
//   node --import tsx dev/gemm-bench.mts [--models tour,bench-train] [--seconds 0.5] [--threads N]
// --threads: threads of both sides (OPENBLAS_NUM_THREADS for numpy; default: the machine's cores).
//   MOBA_SIMD=plain | MOBA_SIMD=off   the plain-SIMD build or the scalar JavaScript kernel
//
// Each product runs for about `seconds` on each side (at least 3 calls), numpy then moba, product by
// product, so both meet the same load; the best call of each is reported (on a shared machine the best
// is the closest to the unloaded speed, for both sides alike).
import { execFileSync } from "node:child_process";
import { cpus } from "node:os";
import { parseArgs } from "node:util";
import { gemm } from "../src/cpu/gemm.ts";
import { cores } from "../src/cpu/pool.ts";
import { simd, type GemmOp } from "../src/cpu/simd.ts";

const { values } = parseArgs({
  options: {
    models: { type: "string", default: "tour,bench-train" },
    seconds: { type: "string", default: "0.5" },
    threads: { type: "string" },
  },
});
const seconds = Number(values.seconds);
const threads = values.threads === undefined ? await cores() : Number(values.threads);

// tokens per step and the Linears (in -> out features) of each model, deduplicated by shape
const MODELS: Record<string, { tokens: number; linears: [string, number, number][] }> = {
  // npm start: hidden 128, 4 heads / 2 kv heads, MLP 352, 256 bytes; 2 rows of 512 tokens
  tour: {
    tokens: 1024,
    linears: [
      ["q_proj, o_proj", 128, 128],
      ["k_proj, v_proj", 128, 64],
      ["gate_proj, up_proj", 128, 352],
      ["down_proj", 352, 128],
      ["lm_head", 128, 256],
    ],
  },
  // moba bench-train: hidden 512, 8 heads / 4 kv heads, MLP 1344, 256 bytes; one row of 8192 tokens
  "bench-train": {
    tokens: 8192,
    linears: [
      ["q_proj, o_proj", 512, 512],
      ["k_proj, v_proj", 512, 256],
      ["gate_proj, up_proj", 512, 1344],
      ["down_proj", 1344, 512],
      ["lm_head", 512, 256],
    ],
  },
};

interface Case {
  model: string;
  linear: string;
  pass: "forward" | "dX" | "dW";
  M: number;
  N: number;
  K: number;
}
const cases: Case[] = [];
for (const model of values.models.split(",")) {
  const { tokens: T, linears } = MODELS[model];
  for (const [linear, inF, outF] of linears) {
    cases.push({ model, linear, pass: "forward", M: T, N: outF, K: inF }); // y[T, out] = x[T, in] · w[out, in]ᵀ
    cases.push({ model, linear, pass: "dX", M: T, N: inF, K: outF }); // dx[T, in] = dy[T, out] · w[out, in]
    cases.push({ model, linear, pass: "dW", M: outF, N: inF, K: T }); // dw[out, in] = dy[T, out]ᵀ · x[T, in]
  }
}

const random = (n: number) => Float32Array.from({ length: n }, () => Math.random() * 2 - 1);

function operands(c: Case): GemmOp {
  const { M, N, K } = c;
  const a = random(M * K),
    b = random(K * N),
    out = new Float32Array(M * N);
  if (c.pass === "forward") return { c: out, a, b, M, N, K, aRow: K, aCol: 1, bRow: 1, bCol: K, accumulate: false };
  if (c.pass === "dX") return { c: out, a, b, M, N, K, aRow: K, aCol: 1, bRow: N, bCol: 1, accumulate: false };
  return { c: out, a, b, M, N, K, aRow: 1, aCol: M, bRow: N, bCol: 1, accumulate: true };
}

async function best(run: () => Promise<void>): Promise<number> {
  await run(); // warm-up: workers, JIT, wasm memory
  const times: number[] = [];
  const started = performance.now();
  while (times.length < 3 || performance.now() - started < seconds * 1000) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  return Math.min(...times) / 1000;
}

// numpy's side: one python process per product (dev/gemm-bench-numpy.py), right before ours
const env = { ...process.env };
delete env.OPENBLAS_CORETYPE;
delete env.OPENBLAS_L2_SIZE;
env.OPENBLAS_NUM_THREADS = String(threads);
const numpy = (c?: Case) =>
  JSON.parse(
    execFileSync("python3", [new URL("./gemm-bench-numpy.py", import.meta.url).pathname, JSON.stringify({ case: c ?? null, seconds })], {
      env,
      encoding: "utf8",
    }),
  ) as {
    blas: string;
    seconds: number;
  };

const kernel = simd ? `WebAssembly SIMD (${simd.variant})` : "scalar JavaScript";
console.log(
  `gemm-bench: ${cpus()[0]?.model ?? "cpu"} x${cpus().length}, node ${process.version}, ${threads} threads each; moba: ${kernel}; numpy: ${numpy().blas}`,
);
console.log(`| model | linear | pass | M x N x K | moba GFLOP/s | numpy GFLOP/s | moba / numpy |`);
console.log(`|---|---|---|---|---|---|---|`);
let mobaTotal = 0,
  numpyTotal = 0,
  flopTotal = 0;
for (const c of cases) {
  const theirs = numpy(c).seconds;
  const op = operands(c);
  const s = await best(() => gemm(op, threads));
  const flop = 2 * c.M * c.N * c.K;
  mobaTotal += s;
  numpyTotal += theirs;
  flopTotal += flop;
  const g = flop / s / 1e9,
    n = flop / theirs / 1e9;
  console.log(
    `| ${c.model} | ${c.linear} | ${c.pass} | ${c.M} x ${c.N} x ${c.K} | ${g.toFixed(1)} | ${n.toFixed(1)} | ${((100 * g) / n).toFixed(0)}% |`,
  );
}
const g = flopTotal / mobaTotal / 1e9,
  n = flopTotal / numpyTotal / 1e9;
console.log(`| all | (time-weighted) | | | ${g.toFixed(1)} | ${n.toFixed(1)} | ${((100 * g) / n).toFixed(0)}% |`);
