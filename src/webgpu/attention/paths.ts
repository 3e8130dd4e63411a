// The one place that picks, per pass, the float32 kernel or the tensor-core one. Tensor cores run
// only the f16 path (precision "f16": q, k, v, dout hold f16 values) on a device with f16 16x16x16
// subgroup matrices, headDim a multiple of 16 and the kernel's workgroup memory available; the
// tensor-core dq also needs 9 storage buffers per stage (WebGPU's default limit is 8). Otherwise the
// f16 path's forward reads f16 copies with f32 arithmetic, and its backward is the float32 one. In
// MoBA's f16 backward the dk/dv kernel also stores dS, and dq is dS K over it (storesDs).
import type { AttentionProblem } from "../../attention/problem.js";
import type { MobaDevice } from "../device.js";
import { type Kernel, pipeline } from "../kernel.js";
import { DKDV, DQ } from "./backward.wgsl.js";
import { DKDV_MMA, DKDV_MMA_STORING_DS, dkdvMmaKeys, dkdvMmaSharedBytes } from "./dkdvMma.wgsl.js";
import { DQ_MMA, DQ_STORED, DQ_STORED_ROWS, dqMmaSharedBytes, dqStoredSharedBytes } from "./dqMma.wgsl.js";
import { FORWARD } from "./forward.wgsl.js";
import { FORWARD_MMA } from "./forwardMma.wgsl.js";
import { MMA_QUERIES, type MmaShape } from "./mma.wgsl.js";
import { type DeviceLimits, dkdvShape, dqShape, forwardShape, mmaShape, plan, storableDs } from "./plan.js";
import type { TileShape } from "./tile.wgsl.js";

/** One pass's kernel and the tile shape the host plans its tiles and parameters with. */
export interface Pass {
  /** The kernel's name: forward, forwardMma, dq, dqMma, dkdv, dkdvMma. */
  kernel: string;
  tensorCores: boolean;
  /** dk/dv: it stores dS; dq: it reads that dS (storesDs). */
  storedDs: boolean;
  /** The float32 kernel's shape, or with the tensor-core kernel's queries (TQ) and keys (TK) per tile. */
  shape: TileShape;
  /** The forward over union tiles (one round; tile.wgsl.ts), else rounds of own and gathered tiles. */
  union: boolean;
  compile(gpu: MobaDevice): Promise<GPUComputePipeline>;
}

/**
 * A kernel a caller picks instead of the policy below: the float32 kernel with TQ x TK tiles, or the
 * tensor-core one with TK keys per chunk (dk/dv: per workgroup). Only dev/attention/'s harnesses
 * pass one, to time each variant the generators make; the caller checks it fits the device.
 */
export type Variant = { tensorCores: false; TQ: number; TK: number } | { tensorCores: true; TK: number; storedDs?: boolean };

const pass = <C>(kernel: Kernel<C>, constants: C, shape: TileShape, tensorCores: boolean, union = false, storedDs = false): Pass => ({
  kernel: kernel.name,
  tensorCores,
  storedDs,
  shape,
  union,
  compile: (gpu) => pipeline(gpu, kernel, constants),
});

/** The float32 kernel's tile: the policy's, or the variant's. */
const f32Tile = (shape: TileShape, variant?: Variant): TileShape =>
  variant && !variant.tensorCores ? { ...shape, TQ: variant.TQ, TK: variant.TK } : shape;

function f32Pass(kernel: Kernel<TileShape>, shape: TileShape, variant?: Variant): Pass {
  const tile = f32Tile(shape, variant);
  return pass(kernel, tile, tile, false);
}

/** The tensor-core chunk a variant asks for: null for a float32 variant. */
const chunk = (variant: Variant, headDim: number): MmaShape | null => (variant.tensorCores ? { headDim, TK: variant.TK } : null);

/** `union`: the forward over union tiles (plan.ts: unionTiles says where the policy takes them). */
export function forwardPass(gpu: DeviceLimits, p: AttentionProblem, variant?: Variant, union = false): Pass {
  const shape = forwardShape(gpu, p.headDim, p.precision ?? "f32");
  const mma = variant ? chunk(variant, p.headDim) : p.precision === "f16" ? mmaShape(gpu, p.headDim) : null;
  if (mma) return pass(FORWARD_MMA, { ...mma, union }, { ...shape, TQ: MMA_QUERIES, TK: mma.TK }, true, union);
  const tile = f32Tile(shape, variant);
  return pass(FORWARD, { ...tile, union }, tile, false, union);
}

/**
 * Most bytes of dS the backward stores (plan.ts: storedDsBytes): 768 MiB at 32K tokens x 8 heads,
 * block 512 / top-3, the training step's; beyond it dq recomputes dS (dqMma.wgsl.ts).
 */
export const STORED_DS_MAX_BYTES = 1 << 30;

/**
 * Whether MoBA's f16 backward stores dS in the dk/dv kernel for dq to read (dqMma.wgsl.ts:
 * dqStoredWgsl) instead of recomputing it: both on tensor cores with 9 storage buffers a stage, and
 * the problem's blocks aligned and its dS small enough (plan.ts: storableDs).
 */
export function storesDs(gpu: DeviceLimits, p: AttentionProblem): boolean {
  if (p.precision !== "f16" || !gpu.mma16 || p.headDim % 16 !== 0 || gpu.storageBuffersPerStage < 9) return false;
  if (dqStoredSharedBytes(p.headDim) > gpu.maxWorkgroupStorage || !dkdvKeys(gpu, p.headDim)) return false;
  return storableDs(plan(p), Math.min(gpu.maxStorageBinding, STORED_DS_MAX_BYTES));
}

/** `storedDs`: dq over the dS the dk/dv kernel stored (the policy's where storesDs; a variant's own flag). */
export function dqPass(gpu: DeviceLimits, p: AttentionProblem, variant?: Variant, storedDs = storesDs(gpu, p)): Pass {
  const shape = dqShape(gpu, p.headDim);
  if (variant ? variant.tensorCores && variant.storedDs : storedDs) {
    return pass(DQ_STORED, { headDim: p.headDim }, { ...shape, TQ: DQ_STORED_ROWS, TK: 16 }, true, false, true);
  }
  const mma = variant
    ? chunk(variant, p.headDim)
    : p.precision === "f16" && gpu.storageBuffersPerStage >= 9
      ? mmaShape(gpu, p.headDim, dqMmaSharedBytes)
      : null;
  return mma ? pass(DQ_MMA, mma, { ...shape, TQ: MMA_QUERIES, TK: mma.TK }, true) : f32Pass(DQ, shape, variant);
}

/** The tensor-core dk/dv kernel's keys per workgroup at headDim: the first whose workgroup memory fits. */
const dkdvKeys = (gpu: DeviceLimits, D: number) =>
  dkdvMmaKeys(D).find((keys) => dkdvMmaSharedBytes({ headDim: D, keys }) <= gpu.maxWorkgroupStorage);

/** `storedDs`: the tensor-core kernel also stores dS for dq (the policy's where storesDs; a variant's own flag). */
export function dkdvPass(gpu: DeviceLimits, p: AttentionProblem, variant?: Variant, storedDs = storesDs(gpu, p)): Pass {
  const shape = dkdvShape(gpu, p.headDim);
  const D = p.headDim;
  const keys = variant ? chunk(variant, D)?.TK : p.precision === "f16" && gpu.mma16 && D % 16 === 0 ? dkdvKeys(gpu, D) : undefined;
  if (keys === undefined) return f32Pass(DKDV, shape, variant);
  const stores = variant ? variant.tensorCores && variant.storedDs === true : storedDs;
  return pass(stores ? DKDV_MMA_STORING_DS : DKDV_MMA, { headDim: D, keys }, { ...shape, TK: keys }, true, false, stores);
}
