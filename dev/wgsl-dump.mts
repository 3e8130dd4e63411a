// Writes the WGSL of every attention kernel, for every shape the kernels are generated in, into a
// folder (one file per shader), so a refactor can prove the shaders byte-identical:
//   node --import tsx dev/wgsl-dump.mts /tmp/before   (on the old tree)
//   node --import tsx dev/wgsl-dump.mts /tmp/after    (on the new tree)
//   diff -r /tmp/before /tmp/after && echo identical
// Shapes: headDim 1-256 (multiples of 16 for the tensor-core kernels), every tile side the tile
// policy can pick, unrolled or not, f32 or f16 inputs; TK 16, 32, 64 for the tensor-core kernels.
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { DELTA, dkdvWgsl, dqWgsl, forwardWgsl, type TileShape } from "../src/webgpu/attention/attention.wgsl.js";
import { dkdvMmaWgsl, dqMmaWgsl, forwardMmaWgsl, TO_F16, toF16TiledWgsl } from "../src/webgpu/attention/mma.wgsl.js";
import { BLOCK_SUMS, GATHERED_TILES, gateWgsl, SCAN, SCATTER } from "../src/webgpu/attention/routing.wgsl.js";

const dir = process.argv[2];
if (!dir) throw new Error("usage: node --import tsx dev/wgsl-dump.mts OUT_DIR");
mkdirSync(dir, { recursive: true });
let count = 0;
const write = (name: string, wgsl: string) => {
  writeFileSync(join(dir, `${name}.wgsl`), wgsl);
  count++;
};

write("blockSums", BLOCK_SUMS);
write("scatter", SCATTER);
write("scan", SCAN);
write("gatheredTiles", GATHERED_TILES);
write("delta", DELTA);
write("toF16", TO_F16);

const headDims = [1, 3, 4, 8, 12, 16, 20, 32, 48, 64, 80, 96, 100, 112, 128, 144, 160, 192, 224, 256];
const sides = [1, 2, 4, 8, 16, 32];
for (const headDim of headDims) {
  for (const width of [1, 2, 3, 7, 15]) write(`gate-${width}-${headDim}`, gateWgsl({ width, headDim, vec4Rows: headDim % 4 === 0 }));
  for (const TQ of sides) {
    for (const TK of sides) {
      for (const unroll of [false, true]) {
        for (const input of ["f32", "f16"] as const) {
          const c: TileShape = { headDim, TQ, TK, unroll, input };
          const key = `${headDim}-${TQ}-${TK}-${unroll}-${input}`;
          write(`forward-${key}`, forwardWgsl(c));
          if (input === "f32") {
            write(`dq-${key}`, dqWgsl(c));
            write(`dkdv-${key}`, dkdvWgsl(c));
          }
        }
      }
    }
  }
  if (headDim % 16 !== 0) continue;
  write(`toF16Tiled-${headDim}`, toF16TiledWgsl(headDim));
  write(`dkdvMma-${headDim}`, dkdvMmaWgsl({ headDim }));
  for (const TK of [16, 32, 64]) {
    write(`forwardMma-${headDim}-${TK}`, forwardMmaWgsl({ headDim, TK }));
    write(`dqMma-${headDim}-${TK}`, dqMmaWgsl({ headDim, TK }));
  }
}
console.log(`${count} shaders written to ${dir}`);
