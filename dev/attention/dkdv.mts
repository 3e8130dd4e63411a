// The backward's dk/dv harness (harness.mts: checks, timing, table): numbered versions of the dk/dv
// kernel, each checked against float64 and timed on `moba bench`'s shapes (one forward, then calls
// of the backward; the dk/dv dispatch timed).
// Usage: node --import tsx dev/attention/dkdv.mts [VERSION,...]    (e.g. 2,7; default: all)
//
// Versions (1 and 2 are src/'s picks, paths.ts; the others force a variant of src/'s generators:
// backward.wgsl.ts's float32 dk/dv with TQ queries x TK keys per tile, and dkdvMma.wgsl.ts, tensor
// cores with TK keys per workgroup, MMA_DKDV_KEYS):
//   1: src/'s pick at precision f32: the float32 kernel, 16 keys and as many queries per tile as the workgroup memory holds
//   2: src/'s pick at precision f16: tensor cores where the adapter has f16 subgroup matrices (the
//      most keys whose workgroup memory fits), else the float32 kernel (on f32 buffers holding f16 values)
//   3: float32 kernel, 32 queries x 16 keys per tile
//   4: float32 kernel, 16 x 16
//   5: float32 kernel, 8 x 16
//   6: tensor cores, 32 keys per workgroup
//   7: tensor cores, 64 keys per workgroup
//   8, 9: tensor cores, 32 and 64 keys per workgroup, also storing dS for dq (the backward's dq then reads it)
import { dkdvMmaSharedBytes } from "../../src/webgpu/attention/dkdvMma.wgsl.js";
import { dkdvPass } from "../../src/webgpu/attention/paths.js";
import { f32SharedBytes } from "../../src/webgpu/attention/plan.js";
import { runPassHarness } from "./harness.mts";

await runPassHarness({
  name: "dkdv",
  flopsPerPair: 8,
  label: /^dk dv$/,
  outputs: ["dk", "dv"],
  versions: {
    1: { precision: "f32" },
    2: { precision: "f16" },
    3: { precision: "f32", variant: { tensorCores: false, TQ: 32, TK: 16 } },
    4: { precision: "f32", variant: { tensorCores: false, TQ: 16, TK: 16 } },
    5: { precision: "f32", variant: { tensorCores: false, TQ: 8, TK: 16 } },
    6: { precision: "f16", variant: { tensorCores: true, TK: 32 } },
    7: { precision: "f16", variant: { tensorCores: true, TK: 64 } },
    8: { precision: "f16", variant: { tensorCores: true, TK: 32, storedDs: true } },
    9: { precision: "f16", variant: { tensorCores: true, TK: 64, storedDs: true } },
  },
  pass: dkdvPass,
  sharedBytes: (headDim, v) => (v.tensorCores ? dkdvMmaSharedBytes({ headDim, keys: v.TK }) : f32SharedBytes.dkdv(headDim, v.TQ, v.TK)),
  // storing dS: a ninth storage buffer
  lacks: (gpu, _p, v) =>
    v.tensorCores && v.storedDs && gpu.storageBuffersPerStage < 9
      ? `9 storage buffers per stage (the device has ${gpu.storageBuffersPerStage})`
      : null,
});
process.exit(0);
