// The tensor-core dq kernel (mma.wgsl.ts has the pieces it shares with the forward).
import { defineKernel } from "../kernel.js";
import { columnTiles, each, M, mmaHeader, type MmaShape, queryTileEntry, STORED_DS, stageQueryRows, TQ } from "./mma.wgsl.js";
import { loadRowInputs } from "./tile.wgsl.js";

/** Workgroup bytes of the dq kernel: Q and dO (f16), S and dP (f32), dS (f16), dq (f32), row statistics. */
export function dqMmaSharedBytes(c: MmaShape): number {
  const D = c.headDim;
  return 2 * TQ * (D + 8) * 2 + 2 * TQ * (c.TK + 4) * 4 + TQ * (c.TK + 8) * 2 + TQ * (D + 4) * 4 + TQ * 12;
}

/**
 * The tile's dq rows from Os to storage (both dq kernels); `addCarried`: plus the dq the earlier rounds
 * left there (the recomputing kernel stages it into Os at the start instead).
 */
const storeDq = (addCarried: boolean) => `for (var e = lid; e < TQ * D4; e += THREADS) {
    let row = e / D4;
    if (row < count) {
      let out = (rowToken[row] * P.qHeads + h) * D4 + e % D4;
      let ot = row * OS + (e % D4) * 4u;
      dq[out] = ${addCarried ? "select(vec4<f32>(0.0), dq[out], P.loadState == 1u) + " : ""}vec4<f32>(Os[ot], Os[ot + 1u], Os[ot + 2u], Os[ot + 3u]);
    }
  }`;

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
  const kAt = (kk: number, slot: number) =>
    `subgroupMatrixLoad<Right, row_major>(&k, fragment(g, k0 + ${kk * M}u, ${clampedColumn(slot)}), ${M}u)`;
  const transposed = (array: string, d: number) =>
    `subgroupMatrixLoad<Right, row_major>(&${array}, fragment(g, k0 + kTile * ${M}u, ${d * M}u), ${M}u)`;
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
  ${stageQueryRows(
    [
      ["q", "Qs"],
      ["dout", "dOs"],
    ],
    "dq",
  )}
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
  ${storeDq(false)}
}
`;
}

export const DQ_MMA = defineKernel<MmaShape>({
  name: "dqMma",
  workgroupSize: MMA_DQ_THREADS,
  bindings: ["P", "tiles", "entries", "q", "kT", "vT", "k", "dout", "rowStats", "dq"],
  wgsl: dqMmaWgsl,
});

/** Threads of the dq kernel over stored dS: 4 subgroups, 16 of a tile's rows each. */
export const DQ_STORED_THREADS = 128;
const STORED_SUBGROUPS = DQ_STORED_THREADS / 32;
/** Query rows per tile of the dq kernel over stored dS. */
export const DQ_STORED_ROWS = STORED_SUBGROUPS * TQ;

/** Workgroup bytes of the dq kernel over stored dS: the tile's dq (f32) and its rows' tokens. */
export const dqStoredSharedBytes = (headDim: number) => DQ_STORED_ROWS * (headDim + 4) * 4 + DQ_STORED_ROWS * 4;

/**
 * dq = dS K from dS the dk/dv kernel stored (dkdvMmaWgsl with storeDs; mma.wgsl.ts: STORED_DS),
 * with the forward's rounds of tiles, of 64 queries here: a tile's rows are consecutive rows of the
 * stored dS (own blocks: consecutive tokens; routed: consecutive positions in entries), so each
 * subgroup's 16 rows take one dS fragment straight from storage per 16-key step, times K's tiles
 * for every headDim column. One product per 16 keys and headDim tile where the recomputing kernel
 * (dqMmaWgsl) has three and two barriers; no rounding beyond the stored dS's. The dq goes out
 * through workgroup memory, where the earlier rounds' dq is added. Every block must start on a
 * 16-key tile (plan.ts: storableDs). Variants measured: docs/benchmarks.md.
 */
export function dqStoredWgsl(c: { headDim: number }): string {
  const D = c.headDim;
  const fragments = D / M;
  const eachColumn = (body: (d: number) => string, separator: string) => each(fragments, body).join(separator);
  return /* wgsl */ `${mmaHeader({ headDim: D, TK: M }, DQ_STORED_ROWS, DQ_STORED_THREADS)}
@group(0) @binding(3) var<storage, read> k: array<f16>;   // [kvHeads, key tiles, D/16, 16, 16]: tiles of K, zeros past tokens
@group(0) @binding(4) var<storage, read> dS: array<f16>;  // [rows, dsStride()]: STORED_DS
@group(0) @binding(5) var<storage, read_write> dq: array<vec4<f32>>; // [tokens, qHeads, D/4]
${STORED_DS}

var<workgroup> Os: array<f32, ${DQ_STORED_ROWS * (D + 4)}>; // the tile's dq
var<workgroup> rowToken: array<u32, ${DQ_STORED_ROWS}>;

${queryTileEntry(DQ_STORED_THREADS)}
  let gathered = b.y == 1u;
  if (lid < TQ) {
    var token = 0u;
    if (lid < count) { token = tokenAt(a.x, lid, gathered); }
    rowToken[lid] = token;
  }
  // subgroup sg: rows 16 sg to 16 sg + 15 of the tile, every headDim column; in an own block only the
  // keys up to its rows' 16-key tile (a dk/dv key tile stores rows from its first key on, so the
  // later keys' dS of these rows is never written: its causal zeros are left out instead of read)
  let stride = dsStride();
  let first = (dsRow(h, a.x, gathered) + sg * ${M}u) * stride;
  let keyEnd = select(min(a.w, a.x + sg * ${M}u + ${M}u), a.w, gathered);
  ${eachColumn((d) => `var dq${d} = Result();`, " ")}
  if (sg * ${M}u < count) {
    for (var k0 = a.z; k0 < keyEnd; k0 += ${M}u) {
      let ds = subgroupMatrixLoad<Left, row_major>(&dS, first + k0 - a.z, stride);
      ${eachColumn((d) => `dq${d} = subgroupMatrixMultiplyAccumulate(ds, subgroupMatrixLoad<Right, row_major>(&k, fragment(g, k0, ${d * M}u), ${M}u), dq${d});`, "\n      ")}
    }
  }
  ${eachColumn((d) => `subgroupMatrixStore<row_major>(&Os, sg * ${M}u * OS + ${d * M}u, dq${d}, OS);`, "\n  ")}
  workgroupBarrier();
  ${storeDq(true)}
}
`;
}

export const DQ_STORED = defineKernel<{ headDim: number }>({
  name: "dqStored",
  workgroupSize: DQ_STORED_THREADS,
  bindings: ["P", "tiles", "entries", "k", "dS", "dq"],
  wgsl: dqStoredWgsl,
});
