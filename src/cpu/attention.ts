// Block-sparse MoBA / causal flash attention on the CPU, forward and backward.
//
// Forward, query-major (one unit = one sequence, query head and `span` consecutive query blocks): each
// query keeps an online softmax (running max m, denominator l, accumulator acc). The unit visits key
// blocks in ascending order, each with exactly the unit's queries that chose it, and a query block's
// own block causally after the blocks before it — so each query folds its routed past blocks in
// ascending order, then its own; folding a block into (m, l, acc) is the log-sum-exp merge of the two
// attentions. A key block chosen by queries of several of the unit's blocks is one tile for all of
// them. Nothing of size tokens x tokens is ever formed.
//
// Backward, key-block-major (one unit = one sequence, kv head, key block), FlashAttention-2 style:
// probabilities are recomputed from lse, dk/dv of the block are owned by the unit, dq is added into
// the caller's float64 accumulator (one per thread, summed afterwards).
//
// The walk (units, buckets, which queries meet which key block) is JavaScript; the gate and the tiles
// — some query rows against one key block — run on the WebAssembly SIMD kernels (wasm/assembly/: the
// gate in float64, bit for bit blocks.ts's; the tiles in float32, their scores as GEMMs) where there
// are some, else on blocks.ts's gate and the scalar kernels below (float64 JavaScript numbers, the
// reference-checked fallback). Inputs and outputs are float32.
import type { AttentionProblem } from "../attention/problem.js";
import { blockMeans, type InvertedRouting, routeQuery } from "../attention/blocks.js";
import { type Floats, MobaError } from "../tensor.js";
import { type Regions, simd, type SimdKernels } from "./simd.js";

export interface ForwardArrays {
  q: Float32Array; // [tokens, qHeads, headDim]
  k: Float32Array; // [tokens, kvHeads, headDim]
  v: Float32Array; // [tokens, kvHeads, headDim]
  offsets: Int32Array; // [batch + 1] first global block of each sequence
  out: Float32Array; // [tokens, qHeads, headDim] written
  lse: Float32Array; // [tokens, qHeads] written
  past: Int32Array; // [tokens, qHeads, width] routing table, written
  width: number; // past blocks per query: topK - 1, or 0 when all is set
  all: boolean; // every past block is selected (full attention): no gate, no table
  span: number; // query blocks per unit (forwardSpan)
}

export interface BackwardArrays {
  q: Float32Array; // [tokens, qHeads, headDim]
  k: Float32Array; // [tokens, kvHeads, headDim]
  v: Float32Array; // [tokens, kvHeads, headDim]
  dout: Float32Array; // [tokens, qHeads, headDim]
  lse: Float32Array; // [tokens, qHeads]
  delta: Float64Array; // [tokens, qHeads] rowsum(dout * out)
  offsets: Int32Array; // [batch + 1]
  inverted: InvertedRouting | null; // null = every past block is selected
  dq: Float64Array; // [tokens, qHeads, headDim] accumulated
  dk: Float32Array; // [tokens, kvHeads, headDim] written
  dv: Float32Array; // [tokens, kvHeads, headDim] written
}

/**
 * Work units (sequence, head, first block), each of `span` consecutive blocks (fewer at a sequence's
 * end) except the first 2·span blocks of a sequence, one block each, as a flat [units, 3] list, and the
 * cost of each (key visits). The single blocks are the cheapest units (a block before topK - 1 has
 * fewer past blocks): handed out last, they even out the threads' shares at the end.
 */
export function listUnits(problem: AttentionProblem, heads: number, all: boolean, span = 1): { units: Int32Array; cost: Float64Array } {
  const { cuSeqlens, blockSize: B } = problem;
  const list: number[] = [];
  const cost: number[] = [];
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const length = cuSeqlens[b + 1] - cuSeqlens[b];
    const blocks = Math.ceil(length / B);
    for (let h = 0; h < heads; h++) {
      for (let i0 = 0; i0 < blocks; i0 = unitEnd(i0, blocks, span)) {
        const i1 = unitEnd(i0, blocks, span);
        let sum = 0;
        for (let i = i0; i < i1; i++) {
          const rows = Math.min(B, length - i * B);
          // a query block sees min(i, topK - 1) past blocks (all of them for full attention) and half its own
          const pastBlocks = all ? i : Math.min(i, problem.topK - 1);
          sum += rows * (pastBlocks * B + rows / 2) + B;
        }
        list.push(b, h, i0);
        cost.push(sum);
      }
    }
  }
  return { units: Int32Array.from(list), cost: Float64Array.from(cost) };
}

/** The block after the unit that starts at block i0 of a sequence of `blocks` blocks (listUnits). */
function unitEnd(i0: number, blocks: number, span: number): number {
  return Math.min(blocks, i0 < 2 * span ? i0 + 1 : i0 + span);
}

/**
 * Query blocks per forward unit: MoBA's units take up to 2048 query rows, so that a key block chosen
 * by queries of several blocks is one tile (its keys and values read once, fewer and fuller tiles);
 * full attention folds a whole query block against every past key in one tile already.
 */
export function forwardSpan(problem: AttentionProblem, all: boolean): number {
  return all ? 1 : Math.max(1, Math.floor(2048 / problem.blockSize));
}

function dot(a: Float32Array, ai: number, b: Float32Array, bi: number, n: number): number {
  let s0 = 0,
    s1 = 0,
    s2 = 0,
    s3 = 0;
  let d = 0;
  for (; d + 3 < n; d += 4) {
    s0 += a[ai + d] * b[bi + d];
    s1 += a[ai + d + 1] * b[bi + d + 1];
    s2 += a[ai + d + 2] * b[bi + d + 2];
    s3 += a[ai + d + 3] * b[bi + d + 3];
  }
  for (; d < n; d++) s0 += a[ai + d] * b[bi + d];
  return s0 + s1 + s2 + s3;
}

/** Scratch of one forward unit: the online-softmax state of its queries (up to span · blockSize). */
class ForwardScratch {
  readonly m: Float64Array;
  readonly l: Float64Array;
  readonly acc: Float64Array;
  readonly scores: Float64Array;
  readonly gate: Float64Array;
  readonly chosen: Int32Array;
  readonly bucketStart: Int32Array;
  readonly bucket: Int32Array;

  constructor(problem: AttentionProblem, blocksPerSequence: number, width: number, span: number) {
    const R = rowsPerUnit(problem, span);
    this.m = new Float64Array(R);
    this.l = new Float64Array(R);
    this.acc = new Float64Array(R * problem.headDim);
    this.scores = new Float64Array(rowsPerBlock(problem));
    this.gate = new Float64Array(Math.max(1, width));
    this.chosen = new Int32Array(Math.max(1, width));
    this.bucketStart = new Int32Array(blocksPerSequence + 1);
    this.bucket = new Int32Array(R * Math.max(1, width));
  }
}

/** Rows of the largest block: the block size, or the longest sequence when that is shorter (a block size of 10^9 allocates no more). */
function rowsPerBlock(problem: AttentionProblem): number {
  return rowsPerUnit(problem, 1);
}

/** Rows of the largest unit of `span` blocks. */
function rowsPerUnit(problem: AttentionProblem, span: number): number {
  let longest = 0;
  for (let b = 0; b + 1 < problem.cuSeqlens.length; b++) longest = Math.max(longest, problem.cuSeqlens[b + 1] - problem.cuSeqlens[b]);
  return Math.min(problem.blockSize * span, longest);
}

/** Folds keys [k0, k1) into the online softmax of query row r (token t, head h). */
function foldKeys(a: ForwardArrays, p: AttentionProblem, s: ForwardScratch, r: number, t: number, h: number, k0: number, k1: number): void {
  const { qHeads, kvHeads, headDim: D, scale } = p;
  const g = Math.floor(h / (qHeads / kvHeads));
  const qRow = (t * qHeads + h) * D;
  let blockMax = -Infinity;
  for (let key = k0; key < k1; key++) {
    const x = scale * dot(a.q, qRow, a.k, (key * kvHeads + g) * D, D);
    s.scores[key - k0] = x;
    if (x > blockMax) blockMax = x;
  }
  const mNew = Math.max(s.m[r], blockMax);
  const alpha = Math.exp(s.m[r] - mNew); // 0 on the first block (m = -Infinity)
  const acc = s.acc;
  const accRow = r * D;
  let l = s.l[r] * alpha;
  if (alpha !== 1) for (let d = 0; d < D; d++) acc[accRow + d] *= alpha;
  for (let key = k0; key < k1; key++) {
    const pr = Math.exp(s.scores[key - k0] - mNew);
    l += pr;
    const vRow = (key * kvHeads + g) * D;
    for (let d = 0; d < D; d++) acc[accRow + d] += pr * a.v[vRow + d];
  }
  s.l[r] = l;
  s.m[r] = mNew;
}

/**
 * The online-softmax state of one unit (`rows` rows of query head h from token q0 on): `route` writes
 * into a.past the past blocks that unit rows [first, first + count), of block i, choose among the i
 * before it (the gate); `fold` adds keys [k0, k1) for the unit rows base + rows[0 .. count) (causal:
 * row base + r sees keys k0 .. k0 + r only); `finish` writes out and lse.
 */
interface ForwardTiles {
  begin(b: number, q0: number, h: number, rows: number): void;
  route(i: number, first: number, count: number): void;
  fold(rows: Int32Array, count: number, k0: number, k1: number, causal: boolean, base: number): void;
  finish(): void;
}

/** out = acc / l and lse = m + log l of the block's rows (tokens q0 .., head h). */
function writeRows(p: AttentionProblem, a: ForwardArrays, q0: number, h: number, rows: number, m: Floats, l: Floats, acc: Floats): void {
  const { qHeads, headDim: D } = p;
  for (let r = 0; r < rows; r++) {
    const t = q0 + r;
    const inv = 1 / l[r];
    const o = (t * qHeads + h) * D;
    for (let d = 0; d < D; d++) a.out[o + d] = acc[r * D + d] * inv;
    a.lse[t * qHeads + h] = m[r] + Math.log(l[r]);
  }
}

function scalarForwardTiles(p: AttentionProblem, a: ForwardArrays, s: ForwardScratch): ForwardTiles {
  const D = p.headDim;
  const means = a.all ? new Float64Array(0) : blockMeans(p, a.k, a.offsets);
  let seq = 0,
    q0 = 0,
    h = 0,
    rows = 0;
  return {
    begin(b, first, head, count) {
      [seq, q0, h, rows] = [b, first, head, count];
      s.m.fill(-Infinity, 0, rows);
      s.l.fill(0, 0, rows);
      s.acc.fill(0, 0, rows * D);
    },
    route(i, first, count) {
      for (let r = first; r < first + count; r++) routeQuery(p, a.q, means, a.past, q0 + r, h, i, a.offsets[seq], s.gate, s.chosen);
    },
    fold(list, count, k0, k1, causal, base) {
      // at most a block of keys at a time (the size of s.scores)
      for (let c0 = k0; c0 < k1; c0 += s.scores.length) {
        const c1 = Math.min(k1, c0 + s.scores.length);
        for (let e = 0; e < count; e++) foldKeys(a, p, s, base + list[e], q0 + base + list[e], h, c0, causal ? c0 + list[e] + 1 : c1);
      }
    },
    finish: () => writeRows(p, a, q0, h, rows, s.m, s.l, s.acc),
  };
}

/**
 * Where the SIMD forward's data lies in module memory: the inputs (q, k, v; k and v of every sequence and
 * kv head packed as the tiles' GEMMs read them — Kᵀ in slivers of 8 keys, V in slivers of 8 columns —
 * once per call instead of once per tile; the gate's block means), laid out once for every thread, and
 * one thread's scratch (its routing rows, the online-softmax state of a unit, the tiles' work).
 */
export interface ForwardLayout {
  inputBytes: number[]; // q, k, v, K packed, V packed, block means
  scratchBytes: number[]; // routing rows, route work, m, l, acc, row indices, tile work
  packed: number[]; // packed k and v of sequence b, kv head g at packed[b·kvHeads + g] (floats from the region's start)
  means: number[]; // its block means at means[b·kvHeads + g] (bytes)
}

const up8 = (n: number) => Math.ceil(n / 8) * 8;

export function forwardLayout(
  kernels: SimdKernels,
  p: AttentionProblem,
  a: Pick<ForwardArrays, "offsets" | "width" | "all" | "span">,
): ForwardLayout {
  const { tokens, qHeads, kvHeads, headDim: D, cuSeqlens } = p;
  const e = kernels.exports;
  const B = rowsPerBlock(p);
  const R = rowsPerUnit(p, a.span);
  const packed: number[] = [0];
  const means: number[] = [0];
  let maxBlocks = 0;
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const length = cuSeqlens[b + 1] - cuSeqlens[b];
    const blocks = a.offsets[b + 1] - a.offsets[b];
    maxBlocks = Math.max(maxBlocks, blocks);
    for (let g = 0; g < kvHeads; g++) {
      packed.push(packed[packed.length - 1] + up8(length) * D);
      means.push(means[means.length - 1] + (a.all ? 0 : e.meansBytes(blocks, D)));
    }
  }
  const size = packed[packed.length - 1];
  return {
    inputBytes: [
      4 * tokens * qHeads * D,
      4 * tokens * kvHeads * D,
      4 * tokens * kvHeads * D,
      4 * size,
      4 * (size / D) * up8(D),
      means[means.length - 1],
    ],
    scratchBytes: [4 * B * a.width, e.routeWorkBytes(maxBlocks, a.width), 4 * R, 4 * R, 4 * R * D, 4 * R, e.forwardWorkBytes(D)],
    packed,
    means,
  };
}

/**
 * Copies q, k, v into module memory at `inputAt` (forwardLayout's regions), checks that they are finite
 * (a MobaError naming the first bad element otherwise), packs k and v and computes the block means.
 */
export function prepareForward(
  kernels: SimdKernels,
  p: AttentionProblem,
  a: ForwardArrays,
  layout: ForwardLayout,
  inputAt: number[],
): void {
  const { kvHeads, headDim: D, cuSeqlens, blockSize } = p;
  const e = kernels.exports;
  const [qAt, kAt, vAt, kpAt, vpAt, meansAt] = inputAt;
  for (const [name, at, data] of [
    ["q", qAt, a.q],
    ["k", kAt, a.k],
    ["v", vAt, a.v],
  ] as const) {
    kernels.f32(at, data.length).set(data);
    const bad = kernels.firstNonFinite(at, data.length);
    if (bad >= 0) throw new MobaError(`${name}: expected finite values, got ${data[bad]} at element ${bad}`);
  }
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const length = cuSeqlens[b + 1] - cuSeqlens[b];
    for (let g = 0; g < kvHeads; g++) {
      const first = 4 * (cuSeqlens[b] * kvHeads + g) * D;
      const at = layout.packed[b * kvHeads + g];
      e.packPanel(D, length, kAt + first, 1, kvHeads * D, kpAt + 4 * at); // Kᵀ[D, length]
      e.packPanel(length, D, vAt + first, kvHeads * D, 1, vpAt + 4 * (at / D) * up8(D)); // V[length, D]
      if (!a.all) e.blockMeans(length, blockSize, D, kAt + first, kvHeads * D, meansAt + layout.means[b * kvHeads + g]);
    }
  }
}

// the tiles on the inputs prepareForward laid out at inputAt, with one thread's scratch at scratchAt
function simdForwardTiles(
  kernels: SimdKernels,
  p: AttentionProblem,
  a: ForwardArrays,
  layout: ForwardLayout,
  inputAt: number[],
  scratchAt: number[],
): ForwardTiles {
  const { qHeads, kvHeads, headDim: D, scale, cuSeqlens } = p;
  const B = rowsPerBlock(p);
  const R = rowsPerUnit(p, a.span);
  const e = kernels.exports;
  const { packed, means } = layout;
  const [qAt, kAt, vAt, kpAt, vpAt, meansAt] = inputAt;
  const [pastAt, routeWork, mAt, lAt, accAt, rowsAt, work] = scratchAt;
  const vPackedAt = (b: number, g: number) => vpAt + 4 * (packed[b * kvHeads + g] / D) * up8(D);
  const m = kernels.f32(mAt, R),
    l = kernels.f32(lAt, R),
    acc = kernels.f32(accAt, R * D),
    rowIndex = kernels.i32(rowsAt, R),
    past = kernels.i32(pastAt, B * a.width);
  let seq = 0,
    q0 = 0,
    h = 0,
    g = 0,
    rows = 0;
  return {
    begin(b, first, head, count) {
      [seq, q0, h, g, rows] = [b, first, head, Math.floor(head / (qHeads / kvHeads)), count];
      m.fill(-Infinity, 0, rows);
      l.fill(0, 0, rows);
      acc.fill(0, 0, rows * D);
    },
    route(i, first, count) {
      const w = a.width;
      const t0 = q0 + first;
      e.route(count, qAt + 4 * (t0 * qHeads + h) * D, qHeads * D, meansAt + means[seq * kvHeads + g], i, D, w, pastAt, w, routeWork);
      for (let r = 0; r < count; r++) for (let j = 0; j < w; j++) a.past[((t0 + r) * qHeads + h) * w + j] = past[r * w + j];
    },
    fold(list, count, k0, k1, causal, base) {
      rowIndex.set(list.subarray(0, count));
      const kv = 4 * (k0 * kvHeads + g) * D;
      // the packed keys serve ranges that start on a sliver (every block when blockSize is a multiple of 8)
      const key = k0 - cuSeqlens[seq];
      const [kPacked, vPacked] =
        key % 8 === 0 ? [kpAt + 4 * (packed[seq * kvHeads + g] + key * D), vPackedAt(seq, g) + 4 * key * 8] : [0, 0];
      const vStride = 8 * (cuSeqlens[seq + 1] - cuSeqlens[seq]);
      e.attendForward(
        count,
        rowsAt,
        qAt + 4 * ((q0 + base) * qHeads + h) * D,
        qHeads * D,
        kAt + kv,
        vAt + kv,
        kvHeads * D,
        k1 - k0,
        causal ? 1 : 0,
        D,
        scale,
        mAt + 4 * base,
        lAt + 4 * base,
        accAt + 4 * base * D,
        kPacked,
        vPacked,
        vStride,
        work,
      );
    },
    finish: () => writeRows(p, a, q0, h, rows, m, l, acc),
  };
}

/** Inputs laid out and prepared once in a shared memory (prepareForward), the scratch of each thread after them. */
export interface SharedForward extends Regions {
  layout: ForwardLayout;
}

/**
 * Forward of the units `next` hands out (an index into the list each call, -1 when none is left); a
 * thread that gets none sets nothing up. With `shared`, the kernels' memory is the shared one, its
 * inputs prepared and this thread's scratch at shared.scratchAt[slot]; else this thread lays out its
 * own and copies the inputs in (checking them: see prepareForward).
 */
export function forwardUnits(
  problem: AttentionProblem,
  a: ForwardArrays,
  units: Int32Array,
  next: () => number,
  kernels = simd,
  shared?: { forward: SharedForward; slot: number },
): void {
  const { qHeads, blockSize: B, cuSeqlens } = problem;
  let u = next();
  if (u < 0) return;
  let maxBlocks = 0;
  for (let b = 0; b + 1 < a.offsets.length; b++) maxBlocks = Math.max(maxBlocks, a.offsets[b + 1] - a.offsets[b]);
  const s = new ForwardScratch(problem, maxBlocks, a.width, a.span);
  let tiles: ForwardTiles;
  if (!kernels) tiles = scalarForwardTiles(problem, a, s);
  else if (shared) {
    const { layout, inputAt, scratchAt } = shared.forward;
    tiles = simdForwardTiles(kernels, problem, a, layout, inputAt, scratchAt[shared.slot]);
  } else {
    const layout = forwardLayout(kernels, problem, a);
    const { inputAt, scratchAt } = kernels.regions(layout.inputBytes, layout.scratchBytes, 1);
    prepareForward(kernels, problem, a, layout, inputAt);
    tiles = simdForwardTiles(kernels, problem, a, layout, inputAt, scratchAt[0]);
  }
  const every = Int32Array.from({ length: rowsPerBlock(problem) }, (_, r) => r); // all rows of a block
  const { bucket, bucketStart } = s;
  for (; u >= 0; u = next()) {
    const b = units[3 * u],
      h = units[3 * u + 1],
      i0 = units[3 * u + 2];
    const start = cuSeqlens[b];
    const length = cuSeqlens[b + 1] - start;
    const i1 = unitEnd(i0, Math.ceil(length / B), a.span); // the unit's query blocks [i0, i1)
    const q0 = start + i0 * B;
    const rows = Math.min(length, i1 * B) - i0 * B;
    const rowsOf = (i: number) => Math.min(B, length - i * B);
    tiles.begin(b, q0, h, rows);

    if (a.all) {
      // every past key, with every row of the block
      if (i0 > 0) tiles.fold(every, rows, start, q0, false, 0);
      tiles.fold(every, rows, q0, q0 + rows, true, 0);
    } else {
      // route each query (past[(t * qHeads + h) * width + j]: the j-th past block of token t)
      const pastOf = (r: number, j: number) => a.past[((q0 + r) * qHeads + h) * a.width + j];
      for (let i = i0; i < i1; i++) {
        const first = (i - i0) * B;
        if (i > a.width) tiles.route(i, first, rowsOf(i));
        else for (let r = first; r < first + rowsOf(i); r++) for (let j = 0; j < i; j++) a.past[((q0 + r) * qHeads + h) * a.width + j] = j;
      }
      // bucket the unit's rows by chosen block (counting sort; rows ascend within a bucket)
      const chosen = (r: number) => Math.min(i0 + Math.floor(r / B), a.width); // past blocks of unit row r
      bucketStart.fill(0, 0, i1 + 1);
      for (let r = 0; r < rows; r++) for (let j = 0; j < chosen(r); j++) bucketStart[pastOf(r, j) + 1]++;
      for (let j = 0; j < i1; j++) bucketStart[j + 1] += bucketStart[j];
      for (let r = 0; r < rows; r++) for (let j = 0; j < chosen(r); j++) bucket[bucketStart[pastOf(r, j)]++] = r;
      // bucketStart[j] now holds the end of bucket j; bucket j starts at the end of bucket j - 1. Key block
      // j, ascending: the rows that chose it, then (for the unit's own blocks) block j's rows causally
      for (let j = 0; j < i1; j++) {
        const first = j === 0 ? 0 : bucketStart[j - 1];
        if (bucketStart[j] > first)
          tiles.fold(bucket.subarray(first), bucketStart[j] - first, start + j * B, start + (j + 1) * B, false, 0);
        if (j >= i0) tiles.fold(every, rowsOf(j), start + j * B, start + j * B + rowsOf(j), true, (j - i0) * B);
      }
    }
    tiles.finish();
  }
}

/** Gradient contributions of query t (head h) against keys [k0, k1) of the unit's block. */
function backwardKeys(
  a: BackwardArrays,
  p: AttentionProblem,
  dkBlock: Float64Array,
  dvBlock: Float64Array,
  t: number,
  h: number,
  g: number,
  blockStart: number,
  k0: number,
  k1: number,
): void {
  const { qHeads, kvHeads, headDim: D, scale } = p;
  const qRow = (t * qHeads + h) * D;
  const lse = a.lse[t * qHeads + h];
  const delta = a.delta[t * qHeads + h];
  for (let key = k0; key < k1; key++) {
    const kRow = (key * kvHeads + g) * D;
    const pr = Math.exp(scale * dot(a.q, qRow, a.k, kRow, D) - lse);
    const ds = scale * pr * (dot(a.dout, qRow, a.v, kRow, D) - delta);
    const local = (key - blockStart) * D;
    for (let d = 0; d < D; d++) {
      dvBlock[local + d] += pr * a.dout[qRow + d];
      dkBlock[local + d] += ds * a.q[qRow + d];
      a.dq[qRow + d] += ds * a.k[kRow + d];
    }
  }
}

/**
 * The gradients of one key block (keys [k0, k1), kv head g): `visit` adds the contributions of the
 * queries tokens[0 .. count) of head h (causal: the block's own queries, token t sees keys k0 .. t),
 * `finish` writes dk and dv of the block.
 */
interface BackwardTiles {
  begin(g: number, k0: number, k1: number): void;
  visit(h: number, tokens: Int32Array, count: number, causal: boolean): void;
  finish(): void;
}

/** dk and dv of keys [k0, k1), kv head g, from the block's buffers ([k1 - k0, headDim]). */
function writeBlock(p: AttentionProblem, a: BackwardArrays, g: number, k0: number, k1: number, dk: Floats, dv: Floats): void {
  const D = p.headDim;
  for (let key = k0; key < k1; key++) {
    a.dk.set(dk.subarray((key - k0) * D, (key - k0 + 1) * D), (key * p.kvHeads + g) * D);
    a.dv.set(dv.subarray((key - k0) * D, (key - k0 + 1) * D), (key * p.kvHeads + g) * D);
  }
}

function scalarBackwardTiles(p: AttentionProblem, a: BackwardArrays): BackwardTiles {
  const D = p.headDim;
  const dkBlock = new Float64Array(rowsPerBlock(p) * D);
  const dvBlock = new Float64Array(rowsPerBlock(p) * D);
  let g = 0,
    k0 = 0,
    k1 = 0;
  return {
    begin(head, first, end) {
      [g, k0, k1] = [head, first, end];
      dkBlock.fill(0);
      dvBlock.fill(0);
    },
    visit(h, tokens, count, causal) {
      for (let e = 0; e < count; e++) backwardKeys(a, p, dkBlock, dvBlock, tokens[e], h, g, k0, k0, causal ? tokens[e] + 1 : k1);
    },
    finish: () => writeBlock(p, a, g, k0, k1, dkBlock, dvBlock),
  };
}

/**
 * Where the SIMD backward's data lies in module memory: the inputs (q, k, v, dout; lse and delta as
 * float32), laid out once for every thread, and one thread's scratch (its float32 dq partial, the dk
 * and dv of a block, a query list, the tiles' work).
 */
export interface BackwardLayout {
  inputBytes: number[]; // q, k, v, dout, lse, delta
  scratchBytes: number[]; // dq, dk block, dv block, query list, tile work
}

export function backwardLayout(kernels: SimdKernels, p: AttentionProblem): BackwardLayout {
  const { tokens: T, qHeads, kvHeads, headDim: D } = p;
  const B = rowsPerBlock(p); // keys of the largest block
  const [queries, keys] = [4 * T * qHeads * D, 4 * T * kvHeads * D];
  return {
    inputBytes: [queries, keys, keys, queries, 4 * T * qHeads, 4 * T * qHeads],
    scratchBytes: [queries, 4 * B * D, 4 * B * D, 4 * T, kernels.exports.backwardWorkBytes(B, D)],
  };
}

/** Copies the backward's inputs into module memory at `inputAt` (backwardLayout's regions). */
export function prepareBackward(kernels: SimdKernels, a: BackwardArrays, inputAt: number[]): void {
  [a.q, a.k, a.v, a.dout, a.lse, a.delta].forEach((data, i) => kernels.f32(inputAt[i], data.length).set(data));
}

// the tiles on the inputs prepareBackward laid out at inputAt, with one thread's scratch at scratchAt
// (its dq partial zeroed here)
function simdBackwardTiles(
  kernels: SimdKernels,
  p: AttentionProblem,
  a: BackwardArrays,
  inputAt: number[],
  scratchAt: number[],
): BackwardTiles {
  const { tokens: T, qHeads, kvHeads, headDim: D, scale } = p;
  const B = rowsPerBlock(p);
  const [qAt, kAt, vAt, doAt, lseAt, deltaAt] = inputAt;
  const [dqAt, dkAt, dvAt, listAt, work] = scratchAt;
  const dk = kernels.f32(dkAt, B * D),
    dv = kernels.f32(dvAt, B * D),
    list = kernels.i32(listAt, T);
  kernels.f32(dqAt, T * qHeads * D).fill(0);
  let g = 0,
    k0 = 0,
    k1 = 0;
  return {
    begin(head, first, end) {
      [g, k0, k1] = [head, first, end];
      dk.fill(0);
      dv.fill(0);
    },
    visit(h, tokens, count, causal) {
      list.set(tokens.subarray(0, count));
      const kv = 4 * (k0 * kvHeads + g) * D,
        row = 4 * h * D,
        stat = 4 * h;
      kernels.exports.attendBackward(
        count,
        listAt,
        qAt + row,
        doAt + row,
        dqAt + row,
        qHeads * D,
        lseAt + stat,
        deltaAt + stat,
        qHeads,
        kAt + kv,
        vAt + kv,
        kvHeads * D,
        k1 - k0,
        causal ? k0 : -1,
        D,
        scale,
        dkAt,
        dvAt,
        work,
      );
    },
    finish: () => writeBlock(p, a, g, k0, k1, dk, dv),
  };
}

/**
 * Inputs laid out and copied once into a shared memory (prepareBackward), the scratch of each thread
 * after them; a thread's dq partial is its scratch region 0.
 */
export type SharedBackward = Regions;

/**
 * Backward of units [from, to) of the key-block list (heads are kv heads). With `shared`, the kernels'
 * memory is the shared one, its inputs copied in, and this thread's dq partial (float32) stays in its
 * scratch at shared.scratchAt[slot] for the caller to sum; else this thread copies the inputs into its
 * own memory and adds its dq into a.dq.
 */
export function backwardUnits(
  problem: AttentionProblem,
  a: BackwardArrays,
  units: Int32Array,
  from: number,
  to: number,
  kernels = simd,
  shared?: { backward: SharedBackward; slot: number },
): void {
  const { qHeads, kvHeads, blockSize: B, cuSeqlens } = problem;
  const group = qHeads / kvHeads;
  const blocks = a.offsets[a.offsets.length - 1];
  let tiles: BackwardTiles;
  let flush = () => {};
  if (!kernels) tiles = scalarBackwardTiles(problem, a);
  else if (shared) tiles = simdBackwardTiles(kernels, problem, a, shared.backward.inputAt, shared.backward.scratchAt[shared.slot]);
  else {
    const layout = backwardLayout(kernels, problem);
    const { inputAt, scratchAt } = kernels.regions(layout.inputBytes, layout.scratchBytes, 1);
    prepareBackward(kernels, a, inputAt);
    tiles = simdBackwardTiles(kernels, problem, a, inputAt, scratchAt[0]);
    const dq = kernels.f32(scratchAt[0][0], a.dq.length);
    flush = () => {
      for (let i = 0; i < dq.length; i++) a.dq[i] += dq[i];
    };
  }
  const tokens = Int32Array.from({ length: problem.tokens }, (_, t) => t);
  for (let u = from; u < to; u++) {
    const b = units[3 * u],
      g = units[3 * u + 1],
      j = units[3 * u + 2];
    const k0 = cuSeqlens[b] + j * B;
    const k1 = Math.min(k0 + B, cuSeqlens[b + 1]);
    tiles.begin(g, k0, k1);
    for (let h = g * group; h < (g + 1) * group; h++) {
      // queries of later blocks that routed to this block see all of its keys
      if (a.inverted === null) {
        if (cuSeqlens[b + 1] > k1) tiles.visit(h, tokens.subarray(k1), cuSeqlens[b + 1] - k1, false);
      } else {
        const G = h * blocks + a.offsets[b] + j;
        const first = a.inverted.start[G],
          count = a.inverted.start[G + 1] - first;
        if (count > 0) tiles.visit(h, a.inverted.queries.subarray(first), count, false);
      }
      // the block's own queries see its keys causally
      tiles.visit(h, tokens.subarray(k0), k1 - k0, true);
    }
    tiles.finish();
  }
  flush();
}
