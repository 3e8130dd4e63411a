// The tensor-core dk/dv kernel (mma.wgsl.ts has the pieces it shares with the forward).
import { defineKernel } from "../kernel.js";
import { each, M, mmaHeader, tileStart } from "./mma.wgsl.js";
import { SEGMENT_START } from "./tile.wgsl.js";

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
  const write = (acc: string, offset: string) =>
    each(
      keyTiles,
      (half) => `if (ownKeys == ${half}u) {
    ${each(slots, (slot) => `if (${owns(slot)}) { subgroupMatrixStore<row_major>(&Outs, (${column(slot)}) * ${M}u, ${acc}${slot}, OS); }`).join("\n    ")}
  }
  workgroupBarrier();
  for (var e = lid; e < ${M}u * D; e += THREADS) {
    let key = keyStart + ${half * M}u + e / D;
    if (key < keyEnd) { dkdv[${offset}(key * P.kvHeads + g) * D + e % D] = Outs[(e / D) * OS + e % D]; }
  }
  workgroupBarrier();`,
    ).join("\n  ");
  // the next chunk's Q and dO rows (vec4s rowLoads per thread), and its row tokens and statistics, into registers
  const rowLoads = Math.ceil((DKDV_QUERIES * D) / 4 / MMA_DKDV_THREADS);
  const loadAhead = `{
    let count = select(0u, min(TQ, next.end - next.start), next.h < headEnd);
    let gathered = next.part > 0u;
    ${each(
      rowLoads,
      (j) => `{
      let e = lid + ${j}u * THREADS;
      let r = e / D4;
      qx${j} = vec4<f16>(0.0);
      dx${j} = vec4<f16>(0.0);
      if (e < TQ * D4 && r < count) {
        let row = tokenAt(next.start, r, gathered) * P.qHeads + next.h;
        qx${j} = q[row * D4 + e % D4];
        dx${j} = dout[row * D4 + e % D4];
      }
    }`,
    ).join("\n    ")}
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
    ${each(
      rowLoads,
      (j) => `{
      let e = lid + ${j}u * THREADS;
      let at = (e / D4) * QS + (e % D4) * 4u;
      if (e < TQ * D4) {
        Qs[at] = qx${j}.x; Qs[at + 1u] = qx${j}.y; Qs[at + 2u] = qx${j}.z; Qs[at + 3u] = qx${j}.w;
        dOs[at] = dx${j}.x; dOs[at + 1u] = dx${j}.y; dOs[at + 2u] = dx${j}.z; dOs[at + 3u] = dx${j}.w;
      }
    }`,
    ).join("\n    ")}
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
    ${each(
      slots,
      (slot) => `${update("dv", "Ps", "dOs", slot)}
    ${update("dk", "dSs", "Qs", slot)}`,
    ).join("\n    ")}
    chunk = next;
  }
  ${write("dk", "")}
  ${write("dv", "P.dvOffset + ")}
}
`;
}

export const DKDV_MMA = defineKernel<{ headDim: number }>({
  name: "dkdvMma",
  workgroupSize: MMA_DKDV_THREADS,
  bindings: ["P", "tiles", "entries", "q", "kT", "vT", "dout", "rowStats", "dkdv"],
  wgsl: dkdvMmaWgsl,
});
