// The tensor-core dk/dv kernel (mma.wgsl.ts has the pieces it shares with the forward).
import { defineKernel } from "../kernel.js";
import { each, M, mmaHeader, STORED_DS, tileStart } from "./mma.wgsl.js";
import { SEGMENT_START } from "./tile.wgsl.js";

/** The chunk of the tensor-core dk/dv kernel: keys per workgroup (32 or 64) and headDim. */
export interface DkdvMmaShape {
  headDim: number;
  keys: number;
}

/** The keys per workgroup the kernel is generated for: each staged chunk of queries serves them all. */
export const MMA_DKDV_KEYS = [64, 32];

/**
 * The keys per workgroup tried for headDim, in order (the first whose workgroup memory fits). The
 * harness (dev/attention/dkdv.mts) on the H200: 64 keys 18-40% faster at headDim 128, 32 keys
 * 13-22% faster at headDim 64 (a smaller workgroup, more of them per SM).
 */
export const dkdvMmaKeys = (headDim: number) => (headDim > 64 ? [64, 32] : [32, 64]);
const DKDV_QUERIES = 32;
export const MMA_DKDV_THREADS = 256;

/** Floats of the S array, which also carries 16 rows of dK or dV on their way out where it is large enough. */
const scoreFloats = (c: DkdvMmaShape) => DKDV_QUERIES * (c.keys + 4);
const outFloats = (c: DkdvMmaShape) => M * (c.headDim + 4);

/** Workgroup bytes: Q and dO rows (f16), S and dP (f32), Pᵀ and dSᵀ (f16), 16 rows of dK or dV on their way out (f32) unless S holds them, row statistics. */
export function dkdvMmaSharedBytes(c: DkdvMmaShape): number {
  const [D, KT, QC] = [c.headDim, c.keys, DKDV_QUERIES];
  const outs = outFloats(c) <= scoreFloats(c) ? 0 : outFloats(c) * 4;
  return 2 * QC * (D + 8) * 2 + 2 * scoreFloats(c) * 4 + 2 * KT * (QC + 8) * 2 + outs + QC * 12;
}

/**
 * dk and dv on tensor cores, key-tile-major like the float32 kernel (`keys` keys of one kv head per
 * workgroup; their own block's queries, then every round's gathered queries that chose the block,
 * for each query head of the group), in chunks of 32 queries staged in workgroup memory, 8 subgroups:
 *   1. S = Q Kᵀ (subgroups 0-3) and dP = dO Vᵀ (4-7): each subgroup keeps one 16-key tile of Kᵀ or
 *      Vᵀ in registers (gathered from the tiled copies at the start) and computes its (query tile,
 *      key tile) products for every query tile it owns;
 *   2. Pᵀ = exp(scale · S − lse) and dSᵀ = scale · Pᵀ ∘ (dPᵀ − delta), rounded to f16, transposed;
 *   3. dV += Pᵀ dO and dK += dSᵀ Q: the subgroups split the key tiles and the headDim column tiles
 *      of both, in registers (f32) for the whole workgroup.
 * Every matrix is read row-major. More keys per workgroup let each staged chunk of Q and dO serve
 * more keys (fewer loads and barriers per multiply); measurements in docs/benchmarks.md. Besides
 * the inputs, the roundings are P and dS to f16. With `storeDs` it also writes every chunk's dS (f16,
 * zeros where masked) to storage for dq (mma.wgsl.ts: STORED_DS), so dq need not recompute S and dP.
 */
export function dkdvMmaWgsl(c: DkdvMmaShape, storeDs = false): string {
  const D = c.headDim;
  const fragments = D / M;
  const keyTiles = c.keys / M; // 2 or 4
  const queryTiles = DKDV_QUERIES / M; // 2
  const subgroups = MMA_DKDV_THREADS / 32; // 8: S on 0-3, dP on 4-7
  const perKind = subgroups / 2; // subgroups computing S (or dP): key tile i % keyTiles, query tiles from i / keyTiles on
  const queryGroups = perKind / keyTiles; // subgroups sharing one key tile of S, each taking queryTiles / queryGroups query tiles
  const columnGroups = subgroups / keyTiles; // subgroups sharing one key tile's dK, dV columns
  if (!MMA_DKDV_KEYS.includes(c.keys) || queryTiles % queryGroups !== 0)
    throw new Error(`dkdvMmaWgsl: keys ${c.keys} is not one of ${MMA_DKDV_KEYS}`);
  const outs = outFloats(c) <= scoreFloats(c) ? "Ss" : "Outs"; // where dK and dV rows pass on their way out
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
    ${each(slots, (slot) => `if (${owns(slot)}) { subgroupMatrixStore<row_major>(&${outs}, (${column(slot)}) * ${M}u, ${acc}${slot}, OS); }`).join("\n    ")}
  }
  workgroupBarrier();
  for (var e = lid; e < ${M}u * D; e += THREADS) {
    let key = keyStart + ${half * M}u + e / D;
    if (key < keyEnd) { dkdv[${offset}(key * P.kvHeads + g) * D + e % D] = ${outs}[(e / D) * OS + e % D]; }
  }
  workgroupBarrier();`,
    ).join("\n  ");
  // the chunk's dSᵀ to storage, a query's row of KEYS keys from the tile's offset in its block (a.x), 4 keys a thread
  const storeChunk = `for (var e = lid; e < TQ * ${c.keys / 4}u; e += THREADS) {
      let col = e / ${c.keys / 4}u;
      let key = (e % ${c.keys / 4}u) * 4u;
      if (col < count) {
        let gathered = chunk.part > 0u;
        let row = dsRow(h, select(rowToken[col], chunk.start + col, gathered), gathered);
        dS[(row * dsStride() + a.x + key) / 4u] = vec4<f16>(dSs[key * PS + col], dSs[(key + 1u) * PS + col], dSs[(key + 2u) * PS + col], dSs[(key + 3u) * PS + col]);
      }
    }`;
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
${
  storeDs
    ? `@group(0) @binding(9) var<storage, read_write> dS: array<vec4<f16>>; // [rows, dsStride() / 4]: STORED_DS
${STORED_DS}`
    : ""
}

${SEGMENT_START}

// a chunk of up to TQ queries: query head h, part (0: the block's own queries, r + 1: round r's), queries [start, end) of the part
struct Chunk { h: u32, part: u32, start: u32, end: u32 }

// the queries of part \`part\` of head h for the key tile of block \`block\`: part 0 from the tile's first key to the block's natural end, part r + 1 round r's segment
fn partQueries(h: u32, part: u32, keyStart: u32, naturalEnd: u32, block: u32) -> vec2<u32> {
  if (part == 0u) { return vec2<u32>(keyStart, naturalEnd); }
  let segment = ((part - 1u) * P.qHeads + h) * P.globalBlocks + block;
  return vec2<u32>(segmentStart(segment), segmentStart(segment + 1u));
}

const KEYS = ${c.keys}u;
const ST = ${c.keys + 4}u; // S and dP row stride
var<workgroup> Qs: array<f16, ${DKDV_QUERIES * (D + 8)}>;  // [query, d] (at the start Kᵀ, [d, key])
var<workgroup> dOs: array<f16, ${DKDV_QUERIES * (D + 8)}>; // [query, d] (at the start Vᵀ, [d, key])
var<workgroup> Ss: array<f32, ${scoreFloats(c)}>;  // S [query, key] (at the end: 16 keys of dK or dV, [key, d], where large enough)
var<workgroup> dPs: array<f32, ${scoreFloats(c)}>; // dP [query, key]
var<workgroup> Ps: array<f16, ${c.keys * (DKDV_QUERIES + 8)}>;  // Pᵀ [key, query]
var<workgroup> dSs: array<f16, ${c.keys * (DKDV_QUERIES + 8)}>; // dSᵀ [key, query]
${outs === "Outs" ? `var<workgroup> Outs: array<f32, ${outFloats(c)}>; // [key, d]: 16 keys of dK or dV on their way out` : ""}
var<workgroup> rowToken: array<u32, ${DKDV_QUERIES}>;
var<workgroup> rowLse: array<f32, ${DKDV_QUERIES}>;
var<workgroup> rowDelta: array<f32, ${DKDV_QUERIES}>;

${tileStart(MMA_DKDV_THREADS)}
  let g = b.x;
  let keyStart = a.z;
  let keyEnd = a.w;
  // step 1's tiles: S (sg < ${perKind}) or dP, key tile keyTile, query tiles firstQueryTile, + ${queryGroups}, ...; keys past keyEnd are masked below
  let keyTile = sg % ${keyTiles}u;
  let firstQueryTile = (sg % ${perKind}u) / ${keyTiles}u;
  // the tile's keys of Kᵀ and Vᵀ, [d, key], gathered from the tiled copies into Qs and dOs (the
  // tile need not start on a tile of the copies; once per workgroup) 32 keys at a time (what the
  // arrays hold), then as fragments into registers
  ${each(fragments, (d) => `var kv${d} = Right();`).join(" ")}
  for (var part = 0u; part < KEYS / 32u; part++) {
    for (var e = lid; e < D * 32u; e += THREADS) {
      let d = e / 32u;
      let key = keyStart + part * 32u + e % 32u;
      let at = fragment(g, key - key % 16u, d - d % 16u) + (d % 16u) * 16u + key % 16u;
      Qs[e] = kT[at];
      dOs[e] = vT[at];
    }
    workgroupBarrier();
    if (keyTile / 2u == part) {
      if (sg < ${perKind}u) {
        ${each(fragments, (d) => `kv${d} = subgroupMatrixLoad<Right, row_major>(&Qs, ${d * M * 32}u + (keyTile % 2u) * ${M}u, 32u);`).join("\n        ")}
      } else {
        ${each(fragments, (d) => `kv${d} = subgroupMatrixLoad<Right, row_major>(&dOs, ${d * M * 32}u + (keyTile % 2u) * ${M}u, 32u);`).join("\n        ")}
      }
    }
    workgroupBarrier();
  }
  // step 3's tiles: dK and dV of the keys of key tile sg / ${columnGroups}, columns 16 j for j = sg % ${columnGroups}, + ${columnGroups}, ...
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
    // 1. S (subgroups 0-${perKind - 1}) and dP (${perKind}-${subgroups - 1}), (query tile, key tile) products
    ${each(
      queryTiles / queryGroups,
      (i) => `{
      let queryTile = firstQueryTile + ${i * queryGroups}u;
      var acc = Result();
      if (sg < ${perKind}u) {
        ${each(fragments, (d) => `acc = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<Left, row_major>(&Qs, queryTile * ${M}u * QS + ${d * M}u, QS), kv${d}, acc);`).join("\n        ")}
        subgroupMatrixStore<row_major>(&Ss, queryTile * ${M}u * ST + keyTile * ${M}u, acc, ST);
      } else {
        ${each(fragments, (d) => `acc = subgroupMatrixMultiplyAccumulate(subgroupMatrixLoad<Left, row_major>(&dOs, queryTile * ${M}u * QS + ${d * M}u, QS), kv${d}, acc);`).join("\n        ")}
        subgroupMatrixStore<row_major>(&dPs, queryTile * ${M}u * ST + keyTile * ${M}u, acc, ST);
      }
    }`,
    ).join("\n    ")}
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
    ${storeDs ? storeChunk : ""}
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

const DKDV_BINDINGS = ["P", "tiles", "entries", "q", "kT", "vT", "dout", "rowStats", "dkdv"];
export const DKDV_MMA = defineKernel<DkdvMmaShape>({
  name: "dkdvMma",
  workgroupSize: MMA_DKDV_THREADS,
  bindings: DKDV_BINDINGS,
  wgsl: (c) => dkdvMmaWgsl(c),
});
/** The same kernel storing dS for dq (dqMma.wgsl.ts: DQ_STORED): a ninth storage buffer. */
export const DKDV_MMA_STORING_DS = defineKernel<DkdvMmaShape>({
  name: "dkdvMmaStoringDs",
  workgroupSize: MMA_DKDV_THREADS,
  bindings: [...DKDV_BINDINGS, "dS"],
  wgsl: (c) => dkdvMmaWgsl(c, true),
});
