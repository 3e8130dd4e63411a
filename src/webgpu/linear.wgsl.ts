// WGSL for the Linear layer's GEMM: y[M, N] (+)= A · B with A stored as [M, K] or [K, M] and B as
// [N, K] or [K, N], so the forward (x · wᵀ) and both backward products (dy · w, dyᵀ · x) are one
// kernel. Each 256-thread workgroup computes a 64×64 tile of y, 4×4 per thread, staging 16-deep
// slices of A and B in workgroup memory. Plain f32: runs on every adapter.
import type { Kernel } from "./kernel.js";

export interface GemmConstants {
  /** A is stored [K, M] (transposed) instead of [M, K]. */
  aTransposed: boolean;
  /** B is stored [K, N] instead of [N, K]. */
  bTransposed: boolean;
  /** y += A · B instead of y = A · B. */
  accumulate: boolean;
  /** y = residual + A · B from a fifth binding residual[M, N] (the residual stream's add); not with accumulate. */
  residual: boolean;
  /** Round A and B to f16 as they are staged (the f16 path on devices without subgroup matrices). */
  f16Operands: boolean;
}

export const TILE = 64;

// Rounds to the nearest f16 value (ties to even) on the float32 bits: lavapipe folds f32(f16(x)) and
// unpack2x16float(pack2x16float(x)) back to x. Exact for |x| in f16's normal range, as
// roundToF16 in src/io/half.ts; below it (|x| < 2^-14) it keeps 10 mantissa bits where f16 keeps
// fewer (an absolute difference under 2^-25); it never overflows to inf.
const ROUND_TO_F16 = `
fn toF16(x: f32) -> f32 {
  let b = bitcast<u32>(x);
  return bitcast<f32>((b + 0xfffu + ((b >> 13u) & 1u)) & 0xffffe000u);
}`;
const DEPTH = 16;

/** Reads of one operand tile into workgroup memory ([DEPTH][TILE], row index = depth), coalesced along whichever index is contiguous. */
function stage(name: string, shared: string, rows: string, transposed: boolean, f16Operands: boolean): string {
  // stored [rows, K]: consecutive threads walk k; stored [K, rows]: consecutive threads walk the row index
  const split = transposed ? `let r = e % ${TILE}u; let d = e / ${TILE}u;` : `let d = e % ${DEPTH}u; let r = e / ${DEPTH}u;`;
  const index = transposed ? `(k0 + d) * shape.${rows} + ${name}0 + r` : `(${name}0 + r) * shape.K + k0 + d`;
  return `
    for (var i = 0u; i < ${(TILE * DEPTH) / 256}u; i++) {
      let e = lid + i * 256u;
      ${split}
      var value = 0.0;
      if (${name}0 + r < shape.${rows} && k0 + d < shape.K) { value = ${name === "m" ? "a" : "b"}[${index}]; }
      ${shared}[d * ${TILE}u + r] = ${f16Operands ? "toF16(value)" : "value"};
    }`;
}

export const GEMM: Kernel<GemmConstants> = {
  name: "gemm",
  workgroupSize: 256,
  key: (c) => `${+c.aTransposed}${+c.bTransposed}${+c.accumulate}${c.residual ? "r" : ""}${c.f16Operands ? "h" : ""}`,
  wgsl: (c) => `${c.f16Operands ? ROUND_TO_F16 : ""}
struct Shape { M: u32, N: u32, K: u32, tilesN: u32 }
@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<uniform> shape: Shape;${c.residual ? "\n@group(0) @binding(4) var<storage, read> residual: array<f32>; // [M, N]: y = residual + A · B" : ""}
var<workgroup> As: array<f32, ${TILE * DEPTH}>; // [DEPTH][TILE]
var<workgroup> Bs: array<f32, ${TILE * DEPTH}>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tile = wg.x + wg.y * groups.x;
  let m0 = (tile / shape.tilesN) * ${TILE}u;
  let n0 = (tile % shape.tilesN) * ${TILE}u;
  if (m0 >= shape.M) { return; } // the grid's spill-over workgroups (uniform per workgroup)
  // threads own rows ty + 16r and columns tx + 16c: neighbours read neighbouring words
  let tx = lid % 16u;
  let ty = lid / 16u;
  var acc: array<f32, 16>;
  for (var k0 = 0u; k0 < shape.K; k0 += ${DEPTH}u) {${stage("m", "As", "M", c.aTransposed, c.f16Operands)}${stage("n", "Bs", "N", c.bTransposed, c.f16Operands)}
    workgroupBarrier();
    for (var d = 0u; d < ${DEPTH}u; d++) {
      var av: array<f32, 4>;
      var bv: array<f32, 4>;
      for (var r = 0u; r < 4u; r++) { av[r] = As[d * ${TILE}u + ty + 16u * r]; bv[r] = Bs[d * ${TILE}u + tx + 16u * r]; }
      for (var r = 0u; r < 4u; r++) { for (var q = 0u; q < 4u; q++) { acc[r * 4u + q] += av[r] * bv[q]; } }
    }
    workgroupBarrier();
  }
  for (var r = 0u; r < 4u; r++) {
    let m = m0 + ty + 16u * r;
    for (var q = 0u; q < 4u; q++) {
      let n = n0 + tx + 16u * q;
      if (m < shape.M && n < shape.N) { y[m * shape.N + n] = ${c.accumulate ? "y[m * shape.N + n] + " : c.residual ? "residual[m * shape.N + n] + " : ""}acc[r * 4u + q]; }
    }
  }
}
`,
};
