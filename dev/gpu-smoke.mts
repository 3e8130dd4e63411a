import { makeCase, compareWithReference, runImplementation } from "../test/helpers.ts";
const gpu = (c: any, t: any) => runImplementation(c, t, "webgpu");
for (const [cu, B, K, hq, hk, D] of [[[0, 37], 8, 2, 1, 1, 4], [[0,300],7,3,6,3,16], [[0, 700], 64, 3, 2, 2, 128]] as const) {
  let t0 = performance.now();
  const c = makeCase(1, { cuSeqlens: [...cu], blockSize: B, topK: K, qHeads: hq, kvHeads: hk, headDim: D });
  console.log("moba", await compareWithReference(c, 1, gpu), (performance.now() - t0).toFixed(0));
  t0 = performance.now();
  const f = makeCase(2, { cuSeqlens: [...cu], blockSize: 64, topK: Infinity, qHeads: hq, kvHeads: hk, headDim: D });
  console.log("full", await compareWithReference(f, 1, gpu), (performance.now() - t0).toFixed(0));
}
process.exit(0);
