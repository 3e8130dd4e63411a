// The float32 backward kernels: delta (the rows' statistics), dq (query-major, the forward's tiles
// and rounds) and dk/dv (key-block-major, one dispatch).
import { defineKernel } from "../kernel.js";
import {
  accumulateBlocks,
  accumulators,
  accumulatorsFrom,
  eachAccumulator,
  header,
  loadKeys,
  loadRowInputs,
  queryTileEntry,
  registerTiles,
  scoreBlocks,
  SEGMENT_START,
  stageQueryRows,
  THREADS,
  tileEntry,
  tileMemory,
  type TileShape,
  uniformConstant,
} from "./tile.wgsl.js";

/** Rows of one DELTA workgroup (32 threads each). */
export const DELTA_ROWS = 8;

/**
 * rowStats = (lse, delta = rowsum(dout * out)), 32 threads per (token, head) row reading it along
 * headDim (coalesced; one thread per row read 32 rows 512 bytes apart at once: 0.47 ms at 32K tokens
 * x 8 heads), the 32 partial sums added in a fixed order: the backward's per-row inputs in one buffer.
 */
const DELTA_WGSL = /* wgsl */ `
struct Params { rows: u32, headDim: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> rowStats: array<vec2<f32>>;
var<workgroup> partial: array<f32, ${DELTA_ROWS * 32}>;

@compute @workgroup_size(${DELTA_ROWS * 32})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = (wid.x + wid.y * nwg.x) * ${DELTA_ROWS}u + lid / 32u;
  let lane = lid % 32u;
  var s = 0.0;
  if (row < P.rows) {
    for (var d = lane; d < P.headDim; d += 32u) { s += out[row * P.headDim + d] * dout[row * P.headDim + d]; }
  }
  partial[lid] = s;
  workgroupBarrier();
  if (lane == 0u && row < P.rows) {
    var total = 0.0;
    for (var i = 0u; i < 32u; i++) { total += partial[lid + i]; }
    rowStats[row] = vec2<f32>(lse[row], total);
  }
}
`;

/** dq, query-major with the forward's tiles: p = exp(scale q·k − lse), ds = p (dout·v − delta), dq += scale ds k. */
export function dqWgsl(c: TileShape): string {
  return /* wgsl */ `${header(c)}
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;      // [tokens, qHeads, D]
@group(0) @binding(7) var<storage, read> rowStats: array<vec2<f32>>; // [tokens, qHeads] (lse, delta)
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;  // [tokens, qHeads, D]

${tileMemory(c)}
var<workgroup> dOs: array<f32, ${c.TQ * (c.headDim + 1)}>;
var<workgroup> dS: array<f32, ${c.TQ * c.TK}>;
var<workgroup> rowLse: array<f32, ${c.TQ}>;
var<workgroup> rowDelta: array<f32, ${c.TQ}>;

${queryTileEntry(c)}
  ${registerTiles("TQ", "TK")}
  ${loadRowInputs("a.x", "b.y == 1u", "stats")}
  workgroupBarrier();
  ${stageQueryRows([
    ["q", "Qs"],
    ["dout", "dOs"],
  ])}
  // the thread's block of dq, from the previous round (or zero)
  ${accumulatorsFrom(c, "dq")}
  for (var k0 = a.z; k0 < a.w; k0 += ${uniformConstant(c, "TK")}) {
    ${loadKeys(c, "k0", "a.w")}
    workgroupBarrier();
    // dS = scale P ∘ (dP − delta), P = exp(scale Q Kᵀ − lse), dP = dO Vᵀ
    ${scoreBlocks(
      "TQ",
      [
        ["s", "Qs", "Ks"],
        ["dp", "dOs", "Vs"],
      ],
      `let key = k0 + col;
          var ds = 0.0;
          if (row < count && key < a.w && key <= rowToken[row]) {
            let p = exp(P.scale * s[at] - rowLse[row]);
            ds = P.scale * p * (dp[at] - rowDelta[row]);
          }
          dS[row * TK + col] = ds;`,
    )}
    workgroupBarrier();
    // dq += dS K
    ${accumulateBlocks(c, "TQ", "TK", [["acc", "dS", "Ks"]])}
    workgroupBarrier();
  }
  ${eachAccumulator(`if (row < count && col < D) { dq[(rowToken[row] * P.qHeads + h) * D + col] = acc[at]; }`)}
}
`;
}

/**
 * dk and dv, key-block-major: a tile is TK keys of one block and kv head; it walks, for each query
 * head of the group, the block's own queries (tokens [keyStart, naturalEnd)) and then the queries
 * that routed to the block in every round, TQ at a time. Here TQ counts queries and TK keys.
 */
export function dkdvWgsl(c: TileShape): string {
  const D = c.headDim;
  return /* wgsl */ `${header(c)}
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
@group(0) @binding(7) var<storage, read> rowStats: array<vec2<f32>>; // [tokens, qHeads] (lse, delta)
@group(0) @binding(8) var<storage, read_write> dkdv: array<f32>;   // [2, tokens, kvHeads, D]: dk, then dv

// (segment starts ride in the tiles buffer: 8 bindings at most, WebGPU's default per-stage limit)
${SEGMENT_START}


${tileMemory(c)}
var<workgroup> dOs: array<f32, ${c.TQ * (D + 1)}>;
var<workgroup> Pm: array<f32, ${c.TK * c.TQ}>;  // [key, query]
var<workgroup> dS: array<f32, ${c.TK * c.TQ}>;  // [key, query]
var<workgroup> rowLse: array<f32, ${c.TQ}>;
var<workgroup> rowDelta: array<f32, ${c.TQ}>;
// the thread's blocks of dk and dv (registerTiles with the keys as rows)
var<private> dkAcc: array<f32, ${accumulators(c, "TK")}>;
var<private> dvAcc: array<f32, ${accumulators(c, "TK")}>;

// one chunk of up to TQ queries: tokens start.. (gathered: entries[start..]) against the tile's keys
fn chunk(lid: u32, h: u32, g: u32, start: u32, count: u32, gathered: bool, keyStart: u32, keyEnd: u32) {
  ${registerTiles("TK", "TQ")}
  ${loadRowInputs("start", "gathered", "stats")}
  workgroupBarrier();
  ${stageQueryRows([
    ["q", "Qs"],
    ["dout", "dOs"],
  ])}
  workgroupBarrier();
  // Pᵀ and dSᵀ: rows are keys, columns queries
  ${scoreBlocks(
    "TK",
    [
      ["s", "Ks", "Qs"],
      ["dp", "Vs", "dOs"],
    ],
    `var p = 0.0;
          var ds = 0.0;
          if (col < count && keyStart + row < keyEnd && keyStart + row <= rowToken[col]) {
            p = exp(P.scale * s[at] - rowLse[col]);
            ds = P.scale * p * (dp[at] - rowDelta[col]);
          }
          Pm[row * TQ + col] = p;
          dS[row * TQ + col] = ds;`,
  )}
  workgroupBarrier();
  // dV += Pᵀ dO, dK += dSᵀ Q
  ${accumulateBlocks(c, "TK", "TQ", [
    ["dvAcc", "Pm", "dOs"],
    ["dkAcc", "dS", "Qs"],
  ])}
  workgroupBarrier();
}

${tileEntry(c)}
  let g = b.x;
  let keyStart = a.z;
  let keyEnd = a.w;
  ${registerTiles("TK", "TQ")}
  ${loadKeys(c, "keyStart", "keyEnd")}
  ${eachAccumulator("dkAcc[at] = 0.0;\n      dvAcc[at] = 0.0;")}
  let group = P.qHeads / P.kvHeads;
  for (var h = g * group; h < (g + 1u) * group; h++) {
    // the block's own queries (all later queries of the sequence for full attention)
    for (var s = keyStart; s < b.z; s += ${uniformConstant(c, "TQ")}) { chunk(lid, h, g, s, min(TQ, b.z - s), false, keyStart, keyEnd); }
    // the queries that routed to this block, round by round
    for (var r = 0u; r < P.width; r++) {
      let segment = (r * P.qHeads + h) * P.globalBlocks + b.w;
      let end = segmentStart(segment + 1u);
      for (var s = segmentStart(segment); s < end; s += ${uniformConstant(c, "TQ")}) { chunk(lid, h, g, s, min(TQ, end - s), true, keyStart, keyEnd); }
    }
  }
  ${eachAccumulator(`let key = keyStart + row;
      if (key < keyEnd && col < D) {
        dkdv[(key * P.kvHeads + g) * D + col] = dkAcc[at];
        dkdv[P.dvOffset + (key * P.kvHeads + g) * D + col] = dvAcc[at];
      }`)}
}
`;
}

export const DELTA = defineKernel<null>({
  name: "delta",
  workgroupSize: DELTA_ROWS * 32,
  bindings: ["P", "out", "dout", "lse", "rowStats"],
  wgsl: () => DELTA_WGSL,
});
export const DQ = defineKernel<TileShape>({
  name: "dq",
  workgroupSize: THREADS,
  bindings: ["P", "tiles", "entries", "q", "k", "v", "dout", "rowStats", "dq"],
  wgsl: dqWgsl,
});
export const DKDV = defineKernel<TileShape>({
  name: "dkdv",
  workgroupSize: THREADS,
  bindings: ["P", "tiles", "entries", "q", "k", "v", "dout", "rowStats", "dkdv"],
  wgsl: dkdvWgsl,
});
