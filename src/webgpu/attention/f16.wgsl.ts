// f16 copies of f32 buffers: plain ([tokens, heads, D], the f16 path's q, dout and, without tensor
// cores, k and v) and tiled (the layout the tensor-core kernels read k and v in).
import { defineKernel } from "../kernel.js";
import { each } from "./mma.wgsl.js";

/** Elements each workgroup of TO_F16 converts: 256 threads, 4 pairs each (fewer, larger workgroups run nearer the copy bandwidth). */
export const TO_F16_ELEMENTS = 2048;

/** f32 -> f16 in pairs, each thread 4 pairs 256 apart (coalesced); an odd last element is paired with zero. */
const TO_F16_WGSL = /* wgsl */ `enable f16;
struct Params { n: u32, pad0: u32, pad1: u32, pad2: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f16>>;

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = (wid.x + wid.y * nwg.x) * 1024u + lid;
  for (var j = 0u; j < 4u; j++) {
    let i = first + j * 256u;
    if (2u * i >= P.n) { return; }
    var second = 0.0;
    if (2u * i + 1u < P.n) { second = x[2u * i + 1u]; }
    y[i] = vec2<f16>(f16(x[2u * i]), f16(second));
  }
}
`;

/**
 * f32 (or f16: `input`) [tokens, heads, D] -> f16 tiles [heads, mmaKeyTiles(tokens), D / 16, 16, 16], the layout the
 * tensor-core kernels read k and v in: tile (key / 16, d / 16) holds its 16 keys x 16 columns row by
 * row, as [key][d], or transposed, [d][key] (P.transpose = 1); keys past the tokens are zero. One
 * workgroup per 16 keys of one head: 16 rows of D read along D, and the D / 16 tiles, which follow
 * one another in the copy, written as one run of 16 D elements. Both loops are unrolled here, so
 * each thread's loads are all in flight at once (as a loop over a runtime D they ran one after
 * another: 32K x 8 heads took 0.15 ms, under half the copy bandwidth).
 */
export function toF16TiledWgsl(headDim: number, input: "f32" | "f16"): string {
  const D = headDim;
  const zero = input === "f32" ? "0.0" : "f16()";
  const stride = D + 2; // rows D + 2 apart: a transposed read (16 keys, one column) hits 16 banks
  return /* wgsl */ `enable f16;
struct Params { tokens: u32, heads: u32, transpose: u32, keyTiles: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> x: array<${input}>;
@group(0) @binding(2) var<storage, read_write> y: array<vec2<f16>>;
const D = ${D}u;
const STRIDE = ${stride}u;
var<workgroup> rows: array<f16, ${16 * stride}>; // [key][d] of the 16 keys

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let index = wid.x + wid.y * nwg.x;
  let h = index % P.heads;
  let keyTile = index / P.heads;
  if (keyTile >= P.keyTiles) { return; }
  ${each(
    (16 * D) / 256,
    (i) => `{
    let e = lid + ${i * 256}u;
    let key = keyTile * 16u + e / D;
    var value = ${zero};
    if (key < P.tokens) { value = x[(key * P.heads + h) * D + e % D]; }
    rows[(e / D) * STRIDE + e % D] = f16(value);
  }`,
  ).join("\n  ")}
  workgroupBarrier();
  // pairs of the run: element e is (row e % 256 / 16, column e % 16) of tile e / 256
  ${each(
    Math.ceil((8 * D) / 256),
    (i) => `{
    let pair = lid + ${i * 256}u;
    let e = 2u * pair;
    let column = (e / 256u) * 16u;
    let row = (e % 256u) / 16u;
    let col = e % 16u;
    var value: vec2<f16>;
    if (P.transpose == 1u) {
      value = vec2<f16>(rows[col * STRIDE + column + row], rows[(col + 1u) * STRIDE + column + row]);
    } else {
      value = vec2<f16>(rows[row * STRIDE + column + col], rows[row * STRIDE + column + col + 1u]);
    }
    if (pair < 8u * D) { y[(h * P.keyTiles + keyTile) * 8u * D + pair] = value; }
  }`,
  ).join("\n  ")}
}
`;
}

export const TO_F16 = defineKernel<null>({ name: "toF16", workgroupSize: 256, bindings: ["P", "x", "y"], wgsl: () => TO_F16_WGSL });
export const TO_F16_TILED = defineKernel<{ headDim: number; input: "f32" | "f16" }>({
  name: "toF16Tiled",
  workgroupSize: 256,
  bindings: ["P", "x", "y"],
  wgsl: (c) => toF16TiledWgsl(c.headDim, c.input),
});
