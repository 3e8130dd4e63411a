// WGSL of the tensor-core forward (f16 operands, f32 accumulation, subgroup matrices of 16x16x16).
// Same tiles, bindings and round protocol as the float32 forward in attention.wgsl.ts: a workgroup
// takes TQ queries of one head (consecutive or gathered) against the key range [keyStart, keyEnd)
// in chunks of TK keys, causal mask always on, (acc, m, l) kept in global memory between rounds.
//
// Per chunk, with 4 subgroups of 32 (NVIDIA):
//   1. stage K (f16) in workgroup memory;
//   2. S = Q Kᵀ on subgroup matrices, stored as f32;
//   3. stage V over K (S no longer needs K) while each subgroup runs the online softmax of its rows:
//      mask, row max and sum by subgroup reductions, P = exp(S − m) rounded to f16, O rows × alpha;
//   4. O += P V on subgroup matrices, O loaded from and stored to workgroup memory as f32.
// WGSL cannot scale a subgroup matrix row by row, so O lives in workgroup memory between steps 3 and 4.
// The only rounding beyond float32 is P to f16 (q, k, v are f16 already): out's error is about
// f16's unit roundoff (2^-11) relative, lse stays at float32 accuracy.

export interface MmaShape {
  headDim: number; // a multiple of 16
  TQ: number; // queries per tile, a multiple of 16
  TK: number; // keys per chunk, a multiple of 16
}

export const MMA_THREADS = 128;
const M = 16; // the subgroup matrix side

/** Workgroup bytes of a shape: Q and one K/V chunk (f16, rows padded by 8), S (f32) and P (f16), O (f32), row state. */
export function mmaSharedBytes(c: MmaShape): number {
  const D = c.headDim;
  return (c.TQ + c.TK) * (D + 8) * 2 + c.TQ * (c.TK + 4) * 4 + c.TQ * (c.TK + 8) * 2 + c.TQ * (D + 4) * 4 + c.TQ * 12;
}

/** Stages rows [k0, min(k0 + TK, end)) of kv head g of `src` into KVs as f16 (zeros past end): loads first, stores after `between`. */
function stageKeys(src: string, between = ""): string {
  return `{
      var staged: array<vec4<f16>, STAGE>;
      for (var i = 0u; i < STAGE; i++) {
        let e = lid + i * THREADS;
        let key = k0 + e / D4;
        staged[i] = vec4<f16>(0.0);
        if (e < TK * D4 && key < a.w) { staged[i] = ${src}[(key * P.kvHeads + g) * D4 + e % D4]; }
      }
      ${between}
      for (var i = 0u; i < STAGE; i++) {
        let e = lid + i * THREADS;
        if (e < TK * D4) {
          let at = (e / D4) * QS + (e % D4) * 4u;
          KVs[at] = staged[i].x; KVs[at + 1u] = staged[i].y; KVs[at + 2u] = staged[i].z; KVs[at + 3u] = staged[i].w;
        }
      }
    }`;
}

export function forwardMmaWgsl(c: MmaShape): string {
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
const TQ = ${c.TQ}u;
const TK = ${c.TK}u;
const THREADS = ${MMA_THREADS}u;
const STAGE = ${Math.ceil((c.TK * D) / 4 / MMA_THREADS)}u; // vec4 loads per thread per K or V chunk
// padded row strides (elements): consecutive rows start 16 bytes apart in the banks
const QS = ${D + 8}u;  // Qs and KVs, f16
const SS = ${c.TK + 4}u;  // Ss, f32
const PS = ${c.TK + 8}u;  // Ps, f16
const OS = ${D + 4}u;  // Os, f32
const MASKED = -3.0e38;
const VISIBLE = -1.0e38;

struct Params {
  qHeads: u32, kvHeads: u32, tiles: u32, loadState: u32,
  finalize: u32, width: u32, globalBlocks: u32, scale: f32,
  headDim: u32, tq: u32, tk: u32, perThread: u32,
  segments: u32, dvOffset: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> tiles: array<vec4<u32>>; // 2 per tile: (queryStart, count, keyStart, keyEnd), (head, gathered, -, -)
@group(0) @binding(2) var<storage, read> entries: array<u32>;    // gathered query lists
@group(0) @binding(3) var<storage, read> q: array<vec4<f16>>;    // [tokens, qHeads, D/4]
@group(0) @binding(4) var<storage, read> k: array<vec4<f16>>;    // [tokens, kvHeads, D/4]
@group(0) @binding(5) var<storage, read> v: array<vec4<f16>>;    // [tokens, kvHeads, D/4]
@group(0) @binding(6) var<storage, read_write> out: array<vec4<f32>>; // [tokens, qHeads, D/4] acc, or out when finalizing
@group(0) @binding(7) var<storage, read_write> ml: array<vec2<f32>>;  // [tokens, qHeads] running (max, sum)
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;       // [tokens, qHeads] when finalizing

var<workgroup> Qs: array<f16, ${c.TQ * (D + 8)}>;
var<workgroup> KVs: array<f16, ${c.TK * (D + 8)}>;  // the chunk's keys, then its values
var<workgroup> Ss: array<f32, ${c.TQ * (c.TK + 4)}>;
var<workgroup> Ps: array<f16, ${c.TQ * (c.TK + 8)}>;
var<workgroup> Os: array<f32, ${c.TQ * (D + 4)}>;
var<workgroup> rowToken: array<u32, ${c.TQ}>;
var<workgroup> rowM: array<f32, ${c.TQ}>;
var<workgroup> rowL: array<f32, ${c.TQ}>;

alias Left = subgroup_matrix_left<f16, ${M}, ${M}>;
alias Right = subgroup_matrix_right<f16, ${M}, ${M}>;
alias Result = subgroup_matrix_result<f32, ${M}, ${M}>;

@compute @workgroup_size(${MMA_THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32, @builtin(subgroup_size) sgSize: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= P.tiles) { return; }
  let a = tiles[2u * tile];
  let b = tiles[2u * tile + 1u];
  let count = a.y;
  let h = b.x;
  let g = h / (P.qHeads / P.kvHeads);
  let subgroups = THREADS / sgSize;
  if (lid < TQ) {
    var token = 0u;
    if (lid < count) {
      token = a.x + lid;
      if (b.y == 1u) { token = entries[a.x + lid]; }
    }
    rowToken[lid] = token;
    var state = vec2<f32>(MASKED, 0.0);
    if (P.loadState == 1u && lid < count) { state = ml[token * P.qHeads + h]; }
    rowM[lid] = state.x;
    rowL[lid] = state.y;
  }
  workgroupBarrier();
  // query rows as f16; the accumulator from the previous round (or zero) as f32
  for (var e = lid; e < TQ * D4; e += THREADS) {
    let r = e / D4;
    let col = (e % D4) * 4u;
    var x = vec4<f16>(0.0);
    var o = vec4<f32>(0.0);
    if (r < count) {
      let row = rowToken[r] * P.qHeads + h;
      x = q[row * D4 + e % D4];
      if (P.loadState == 1u) { o = out[row * D4 + e % D4]; }
    }
    let at = r * QS + col;
    Qs[at] = x.x; Qs[at + 1u] = x.y; Qs[at + 2u] = x.z; Qs[at + 3u] = x.w;
    let ot = r * OS + col;
    Os[ot] = o.x; Os[ot + 1u] = o.y; Os[ot + 2u] = o.z; Os[ot + 3u] = o.w;
  }
  for (var k0 = a.z; k0 < a.w; k0 += TK) {
    workgroupBarrier(); // the previous chunk's P V is done with KVs and Ps
    ${stageKeys("k")}
    workgroupBarrier();
    // S = Q Kᵀ, one 16x16 tile of S per subgroup at a time
    for (var t = sg; t < (TQ / ${M}u) * (TK / ${M}u); t += subgroups) {
      let i = t / (TK / ${M}u);
      let j = t % (TK / ${M}u);
      var s = Result();
      for (var d = 0u; d < D; d += ${M}u) {
        let ql = subgroupMatrixLoad<Left>(&Qs, i * ${M}u * QS + d, false, QS);
        let kr = subgroupMatrixLoad<Right>(&KVs, j * ${M}u * QS + d, true, QS);
        s = subgroupMatrixMultiplyAccumulate(ql, kr, s);
      }
      subgroupMatrixStore(&Ss, i * ${M}u * SS + j * ${M}u, s, false, SS);
    }
    workgroupBarrier();
    ${stageKeys("v", `// online softmax while the value loads are in flight: subgroup sg owns rows sg, sg + subgroups, ...
      for (var r = sg; r < TQ; r += subgroups) {
        let token = rowToken[r];
        var localMax = MASKED;
        for (var col = lane; col < TK; col += sgSize) {
          let key = k0 + col;
          var x = MASKED;
          if (r < count && key < a.w && key <= token) { x = P.scale * Ss[r * SS + col]; }
          Ss[r * SS + col] = x;
          localMax = max(localMax, x);
        }
        let mOld = rowM[r];
        let mNew = max(mOld, subgroupMax(localMax));
        var localSum = 0.0;
        for (var col = lane; col < TK; col += sgSize) {
          let x = Ss[r * SS + col];
          var p = 0.0;
          if (x > VISIBLE) { p = exp(x - mNew); }
          Ps[r * PS + col] = f16(p);
          localSum += p;
        }
        let alpha = exp(mOld - mNew);
        let sum = subgroupAdd(localSum);
        if (lane == 0u) {
          rowM[r] = mNew;
          rowL[r] = rowL[r] * alpha + sum;
        }
        for (var col = lane; col < D; col += sgSize) { Os[r * OS + col] *= alpha; }
      }`)}
    workgroupBarrier();
    // O += P V, one 16x16 tile of O per subgroup at a time
    for (var t = sg; t < (TQ / ${M}u) * (D / ${M}u); t += subgroups) {
      let i = t / (D / ${M}u);
      let j = t % (D / ${M}u);
      var o = subgroupMatrixLoad<Result>(&Os, i * ${M}u * OS + j * ${M}u, false, OS);
      for (var kk = 0u; kk < TK; kk += ${M}u) {
        let pl = subgroupMatrixLoad<Left>(&Ps, i * ${M}u * PS + kk, false, PS);
        let vr = subgroupMatrixLoad<Right>(&KVs, kk * QS + j * ${M}u, false, QS);
        o = subgroupMatrixMultiplyAccumulate(pl, vr, o);
      }
      subgroupMatrixStore(&Os, i * ${M}u * OS + j * ${M}u, o, false, OS);
    }
  }
  workgroupBarrier();
  for (var e = lid; e < TQ * D4; e += THREADS) {
    let r = e / D4;
    if (r < count) {
      let ot = r * OS + (e % D4) * 4u;
      let o = vec4<f32>(Os[ot], Os[ot + 1u], Os[ot + 2u], Os[ot + 3u]);
      out[(rowToken[r] * P.qHeads + h) * D4 + e % D4] = select(o, o / rowL[r], P.finalize == 1u);
    }
  }
  if (lid < count) {
    let row = rowToken[lid] * P.qHeads + h;
    if (P.finalize == 1u) { lse[row] = rowM[lid] + log(rowL[lid]); } else { ml[row] = vec2<f32>(rowM[lid], rowL[lid]); }
  }
}
`;
}

/** f32 -> f16, two elements per thread (the last pair padded with zero). */
export const TO_F16 = /* wgsl */ `enable f16;
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f16>>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * nwg.x) * 64u + lid;
  if (2u * i >= P.n) { return; }
  var second = 0.0;
  if (2u * i + 1u < P.n) { second = x[2u * i + 1u]; }
  y[i] = vec2<f16>(f16(x[2u * i]), f16(second));
}
`;
