// The attention kernels' harness, in llm.c's dev/cuda style as dev/gemm/gemm.mts is for the GEMM:
// what forward.mts, dq.mts, dkdv.mts and gate.mts share. Each lists numbered versions of its kernel
// (src/'s own pick, then every variant src/'s generators make), checks every version against the
// float64 reference (test/helpers.ts) on small odd cases with its outputs poisoned with NaN first (so
// unwritten elements show), then times it by timestamp queries after a time-based warm-up at the
// sizes of `moba bench`. Prints one JSON line per check and per (version, shape), a table last.
//
// Environment: ATTN_TOKENS (default 32768), ATTN_HEADS (8, even) and ATTN_BLOCK (512) size the timing
// shapes (on lavapipe e.g. ATTN_TOKENS=512 ATTN_HEADS=2 ATTN_BLOCK=64: 8 blocks, so top-3 routes),
// ATTN_CALLS (5) the timed calls per (version, shape).
import { attendedKeys, type AttentionProblem, type Precision } from "../../src/attention/problem.js";
import { median, table } from "../../src/run/util.js";
import { backwardOnGpu } from "../../src/webgpu/attention/backward.js";
import { forwardOnGpu } from "../../src/webgpu/attention/forward.js";
import { type Pass, STORED_DS_MAX_BYTES, type Variant } from "../../src/webgpu/attention/paths.js";
import { type DeviceLimits, plan, storableDs } from "../../src/webgpu/attention/plan.js";
import { checked, getDevice, type MobaDevice } from "../../src/webgpu/device.js";
import { Buffers, startProfile, stopProfile } from "../../src/webgpu/kernel.js";
import { type Case, compareWithReference, type GpuPasses, makeCase, problemOf, runOnGpu, uploadCase } from "../../test/helpers.js";

const TOKENS = Number(process.env.ATTN_TOKENS ?? 32768);
const HEADS = Number(process.env.ATTN_HEADS ?? 8);
const BLOCK = Number(process.env.ATTN_BLOCK ?? 512);
if (!(HEADS >= 2 && HEADS % 2 === 0))
  throw new Error(`ATTN_HEADS: expected an even number of heads (kv heads are half at headDim 64), got ${HEADS}`);
const CALLS = Number(process.env.ATTN_CALLS ?? 5);
/** The GPU runs its kernels for this long before the timed calls (it idles at a low clock). */
const WARM_UP_MS = 400;

/**
 * TFLOP/s ceilings on the H200 (docs/benchmarks.md, 2026-12-03): our WGSL GEMM's best in
 * dev/gemm/gemm.mts (f16 subgroup matrices: 152; float32: 14.6) and the hardware's dense peak (bf16 790, float32 67).
 */
const CEILINGS = { tensorCores: { gemm: 152, peak: 790 }, f32: { gemm: 14.6, peak: 67 } };

/** A timing shape: one attention call of the bench. */
export interface Shape {
  name: string;
  case: Case;
}

/**
 * `moba bench --backend webgpu`'s rows (query heads = kv heads, headDim 128) and the bench-train
 * model's attention (8 query heads, 4 kv heads of 64), MoBA block 512 / top-3 and full attention.
 * Made on first use: the inputs of one are hundreds of MB at 32K tokens.
 */
export function* shapes(): Generator<Shape> {
  for (const [headDim, kvHeads] of [
    [128, HEADS],
    [64, HEADS / 2],
  ]) {
    for (const topK of [3, Infinity]) {
      const name = `${TOKENS / 1024}K ${HEADS}/${kvHeads}x${headDim} ${topK === Infinity ? "full" : `moba ${BLOCK}/${topK}`}`;
      yield { name, case: makeCase(7, { cuSeqlens: [0, TOKENS], qHeads: HEADS, kvHeads, headDim, blockSize: BLOCK, topK }) };
    }
  }
}

/**
 * The checks: small odd cases, so every edge of the tiles shows. MoBA over three sequences (one of
 * length 1) with a block size of 37, and over two with blocks of 48; full attention over two;
 * headDim 19 for the float32 kernels (the tensor-core ones need a multiple of 16).
 */
export const CHECKS: Case[] = [
  makeCase(1, { cuSeqlens: [0, 1, 150, 333], qHeads: 4, kvHeads: 2, headDim: 80, blockSize: 37, topK: 3 }),
  // blocks on 16-key tiles (the stored dS's condition, plan.ts: storableDs), 48 keys: not a multiple of dk/dv's 32 or 64
  makeCase(4, { cuSeqlens: [0, 48, 400], qHeads: 4, kvHeads: 2, headDim: 64, blockSize: 48, topK: 3 }),
  makeCase(2, { cuSeqlens: [0, 203, 250], qHeads: 3, kvHeads: 1, headDim: 48, blockSize: 64, topK: Infinity }),
  makeCase(3, { cuSeqlens: [0, 97, 161], qHeads: 2, kvHeads: 1, headDim: 19, blockSize: 16, topK: 4 }),
];

export const describeCase = (c: Case) =>
  `[${c.cuSeqlens}] ${c.qHeads}/${c.kvHeads}x${c.headDim} ${c.topK === Infinity ? "full" : `block ${c.blockSize}/${c.topK}`}`;

/** Attended (query, key) pairs of a problem, over every query head. */
export const pairs = (p: AttentionProblem) => p.qHeads * attendedKeys(p.cuSeqlens, p.blockSize, p.topK);

/** The versions asked for on the command line ("1,4"), else all. */
export function wantedVersions(versions: Record<number, unknown>): number[] {
  const all = Object.keys(versions).map(Number);
  if (!process.argv[2]) return all;
  const wanted = process.argv[2].split(",").map(Number);
  const unknown = wanted.filter((v) => !all.includes(v));
  if (unknown.length > 0) throw new Error(`versions: expected some of ${all.join(",")}, got ${unknown.join(",")}`);
  return wanted;
}

export async function device(): Promise<MobaDevice> {
  const gpu = await getDevice();
  console.log(
    `adapter: ${gpu.adapterInfo}; subgroup matrices f16 16x16x16: ${gpu.mma16}; workgroup memory ${gpu.maxWorkgroupStorage}; ` +
      `storage buffers per stage ${gpu.storageBuffersPerStage}`,
  );
  return gpu;
}

/**
 * GPU time (ms) of the dispatches whose label matches in one `call`: the median of CALLS calls, each
 * profiled by timestamp queries, after WARM_UP_MS of calls (compiling, and the clock coming up from idle).
 */
export async function gpuTime(gpu: MobaDevice, call: () => Promise<unknown>, label: RegExp): Promise<number> {
  const warmUp = performance.now();
  do {
    await call();
    await gpu.device.queue.onSubmittedWorkDone();
  } while (performance.now() - warmUp < WARM_UP_MS);
  const times: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    startProfile(gpu);
    await call();
    await gpu.device.queue.onSubmittedWorkDone();
    const dispatches = (await stopProfile()).filter((d) => label.test(d.label));
    if (dispatches.length === 0) throw new Error(`no dispatch matches ${label}`);
    times.push(dispatches.reduce((sum, d) => sum + d.ms, 0));
  }
  return median(times);
}

export interface Timing {
  version: number;
  shape: string;
  gflop: number;
  ms: number;
  tflops: number;
  tensorCores: boolean;
  /** The pass src/ picks for this problem is this version's. */
  srcDefault: boolean;
}

/** Prints the table: TFLOP/s by shape (rows) and version (columns), the best against its ceiling; the checks; what each version ran. */
export function report(
  kernel: string,
  gpu: MobaDevice,
  timings: Timing[],
  checks: Map<number, string>,
  legend: Map<number, Set<string>>,
): void {
  const versions = [...checks.keys()];
  const rows = [...new Set(timings.map((t) => t.shape))].map((shape) => {
    const row = timings.filter((t) => t.shape === shape);
    const best = row.reduce((a, b) => (b.tflops > a.tflops ? b : a));
    const ceiling = best.tensorCores ? CEILINGS.tensorCores : CEILINGS.f32;
    const cell = (v: number) => {
      const t = row.find((t) => t.version === v);
      return t ? `${t.tflops.toPrecision(3)}${t.srcDefault ? "*" : ""}` : "-";
    };
    const percent = (x: number) => `${((100 * best.tflops) / x).toFixed(0)}%`;
    return [
      shape,
      row[0].gflop.toPrecision(3),
      ...versions.map(cell),
      `v${best.version}`,
      `${ceiling.gemm} | ${ceiling.peak}`,
      `${percent(ceiling.gemm)} | ${percent(ceiling.peak)}`,
    ];
  });
  rows.push(["check (max error)", "", ...versions.map((v) => checks.get(v)!), "", "", ""]);
  console.log(
    `\n${kernel}: TFLOP/s of its dispatches' GPU time (timestamp queries, median of ${CALLS} calls after ${WARM_UP_MS} ms of warm-up) on ${gpu.adapterInfo}; ` +
      `* = src/'s pick; ceiling: our WGSL GEMM's best | the H200's peak (tensor cores or float32, as the best version)`,
  );
  console.log(table(["shape", "GFLOP", ...versions.map((v) => `v${v}`), "best", "ceiling", "of ceiling"], rows));
  for (const [v, texts] of legend) console.log(`v${v}: ${[...texts].join("; ")}`);
}

/** A version of a kernel pass: the precision it runs at, and the variant forced (none: src/'s pick). */
export interface Version {
  precision: Precision;
  variant?: Variant;
}

type Output = "out" | "lse" | "dq" | "dk" | "dv";

/** One of the passes forwardOnGpu and backwardOnGpu dispatch: forward, dq or dk/dv. */
export interface PassKernel {
  name: "forward" | "dq" | "dkdv";
  /** FLOPs per attended pair and headDim: forward 4 (QKᵀ, PV), dq 6 (S again, dP, dS K), dk/dv 8 (S, dP, dV, dK). */
  flopsPerPair: number;
  /** Its dispatches' labels (src/webgpu/attention/forward.ts, backward.ts). */
  label: RegExp;
  /** The tensors it writes: its errors are theirs. */
  outputs: Output[];
  versions: Record<number, Version>;
  /** src/'s pass for a problem (paths.ts), with the variant forced where given. */
  pass: (gpu: DeviceLimits, p: AttentionProblem, variant?: Variant) => Pass;
  /** Workgroup bytes of a variant at headDim. */
  sharedBytes: (headDim: number, variant: Variant) => number;
  /** What else a tensor-core variant needs of the device or the problem, if it lacks it. */
  lacks?: (gpu: MobaDevice, p: AttentionProblem, variant: Variant) => string | null;
}

/** Why the device cannot run a variant at headDim, or null. */
function unsupported(gpu: MobaDevice, k: PassKernel, variant: Variant | undefined, p: AttentionProblem): string | null {
  if (!variant) return null;
  const { headDim } = p;
  if (variant.tensorCores && !gpu.mma16) return "no f16 16x16x16 subgroup matrices";
  if (variant.tensorCores && headDim % 16 !== 0) return `headDim ${headDim} is not a multiple of 16`;
  const bytes = k.sharedBytes(headDim, variant);
  if (bytes > gpu.maxWorkgroupStorage) return `needs ${bytes} bytes of workgroup memory, the device has ${gpu.maxWorkgroupStorage}`;
  if (variant.tensorCores && variant.storedDs && !storableDs(plan(p), Math.min(gpu.maxStorageBinding, STORED_DS_MAX_BYTES)))
    return "stored dS: needs MoBA with blocks on 16-key tiles (plan.ts: storableDs)";
  return variant.tensorCores ? (k.lacks?.(gpu, p, variant) ?? null) : null;
}

const describePass = (pass: Pass) =>
  `${pass.kernel} ${pass.shape.TQ}x${pass.shape.TK}${pass.storedDs ? " (stored dS)" : ""}${!pass.tensorCores && pass.shape.input === "f16" ? " on f16 copies" : ""}`;
const samePass = (a: Pass, b: Pass) => describePass(a) === describePass(b);

/** The kernels a call of forwardOnGpu and backwardOnGpu runs: src/'s, but `pass` for kernel k. */
function kernels(k: PassKernel, pass: Pass): GpuPasses {
  return { [k.name]: pass };
}

/**
 * Forward and backward of a case on the GPU with `pass` for kernel k, the rest src/'s, read back
 * (runOnGpu); `unwritten` counts the NaN (poisoned, never written) elements of k's outputs.
 */
async function runCase(gpu: MobaDevice, k: PassKernel, c: Case, precision: Precision, pass: Pass, unwritten: { count: number }) {
  const got = await runOnGpu(gpu, c, precision, kernels(k, pass));
  unwritten.count = k.outputs.reduce((sum, name) => sum + got[name].data.filter(Number.isNaN).length, 0);
  return got;
}

/**
 * Checks a version on every case it can run: against the float64 reference through
 * compareWithReference (every tensor, at the precision's tolerance; the routing replayed). Returns
 * the table's text: the largest error of k's outputs, or FAIL.
 */
async function check(gpu: MobaDevice, k: PassKernel, version: number): Promise<string> {
  const { precision, variant } = k.versions[version];
  let worst = 0;
  let ran = 0;
  let failed = false;
  for (const c of CHECKS) {
    const skip = unsupported(gpu, k, variant, problemOf(c, precision));
    if (skip) {
      console.log(JSON.stringify({ kernel: k.name, version, check: describeCase(c), skipped: skip }));
      continue;
    }
    const pass = k.pass(gpu, problemOf(c, precision), variant);
    const unwritten = { count: 0 };
    const errors: Record<string, number> = {};
    const failures = await compareWithReference(
      c,
      undefined,
      () => runCase(gpu, k, c, precision, pass, unwritten),
      true,
      precision,
      errors,
    );
    const error = Math.max(...k.outputs.map((name) => errors[name]));
    worst = Math.max(worst, error);
    ran++;
    failed ||= failures.length > 0 || unwritten.count > 0;
    console.log(
      JSON.stringify({
        kernel: k.name,
        version,
        check: describeCase(c),
        precision,
        pass: describePass(pass),
        errors,
        unwritten: unwritten.count,
      }),
    );
    for (const f of failures) console.log(`FAIL version ${version}: ${f}`);
    if (unwritten.count > 0)
      console.log(`FAIL version ${version}: ${describeCase(c)}: ${unwritten.count} elements of ${k.outputs} unwritten`);
  }
  return failed ? "FAIL" : ran === 0 ? "skipped" : worst.toExponential(1);
}

type Inputs = (precision: Precision) => ReturnType<typeof uploadCase>;

/** Times a version on one shape: k's dispatches in calls of the forward (or of the backward, after one forward). */
async function time(gpu: MobaDevice, k: PassKernel, p: AttentionProblem, pass: Pass, inputs: Inputs): Promise<number> {
  const { forward, ...backward } = kernels(k, pass);
  const { t, dout } = inputs(p.precision ?? "f32");
  const held = new Buffers(gpu); // the backward's forward, for every call
  return checked(gpu, `${k.name} timing`, held, async () => {
    let run: (mem: Buffers) => Promise<unknown>;
    if (k.name === "forward") run = (mem) => forwardOnGpu(mem, p, t, undefined, mem, forward);
    else {
      const f = await forwardOnGpu(held, p, t);
      // each call gets the forward's tiles; tiles a call builds (for another TQ) are its own buffers'
      const routed = () => f.routed && { ...f.routed, tiles: new Map(f.routed.tiles) };
      run = (mem) => backwardOnGpu(mem, p, t, f.out, f.lse, dout, routed(), undefined, mem, backward);
    }
    const call = () => {
      const mem = new Buffers(gpu);
      return checked(gpu, `${k.name} timing`, mem, () => run(mem));
    };
    return gpuTime(gpu, call, k.label);
  });
}

/** The versions of the query-tile kernels (forward, dq): src/'s picks, float32 tiles of 16 queries, tensor-core chunks of 16-64 keys. */
export const QUERY_TILE_VERSIONS = {
  1: { precision: "f32" },
  2: { precision: "f16" },
  3: { precision: "f32", variant: { tensorCores: false, TQ: 16, TK: 32 } },
  4: { precision: "f32", variant: { tensorCores: false, TQ: 16, TK: 16 } },
  5: { precision: "f32", variant: { tensorCores: false, TQ: 16, TK: 8 } },
  6: { precision: "f16", variant: { tensorCores: true, TK: 16 } },
  7: { precision: "f16", variant: { tensorCores: true, TK: 32 } },
  8: { precision: "f16", variant: { tensorCores: true, TK: 64 } },
} as const;

/** The harness of one of the passes: checks, then times every wanted version on every shape. */
export async function runPassHarness(k: PassKernel): Promise<void> {
  const gpu = await device();
  const versions = wantedVersions(k.versions);
  const checks = new Map<number, string>();
  for (const v of versions) checks.set(v, await check(gpu, k, v));
  const timings: Timing[] = [];
  const legend = new Map(versions.map((v) => [v, new Set<string>()]));
  for (const shape of shapes()) {
    const held = new Buffers(gpu);
    const uploaded = new Map<Precision, ReturnType<typeof uploadCase>>(); // once per precision
    const inputs: Inputs = (precision) =>
      uploaded.get(precision) ?? uploaded.set(precision, uploadCase(held, shape.case, precision)).get(precision)!;
    for (const version of versions) {
      const { precision, variant } = k.versions[version];
      const p = problemOf(shape.case, precision);
      const skip = unsupported(gpu, k, variant, p);
      if (skip) {
        legend.get(version)!.add(`skipped: ${skip}`);
        continue;
      }
      const pass = k.pass(gpu, p, variant);
      const ms = await time(gpu, k, p, pass, inputs);
      const gflop = (k.flopsPerPair * p.headDim * pairs(p)) / 1e9;
      const tflops = gflop / ms;
      const srcDefault = samePass(pass, k.pass(gpu, p));
      legend.get(version)!.add(`${describePass(pass)}, ${precision}${variant ? "" : " (src/'s pick)"}`);
      timings.push({ version, shape: shape.name, gflop, ms, tflops, tensorCores: pass.tensorCores, srcDefault });
      const { tokens, qHeads, kvHeads, headDim, blockSize, topK } = shape.case;
      const json = {
        kernel: k.name,
        version,
        shape: shape.name,
        tokens,
        qHeads,
        kvHeads,
        headDim,
        blockSize,
        topK: String(topK),
        precision,
      };
      console.log(JSON.stringify({ ...json, pass: describePass(pass), srcDefault, ms, gflop, tflops, check: checks.get(version) }));
    }
    held.destroy();
  }
  report(k.name, gpu, timings, checks, legend);
}
