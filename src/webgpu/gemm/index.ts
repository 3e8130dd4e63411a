// The model's GEMMs: y[M, N] (+)= A · B with A stored [M, K] or [K, M] and B [N, K] or [K, N].
// "f32": the plain float32 kernel (every adapter). "f16": operands rounded to f16, float32
// accumulation — on tensor cores (subgroup matrices) where the device has them, else the float32
// kernel rounding its operands the same way (adapters with shader-f16 but no subgroup matrices), so
// both give the same numbers up to the order of the float32 sums.
import type { Precision } from "../../attention/problem.js";
import { MobaError } from "../../tensor.js";
import type { MobaDevice } from "../device.js";
import { type Buffers, dispatch, pipeline } from "../kernel.js";
import { GEMM, TILE } from "../linear.wgsl.js";
import { MMA_GEMM, type MmaGemmShape, mmaGemmSharedBytes, mmaThreads, SPLIT_SUM } from "./mma.wgsl.js";

/** The operands and the output of y (+)= A · B; `residual` where the call adds one (GemmCall.residual). */
export interface GemmBuffers {
  a: GPUBuffer;
  b: GPUBuffer;
  y: GPUBuffer;
  residual?: GPUBuffer;
}

export interface GemmCall {
  aTransposed: boolean;
  bTransposed: boolean;
  accumulate: boolean;
  /** y = residual + A · B (the buffers' `residual`), added in the epilogue; not with accumulate. */
  residual?: boolean;
  M: number;
  N: number;
  K: number;
}

/**
 * A tile of the tensor-core GEMM: its shape without the call's layouts; `vector`: vec4 loads where the
 * operand allows; `wholeColumns`: taken only where its columns divide N.
 */
export type MmaTile = Pick<MmaGemmShape, "tileM" | "tileN" | "warpsM" | "warpsN" | "depth" | "prefetch" | "natural" | "directStore"> & {
  vector: boolean;
  wholeColumns: boolean;
};

/** A tile of the given shape on 2 x 2 or 2 x 4 subgroups, with the settings every harness winner shares. */
const tile = (tileM: number, tileN: number, warpsN: number, wholeColumns = false): MmaTile => ({
  tileM,
  tileN,
  warpsM: 2,
  warpsN,
  depth: 32,
  prefetch: true,
  natural: true,
  vector: true,
  directStore: true,
  wholeColumns,
});

/** The tensor-core tiles, largest first: the harness's (dev/gemm/gemm.mts) fastest on the H200 (docs/benchmarks.md, Training). */
export const MMA_TILES: MmaTile[] = [
  // harness version 19, 8 subgroups: 4-13% faster than version 16 on the step's products of N = 512 (each staged
  // slice of A serves twice the columns), 5% slower at N = 1344 (a last column of tiles a fifth full), 12% at 4096³
  tile(128, 256, 4, true),
  tile(128, 128, 2), // version 16
  tile(64, 64, 2), // version 17
];
/** Workgroups that fill the GPU about twice (an H200 has 132 SMs); fewer tiles than this take a smaller tile, or at the smallest split K. */
const ENOUGH_WORKGROUPS = 264;
/**
 * Workgroups split-K aims at: four per SM (harness versions 12-14: twice the splits of 264 sped the
 * thin dW products up by a third, four times slowed the wide one).
 */
const SPLIT_WORKGROUPS = 528;
/** The least K a split of split-K takes: its own tile's loads and epilogue must stay small beside its MMAs. */
const MIN_SPLIT_K = 1024;

export interface MmaPlan {
  call: GemmCall;
  shape: MmaGemmShape;
  tilesN: number;
  tiles: number;
  splits: number;
  kPerSplit: number;
}

/** The tile and split-K of a tensor-core GEMM: the largest tile that fills the GPU, else the smallest with K split until `splitTarget` workgroups. */
export function planMmaGemm(c: GemmCall, tiles = MMA_TILES, splitTarget = SPLIT_WORKGROUPS): MmaPlan {
  const count = (t: (typeof tiles)[number]) => Math.ceil(c.M / t.tileM) * Math.ceil(c.N / t.tileN);
  const chosen = tiles.find((t) => count(t) >= ENOUGH_WORKGROUPS && (!t.wholeColumns || c.N % t.tileN === 0)) ?? tiles[tiles.length - 1];
  const { vector: _, wholeColumns: __, ...tile } = chosen;
  const vector = chosen.vector;
  // vec4 loads where the operand's contiguous extent is a multiple of 4 (then a vec4 is wholly inside or outside it)
  const vectorA = vector && (c.aTransposed ? c.M : c.K) % 4 === 0;
  const vectorB = vector && (c.bTransposed ? c.N : c.K) % 4 === 0;
  // direct stores only where some tile lies wholly inside y: then y's binding holds at least one tile, above the
  // 1024 bytes (a 16 x 16 f32 matrix) that a subgroup-matrix access in the shader makes the pipeline's least binding size
  const directStore = tile.directStore && c.M >= tile.tileM && c.N >= tile.tileN && c.N % 4 === 0;
  const shape = {
    aTransposed: c.aTransposed,
    bTransposed: c.bTransposed,
    accumulate: c.accumulate,
    residual: c.residual === true,
    ...tile,
    directStore,
    vectorA,
    vectorB,
  };
  const n = count(chosen);
  const splits = Math.max(1, Math.min(Math.ceil(splitTarget / n), Math.floor(c.K / MIN_SPLIT_K)));
  const kPerSplit = Math.ceil(c.K / splits / tile.depth) * tile.depth;
  return { call: c, shape, tilesN: Math.ceil(c.N / tile.tileN), tiles: n, splits: Math.ceil(c.K / kPerSplit), kPerSplit };
}

/** The tensor-core tiles whose workgroup memory each device has, found once (a step records ~170 GEMMs: finding them each call took 17-20 ms of a step's host time). */
const tilesOf = new WeakMap<MobaDevice, MmaTile[]>();

/** The tensor-core tiles whose workgroup memory the device has (every layout: A or B transposed). */
export function mmaTiles(gpu: MobaDevice): MmaTile[] {
  let tiles = tilesOf.get(gpu);
  if (!tiles) {
    tiles = MMA_TILES.filter(({ vector: _, wholeColumns: __, ...t }) =>
      [false, true].every(
        (transposed) =>
          mmaGemmSharedBytes({
            ...t,
            aTransposed: transposed,
            bTransposed: !transposed,
            accumulate: false,
            residual: false,
            vectorA: false,
            vectorB: false,
          }) <= gpu.maxWorkgroupStorage,
      ),
    );
    tilesOf.set(gpu, tiles);
  }
  return tiles;
}

/** Whether the device runs the tensor-core GEMM (f16 16x16x16 subgroup matrices, 32-lane subgroups) with its smallest tile at least. */
export const hasMmaGemm = (gpu: MobaDevice) => gpu.mma16 && mmaTiles(gpu).includes(MMA_TILES[MMA_TILES.length - 1]);

/**
 * A buffer of at least `bytes` for split-K partials, whose contents the GEMM overwrites: a caller
 * that records many GEMMs gives one buffer reused by all (the queue runs them in order).
 */
export type PartialsBuffer = (bytes: number) => GPUBuffer;

/**
 * Records y (+)= A · B into the encoder `encoder()` returns (taken after the pipelines are ready:
 * an await may let a flush finish the encoder in hand). Split-K partials come from `partials`,
 * else from `mem`.
 */
export async function recordGemm(
  gpu: MobaDevice,
  mem: Buffers,
  encoder: () => GPUCommandEncoder,
  buffers: GemmBuffers,
  c: GemmCall,
  precision: Precision,
  partials?: PartialsBuffer,
): Promise<void> {
  if (c.residual && (c.accumulate || !buffers.residual))
    throw new MobaError("recordGemm: a residual add needs the residual buffer and no accumulate");
  if (precision === "f32" || !hasMmaGemm(gpu)) {
    const p = await pipeline(gpu, GEMM, {
      aTransposed: c.aTransposed,
      bTransposed: c.bTransposed,
      accumulate: c.accumulate,
      residual: c.residual === true,
      f16Operands: precision === "f16",
    });
    const { a, b, y, residual } = buffers;
    const tilesN = Math.ceil(c.N / TILE);
    const bindings = [a, b, y, mem.uniform([c.M, c.N, c.K, tilesN], "gemm shape"), ...(c.residual && residual ? [residual] : [])];
    dispatch(encoder(), gpu, p, bindings, Math.ceil(c.M / TILE) * tilesN, "gemm");
    return;
  }
  await recordMmaGemm(gpu, mem, encoder, buffers, planMmaGemm(c, mmaTiles(gpu)), partials);
}

/** Records a tensor-core GEMM of a given plan (the dev harness times plans of its own). */
export async function recordMmaGemm(
  gpu: MobaDevice,
  mem: Buffers,
  encoder: () => GPUCommandEncoder,
  { a, b, y, residual }: GemmBuffers,
  plan: MmaPlan,
  partials: PartialsBuffer = (bytes) => mem.uninitialized(bytes, "gemm split-K partials"),
): Promise<void> {
  const s = plan.shape;
  const main = await pipeline(gpu, { ...MMA_GEMM, workgroupSize: mmaThreads(s) }, s);
  const sum = plan.splits > 1 ? await pipeline(gpu, SPLIT_SUM, { accumulate: s.accumulate, residual: s.residual }) : null;
  const added = s.residual && residual ? [residual] : []; // binds the residual where the kernels read it
  const { M: m, N: n, K: k } = plan.call;
  const words = [m, n, k, plan.tilesN, plan.tiles, plan.kPerSplit, plan.splits, 0];
  const out = sum ? partials(plan.splits * m * n * 4) : y; // every element written: no clear
  // the label names the operand layout, so a step's profile splits the GEMM time into the model's forward x · wᵀ, dX and dW products
  const form = s.aTransposed ? "Aᵀ B (dW)" : s.bTransposed ? "A B (dX)" : "A Bᵀ (forward)";
  dispatch(encoder(), gpu, main, [a, b, out, mem.uniform(words, "gemm shape"), ...added], plan.tiles * plan.splits, `gemm mma ${form}`);
  if (sum)
    dispatch(
      encoder(),
      gpu,
      sum,
      [out, y, mem.uniform([m * n, plan.splits], "gemm split-K sum"), ...added],
      Math.ceil((m * n) / 256),
      "gemm split-K sum",
    );
}
