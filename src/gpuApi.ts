// Attention on GPU buffers: q, k, v already on the caller's device (useDevice) go in, out / lse /
// routing come back as buffers on it, so a pipeline (another library's output, the next layer) pays no
// host copy. The same checks as the host API, on shapes only: the values are the caller's to keep
// finite (and within f16 range for precision "f16"). Inputs larger than one storage binding are
// refused here, where the host API would split them into head groups.
import { pastPerQuery } from "./attention/blocks.js";
import { type AttentionProblem, type FullOptions, fullProblem, type MobaOptions, mobaProblem } from "./attention/problem.js";
import { MobaError } from "./tensor.js";
import { forwardOnGpu, headGroups } from "./webgpu/attention/index.js";
import { checked, getDevice } from "./webgpu/device.js";
import { Buffers } from "./webgpu/kernel.js";

/** A float32 (routing: int32) row-major tensor in a GPU buffer of the device in use. */
export interface GpuArray {
  readonly buffer: GPUBuffer;
  readonly shape: readonly number[];
}

export interface GpuAttentionInputs {
  q: GpuArray; // [tokens, qHeads, headDim]
  k: GpuArray; // [tokens, kvHeads, headDim]
  v: GpuArray;
  cuSeqlens?: ArrayLike<number>;
}

export interface GpuAttentionOutput {
  out: GpuArray; // [tokens, qHeads, headDim]
  lse: GpuArray; // [tokens, qHeads]
  /** [tokens, qHeads, topK - 1] int32, each query's past blocks; null for full attention or when every block is selected. */
  routing: GpuArray | null;
  /** Gives the output buffers back (to the package's pool, reused by later calls); read them first. */
  release(): void;
}

type GpuOptions<O> = Omit<O, "backend" | "threads">;

function checkBuffer(name: string, t: GpuArray, bytes: number): void {
  const buffer = t.buffer as GPUBuffer | undefined;
  if (!buffer || typeof buffer.size !== "number" || typeof buffer.usage !== "number")
    throw new MobaError(`${name}.buffer: expected a GPUBuffer, got ${typeof buffer}`);
  if ((buffer.usage & GPUBufferUsage.STORAGE) === 0)
    throw new MobaError(`${name}.buffer: expected usage STORAGE, got usage ${buffer.usage}`);
  if (buffer.size < bytes)
    throw new MobaError(`${name}.buffer: expected at least ${bytes} bytes for shape [${t.shape.join(", ")}], got ${buffer.size}`);
}

async function forward(p: AttentionProblem, inputs: GpuAttentionInputs): Promise<GpuAttentionOutput> {
  const gpu = await getDevice();
  if (headGroups(gpu, p) > 1)
    throw new MobaError(
      `q: expected at most ${gpu.maxStorageBinding} bytes (one storage binding), got ${p.tokens * p.qHeads * p.headDim * 4}`,
    );
  checkBuffer("q", inputs.q, p.tokens * p.qHeads * p.headDim * 4);
  checkBuffer("k", inputs.k, p.tokens * p.kvHeads * p.headDim * 4);
  checkBuffer("v", inputs.v, p.tokens * p.kvHeads * p.headDim * 4);
  const mem = new Buffers(gpu); // the outputs, the caller's until release()
  const scratch = new Buffers(gpu); // the call's temporaries
  try {
    const r = await checked(gpu, "MoBA forward on GPU buffers", scratch, () =>
      forwardOnGpu(mem, p, { q: inputs.q.buffer, k: inputs.k.buffer, v: inputs.v.buffer }, undefined, scratch),
    );
    return {
      out: { buffer: r.out, shape: [p.tokens, p.qHeads, p.headDim] },
      lse: { buffer: r.lse, shape: [p.tokens, p.qHeads] },
      routing: r.routed ? { buffer: r.routed.routing, shape: [p.tokens, p.qHeads, pastPerQuery(p)] } : null,
      release: () => mem.destroy(),
    };
  } catch (error) {
    mem.destroy();
    throw error;
  }
}

/** mobaAttention on GPU buffers: the outputs stay on the GPU. */
export async function mobaAttentionOnGpu(inputs: GpuAttentionInputs, options: GpuOptions<MobaOptions>): Promise<GpuAttentionOutput> {
  return forward(mobaProblem({ ...inputs, onGpu: true }, options), inputs);
}

/** flashAttention (full causal attention) on GPU buffers. */
export async function flashAttentionOnGpu(inputs: GpuAttentionInputs, options: GpuOptions<FullOptions> = {}): Promise<GpuAttentionOutput> {
  return forward(fullProblem({ ...inputs, onGpu: true }, options), inputs);
}
