// AssemblyScript: the tiles of the CPU attention kernels (src/cpu/attention.ts walks the blocks, routes
// and calls these). A tile is up to CHUNK query rows against the keys of one key block, as GEMMs on the
// packed kernel of gemm.ts:
//   forward:  S = Q·Kᵀ, the online-softmax update of (m, l, acc) with P = e^(scale·S - m), acc += P·V
//   backward: P = e^(scale·S - lse), dP = dO·Vᵀ, dS = scale·P ⊙ (dP - delta),
//             dV += Pᵀ·dO, dK += dSᵀ·Q, dQ += dS·K (FlashAttention-2, recomputing P)
// Query rows are gathered (a MoBA block is attended by the queries that chose it, not a range); keys
// and values are read in place (rows kvStride floats apart). Arithmetic is float32.
import { gemm, gemmPacked, gemmWorkBytes } from "./gemm";
import { exp4, hmax, hsum, madd } from "./simd";

const CHUNK = 128; // query rows per tile
// query rows per tile of a causal diagonal: a tile computes the scores of the triangle above its rows'
// diagonal and masks them, (rows² / 2 of them), 6% of a 512-row block at 32 rows, 12% at 64; at 32 the
// diagonal's forward and backward ran 3% faster than at 64 (MoBA 16K / 512), full attention's 15%
const CAUSAL_CHUNK = 32;
const KEYS = 512; // keys per forward tile: the scores of a tile are then 256 KiB

// backward score rows are padded to whole vectors; the padding is never read
// @ts-ignore: decorator
@inline
function padded(keys: i32): i32 {
  return (keys + 3) & ~3;
}

/** Bytes of scratch attendForward needs, head size D. */
export function forwardWorkBytes(D: i32): i32 {
  return CHUNK * (2 * D + KEYS) * 4 + gemmWorkBytes(max(KEYS, D));
}

/** Bytes of scratch attendBackward needs for a block of `keys` keys, head size D. */
export function backwardWorkBytes(keys: i32, D: i32): i32 {
  return CHUNK * (3 * D + 2 + 2 * padded(keys)) * 4 + gemmWorkBytes(max(keys, D));
}

/**
 * Folds keys [0, keys) into the online softmax of `rows` query rows of one query block. Row i is block
 * row r = rowIndex[i] (i32s, ascending): its query is at q + 4·r·qStride, its state m[r], l[r],
 * acc[r·D, (r+1)·D). Key/value j are at k/v + 4·j·kvStride. causal: row r sees keys 0..r only.
 * kPacked, vPacked (0: none): the keys and values already packed by packPanel, as Kᵀ (slivers of 8
 * keys, D·8 floats apart) and as V (slivers of 8 columns, vStride floats apart), from key 0 on.
 */
export function attendForward(rows: i32, rowIndex: usize, q: usize, qStride: i32, k: usize, v: usize, kvStride: i32, keys: i32, causal: i32, D: i32, scale: f32, m: usize, l: usize, acc: usize, kPacked: usize, vPacked: usize, vStride: i32, work: usize): void {
  const rowBytes = <usize>D * 4;
  const qg = work, accg = qg + <usize>CHUNK * rowBytes, s = accg + <usize>CHUNK * rowBytes, gw = s + <usize>(CHUNK * KEYS) * 4;
  const tile = causal ? CAUSAL_CHUNK : CHUNK;
  for (let i0 = 0; i0 < rows; i0 += tile) {
    const n = min(tile, rows - i0);
    const index = rowIndex + <usize>i0 * 4;
    const first = load<i32>(index);
    // the tile's queries and accumulators in place when its rows are consecutive, else gathered
    const consecutive = load<i32>(index + <usize>(n - 1) * 4) - first === n - 1;
    let qa = q + <usize>(first * qStride) * 4, qs = qStride, aa = acc + <usize>first * rowBytes;
    if (!consecutive) {
      for (let i = 0; i < n; i++) {
        const r = load<i32>(index + <usize>i * 4);
        memory.copy(qg + <usize>i * rowBytes, q + <usize>(r * qStride) * 4, rowBytes);
        memory.copy(accg + <usize>i * rowBytes, acc + <usize>r * rowBytes, rowBytes);
      }
      qa = qg;
      qs = D;
      aa = accg;
    }
    // causal: no row of the tile sees past its last row's key (the upper triangle is skipped tile-wise)
    const end = causal ? min(keys, load<i32>(index + <usize>(n - 1) * 4) + 1) : keys;
    for (let j0 = 0; j0 < end; j0 += KEYS) {
      const kc = min(KEYS, end - j0);
      const kp = padded(kc);
      // S[n, kc] = Q·Kᵀ
      if (kPacked) gemmPacked(n, kc, D, qa, qs, 1, kPacked + <usize>(j0 * D) * 4, D * 8, s, kp, 0, gw);
      else gemm(n, kc, D, qa, qs, 1, k + <usize>(j0 * kvStride) * 4, 1, kvStride, s, kp, 0, gw);
      for (let i = 0; i < n; i++) {
        const r = load<i32>(index + <usize>i * 4);
        const alpha = softmaxRow(s + <usize>(i * kp) * 4, causal ? min(kc, r + 1 - j0) : kc, kp, scale, m + <usize>r * 4, l + <usize>r * 4);
        if (alpha !== 1) {
          const row = aa + <usize>i * rowBytes;
          for (let d = 0; d < D; d++) store<f32>(row + <usize>d * 4, load<f32>(row + <usize>d * 4) * alpha);
        }
      }
      // acc[n, D] += P·V
      if (vPacked) gemmPacked(n, D, kc, s, kp, 1, vPacked + <usize>(j0 * 8) * 4, vStride, aa, D, 1, gw);
      else gemm(n, D, kc, s, kp, 1, v + <usize>(j0 * kvStride) * 4, kvStride, 1, aa, D, 1, gw);
    }
    if (!consecutive) for (let i = 0; i < n; i++) memory.copy(acc + <usize>load<i32>(index + <usize>i * 4) * rowBytes, accg + <usize>i * rowBytes, rowBytes);
  }
}

/**
 * One row of a forward tile: the raw scores row[0, seen) become P = e^(scale·s - mNew) (row[seen, kp)
 * becomes 0), the row's m and l are updated; returns alpha = e^(mOld - mNew), the factor of its acc.
 */
// @ts-ignore: decorator
@inline
function softmaxRow(row: usize, seen: i32, kp: i32, scale: f32, m: usize, l: usize): f32 {
  if (seen <= 0) {
    memory.fill(row, 0, <usize>kp * 4);
    return 1;
  }
  const whole = seen & ~3;
  const sc = f32x4.splat(scale);
  let top = f32x4.splat(-Infinity);
  for (let c = 0; c < whole; c += 4) top = f32x4.max(top, f32x4.mul(v128.load(row + <usize>c * 4), sc));
  let rowMax = hmax(top);
  for (let c = whole; c < seen; c++) rowMax = max(rowMax, load<f32>(row + <usize>c * 4) * scale);
  const mOld = load<f32>(m);
  const mNew = max(mOld, rowMax);
  const shift = f32x4.splat(-mNew);
  let sum = f32x4.splat(0);
  for (let c = 0; c < whole; c += 4) {
    const p = exp4(madd(v128.load(row + <usize>c * 4), sc, shift));
    v128.store(row + <usize>c * 4, p);
    sum = f32x4.add(sum, p);
  }
  let total = hsum(sum);
  for (let c = whole; c < seen; c++) {
    const p = Mathf.exp(load<f32>(row + <usize>c * 4) * scale - mNew);
    store<f32>(row + <usize>c * 4, p);
    total += p;
  }
  if (seen < kp) memory.fill(row + <usize>seen * 4, 0, <usize>(kp - seen) * 4);
  const alpha = Mathf.exp(mOld - mNew); // 0 on the first keys (mOld = -Infinity)
  store<f32>(l, load<f32>(l) * alpha + total);
  store<f32>(m, mNew);
  return alpha;
}

/**
 * The gradient contributions of `rows` queries against keys [0, keys) of one key block. Query i is
 * token t = tokens[i] (i32s): its q, dout and dq rows at q / dout / dq + 4·t·qStride, its lse and delta
 * at lse / delta + 4·t·statStride. dq rows are added to; dk, dv ([keys, D], contiguous) are added to.
 * causal >= 0: the block's own queries, the block starting at token `causal` (token t sees keys
 * 0..t - causal); -1: every query sees every key.
 */
export function attendBackward(rows: i32, tokens: usize, q: usize, dout: usize, dq: usize, qStride: i32, lse: usize, delta: usize, statStride: i32, k: usize, v: usize, kvStride: i32, keys: i32, causal: i32, D: i32, scale: f32, dk: usize, dv: usize, work: usize): void {
  const rowBytes = <usize>D * 4;
  const qg = work, og = qg + <usize>CHUNK * rowBytes, dqg = og + <usize>CHUNK * rowBytes, lg = dqg + <usize>CHUNK * rowBytes, dg = lg + CHUNK * 4;
  const p = dg + CHUNK * 4, ds = p + <usize>(CHUNK * padded(keys)) * 4, gw = ds + <usize>(CHUNK * padded(keys)) * 4;
  const tile = causal >= 0 ? CAUSAL_CHUNK : CHUNK;
  for (let i0 = 0; i0 < rows; i0 += tile) {
    const n = min(tile, rows - i0);
    // causal: the tile's keys end at its last query (tokens ascend); the upper triangle is skipped
    const end = causal >= 0 ? min(keys, load<i32>(tokens + <usize>(i0 + n - 1) * 4) - causal + 1) : keys;
    const kp = padded(end);
    for (let i = 0; i < n; i++) {
      const t = load<i32>(tokens + <usize>(i0 + i) * 4);
      memory.copy(qg + <usize>i * rowBytes, q + <usize>(t * qStride) * 4, rowBytes);
      memory.copy(og + <usize>i * rowBytes, dout + <usize>(t * qStride) * 4, rowBytes);
      store<f32>(lg + <usize>i * 4, load<f32>(lse + <usize>(t * statStride) * 4));
      store<f32>(dg + <usize>i * 4, load<f32>(delta + <usize>(t * statStride) * 4));
    }
    gemm(n, end, D, qg, D, 1, k, 1, kvStride, p, kp, 0, gw); // S = Q·Kᵀ
    gemm(n, end, D, og, D, 1, v, 1, kvStride, ds, kp, 0, gw); // dP = dO·Vᵀ
    for (let i = 0; i < n; i++) {
      const t = load<i32>(tokens + <usize>(i0 + i) * 4);
      const pRow = p + <usize>(i * kp) * 4, dsRow = ds + <usize>(i * kp) * 4;
      const sc = f32x4.splat(scale), shift = f32x4.splat(-load<f32>(lg + <usize>i * 4)), dl = f32x4.splat(load<f32>(dg + <usize>i * 4));
      for (let c = 0; c < kp; c += 4) {
        const pr = exp4(madd(v128.load(pRow + <usize>c * 4), sc, shift));
        v128.store(pRow + <usize>c * 4, pr);
        v128.store(dsRow + <usize>c * 4, f32x4.mul(f32x4.mul(pr, sc), f32x4.sub(v128.load(dsRow + <usize>c * 4), dl)));
      }
      // keys past the causal limit, and the padding: P = dS = 0
      for (let c = causal >= 0 ? t - causal + 1 : end; c < kp; c++) {
        store<f32>(pRow + <usize>c * 4, 0);
        store<f32>(dsRow + <usize>c * 4, 0);
      }
    }
    gemm(end, D, n, p, 1, kp, og, D, 1, dv, D, 1, gw); // dV += Pᵀ·dO
    gemm(end, D, n, ds, 1, kp, qg, D, 1, dk, D, 1, gw); // dK += dSᵀ·Q
    gemm(n, D, end, ds, kp, 1, k, kvStride, 1, dqg, D, 0, gw); // dQ = dS·K
    for (let i = 0; i < n; i++) {
      const to = dq + <usize>(load<i32>(tokens + <usize>(i0 + i) * 4) * qStride) * 4, from = dqg + <usize>i * rowBytes;
      for (let d = 0; d < D; d++) store<f32>(to + <usize>d * 4, load<f32>(to + <usize>d * 4) + load<f32>(from + <usize>d * 4));
    }
  }
}
