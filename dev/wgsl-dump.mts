// Writes the WGSL of every attention kernel (through its kernel object), for every shape the kernels are generated in, into a
// folder (one file per shader), so a refactor can prove the shaders byte-identical:
//   node --import tsx dev/wgsl-dump.mts /tmp/before   (on the old tree)
//   node --import tsx dev/wgsl-dump.mts /tmp/after    (on the new tree)
//   diff -r /tmp/before /tmp/after && echo identical
// Shapes: headDim 1-256 (multiples of 16 for the tensor-core kernels), every tile side the tile
// policy can pick, unrolled or not, f32 or f16 inputs; TK 16, 32, 64 for the tensor-core kernels.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DELTA, DKDV, DQ } from "../src/webgpu/attention/backward.wgsl.js";
import { DKDV_MMA, DKDV_MMA_STORING_DS, MMA_DKDV_KEYS } from "../src/webgpu/attention/dkdvMma.wgsl.js";
import { DQ_MMA, DQ_STORED } from "../src/webgpu/attention/dqMma.wgsl.js";
import { TO_F16, TO_F16_TILED } from "../src/webgpu/attention/f16.wgsl.js";
import { FORWARD } from "../src/webgpu/attention/forward.wgsl.js";
import { FORWARD_MMA } from "../src/webgpu/attention/forwardMma.wgsl.js";
import { GATE } from "../src/webgpu/attention/gate.wgsl.js";
import { BLOCK_SUMS, GATHERED_TILES, SCAN, SCATTER } from "../src/webgpu/attention/routing.wgsl.js";
import type { TileShape } from "../src/webgpu/attention/tile.wgsl.js";

const dir = process.argv[2];
if (!dir) throw new Error("usage: node --import tsx dev/wgsl-dump.mts OUT_DIR");
mkdirSync(dir, { recursive: true });
let count = 0;
const write = (name: string, wgsl: string) => {
  writeFileSync(join(dir, `${name}.wgsl`), wgsl);
  count++;
};

write("blockSums", BLOCK_SUMS.wgsl(null));
write("scatter", SCATTER.wgsl(null));
write("scan", SCAN.wgsl(null));
write("gatheredTiles", GATHERED_TILES.wgsl(null));
write("delta", DELTA.wgsl(null));
write("toF16", TO_F16.wgsl(null));

const headDims = [1, 3, 4, 8, 12, 16, 20, 32, 48, 64, 80, 96, 100, 112, 128, 144, 160, 192, 224, 256];
const sides = [1, 2, 4, 8, 16, 32];
for (const headDim of headDims) {
  for (const width of [1, 2, 3, 7, 15]) write(`gate-${width}-${headDim}`, GATE.wgsl({ width, headDim, vec4Rows: headDim % 4 === 0 }));
  for (const TQ of sides) {
    for (const TK of sides) {
      for (const unroll of [false, true]) {
        for (const input of ["f32", "f16"] as const) {
          const c: TileShape = { headDim, TQ, TK, unroll, input };
          const key = `${headDim}-${TQ}-${TK}-${unroll}-${input}`;
          for (const union of [false, true]) write(`forward-${key}${union ? "-union" : ""}`, FORWARD.wgsl({ ...c, union }));
          if (input === "f32") {
            write(`dq-${key}`, DQ.wgsl(c));
            write(`dkdv-${key}`, DKDV.wgsl(c));
          }
        }
      }
    }
  }
  if (headDim % 16 !== 0) continue;
  write(`toF16Tiled-${headDim}`, TO_F16_TILED.wgsl({ headDim, input: "f32" }));
  for (const keys of MMA_DKDV_KEYS) {
    write(`dkdvMma-${headDim}-${keys}`, DKDV_MMA.wgsl({ headDim, keys }));
    write(`dkdvMmaStoringDs-${headDim}-${keys}`, DKDV_MMA_STORING_DS.wgsl({ headDim, keys }));
  }
  write(`dqStored-${headDim}`, DQ_STORED.wgsl({ headDim }));
  for (const TK of [16, 32, 64]) {
    for (const union of [false, true])
      write(`forwardMma-${headDim}-${TK}${union ? "-union" : ""}`, FORWARD_MMA.wgsl({ headDim, TK, union }));
    write(`dqMma-${headDim}-${TK}`, DQ_MMA.wgsl({ headDim, TK }));
  }
}
console.log(`${count} shaders written to ${dir}`);
