// MoBA's routing on the GPU (block key sums, gate + top-k, the inverted index: nothing is read back)
// and the rounds of tiles the forward and dq dispatch: the own blocks' tiles, built on the host,
// then each routed round's gathered query tiles, built on the GPU. (The forward over union tiles
// reads the routing table itself and needs no index: the backward builds it.)
import { forEachRoute } from "../../attention/blocks.js";
import { type Binding, type Buffers, dispatch, pipeline, threadGroups } from "../kernel.js";
import { GATE, type GateShape } from "./gate.wgsl.js";
import { naturalTiles, type Plan, planKey, tilesPerBlock } from "./plan.js";
import { BLOCK_SUMS, GATHERED_TILES, SCAN, SCATTER } from "./routing.wgsl.js";
import type { TileShape } from "./tile.wgsl.js";

export interface Routed {
  routing: GPUBuffer; // [tokens, qHeads, width] u32
  counts: GPUBuffer; // [width * qHeads * blocks] queries of each (round, head, block)
  /** The inverted index, once built (indexRouting). */
  index: RoutingIndex | null;
  blockRange: GPUBuffer; // [blocks] (first, end) token
  /** By queries per tile: round r's gathered query tiles are slots [r · bound, (r + 1) · bound) of 8 words, unused ones zero. */
  tiles: Map<number, { buffer: GPUBuffer; bound: number }>;
}

function routingParams(mem: Buffers, pl: Plan): GPUBuffer {
  const { tokens, qHeads, kvHeads, headDim, blockSize, cuSeqlens } = pl.p;
  return mem.uniform([tokens, qHeads, kvHeads, headDim, blockSize, pl.width, pl.blocks, cuSeqlens.length - 1], "routing params");
}

/** The sequences' bounds and first global blocks, as the routing kernels read them (uploaded once per shape). */
const sequenceBuffers = (mem: Buffers, pl: Plan) => ({
  cu: mem.constant(`cuSeqlens ${planKey(pl)}`, () => Uint32Array.from(pl.p.cuSeqlens), "cuSeqlens"), // [batch + 1]
  offsets: mem.constant(`block offsets ${planKey(pl)}`, () => Uint32Array.from(pl.offsets), "block offsets"), // [batch + 1]
});

/** The query tiles of consecutive tokens (naturalTiles), built and uploaded once per shape. */
export function naturalTileBuffer(
  mem: Buffers,
  pl: Plan,
  TQ: number,
  ownLast: boolean,
  causal = pl.all,
): { tiles: GPUBuffer; count: number } {
  const key = `tiles ${TQ} ${ownLast} ${causal} ${planKey(pl)}`;
  return {
    tiles: mem.constant(key, () => naturalTiles(pl, TQ, ownLast, causal).words, "tiles"),
    count: tilesPerBlock(pl, TQ, pl.p.qHeads),
  };
}

/** The gate's compile-time shape for a plan: q read as vec4 rows where headDim allows. */
export const gateShape = (pl: Plan): GateShape => ({ width: pl.width, headDim: pl.p.headDim, vec4Rows: pl.p.headDim % 4 === 0 });

/** The gate's inputs and outputs: the bindings after its parameters. */
export interface GateBuffers {
  cu: GPUBuffer; // [batch + 1] cuSeqlens
  offsets: GPUBuffer; // [batch + 1] first global block of each sequence
  q: GPUBuffer; // [tokens, qHeads, headDim] f32
  sums: GPUBuffer; // [blocks, kvHeads, headDim] block key sums
  routing: GPUBuffer; // [tokens, qHeads, width] out
  counts: GPUBuffer; // [width, qHeads, blocks] queries of each (round, head, block), added to
}

/**
 * Records the gate (gate.wgsl.ts) in its shape for the plan, or in `shape` where a kernel harness
 * (dev/attention/gate.mts) times another.
 */
export async function recordGate(mem: Buffers, encoder: GPUCommandEncoder, pl: Plan, b: GateBuffers, shape = gateShape(pl)): Promise<void> {
  const gate = await pipeline(mem.gpu, GATE, shape);
  const bindings = [routingParams(mem, pl), b.cu, b.offsets, b.q, b.sums, b.routing, b.counts];
  dispatch(encoder, mem.gpu, gate, bindings, pl.p.qHeads * Math.ceil(pl.p.tokens / 64), "gate");
}

/** The queries that routed to each block, by (round, head, block). */
export interface RoutingIndex {
  entries: GPUBuffer; // gathered queries, by (round, head, block)
  segmentStart: GPUBuffer; // [width * qHeads * blocks + 1] where each (round, head, block)'s queries start in entries
}

/**
 * Records the routing table (computed here unless given) and its histogram, and with `index` its
 * inverted index (indexRouting), all on the GPU: nothing is read back.
 */
export async function route(
  mem: Buffers,
  encoder: GPUCommandEncoder,
  pl: Plan,
  q: GPUBuffer,
  k: GPUBuffer,
  given?: Int32Array,
  index = true,
): Promise<Routed> {
  const { tokens, qHeads, kvHeads, headDim } = pl.p;
  const gpu = mem.gpu;
  const params = routingParams(mem, pl);
  const { cu, offsets } = sequenceBuffers(mem, pl);
  const blockRange = mem.constant(
    `block ranges ${planKey(pl)}`,
    () => {
      const range = new Uint32Array(2 * pl.blocks);
      for (let G = 0; G < pl.blocks; G++) [range[2 * G], range[2 * G + 1]] = [pl.blockStart[G], pl.blockEnd[G]];
      return range;
    },
    "block ranges",
  );
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
    dispatch(encoder, gpu, await pipeline(gpu, BLOCK_SUMS, null), [params, blockRange, k, sums], pl.blocks * kvHeads, "block sums");
    await recordGate(mem, encoder, pl, { cu, offsets, q, sums, routing, counts });
  }
  const routed: Routed = { routing, counts, index: null, blockRange, tiles: new Map() };
  if (index) await indexRouting(mem, encoder, pl, routed);
  return routed;
}

/** Records the inverted index of `routed` (prefix sums of its histogram, scatter), once. */
export async function indexRouting(mem: Buffers, encoder: GPUCommandEncoder, pl: Plan, routed: Routed): Promise<RoutingIndex> {
  if (routed.index) return routed.index;
  const { tokens, qHeads } = pl.p;
  const gpu = mem.gpu;
  const segments = pl.width * qHeads * pl.blocks;
  const segmentStart = mem.storage((segments + 1) * 4, "segment starts", encoder);
  const entries = mem.storage(tokens * qHeads * pl.width * 4, "inverted index", encoder);
  dispatch(
    encoder,
    gpu,
    await pipeline(gpu, SCAN, null),
    [mem.uniform([segments, 0, 1], "scan"), routed.counts, segmentStart],
    1,
    "segment starts",
  );
  dispatch(
    encoder,
    gpu,
    await pipeline(gpu, SCATTER, null),
    [
      routingParams(mem, pl),
      ...Object.values(sequenceBuffers(mem, pl)),
      routed.routing,
      segmentStart,
      mem.storage(segments * 4, "cursors", encoder),
      entries,
    ],
    threadGroups(SCATTER, tokens * qHeads),
    "scatter",
  );
  routed.index = { entries, segmentStart };
  return routed.index;
}

/**
 * Records every round's gathered query tiles of TQ queries, built on the GPU once per TQ (the forward
 * and dq kernels may tile differently): tile offsets by prefix sums of ⌈count / TQ⌉, then one thread per segment.
 */
async function queryTileRounds(
  mem: Buffers,
  encoder: GPUCommandEncoder,
  pl: Plan,
  routed: Routed,
  TQ: number,
): Promise<{ buffer: GPUBuffer; bound: number }> {
  const built = routed.tiles.get(TQ);
  if (built) return built;
  const gpu = mem.gpu;
  const roundSegments = pl.p.qHeads * pl.blocks;
  const segments = pl.width * roundSegments;
  // a round's tiles: at most one partial tile per segment beyond ⌈queries / TQ⌉; a multiple of 8 slots keeps each region 256-byte aligned
  const bound = Math.ceil((Math.ceil((pl.p.tokens * pl.p.qHeads) / TQ) + roundSegments) / 8) * 8;
  const tileOffset = mem.storage(segments * 4, "tile offsets", encoder);
  const tiles = { buffer: mem.storage(pl.width * bound * 32, "gathered tiles", encoder), bound };
  dispatch(
    encoder,
    gpu,
    await pipeline(gpu, SCAN, null),
    [mem.uniform([roundSegments, TQ, 0], "scan tiles"), routed.counts, tileOffset],
    pl.width,
    "tile offsets",
  );
  dispatch(
    encoder,
    gpu,
    await pipeline(gpu, GATHERED_TILES, null),
    [
      mem.uniform([segments, roundSegments, pl.blocks, TQ, bound], "tiles"),
      routed.counts,
      (await indexRouting(mem, encoder, pl, routed)).segmentStart,
      tileOffset,
      routed.blockRange,
      tiles.buffer,
    ],
    threadGroups(GATHERED_TILES, segments),
    "gathered tiles",
  );
  routed.tiles.set(TQ, tiles);
  return tiles;
}

export function tileParams(mem: Buffers, pl: Plan, shape: TileShape, tiles: number, loadState: boolean, finalizeHere: boolean): GPUBuffer {
  const { qHeads, kvHeads, scale, headDim, tokens, blockSize } = pl.p;
  // segment starts follow the 2 vec4 of each tile (dk/dv); dv follows dk in their shared buffer
  return mem.uniform(
    [
      qHeads,
      kvHeads,
      tiles,
      loadState ? 1 : 0,
      finalizeHere ? 1 : 0,
      pl.width,
      pl.blocks,
      { f32: scale },
      headDim,
      shape.TQ,
      shape.TK,
      2 * tiles,
      tokens * kvHeads * headDim,
      tokens,
      blockSize,
    ],
    "tile params",
  );
}

/**
 * Every round of tiles for the forward and dq: the own blocks (or full causal ranges, built here),
 * then each routed round (built on the GPU: `bound` slots, the unused ones empty). `ownLast`: the
 * own blocks' tiles flagged to carry the routed rounds' state (naturalTiles), for the forward.
 */
export async function rounds(
  mem: Buffers,
  encoder: GPUCommandEncoder,
  pl: Plan,
  routed: Routed | null,
  TQ: number,
  ownLast = false,
): Promise<{ tiles: Binding; count: number }[]> {
  const list: { tiles: Binding; count: number }[] = [naturalTileBuffer(mem, pl, TQ, ownLast)];
  if (!routed) return list;
  const { buffer, bound } = await queryTileRounds(mem, encoder, pl, routed, TQ);
  for (let r = 0; r < pl.width; r++) list.push({ tiles: { buffer, offset: r * bound * 32, size: bound * 32 }, count: bound });
  return list;
}
