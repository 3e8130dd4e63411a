// f16 copies of the f32 inputs for the f16 path, recorded on the GPU: plain ([tokens, heads, D]) and
// tiled (the layout the tensor-core kernels read k and v in).
import type { AttentionProblem } from "../../attention/problem.js";
import { MobaError } from "../../tensor.js";
import { type Buffers, dispatch, pipeline } from "../kernel.js";
import { TO_F16, TO_F16_ELEMENTS, TO_F16_TILED } from "./f16.wgsl.js";
import type { GpuTensors } from "./forward.js";
import { mmaKeyTiles } from "./mma.wgsl.js";

/**
 * Records x [tokens, heads, headDim] (f32, or f16 where `input` says so) -> f16 tiles [heads, mmaKeyTiles(tokens), headDim / 16, 16, 16]
 * (toF16TiledWgsl: each tile [key][d], or [d][key] when `transpose`) into a new buffer, the layout the
 * tensor-core kernels read k and v in.
 */
export async function halfTiled(
  mem: Buffers,
  encoder: GPUCommandEncoder,
  x: GPUBuffer,
  tokens: number,
  heads: number,
  headDim: number,
  transpose: boolean,
  label: string,
  input: "f32" | "f16" = "f32",
): Promise<GPUBuffer> {
  if (headDim % 16 !== 0 || headDim > 256) throw new MobaError(`halfTiled: headDim must be a multiple of 16 up to 256, got ${headDim}`);
  const keyTiles = mmaKeyTiles(tokens);
  const y = mem.storage(heads * keyTiles * 16 * headDim * 2, label, encoder);
  const params = mem.uniform([tokens, heads, transpose ? 1 : 0, keyTiles], "f16 tiles params");
  dispatch(encoder, mem.gpu, await pipeline(mem.gpu, TO_F16_TILED, { headDim, input }), [params, x, y], keyTiles * heads, label);
  return y;
}

/**
 * f16 copies of q, k and v (the f16 path's storage; the routing still reads the f32 inputs); for the
 * tensor-core kernel, k and v as tiles (halfTiled): Kᵀ's and V's. With `kept` (f16 copies of q, k
 * and v a training forward keeps for its backward, made by halfCopier) q is that copy and the tiles
 * are made from it.
 */
export async function halfInputs(
  mem: Buffers,
  encoder: GPUCommandEncoder,
  p: AttentionProblem,
  t: GpuTensors,
  tensorCores: boolean,
  kept?: GpuTensors,
): Promise<GpuTensors> {
  const half = await halfCopier(mem, encoder, p);
  const { tokens, kvHeads, headDim } = p;
  const [from, input] = kept ? [kept, "f16" as const] : [t, "f32" as const];
  return {
    q: kept ? kept.q : half(t.q, p.qHeads, "q f16"),
    k: tensorCores
      ? await halfTiled(mem, encoder, from.k, tokens, kvHeads, headDim, true, "k f16 tiles, transposed", input)
      : (kept?.k ?? half(t.k, kvHeads, "k f16")),
    v: tensorCores
      ? await halfTiled(mem, encoder, from.v, tokens, kvHeads, headDim, false, "v f16 tiles", input)
      : (kept?.v ?? half(t.v, kvHeads, "v f16")),
  };
}

/** Records f16 copies of [tokens, heads, headDim] f32 buffers. */
export async function halfCopier(
  mem: Buffers,
  encoder: GPUCommandEncoder,
  p: AttentionProblem,
): Promise<(x: GPUBuffer, heads: number, label: string) => GPUBuffer> {
  const gpu = mem.gpu;
  if (!gpu.f16) throw new MobaError(`precision: "f16" needs a device with shader-f16, and ${gpu.adapterInfo} has none`);
  const convert = await pipeline(gpu, TO_F16, null);
  return (x, heads, label) => {
    const n = p.tokens * heads * p.headDim;
    const y = mem.storage(n * 2, label, encoder);
    dispatch(encoder, gpu, convert, [mem.uniform([n, 0, 0, 0], "f16 params"), x, y], Math.ceil(n / TO_F16_ELEMENTS), label);
    return y;
  };
}
