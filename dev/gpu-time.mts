import { mobaAttention, mobaAttentionBackward } from "../src/index.ts";
import { makeCase } from "../test/helpers.ts";
const c = makeCase(1, { cuSeqlens: [0, 300], blockSize: 7, topK: 3, qHeads: 6, kvHeads: 3, headDim: 16 });
for (let rep = 0; rep < 2; rep++) {
  let t = performance.now();
  const f = await mobaAttention(c, { blockSize: 7, topK: 3, backend: "webgpu" });
  console.log("fwd", (performance.now() - t).toFixed(0)); t = performance.now();
  await mobaAttentionBackward({ ...c, ...f, dout: c.dout }, { blockSize: 7, topK: 3, backend: "webgpu" });
  console.log("bwd", (performance.now() - t).toFixed(0));
}
process.exit(0);
