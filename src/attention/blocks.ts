// MoBA's blocks, backend-neutral: the block geometry of packed sequences, walks over the routed
// blocks, and the gate in float64 (block means of the keys, gate scores, per-query top-k, the
// inverted index the backward walks). The CPU backend routes with it, the WebGPU backend plans its
// tiles and histograms a given routing with it, decoding gates one query with it.
//
// The gate runs in float64 with the same operation order as the reference (sum the block's
// keys in order, divide by the count, dot over headDim in order), so the block choice is
// bit-identical to the specification, ties included.
import type { AttentionProblem } from "./problem.js";

/** Where each sequence's blocks start in the global block numbering. */
export function blockOffsets(problem: AttentionProblem): Int32Array {
  const { cuSeqlens, blockSize } = problem;
  const offsets = new Int32Array(cuSeqlens.length);
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    offsets[b + 1] = offsets[b] + Math.ceil((cuSeqlens[b + 1] - cuSeqlens[b]) / blockSize);
  }
  return offsets; // [batch + 1]
}

/** True when no query can have more past blocks than topK - 1: every past block is selected. */
export function selectsAll(problem: AttentionProblem): boolean {
  const { cuSeqlens, blockSize, topK } = problem;
  let maxBlocks = 0;
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    maxBlocks = Math.max(maxBlocks, Math.ceil((cuSeqlens[b + 1] - cuSeqlens[b]) / blockSize));
  }
  return topK >= maxBlocks;
}

/** Past blocks each query keeps besides its own: the row width of the routing table. */
export function pastPerQuery(problem: AttentionProblem): number {
  return selectsAll(problem) ? 0 : problem.topK - 1;
}

// [globalBlocks, kvHeads, headDim] mean key of every block, float64
export function blockMeans(problem: AttentionProblem, k: Float32Array, offsets: Int32Array): Float64Array {
  const { kvHeads, headDim: D, blockSize: B, cuSeqlens } = problem;
  const means = new Float64Array(offsets[offsets.length - 1] * kvHeads * D);
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const start = cuSeqlens[b];
    const end = cuSeqlens[b + 1];
    for (let j = 0; start + j * B < end; j++) {
      const t0 = start + j * B;
      const t1 = Math.min(t0 + B, end);
      for (let g = 0; g < kvHeads; g++) {
        const m = ((offsets[b] + j) * kvHeads + g) * D;
        for (let t = t0; t < t1; t++) {
          const kRow = (t * kvHeads + g) * D;
          for (let d = 0; d < D; d++) means[m + d] += k[kRow + d];
        }
        for (let d = 0; d < D; d++) means[m + d] /= t1 - t0;
      }
    }
  }
  return means;
}

/**
 * Chooses the past blocks of query `token` (head `head`, block `block` of the sequence whose first
 * global block is `firstBlock`) and writes them, ascending, into past[row .. row + topK - 1).
 * scores and chosen are scratch arrays of at least topK - 1 entries.
 */
export function routeQuery(
  problem: AttentionProblem,
  q: Float32Array, // [tokens, qHeads, headDim]
  means: Float64Array, // [globalBlocks, kvHeads, headDim]
  past: Int32Array, // [tokens, qHeads, topK - 1]
  token: number,
  head: number,
  block: number,
  firstBlock: number,
  scores: Float64Array,
  chosen: Int32Array,
): void {
  const { qHeads, kvHeads, headDim: D, topK } = problem;
  const width = topK - 1;
  if (width === 0) return; // topK = 1: the own block only
  const kvHead = Math.floor(head / (qHeads / kvHeads));
  const qRow = (token * qHeads + head) * D;
  let count = 0;
  for (let j = 0; j < block; j++) {
    const m = ((firstBlock + j) * kvHeads + kvHead) * D;
    let score = 0;
    for (let d = 0; d < D; d++) score += q[qRow + d] * means[m + d];
    // insertion into the descending list; a later block never passes an equal score (ties -> lower index)
    if (count === width && !(score > scores[count - 1])) continue;
    let at = count < width ? count++ : count - 1;
    while (at > 0 && score > scores[at - 1]) {
      scores[at] = scores[at - 1];
      chosen[at] = chosen[at - 1];
      at--;
    }
    scores[at] = score;
    chosen[at] = j;
  }
  const row = (token * qHeads + head) * width;
  const sorted = chosen.subarray(0, count).sort();
  for (let r = 0; r < count; r++) past[row + r] = sorted[r];
}

/**
 * The inverted index, CSR: for query head h and global block G, the tokens that chose G as a past
 * block are queries[start[h * blocks + G] .. start[h * blocks + G + 1]), ascending.
 */
export interface InvertedRouting {
  start: Int32Array; // [qHeads * globalBlocks + 1]
  queries: Int32Array; // [tokens * qHeads * (topK - 1)] at most
}

/** Calls `each` for every routed past block of every query: token, query head, rank r (the r-th block, ascending), global block. */
export function forEachRoute(
  problem: AttentionProblem,
  past: Int32Array,
  offsets: Int32Array,
  each: (token: number, head: number, rank: number, block: number) => void,
): void {
  const { qHeads, cuSeqlens, blockSize: B } = problem;
  const width = pastPerQuery(problem);
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    for (let t = cuSeqlens[b]; t < cuSeqlens[b + 1]; t++) {
      const n = Math.min(width, Math.floor((t - cuSeqlens[b]) / B));
      for (let h = 0; h < qHeads; h++) {
        for (let r = 0; r < n; r++) each(t, h, r, offsets[b] + past[(t * qHeads + h) * width + r]);
      }
    }
  }
}

export function invertRouting(problem: AttentionProblem, past: Int32Array, offsets: Int32Array): InvertedRouting {
  const { qHeads } = problem;
  const blocks = offsets[offsets.length - 1];
  const start = new Int32Array(qHeads * blocks + 1);
  forEachRoute(problem, past, offsets, (_t, h, _r, G) => start[h * blocks + G + 1]++);
  for (let i = 1; i < start.length; i++) start[i] += start[i - 1];
  const fill = start.slice(0, -1);
  const queries = new Int32Array(start[start.length - 1]);
  forEachRoute(problem, past, offsets, (t, h, _r, G) => (queries[fill[h * blocks + G]++] = t));
  return { start, queries };
}

/** The routing table of every query, on the calling thread (the forward fills it as it goes). */
export function routeAll(problem: AttentionProblem, q: Float32Array, means: Float64Array, offsets: Int32Array, past: Int32Array): void {
  const { qHeads, blockSize: B, cuSeqlens } = problem;
  const width = pastPerQuery(problem);
  const scores = new Float64Array(Math.max(1, width));
  const chosen = new Int32Array(Math.max(1, width));
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    for (let t = cuSeqlens[b]; t < cuSeqlens[b + 1]; t++) {
      const block = Math.floor((t - cuSeqlens[b]) / B);
      for (let h = 0; h < qHeads; h++) {
        if (block > width) routeQuery(problem, q, means, past, t, h, block, offsets[b], scores, chosen);
        else for (let j = 0; j < block; j++) past[(t * qHeads + h) * width + j] = j;
      }
    }
  }
}

/** What the gate did over one sequence, block by block: the playground's heatmap. */
export interface BlockGating {
  /** Blocks of the sequence: query blocks are rows, key blocks columns. */
  blocks: number;
  /** [blocks] queries in each block (the last may have fewer than blockSize). */
  rows: Int32Array;
  /**
   * Per query head: `chosen` [blocks, blocks], how many queries of block i attend key block j (a past block they
   * chose, or their own block: all of them); `score` [blocks, blocks], the mean over block i's queries of the gate
   * score q · mean(K_j) for j < i, 0 elsewhere.
   */
  heads: { chosen: Int32Array; score: Float64Array }[];
}

/** The gate's choices (the routing table `past`) and scores of one sequence (cuSeqlens [0, tokens]), by block and query head. */
export function gatingByBlock(problem: AttentionProblem, q: Float32Array, k: Float32Array, past: Int32Array): BlockGating {
  const { tokens, qHeads, kvHeads, headDim: D, blockSize: B } = problem;
  const offsets = blockOffsets(problem);
  const blocks = offsets[1];
  const keyMeans = blockMeans(problem, k, offsets); // [blocks, kvHeads, D]
  // q [tokens, qHeads, D] has k's layout with qHeads heads: [blocks, qHeads, D], the mean query of each block
  const queryMeans = blockMeans({ ...problem, kvHeads: qHeads }, q, offsets);
  const rows = Int32Array.from({ length: blocks }, (_, i) => Math.min(B, tokens - i * B));
  const heads = Array.from({ length: qHeads }, (_, h) => {
    const kvHead = Math.floor(h / (qHeads / kvHeads));
    const chosen = new Int32Array(blocks * blocks);
    const score = new Float64Array(blocks * blocks);
    for (let i = 0; i < blocks; i++) {
      chosen[i * blocks + i] = rows[i];
      // the gate score is linear in q: its mean over the block's queries is mean(q) · mean(K_j)
      for (let j = 0; j < i; j++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += queryMeans[(i * qHeads + h) * D + d] * keyMeans[(j * kvHeads + kvHead) * D + d];
        score[i * blocks + j] = s;
      }
    }
    return { chosen, score };
  });
  // where top-k covers every block the routing table is empty (width 0): each query attends all its past blocks
  if (selectsAll(problem))
    for (const { chosen } of heads) for (let i = 0; i < blocks; i++) chosen.fill(rows[i], i * blocks, i * blocks + i);
  else forEachRoute(problem, past, offsets, (t, h, _r, j) => heads[h].chosen[Math.floor(t / B) * blocks + j]++);
  return { blocks, rows, heads };
}
