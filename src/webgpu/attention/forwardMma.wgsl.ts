// The tensor-core forward (f16 operands, f32 accumulation, subgroup matrices of 16x16x16).
// Same tiles, bindings and round protocol as the float32 forward (forward.wgsl.ts): a workgroup
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
// this driver) and a contiguous 16 x 16 tile of a tiled f16 copy (f16.wgsl.ts; `fragment`
// finds one): 512 bytes in 4 cache lines, where a fragment of a [tokens, heads, D] array is 16 rows
// of 32 bytes in 16 lines. Chunks start on a 16-key tile; reading K and V past the key range (and K
// one chunk ahead) is why the copies carry zero keys past the tokens.
// The only rounding beyond float32 is P to f16 (q, k, v are f16 already): out's error is about
// f16's unit roundoff (2^-11) relative, lse stays at float32 accuracy.
import { defineKernel } from "../kernel.js";
import {
  columnTiles,
  each,
  M,
  MMA_THREADS,
  mmaHeader,
  type MmaShape,
  queryTileEntry,
  rowReduce,
  stageQueryRows,
  SUBGROUPS,
  TQ,
} from "./mma.wgsl.js";
import { loadRowInputs, unionPieces } from "./tile.wgsl.js";

/** The tensor-core forward's constants: a chunk shape, and whether its tiles are union tiles (tile.wgsl.ts). */
export interface ForwardMmaShape extends MmaShape {
  union: boolean;
}

export function forwardMmaWgsl(c: ForwardMmaShape): string {
  const D = c.headDim;
  const fragments = D / M;
  const kTiles = c.TK / M; // S tiles per chunk, at most one per subgroup
  if (kTiles > SUBGROUPS) throw new Error(`forwardMmaWgsl: TK ${c.TK} needs more than ${SUBGROUPS} subgroups`);
  // subgroup sg's O tiles sg, sg + SUBGROUPS, ..., in registers from the tile's start to its end
  const { slots, column: oAt, clampedColumn, owned: eachO } = columnTiles(fragments, SUBGROUPS);
  // V fragments of the chunk loaded before its QK when they fit in registers (D <= 128 at TK 64)
  const prefetchV = slots * kTiles <= 8;
  const union = unionPieces(c.union, TQ, "TK");
  const vAt = (kk: number, slot: number) =>
    `subgroupMatrixLoad<Right, row_major>(&v, fragment(g, k0 + ${kk * M}u, ${clampedColumn(slot)}), ${M}u)`;
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
${union.declarations}
// (no 4-byte workgroup variable here: with one in the shader, the tensor-core results came out wrong
// on the H100, Dawn + driver 580; dev/mma/variants.mts, 22nd run)

${queryTileEntry()}
  ${loadRowInputs("a.x", "b.y == 1u", "state", c.union)}
  workgroupBarrier();
  ${union.chosen}
  // query rows as f16; the accumulator from the previous round (or zero) as f32
  ${stageQueryRows([["q", "Qs"]], "out")}
  workgroupBarrier();
  ${each(fragments, (d) => `let q${d} = subgroupMatrixLoad<Left, row_major>(&Qs, ${d * M}u, QS);`).join("\n  ")}
  ${each(slots, (slot) => `var o${slot} = Result();`).join(" ")}
  ${eachO((slot) => `o${slot} = subgroupMatrixLoad<Result, row_major>(&Os, ${oAt(slot)}, OS);`)}
  // subgroup sg's S tile: keys [k0 + 16 kTile, +16) (past the chunk's tiles: a copy, not stored)
  let kTile = min(sg, ${kTiles - 1}u);
  var k0 = ${union.next("keyBegin")};
  ${each(fragments, (d) => `var kf${d} = subgroupMatrixLoad<Right, row_major>(&k, fragment(g, k0 + kTile * ${M}u, ${d * M}u), ${M}u);`).join("\n  ")}
  // the softmax thread's row and its first column
  let r = lid / R;
  let part = lid % R;${c.union ? "\n  let bits = rowBlocks[r];" : ""}
  while (k0 < a.w) {
    let k1 = ${union.next("k0 + TK")}; // the next chunk
    ${
      prefetchV
        ? `// this chunk's V, in flight during QK and the softmax
    ${each(kTiles, (kk) => each(slots, (slot) => `let vf${kk}_${slot} = ${vAt(kk, slot)};`).join(" ")).join("\n    ")}`
        : ""
    }
    // 1. S = Q Kᵀ, then the next chunk's K fragments, in flight during the softmax and P V
    {
      var s = Result();
      ${each(fragments, (d) => `s = subgroupMatrixMultiplyAccumulate(q${d}, kf${d}, s);`).join("\n      ")}
      if (sg < ${kTiles}u) { subgroupMatrixStore<row_major>(&Ss, kTile * ${M}u, s, SS); }
      ${each(fragments, (d) => `kf${d} = subgroupMatrixLoad<Right, row_major>(&k, fragment(g, k1 + kTile * ${M}u, ${d * M}u), ${M}u);`).join("\n      ")}
    }
    workgroupBarrier();
    // 2. online softmax, R threads per row
    {
      let token = rowToken[r];
      let mOld = rowM[r];
      let lOld = rowL[r];
      var rowMax = MASKED;
      ${
        c.union
          ? `// union tiles: the block of the thread's first column and where the next block starts, then
      // stepped column by column (with a division per element, 4 sequences of 8K x 8/4 heads x 64 took
      // 2.5x full attention's time on the H200)
      var block = (max(k0 + part, a.z) - a.z) / P.blockSize;
      var boundary = a.z + (block + 1u) * P.blockSize;`
          : ""
      }
      for (var i = 0u; i < TK / R; i++) {
        let col = part + i * R;
        let key = k0 + col;${
          c.union
            ? `
        while (key >= boundary) { block++; boundary += P.blockSize; }`
            : ""
        }
        var x = MASKED;
        if (r < count && key >= a.z && key < a.w && key <= token${c.union ? " && ((bits >> block) & 1u) == 1u" : ""}) { x = P.scale * Ss[r * SS + col]; }
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
    k0 = k1;
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

export const FORWARD_MMA = defineKernel<ForwardMmaShape>({
  name: "forwardMma",
  workgroupSize: MMA_THREADS,
  bindings: ["P", "tiles", "entries", "q", "k", "v", "out", "ml", "lse"],
  wgsl: forwardMmaWgsl,
});
