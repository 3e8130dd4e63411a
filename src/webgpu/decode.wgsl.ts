// WGSL of one-token decoding with the KV cache on the GPU (src/webgpu/decode.ts records them): the
// embedding row, one row's Linear (GEMV; q, k, v in one, gate and up in one, SwiGLU read into the
// down projection), the cache append, completed blocks' key sums, MoBA's gate for the one query,
// and attention over the chosen keys split in chunks (flash-decoding) with the chunks' combine.
// RMSNorm and rotary are the forward's kernels (model.wgsl.ts) at M = 1. Kernels that depend on
// the position read the step's words from `step`: [token, position t, first block to sum, blocks to sum].
import { defineKernel } from "./kernel.js";

const STEP = /* wgsl */ `@group(0) @binding(0) var<storage, read> step: array<u32>; // [token, t, sum first, sum count]`;
const ENTRY = /* wgsl */ `fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32)`;
const ELEMENT = /* wgsl */ `let item = (wg.x + wg.y * groups.x) * 256u + lid;`;

/** x[H] = the token's row of the embedding table. */
export const EMBED_ROW = defineKernel<{ hidden: number }>({
  name: "decodeEmbedRow",
  workgroupSize: 256,
  bindings: ["step", "table", "x"],
  wgsl: (c) => /* wgsl */ `${STEP}
@group(0) @binding(1) var<storage, read> table: array<f32>; // [V, H]
@group(0) @binding(2) var<storage, read_write> x: array<f32>; // [H]
@compute @workgroup_size(256)
${ENTRY} {
  ${ELEMENT}
  if (item < ${c.hidden}u) { x[item] = table[step[0] * ${c.hidden}u + item]; }
}`,
});

/** Rows of y a GEMV workgroup computes, and the lanes that share each row's dot product. */
export const GEMV_ROWS = 8;
const GEMV_LANES = 32;

export interface GemvShape {
  /** Rows of each weight matrix: y is their outputs one after another (q, k, v in one dispatch; gate, up in one). */
  parts: number[];
  K: number;
  /** y += instead of y = (the residual adds). */
  accumulate: boolean;
  /** x holds [gate, up] of K each and the input is SwiGLU's silu(gate) · up (the down projection reads the MLP's gate/up output). */
  swiglu: boolean;
}

/**
 * y = [w₀; w₁; …] · x, one token's Linear over one or more weight matrices (one binding each). A
 * 256-thread workgroup takes 8 rows, 32 lanes per row stride along k (neighbouring lanes read
 * neighbouring weights), and each row's 32 partial sums meet in a tree in workgroup memory.
 */
function gemv(weights: number) {
  const w = Array.from({ length: weights }, (_, i) => `w${i}`);
  return defineKernel<GemvShape>({
    name: `decodeGemv${weights}`,
    workgroupSize: 256,
    bindings: ["x", ...w, "y"],
    wgsl: (c) => {
      if (c.parts.length !== weights) throw new Error(`decodeGemv${weights}: ${c.parts.length} parts`);
      const N = c.parts.reduce((a, b) => a + b, 0);
      // row n of the output is row n − first of the weight matrix whose rows hold it
      let first = 0;
      const rows = w.map((name, i) => {
        const loop = `let r = n - ${first}u;
    for (var k = lane; k < ${c.K}u; k += ${GEMV_LANES}u) { s += input(k) * ${name}[r * ${c.K}u + k]; }`;
        first += c.parts[i];
        return i + 1 < weights ? `if (n < ${first}u) {\n    ${loop}\n  } else ` : `{\n    ${loop}\n  }`;
      });
      return /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>; // [K], or [2, K] gate then up
${w.map((name, i) => `@group(0) @binding(${i + 1}) var<storage, read> ${name}: array<f32>; // [${c.parts[i]}, K]`).join("\n")}
@group(0) @binding(${weights + 1}) var<storage, read_write> y: array<f32>; // [${N}]
var<workgroup> partial: array<f32, 256>;

fn input(k: u32) -> f32 {
  ${c.swiglu ? `let g = x[k];\n  return g / (1.0 + exp(-g)) * x[${c.K}u + k]; // model.wgsl.ts SWIGLU` : "return x[k];"}
}

@compute @workgroup_size(256)
${ENTRY} {
  let n = (wg.x + wg.y * groups.x) * ${GEMV_ROWS}u + lid / ${GEMV_LANES}u;
  let lane = lid % ${GEMV_LANES}u;
  var s = 0.0;
  if (n < ${N}u) {
  ${rows.join("")}
  }
  partial[lid] = s;
  workgroupBarrier();
  for (var stride = ${GEMV_LANES / 2}u; stride > 0u; stride /= 2u) {
    if (lane < stride) { partial[lid] += partial[lid + stride]; }
    workgroupBarrier();
  }
  if (lane == 0u && n < ${N}u) { y[n] = ${c.accumulate ? "y[n] + " : ""}partial[lid]; }
}`;
    },
  });
}

/** GEMV over one, two (gate, up) or three (q, k, v) weight matrices. */
export const GEMV = [gemv(1), gemv(2), gemv(3)] as const;

/** The new token's key (after rotary) and value, at `at` in qkv, into row t of the layer's cache. */
export const APPEND = defineKernel<{ row: number; at: number }>({
  name: "decodeAppend",
  workgroupSize: 256,
  bindings: ["step", "qkv", "cacheK", "cacheV"],
  wgsl: (c) => /* wgsl */ `${STEP}
@group(0) @binding(1) var<storage, read> qkv: array<f32>;          // [qHeads · D + 2 · kvHeads · D] q, k, v
@group(0) @binding(2) var<storage, read_write> cacheK: array<f32>; // [capacity, kvHeads · D]
@group(0) @binding(3) var<storage, read_write> cacheV: array<f32>;
@compute @workgroup_size(256)
${ENTRY} {
  ${ELEMENT}
  if (item < ${c.row}u) {
    cacheK[step[1] * ${c.row}u + item] = qkv[${c.at}u + item];
    cacheV[step[1] * ${c.row}u + item] = qkv[${c.at + c.row}u + item];
  }
}`,
});

/**
 * sums[b] = Σ of block b's keys, for blocks [step[2], step[2] + step[3]): one thread per element,
 * adding the block's keys in token order (float32), so a block's sum is the same bits whether the
 * prompt's fill or the decode step that completes it computes it.
 */
export const BLOCK_SUMS = defineKernel<{ row: number; blockSize: number }>({
  name: "decodeBlockSums",
  workgroupSize: 256,
  bindings: ["step", "cacheK", "sums"],
  wgsl: (c) => /* wgsl */ `${STEP}
@group(0) @binding(1) var<storage, read> cacheK: array<f32>;     // [capacity, kvHeads · D]
@group(0) @binding(2) var<storage, read_write> sums: array<f32>; // [capacity / B, kvHeads · D]
@compute @workgroup_size(256)
${ENTRY} {
  ${ELEMENT}
  if (item >= step[3] * ${c.row}u) { return; }
  let b = step[2] + item / ${c.row}u;
  let i = item % ${c.row}u;
  var s = 0.0;
  for (var t = b * ${c.blockSize}u; t < (b + 1u) * ${c.blockSize}u; t++) { s += cacheK[t * ${c.row}u + i]; }
  sums[b * ${c.row}u + i] = s;
}`,
});

export interface AttentionShape {
  qHeads: number;
  kvHeads: number;
  headDim: number;
  blockSize: number;
  /** Past blocks a MoBA query keeps: topK − 1. */
  width: number;
  /** Full attention: every cached key, no gate. */
  full: boolean;
}

/** Keys one attention chunk (one workgroup) takes. */
export const CHUNK = 256;

/**
 * The keys the query at t attends, the same for every head: with fewer than `width` completed
 * blocks, or in a full-attention layer, all t + 1; else the width routed blocks, then its own
 * block's keys up to t (src/model/decode.ts attendCached).
 */
function keyCount(c: AttentionShape): string {
  return /* wgsl */ `
const B = ${c.blockSize}u;
const WIDTH = ${c.width}u;
const W = ${Math.max(1, c.width)}u; // WGSL has no zero-length arrays
// (routed past blocks, first key of the tail range, keys in all)
fn keys(t: u32) -> vec3u {
  let own = t / B;
  if (${c.full} || own <= WIDTH) { return vec3u(0u, 0u, t + 1u); }
  return vec3u(WIDTH, own * B, WIDTH * B + t + 1u - own * B);
}`;
}

/**
 * MoBA's gate for the one query, a workgroup per query head: scores q · (block sum / B) over the
 * completed blocks (float32, d in order, as routeQuery in float64), then `width` rounds each
 * taking the best block not yet taken, higher score first and the lower block on a tie (so the
 * set is routeQuery's), written ascending into route[h].
 */
export const GATE = defineKernel<AttentionShape & { maxBlocks: number }>({
  name: "decodeGate",
  workgroupSize: 256,
  bindings: ["step", "q", "sums", "scores", "route"],
  wgsl: (c) => /* wgsl */ `${STEP}
@group(0) @binding(1) var<storage, read> q: array<f32>;            // [qHeads, D] after rotary (the start of qkv)
@group(0) @binding(2) var<storage, read> sums: array<f32>;         // [blocks, kvHeads, D]
@group(0) @binding(3) var<storage, read_write> scores: array<f32>; // [qHeads, maxBlocks]
@group(0) @binding(4) var<storage, read_write> route: array<u32>;  // [qHeads, W] chosen blocks, ascending
${keyCount(c)}
const NONE = 0xffffffffu;
var<workgroup> bestScore: array<f32, 256>;
var<workgroup> bestBlock: array<u32, 256>;
var<workgroup> taken: array<u32, W>;

// (s2, b2) ranks before (s1, b1): a block over none, a higher score, the lower block on a tie
fn before(s2: f32, b2: u32, s1: f32, b1: u32) -> bool {
  return b2 != NONE && (b1 == NONE || s2 > s1 || (s2 == s1 && b2 < b1));
}

@compute @workgroup_size(256)
${ENTRY} {
  let h = wg.x;
  let own = step[1] / B;
  if (keys(step[1]).x == 0u) { return; } // every past block is attended: no gate
  let g = h / ${c.qHeads / c.kvHeads}u;
  // each thread scores, and later ranks, the blocks lid, lid + 256, ...: it reads only its own scores
  for (var j = lid; j < own; j += 256u) {
    var s = 0.0;
    for (var d = 0u; d < ${c.headDim}u; d++) { s += q[h * ${c.headDim}u + d] * (sums[(j * ${c.kvHeads}u + g) * ${c.headDim}u + d] / f32(B)); }
    scores[h * ${c.maxBlocks}u + j] = s;
  }
  for (var r = 0u; r < WIDTH; r++) {
    var s1 = 0.0;
    var b1 = NONE;
    for (var j = lid; j < own; j += 256u) {
      var free = true;
      for (var i = 0u; i < r; i++) { free = free && taken[i] != j; }
      let s2 = scores[h * ${c.maxBlocks}u + j];
      if (free && before(s2, j, s1, b1)) { s1 = s2; b1 = j; }
    }
    bestScore[lid] = s1;
    bestBlock[lid] = b1;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride /= 2u) {
      if (lid < stride && before(bestScore[lid + stride], bestBlock[lid + stride], bestScore[lid], bestBlock[lid])) {
        bestScore[lid] = bestScore[lid + stride];
        bestBlock[lid] = bestBlock[lid + stride];
      }
      workgroupBarrier();
    }
    if (lid == 0u) { taken[r] = bestBlock[0]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    for (var r = 0u; r < WIDTH; r++) { // ascending, as routeQuery sorts them
      var rank = 0u;
      for (var i = 0u; i < WIDTH; i++) { rank += select(0u, 1u, taken[i] < taken[r]); }
      route[h * W + rank] = taken[r];
    }
  }
}`,
});

/** Floats per chunk partial: max score, Σ exp, then the D weighted value sums. */
export function partialFloats(headDim: number): number {
  return headDim + 2;
}

/**
 * One workgroup per (query head, chunk of CHUNK attended keys): the chunk's max score m, l = Σ
 * exp(s − m) and acc[d] = Σ exp(s − m) · v[d], one thread per key for the scores, then groups of
 * headDim threads over the keys for acc (their sums meet in a fixed order). The combine merges the chunks.
 */
export const ATTEND = defineKernel<AttentionShape & { maxChunks: number }>({
  name: "decodeAttend",
  workgroupSize: CHUNK,
  bindings: ["step", "q", "cacheK", "cacheV", "route", "partials"],
  wgsl: (c) => {
    const D = c.headDim;
    const groups = Math.max(1, Math.floor(CHUNK / D)); // threads lid < groups · D sum acc, group lid / D taking every groups-th key
    return /* wgsl */ `${STEP}
@group(0) @binding(1) var<storage, read> q: array<f32>;              // [qHeads, D] after rotary (the start of qkv)
@group(0) @binding(2) var<storage, read> cacheK: array<f32>;         // [capacity, kvHeads, D]
@group(0) @binding(3) var<storage, read> cacheV: array<f32>;         // [capacity, kvHeads, D]
@group(0) @binding(4) var<storage, read> route: array<u32>;          // [qHeads, W]
@group(0) @binding(5) var<storage, read_write> partials: array<f32>; // [qHeads, maxChunks, D + 2]
${keyCount(c)}
const D = ${D}u;
const GROUPS = ${groups}u;
var<workgroup> qs: array<f32, D>;
var<workgroup> p: array<f32, ${CHUNK}>;     // exp(s − m) of each key
var<workgroup> row: array<u32, ${CHUNK}>;   // each key's cache row
var<workgroup> red: array<f32, ${Math.max(CHUNK, groups * D)}>;

fn reduce(lid: u32, value: f32, useMax: bool) -> f32 {
  red[lid] = value;
  workgroupBarrier();
  for (var stride = ${CHUNK / 2}u; stride > 0u; stride /= 2u) {
    if (lid < stride) { red[lid] = select(red[lid] + red[lid + stride], max(red[lid], red[lid + stride]), useMax); }
    workgroupBarrier();
  }
  let result = red[0];
  workgroupBarrier();
  return result;
}

@compute @workgroup_size(${CHUNK})
${ENTRY} {
  let item = wg.x + wg.y * groups.x;
  let h = item % ${c.qHeads}u;
  let chunk = item / ${c.qHeads}u;
  let g = h / ${c.qHeads / c.kvHeads}u;
  let n = keys(step[1]);
  let first = chunk * ${CHUNK}u;
  if (first >= n.z) { return; } // the same for the whole workgroup
  let count = min(${CHUNK}u, n.z - first);
  for (var d = lid; d < D; d += ${CHUNK}u) { qs[d] = q[h * D + d]; }
  workgroupBarrier();
  // key j of the head's list: the routed blocks' keys, then the tail [n.y, t]
  let j = first + lid;
  var s = -3.4e38;
  if (lid < count) {
    var r = n.y + j - n.x * B;
    if (j < n.x * B) { r = route[h * W + j / B] * B + j % B; }
    row[lid] = r * ${c.kvHeads}u + g;
    var dot = 0.0;
    for (var d = 0u; d < D; d++) { dot += qs[d] * cacheK[row[lid] * D + d]; }
    s = dot * ${1 / Math.sqrt(D)};
  }
  let m = reduce(lid, s, true);
  let e = select(0.0, exp(s - m), lid < count);
  p[lid] = e;
  let l = reduce(lid, e, false); // its barriers publish p and row
  if (lid < GROUPS * D) {
    let d = lid % D;
    var acc = 0.0;
    for (var i = lid / D; i < count; i += GROUPS) { acc += p[i] * cacheV[row[i] * D + d]; }
    red[lid] = acc;
  }
  workgroupBarrier();
  let out = (h * ${c.maxChunks}u + chunk) * (D + 2u);
  if (lid == 0u) {
    partials[out] = m;
    partials[out + 1u] = l;
  }
  for (var d = lid; d < D; d += ${CHUNK}u) {
    var acc = 0.0;
    for (var i = 0u; i < GROUPS; i++) { acc += red[i * D + d]; }
    partials[out + 2u + d] = acc;
  }
}`;
  },
});

/** One workgroup per query head, a thread per dimension: out = Σ_chunks e^(m − M) acc / Σ_chunks e^(m − M) l, M the largest m. */
export const COMBINE = defineKernel<AttentionShape & { maxChunks: number }>({
  name: "decodeCombine",
  workgroupSize: 64,
  bindings: ["step", "partials", "out"],
  wgsl: (c) => /* wgsl */ `${STEP}
@group(0) @binding(1) var<storage, read> partials: array<f32>; // [qHeads, maxChunks, D + 2]
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [qHeads, D]
${keyCount(c)}
const D = ${c.headDim}u;
@compute @workgroup_size(64)
${ENTRY} {
  let h = wg.x;
  let chunks = (keys(step[1]).z + ${CHUNK - 1}u) / ${CHUNK}u;
  let base = h * ${c.maxChunks}u * (D + 2u);
  var M = -3.4e38;
  for (var i = 0u; i < chunks; i++) { M = max(M, partials[base + i * (D + 2u)]); }
  var L = 0.0;
  for (var i = 0u; i < chunks; i++) { L += exp(partials[base + i * (D + 2u)] - M) * partials[base + i * (D + 2u) + 1u]; }
  for (var d = lid; d < D; d += 64u) {
    var acc = 0.0;
    for (var i = 0u; i < chunks; i++) { acc += exp(partials[base + i * (D + 2u)] - M) * partials[base + i * (D + 2u) + 2u + d]; }
    out[h * D + d] = acc / L;
  }
}`,
});
