import { makeCase, compareWithReference } from "../test/helpers.ts";
for (const [cu, B, K, hq, hk, D] of [[[0, 37], 8, 2, 1, 1, 4], [[0, 5, 5, 50, 51], 4, 3, 4, 2, 3], [[0, 100], 16, 100, 2, 1, 8], [[0,300],7,3,6,3,16]] as const) {
  const c = makeCase(1, { cuSeqlens: [...cu], blockSize: B, topK: K, qHeads: hq, kvHeads: hk, headDim: D });
  console.log(await compareWithReference(c, 1), await compareWithReference(c, 2));
  const f = makeCase(2, { cuSeqlens: [...cu], blockSize: 64, topK: Infinity, qHeads: hq, kvHeads: hk, headDim: D });
  console.log(await compareWithReference(f, 1), await compareWithReference(f, 2));
}
