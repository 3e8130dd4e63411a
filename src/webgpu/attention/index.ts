// The WebGPU backend of MoBA and full attention: routing (block sums, gate + top-k, inverted
// index), the forward in rounds, the backward (delta, dq in rounds, dk/dv key-block-major).
import type { AttentionProblem } from "../../attention/problem.js";
import { blockOffsets, forEachRoute, pastPerQuery, selectsAll } from "../../attention/blocks.js";
import { MobaError } from "../../tensor.js";
import { checked, getDevice, type MobaDevice } from "../device.js";
import { type Binding, Buffers, dispatch, type Kernel, pipeline, readBack, threadGroups } from "../kernel.js";
import { DELTA, DELTA_ROWS, dkdvWgsl, dqWgsl, forwardWgsl, type TileShape } from "./attention.wgsl.js";
import { dkdvMmaSharedBytes, dkdvMmaWgsl, dqMmaSharedBytes, dqMmaWgsl, forwardMmaWgsl, MMA_DKDV_KEYS, MMA_DKDV_THREADS, MMA_DQ_THREADS, mmaKeyTiles, MMA_QUERIES, MMA_THREADS, mmaSharedBytes, type MmaShape, TO_F16, TO_F16_ELEMENTS, toF16TiledWgsl } from "./mma.wgsl.js";
import { BLOCK_SUM_THREADS, BLOCK_SUMS, GATE_MAX_HEAD_DIM, GATHERED_TILES, type GateShape, gateWgsl, SCAN, SCATTER } from "./routing.wgsl.js";

/** The largest headDim: the gate stages key sums of this width, the tile shapes are checked against it. */
const MAX_HEAD_DIM = GATE_MAX_HEAD_DIM;
const THREADS = 64;
/** Workgroup memory per tile on software adapters; GPUs get what the device allows (48 KiB on the H100). */
const SOFTWARE_SHARED_BUDGET = 32768;

const fixed = (name: string, code: string): Kernel<null> => ({ name, workgroupSize: THREADS, key: () => "", wgsl: () => code });
const blockSums: Kernel<null> = { name: "blockSums", workgroupSize: BLOCK_SUM_THREADS, key: () => "", wgsl: () => BLOCK_SUMS };
const gate: Kernel<GateShape> = { name: "gate", workgroupSize: 64, key: (c) => `${c.width}/${c.headDim}/${c.vec4Rows}`, wgsl: gateWgsl };
const scatter = fixed("scatter", SCATTER);
const scan: Kernel<null> = { name: "scan", workgroupSize: 256, key: () => "", wgsl: () => SCAN };
const gatheredTiles = fixed("gatheredTiles", GATHERED_TILES);
const deltaKernel: Kernel<null> = { name: "delta", workgroupSize: DELTA_ROWS * 32, key: () => "", wgsl: () => DELTA };
const toF16: Kernel<null> = { name: "toF16", workgroupSize: 256, key: () => "", wgsl: () => TO_F16 };
const toF16Tiled: Kernel<{ headDim: number }> = { name: "toF16Tiled", workgroupSize: 256, key: (c) => `${c.headDim}`, wgsl: (c) => toF16TiledWgsl(c.headDim) };
const tiled = (name: string, wgsl: (c: TileShape) => string): Kernel<TileShape> => ({
  name, workgroupSize: THREADS, key: (c) => `${c.headDim}/${c.TQ}/${c.TK}/${c.unroll}/${c.input}`, wgsl,
});
const mmaForwardKernel: Kernel<MmaShape> = { name: "forwardMma", workgroupSize: MMA_THREADS, key: (c) => `${c.headDim}/${c.TK}`, wgsl: forwardMmaWgsl };
const mmaDqKernel: Kernel<MmaShape> = { name: "dqMma", workgroupSize: MMA_DQ_THREADS, key: (c) => `${c.headDim}/${c.TK}`, wgsl: dqMmaWgsl };
const mmaDkdvKernel: Kernel<{ headDim: number }> = { name: "dkdvMma", workgroupSize: MMA_DKDV_THREADS, key: (c) => `${c.headDim}`, wgsl: dkdvMmaWgsl };
const forwardKernel = tiled("forward", forwardWgsl);
const dqKernel = tiled("dq", dqWgsl);
const dkdvKernel = tiled("dkdv", dkdvWgsl);

/** A tile of 16 (8 for headDim > 128) rows of `kind`, the other side as large as workgroup memory allows. */
function tileShape(gpu: MobaDevice, headDim: number, cost: (TQ: number, TK: number) => number, kind: "queries" | "keys", input: "f32" | "f16" = "f32"): TileShape {
  const budget = gpu.software ? Math.min(gpu.maxWorkgroupStorage, SOFTWARE_SHARED_BUDGET) : gpu.maxWorkgroupStorage;
  const fixedSide = headDim <= 128 ? 16 : 8;
  for (const other of [32, 16, 8, 4, 2, 1]) {
    const [TQ, TK] = kind === "queries" ? [fixedSide, other] : [other, fixedSide];
    if (cost(TQ, TK) <= budget) return { headDim, TQ, TK, unroll: !gpu.software, input };
  }
  throw new MobaError(`webgpu: headDim ${headDim} needs more workgroup memory than ${budget} bytes`);
}

const row = (D: number) => (D + 1) * 4;
const forwardShape = (gpu: MobaDevice, D: number, input: "f32" | "f16" = "f32") => tileShape(gpu, D, (TQ, TK) => (TQ + 2 * TK) * row(D) + TQ * TK * 4 + 64, "queries", input);
const dqShape = (gpu: MobaDevice, D: number) => tileShape(gpu, D, (TQ, TK) => (2 * TQ + 2 * TK) * row(D) + TQ * TK * 4 + 64, "queries");
const dkdvShape = (gpu: MobaDevice, D: number) => tileShape(gpu, D, (TQ, TK) => (2 * TQ + 2 * TK) * row(D) + 2 * TQ * TK * 4 + 64, "keys");

/**
 * The tensor-core forward's chunk for headDim, or null where it cannot run (no f16 16x16x16 subgroup
 * matrices, headDim not a multiple of 16): 64 keys (measured best, dev/mma/variants.mts) or fewer
 * where workgroup memory is short.
 */
function mmaShape(gpu: MobaDevice, headDim: number, sharedBytes = mmaSharedBytes): MmaShape | null {
  if (!gpu.mma16 || headDim % 16 !== 0) return null;
  for (const TK of [64, 32, 16]) {
    if (sharedBytes({ headDim, TK }) <= gpu.maxWorkgroupStorage) return { headDim, TK };
  }
  return null;
}

/** Sequence and block geometry shared by every pass. */
interface Plan {
  p: AttentionProblem;
  all: boolean; // every past block selected: full attention, no routing
  width: number; // routed blocks per query (topK - 1), 0 when all
  offsets: Int32Array; // [batch + 1] first global block of each sequence
  blocks: number; // global blocks
  blockStart: Uint32Array; // [blocks] first token
  blockEnd: Uint32Array; // [blocks] end token
  seqStart: Uint32Array; // [blocks] first token of the block's sequence
  seqEnd: Uint32Array; // [blocks] end token of the block's sequence
}

function plan(p: AttentionProblem): Plan {
  if (p.headDim > MAX_HEAD_DIM) throw new MobaError(`headDim: expected at most ${MAX_HEAD_DIM} on webgpu, got ${p.headDim}`);
  const offsets = blockOffsets(p);
  const blocks = offsets[offsets.length - 1];
  const blockStart = new Uint32Array(blocks), blockEnd = new Uint32Array(blocks);
  const seqStart = new Uint32Array(blocks), seqEnd = new Uint32Array(blocks);
  for (let b = 0; b + 1 < p.cuSeqlens.length; b++) {
    for (let G = offsets[b]; G < offsets[b + 1]; G++) {
      blockStart[G] = p.cuSeqlens[b] + (G - offsets[b]) * p.blockSize;
      blockEnd[G] = Math.min(blockStart[G] + p.blockSize, p.cuSeqlens[b + 1]);
      seqStart[G] = p.cuSeqlens[b];
      seqEnd[G] = p.cuSeqlens[b + 1];
    }
  }
  return { p, all: selectsAll(p), width: pastPerQuery(p), offsets, blocks, blockStart, blockEnd, seqStart, seqEnd };
}

/** Tile descriptors, 8 words each: (queryStart, count, keyStart, keyEnd), (head, gathered, naturalEnd or carried, block). */
class Tiles {
  readonly words: Uint32Array;
  count = 0;
  constructor(capacity: number) {
    this.words = new Uint32Array(8 * capacity);
  }
  add(queryStart: number, count: number, keyStart: number, keyEnd: number, head: number, gathered: number, naturalEnd = 0, block = 0): void {
    const w = this.words;
    const at = 8 * this.count++;
    w[at] = queryStart;
    w[at + 1] = count;
    w[at + 2] = keyStart;
    w[at + 3] = keyEnd;
    w[at + 4] = head;
    w[at + 5] = gathered;
    w[at + 6] = naturalEnd;
    w[at + 7] = block;
  }
}

/** Tiles of `size` tokens over every block, times `heads`. */
function tilesPerBlock(pl: Plan, size: number, heads: number): number {
  let n = 0;
  for (let G = 0; G < pl.blocks; G++) n += Math.ceil((pl.blockEnd[G] - pl.blockStart[G]) / size);
  return n * heads;
}

/**
 * Query tiles of TQ consecutive tokens per (block, head); keys from the block start (MoBA) or the
 * sequence start (full). Full attention lists the last blocks (the longest key ranges) first: the
 * GPU starts workgroups roughly in order, so the short tiles fill in at the end instead of one long
 * tile finishing alone. `ownLast`: the forward's own blocks run after the routed rounds, so a tile
 * whose queries had routed blocks (every block but a sequence's first) carries their state (word 6).
 */
function naturalTiles(pl: Plan, TQ: number, ownLast: boolean): Tiles {
  const tiles = new Tiles(tilesPerBlock(pl, TQ, pl.p.qHeads));
  for (let i = 0; i < pl.blocks; i++) {
    const G = pl.all ? pl.blocks - 1 - i : i;
    for (let h = 0; h < pl.p.qHeads; h++) {
      for (let t = pl.blockStart[G]; t < pl.blockEnd[G]; t += TQ) {
        const count = Math.min(TQ, pl.blockEnd[G] - t);
        const carried = ownLast && pl.width > 0 && pl.blockStart[G] > pl.seqStart[G];
        tiles.add(t, count, pl.all ? pl.seqStart[G] : pl.blockStart[G], t + count, h, 0, carried ? 1 : 0);
      }
    }
  }
  return tiles;
}

/** Key tiles for dk/dv: TK keys of one block and kv head, with the end of its natural queries. */
function keyTiles(pl: Plan, TK: number): Tiles {
  const tiles = new Tiles(tilesPerBlock(pl, TK, pl.p.kvHeads));
  for (let G = 0; G < pl.blocks; G++) {
    for (let g = 0; g < pl.p.kvHeads; g++) {
      for (let t = pl.blockStart[G]; t < pl.blockEnd[G]; t += TK) {
        tiles.add(0, 0, t, Math.min(t + TK, pl.blockEnd[G]), g, 0, pl.all ? pl.seqEnd[G] : pl.blockEnd[G], G);
      }
    }
  }
  return tiles;
}

interface Routed {
  routing: GPUBuffer; // [tokens, qHeads, width] u32
  entries: GPUBuffer; // gathered queries, by (round, head, block)
  counts: GPUBuffer; // [width * qHeads * blocks] queries of each (round, head, block)
  segmentStart: GPUBuffer; // [width * qHeads * blocks + 1] where each (round, head, block)'s queries start in entries
  blockRange: GPUBuffer; // [blocks] (first, end) token
  /** By queries per tile: round r's gathered query tiles are slots [r · bound, (r + 1) · bound) of 8 words, unused ones zero. */
  tiles: Map<number, { buffer: GPUBuffer; bound: number }>;
}

function routingParams(mem: Buffers, pl: Plan): GPUBuffer {
  const { tokens, qHeads, kvHeads, headDim, blockSize, cuSeqlens } = pl.p;
  return mem.uniform([tokens, qHeads, kvHeads, headDim, blockSize, pl.width, pl.blocks, cuSeqlens.length - 1], "routing params");
}

/**
 * Records the routing table (computed here unless given) and its inverted index, built on the GPU
 * (histogram, prefix sums, scatter): nothing is read back.
 */
async function route(mem: Buffers, encoder: GPUCommandEncoder, pl: Plan, q: GPUBuffer, k: GPUBuffer, given?: Int32Array): Promise<Routed> {
  const { tokens, qHeads, kvHeads, headDim } = pl.p;
  const gpu = mem.gpu;
  const params = routingParams(mem, pl);
  const cu = mem.storage(Uint32Array.from(pl.p.cuSeqlens), "cuSeqlens");
  const offsets = mem.storage(Uint32Array.from(pl.offsets), "block offsets");
  const range = new Uint32Array(2 * pl.blocks);
  for (let G = 0; G < pl.blocks; G++) [range[2 * G], range[2 * G + 1]] = [pl.blockStart[G], pl.blockEnd[G]];
  const blockRange = mem.storage(range, "block ranges");
  const roundSegments = qHeads * pl.blocks;
  const segments = pl.width * roundSegments;
  let counts: GPUBuffer;
  let routing: GPUBuffer;
  if (given) {
    routing = mem.storage(given, "routing");
    const histogram = new Uint32Array(segments);
    forEachRoute(pl.p, given, pl.offsets, (_t, h, r, G) => histogram[(r * qHeads + h) * pl.blocks + G]++);
    counts = mem.storage(histogram, "segment counts");
  } else {
    const sums = mem.storage(pl.blocks * kvHeads * headDim * 4, "block sums", encoder);
    routing = mem.storage(tokens * qHeads * pl.width * 4, "routing", encoder);
    counts = mem.storage(segments * 4, "segment counts", encoder);
    dispatch(encoder, gpu, await pipeline(gpu, blockSums, null), [params, blockRange, k, sums], pl.blocks * kvHeads, "block sums");
    const gateShape = { width: pl.width, headDim, vec4Rows: headDim % 4 === 0 };
    dispatch(encoder, gpu, await pipeline(gpu, gate, gateShape), [params, cu, offsets, q, sums, routing, counts], qHeads * Math.ceil(tokens / 64), "gate");
  }
  const segmentStart = mem.storage((segments + 1) * 4, "segment starts", encoder);
  const entries = mem.storage(tokens * qHeads * pl.width * 4, "inverted index", encoder);
  dispatch(encoder, gpu, await pipeline(gpu, scan, null), [mem.uniform([segments, 0, 1], "scan"), counts, segmentStart], 1, "segment starts");
  dispatch(encoder, gpu, await pipeline(gpu, scatter, null),
    [params, cu, offsets, routing, segmentStart, mem.storage(segments * 4, "cursors", encoder), entries], threadGroups(scatter, tokens * qHeads), "scatter");
  return { routing, entries, counts, segmentStart, blockRange, tiles: new Map() };
}

/**
 * Records every round's gathered query tiles of TQ queries, built on the GPU once per TQ (the forward
 * and dq kernels may tile differently): tile offsets by prefix sums of ⌈count / TQ⌉, then one thread per segment.
 */
async function queryTileRounds(mem: Buffers, encoder: GPUCommandEncoder, pl: Plan, routed: Routed, TQ: number): Promise<{ buffer: GPUBuffer; bound: number }> {
  const built = routed.tiles.get(TQ);
  if (built) return built;
  const gpu = mem.gpu;
  const roundSegments = pl.p.qHeads * pl.blocks;
  const segments = pl.width * roundSegments;
  // a round's tiles: at most one partial tile per segment beyond ⌈queries / TQ⌉; a multiple of 8 slots keeps each region 256-byte aligned
  const bound = Math.ceil((Math.ceil((pl.p.tokens * pl.p.qHeads) / TQ) + roundSegments) / 8) * 8;
  const tileOffset = mem.storage(segments * 4, "tile offsets", encoder);
  const tiles = { buffer: mem.storage(pl.width * bound * 32, "gathered tiles", encoder), bound };
  dispatch(encoder, gpu, await pipeline(gpu, scan, null), [mem.uniform([roundSegments, TQ, 0], "scan tiles"), routed.counts, tileOffset], pl.width, "tile offsets");
  dispatch(encoder, gpu, await pipeline(gpu, gatheredTiles, null),
    [mem.uniform([segments, roundSegments, pl.blocks, TQ, bound], "tiles"), routed.counts, routed.segmentStart, tileOffset, routed.blockRange, tiles.buffer],
    threadGroups(gatheredTiles, segments), "gathered tiles");
  routed.tiles.set(TQ, tiles);
  return tiles;
}

function tileParams(mem: Buffers, pl: Plan, shape: TileShape, tiles: number, loadState: boolean, finalizeHere: boolean): GPUBuffer {
  const { qHeads, kvHeads, scale, headDim, tokens } = pl.p;
  // segment starts follow the 2 vec4 of each tile (dk/dv); dv follows dk in their shared buffer
  return mem.uniform([qHeads, kvHeads, tiles, loadState ? 1 : 0, finalizeHere ? 1 : 0, pl.width, pl.blocks, { f32: scale },
    headDim, shape.TQ, shape.TK, 2 * tiles, tokens * kvHeads * headDim, tokens], "tile params");
}

/**
 * Every round of tiles for the forward and dq: the own blocks (or full causal ranges, built here),
 * then each routed round (built on the GPU: `bound` slots, the unused ones empty). `ownLast`: the
 * own blocks' tiles flagged to carry the routed rounds' state (naturalTiles), for the forward.
 */
async function rounds(mem: Buffers, encoder: GPUCommandEncoder, pl: Plan, routed: Routed | null, TQ: number, ownLast = false): Promise<{ tiles: Binding; count: number }[]> {
  const natural = naturalTiles(pl, TQ, ownLast);
  const list: { tiles: Binding; count: number }[] = [{ tiles: mem.storage(natural.words, "tiles"), count: natural.count }];
  if (!routed) return list;
  const { buffer, bound } = await queryTileRounds(mem, encoder, pl, routed, TQ);
  for (let r = 0; r < pl.width; r++) list.push({ tiles: { buffer, offset: r * bound * 32, size: bound * 32 }, count: bound });
  return list;
}

export interface GpuTensors {
  q: GPUBuffer; k: GPUBuffer; v: GPUBuffer;
}

export interface GpuForwardResult {
  out: GPUBuffer; // [tokens, qHeads, headDim]
  lse: GPUBuffer; // [tokens, qHeads]
  routed: Routed | null;
}

/**
 * Records x [tokens, heads, headDim] (f32) -> f16 tiles [heads, mmaKeyTiles(tokens), headDim / 16, 16, 16]
 * (toF16TiledWgsl: each tile [key][d], or [d][key] when `transpose`) into a new buffer, the layout the
 * tensor-core kernels read k and v in.
 */
export async function halfTiled(mem: Buffers, encoder: GPUCommandEncoder, x: GPUBuffer, tokens: number, heads: number, headDim: number, transpose: boolean, label: string): Promise<GPUBuffer> {
  if (headDim % 16 !== 0 || headDim > 256) throw new MobaError(`halfTiled: headDim must be a multiple of 16 up to 256, got ${headDim}`);
  const keyTiles = mmaKeyTiles(tokens);
  const y = mem.storage(heads * keyTiles * 16 * headDim * 2, label, encoder);
  const params = mem.uniform([tokens, heads, transpose ? 1 : 0, keyTiles], "f16 tiles params");
  dispatch(encoder, mem.gpu, await pipeline(mem.gpu, toF16Tiled, { headDim }), [params, x, y], keyTiles * heads, label);
  return y;
}

/**
 * f16 copies of q, k and v (the f16 path's storage; the routing still reads the f32 inputs); for the
 * tensor-core kernel, k and v as tiles (halfTiled): Kᵀ's and V's.
 */
async function halfInputs(mem: Buffers, encoder: GPUCommandEncoder, p: AttentionProblem, t: GpuTensors, tensorCores: boolean): Promise<GpuTensors> {
  const half = await halfCopier(mem, encoder, p);
  const { tokens, kvHeads, headDim } = p;
  return {
    q: half(t.q, p.qHeads, "q f16"),
    k: tensorCores ? await halfTiled(mem, encoder, t.k, tokens, kvHeads, headDim, true, "k f16 tiles, transposed") : half(t.k, kvHeads, "k f16"),
    v: tensorCores ? await halfTiled(mem, encoder, t.v, tokens, kvHeads, headDim, false, "v f16 tiles") : half(t.v, kvHeads, "v f16"),
  };
}

/** Records f16 copies of [tokens, heads, headDim] f32 buffers. */
async function halfCopier(mem: Buffers, encoder: GPUCommandEncoder, p: AttentionProblem): Promise<(x: GPUBuffer, heads: number, label: string) => GPUBuffer> {
  const gpu = mem.gpu;
  if (!gpu.f16) throw new MobaError(`precision: "f16" needs a device with shader-f16, and ${gpu.adapterInfo} has none`);
  const convert = await pipeline(gpu, toF16, null);
  return (x, heads, label) => {
    const n = p.tokens * heads * p.headDim;
    const y = mem.storage(n * 2, label, encoder);
    dispatch(encoder, gpu, convert, [mem.uniform([n, 0, 0, 0], "f16 params"), x, y], Math.ceil(n / TO_F16_ELEMENTS), label);
    return y;
  };
}

/**
 * The forward kernel of a problem: f32 arithmetic on f32 inputs; in the f16 path the tensor-core
 * kernel where the device has f16 subgroup matrices and headDim allows, else f32 arithmetic on f16 inputs.
 */
async function forwardPipeline(gpu: MobaDevice, p: AttentionProblem): Promise<{ pipeline: GPUComputePipeline; shape: TileShape; tensorCores: boolean }> {
  const mma = p.precision === "f16" ? mmaShape(gpu, p.headDim) : null;
  const shape = forwardShape(gpu, p.headDim, p.precision ?? "f32");
  if (mma) return { pipeline: await pipeline(gpu, mmaForwardKernel, mma), shape: { ...shape, TQ: MMA_QUERIES, TK: mma.TK }, tensorCores: true };
  return { pipeline: await pipeline(gpu, forwardKernel, shape), shape, tensorCores: false };
}

/** Records and submits the forward (two command buffers: routing and copies, then the rounds); results stay on the GPU. */
export async function forwardOnGpu(mem: Buffers, p: AttentionProblem, t: GpuTensors, given?: Int32Array): Promise<GpuForwardResult> {
  const gpu = mem.gpu;
  const pl = plan(p);
  const { tokens, qHeads, headDim } = p;
  const first = gpu.device.createCommandEncoder();
  const routed = pl.all ? null : await route(mem, first, pl, t.q, t.k, given);
  const { pipeline: forward, shape, tensorCores } = await forwardPipeline(gpu, p);
  const inputs = p.precision === "f16" ? await halfInputs(mem, first, p, t, tensorCores) : t;
  // the GPU starts on the routing and the copies while the rounds are recorded
  gpu.device.queue.submit([first.finish()]);
  const encoder = gpu.device.createCommandEncoder();
  const out = mem.poisoned(tokens * qHeads * headDim, "out", encoder);
  const lse = mem.poisoned(tokens * qHeads, "lse", encoder);
  const ml = mem.storage(Math.max(1, pl.all ? 0 : tokens * qHeads) * 8, "softmax state", encoder);
  const dummy = mem.storage(16, "unused", encoder);
  const entries = routed?.entries ?? dummy;
  // the routed rounds (round r + 1 carries round r's state), then the own blocks: every query has
  // its own block, so that round finalizes (out = acc / l, lse) and no pass over out is needed after
  const round = ({ tiles, count }: { tiles: Binding; count: number }, r: number, loadState: boolean, finalizeHere: boolean) =>
    dispatch(encoder, gpu, forward, [tileParams(mem, pl, shape, count, loadState, finalizeHere), tiles, entries, inputs.q, inputs.k, inputs.v, out, ml, lse], count, `forward round ${r}`);
  const [own, ...routedRounds] = await rounds(mem, encoder, pl, routed, shape.TQ, true);
  routedRounds.forEach((tiles, r) => round(tiles, r + 1, r > 0, false));
  round(own, 0, false, true);
  gpu.device.queue.submit([encoder.finish()]);
  return { out, lse, routed };
}

export interface GpuGradients {
  dq: GPUBuffer; // [tokens, qHeads, headDim]
  dkdv: GPUBuffer; // [2, tokens, kvHeads, headDim]: dk, then dv
}

/**
 * Records and submits the backward (one command buffer), given the forward's out and lse on the GPU and its routing:
 * `routed` as the forward left it on the GPU, else the table `given`, else routed again here.
 * In the f16 path dout should hold f16 values: the tensor-core dq reads an f16 copy of it, delta the
 * buffer as given (api.ts rounds it).
 */
export async function backwardOnGpu(mem: Buffers, p: AttentionProblem, t: GpuTensors, out: GPUBuffer, lse: GPUBuffer, dout: GPUBuffer, routed: Routed | null, given?: Int32Array): Promise<GpuGradients> {
  const gpu = mem.gpu;
  const pl = plan(p);
  const { tokens, qHeads, kvHeads, headDim } = p;
  const encoder = gpu.device.createCommandEncoder();
  if (!pl.all && !routed) routed = await route(mem, encoder, pl, t.q, t.k, given);
  const dummy = mem.storage(16, "unused", encoder);
  const entries = routed?.entries ?? dummy;
  const rowStats = mem.storage(tokens * qHeads * 8, "lse and delta", encoder);
  const dq = mem.poisoned(tokens * qHeads * headDim, "dq", encoder);
  const dkdv = mem.poisoned(2 * tokens * kvHeads * headDim, "dk and dv", encoder);
  const qShape = dqShape(gpu, headDim);
  const kShape = dkdvShape(gpu, headDim);
  const [deltaPipeline, dqPipeline, dkdvPipeline] = await Promise.all([pipeline(gpu, deltaKernel, null), pipeline(gpu, dqKernel, qShape), pipeline(gpu, dkdvKernel, kShape)]);
  dispatch(encoder, gpu, deltaPipeline, [mem.uniform([tokens * qHeads, headDim, 0, 0], "delta params"), out, dout, lse, rowStats], Math.ceil((tokens * qHeads) / DELTA_ROWS), "delta");
  // the f16 path on tensor cores where the device has them: dq (9 storage buffers) and dk/dv, on f16 copies
  const dqMma = p.precision === "f16" && gpu.storageBuffersPerStage >= 9 ? mmaShape(gpu, headDim, dqMmaSharedBytes) : null;
  const dkdvMma = p.precision === "f16" && gpu.mma16 && headDim % 16 === 0 && dkdvMmaSharedBytes(headDim) <= gpu.maxWorkgroupStorage;
  // f16 copies: q and dout, tiles of Kᵀ and Vᵀ for both kernels; tiles of K for dq's dS K
  let half16: { q: GPUBuffer; dout: GPUBuffer; kT: GPUBuffer; vT: GPUBuffer } | null = null;
  const half = dqMma || dkdvMma ? await halfCopier(mem, encoder, p) : null;
  if (half) {
    half16 = {
      q: half(t.q, qHeads, "q f16"),
      dout: half(dout, qHeads, "dout f16"),
      kT: await halfTiled(mem, encoder, t.k, tokens, kvHeads, headDim, true, "k f16 tiles, transposed"),
      vT: await halfTiled(mem, encoder, t.v, tokens, kvHeads, headDim, true, "v f16 tiles, transposed"),
    };
  }
  let dqRun: { pipeline: GPUComputePipeline; shape: TileShape; inputs: GPUBuffer[] } = { pipeline: dqPipeline, shape: qShape, inputs: [t.q, t.k, t.v, dout] };
  if (dqMma && half && half16) {
    dqRun = {
      pipeline: await pipeline(gpu, mmaDqKernel, dqMma), shape: { ...qShape, TQ: MMA_QUERIES, TK: dqMma.TK },
      inputs: [half16.q, half16.kT, half16.vT, await halfTiled(mem, encoder, t.k, tokens, kvHeads, headDim, false, "k f16 tiles"), half16.dout],
    };
  }
  (await rounds(mem, encoder, pl, routed, dqRun.shape.TQ)).forEach(({ tiles, count }, r) => {
    dispatch(encoder, gpu, dqRun.pipeline, [tileParams(mem, pl, dqRun.shape, count, r > 0, false), tiles, entries, ...dqRun.inputs, rowStats, dq], count, `dq round ${r}`);
  });
  // the key tiles, then (copied on the GPU) the segment starts the dk/dv kernel reads after them
  const keyShape = dkdvMma ? { ...kShape, TK: MMA_DKDV_KEYS } : kShape;
  const keys = keyTiles(pl, keyShape.TK);
  const segmentWords = routed ? pl.width * qHeads * pl.blocks + 1 : 0;
  const words = mem.storage((keys.words.length + Math.ceil(segmentWords / 4) * 4) * 4, "key tiles and segment starts");
  gpu.device.queue.writeBuffer(words, 0, keys.words);
  if (routed) encoder.copyBufferToBuffer(routed.segmentStart, 0, words, keys.words.length * 4, segmentWords * 4);
  const [dkdvRun, inputs] = dkdvMma && half16
    ? [await pipeline(gpu, mmaDkdvKernel, { headDim }), [half16.q, half16.kT, half16.vT, half16.dout]]
    : [dkdvPipeline, [t.q, t.k, t.v, dout]];
  dispatch(encoder, gpu, dkdvRun, [tileParams(mem, pl, keyShape, keys.count, false, false), words, entries, ...inputs, rowStats, dkdv], keys.count, "dk dv");
  gpu.device.queue.submit([encoder.finish()]);
  return { dq, dkdv };
}

const f32 = (b: ArrayBuffer) => new Float32Array(b);

/** How many head groups keep every tensor of a call within one storage binding (kv heads split evenly). */
export function headGroups(gpu: MobaDevice, p: AttentionProblem): number {
  const rowBytes = p.tokens * p.headDim * 4; // one head of q, out or dq
  for (let groups = 1; groups <= p.kvHeads; groups++) {
    if (p.kvHeads % groups === 0 && rowBytes * (p.qHeads / groups) <= gpu.maxStorageBinding) return groups;
  }
  throw new MobaError(`webgpu: the ${p.qHeads / p.kvHeads} query heads of one kv head need ${rowBytes * (p.qHeads / p.kvHeads)} bytes (${p.tokens} tokens x headDim ${p.headDim}), ` +
    `more than one storage binding allows (${gpu.maxStorageBinding}); pass fewer tokens per call`);
}

type Rows = Float32Array | Int32Array;

/** Heads [h0, h0 + count) of a [tokens, heads, row] array, as [tokens, count, row]. */
function sliceHeads<T extends Rows>(data: T, tokens: number, heads: number, row: number, h0: number, count: number): T {
  const out = new (data.constructor as new (n: number) => T)(tokens * count * row);
  for (let t = 0; t < tokens; t++) out.set(data.subarray((t * heads + h0) * row, (t * heads + h0 + count) * row), t * count * row);
  return out;
}

/** Writes a [tokens, count, row] part back into heads [h0, h0 + count) of a [tokens, heads, row] array. */
function placeHeads(into: Rows, part: Rows, tokens: number, heads: number, row: number, h0: number, count: number): void {
  for (let t = 0; t < tokens; t++) into.set(part.subarray(t * count * row, (t + 1) * count * row), (t * heads + h0) * row);
}

/**
 * Runs `run` once per head group when the inputs exceed one storage binding (heads are independent,
 * so each group is a smaller problem), gathering each group's inputs and scattering its outputs.
 * inputs/outputs: name -> [array, heads per token (q or kv), row length].
 */
async function byHeadGroups<O extends Record<string, Rows>>(
  gpu: MobaDevice, p: AttentionProblem, inputs: [Rows, "q" | "kv", number][],
  outputs: { [K in keyof O]: readonly ["q" | "kv", number, O[K]] }, run: (sub: AttentionProblem, parts: Rows[]) => Promise<O>,
): Promise<O> {
  const groups = headGroups(gpu, p);
  if (groups === 1) return run(p, inputs.map(([x]) => x));
  const heads = { q: p.qHeads, kv: p.kvHeads };
  const per = { q: p.qHeads / groups, kv: p.kvHeads / groups };
  const sub = { ...p, qHeads: per.q, kvHeads: per.kv };
  for (let i = 0; i < groups; i++) {
    const parts = inputs.map(([x, kind, row]) => sliceHeads(x, p.tokens, heads[kind], row, i * per[kind], per[kind]));
    const result = await run(sub, parts);
    for (const name of Object.keys(outputs) as (keyof O)[]) {
      const [kind, row, into] = outputs[name];
      placeHeads(into, result[name], p.tokens, heads[kind], row, i * per[kind], per[kind]);
    }
  }
  return Object.fromEntries(Object.entries(outputs).map(([name, [, , into]]) => [name, into])) as O;
}

export async function gpuForward(p: AttentionProblem, q: Float32Array, k: Float32Array, v: Float32Array): Promise<{ out: Float32Array; lse: Float32Array; past: Int32Array; width: number }> {
  const gpu = await getDevice();
  const width = pastPerQuery(p);
  const { tokens, qHeads, headDim: D } = p;
  const outputs = {
    out: ["q", D, new Float32Array(q.length)], lse: ["q", 1, new Float32Array(tokens * qHeads)], past: ["q", width, new Int32Array(tokens * qHeads * width)],
  } as const;
  const r = await byHeadGroups(gpu, p, [[q, "q", D], [k, "kv", D], [v, "kv", D]], outputs, (sub, [q, k, v]) => {
    const mem = new Buffers(gpu);
    return checked(gpu, "MoBA forward", mem, async () => {
      const t = { q: mem.storage(q, "q"), k: mem.storage(k, "k"), v: mem.storage(v, "v") };
      const r = await forwardOnGpu(mem, sub, t);
      const [out, lse, routing] = await readBack(gpu, [
        { buffer: r.out, bytes: q.byteLength }, { buffer: r.lse, bytes: sub.tokens * sub.qHeads * 4 },
        { buffer: r.routed?.routing ?? r.lse, bytes: r.routed ? sub.tokens * sub.qHeads * width * 4 : 0 },
      ]);
      return { out: f32(out), lse: f32(lse), past: new Int32Array(routing) };
    });
  });
  return { ...r, width };
}

export async function gpuBackward(p: AttentionProblem, q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array, dout: Float32Array, past?: Int32Array): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }> {
  const gpu = await getDevice();
  const D = p.headDim;
  const width = pastPerQuery(p);
  const inputs: [Rows, "q" | "kv", number][] = [[q, "q", D], [k, "kv", D], [v, "kv", D], [out, "q", D], [lse, "q", 1], [dout, "q", D]];
  if (past) inputs.push([past, "q", width]);
  const outputs = { dq: ["q", D, new Float32Array(q.length)], dk: ["kv", D, new Float32Array(k.length)], dv: ["kv", D, new Float32Array(v.length)] } as const;
  return byHeadGroups(gpu, p, inputs, outputs, (sub, [q, k, v, out, lse, dout, past]) => {
    const mem = new Buffers(gpu);
    return checked(gpu, "MoBA backward", mem, async () => {
      const t = { q: mem.storage(q, "q"), k: mem.storage(k, "k"), v: mem.storage(v, "v") };
      const g = await backwardOnGpu(mem, sub, t, mem.storage(out, "out"), mem.storage(lse, "lse"), mem.storage(dout, "dout"), null, past as Int32Array | undefined);
      const [dq, dkdv] = await readBack(gpu, [{ buffer: g.dq, bytes: q.byteLength }, { buffer: g.dkdv, bytes: 2 * k.byteLength }]);
      return { dq: f32(dq), dk: new Float32Array(dkdv, 0, k.length), dv: new Float32Array(dkdv, k.byteLength, k.length) };
    });
  });
}
