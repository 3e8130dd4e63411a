// Block-sparse MoBA / causal flash attention on the CPU, forward and backward.
//
// Forward, query-block-major (one unit = one sequence, query head, query block): each query of the
// block keeps an online softmax (running max m, denominator l, accumulator acc). The routed past
// blocks are visited in ascending order, each with exactly the queries that chose it, then the
// own block causally; folding a block into (m, l, acc) is the log-sum-exp merge of the two
// attentions. Nothing of size tokens x tokens is ever formed.
//
// Backward, key-block-major (one unit = one sequence, kv head, key block), FlashAttention-2 style:
// probabilities are recomputed from lse, dk/dv of the block are owned by the unit, dq is added into
// the caller's float64 accumulator (one per thread, summed afterwards).
//
// Arithmetic is float64 (JavaScript numbers); inputs and outputs are float32.
import type { AttentionProblem } from "../attention/problem.js";
import { type InvertedRouting, routeQuery } from "../attention/blocks.js";

export interface ForwardArrays {
  q: Float32Array; // [tokens, qHeads, headDim]
  k: Float32Array; // [tokens, kvHeads, headDim]
  v: Float32Array; // [tokens, kvHeads, headDim]
  means: Float64Array; // [globalBlocks, kvHeads, headDim] (empty when every past block is selected)
  offsets: Int32Array; // [batch + 1] first global block of each sequence
  out: Float32Array; // [tokens, qHeads, headDim] written
  lse: Float32Array; // [tokens, qHeads] written
  past: Int32Array; // [tokens, qHeads, width] routing table, written
  width: number; // past blocks per query: topK - 1, or 0 when all is set
  all: boolean; // every past block is selected (full attention): no gate, no table
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

/** Work units (sequence, head, block) as a flat [units, 3] list, and the cost of each (key visits). */
export function listUnits(problem: AttentionProblem, heads: number, all: boolean): { units: Int32Array; cost: Float64Array } {
  const { cuSeqlens, blockSize: B } = problem;
  const list: number[] = [];
  const cost: number[] = [];
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const length = cuSeqlens[b + 1] - cuSeqlens[b];
    const blocks = Math.ceil(length / B);
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < blocks; i++) {
        const rows = Math.min(B, length - i * B);
        // a query block sees min(i, topK - 1) past blocks (all of them for full attention) and half its own
        const pastBlocks = all ? i : Math.min(i, problem.topK - 1);
        list.push(b, h, i);
        cost.push(rows * (pastBlocks * B + rows / 2) + B);
      }
    }
  }
  return { units: Int32Array.from(list), cost: Float64Array.from(cost) };
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

/** Scratch of one forward unit: the online-softmax state of up to blockSize queries. */
class ForwardScratch {
  readonly m: Float64Array;
  readonly l: Float64Array;
  readonly acc: Float64Array;
  readonly scores: Float64Array;
  readonly gate: Float64Array;
  readonly chosen: Int32Array;
  readonly bucketStart: Int32Array;
  readonly bucket: Int32Array;

  constructor(problem: AttentionProblem, blocksPerSequence: number, width: number) {
    const B = rowsPerBlock(problem);
    this.m = new Float64Array(B);
    this.l = new Float64Array(B);
    this.acc = new Float64Array(B * problem.headDim);
    this.scores = new Float64Array(B);
    this.gate = new Float64Array(Math.max(1, width));
    this.chosen = new Int32Array(Math.max(1, width));
    this.bucketStart = new Int32Array(blocksPerSequence + 1);
    this.bucket = new Int32Array(B * Math.max(1, width));
  }
}

/** Rows of the largest block: the block size, or the longest sequence when that is shorter (a block size of 10^9 allocates no more). */
function rowsPerBlock(problem: AttentionProblem): number {
  let longest = 0;
  for (let b = 0; b + 1 < problem.cuSeqlens.length; b++) longest = Math.max(longest, problem.cuSeqlens[b + 1] - problem.cuSeqlens[b]);
  return Math.min(problem.blockSize, longest);
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

/** Forward of units [from, to) of the list; allocates its own scratch. */
export function forwardUnits(problem: AttentionProblem, a: ForwardArrays, units: Int32Array, from: number, to: number): void {
  const { qHeads, headDim: D, blockSize: B, cuSeqlens } = problem;
  let maxBlocks = 0;
  for (let b = 0; b + 1 < a.offsets.length; b++) maxBlocks = Math.max(maxBlocks, a.offsets[b + 1] - a.offsets[b]);
  const s = new ForwardScratch(problem, maxBlocks, a.width);
  for (let u = from; u < to; u++) {
    const b = units[3 * u],
      h = units[3 * u + 1],
      i = units[3 * u + 2];
    const start = cuSeqlens[b];
    const q0 = start + i * B;
    const rows = Math.min(B, cuSeqlens[b + 1] - q0);
    s.m.fill(-Infinity, 0, rows);
    s.l.fill(0, 0, rows);
    s.acc.fill(0, 0, rows * D);

    if (a.all) {
      // every past block: one contiguous run of keys per query, tile by tile for cache reuse
      for (let j = 0; j < i; j++) {
        for (let r = 0; r < rows; r++) foldKeys(a, problem, s, r, q0 + r, h, start + j * B, start + (j + 1) * B);
      }
    } else {
      // route each query, then bucket the queries by chosen block (counting sort)
      const n = Math.min(i, a.width);
      const bucketStart = s.bucketStart;
      bucketStart.fill(0, 0, i + 1);
      for (let r = 0; r < rows; r++) {
        if (n < i) routeQuery(problem, a.q, a.means, a.past, q0 + r, h, i, a.offsets[b], s.gate, s.chosen);
        else for (let j = 0; j < n; j++) a.past[((q0 + r) * qHeads + h) * a.width + j] = j;
        for (let j = 0; j < n; j++) bucketStart[a.past[((q0 + r) * qHeads + h) * a.width + j] + 1]++;
      }
      for (let j = 0; j < i; j++) bucketStart[j + 1] += bucketStart[j];
      for (let r = 0; r < rows; r++) {
        for (let j = 0; j < n; j++) s.bucket[bucketStart[a.past[((q0 + r) * qHeads + h) * a.width + j]]++] = r;
      }
      // bucketStart[j] now holds the end of bucket j; bucket j starts at the end of bucket j - 1
      for (let j = 0; j < i; j++) {
        for (let e = j === 0 ? 0 : bucketStart[j - 1]; e < bucketStart[j]; e++) {
          const r = s.bucket[e];
          foldKeys(a, problem, s, r, q0 + r, h, start + j * B, start + (j + 1) * B);
        }
      }
    }
    // own block, causal: query r sees keys q0 .. q0 + r
    for (let r = 0; r < rows; r++) foldKeys(a, problem, s, r, q0 + r, h, q0, q0 + r + 1);

    for (let r = 0; r < rows; r++) {
      const t = q0 + r;
      const inv = 1 / s.l[r];
      const o = (t * qHeads + h) * D;
      for (let d = 0; d < D; d++) a.out[o + d] = s.acc[r * D + d] * inv;
      a.lse[t * qHeads + h] = s.m[r] + Math.log(s.l[r]);
    }
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

/** Backward of units [from, to) of the key-block list (heads are kv heads). */
export function backwardUnits(problem: AttentionProblem, a: BackwardArrays, units: Int32Array, from: number, to: number): void {
  const { qHeads, kvHeads, headDim: D, blockSize: B, cuSeqlens } = problem;
  const group = qHeads / kvHeads;
  const blocks = a.offsets[a.offsets.length - 1];
  const dkBlock = new Float64Array(rowsPerBlock(problem) * D);
  const dvBlock = new Float64Array(rowsPerBlock(problem) * D);
  for (let u = from; u < to; u++) {
    const b = units[3 * u],
      g = units[3 * u + 1],
      j = units[3 * u + 2];
    const k0 = cuSeqlens[b] + j * B;
    const k1 = Math.min(k0 + B, cuSeqlens[b + 1]);
    dkBlock.fill(0);
    dvBlock.fill(0);
    for (let h = g * group; h < (g + 1) * group; h++) {
      // queries of later blocks that routed to this block see all of its keys
      if (a.inverted === null) {
        for (let t = k1; t < cuSeqlens[b + 1]; t++) backwardKeys(a, problem, dkBlock, dvBlock, t, h, g, k0, k0, k1);
      } else {
        const G = h * blocks + a.offsets[b] + j;
        for (let e = a.inverted.start[G]; e < a.inverted.start[G + 1]; e++) {
          backwardKeys(a, problem, dkBlock, dvBlock, a.inverted.queries[e], h, g, k0, k0, k1);
        }
      }
      // the block's own queries see its keys causally
      for (let t = k0; t < k1; t++) backwardKeys(a, problem, dkBlock, dvBlock, t, h, g, k0, k0, t + 1);
    }
    for (let key = k0; key < k1; key++) {
      const row = (key * kvHeads + g) * D;
      for (let d = 0; d < D; d++) {
        a.dk[row + d] = dkBlock[(key - k0) * D + d];
        a.dv[row + d] = dvBlock[(key - k0) * D + d];
      }
    }
  }
}
