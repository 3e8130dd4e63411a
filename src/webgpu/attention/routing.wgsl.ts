// WGSL of MoBA routing: block key sums, gate + top-k + histogram, scatter into the inverted index.
// Scores rank blocks by q · sum(keys) (float32): past blocks are complete, so dividing by
// blockSize changes no order and the sum keeps more exact bits than the mean.

const PARAMS = /* wgsl */ `
struct Params {
  tokens: u32, qHeads: u32, kvHeads: u32, headDim: u32,
  blockSize: u32, width: u32, globalBlocks: u32, batch: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
`;

/** Parameters, sequenceOf, and an entry point with one thread per (token t, query head h) at `index`. */
const ROUTING_COMMON = /* wgsl */ `${PARAMS}
// the sequence b holding token t: the largest b with cu[b] <= t (empty sequences are skipped)
fn sequenceOf(t: u32) -> u32 {
  var lo = 0u;
  var hi = P.batch;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (cu[mid] <= t) { lo = mid; } else { hi = mid; }
  }
  return lo;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let index = (wid.x + wid.y * nwg.x) * 64u + lid;
  if (index >= P.tokens * P.qHeads) { return; }
  let t = index / P.qHeads;
  let h = index % P.qHeads;`;

/** One workgroup per (global block, kv head): the sum of the block's keys. */
export const BLOCK_SUMS = /* wgsl */ `${PARAMS}@group(0) @binding(1) var<storage, read> blockRange: array<vec2<u32>>; // [globalBlocks] first, end token
@group(0) @binding(2) var<storage, read> k: array<f32>;               // [tokens, kvHeads, headDim]
@group(0) @binding(3) var<storage, read_write> sums: array<f32>;      // [globalBlocks, kvHeads, headDim]

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let item = wid.x + wid.y * nwg.x;
  if (item >= P.globalBlocks * P.kvHeads) { return; }
  let G = item / P.kvHeads;
  let g = item % P.kvHeads;
  let range = blockRange[G];
  for (var d = lid; d < P.headDim; d += 64u) {
    var s = 0.0;
    for (var t = range.x; t < range.y; t++) { s += k[(t * P.kvHeads + g) * P.headDim + d]; }
    sums[item * P.headDim + d] = s;
  }
}
`;

/** One thread per (token, query head): gate scores, top-(topK - 1) by insertion, ascending sort, histogram. */
export const GATE = /* wgsl */ `
@group(0) @binding(1) var<storage, read> cu: array<u32>;              // [batch + 1]
@group(0) @binding(2) var<storage, read> blockOffsets: array<u32>;    // [batch + 1]
@group(0) @binding(3) var<storage, read> q: array<f32>;               // [tokens, qHeads, headDim]
@group(0) @binding(4) var<storage, read> sums: array<f32>;            // [globalBlocks, kvHeads, headDim]
@group(0) @binding(5) var<storage, read_write> routing: array<u32>;   // [tokens, qHeads, width]
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;    // [tokens, qHeads, width] scratch
@group(0) @binding(7) var<storage, read_write> counts: array<atomic<u32>>; // [width, qHeads, globalBlocks]
${ROUTING_COMMON}
  let g = h / (P.qHeads / P.kvHeads);
  let b = sequenceOf(t);
  let i = (t - cu[b]) / P.blockSize;
  let first = blockOffsets[b];
  let row = index * P.width;
  let n = min(i, P.width);
  if (i <= P.width) {
    for (var j = 0u; j < i; j++) { routing[row + j] = j; }
  } else if (P.width > 0u) { // topK = 1 keeps the own block only
    var count = 0u;
    for (var j = 0u; j < i; j++) {
      var score = 0.0;
      let m = ((first + j) * P.kvHeads + g) * P.headDim;
      for (var d = 0u; d < P.headDim; d++) { score += q[index * P.headDim + d] * sums[m + d]; }
      // a later block never passes an equal score: ties go to the lower index
      if (count == P.width && !(score > scores[row + count - 1u])) { continue; }
      var at = count;
      if (count < P.width) { count++; } else { at = count - 1u; }
      while (at > 0u && score > scores[row + at - 1u]) {
        scores[row + at] = scores[row + at - 1u];
        routing[row + at] = routing[row + at - 1u];
        at--;
      }
      scores[row + at] = score;
      routing[row + at] = j;
    }
    // ascending block order
    for (var a = 1u; a < n; a++) {
      let x = routing[row + a];
      var c = a;
      while (c > 0u && routing[row + c - 1u] > x) { routing[row + c] = routing[row + c - 1u]; c--; }
      routing[row + c] = x;
    }
  }
  for (var r = 0u; r < n; r++) {
    atomicAdd(&counts[(r * P.qHeads + h) * P.globalBlocks + first + routing[row + r]], 1u);
  }
}
`;

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
