// The host side's geometry, pure (no device is touched; test/plan.test.ts checks it on the CPU):
// the blocks of the packed sequences, the tile descriptors the kernels walk, and the tile-shape
// policy, how many queries and keys a tile takes given the workgroup memory a device has.
import { blockOffsets, pastPerQuery, selectsAll } from "../../attention/blocks.js";
import type { AttentionProblem } from "../../attention/problem.js";
import { MobaError } from "../../tensor.js";
import type { MobaDevice } from "../device.js";
import { mmaSharedBytes, type MmaShape } from "./mma.wgsl.js";
import { GATE_MAX_HEAD_DIM } from "./routing.wgsl.js";
import type { TileShape } from "./tile.wgsl.js";

/** What the tile-shape policy and the choice of kernels (paths.ts) read of a device. */
export type DeviceLimits = Pick<MobaDevice, "software" | "maxWorkgroupStorage" | "mma16" | "storageBuffersPerStage" | "maxStorageBinding">;

/** The largest headDim: the gate stages key sums of this width, the tile shapes are checked against it. */
const MAX_HEAD_DIM = GATE_MAX_HEAD_DIM;
/** Workgroup memory per tile on software adapters; GPUs get what the device allows (48 KiB on the H100). */
const SOFTWARE_SHARED_BUDGET = 32768;

/** A tile of 16 (8 for headDim > 128) rows of `kind`, the other side as large as workgroup memory allows. */
function tileShape(
  gpu: DeviceLimits,
  headDim: number,
  cost: (TQ: number, TK: number) => number,
  kind: "queries" | "keys",
  input: "f32" | "f16" = "f32",
): TileShape {
  const budget = gpu.software ? Math.min(gpu.maxWorkgroupStorage, SOFTWARE_SHARED_BUDGET) : gpu.maxWorkgroupStorage;
  const fixedSide = headDim <= 128 ? 16 : 8;
  for (const other of [32, 16, 8, 4, 2, 1]) {
    const [TQ, TK] = kind === "queries" ? [fixedSide, other] : [other, fixedSide];
    if (cost(TQ, TK) <= budget) return { headDim, TQ, TK, unroll: !gpu.software, input };
  }
  throw new MobaError(`webgpu: headDim ${headDim} needs more workgroup memory than ${budget} bytes`);
}

const row = (D: number) => (D + 1) * 4;
/** The float32 kernels' workgroup bytes at TQ x TK: query and key rows, scores (and dP), row state. */
export const f32SharedBytes = {
  forward: (D: number, TQ: number, TK: number) => (TQ + 2 * TK) * row(D) + TQ * TK * 4 + 64,
  dq: (D: number, TQ: number, TK: number) => (2 * TQ + 2 * TK) * row(D) + TQ * TK * 4 + 64,
  dkdv: (D: number, TQ: number, TK: number) => (2 * TQ + 2 * TK) * row(D) + 2 * TQ * TK * 4 + 64,
};
/** The float32 kernels' tiles. */
export const forwardShape = (gpu: DeviceLimits, D: number, input: "f32" | "f16" = "f32") =>
  tileShape(gpu, D, (TQ, TK) => f32SharedBytes.forward(D, TQ, TK), "queries", input);
export const dqShape = (gpu: DeviceLimits, D: number) => tileShape(gpu, D, (TQ, TK) => f32SharedBytes.dq(D, TQ, TK), "queries");
export const dkdvShape = (gpu: DeviceLimits, D: number) => tileShape(gpu, D, (TQ, TK) => f32SharedBytes.dkdv(D, TQ, TK), "keys");

/**
 * A tensor-core kernel's chunk for headDim, or null where it cannot run (no f16 16x16x16 subgroup
 * matrices, headDim not a multiple of 16): 64 keys (measured best, docs/benchmarks.md) or fewer
 * where workgroup memory is short.
 */
export function mmaShape(gpu: DeviceLimits, headDim: number, sharedBytes = mmaSharedBytes): MmaShape | null {
  if (!gpu.mma16 || headDim % 16 !== 0) return null;
  for (const TK of [64, 32, 16]) {
    if (sharedBytes({ headDim, TK }) <= gpu.maxWorkgroupStorage) return { headDim, TK };
  }
  return null;
}

/** Sequence and block geometry shared by every pass. */
export interface Plan {
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

export function plan(p: AttentionProblem): Plan {
  if (p.headDim > MAX_HEAD_DIM) throw new MobaError(`headDim: expected at most ${MAX_HEAD_DIM} on webgpu, got ${p.headDim}`);
  const offsets = blockOffsets(p);
  const blocks = offsets[offsets.length - 1];
  const blockStart = new Uint32Array(blocks),
    blockEnd = new Uint32Array(blocks);
  const seqStart = new Uint32Array(blocks),
    seqEnd = new Uint32Array(blocks);
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
export class Tiles {
  readonly words: Uint32Array;
  count = 0;
  constructor(capacity: number) {
    this.words = new Uint32Array(8 * capacity);
  }
  add(
    queryStart: number,
    count: number,
    keyStart: number,
    keyEnd: number,
    head: number,
    gathered: number,
    naturalEnd = 0,
    block = 0,
  ): void {
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

/** Everything a plan's tables (tiles, block ranges, sequence bounds) depend on, as a cache key (Buffers.constant). */
export const planKey = (pl: Plan): string =>
  [pl.p.tokens, pl.p.qHeads, pl.p.kvHeads, pl.p.blockSize, pl.all, pl.width, pl.p.cuSeqlens.join(",")].join(" ");

/** Tiles of `size` tokens over every block, times `heads`. */
export function tilesPerBlock(pl: Plan, size: number, heads: number): number {
  let n = 0;
  for (let G = 0; G < pl.blocks; G++) n += Math.ceil((pl.blockEnd[G] - pl.blockStart[G]) / size);
  return n * heads;
}

/**
 * Query tiles of TQ consecutive tokens per (block, head); keys from the block start (MoBA's own
 * blocks) or the sequence start (full attention, and MoBA's union tiles: `causal`). Causal ranges
 * list the last blocks (the longest ranges) first: the GPU starts workgroups roughly in order, so
 * the short tiles fill in at the end instead of one long tile finishing alone. `ownLast`: the
 * forward's own blocks run after the routed rounds, so a tile whose queries had routed blocks
 * (every block but a sequence's first) carries their state (word 6).
 */
export function naturalTiles(pl: Plan, TQ: number, ownLast: boolean, causal = pl.all): Tiles {
  const tiles = new Tiles(tilesPerBlock(pl, TQ, pl.p.qHeads));
  for (let i = 0; i < pl.blocks; i++) {
    const G = causal ? pl.blocks - 1 - i : i;
    for (let h = 0; h < pl.p.qHeads; h++) {
      for (let t = pl.blockStart[G]; t < pl.blockEnd[G]; t += TQ) {
        const count = Math.min(TQ, pl.blockEnd[G] - t);
        const carried = ownLast && !causal && pl.width > 0 && pl.blockStart[G] > pl.seqStart[G];
        tiles.add(t, count, causal ? pl.seqStart[G] : pl.blockStart[G], t + count, h, 0, carried ? 1 : 0);
      }
    }
  }
  return tiles;
}

/** A union tile's blocks are bits of a u32 (tile.wgsl.ts), so its sequence has at most 32. */
export const UNION_LIMIT = 32;
/**
 * Where the policy runs MoBA's forward as one round of union tiles: at most UNION_MAX_BLOCKS blocks
 * a sequence and UNION_MAX_ROWS query rows (tokens x query heads). There the rounds' fixed costs
 * (inverted index, gathered tiles, a dispatch per round, the softmax state between rounds) outweigh
 * the keys a tile's union of blocks attends beyond each row's own choice; with more blocks or heads
 * the union costs more than it saves (H200, dev/union-forward.mts: 4K x 1 head at block 512, 1.44
 * -> 1.08 ms; 4K x 8 heads 1.19 -> 1.83, 8K x 1 0.89 -> 1.49; docs/benchmarks.md).
 */
export const UNION_MAX_BLOCKS = 8;
export const UNION_MAX_ROWS = 8192;

/** Whether MoBA's forward runs over union tiles: routed, no sequence of more than maxBlocks blocks, at most maxRows query rows. */
export function unionTiles(pl: Plan, maxBlocks = UNION_MAX_BLOCKS, maxRows = UNION_MAX_ROWS): boolean {
  if (maxBlocks > UNION_LIMIT)
    throw new MobaError(`unionTiles: maxBlocks must be at most ${UNION_LIMIT} (bits of a u32), got ${maxBlocks}`);
  if (pl.all || pl.p.tokens * pl.p.qHeads > maxRows) return false;
  for (let b = 0; b + 1 < pl.offsets.length; b++) if (pl.offsets[b + 1] - pl.offsets[b] > maxBlocks) return false;
  return true;
}

/** Key tiles for dk/dv: TK keys of one block and kv head, with the end of its natural queries and (word 0) the first key's offset in the block. */
export function keyTiles(pl: Plan, TK: number): Tiles {
  const tiles = new Tiles(tilesPerBlock(pl, TK, pl.p.kvHeads));
  for (let G = 0; G < pl.blocks; G++) {
    for (let g = 0; g < pl.p.kvHeads; g++) {
      for (let t = pl.blockStart[G]; t < pl.blockEnd[G]; t += TK) {
        tiles.add(t - pl.blockStart[G], 0, t, Math.min(t + TK, pl.blockEnd[G]), g, 0, pl.all ? pl.seqEnd[G] : pl.blockEnd[G], G);
      }
    }
  }
  return tiles;
}

/** f16 elements per row of the stored dS: blockSize rounded up to 64, the widest key tile (mma.wgsl.ts: STORED_DS's dsStride). */
export const storedDsStride = (blockSize: number) => Math.ceil(blockSize / 64) * 64;

/**
 * Bytes of dS stored for dq (mma.wgsl.ts: STORED_DS): a row of storedDsStride f16 per query head,
 * token and attended block (own and width routed), and 16 rows more, which the last query tile's
 * fragment loads reach past its rows.
 */
export function storedDsBytes(pl: Plan): number {
  const { tokens, qHeads, blockSize } = pl.p;
  return (qHeads * tokens * (1 + pl.width) + 16) * storedDsStride(blockSize) * 2;
}

/**
 * Whether dq can read dS stored by the dk/dv kernel: MoBA (full attention's dS is tokens² a head) with
 * every block starting on a 16-key tile of the tiled K copy (blockSize and cuSeqlens multiples of 16,
 * so a stored row's 16-key fragments are the copy's tiles and every element dq reads is written), and
 * the stored dS within maxBytes.
 */
export function storableDs(pl: Plan, maxBytes: number): boolean {
  return !pl.all && pl.p.blockSize % 16 === 0 && pl.p.cuSeqlens.every((t) => t % 16 === 0) && storedDsBytes(pl) <= maxBytes;
}
