// The float32 forward kernel: one dispatch per round of tiles (tile.wgsl.ts).
import { defineKernel } from "../kernel.js";
import {
  accumulateBlocks,
  accumulatorsFrom,
  eachAccumulator,
  header,
  loadKeys,
  loadRowInputs,
  queryTileEntry,
  registerTiles,
  scoreBlocks,
  stageQueryRows,
  THREADS,
  tileMemory,
  type ForwardShape,
  uniformConstant,
  unionPieces,
  unionVisible,
  VISIBLE,
} from "./tile.wgsl.js";

/**
 * Forward: online softmax over the tile's key range; state (acc, m, l) in global memory between
 * rounds. Register-tiled (registerTiles): S = Q Kᵀ in 2 x 4 blocks, O += P V in 4 x 8 blocks
 * that stay in registers across the key range. Union tiles (c.union): one round, chunks and keys
 * of the blocks the rows chose (tile.wgsl.ts).
 */
export function forwardWgsl(c: ForwardShape): string {
  const TK = uniformConstant(c, "TK");
  const union = unionPieces(c.union, c.TQ, TK);
  return /* wgsl */ `${header(c)}
@group(0) @binding(3) var<storage, read> q: array<${c.input}>;          // [tokens, qHeads, D]
@group(0) @binding(4) var<storage, read> k: array<${c.input}>;          // [tokens, kvHeads, D]
@group(0) @binding(5) var<storage, read> v: array<${c.input}>;          // [tokens, kvHeads, D]
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [tokens, qHeads, D] acc, or out when finalizing
@group(0) @binding(7) var<storage, read_write> ml: array<vec2<f32>>; // [tokens, qHeads] running (max, sum)
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;  // [tokens, qHeads] when finalizing

${tileMemory(c)}
var<workgroup> S: array<f32, ${c.TQ * c.TK}>;
var<workgroup> rowM: array<f32, ${c.TQ}>;
var<workgroup> rowL: array<f32, ${c.TQ}>;
var<workgroup> rowAlpha: array<f32, ${c.TQ}>;
var<workgroup> partial: array<f32, ${THREADS}>; // the softmax's per-thread maxima, then sums
${union.declarations}

${queryTileEntry(c)}
  ${registerTiles("TQ", "TK")}
  let R = ${THREADS}u / TQ; // softmax threads per row
  let softmaxRow = lid / R;
  let part = lid % R;
  ${loadRowInputs("a.x", "b.y == 1u", "state", c.union)}
  workgroupBarrier();
  ${union.chosen}
  ${stageQueryRows([["q", "Qs"]])}
  // the thread's block of O, from the previous round's accumulator (or zero)
  ${accumulatorsFrom(c, "out")}
  for (var k0 = ${union.next("a.z")}; k0 < a.w; k0 = ${union.next(`k0 + ${TK}`)}) {
    ${loadKeys(c, "k0", "a.w")}
    workgroupBarrier();
    // S = scale Q Kᵀ, masked
    ${scoreBlocks(
      "TQ",
      [["s", "Qs", "Ks"]],
      `let key = k0 + col;
          var score = MASKED;
          if (row < count && key < a.w && key <= rowToken[row]${c.union ? ` && ${unionVisible("rowBlocks[row]", "key")}` : ""}) { score = P.scale * s[at]; }
          S[row * TK + col] = score;`,
    )}
    workgroupBarrier();
    // online softmax, R threads per row (columns part, part + R, ...), partial max and sum through workgroup memory
    var rowMax = MASKED;
    for (var col = part; col < TK; col += R) { rowMax = max(rowMax, S[softmaxRow * TK + col]); }
    partial[lid] = rowMax;
    workgroupBarrier();
    for (var i = 0u; i < R; i++) { rowMax = max(rowMax, partial[softmaxRow * R + i]); }
    let mOld = rowM[softmaxRow];
    let mNew = max(mOld, rowMax);
    var rowSum = 0.0;
    for (var col = part; col < TK; col += R) {
      let x = S[softmaxRow * TK + col];
      var p = 0.0;
      if (x > ${VISIBLE}) { p = exp(x - mNew); }
      S[softmaxRow * TK + col] = p;
      rowSum += p;
    }
    workgroupBarrier(); // every thread has read the maxima and rowM
    partial[lid] = rowSum;
    workgroupBarrier();
    if (part == 0u) {
      for (var i = 1u; i < R; i++) { rowSum += partial[softmaxRow * R + i]; }
      let alpha = exp(mOld - mNew);
      rowL[softmaxRow] = rowL[softmaxRow] * alpha + rowSum;
      rowM[softmaxRow] = mNew;
      rowAlpha[softmaxRow] = alpha;
    }
    workgroupBarrier();
    // O = alpha O + P V
    ${eachAccumulator("acc[at] *= rowAlpha[row];")}
    ${accumulateBlocks(c, "TQ", "TK", [["acc", "S", "Vs"]])}
    workgroupBarrier();
  }
  ${eachAccumulator(`if (row < count && col < D) {
        out[(rowToken[row] * P.qHeads + h) * D + col] = select(acc[at], acc[at] / rowL[row], P.finalize == 1u);
      }`)}
  if (lid < count) {
    let row = rowToken[lid] * P.qHeads + h;
    if (P.finalize == 1u) { lse[row] = rowM[lid] + log(rowL[lid]); } else { ml[row] = vec2<f32>(rowM[lid], rowL[lid]); }
  }
}
`;
}

export const FORWARD = defineKernel<ForwardShape>({
  name: "forward",
  workgroupSize: THREADS,
  bindings: ["P", "tiles", "entries", "q", "k", "v", "out", "ml", "lse"],
  wgsl: forwardWgsl,
});
