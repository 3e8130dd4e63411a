// WGSL of MoBA routing: block key sums, gate + top-k + histogram, prefix sums, scatter into the
// inverted index, and the gathered query tiles of every round — all on the GPU, so the forward
// never waits for the host between routing and attention.
// Scores rank blocks by q · sum(keys) (float32): past blocks are complete, so dividing by
// blockSize changes no order and the sum keeps more exact bits than the mean.

const PARAMS = /* wgsl */ `
struct Params {
  tokens: u32, qHeads: u32, kvHeads: u32, headDim: u32,
  blockSize: u32, width: u32, globalBlocks: u32, batch: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
`;

/** The sequence b holding token t: the largest b with cu[b] <= t (empty sequences are skipped). */
const SEQUENCE_OF = /* wgsl */ `fn sequenceOf(t: u32) -> u32 {
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
export const BLOCK_SUMS = /* wgsl */ `${PARAMS}@group(0) @binding(1) var<storage, read> blockRange: array<vec2<u32>>; // [globalBlocks] first, end token
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

/** Blocks whose key sums a gate workgroup stages in workgroup memory at a time. */
const GATE_CHUNK = 16;

/** The gate's compile-time shape: routed blocks per query, the head dimension (it sizes the staged sums), whether q rows are read as vec4 (headDim a multiple of 4). */
export interface GateShape {
  width: number;
  headDim: number;
  vec4Rows: boolean;
}

/**
 * Gate scores, top-(topK - 1) by insertion, ascending sort, histogram. A workgroup takes 64
 * consecutive tokens of one query head: they share the kv head and (mostly) the sequence, so it
 * stages the key sums of GATE_CHUNK blocks at a time in workgroup memory, over the union of its
 * tokens' past blocks, and each thread scores its own token against them, q read once per chunk,
 * four dimensions per workgroup-memory read. Each thread keeps its top-k in its own arrays (the
 * width is compiled in), so routing is written once per token. Ties go to the lower block.
 */
export function gateWgsl(c: GateShape): string {
  const W = Math.max(1, c.width); // WGSL has no zero-length arrays; width 0 never scores
  return /* wgsl */ `${PARAMS}
@group(0) @binding(1) var<storage, read> cu: array<u32>;              // [batch + 1]
@group(0) @binding(2) var<storage, read> blockOffsets: array<u32>;    // [batch + 1]
@group(0) @binding(3) var<storage, read> q: array<${c.vec4Rows ? "vec4<f32>" : "f32"}>; // [tokens, qHeads, headDim]
@group(0) @binding(4) var<storage, read> sums: array<f32>;            // [globalBlocks, kvHeads, headDim]
@group(0) @binding(5) var<storage, read_write> routing: array<u32>;   // [tokens, qHeads, width]
@group(0) @binding(6) var<storage, read_write> counts: array<atomic<u32>>; // [width, qHeads, globalBlocks]

const CHUNK = ${GATE_CHUNK}u;
const WIDTH = ${W}u;
var<workgroup> staged: array<vec4<f32>, ${GATE_CHUNK * Math.ceil(c.headDim / 4)}>; // [CHUNK, ⌈headDim / 4⌉] key sums, zero-padded (sized to headDim: more workgroups fit)
var<workgroup> lowest: atomic<u32>;  // first global block any token of the workgroup scores
var<workgroup> highest: atomic<u32>; // one past the last
var<workgroup> range: vec2<u32>;     // (lowest, highest), read uniformly

${SEQUENCE_OF}

// elements d..d+3 of the sums row at \`row\` (zeros past headDim)
fn sums4(row: u32, d: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) { if (d + i < P.headDim) { x[i] = sums[row + d + i]; } }
  return x;
}

// elements 4c..4c+3 of q's row starting at element \`row\` (zeros past headDim)
fn q4(row: u32, c: u32) -> vec4<f32> {
  ${c.vec4Rows ? "return q[row / 4u + c];" : `var x = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) { if (4u * c + i < P.headDim) { x[i] = q[row + 4u * c + i]; } }
  return x;`}
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let tilesPerHead = (P.tokens + 63u) / 64u;
  let item = wid.x + wid.y * nwg.x;
  if (item >= tilesPerHead * P.qHeads) { return; }
  let h = item / tilesPerHead;
  let t = (item % tilesPerHead) * 64u + lid;
  let g = h / (P.qHeads / P.kvHeads);
  if (lid == 0u) {
    atomicStore(&lowest, 0xffffffffu);
    atomicStore(&highest, 0u);
  }
  workgroupBarrier();
  var i = 0u;     // the token's block in its sequence
  var first = 0u; // global index of its sequence's first block
  var row = 0u;
  var scoring = false;
  if (t < P.tokens) {
    let b = sequenceOf(t);
    i = (t - cu[b]) / P.blockSize;
    first = blockOffsets[b];
    row = (t * P.qHeads + h) * P.width;
    if (i <= P.width) {
      for (var j = 0u; j < i; j++) { routing[row + j] = j; }
    } else if (P.width > 0u) { // topK = 1 keeps the own block only
      scoring = true;
      atomicMin(&lowest, first);
      atomicMax(&highest, first + i);
    }
  }
  workgroupBarrier();
  if (lid == 0u) { range = vec2<u32>(atomicLoad(&lowest), atomicLoad(&highest)); }
  let blocks = workgroupUniformLoad(&range);
  let D4 = (P.headDim + 3u) / 4u;
  // the token's best blocks so far, best first
  var best: array<f32, WIDTH>;
  var chosen: array<u32, WIDTH>;
  var count = 0u;
  var acc: array<f32, CHUNK>;
  for (var G0 = blocks.x; G0 < blocks.y; G0 += CHUNK) {
    for (var e = lid; e < CHUNK * D4; e += 64u) {
      let G = G0 + e / D4;
      var x = vec4<f32>(0.0);
      if (G < blocks.y) { x = sums4((G * P.kvHeads + g) * P.headDim, 4u * (e % D4)); }
      staged[e] = x;
    }
    workgroupBarrier();
    if (scoring && G0 < first + i && G0 + CHUNK > first) {
      // zeroed here, every chunk: a var declared in a loop kept its last value on lavapipe
      for (var j = 0u; j < CHUNK; j++) { acc[j] = 0.0; }
      let at = (t * P.qHeads + h) * P.headDim;
      for (var c = 0u; c < D4; c++) {
        let x = q4(at, c);
        for (var j = 0u; j < CHUNK; j++) { acc[j] += dot(x, staged[j * D4 + c]); }
      }
      for (var j = 0u; j < CHUNK; j++) {
        let G = G0 + j;
        if (G < first || G >= first + i) { continue; }
        let score = acc[j];
        // a later block never passes an equal score: ties go to the lower index
        if (count == P.width && !(score > best[count - 1u])) { continue; }
        var slot = count;
        if (count < P.width) { count++; } else { slot = count - 1u; }
        while (slot > 0u && score > best[slot - 1u]) {
          best[slot] = best[slot - 1u];
          chosen[slot] = chosen[slot - 1u];
          slot--;
        }
        best[slot] = score;
        chosen[slot] = G - first;
      }
    }
    workgroupBarrier();
  }
  if (t >= P.tokens) { return; }
  let n = min(i, P.width); // a scoring token has chosen exactly n = width blocks
  if (scoring) {
    // ascending block order
    for (var a = 1u; a < n; a++) {
      let x = chosen[a];
      var c = a;
      while (c > 0u && chosen[c - 1u] > x) { chosen[c] = chosen[c - 1u]; c--; }
      chosen[c] = x;
    }
    for (var r = 0u; r < n; r++) { routing[row + r] = chosen[r]; }
  }
  for (var r = 0u; r < n; r++) {
    var block = r;
    if (scoring) { block = chosen[r]; }
    atomicAdd(&counts[(r * P.qHeads + h) * P.globalBlocks + first + block], 1u);
  }
}
`;
}

/** One thread per (token, query head): each routed block's query list gets the token (CSR by round, head, block). */
export const SCATTER = /* wgsl */ `
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
export const SCAN = /* wgsl */ `
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
export const GATHERED_TILES = /* wgsl */ `
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
