// AssemblyScript (compiled by scripts/build-wasm.sh, not by tsc): the CPU backend's GEMM in
// WebAssembly SIMD, blocked and packed as BLAS does (Goto & van de Geijn, "Anatomy of
// high-performance matrix multiplication", 2008):
//
//   for each KC-slice of the inner dimension: pack B[KC, N] into NR-column slivers
//     for each MC-block of rows: pack A[MC, KC] into MR-row slivers
//       for each (MR x NR) tile of C: the micro-kernel, KC rank-1 updates held in registers
//
// A packed sliver of A (MR x KC, 4 KiB) and one of B (KC x NR, 8 KiB) stay in L1 while the
// micro-kernel runs; the packed A block (MC x KC, 128 KiB) stays in L2 while all of B streams past.
// Packing also turns every layout the model needs (x·wᵀ, dy·w, dyᵀ·x) into the same unit-stride
// access, so one kernel serves the forward, dX and dW: operands come with element strides.
//
// Built twice: with relaxed SIMD (f32x4.relaxed_madd, a fused multiply-add where the CPU has one)
// and without (multiply, then add); ASC_FEATURE_RELAXED_SIMD picks at compile time.

import { madd } from "./simd";

// micro-tile: 4 rows x 8 columns = 8 f32x4 accumulators, + 2 for B and 1 broadcast of A. V8 keeps
// 15 of x86-64's 16 vector registers for wasm; a 6 x 8 tile (15 live values) spilled 4 accumulators
// to the stack in every iteration (seen with node --print-wasm-code)
const MR = 4;
const NR = 8;
const KC = 256;
const MC = 128; // multiple of MR

/** Bytes of scratch gemm needs at `work` for an N-column product (packed A block, packed B slice, edge tile). */
export function gemmWorkBytes(N: i32): i32 {
  const slivers = (N + NR - 1) / NR;
  return (MC * KC + KC * slivers * NR + MR * NR) * 4;
}

/**
 * C[M, N] = A[M, K] · B[K, N] (accumulate = 0) or C += A · B (accumulate = 1).
 * A[i][k] is the f32 at a + 4 (i·aRow + k·aCol), B[k][j] at b + 4 (k·bRow + j·bCol), C row-major with
 * row stride ldc (elements). work: gemmWorkBytes(N) bytes of scratch.
 */
export function gemm(M: i32, N: i32, K: i32, a: usize, aRow: i32, aCol: i32, b: usize, bRow: i32, bCol: i32, c: usize, ldc: i32, accumulate: i32, work: usize): void {
  product(M, N, K, a, aRow, aCol, b, bRow, bCol, 0, 0, c, ldc, accumulate, work);
}

/**
 * gemm with B already packed (packB's layout, all of K at once): B[k][j] at packed + 4 (⌊j/8⌋·stride
 * + 8k + j mod 8), `stride` floats from one 8-column sliver to the next (zeros past N are not needed:
 * the columns of a sliver past N are never written to C).
 */
export function gemmPacked(M: i32, N: i32, K: i32, a: usize, aRow: i32, aCol: i32, packed: usize, stride: i32, c: usize, ldc: i32, accumulate: i32, work: usize): void {
  product(M, N, K, a, aRow, aCol, 0, 0, 0, packed, stride, c, ldc, accumulate, work);
}

/** Packs B[K, N] (strides as gemm's) for gemmPacked, slivers K·8 floats apart, at out. */
export function packPanel(K: i32, N: i32, b: usize, bRow: i32, bCol: i32, out: usize): void {
  packB(K, N, b, bRow, bCol, out);
}

// gemm's loops; B is packed here slice by slice unless `packed` is given
function product(M: i32, N: i32, K: i32, a: usize, aRow: i32, aCol: i32, b: usize, bRow: i32, bCol: i32, packed: usize, stride: i32, c: usize, ldc: i32, accumulate: i32, work: usize): void {
  const packedA = work;
  const tile = packedA + MC * KC * 4;
  const packedB = tile + MR * NR * 4;
  if (K === 0) {
    // an empty sum: C = 0 (or unchanged)
    if (!accumulate) for (let i = 0; i < M; i++) memory.fill(c + <usize>(i * ldc) * 4, 0, <usize>N * 4);
    return;
  }
  for (let p0 = 0; p0 < K; p0 += KC) {
    const kc = min(KC, K - p0);
    let panel = packed + <usize>(p0 * NR) * 4, sliver = stride;
    if (packed === 0) {
      packB(kc, N, b + <usize>(p0 * bRow) * 4, bRow, bCol, packedB);
      panel = packedB;
      sliver = kc * NR;
    }
    // the first slice writes C (or adds to it when accumulating), later slices add
    const add = accumulate !== 0 || p0 > 0;
    for (let i0 = 0; i0 < M; i0 += MC) {
      const mc = min(MC, M - i0);
      packA(mc, kc, a + <usize>(i0 * aRow + p0 * aCol) * 4, aRow, aCol, packedA);
      for (let j0 = 0; j0 < N; j0 += NR) {
        const bp = panel + <usize>((j0 / NR) * sliver) * 4;
        for (let r0 = 0; r0 < mc; r0 += MR) {
          kernel(kc, packedA + <usize>(r0 * kc) * 4, bp, c + <usize>((i0 + r0) * ldc + j0) * 4, ldc, min(MR, mc - r0), min(NR, N - j0), add, tile);
        }
      }
    }
  }
}

// packed A: slivers of MR rows, each [kc][MR]; rows past mc are zero
function packA(mc: i32, kc: i32, a: usize, aRow: i32, aCol: i32, out: usize): void {
  for (let r0 = 0; r0 < mc; r0 += MR) {
    const rows = min(MR, mc - r0);
    const sliver = out + <usize>(r0 * kc) * 4;
    const src = a + <usize>(r0 * aRow) * 4;
    if (rows === MR && aRow === 1) {
      // A's columns are contiguous (dyᵀ in dW): one vector per k
      for (let k = 0; k < kc; k++) v128.store(sliver + <usize>(k * MR) * 4, v128.load(src + <usize>(k * aCol) * 4));
      continue;
    }
    let k = 0;
    if (rows === MR && aCol === 1) {
      // A's rows are contiguous (x, dy, attention's Q and P): 4 x 4 transposes
      const row = <usize>aRow * 4;
      for (; k + 4 <= kc; k += 4) transpose4(src + <usize>k * 4, row, sliver + <usize>(k * MR) * 4, MR * 4);
    }
    if (rows < MR) memory.fill(sliver, 0, <usize>(kc * MR) * 4);
    for (let r = 0; r < rows; r++) {
      const from = src + <usize>(r * aRow) * 4;
      for (let j = k; j < kc; j++) store<f32>(sliver + <usize>(j * MR + r) * 4, load<f32>(from + <usize>(j * aCol) * 4));
    }
  }
}

// packed B: slivers of NR columns, each [kc][NR]; columns past N are zero
function packB(kc: i32, N: i32, b: usize, bRow: i32, bCol: i32, out: usize): void {
  for (let j0 = 0; j0 < N; j0 += NR) {
    const cols = min(NR, N - j0);
    const sliver = out + <usize>(j0 * kc) * 4;
    const src = b + <usize>(j0 * bCol) * 4;
    if (cols === NR && bCol === 1) {
      // B's rows are contiguous (w in dX, V in P·V): two vectors per k
      for (let k = 0; k < kc; k++) {
        const from = src + <usize>(k * bRow) * 4;
        const to = sliver + <usize>(k * NR) * 4;
        v128.store(to, v128.load(from));
        v128.store(to, v128.load(from, 16), 16);
      }
      continue;
    }
    let k = 0;
    if (cols === NR && bRow === 1) {
      // B's columns are contiguous (w in x·wᵀ, K in Q·Kᵀ): 4 x 4 transposes, two per 4 k
      const column = <usize>bCol * 4;
      for (; k + 4 <= kc; k += 4) {
        transpose4(src + <usize>k * 4, column, sliver + <usize>(k * NR) * 4, NR * 4);
        transpose4(src + 4 * column + <usize>k * 4, column, sliver + <usize>(k * NR + 4) * 4, NR * 4);
      }
    }
    if (cols < NR) memory.fill(sliver, 0, <usize>(kc * NR) * 4);
    for (let j = 0; j < cols; j++) {
      const from = src + <usize>(j * bCol) * 4;
      for (let i = k; i < kc; i++) store<f32>(sliver + <usize>(i * NR + j) * 4, load<f32>(from + <usize>(i * bRow) * 4));
    }
  }
}

// the 4 x 4 block at src (rows `srcStride` bytes apart), transposed, to dst (rows `dstStride` apart)
// @ts-ignore: decorator
@inline
function transpose4(src: usize, srcStride: usize, dst: usize, dstStride: usize): void {
  const r0 = v128.load(src), r1 = v128.load(src + srcStride), r2 = v128.load(src + 2 * srcStride), r3 = v128.load(src + 3 * srcStride);
  const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5), t1 = i32x4.shuffle(r0, r1, 2, 6, 3, 7);
  const t2 = i32x4.shuffle(r2, r3, 0, 4, 1, 5), t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
  v128.store(dst, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
  v128.store(dst + dstStride, i32x4.shuffle(t0, t2, 2, 3, 6, 7));
  v128.store(dst + 2 * dstStride, i32x4.shuffle(t1, t3, 0, 1, 4, 5));
  v128.store(dst + 3 * dstStride, i32x4.shuffle(t1, t3, 2, 3, 6, 7));
}

// C[mr, nr] (+)= packed A sliver · packed B sliver; a full tile is loaded and stored in place,
// an edge tile goes through `tile` so nothing outside C is touched
// @ts-ignore: decorator
@inline
function kernel(kc: i32, ap: usize, bp: usize, c: usize, ldc: i32, mr: i32, nr: i32, add: bool, tile: usize): void {
  let c00 = f32x4.splat(0), c01 = f32x4.splat(0), c10 = f32x4.splat(0), c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0), c21 = f32x4.splat(0), c30 = f32x4.splat(0), c31 = f32x4.splat(0);
  for (let k = 0; k < kc; k++) {
    const b0 = v128.load(bp), b1 = v128.load(bp, 16);
    let x = v128.load32_splat(ap);
    c00 = madd(x, b0, c00); c01 = madd(x, b1, c01);
    x = v128.load32_splat(ap, 4);
    c10 = madd(x, b0, c10); c11 = madd(x, b1, c11);
    x = v128.load32_splat(ap, 8);
    c20 = madd(x, b0, c20); c21 = madd(x, b1, c21);
    x = v128.load32_splat(ap, 12);
    c30 = madd(x, b0, c30); c31 = madd(x, b1, c31);
    ap += MR * 4;
    bp += NR * 4;
  }
  const full = mr === MR && nr === NR;
  const out = full ? c : tile;
  const stride: usize = full ? <usize>ldc * 4 : NR * 4;
  storeRow(out, c00, c01, full && add);
  storeRow(out + stride, c10, c11, full && add);
  storeRow(out + 2 * stride, c20, c21, full && add);
  storeRow(out + 3 * stride, c30, c31, full && add);
  if (full) return;
  for (let r = 0; r < mr; r++) {
    for (let j = 0; j < nr; j++) {
      const at = c + <usize>(r * ldc + j) * 4;
      const x = load<f32>(tile + <usize>(r * NR + j) * 4);
      store<f32>(at, add ? load<f32>(at) + x : x);
    }
  }
}

// @ts-ignore: decorator
@inline
function storeRow(at: usize, lo: v128, hi: v128, add: bool): void {
  if (add) {
    lo = f32x4.add(lo, v128.load(at));
    hi = f32x4.add(hi, v128.load(at, 16));
  }
  v128.store(at, lo);
  v128.store(at, hi, 16);
}
