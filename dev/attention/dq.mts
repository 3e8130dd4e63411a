// The backward's dq harness (harness.mts: checks, timing, table): numbered versions of the dq
// kernel, each checked against float64 and timed on `moba bench`'s shapes (one forward, then calls
// of the backward; the dq rounds' dispatches timed).
// Usage: node --import tsx dev/attention/dq.mts [VERSION,...]    (e.g. 2,8; default: all)
//
// Versions (1 and 2 are src/'s picks, paths.ts; the others force a variant of src/'s generators:
// backward.wgsl.ts's float32 dq with TQ queries x TK keys per tile, and dqMma.wgsl.ts, tensor
// cores with 16 queries per tile and TK keys per chunk):
//   1: src/'s pick at precision f32: the float32 kernel, the widest tile the workgroup memory holds
//   2: src/'s pick at precision f16: tensor cores where the adapter has f16 subgroup matrices and 9
//      storage buffers per stage, else the float32 kernel (on f32 buffers holding f16 values)
//   3: float32 kernel, 16 queries x 32 keys per tile
//   4: float32 kernel, 16 x 16
//   5: float32 kernel, 16 x 8
//   6: tensor cores, 16 keys per chunk
//   7: tensor cores, 32 keys per chunk
//   8: tensor cores, 64 keys per chunk
//   9: dS K over the dS the dk/dv kernel stored (dqStored: 64 rows, 16 a subgroup; MoBA with blocks on 16-key tiles only)
import { dqMmaSharedBytes, dqStoredSharedBytes } from "../../src/webgpu/attention/dqMma.wgsl.js";
import { dqPass } from "../../src/webgpu/attention/paths.js";
import { f32SharedBytes } from "../../src/webgpu/attention/plan.js";
import { QUERY_TILE_VERSIONS, runPassHarness } from "./harness.mts";

await runPassHarness({
  name: "dq",
  flopsPerPair: 6,
  label: /^dq round/,
  outputs: ["dq"],
  versions: {
    ...QUERY_TILE_VERSIONS,
    9: { precision: "f16", variant: { tensorCores: true, TK: 16, storedDs: true } },
  },
  pass: dqPass,
  sharedBytes: (headDim, v) =>
    !v.tensorCores
      ? f32SharedBytes.dq(headDim, v.TQ, v.TK)
      : v.storedDs
        ? dqStoredSharedBytes(headDim)
        : dqMmaSharedBytes({ headDim, TK: v.TK }),
  // q, k and v tiles, K's tiles, dout, row statistics, dq (or the dk/dv kernel's dq storing dS): one more than WebGPU's default 8
  lacks: (gpu) => (gpu.storageBuffersPerStage < 9 ? `9 storage buffers per stage (the device has ${gpu.storageBuffersPerStage})` : null),
});
process.exit(0);
