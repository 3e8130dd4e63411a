import { referenceForward, referenceBackward } from "../src/reference/attention.ts";
import { randomInputs } from "../src/run/util.ts";
const N = 2048, H = 4, G = 2, D = 64;
const { q, k, v, dout } = randomInputs(1, N, H, G, D);
const p = { tokens: N, qHeads: H, kvHeads: G, headDim: D, cuSeqlens: [0, N], blockSize: 256, topK: 3, scale: 0.125 };
let t = performance.now(); referenceForward(p, q.data, k.data, v.data); console.log("fwd", performance.now() - t);
t = performance.now(); referenceBackward(p, q.data, k.data, v.data, dout.data); console.log("bwd", performance.now() - t);
