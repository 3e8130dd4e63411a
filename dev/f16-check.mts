// The f16 path against the float64 reference (on the same f16-rounded inputs), case by case, as a
// pass/fail table: what runs on the H100's tensor cores (headDim a multiple of 16) and what falls
// back to f32 arithmetic on f16 inputs. Also prints the f32 path's error on the same cases.
// Usage: node --import tsx dev/f16-check.mts [RANDOM_CASES]
import {
  compareWithReference,
  F16_TOLERANCE,
  F32_TOLERANCE,
  makeCase,
  randomCase,
  runImplementation,
  describe,
  type Case,
} from "../test/helpers.ts";
import { getDevice } from "../src/webgpu/device.ts";
import { table } from "../src/run/util.ts";

const gpu = await getDevice();
console.log(
  `adapter: ${gpu.adapterInfo}; shader-f16 ${gpu.f16}; subgroup matrices: ${gpu.subgroupMatrixConfigs.join(", ") || "none"}; tensor-core forward: ${gpu.mma16}; tensor-core dq: ${gpu.mma16 && gpu.storageBuffersPerStage >= 9}`,
);

const cases: Case[] = [
  makeCase(1, { cuSeqlens: [0, 2048], qHeads: 2, kvHeads: 2, headDim: 128, blockSize: 128, topK: 3 }),
  makeCase(2, { cuSeqlens: [0, 1536], qHeads: 2, kvHeads: 1, headDim: 128, blockSize: 64, topK: Infinity }),
  makeCase(3, { cuSeqlens: [0, 700, 701, 1500], qHeads: 4, kvHeads: 2, headDim: 64, blockSize: 100, topK: 4 }),
  makeCase(4, { cuSeqlens: [0, 999], qHeads: 2, kvHeads: 2, headDim: 256, blockSize: 77, topK: 3 }),
  makeCase(5, { cuSeqlens: [0, 0, 1, 33, 300], qHeads: 6, kvHeads: 3, headDim: 32, blockSize: 37, topK: 2 }),
  makeCase(6, { cuSeqlens: [0, 517], qHeads: 1, kvHeads: 1, headDim: 16, blockSize: 1, topK: 6 }),
  makeCase(7, { cuSeqlens: [0, 1000], qHeads: 1, kvHeads: 1, headDim: 48, blockSize: 512, topK: 40 }),
  makeCase(8, { cuSeqlens: [0, 300], qHeads: 2, kvHeads: 2, headDim: 3, blockSize: 20, topK: 3 }),
];
const seed = Number(process.env.MOBA_SEED || Date.now() % 100000);
for (let i = 0; i < Number(process.argv[2] ?? 12); i++) cases.push(randomCase(seed + i, 1e6, 1500));

const rows: string[][] = [];
let failed = 0;
for (const c of cases) {
  const path = c.headDim % 16 === 0 && gpu.mma16 ? "tensor cores" : "f32 on f16 inputs";
  const errors: Record<string, number> = {};
  const f32Errors: Record<string, number> = {};
  let failures: string[];
  try {
    failures = await compareWithReference(c, undefined, (x: Case) => runImplementation(x, undefined, "webgpu", "f16"), true, "f16", errors);
    await compareWithReference(c, undefined, (x: Case) => runImplementation(x, undefined, "webgpu", "f32"), true, "f32", f32Errors);
  } catch (error) {
    failed++;
    rows.push([describe(c), path, (error as Error).message.slice(0, 70), "", "", "", "", "", "ERROR"]);
    continue;
  }
  if (failures.length > 0) failed++;
  const e = (r: Record<string, number>, n: string) => r[n]?.toExponential(1) ?? "-";
  rows.push([
    describe(c),
    path,
    ...["out", "lse", "dq", "dk", "dv"].map((n) => e(errors, n)),
    e(f32Errors, "out"),
    failures.length === 0 ? "pass" : "FAIL",
  ]);
  if (failures.length > 0) console.log(failures.join("\n"));
}
console.log(`\nf16 path vs float64 on f16-rounded inputs (tolerance ${F16_TOLERANCE}; f32 path ${F32_TOLERANCE}), seed ${seed}:`);
console.log(table(["case", "f16 forward", "out", "lse", "dq", "dk", "dv", "f32 out", "f16"], rows));
console.log(`${cases.length - failed} of ${cases.length} pass`);
process.exit(failed === 0 ? 0 : 1);
