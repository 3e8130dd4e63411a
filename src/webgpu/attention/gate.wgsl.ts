// The gate: every query's top-(topK - 1) past blocks by q · (block key sum), on the GPU.
import { defineKernel } from "../kernel.js";
import { PARAMS, SEQUENCE_OF } from "./routing.wgsl.js";

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
  ${
    c.vec4Rows
      ? "return q[row / 4u + c];"
      : `var x = vec4<f32>(0.0);
  for (var i = 0u; i < 4u; i++) { if (4u * c + i < P.headDim) { x[i] = q[row + 4u * c + i]; } }
  return x;`
  }
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

export const GATE = defineKernel<GateShape>({
  name: "gate",
  workgroupSize: 64,
  bindings: ["P", "cu", "blockOffsets", "q", "sums", "routing", "counts"],
  wgsl: gateWgsl,
});
