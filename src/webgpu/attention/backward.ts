// The backward on the GPU, one command buffer: delta (each row's lse and rowsum(dout · out)), dq in
// the forward's rounds of query tiles, and dk and dv key-block-major in one dispatch (a key tile
// walks its block's own queries, then the queries that routed to the block in every round). Where
// the dk/dv kernel stores dS (paths.ts: storesDs) it runs first and dq reads that dS.
import type { AttentionProblem } from "../../attention/problem.js";
import { MobaError } from "../../tensor.js";
import { type Buffers, dispatch, pipeline } from "../kernel.js";
import { DELTA, DELTA_ROWS } from "./backward.wgsl.js";
import { halfCopier, halfTiled } from "./f16.js";
import type { GpuTensors } from "./forward.js";
import { dkdvPass, dqPass, type Pass } from "./paths.js";
import { type DeviceLimits, keyTiles, plan, planKey, storedDsBytes, tilesPerBlock } from "./plan.js";
import { indexRouting, type Routed, route, rounds, tileParams } from "./routing.js";

export interface GpuGradients {
  dq: GPUBuffer; // [tokens, qHeads, headDim]
  dkdv: GPUBuffer; // [2, tokens, kvHeads, headDim]: dk, then dv
}

/**
 * Whether the backward reads q, k and v only through f16 copies (the f16 path with dq and dk/dv both
 * on tensor cores): then a training forward may keep those copies (forwardOnGpu's keepHalf) and the
 * backward take them in place of the float32 inputs.
 */
export const backwardReadsHalf = (gpu: DeviceLimits, p: AttentionProblem): boolean =>
  p.precision === "f16" && dqPass(gpu, p).tensorCores && dkdvPass(gpu, p).tensorCores;

/**
 * Records and submits the backward (one command buffer), given the forward's out and lse on the GPU and its routing:
 * `routed` as the forward left it on the GPU, else the table `given`, else routed again here.
 * In the f16 path dout should hold f16 values: the tensor-core dq reads an f16 copy of it, delta the
 * buffer as given (api.ts rounds it). `t` may be the f16 copies a training forward kept (t.f16, where
 * backwardReadsHalf; the routing must then be given, since routing reads float32). Gradients stay in `mem`; the call's temporaries (row statistics,
 * f16 copies, key tiles) are taken from `scratch`. `kernels`: passes a kernel harness
 * (dev/attention/) times instead of the policy's (paths.ts).
 */
export async function backwardOnGpu(
  mem: Buffers,
  p: AttentionProblem,
  t: GpuTensors,
  out: GPUBuffer,
  lse: GPUBuffer,
  dout: GPUBuffer,
  routed: Routed | null,
  given?: Int32Array,
  scratch = mem,
  kernels: { dq?: Pass; dkdv?: Pass } = {},
): Promise<GpuGradients> {
  const gpu = mem.gpu;
  const pl = plan(p);
  const { tokens, qHeads, kvHeads, headDim } = p;
  // dk/dv stores dS where dq reads it: the policy's choice, or what a harness's dq asks for
  const dkdvChosen = kernels.dkdv ?? dkdvPass(gpu, p, undefined, kernels.dq?.storedDs);
  const dqChosen = kernels.dq ?? dqPass(gpu, p, undefined, dkdvChosen.storedDs);
  if (t.f16 && !(dqChosen.tensorCores && dkdvChosen.tensorCores && (pl.all || routed)))
    throw new MobaError("backwardOnGpu: f16 copies of q, k, v need the tensor-core dq and dk/dv kernels and the forward's routing");
  if (dqChosen.storedDs && !dkdvChosen.storedDs)
    throw new MobaError("backwardOnGpu: dq over stored dS needs a dk/dv kernel that stores it");
  const encoder = gpu.device.createCommandEncoder();
  if (!pl.all && !routed) routed = await route(mem, encoder, pl, t.q, t.k, given);
  const index = routed && (await indexRouting(mem, encoder, pl, routed)); // absent after a forward over union tiles
  const entries = index?.entries ?? mem.storage(16, "unused", encoder);
  const rowStats = scratch.storage(tokens * qHeads * 8, "lse and delta", encoder);
  const dq = mem.poisoned(tokens * qHeads * headDim, "dq", encoder);
  const dkdv = mem.poisoned(2 * tokens * kvHeads * headDim, "dk and dv", encoder);
  const [deltaPipeline, dqPipeline, dkdvPipeline] = await Promise.all([
    pipeline(gpu, DELTA, null),
    dqChosen.compile(gpu),
    dkdvChosen.compile(gpu),
  ]);
  dispatch(
    encoder,
    gpu,
    deltaPipeline,
    [mem.uniform([tokens * qHeads, headDim, 0, 0], "delta params"), out, dout, lse, rowStats],
    Math.ceil((tokens * qHeads) / DELTA_ROWS),
    "delta",
  );
  // f16 copies for the tensor-core kernels: q and dout, tiles of Kᵀ and Vᵀ for both; tiles of K for dq's dS K
  const f32Inputs = [t.q, t.k, t.v, dout];
  let [dqInputs, dkdvInputs] = [f32Inputs, f32Inputs];
  if (dqChosen.tensorCores || dkdvChosen.tensorCores) {
    const half = await halfCopier(scratch, encoder, p);
    const input = t.f16 ? "f16" : "f32";
    const tiles = (x: GPUBuffer, transpose: boolean, label: string) =>
      halfTiled(scratch, encoder, x, tokens, kvHeads, headDim, transpose, label, input);
    const q16 = t.f16 ? t.q : half(t.q, qHeads, "q f16");
    const dout16 = half(dout, qHeads, "dout f16");
    const kT = await tiles(t.k, true, "k f16 tiles, transposed");
    const vT = await tiles(t.v, true, "v f16 tiles, transposed");
    if (dqChosen.tensorCores) {
      const k16 = await tiles(t.k, false, "k f16 tiles");
      dqInputs = dqChosen.storedDs ? [k16] : [q16, kT, vT, k16, dout16];
    }
    if (dkdvChosen.tensorCores) dkdvInputs = [q16, kT, vT, dout16];
  }
  // dS as the dk/dv kernel stores it for dq ([rows, blockSize rounded up to 64] f16; mma.wgsl.ts: STORED_DS)
  const dS = dkdvChosen.storedDs ? [scratch.uninitialized(storedDsBytes(pl), "dS")] : [];
  const recordDq = async () =>
    (await rounds(mem, encoder, pl, routed, dqChosen.shape.TQ)).forEach(({ tiles, count }, r) => {
      const tail = dqChosen.storedDs ? [...dqInputs, ...dS, dq] : [...dqInputs, rowStats, dq];
      dispatch(
        encoder,
        gpu,
        dqPipeline,
        [tileParams(mem, pl, dqChosen.shape, count, r > 0, false), tiles, entries, ...tail],
        count,
        `dq round ${r}`,
      );
    });
  if (!dqChosen.storedDs) await recordDq();
  // the key tiles (made once per shape), then the segment starts the dk/dv kernel reads after them, both copied on the GPU
  const TK = dkdvChosen.shape.TK;
  const keyCount = tilesPerBlock(pl, TK, kvHeads);
  const keys = mem.constant(`key tiles ${TK} ${planKey(pl)}`, () => keyTiles(pl, TK).words, "key tiles");
  const segmentWords = routed ? pl.width * qHeads * pl.blocks + 1 : 0;
  const words = scratch.uninitialized((8 * keyCount + Math.ceil(segmentWords / 4) * 4) * 4, "key tiles and segment starts");
  encoder.copyBufferToBuffer(keys, 0, words, 0, 8 * keyCount * 4);
  if (index) encoder.copyBufferToBuffer(index.segmentStart, 0, words, 8 * keyCount * 4, segmentWords * 4);
  dispatch(
    encoder,
    gpu,
    dkdvPipeline,
    [tileParams(mem, pl, dkdvChosen.shape, keyCount, false, false), words, entries, ...dkdvInputs, rowStats, dkdv, ...dS],
    keyCount,
    "dk dv",
  );
  if (dqChosen.storedDs) await recordDq();
  gpu.device.queue.submit([encoder.finish()]);
  return { dq, dkdv };
}
