// The forward's harness (harness.mts: checks, timing, table): numbered versions of the attention
// forward, each checked against float64 and timed on `moba bench`'s shapes.
// Usage: node --import tsx dev/attention/forward.mts [VERSION,...]    (e.g. 2,8; default: all)
//
// Versions (1 and 2 are src/'s picks, paths.ts; the others force a variant of src/'s generators:
// forward.wgsl.ts, the float32 kernel with TQ queries x TK keys per tile, and forwardMma.wgsl.ts,
// tensor cores with 16 queries per tile and TK keys per chunk):
//   1: src/'s pick at precision f32: the float32 kernel, the widest tile the workgroup memory holds
//   2: src/'s pick at precision f16: tensor cores where the adapter has f16 subgroup matrices, else
//      the float32 kernel on f16 copies of q, k and v
//   3: float32 kernel, 16 queries x 32 keys per tile
//   4: float32 kernel, 16 x 16
//   5: float32 kernel, 16 x 8
//   6: tensor cores, 16 keys per chunk
//   7: tensor cores, 32 keys per chunk
//   8: tensor cores, 64 keys per chunk
import { forwardPass } from "../../src/webgpu/attention/paths.js";
import { f32SharedBytes } from "../../src/webgpu/attention/plan.js";
import { mmaSharedBytes } from "../../src/webgpu/attention/mma.wgsl.js";
import { QUERY_TILE_VERSIONS, runPassHarness } from "./harness.mts";

await runPassHarness({
  name: "forward",
  flopsPerPair: 4,
  label: /^forward round/,
  outputs: ["out", "lse"],
  versions: QUERY_TILE_VERSIONS,
  pass: forwardPass,
  sharedBytes: (headDim, v) => (v.tensorCores ? mmaSharedBytes({ headDim, TK: v.TK }) : f32SharedBytes.forward(headDim, v.TQ, v.TK)),
});
process.exit(0);
