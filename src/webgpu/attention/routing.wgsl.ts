// WGSL of MoBA routing: block key sums, gate + top-k + histogram, prefix sums, scatter into the
// inverted index, and the gathered query tiles of every round — all on the GPU, so the forward
// never waits for the host between routing and attention.
// Scores rank blocks by q · sum(keys) (float32): past blocks are complete, so dividing by
// blockSize changes no order and the sum keeps more exact bits than the mean. The gate itself is
// gate.wgsl.ts.
import { defineKernel } from "../kernel.js";

export const PARAMS = /* wgsl */ `
struct Params {
  tokens: u32, qHeads: u32, kvHeads: u32, headDim: u32,
  blockSize: u32, width: u32, globalBlocks: u32, batch: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
`;

/** The sequence b holding token t: the largest b with cu[b] <= t (empty sequences are skipped). */
export const SEQUENCE_OF = /* wgsl */ `fn sequenceOf(t: u32) -> u32 {
  var lo = 0u;
  var hi = P.batch;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (cu[mid] <= t) { lo = mid; } else { hi = mid; }
  }
  return lo;
}`;

/** Parameters, sequenceOf, and an entry point with one thread per (token t, query head h) at `index`. */
const ROUTING_COMMON = /* wgsl */ `${PARAMS}
${SEQUENCE_OF}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let index = (wid.x + wid.y * nwg.x) * 64u + lid;
  if (index >= P.tokens * P.qHeads) { return; }
  let t = index / P.qHeads;
  let h = index % P.qHeads;`;

/** The largest headDim routing serves: the gate's and the block sums' workgroup memory hold rows of this many dimensions. */
export const GATE_MAX_HEAD_DIM = 256;

/** Threads of a BLOCK_SUMS workgroup: 32 lanes along headDim (coalesced rows) times BLOCK_SUM_PARTS token strides. */
export const BLOCK_SUM_THREADS = 256;
const BLOCK_SUM_PARTS = BLOCK_SUM_THREADS / 32;

/**
 * One workgroup per (global block, kv head): the sum of the block's keys. Part p of the workgroup
 * sums the tokens p, p + PARTS, ... of the block (lane l the dimensions l, l + 32, ...), then each
 * dimension adds its PARTS partial sums in a fixed order: a block's 512 keys are read by 256
 * threads at once instead of 64 in sequence (0.12 ms at 32K tokens and one head before).
 */
const BLOCK_SUMS_WGSL = /* wgsl */ `${PARAMS}@group(0) @binding(1) var<storage, read> blockRange: array<vec2<u32>>; // [globalBlocks] first, end token
@group(0) @binding(2) var<storage, read> k: array<f32>;               // [tokens, kvHeads, headDim]
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;      // [globalBlocks, kvHeads, headDim]
const PARTS = ${BLOCK_SUM_PARTS}u;
var<workgroup> partial: array<f32, ${BLOCK_SUM_PARTS * GATE_MAX_HEAD_DIM}>; // [PARTS, headDim]

@compute @workgroup_size(${BLOCK_SUM_THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = wid.x + wid.y * nwg.x;
  if (item >= P.globalBlocks * P.kvHeads) { return; }
  let G = item / P.kvHeads;
  let g = item % P.kvHeads;
  let range = blockRange[G];
  let part = lid / 32u;
  for (var d = lid % 32u; d < P.headDim; d += 32u) {
    var s = 0.0;
    for (var t = range.x + part; t < range.y; t += PARTS) { s += k[(t * P.kvHeads + g) * P.headDim + d]; }
    partial[part * P.headDim + d] = s;
  }
  workgroupBarrier();
  for (var d = lid; d < P.headDim; d += ${BLOCK_SUM_THREADS}u) {
    var s = 0.0;
    for (var i = 0u; i < PARTS; i++) { s += partial[i * P.headDim + d]; }
    sums[item * P.headDim + d] = s;
  }
}
`;

/** One thread per (token, query head): each routed block's query list gets the token (CSR by round, head, block). */
const SCATTER_WGSL = /* wgsl */ `
@group(0) @binding(1) var<storage, read> cu: array<u32>;
@group(0) @binding(2) var<storage, read> blockOffsets: array<u32>;
@group(0) @binding(3) var<storage, read> routing: array<u32>;             // [tokens, qHeads, width]
@group(0) @binding(4) var<storage, read> segmentStart: array<u32>;        // [width * qHeads * globalBlocks + 1]
@group(0) @binding(5) var<storage, read_write> cursor: array<atomic<u32>>; // zeroed
@group(0) @binding(6) var<storage, read_write> entries: array<u32>;       // queries, grouped by segment
${ROUTING_COMMON}
  let b = sequenceOf(t);
  let n = min((t - cu[b]) / P.blockSize, P.width);
  for (var r = 0u; r < n; r++) {
    let segment = (r * P.qHeads + h) * P.globalBlocks + blockOffsets[b] + routing[index * P.width + r];
    entries[segmentStart[segment] + atomicAdd(&cursor[segment], 1u)] = t;
  }
}
`;

/**
 * Exclusive prefix sums, one 256-thread workgroup per range of `len` counts: out[i] = Σ f(counts[j])
 * over the earlier j of i's range, f(c) = c (tq = 0) or the tiles of c queries, ⌈c / tq⌉. With
 * writeTotal, out[len] receives the whole sum (a CSR end). Each thread sums a contiguous run, the
 * workgroup scans the 256 run totals, then each thread writes its run.
 */
const SCAN_WGSL = /* wgsl */ `
struct S { len: u32, tq: u32, writeTotal: u32 }
@group(0) @binding(0) var<uniform> s: S;
@group(0) @binding(1) var<storage, read> counts: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;
var<workgroup> runs: array<u32, 256>;

fn f(c: u32) -> u32 { return select(c, (c + s.tq - 1u) / max(s.tq, 1u), s.tq > 0u); }

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let base = wid.x * s.len;
  let per = (s.len + 255u) / 256u;
  let first = min(lid * per, s.len);
  let last = min(first + per, s.len);
  var total = 0u;
  for (var i = first; i < last; i++) { total += f(counts[base + i]); }
  runs[lid] = total;
  workgroupBarrier();
  for (var stride = 1u; stride < 256u; stride *= 2u) { // inclusive scan (Hillis-Steele)
    var add = 0u;
    if (lid >= stride) { add = runs[lid - stride]; }
    workgroupBarrier();
    runs[lid] += add;
    workgroupBarrier();
  }
  var running = runs[lid] - total;
  for (var i = first; i < last; i++) { out[base + i] = running; running += f(counts[base + i]); }
  if (lid == 255u && s.writeTotal == 1u) { out[base + s.len] = runs[255]; }
}
`;

/**
 * One thread per segment (round r, head h, block G): its queries, in tiles of TQ, written as tile
 * descriptors into round r's region of `bound` slots at the segment's tile offset. Slots no
 * segment fills stay zero: tiles of no queries and no keys, which the attention kernels skip.
 */
const GATHERED_TILES_WGSL = /* wgsl */ `
struct T { segments: u32, roundSegments: u32, globalBlocks: u32, tq: u32, bound: u32 }
@group(0) @binding(0) var<uniform> p: T;
@group(0) @binding(1) var<storage, read> counts: array<u32>;          // [segments]
@group(0) @binding(2) var<storage, read> segmentStart: array<u32>;    // [segments + 1]
@group(0) @binding(3) var<storage, read> tileOffset: array<u32>;      // [segments] within the round
@group(0) @binding(4) var<storage, read> blockRange: array<vec2<u32>>; // [globalBlocks] first, end token
@group(0) @binding(5) var<storage, read_write> tiles: array<vec4<u32>>; // [rounds * bound * 2]

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let segment = (wid.x + wid.y * nwg.x) * 64u + lid;
  if (segment >= p.segments) { return; }
  let r = segment / p.roundSegments;
  let h = (segment % p.roundSegments) / p.globalBlocks;
  let range = blockRange[segment % p.globalBlocks];
  let c = counts[segment];
  for (var j = 0u; j * p.tq < c; j++) {
    let slot = r * p.bound + tileOffset[segment] + j;
    tiles[2u * slot] = vec4<u32>(segmentStart[segment] + j * p.tq, min(p.tq, c - j * p.tq), range.x, range.y);
    tiles[2u * slot + 1u] = vec4<u32>(h, 1u, 0u, 0u);
  }
}
`;

export const BLOCK_SUMS = defineKernel<null>({
  name: "blockSums",
  workgroupSize: BLOCK_SUM_THREADS,
  bindings: ["P", "blockRange", "k", "sums"],
  wgsl: () => BLOCK_SUMS_WGSL,
});
export const SCATTER = defineKernel<null>({
  name: "scatter",
  workgroupSize: 64,
  bindings: ["P", "cu", "blockOffsets", "routing", "segmentStart", "cursor", "entries"],
  wgsl: () => SCATTER_WGSL,
});
export const SCAN = defineKernel<null>({ name: "scan", workgroupSize: 256, bindings: ["s", "counts", "out"], wgsl: () => SCAN_WGSL });
export const GATHERED_TILES = defineKernel<null>({
  name: "gatheredTiles",
  workgroupSize: 64,
  bindings: ["p", "counts", "segmentStart", "tileOffset", "blockRange", "tiles"],
  wgsl: () => GATHERED_TILES_WGSL,
});
