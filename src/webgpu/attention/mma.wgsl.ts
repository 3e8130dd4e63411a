// Pieces the tensor-core kernels share (f16 operands, f32 accumulation, subgroup matrices of
// 16x16x16): the forward (forwardMma.wgsl.ts) and the backward's dq (dqMma.wgsl.ts) and dk/dv
// (dkdvMma.wgsl.ts). Same tiles, bindings and round protocol as the float32 kernels
// (tile.wgsl.ts). Measurements of the alternatives tried are in docs/benchmarks.md.
import { CARRIED, loadRowInputs, MASKED, SEGMENT_START, TILE_BINDINGS, VISIBLE } from "./tile.wgsl.js";

export interface MmaShape {
  headDim: number; // a multiple of 16
  TK: number; // keys per chunk, a multiple of 16
}

/** Queries per tile: one row of 16x16 tiles, so every subgroup keeps the same Q fragments. */
export const MMA_QUERIES = 16;
export const MMA_THREADS = 128;
/** Subgroups per workgroup: the kernel is laid out for subgroups of 32 lanes (device.ts checks the adapter has them). */
export const SUBGROUPS = MMA_THREADS / 32;
export const M = 16; // the subgroup matrix side
export const TQ = MMA_QUERIES;
const ROW_THREADS = MMA_THREADS / TQ; // threads per row in the softmax

/** The forward's workgroup bytes: Q (f16), S (f32) and P (f16), O (f32), rows padded by 16 bytes, six words per row (token, m, l, alpha, moved, union blocks). */
export function mmaSharedBytes(c: MmaShape): number {
  const D = c.headDim;
  return TQ * (D + 8) * 2 + TQ * (c.TK + 4) * 4 + TQ * (c.TK + 8) * 2 + TQ * (D + 4) * 4 + TQ * 24;
}

/** Butterfly reduction of `name` over the ROW_THREADS consecutive lanes of a row. */
export function rowReduce(name: string, op: (a: string, b: string) => string): string {
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

export const each = <T>(n: number, f: (i: number) => T) => Array.from({ length: n }, (_, i) => f(i));

/**
 * Subgroup sg's accumulator tiles along headDim when `subgroups` share its `fragments` 16-column
 * tiles (O in the forward, dq): tiles sg, sg + subgroups, ..., `slots` per subgroup, the last ones
 * missing where fragments is not a multiple of subgroups. `owned` writes a body per slot under its
 * guard; `column` is a slot's first column; `clampedColumn` the same, clamped to the last tile, an
 * in-bounds address for a load issued outside the guard (a prefetch).
 */
export function columnTiles(fragments: number, subgroups: number) {
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
export function mmaHeader(c: MmaShape, queries = TQ, threads = MMA_THREADS): string {
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

/**
 * dS stored by the dk/dv kernel (dkdvMmaWgsl with storeDs) for dq to read instead of recomputing it
 * (dqStoredWgsl): f16 rows of dsStride() = blockSize rounded up to 64 (the widest key tile), one per
 * query and attended block, a query's dS over the block's keys from the block's first key; own blocks
 * at row h · tokens + token, routed blocks at qHeads · tokens + the query's position in entries (the
 * inverted index both kernels walk the routed queries by). plan.ts: storedDsBytes.
 */
export const STORED_DS = /* wgsl */ `fn dsStride() -> u32 { return (P.blockSize + 63u) / 64u * 64u; }
fn dsRow(h: u32, at: u32, gathered: bool) -> u32 { return select(h * P.tokens + at, P.qHeads * P.tokens + at, gathered); }`;

/** The start of every tensor-core kernel's entry point: the tile's descriptor words a and b. */
export const tileStart = (threads = MMA_THREADS) => /* wgsl */ `@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= P.tiles) { return; }
  let a = tiles[2u * tile];
  let b = tiles[2u * tile + 1u];`;

/** The entry of a query tile (forward, dq): its query count, query head h, kv head g, row lengths. */
export const queryTileEntry = (threads = MMA_THREADS) => /* wgsl */ `${tileStart(threads)}
  let count = a.y;
  let h = b.x;
  let g = h / (P.qHeads / P.kvHeads);
  // chunks start on a tile of 16 keys (the copies are tiled), the keys before a.z masked
  let keyBegin = a.z - a.z % 16u;`;

/**
 * Stages the tile's rows of vec4<f16> arrays into padded f16 workgroup arrays ([global, local]
 * pairs), and the f32 accumulator Os from `acc` when the tile carries state (CARRIED), else zero.
 */
export function stageQueryRows(rows: [string, string][], acc: string): string {
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
