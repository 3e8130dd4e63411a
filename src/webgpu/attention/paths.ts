// The one place that picks, per pass, the float32 kernel or the tensor-core one. Tensor cores run
// only the f16 path (precision "f16": q, k, v, dout hold f16 values) on a device with f16 16x16x16
// subgroup matrices, headDim a multiple of 16 and the kernel's workgroup memory available; the
// tensor-core dq also needs 9 storage buffers per stage (WebGPU's default limit is 8). Otherwise the
// f16 path's forward reads f16 copies with f32 arithmetic, and its backward is the float32 one.
import type { AttentionProblem } from "../../attention/problem.js";
import type { MobaDevice } from "../device.js";
import { type Kernel, pipeline } from "../kernel.js";
import { DKDV, DQ } from "./backward.wgsl.js";
import { DKDV_MMA, dkdvMmaKeys, dkdvMmaSharedBytes } from "./dkdvMma.wgsl.js";
import { DQ_MMA, dqMmaSharedBytes } from "./dqMma.wgsl.js";
import { FORWARD } from "./forward.wgsl.js";
import { FORWARD_MMA } from "./forwardMma.wgsl.js";
import { MMA_QUERIES, type MmaShape } from "./mma.wgsl.js";
import { type DeviceLimits, dkdvShape, dqShape, forwardShape, mmaShape } from "./plan.js";
import type { TileShape } from "./tile.wgsl.js";

/** One pass's kernel and the tile shape the host plans its tiles and parameters with. */
export interface Pass {
  /** The kernel's name: forward, forwardMma, dq, dqMma, dkdv, dkdvMma. */
  kernel: string;
  tensorCores: boolean;
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
export type Variant = { tensorCores: false; TQ: number; TK: number } | { tensorCores: true; TK: number };

const pass = <C>(kernel: Kernel<C>, constants: C, shape: TileShape, tensorCores: boolean, union = false): Pass => ({
  kernel: kernel.name,
  tensorCores,
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

export function dqPass(gpu: DeviceLimits, p: AttentionProblem, variant?: Variant): Pass {
  const shape = dqShape(gpu, p.headDim);
  const mma = variant
    ? chunk(variant, p.headDim)
    : p.precision === "f16" && gpu.storageBuffersPerStage >= 9
      ? mmaShape(gpu, p.headDim, dqMmaSharedBytes)
      : null;
  return mma ? pass(DQ_MMA, mma, { ...shape, TQ: MMA_QUERIES, TK: mma.TK }, true) : f32Pass(DQ, shape, variant);
}

export function dkdvPass(gpu: DeviceLimits, p: AttentionProblem, variant?: Variant): Pass {
  const shape = dkdvShape(gpu, p.headDim);
  const D = p.headDim;
  const fits = dkdvMmaKeys(D).find((keys) => dkdvMmaSharedBytes({ headDim: D, keys }) <= gpu.maxWorkgroupStorage);
  const keys = variant ? chunk(variant, D)?.TK : p.precision === "f16" && gpu.mma16 && D % 16 === 0 ? fits : undefined;
  return keys !== undefined ? pass(DKDV_MMA, { headDim: D, keys }, { ...shape, TK: keys }, true) : f32Pass(DKDV, shape, variant);
}
