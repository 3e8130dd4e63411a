// AssemblyScript: MoBA's gate in float64 SIMD — the block means of the keys and each query's top
// blocks — bit for bit what attention/blocks.ts computes in JavaScript (blockMeans, routeQuery). Each
// lane of an f64x2 does one block's arithmetic in the reference's order (a mean sums its keys in
// order, then divides; a score sums q[d]·mean[d] over d in order, multiply then add, no fused
// multiply-add), so the block choice is the reference's, ties included.
//
// Means are laid out for the scores: two blocks side by side, [⌈blocks / 8⌉·4 pairs][D][2] float64, so
// that one f64x2 load gives both blocks' element d; the blocks past the last are zeros.

const GROUP = 8; // blocks scored together: four f64x2 accumulators a query

/** Bytes of the means of `blocks` blocks, head size D. */
export function meansBytes(blocks: i32, D: i32): i32 {
  return ((blocks + GROUP - 1) / GROUP) * GROUP * D * 8;
}

/**
 * The float64 means of the blocks of one sequence and kv head: `length` keys cut into blocks of
 * `size` (the last may be shorter), key t at k + 4·t·kStride; written in the pair layout at out
 * (meansBytes(⌈length / size⌉, D) bytes).
 */
export function blockMeans(length: i32, size: i32, D: i32, k: usize, kStride: i32, out: usize): void {
  const blocks = (length + size - 1) / size;
  memory.fill(out, 0, <usize>meansBytes(blocks, D));
  for (let j = 0; j < blocks; j++) {
    const t0 = j * size,
      t1 = min(t0 + size, length);
    // element d of block j, at out + 8·((j >> 1)·2D + 2d + (j & 1))
    const at = out + <usize>((j >> 1) * 2 * D + (j & 1)) * 8;
    let d = 0;
    for (; d + 1 < D; d += 2) {
      let sum = f64x2.splat(0);
      for (let t = t0; t < t1; t++) sum = f64x2.add(sum, f64x2.promote_low_f32x4(v128.load64_zero(k + <usize>(t * kStride + d) * 4)));
      sum = f64x2.div(sum, f64x2.splat(<f64>(t1 - t0)));
      store<f64>(at + <usize>d * 16, f64x2.extract_lane(sum, 0));
      store<f64>(at + <usize>(d + 1) * 16, f64x2.extract_lane(sum, 1));
    }
    if (d < D) {
      let sum: f64 = 0;
      for (let t = t0; t < t1; t++) sum += <f64>load<f32>(k + <usize>(t * kStride + d) * 4);
      store<f64>(at + <usize>d * 16, sum / <f64>(t1 - t0));
    }
  }
}

/**
 * The gate of `rows` queries of one query block: query r at q + 4·r·qStride scores past blocks
 * [0, blocks) against `means` (blockMeans' layout) and keeps the `width` best (< blocks), ties to the
 * lower block, written ascending as i32s at past + 4·r·pastStride. work: routeWorkBytes(blocks, width).
 */
export function route(rows: i32, q: usize, qStride: i32, means: usize, blocks: i32, D: i32, width: i32, past: usize, pastStride: i32, work: usize): void {
  // the scores of two queries, then the running top list: its scores (width f64s) and blocks (width i32s)
  const scoreBytes = <usize>((blocks + GROUP - 1) / GROUP) * GROUP * 8;
  const scores = work;
  const best = work + 2 * scoreBytes;
  const chosen = best + <usize>width * 8;
  // two queries at a time: each load of the means serves both (the last query of an odd count is
  // scored twice, the copy unused)
  for (let r = 0; r < rows; r += 2) {
    const r1 = min(r + 1, rows - 1);
    score2(q + <usize>(r * qStride) * 4, q + <usize>(r1 * qStride) * 4, means, blocks, D, scores, scores + scoreBytes);
    topBlocks(scores, blocks, width, best, chosen, past + <usize>(r * pastStride) * 4);
    if (r1 > r) topBlocks(scores + scoreBytes, blocks, width, best, chosen, past + <usize>(r1 * pastStride) * 4);
  }
}

/** scores0[j], scores1[j] = Σ_d q[d]·mean_j[d] of the queries at q0 and q1, eight blocks at a time. */
// @ts-ignore: decorator
@inline
function score2(q0: usize, q1: usize, means: usize, blocks: i32, D: i32, scores0: usize, scores1: usize): void {
  for (let j0 = 0; j0 < blocks; j0 += GROUP) {
    const m = means + <usize>((j0 >> 1) * 2 * D) * 8;
    let a0 = f64x2.splat(0),
      a1 = f64x2.splat(0),
      a2 = f64x2.splat(0),
      a3 = f64x2.splat(0),
      b0 = f64x2.splat(0),
      b1 = f64x2.splat(0),
      b2 = f64x2.splat(0),
      b3 = f64x2.splat(0);
    for (let d = 0; d < D; d++) {
      const x = f64x2.splat(<f64>load<f32>(q0 + <usize>d * 4));
      const y = f64x2.splat(<f64>load<f32>(q1 + <usize>d * 4));
      const at = m + <usize>d * 16;
      const m0 = v128.load(at),
        m1 = v128.load(at + <usize>(2 * D) * 8),
        m2 = v128.load(at + <usize>(4 * D) * 8),
        m3 = v128.load(at + <usize>(6 * D) * 8);
      a0 = f64x2.add(a0, f64x2.mul(x, m0));
      a1 = f64x2.add(a1, f64x2.mul(x, m1));
      a2 = f64x2.add(a2, f64x2.mul(x, m2));
      a3 = f64x2.add(a3, f64x2.mul(x, m3));
      b0 = f64x2.add(b0, f64x2.mul(y, m0));
      b1 = f64x2.add(b1, f64x2.mul(y, m1));
      b2 = f64x2.add(b2, f64x2.mul(y, m2));
      b3 = f64x2.add(b3, f64x2.mul(y, m3));
    }
    const out0 = scores0 + <usize>j0 * 8,
      out1 = scores1 + <usize>j0 * 8;
    v128.store(out0, a0);
    v128.store(out0, a1, 16);
    v128.store(out0, a2, 32);
    v128.store(out0, a3, 48);
    v128.store(out1, b0);
    v128.store(out1, b1, 16);
    v128.store(out1, b2, 32);
    v128.store(out1, b3, 48);
  }
}

/**
 * The `width` best of scores[0, blocks), written ascending as i32s at row; best, chosen: scratch of
 * width f64s and i32s.
 */
// @ts-ignore: decorator
@inline
function topBlocks(scores: usize, blocks: i32, width: i32, best: usize, chosen: usize, row: usize): void {
  // the running top-width list, descending, as routeQuery keeps it: a later block never passes an
  // equal score (ties go to the lower index)
  let count = 0;
  for (let j = 0; j < blocks; j++) {
    const score = load<f64>(scores + <usize>j * 8);
    if (count === width && !(score > load<f64>(best + <usize>(count - 1) * 8))) continue;
    let at = count < width ? count++ : count - 1;
    while (at > 0 && score > load<f64>(best + <usize>(at - 1) * 8)) {
      store<f64>(best + <usize>at * 8, load<f64>(best + <usize>(at - 1) * 8));
      store<i32>(chosen + <usize>at * 4, load<i32>(chosen + <usize>(at - 1) * 4));
      at--;
    }
    store<f64>(best + <usize>at * 8, score);
    store<i32>(chosen + <usize>at * 4, j);
  }
  // ascending into the routing table (insertion sort of width blocks)
  for (let i = 0; i < count; i++) {
    const j = load<i32>(chosen + <usize>i * 4);
    let at = i;
    while (at > 0 && load<i32>(row + <usize>(at - 1) * 4) > j) {
      store<i32>(row + <usize>at * 4, load<i32>(row + <usize>(at - 1) * 4));
      at--;
    }
    store<i32>(row + <usize>at * 4, j);
  }
}

/** Bytes of scratch route needs for `blocks` past blocks and `width` chosen. */
export function routeWorkBytes(blocks: i32, width: i32): i32 {
  return 2 * ((blocks + GROUP - 1) / GROUP) * GROUP * 8 + width * 12;
}
