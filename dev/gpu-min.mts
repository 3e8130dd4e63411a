import { flashAttention, mobaAttention } from "../src/index.ts";
import { makeCase } from "../test/helpers.ts";
const c = makeCase(2, { cuSeqlens: [0, 37], blockSize: 8, topK: 2, qHeads: 1, kvHeads: 1, headDim: 4 });
console.log("start");
const f = await flashAttention(c, { backend: "webgpu" });
console.log("full ok", f.out.data.slice(0, 4));
const m = await mobaAttention(c, { blockSize: 8, topK: 2, backend: "webgpu" });
console.log("moba ok", m.out.data.slice(0, 4));
