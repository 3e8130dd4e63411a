// The forward on the GPU: routing and f16 copies in one command buffer, then the rounds of tiles in
// another (the GPU starts on the first while the second is recorded). The routed rounds run first
// (round r + 1 carries round r's state in out and ml), the own blocks last: every query has its own
// block, so that round finalizes (out = acc / l, lse) and no pass over out is needed after.
// Short sequences (plan.ts: unionTiles) run MoBA as one round of union tiles over the routing table
// instead, all of it in one command buffer: few dispatches, little to overlap.
import type { AttentionProblem } from "../../attention/problem.js";
import { type Binding, type Buffers, dispatch } from "../kernel.js";
import { halfCopier, halfInputs } from "./f16.js";
import { forwardPass, type Pass } from "./paths.js";
import { MobaError } from "../../tensor.js";
import { plan, UNION_LIMIT, unionTiles } from "./plan.js";
import { naturalTileBuffer, type Routed, route, rounds, tileParams } from "./routing.js";

export interface GpuTensors {
  q: GPUBuffer; // [tokens, qHeads, headDim]
  k: GPUBuffer; // [tokens, kvHeads, headDim]
  v: GPUBuffer; // [tokens, kvHeads, headDim]
  /** The buffers hold f16 values (the copies a training forward keeps), else f32. */
  f16?: boolean;
}

export interface GpuForwardResult {
  out: GPUBuffer; // [tokens, qHeads, headDim]
  lse: GPUBuffer; // [tokens, qHeads]
  routed: Routed | null;
  /** With `keepHalf`: f16 copies of q, k, v in `mem`, all the backward reads of them (backwardReadsHalf). */
  kept: GpuTensors | null;
}

/**
 * Records and submits the forward (two command buffers: routing and copies, then the rounds); results
 * stay on the GPU in `mem`, the call's temporaries (f16 copies, softmax state) are taken from `scratch`.
 * `kernel`: a pass a kernel harness (dev/attention/) times instead of the policy's (paths.ts).
 * `keepHalf` (f16 path, a training forward whose backward reads only f16 copies): the f16 copies of
 * q, k, v are made in `mem` and returned, so a caller can end its float32 q, k, v after the forward
 * (at half their bytes: the model's f16 training step holds 64 MiB less per layer at 32K tokens).
 */
export async function forwardOnGpu(
  mem: Buffers,
  p: AttentionProblem,
  t: GpuTensors,
  given?: Int32Array,
  scratch = mem,
  kernel?: Pass,
  keepHalf = false,
): Promise<GpuForwardResult> {
  const gpu = mem.gpu;
  const pl = plan(p);
  const { tokens, qHeads, headDim } = p;
  const chosen = kernel ?? forwardPass(gpu, p, undefined, unionTiles(pl));
  const { shape, union } = chosen;
  if (union && !unionTiles(pl, UNION_LIMIT, Infinity))
    throw new MobaError(
      `forwardOnGpu: union tiles need MoBA with at most ${UNION_LIMIT} blocks a sequence (cuSeqlens [${p.cuSeqlens}], blockSize ${p.blockSize})`,
    );
  const first = gpu.device.createCommandEncoder();
  const routed = pl.all ? null : await route(mem, first, pl, t.q, t.k, given, !union);
  const forward = await chosen.compile(gpu);
  let kept: GpuTensors | null = null;
  if (keepHalf && p.precision === "f16") {
    const half = await halfCopier(mem, first, p);
    kept = { q: half(t.q, qHeads, "q f16"), k: half(t.k, p.kvHeads, "k f16"), v: half(t.v, p.kvHeads, "v f16"), f16: true };
  }
  const inputs = p.precision === "f16" ? await halfInputs(scratch, first, p, t, chosen.tensorCores, kept ?? undefined) : t;
  let encoder = first;
  if (!union) {
    gpu.device.queue.submit([first.finish()]);
    encoder = gpu.device.createCommandEncoder();
  }
  const out = mem.poisoned(tokens * qHeads * headDim, "out", encoder);
  const lse = mem.poisoned(tokens * qHeads, "lse", encoder);
  const ml = scratch.storage(Math.max(1, pl.all || union ? 0 : tokens * qHeads) * 8, "softmax state", encoder);
  // the gathered query lists of the rounds, or the routing table a union tile reads
  const entries = routed?.index?.entries ?? routed?.routing ?? mem.storage(16, "unused", encoder);
  const round = ({ tiles, count }: { tiles: Binding; count: number }, r: number, loadState: boolean, finalizeHere: boolean) =>
    dispatch(
      encoder,
      gpu,
      forward,
      [tileParams(mem, pl, shape, count, loadState, finalizeHere), tiles, entries, inputs.q, inputs.k, inputs.v, out, ml, lse],
      count,
      `forward round ${r}`,
    );
  if (union) round(naturalTileBuffer(mem, pl, shape.TQ, false, true), 0, false, true);
  else {
    const [own, ...routedRounds] = await rounds(mem, encoder, pl, routed, shape.TQ, true);
    routedRounds.forEach((tiles, r) => round(tiles, r + 1, r > 0, false));
    round(own, 0, false, true);
  }
  gpu.device.queue.submit([encoder.finish()]);
  return { out, lse, routed, kept };
}
