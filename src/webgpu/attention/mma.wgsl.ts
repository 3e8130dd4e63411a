// WGSL of the tensor-core kernels (f16 operands, f32 accumulation, subgroup matrices of 16x16x16):
// the forward, and the backward's dq (dqMmaWgsl: the forward's tiles, 8 subgroups) and dk/dv (dkdvMmaWgsl), below.
// Same tiles, bindings and round protocol as the float32 forward in attention.wgsl.ts: a workgroup
// takes TQ = 16 queries of one head (consecutive or gathered) against the key range
// [keyStart, keyEnd) in chunks of TK keys, causal mask always on, (acc, m, l) kept in global memory
// between rounds.
//
// Per chunk, with 4 subgroups of 32 (NVIDIA):
//   1. S = Q Kᵀ: subgroup s computes S tile s from its Q fragments (loaded into registers once per
//      tile) and Kᵀ's tiles read as matrices straight from storage, one chunk ahead (the next
//      chunk's K loads are in flight during this chunk's softmax and P V);
//   2. online softmax with 8 threads per row, all rows at once: mask, row max and sum by shuffles,
//      P = exp(S − m) rounded to f16; a row's m moves only when the chunk's max exceeds it by more
//      than 8 (then p ≤ e^8, which f16 holds at full relative precision);
//   3. O += P V, subgroup sg's O tiles in registers (f32) from the tile's start to its end, V's tiles
//      read from storage (their loads issued at the start of the chunk, before QK, where the registers allow).
// WGSL cannot scale a subgroup matrix row by row: when some row's m moved (the first chunks of a
// tile, rarely after), O goes through workgroup memory once to be scaled. With the lazy m that is
// rare, which is what keeping O in registers buys (5-6% over a round trip every chunk).
// Every matrix read from storage is row-major (column-major loads from storage are the slow ones on
// this driver) and a contiguous 16 x 16 tile of a tiled f16 copy (toF16TiledWgsl, below; `fragment`
// finds one): 512 bytes in 4 cache lines, where a fragment of a [tokens, heads, D] array is 16 rows
// of 32 bytes in 16 lines. Chunks start on a 16-key tile; reading K and V past the key range (and K
// one chunk ahead) is why the copies carry zero keys past the tokens.
// The only rounding beyond float32 is P to f16 (q, k, v are f16 already): out's error is about
// f16's unit roundoff (2^-11) relative, lse stays at float32 accuracy.
//
// dev/mma/variants.mts times the alternatives (32K tokens x 8 heads, full causal, one dispatch).
// H200: without prefetching 76.8 ms (28.7 TFLOP/s): without QK 39.5, without P V 44.0, without the
// softmax 73.3 — each matrix phase waiting on its loads. H100: K one chunk ahead 75.5 -> 68.9 ms, V
// before QK 72.2, both 66.5 (33.1 TFLOP/s); then Kᵀ row-major instead of K column-major 69.5 -> 52.7
// (41.7 TFLOP/s; 48.8-58.1 across runs of one machine), while V transposed for column-major loads
// went 66.6 -> 83.9. Slower: one row per subgroup at a time in the softmax 212.7; K and V staged in
// workgroup memory 168.2; TK 128 113.0 (56.5 with Kᵀ and 256 threads); 256 threads 78.1; 64 threads
// at TK 32 61.0, 32 threads at TK 16 73.7 (against 58.1 in that run); FlashAttention-2's layout
// (each subgroup owning 16 rows and all their tiles) 107.9-162.4. No better: independent MMA chains
// interleaved 74.2 (QK split into 2 / 4 chains with Kᵀ: 54.4 / 87.4 against 47.9); 32 queries sharing
// each K and V fragment 70.5 (+9%, not taken; 65.6 with Kᵀ); no barrier after P V 49.2 against 48.3;
// Q fragments read from workgroup memory at each use 51.6 against 48.1; 32 queries on 8 subgroups
// (a 2 x 4 grid of S tiles, the layout that made dk/dv 2.4x faster) 55.8 against 48.4. O in
// registers: every form tried over three sessions gave wrong results until a float64 reference and
// one change at a time showed why — a 4-byte workgroup variable (the rescale flag) in the shader;
// as a vec4, or gone, the results are right (22nd run). In src/ (H100, A/B against the build
// before): O in registers 51.6-51.9 -> 48.8-49.2 ms; the rows' flags read with workgroupUniformLoad
// (one barrier) instead of one thread writing a flag (three) 48.9-49.4 -> 48.5-48.6. 24th run: K and
// V as contiguous tiles 44.9 -> 31.7 ms (K alone 36.9, V alone 39.4); in src/ 48.0 -> 33.5 (65 TFLOP/s).

import { CARRIED, loadRowInputs, MASKED, SEGMENT_START, TILE_BINDINGS, VISIBLE } from "./attention.wgsl.js";

export interface MmaShape {
  headDim: number; // a multiple of 16
  TK: number; // keys per chunk, a multiple of 16
}

/** Queries per tile: one row of 16x16 tiles, so every subgroup keeps the same Q fragments. */
export const MMA_QUERIES = 16;
export const MMA_THREADS = 128;
/** Subgroups per workgroup: the kernel is laid out for subgroups of 32 lanes (device.ts checks the adapter has them). */
const SUBGROUPS = MMA_THREADS / 32;
const M = 16; // the subgroup matrix side
const TQ = MMA_QUERIES;
const ROW_THREADS = MMA_THREADS / TQ; // threads per row in the softmax

/** Workgroup bytes of a shape: Q (f16), S (f32) and P (f16), O (f32), rows padded by 16 bytes, row state. */
export function mmaSharedBytes(c: MmaShape): number {
  const D = c.headDim;
  return TQ * (D + 8) * 2 + TQ * (c.TK + 4) * 4 + TQ * (c.TK + 8) * 2 + TQ * (D + 4) * 4 + TQ * 12;
}

/** Butterfly reduction of `name` over the ROW_THREADS consecutive lanes of a row. */
function rowReduce(name: string, op: (a: string, b: string) => string): string {
  const steps = [];
  for (let mask = 1; mask < ROW_THREADS; mask *= 2) steps.push(`${name} = ${op(name, `subgroupShuffleXor(${name}, ${mask}u)`)};`);
  return steps.join("\n    ");
}

/**
 * Tiles of 16 zero keys the tiled f16 copies of k and v carry past the tokens: two of the largest
 * chunk (64 keys), the chunk in progress and the one prefetched, whatever chunk a kernel uses.
 */
const PADDING_TILES = 8;

/** 16-key tiles per kv head of a tiled f16 copy (toF16TiledWgsl) of `tokens` keys. */
export const mmaKeyTiles = (tokens: number) => Math.ceil(tokens / 16) + PADDING_TILES;

const each = <T>(n: number, f: (i: number) => T) => Array.from({ length: n }, (_, i) => f(i));

/**
 * Subgroup sg's accumulator tiles along headDim when `subgroups` share its `fragments` 16-column
 * tiles (O in the forward, dq): tiles sg, sg + subgroups, ..., `slots` per subgroup, the last ones
 * missing where fragments is not a multiple of subgroups. `owned` writes a body per slot under its
 * guard; `column` is a slot's first column; `clampedColumn` the same, clamped to the last tile, an
 * in-bounds address for a load issued outside the guard (a prefetch).
 */
function columnTiles(fragments: number, subgroups: number) {
  const slots = Math.ceil(fragments / subgroups);
  const column = (slot: number) => `(sg + ${slot * subgroups}u) * ${M}u`;
  const clampedColumn = (slot: number) => `min(sg + ${slot * subgroups}u, ${fragments - 1}u) * ${M}u`;
  const owned = (body: (slot: number) => string, separator = "\n    ") =>
    each(slots, (slot) => `if (sg + ${slot * subgroups}u < ${fragments}u) { ${body(slot)} }`).join(separator);
  return { slots, column, clampedColumn, owned };
}

/**
 * What both tensor-core kernels start with: extensions, tile constants (padded row strides), the
 * tile parameters and bindings 0-2, the matrix types.
 */
function mmaHeader(c: MmaShape, queries = TQ, threads = MMA_THREADS): string {
  const D = c.headDim;
  return /* wgsl */ `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// every subgroup-matrix call below runs in subgroup-uniform control flow (loops start at subgroup_id
// and step by the subgroup count), which WGSL's analysis, working at workgroup scope, cannot see
diagnostic(off, chromium.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);

const D = ${D}u;
const D4 = ${D / 4}u;
const TQ = ${queries}u;
const TK = ${c.TK}u;
const THREADS = ${threads}u;
const SUBGROUPS = ${threads / 32}u;
const R = ${threads / queries}u; // softmax threads per row
// padded row strides (elements): consecutive rows start 16 bytes apart in the banks
const QS = ${D + 8}u;  // query rows, f16
const SS = ${c.TK + 4}u;  // scores, f32
const PS = ${c.TK + 8}u;  // probabilities, f16
const OS = ${D + 4}u;  // accumulators, f32
const MASKED = ${MASKED};
const VISIBLE = ${VISIBLE};

${TILE_BINDINGS}

// The tensor-core kernels read k and v from tiled f16 copies (toF16TiledWgsl): [kvHeads, key tiles,
// D / 16, 16, 16], each 16 x 16 tile 512 consecutive bytes, so a fragment load touches 4 cache lines
// instead of 16 (32K x 8 full forward, H100: 44.9 -> 31.7 ms). The first element of tile (key, d)
// of kv head g (key and d multiples of 16):
fn fragment(g: u32, key: u32, d: u32) -> u32 {
  let keyTiles = (P.tokens + 15u) / 16u + ${PADDING_TILES}u;
  return ((g * keyTiles + key / 16u) * ${D / M}u + d / 16u) * 256u;
}

alias Left = subgroup_matrix_left<f16, ${M}, ${M}>;
alias Right = subgroup_matrix_right<f16, ${M}, ${M}>;
alias Result = subgroup_matrix_result<f32, ${M}, ${M}>;
// (subgroupMatrixLoad<T, layout>(pointer, offset, stride): element [row, col] at offset + row * stride + col
// for row_major, offset + col * stride + row for col_major)
`;
}

/** The start of every tensor-core kernel's entry point: the tile's descriptor words a and b. */
const tileStart = (threads = MMA_THREADS) => /* wgsl */ `@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= P.tiles) { return; }
  let a = tiles[2u * tile];
  let b = tiles[2u * tile + 1u];`;

/** The entry of a query tile (forward, dq): its query count, query head h, kv head g, row lengths. */
const queryTileEntry = (threads = MMA_THREADS) => /* wgsl */ `${tileStart(threads)}
  let count = a.y;
  let h = b.x;
  let g = h / (P.qHeads / P.kvHeads);
  // chunks start on a tile of 16 keys (the copies are tiled), the keys before a.z masked
  let keyBegin = a.z - a.z % 16u;`;

/**
 * Stages the tile's rows of vec4<f16> arrays into padded f16 workgroup arrays ([global, local]
 * pairs), and the f32 accumulator Os from `acc` when the tile carries state (CARRIED), else zero.
 */
function stageQueryRows(rows: [string, string][], acc: string): string {
  return `for (var e = lid; e < TQ * D4; e += THREADS) {
    let r = e / D4;
    let col = (e % D4) * 4u;
    let at = r * QS + col;
    let ot = r * OS + col;
    var o = vec4<f32>(0.0);
    ${rows.map(([, local]) => `var ${local}x = vec4<f16>(0.0);`).join(" ")}
    if (r < count) {
      let row = rowToken[r] * P.qHeads + h;
      ${rows.map(([global, local]) => `${local}x = ${global}[row * D4 + e % D4];`).join(" ")}
      if (${CARRIED}) { o = ${acc}[row * D4 + e % D4]; }
    }
    ${rows.map(([, local]) => `${local}[at] = ${local}x.x; ${local}[at + 1u] = ${local}x.y; ${local}[at + 2u] = ${local}x.z; ${local}[at + 3u] = ${local}x.w;`).join("\n    ")}
    Os[ot] = o.x; Os[ot + 1u] = o.y; Os[ot + 2u] = o.z; Os[ot + 3u] = o.w;
  }`;
}

export function forwardMmaWgsl(c: MmaShape): string {
  const D = c.headDim;
  const fragments = D / M;
  const kTiles = c.TK / M; // S tiles per chunk, at most one per subgroup
  if (kTiles > SUBGROUPS) throw new Error(`forwardMmaWgsl: TK ${c.TK} needs more than ${SUBGROUPS} subgroups`);
  // subgroup sg's O tiles sg, sg + SUBGROUPS, ..., in registers from the tile's start to its end
  const { slots, column: oAt, clampedColumn, owned: eachO } = columnTiles(fragments, SUBGROUPS);
  // V fragments of the chunk loaded before its QK when they fit in registers (D <= 128 at TK 64)
  const prefetchV = slots * kTiles <= 8;
  const vAt = (kk: number, slot: number) => `subgroupMatrixLoad<Right, row_major>(&v, fragment(g, k0 + ${kk * M}u, ${clampedColumn(slot)}), ${M}u)`;
  return /* wgsl */ `${mmaHeader(c)}
@group(0) @binding(3) var<storage, read> q: array<vec4<f16>>;    // [tokens, qHeads, D/4]
@group(0) @binding(4) var<storage, read> k: array<f16>;          // [kvHeads, key tiles, D/16, 16, 16]: tiles of Kᵀ, zeros past tokens
@group(0) @binding(5) var<storage, read> v: array<f16>;          // [kvHeads, key tiles, D/16, 16, 16]: tiles of V, zeros past tokens
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>; // [tokens, qHeads, D/4] acc, or out when finalizing
@group(0) @binding(7) var<storage, read_write> ml: array<vec2<f32>>;  // [tokens, qHeads] running (max, sum)
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;       // [tokens, qHeads] when finalizing

var<workgroup> Qs: array<f16, ${TQ * (D + 8)}>;
var<workgroup> Ss: array<f32, ${TQ * (c.TK + 4)}>;
var<workgroup> Ps: array<f16, ${TQ * (c.TK + 8)}>;
var<workgroup> Os: array<f32, ${TQ * (D + 4)}>;
var<workgroup> rowToken: array<u32, ${TQ}>;
var<workgroup> rowM: array<f32, ${TQ}>;
var<workgroup> rowL: array<f32, ${TQ}>;
var<workgroup> rowAlpha: array<f32, ${TQ}>; // the factor O's row takes when its max moved, else 1
var<workgroup> rowMoved: array<u32, ${TQ}>; // 1 where O's row must be rescaled
// (no 4-byte workgroup variable here: with one in the shader, the tensor-core results came out wrong
// on the H100, Dawn + driver 580; dev/mma/variants.mts, 22nd run)

${queryTileEntry()}
  ${loadRowInputs("a.x", "b.y == 1u", "state")}
  workgroupBarrier();
  // query rows as f16; the accumulator from the previous round (or zero) as f32
  ${stageQueryRows([["q", "Qs"]], "out")}
  workgroupBarrier();
  ${each(fragments, (d) => `let q${d} = subgroupMatrixLoad<Left, row_major>(&Qs, ${d * M}u, QS);`).join("\n  ")}
  ${each(slots, (slot) => `var o${slot} = Result();`).join(" ")}
  ${eachO((slot) => `o${slot} = subgroupMatrixLoad<Result, row_major>(&Os, ${oAt(slot)}, OS);`)}
  // subgroup sg's S tile: keys [k0 + 16 kTile, +16) (past the chunk's tiles: a copy, not stored)
  let kTile = min(sg, ${kTiles - 1}u);
  ${each(fragments, (d) => `var kf${d} = subgroupMatrixLoad<Right, row_major>(&k, fragment(g, keyBegin + kTile * ${M}u, ${d * M}u), ${M}u);`).join("\n  ")}
  // the softmax thread's row and its first column
  let r = lid / R;
  let part = lid % R;
  for (var k0 = keyBegin; k0 < a.w; k0 += TK) {
    ${prefetchV ? `// this chunk's V, in flight during QK and the softmax
    ${each(kTiles, (kk) => each(slots, (slot) => `let vf${kk}_${slot} = ${vAt(kk, slot)};`).join(" ")).join("\n    ")}` : ""}
    // 1. S = Q Kᵀ, then the next chunk's K fragments, in flight during the softmax and P V
    {
      var s = Result();
      ${each(fragments, (d) => `s = subgroupMatrixMultiplyAccumulate(q${d}, kf${d}, s);`).join("\n      ")}
      if (sg < ${kTiles}u) { subgroupMatrixStore<row_major>(&Ss, kTile * ${M}u, s, SS); }
      ${each(fragments, (d) => `kf${d} = subgroupMatrixLoad<Right, row_major>(&k, fragment(g, k0 + TK + kTile * ${M}u, ${d * M}u), ${M}u);`).join("\n      ")}
    }
    workgroupBarrier();
    // 2. online softmax, R threads per row
    {
      let token = rowToken[r];
      let mOld = rowM[r];
      let lOld = rowL[r];
      var rowMax = MASKED;
      for (var i = 0u; i < TK / R; i++) {
        let col = part + i * R;
        let key = k0 + col;
        var x = MASKED;
        if (r < count && key >= a.z && key < a.w && key <= token) { x = P.scale * Ss[r * SS + col]; }
        Ss[r * SS + col] = x;
        rowMax = max(rowMax, x);
      }
      ${rowReduce("rowMax", (x, y) => `max(${x}, ${y})`)}
      // the row's max moves only when the chunk's exceeds it by more than 8 (p <= e^8 fits f16), so
      // O, in registers, is rarely rescaled (through workgroup memory: WGSL cannot scale a row of a subgroup matrix)
      let mNew = select(mOld, rowMax, rowMax > mOld + 8.0);
      var rowSum = 0.0;
      for (var i = 0u; i < TK / R; i++) {
        let col = part + i * R;
        let x = Ss[r * SS + col];
        var p = 0.0;
        if (x > VISIBLE) { p = exp(x - mNew); }
        Ps[r * PS + col] = f16(p);
        rowSum += p;
      }
      ${rowReduce("rowSum", (x, y) => `${x} + ${y}`)}
      let alpha = exp(mOld - mNew);
      if (part == 0u) {
        rowM[r] = mNew;
        rowL[r] = lOld * alpha + rowSum;
        rowAlpha[r] = alpha;
        rowMoved[r] = u32(alpha != 1.0 && lOld > 0.0); // a row with no visible key yet has O = 0
      }
    }
    // the barrier after the softmax, and the rows' flags read uniformly: a rescale has barriers inside
    let moved = workgroupUniformLoad(&rowMoved);
    var rescale = 0u;
    for (var i = 0u; i < TQ; i++) { rescale |= moved[i]; }
    if (rescale == 1u) {
      ${eachO((slot) => `subgroupMatrixStore<row_major>(&Os, ${oAt(slot)}, o${slot}, OS);`)}
      workgroupBarrier();
      for (var i = 0u; i < D / R; i++) { Os[r * OS + part + i * R] *= rowAlpha[r]; }
      workgroupBarrier();
      ${eachO((slot) => `o${slot} = subgroupMatrixLoad<Result, row_major>(&Os, ${oAt(slot)}, OS);`)}
    }
    // 3. O += P V, subgroup sg's O tiles
    ${eachO((slot) => each(kTiles, (kk) => `o${slot} = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<Left, row_major>(&Ps, ${kk * M}u, PS), ${prefetchV ? `vf${kk}_${slot}` : vAt(kk, slot)}, o${slot});`).join("\n      "))}
    // no barrier here: the next chunk's QK writes only Ss, and its barrier orders this P V before the next softmax rewrites Ps
  }
  ${eachO((slot) => `subgroupMatrixStore<row_major>(&Os, ${oAt(slot)}, o${slot}, OS);`)}
  workgroupBarrier();
  for (var e = lid; e < TQ * D4; e += THREADS) {
    let row = e / D4;
    if (row < count) {
      let ot = row * OS + (e % D4) * 4u;
      let o = vec4<f32>(Os[ot], Os[ot + 1u], Os[ot + 2u], Os[ot + 3u]);
      out[(rowToken[row] * P.qHeads + h) * D4 + e % D4] = select(o, o / rowL[row], P.finalize == 1u);
    }
  }
  if (lid < count) {
    let row = rowToken[lid] * P.qHeads + h;
    if (P.finalize == 1u) { lse[row] = rowM[lid] + log(rowL[lid]); } else { ml[row] = vec2<f32>(rowM[lid], rowL[lid]); }
  }
}
`;
}

/** Workgroup bytes of the dq kernel: Q and dO (f16), S and dP (f32), dS (f16), dq (f32), row statistics. */
export function dqMmaSharedBytes(c: MmaShape): number {
  const D = c.headDim;
  return 2 * TQ * (D + 8) * 2 + 2 * TQ * (c.TK + 4) * 4 + TQ * (c.TK + 8) * 2 + TQ * (D + 4) * 4 + TQ * 12;
}

/** Threads of the tensor-core dq kernel: 8 subgroups, one S or dP tile each per chunk of 64 keys. */
export const MMA_DQ_THREADS = 256;

/**
 * dq on tensor cores, query-major with the forward's tiles and rounds (f16 q, k, v, dout; f32
 * accumulation), 8 subgroups: per chunk of keys S = Q Kᵀ (subgroups 0-3, Q fragments in registers)
 * and dP = dO Vᵀ (4-7, dO fragments), one 16-key tile each, Kᵀ and Vᵀ row-major from the transposed
 * copies; then dS = scale · P ∘ (dP − delta) with P = exp(scale · S − lse), rounded to f16; and
 * dq += dS K (K row-major from its natural copy), subgroup sg's dq tiles in registers from the
 * tile's start to its end. Besides the inputs, the only rounding is dS to f16 (relative 2^-11 per
 * term); delta must come from the same f16-rounded dout, or terms that cancel exactly (a one-token
 * sequence's dq) no longer do.
 */
export function dqMmaWgsl(c: MmaShape): string {
  const D = c.headDim;
  const fragments = D / M;
  const kTiles = c.TK / M;
  const subgroups = MMA_DQ_THREADS / 32;
  if (2 * kTiles > subgroups) throw new Error(`dqMmaWgsl: TK ${c.TK} needs more than ${subgroups} subgroups`);
  const { slots, column, clampedColumn, owned } = columnTiles(fragments, subgroups); // dq tiles sg, sg + 8, ...
  // K fragment (key tile kk of the chunk, the slot's dq tile; loaded outside the guard, so clamped)
  const kAt = (kk: number, slot: number) => `subgroupMatrixLoad<Right, row_major>(&k, fragment(g, k0 + ${kk * M}u, ${clampedColumn(slot)}), ${M}u)`;
  const transposed = (array: string, d: number) => `subgroupMatrixLoad<Right, row_major>(&${array}, fragment(g, k0 + kTile * ${M}u, ${d * M}u), ${M}u)`;
  return /* wgsl */ `${mmaHeader(c, TQ, MMA_DQ_THREADS)}
@group(0) @binding(3) var<storage, read> q: array<vec4<f16>>;     // [tokens, qHeads, D/4]
@group(0) @binding(4) var<storage, read> kT: array<f16>;          // [kvHeads, key tiles, D/16, 16, 16]: tiles of Kᵀ, zeros past tokens
@group(0) @binding(5) var<storage, read> vT: array<f16>;          // [kvHeads, key tiles, D/16, 16, 16]: tiles of Vᵀ, zeros past tokens
@group(0) @binding(6) var<storage, read> k: array<f16>;           // [kvHeads, key tiles, D/16, 16, 16]: tiles of K, zeros past tokens
@group(0) @binding(7) var<storage, read> dout: array<vec4<f16>>;  // [tokens, qHeads, D/4]
@group(0) @binding(8) var<storage, read> rowStats: array<vec2<f32>>; // [tokens, qHeads] (lse, delta)
@group(0) @binding(9) var<storage, read_write> dq: array<vec4<f32>>;  // [tokens, qHeads, D/4]

var<workgroup> Qs: array<f16, ${TQ * (D + 8)}>;
var<workgroup> dOs: array<f16, ${TQ * (D + 8)}>;
var<workgroup> Ss: array<f32, ${TQ * (c.TK + 4)}>;
var<workgroup> dPs: array<f32, ${TQ * (c.TK + 4)}>;
var<workgroup> dSs: array<f16, ${TQ * (c.TK + 8)}>;
var<workgroup> Os: array<f32, ${TQ * (D + 4)}>; // dq, at the tile's start and end
var<workgroup> rowToken: array<u32, ${TQ}>;
var<workgroup> rowLse: array<f32, ${TQ}>;
var<workgroup> rowDelta: array<f32, ${TQ}>;

${queryTileEntry(MMA_DQ_THREADS)}
  ${loadRowInputs("a.x", "b.y == 1u", "stats")}
  workgroupBarrier();
  ${stageQueryRows([["q", "Qs"], ["dout", "dOs"]], "dq")}
  workgroupBarrier();
  // subgroups 0-3: S tile sg from Q; 4-7: dP tile sg - 4 from dO (past the chunk's tiles: a copy, not stored)
  let kTile = min(sg % ${subgroups / 2}u, ${kTiles - 1}u);
  ${each(fragments, (d) => `var x${d} = Left();`).join(" ")}
  if (sg < ${subgroups / 2}u) {
    ${each(fragments, (d) => `x${d} = subgroupMatrixLoad<Left, row_major>(&Qs, ${d * M}u, QS);`).join("\n    ")}
  } else {
    ${each(fragments, (d) => `x${d} = subgroupMatrixLoad<Left, row_major>(&dOs, ${d * M}u, QS);`).join("\n    ")}
  }
  ${each(slots, (slot) => `var dq${slot} = Result();`).join(" ")}
  ${owned((slot) => `dq${slot} = subgroupMatrixLoad<Result, row_major>(&Os, ${column(slot)}, OS);`, "\n  ")}
  let r = lid / R;
  let part = lid % R;
  for (var k0 = keyBegin; k0 < a.w; k0 += TK) {
    // this chunk's K fragments for step 3, in flight during steps 1 and 2
    ${each(slots, (slot) => each(kTiles, (kk) => `let kf${slot}_${kk} = ${kAt(kk, slot)};`).join(" ")).join("\n    ")}
    // 1. S = Q Kᵀ (subgroups 0-3) and dP = dO Vᵀ (4-7), one 16-key tile each
    {
      var acc = Result();
      if (sg < ${subgroups / 2}u) {
        ${each(fragments, (d) => `acc = subgroupMatrixMultiplyAccumulate(x${d}, ${transposed("kT", d)}, acc);`).join("\n        ")}
        if (sg < ${kTiles}u) { subgroupMatrixStore<row_major>(&Ss, kTile * ${M}u, acc, SS); }
      } else {
        ${each(fragments, (d) => `acc = subgroupMatrixMultiplyAccumulate(x${d}, ${transposed("vT", d)}, acc);`).join("\n        ")}
        if (sg - ${subgroups / 2}u < ${kTiles}u) { subgroupMatrixStore<row_major>(&dPs, kTile * ${M}u, acc, SS); }
      }
    }
    workgroupBarrier();
    // 2. dS = scale · P ∘ (dP − delta), R threads per row
    {
      let token = rowToken[r];
      for (var i = 0u; i < TK / R; i++) {
        let col = part + i * R;
        let key = k0 + col;
        var ds = 0.0;
        if (r < count && key >= a.z && key < a.w && key <= token) {
          let p = exp(P.scale * Ss[r * SS + col] - rowLse[r]);
          ds = P.scale * p * (dPs[r * SS + col] - rowDelta[r]);
        }
        dSs[r * PS + col] = f16(ds);
      }
    }
    workgroupBarrier();
    // 3. dq += dS K, subgroup sg's dq tiles sg, sg + 8, ...
    ${owned((slot) => each(kTiles, (kk) => `dq${slot} = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<Left, row_major>(&dSs, ${kk * M}u, PS), kf${slot}_${kk}, dq${slot});`).join("\n      "))}
    // no barrier here: the next chunk's step 1 writes Ss and dPs only, and its barrier orders this step's dSs reads before step 2 rewrites dSs
  }
  ${owned((slot) => `subgroupMatrixStore<row_major>(&Os, ${column(slot)}, dq${slot}, OS);`, "\n  ")}
  workgroupBarrier();
  for (var e = lid; e < TQ * D4; e += THREADS) {
    let row = e / D4;
    if (row < count) {
      let ot = row * OS + (e % D4) * 4u;
      dq[(rowToken[row] * P.qHeads + h) * D4 + e % D4] = vec4<f32>(Os[ot], Os[ot + 1u], Os[ot + 2u], Os[ot + 3u]);
    }
  }
}
`;
}

/** Keys per dk/dv tile, queries per chunk and threads of the tensor-core dk/dv kernel. */
export const MMA_DKDV_KEYS = 32;
const DKDV_QUERIES = 32;
export const MMA_DKDV_THREADS = 256;

/** Workgroup bytes of the dk/dv kernel: Q and dO rows (f16), S and dP (f32), Pᵀ and dSᵀ (f16), 16 rows of dK or dV on their way out (f32), row statistics. */
export function dkdvMmaSharedBytes(headDim: number): number {
  const [KT, QC] = [MMA_DKDV_KEYS, DKDV_QUERIES];
  return 2 * QC * (headDim + 8) * 2 + 2 * QC * (KT + 4) * 4 + 2 * KT * (QC + 8) * 2 + M * (headDim + 4) * 4 + QC * 12;
}

/**
 * dk and dv on tensor cores, key-tile-major like the float32 kernel (32 keys of one kv head per
 * workgroup; their own block's queries, then every round's gathered queries that chose the block,
 * for each query head of the group), in chunks of 32 queries staged in workgroup memory, 8 subgroups:
 *   1. S = Q Kᵀ (subgroups 0-3) and dP = dO Vᵀ (4-7), one 16x16 tile (query tile, key tile) each,
 *      the key tile's Kᵀ or Vᵀ fragments in registers (gathered from the tiled copies at the start);
 *   2. Pᵀ = exp(scale · S − lse) and dSᵀ = scale · Pᵀ ∘ (dPᵀ − delta), rounded to f16, transposed;
 *   3. dV += Pᵀ dO and dK += dSᵀ Q: subgroup sg owns key tile sg / 4 and column tiles sg % 4, + 4,
 *      ..., of both, in registers (f32) for the whole tile.
 * Every matrix is read row-major. Each staged chunk serves 32 keys: measured on the H100 (32K tokens
 * x 8 heads, full attention) 16 keys with dK and dV in workgroup memory took 284 ms, in registers
 * 260. Besides the inputs, the roundings are P and dS to f16.
 */
export function dkdvMmaWgsl(c: { headDim: number }): string {
  const D = c.headDim;
  const fragments = D / M;
  const keyTiles = MMA_DKDV_KEYS / M; // 2
  const queryTiles = DKDV_QUERIES / M; // 2
  const subgroups = MMA_DKDV_THREADS / 32; // 8: S tiles on 0-3, dP tiles on 4-7; dK, dV of key tile sg / 4
  const columnGroups = subgroups / keyTiles; // subgroups sharing one key tile's dK, dV columns
  if (keyTiles * queryTiles * 2 !== subgroups) throw new Error("dkdvMmaWgsl: one S or dP tile per subgroup");
  // TQ: queries per chunk; TK sizes the probability rows' stride PS
  const header = mmaHeader({ headDim: D, TK: DKDV_QUERIES }, DKDV_QUERIES, MMA_DKDV_THREADS);
  const slots = Math.ceil(fragments / columnGroups); // dK and dV tiles per subgroup
  const column = (slot: number) => `sg % ${columnGroups}u + ${slot * columnGroups}u`;
  const owns = (slot: number) => `${column(slot)} < ${fragments}u`;
  const update = (acc: string, left: string, right: string, slot: number) => `if (${owns(slot)}) {
          let j = ${column(slot)};
          ${each(queryTiles, (t) => `${acc}${slot} = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<Left, row_major>(&${left}, ownKeys * ${M}u * PS + ${t * M}u, PS), subgroupMatrixLoad<Right, row_major>(&${right}, ${t * M}u * QS + j * ${M}u, QS), ${acc}${slot});`).join("\n          ")}
        }`;
  // the tile's dK or dV, from registers through workgroup memory (16 keys at a time) to the keys the tile has
  const write = (acc: string, offset: string) => each(keyTiles, (half) => `if (ownKeys == ${half}u) {
    ${each(slots, (slot) => `if (${owns(slot)}) { subgroupMatrixStore<row_major>(&Outs, (${column(slot)}) * ${M}u, ${acc}${slot}, OS); }`).join("\n    ")}
  }
  workgroupBarrier();
  for (var e = lid; e < ${M}u * D; e += THREADS) {
    let key = keyStart + ${half * M}u + e / D;
    if (key < keyEnd) { dkdv[${offset}(key * P.kvHeads + g) * D + e % D] = Outs[(e / D) * OS + e % D]; }
  }
  workgroupBarrier();`).join("\n  ");
  // the next chunk's Q and dO rows (vec4s rowLoads per thread), and its row tokens and statistics, into registers
  const rowLoads = Math.ceil((DKDV_QUERIES * D) / 4 / MMA_DKDV_THREADS);
  const loadAhead = `{
    let count = select(0u, min(TQ, next.end - next.start), next.h < headEnd);
    let gathered = next.part > 0u;
    ${each(rowLoads, (j) => `{
      let e = lid + ${j}u * THREADS;
      let r = e / D4;
      qx${j} = vec4<f16>(0.0);
      dx${j} = vec4<f16>(0.0);
      if (e < TQ * D4 && r < count) {
        let row = tokenAt(next.start, r, gathered) * P.qHeads + next.h;
        qx${j} = q[row * D4 + e % D4];
        dx${j} = dout[row * D4 + e % D4];
      }
    }`).join("\n    ")}
    tokenAhead = 0u;
    statsAhead = vec2<f32>(0.0);
    if (lid < count) {
      tokenAhead = tokenAt(next.start, lid, gathered);
      statsAhead = rowStats[tokenAhead * P.qHeads + next.h];
    }
  }`;
  return /* wgsl */ `${header}
@group(0) @binding(3) var<storage, read> q: array<vec4<f16>>;     // [tokens, qHeads, D/4]
@group(0) @binding(4) var<storage, read> kT: array<f16>;          // [kvHeads, key tiles, D/16, 16, 16]: tiles of Kᵀ, zeros past tokens
@group(0) @binding(5) var<storage, read> vT: array<f16>;          // [kvHeads, key tiles, D/16, 16, 16]: tiles of Vᵀ, zeros past tokens
@group(0) @binding(6) var<storage, read> dout: array<vec4<f16>>;  // [tokens, qHeads, D/4]
@group(0) @binding(7) var<storage, read> rowStats: array<vec2<f32>>; // [tokens, qHeads] (lse, delta)
@group(0) @binding(8) var<storage, read_write> dkdv: array<f32>;  // [2, tokens, kvHeads, D]: dk, then dv

${SEGMENT_START}

// a chunk of up to TQ queries: query head h, part (0: the block's own queries, r + 1: round r's), queries [start, end) of the part
struct Chunk { h: u32, part: u32, start: u32, end: u32 }

// the queries of part \`part\` of head h for the key tile of block \`block\`: part 0 from the tile's first key to the block's natural end, part r + 1 round r's segment
fn partQueries(h: u32, part: u32, keyStart: u32, naturalEnd: u32, block: u32) -> vec2<u32> {
  if (part == 0u) { return vec2<u32>(keyStart, naturalEnd); }
  let segment = ((part - 1u) * P.qHeads + h) * P.globalBlocks + block;
  return vec2<u32>(segmentStart(segment), segmentStart(segment + 1u));
}

const KEYS = ${MMA_DKDV_KEYS}u;
const ST = ${MMA_DKDV_KEYS + 4}u; // S and dP row stride
var<workgroup> Qs: array<f16, ${DKDV_QUERIES * (D + 8)}>;  // [query, d] (at the start Kᵀ, [d, key])
var<workgroup> dOs: array<f16, ${DKDV_QUERIES * (D + 8)}>; // [query, d] (at the start Vᵀ, [d, key])
var<workgroup> Ss: array<f32, ${DKDV_QUERIES * (MMA_DKDV_KEYS + 4)}>;  // S [query, key]
var<workgroup> dPs: array<f32, ${DKDV_QUERIES * (MMA_DKDV_KEYS + 4)}>; // dP [query, key]
var<workgroup> Ps: array<f16, ${MMA_DKDV_KEYS * (DKDV_QUERIES + 8)}>;  // Pᵀ [key, query]
var<workgroup> dSs: array<f16, ${MMA_DKDV_KEYS * (DKDV_QUERIES + 8)}>; // dSᵀ [key, query]
var<workgroup> Outs: array<f32, ${M * (D + 4)}>; // [key, d]: 16 keys of dK or dV on their way out
var<workgroup> rowToken: array<u32, ${DKDV_QUERIES}>;
var<workgroup> rowLse: array<f32, ${DKDV_QUERIES}>;
var<workgroup> rowDelta: array<f32, ${DKDV_QUERIES}>;

${tileStart(MMA_DKDV_THREADS)}
  let g = b.x;
  let keyStart = a.z;
  let keyEnd = a.w;
  // step 1's tile: S (sg < 4) or dP, query tile queryTile, key tile keyTile; keys past keyEnd are masked below
  let queryTile = sg % ${queryTiles}u;
  let keyTile = (sg / ${queryTiles}u) % ${keyTiles}u;
  // the tile's keys of Kᵀ and Vᵀ, [d, key], gathered from the tiled copies into Qs and dOs (the
  // tile need not start on a tile of the copies; once per workgroup), then as fragments into registers
  for (var e = lid; e < D * KEYS; e += THREADS) {
    let d = e / KEYS;
    let key = keyStart + e % KEYS;
    let at = fragment(g, key - key % 16u, d - d % 16u) + (d % 16u) * 16u + key % 16u;
    Qs[e] = kT[at];
    dOs[e] = vT[at];
  }
  workgroupBarrier();
  ${each(fragments, (d) => `var kv${d} = Right();`).join(" ")}
  if (sg < ${subgroups / 2}u) {
    ${each(fragments, (d) => `kv${d} = subgroupMatrixLoad<Right, row_major>(&Qs, ${d * M}u * KEYS + keyTile * ${M}u, KEYS);`).join("\n    ")}
  } else {
    ${each(fragments, (d) => `kv${d} = subgroupMatrixLoad<Right, row_major>(&dOs, ${d * M}u * KEYS + keyTile * ${M}u, KEYS);`).join("\n    ")}
  }
  // step 3's tiles: dK and dV of the keys of key tile sg / 4, columns 16 j for j = sg % 4, + 4, ...
  let ownKeys = sg / ${columnGroups}u;
  ${each(slots, (slot) => `var dk${slot} = Result(); var dv${slot} = Result();`).join(" ")}
  // the chunks of TQ queries, in order: for each query head of the group, part 0 (the block's own
  // queries: all later queries of the sequence for full attention), then part r + 1 (round r's
  // queries that chose the block). The next chunk's rows are loaded into registers while this one computes.
  let headEnd = (g + 1u) * (P.qHeads / P.kvHeads);
  var chunk = Chunk(g * (P.qHeads / P.kvHeads), 0u, keyStart, b.z);
  var next = chunk;
  ${each(rowLoads, (j) => `var qx${j} = vec4<f16>(0.0); var dx${j} = vec4<f16>(0.0);`).join("\n  ")}
  var tokenAhead = 0u;
  var statsAhead = vec2<f32>(0.0);
  ${loadAhead}
  while (chunk.h < headEnd) {
    let h = chunk.h;
    let count = min(TQ, chunk.end - chunk.start);
    workgroupBarrier(); // the previous chunk (or the fragments' loads above) is done with the rows and tiles below
    if (lid < TQ) { rowToken[lid] = tokenAhead; rowLse[lid] = statsAhead.x; rowDelta[lid] = statsAhead.y; }
    ${each(rowLoads, (j) => `{
      let e = lid + ${j}u * THREADS;
      let at = (e / D4) * QS + (e % D4) * 4u;
      if (e < TQ * D4) {
        Qs[at] = qx${j}.x; Qs[at + 1u] = qx${j}.y; Qs[at + 2u] = qx${j}.z; Qs[at + 3u] = qx${j}.w;
        dOs[at] = dx${j}.x; dOs[at + 1u] = dx${j}.y; dOs[at + 2u] = dx${j}.z; dOs[at + 3u] = dx${j}.w;
      }
    }`).join("\n    ")}
    // the chunk after: the part's next TQ queries, else the next part with any, else the next head's first
    next.start += TQ;
    while (next.start >= next.end && next.h < headEnd) {
      next.part += 1u;
      if (next.part > P.width) { next.part = 0u; next.h += 1u; }
      let range = partQueries(next.h, next.part, keyStart, b.z, b.w);
      next.start = range.x;
      next.end = range.y;
    }
    ${loadAhead}
    workgroupBarrier();
    // 1. S (subgroups 0-3) and dP (4-7), one (query tile, key tile) each
    {
      var acc = Result();
      if (sg < ${subgroups / 2}u) {
        ${each(fragments, (d) => `acc = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<Left, row_major>(&Qs, queryTile * ${M}u * QS + ${d * M}u, QS), kv${d}, acc);`).join("\n            ")}
        subgroupMatrixStore<row_major>(&Ss, queryTile * ${M}u * ST + keyTile * ${M}u, acc, ST);
      } else {
        ${each(fragments, (d) => `acc = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<Left, row_major>(&dOs, queryTile * ${M}u * QS + ${d * M}u, QS), kv${d}, acc);`).join("\n            ")}
        subgroupMatrixStore<row_major>(&dPs, queryTile * ${M}u * ST + keyTile * ${M}u, acc, ST);
      }
    }
    workgroupBarrier();
    // 2. Pᵀ and dSᵀ, masked (the query exists, the key is in the tile and not after the query), written transposed
    for (var e = lid; e < KEYS * TQ; e += THREADS) {
      let key = e / TQ;
      let col = e % TQ;
      var p = 0.0;
      var ds = 0.0;
      if (col < count && keyStart + key < keyEnd && keyStart + key <= rowToken[col]) {
        p = exp(P.scale * Ss[col * ST + key] - rowLse[col]);
        ds = P.scale * p * (dPs[col * ST + key] - rowDelta[col]);
      }
      Ps[key * PS + col] = f16(p);
      dSs[key * PS + col] = f16(ds);
    }
    workgroupBarrier();
    // 3. dV += Pᵀ dO and dK += dSᵀ Q over the chunk's query tiles
    ${each(slots, (slot) => `${update("dv", "Ps", "dOs", slot)}
    ${update("dk", "dSs", "Qs", slot)}`).join("\n    ")}
    chunk = next;
  }
  ${write("dk", "")}
  ${write("dv", "P.dvOffset + ")}
}
`;
}

/** Elements each workgroup of TO_F16 converts: 256 threads, 4 pairs each (fewer, larger workgroups run nearer the copy bandwidth). */
export const TO_F16_ELEMENTS = 2048;

/** f32 -> f16 in pairs, each thread 4 pairs 256 apart (coalesced); an odd last element is paired with zero. */
export const TO_F16 = /* wgsl */ `enable f16;
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f16>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = (wid.x + wid.y * nwg.x) * 1024u + lid;
  for (var j = 0u; j < 4u; j++) {
    let i = first + j * 256u;
    if (2u * i >= P.n) { return; }
    var second = 0.0;
    if (2u * i + 1u < P.n) { second = x[2u * i + 1u]; }
    y[i] = vec2<f16>(f16(x[2u * i]), f16(second));
  }
}
`;

/**
 * f32 [tokens, heads, D] -> f16 tiles [heads, mmaKeyTiles(tokens), D / 16, 16, 16], the layout the
 * tensor-core kernels read k and v in: tile (key / 16, d / 16) holds its 16 keys x 16 columns row by
 * row, as [key][d], or transposed, [d][key] (P.transpose = 1); keys past the tokens are zero. One
 * workgroup per 16 keys of one head: 16 rows of D read along D, and the D / 16 tiles, which follow
 * one another in the copy, written as one run of 16 D elements. Both loops are unrolled here, so
 * each thread's loads are all in flight at once (as a loop over a runtime D they ran one after
 * another: 32K x 8 heads took 0.15 ms, under half the copy bandwidth).
 */
export function toF16TiledWgsl(headDim: number): string {
  const D = headDim;
  const stride = D + 2; // rows D + 2 apart: a transposed read (16 keys, one column) hits 16 banks
  return /* wgsl */ `enable f16;
struct Params { tokens: u32, heads: u32, transpose: u32, keyTiles: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f16>>;
const D = ${D}u;
const STRIDE = ${stride}u;
var<workgroup> rows: array<f16, ${16 * stride}>; // [key][d] of the 16 keys

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let index = wid.x + wid.y * nwg.x;
  let h = index % P.heads;
  let keyTile = index / P.heads;
  if (keyTile >= P.keyTiles) { return; }
  ${each((16 * D) / 256, (i) => `{
    let e = lid + ${i * 256}u;
    let key = keyTile * 16u + e / D;
    var value = 0.0;
    if (key < P.tokens) { value = x[(key * P.heads + h) * D + e % D]; }
    rows[(e / D) * STRIDE + e % D] = f16(value);
  }`).join("\n  ")}
  workgroupBarrier();
  // pairs of the run: element e is (row e % 256 / 16, column e % 16) of tile e / 256
  ${each(Math.ceil((8 * D) / 256), (i) => `{
    let pair = lid + ${i * 256}u;
    let e = 2u * pair;
    let column = (e / 256u) * 16u;
    let row = (e % 256u) / 16u;
    let col = e % 16u;
    var value: vec2<f16>;
    if (P.transpose == 1u) {
      value = vec2<f16>(rows[col * STRIDE + column + row], rows[(col + 1u) * STRIDE + column + row]);
    } else {
      value = vec2<f16>(rows[row * STRIDE + column + col], rows[row * STRIDE + column + col + 1u]);
    }
    if (pair < 8u * D) { y[(h * P.keyTiles + keyTile) * 8u * D + pair] = value; }
  }`).join("\n  ")}
}
`;
}
