// The GEMM harness (llm.c's dev/cuda style): numbered versions of y[M, N] (+)= A · B on WebGPU,
// each validated against a float64 reference and timed by timestamp queries on the model's shapes.
// Usage: node --import tsx dev/gemm/gemm.mts [VERSION,...]    (e.g. 1,4; default: all)
// Prints one JSON line per (version, shape) and a table last; PyTorch's twin: dev/torch/gemm.py.
//
// Versions (1 is src/'s float32 kernel; the others the tensor-core generator of
// src/webgpu/gemm/mma.wgsl.ts with different tiles — the winner is MMA_TILES in src/webgpu/gemm/index.ts):
//   1: float32, 64x64 tile, 4x4 outputs per thread, 16-deep slices in workgroup memory
//   2: subgroup matrices (f16 in, f32 acc), 64x64 tile, 4 subgroups of 2x2 accumulators, depth 32
//   3: 128x128 tile, 8 subgroups of 4x2 accumulators, depth 32
//   4: version 3 with the next slice's loads in registers during this slice's MMAs (prefetch)
//   5: 128x128 tile, 4 subgroups of 4x4 accumulators, depth 32, prefetch
//   6: 128x64 tile, 4 subgroups of 4x2 accumulators, depth 32, prefetch
//   7: 128x128 tile, 8 subgroups of 4x2 accumulators, depth 16, prefetch
//   8: 64x64 tile, 4 subgroups, depth 32, prefetch (the small-problem tile)
//   9: version 4 staging each slice in its storage's orientation (no column-by-column writes into
//      workgroup memory), fragments loaded column-major where that needs it
//  10: version 9 with vec4 loads from storage
//  11: version 8 staged as 9, vec4 loads (the small-problem tile)
//  12: version 5 (4 subgroups of 4x4 accumulators) staged as 9, vec4 loads
//  12-14: that tile splitting K until 2, 4 and 8 workgroups per SM (264, 528, 1056) for the dW
//      products' few tiles; 13 is src/'s (k dw 20.8 -> 27.8 TFLOP/s against 12, the rest unchanged)
//  15: the dW products (A and B stored K-major) as version 13's A · Bᵀ on copies of A and B
//      transposed first (a 32x32-tile transpose each, timed with the GEMM): the fast layout, paid in bytes
//  16: version 13 storing a tile wholly inside y straight from the accumulators to storage (y +=
//      loads y into them first) instead of through a 16x16 scratch with two barriers per accumulator
//  17: version 11 (the small-problem tile) storing as 16 (16 and 17 are src/'s since 2026-12-03)
//  18: version 16 with 64-deep slices (half the barriers per K; more registers for the prefetch)
//  19: 128x256 tile on 8 subgroups (2x4) of 4x4 accumulators: each staged A slice serves twice the columns
//  20: 256x128 tile on 8 subgroups (4x2) of 4x4 accumulators: each staged B slice serves twice the rows
// GEMM_ODD=1: test/backend.test.ts's odd shapes instead of the model's (every row checked, the
// wrong elements' rows and columns listed): where version 16 failed in src/.
import { f16ToFloat, floatToF16 } from "../../src/io/half.js";
import { getDevice } from "../../src/webgpu/device.js";
import { type GemmCall, type MmaPlan, type MmaTile, planMmaGemm, recordGemm, recordMmaGemm } from "../../src/webgpu/gemm/index.js";
import { Buffers, defineKernel, dispatch, pipeline, readBack, startProfile, stopProfile, storageBuffer } from "../../src/webgpu/kernel.js";

/** y[cols, rows] = x[rows, cols]ᵀ, float32, through a 32 x 33 workgroup tile (coalesced reads and writes). */
const TRANSPOSE = defineKernel<null>({
  name: "transpose",
  workgroupSize: 256,
  bindings: ["p", "x", "y"],
  wgsl: () => /* wgsl */ `
struct P { rows: u32, cols: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
var<workgroup> t: array<f32, ${32 * 33}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tilesC = (p.cols + 31u) / 32u;
  let tile = wg.x + wg.y * groups.x;
  let r0 = (tile / tilesC) * 32u;
  let c0 = (tile % tilesC) * 32u;
  for (var i = 0u; i < 4u; i++) {
    let e = lid + i * 256u;
    let r = e / 32u;
    let c = e % 32u;
    if (r0 + r < p.rows && c0 + c < p.cols) { t[r * 33u + c] = x[(r0 + r) * p.cols + c0 + c]; }
  }
  workgroupBarrier();
  for (var i = 0u; i < 4u; i++) {
    let e = lid + i * 256u;
    let c = e / 32u;
    let r = e % 32u;
    if (r0 + r < p.rows && c0 + c < p.cols) { y[(c0 + c) * p.rows + r0 + r] = t[r * 33u + c]; }
  }
}`,
});

const old = { natural: false, vector: false, directStore: false };
const VERSIONS: Record<number, Omit<MmaTile, "wholeColumns"> | "f32"> = {
  1: "f32",
  2: { tileM: 64, tileN: 64, warpsM: 2, warpsN: 2, depth: 32, prefetch: false, ...old },
  3: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 4, depth: 32, prefetch: false, ...old },
  4: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 4, depth: 32, prefetch: true, ...old },
  5: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 2, depth: 32, prefetch: true, ...old },
  6: { tileM: 128, tileN: 64, warpsM: 2, warpsN: 2, depth: 32, prefetch: true, ...old },
  7: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 4, depth: 16, prefetch: true, ...old },
  8: { tileM: 64, tileN: 64, warpsM: 2, warpsN: 2, depth: 32, prefetch: true, ...old },
  9: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 4, depth: 32, prefetch: true, natural: true, vector: false, directStore: false },
  10: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 4, depth: 32, prefetch: true, natural: true, vector: true, directStore: false },
  11: { tileM: 64, tileN: 64, warpsM: 2, warpsN: 2, depth: 32, prefetch: true, natural: true, vector: true, directStore: false },
  12: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 2, depth: 32, prefetch: true, natural: true, vector: true, directStore: false },
  16: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 2, depth: 32, prefetch: true, natural: true, vector: true, directStore: true },
  17: { tileM: 64, tileN: 64, warpsM: 2, warpsN: 2, depth: 32, prefetch: true, natural: true, vector: true, directStore: true },
  18: { tileM: 128, tileN: 128, warpsM: 2, warpsN: 2, depth: 64, prefetch: true, natural: true, vector: true, directStore: true },
  19: { tileM: 128, tileN: 256, warpsM: 2, warpsN: 4, depth: 32, prefetch: true, natural: true, vector: true, directStore: true },
  20: { tileM: 256, tileN: 128, warpsM: 4, warpsN: 2, depth: 32, prefetch: true, natural: true, vector: true, directStore: true },
};
VERSIONS[13] = VERSIONS[14] = VERSIONS[15] = VERSIONS[12];
/** Versions that transpose K-major operands first. */
const TRANSPOSING = new Set([15]);
/** Workgroups a version's split-K aims at, where it is not src/'s. */
const SPLIT_TARGETS: Record<number, number> = { 12: 264, 14: 1056 };

// The bench-train model (hidden 512, 8/4 heads of 64, SwiGLU 1344, vocab 256) at T tokens: its
// forward x · wᵀ, the backward's dx = dy · w (accumulating) and dw += dyᵀ · x; and 4096³.
const T = Number(process.env.GEMM_TOKENS ?? 32768);
const MODEL_SHAPES: (GemmCall & { name: string })[] = [
  { name: "4096^3", M: 4096, N: 4096, K: 4096, aTransposed: false, bTransposed: false, accumulate: false },
  { name: "gate/up fwd", M: T, N: 1344, K: 512, aTransposed: false, bTransposed: false, accumulate: false },
  { name: "down fwd", M: T, N: 512, K: 1344, aTransposed: false, bTransposed: false, accumulate: false },
  { name: "q/o fwd", M: T, N: 512, K: 512, aTransposed: false, bTransposed: false, accumulate: false },
  { name: "k/v/head fwd", M: T, N: 256, K: 512, aTransposed: false, bTransposed: false, accumulate: false },
  { name: "gate dx", M: T, N: 512, K: 1344, aTransposed: false, bTransposed: true, accumulate: true },
  { name: "gate dw", M: 1344, N: 512, K: T, aTransposed: true, bTransposed: true, accumulate: true },
  { name: "k dw", M: 256, N: 512, K: T, aTransposed: true, bTransposed: true, accumulate: true },
];
/** The model's three products of test/backend.test.ts's (M, K, N): y = x · wᵀ, dx (+)= dy · w, dw += dyᵀ · x. */
const ODD_SHAPES = [
  [67, 65, 130],
  [300, 64, 131],
  [300, 64, 132],
  [260, 128, 64],
].flatMap(([M, K, N]) =>
  [false, true].flatMap((accumulate) => [
    ...(accumulate ? [] : [{ name: `y ${M}x${K}x${N}`, M, N, K, aTransposed: false, bTransposed: false, accumulate }]),
    { name: `dx${accumulate ? "+" : ""} ${M}x${K}x${N}`, M, N: K, K: N, aTransposed: false, bTransposed: true, accumulate },
    ...(accumulate ? [{ name: `dw+ ${M}x${K}x${N}`, M: N, N: K, K: M, aTransposed: true, bTransposed: true, accumulate }] : []),
  ]),
);
const SHAPES = process.env.GEMM_ODD ? ODD_SHAPES : MODEL_SHAPES;

const WARM_UP_MS = 400;
const CALLS = 20;
const gpu = await getDevice();
console.log(`adapter: ${gpu.adapterInfo}; subgroup matrices f16->f32 16x16x16: ${gpu.mma16}; workgroup memory ${gpu.maxWorkgroupStorage}`);
const wanted = process.argv[2] ? process.argv[2].split(",").map(Number) : Object.keys(VERSIONS).map(Number);

let seed = 12345;
const random = (n: number) => Float32Array.from({ length: n }, () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 31 - 1);
const rounded = (x: Float32Array) => x.map((v) => f16ToFloat(floatToF16(v)));

/** ‖y − ref‖ / ‖ref‖ over `rows` sampled rows, ref = y0 + A · B in float64. */
function check(
  c: GemmCall,
  a: Float32Array,
  b: Float32Array,
  y0: Float32Array | null,
  y: Float32Array,
  rows: number[],
): { error: number; unwritten: number; wrong: string } {
  let num = 0,
    den = 0,
    unwritten = 0;
  const bad: [number, number][] = []; // elements off by more than 1e-3 of the row's scale
  for (const m of rows) {
    for (let n = 0; n < c.N; n++) {
      let s = y0 ? y0[m * c.N + n] : 0;
      for (let k = 0; k < c.K; k++) {
        const av = c.aTransposed ? a[k * c.M + m] : a[m * c.K + k];
        const bv = c.bTransposed ? b[k * c.N + n] : b[n * c.K + k];
        s += av * bv;
      }
      const got = y[m * c.N + n];
      if (Number.isNaN(got)) unwritten++;
      if (!(Math.abs(got - s) <= 1e-3 * (1 + Math.abs(s)))) bad.push([m, n]);
      num += (got - s) ** 2;
      den += s * s;
    }
  }
  const span = (xs: number[]) => (xs.length ? `${Math.min(...xs)}-${Math.max(...xs)}` : "");
  const wrong = bad.length ? `${bad.length} wrong, rows ${span(bad.map((e) => e[0]))}, columns ${span(bad.map((e) => e[1]))}` : "";
  return { error: Math.sqrt(num / den), unwritten, wrong };
}

const results: { version: number; shape: string; ms: number; tflops: number; error: number; plan: string }[] = [];
for (const shape of SHAPES) {
  if (gpu.software && shape.M * shape.N * shape.K > 1e10) continue; // a CPU adapter checks the harness, not speed
  const a = random(shape.M * shape.K),
    b = random(shape.N * shape.K);
  const y0 = shape.accumulate ? random(shape.M * shape.N) : null;
  const [a16, b16] = [rounded(a), rounded(b)];
  const A = storageBuffer(gpu, a, "a"),
    B = storageBuffer(gpu, b, "b");
  const Y = storageBuffer(gpu, shape.M * shape.N * 4, "y");
  const rows =
    shape.M <= 512
      ? Array.from({ length: shape.M }, (_, i) => i)
      : Array.from({ length: 24 }, (_, i) => Math.floor(((i + 0.5) / 24) * shape.M));
  for (const version of wanted) {
    const tile = VERSIONS[version];
    if (tile !== "f32" && !gpu.mma16) continue;
    const transposing = TRANSPOSING.has(version);
    if (transposing && !shape.aTransposed && !shape.bTransposed) continue;
    const call = transposing ? { ...shape, aTransposed: false, bTransposed: false } : shape;
    const plan: MmaPlan | null = tile === "f32" ? null : planMmaGemm(call, [{ ...tile, wholeColumns: false }], SPLIT_TARGETS[version]);
    const mem = new Buffers(gpu);
    // the transposing versions' copies: A as [M, K], B as [N, K]
    const copies = transposing ? [mem.uninitialized(shape.M * shape.K * 4, "aᵀ"), mem.uninitialized(shape.N * shape.K * 4, "bᵀ")] : [];
    const transpose = await pipeline(gpu, TRANSPOSE, null);
    // split-K partials in one buffer reused by every call, as the model's step does: with a pooled
    // buffer per call this harness timed the dW products at 39-46 TFLOP/s on 2026-12-03, while the
    // step's profile of the same day gave its dW products 104 (docs/benchmarks.md)
    let partials: GPUBuffer | null = null;
    const sharedPartials = (bytes: number) => (partials ??= mem.uninitialized(bytes, "split-K partials"));
    const record = async (calls: number) => {
      const encoder = gpu.device.createCommandEncoder();
      for (let i = 0; i < calls; i++) {
        if (transposing) {
          const [At, Bt] = copies;
          for (const [from, to, rows, cols, transposed] of [
            [A, At, shape.K, shape.M, shape.aTransposed],
            [B, Bt, shape.K, shape.N, shape.bTransposed],
          ] as const)
            if (transposed)
              dispatch(
                encoder,
                gpu,
                transpose,
                [mem.uniform([rows, cols], "transpose"), from, to],
                Math.ceil(rows / 32) * Math.ceil(cols / 32),
                "transpose",
              );
          await recordMmaGemm(
            gpu,
            mem,
            () => encoder,
            { a: shape.aTransposed ? At : A, b: shape.bTransposed ? Bt : B, y: Y },
            plan!,
            sharedPartials,
          );
        } else if (plan) await recordMmaGemm(gpu, mem, () => encoder, { a: A, b: B, y: Y }, plan, sharedPartials);
        else await recordGemm(gpu, mem, () => encoder, { a: A, b: B, y: Y }, shape, "f32");
      }
      gpu.device.queue.submit([encoder.finish()]);
    };
    // validate: y filled with y0 (accumulating) or NaN (so unwritten elements show)
    gpu.device.queue.writeBuffer(Y, 0, y0 ?? new Float32Array(shape.M * shape.N).fill(NaN));
    await record(1);
    const [bytes] = await readBack(gpu, [{ buffer: Y, bytes: shape.M * shape.N * 4 }]);
    const { error, unwritten, wrong } = check(shape, plan ? a16 : a, plan ? b16 : b, y0, new Float32Array(bytes), rows);
    // time: the GPU kept busy for WARM_UP_MS first (it idles at a low clock during the check above),
    // then 20 calls back to back in one submit, first start to last end (y keeps accumulating: its values do not matter here)
    for (const start = performance.now(); performance.now() - start < WARM_UP_MS;) {
      await record(5);
      await gpu.device.queue.onSubmittedWorkDone();
    }
    startProfile(gpu);
    await record(CALLS);
    const d = await stopProfile();
    const ms = Math.max(...d.map((x) => x.start + x.ms)) / CALLS;
    mem.destroy();
    const tflops = (2 * shape.M * shape.N * shape.K) / ms / 1e9;
    const planText = plan ? `${plan.shape.tileM}x${plan.shape.tileN} ${plan.tiles} tiles x ${plan.splits} splits` : "64x64";
    results.push({ version, shape: shape.name, ms, tflops, error, plan: planText });
    console.log(JSON.stringify({ version, ...shape, ms, tflops, error, unwritten, plan: planText }));
    // float32 sums of K products: the norm-wise error grows like √K · 2⁻²⁴; allow 4x that
    if (unwritten > 0 || !(error < 4 * Math.sqrt(shape.K) * 2 ** -24))
      console.log(`FAIL version ${version} ${shape.name} (${planText}): error ${error}, ${unwritten} unwritten; ${wrong}`);
  }
  [A, B, Y].forEach((x) => x.destroy());
}
// the table: TFLOP/s per shape (rows) and version (columns)
const versions = [...new Set(results.map((r) => r.version))];
console.log(
  `\nTFLOP/s (GPU time of 20 calls back to back after a warm-up), T = ${T}; error: max relative error vs float64 of the (f16-rounded) operands`,
);
console.log(["shape".padEnd(14), ...versions.map((v) => `v${v}`.padStart(7)), "max err".padStart(9)].join(" "));
for (const shape of SHAPES) {
  const row = results.filter((r) => r.shape === shape.name);
  console.log(
    [
      shape.name.padEnd(14),
      ...versions.map((v) => (row.find((r) => r.version === v)?.tflops.toFixed(1) ?? "-").padStart(7)),
      Math.max(...row.map((r) => r.error))
        .toExponential(1)
        .padStart(9),
    ].join(" "),
  );
}
process.exit(0);
