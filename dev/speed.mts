import { mobaAttention, flashAttention, mobaAttentionBackward, flashAttentionBackward } from "../src/index.ts";
import { randomTensor, rng } from "../test/helpers.ts";
const N = Number(process.argv[2] ?? 8192), D = Number(process.argv[3] ?? 128), H = 1;
const r = rng(1);
const q = randomTensor(r, [N, H, D]), k = randomTensor(r, [N, H, D]), v = randomTensor(r, [N, H, D]), dout = randomTensor(r, [N, H, D]);
for (const [name, fn, bfn] of [["moba", (x: any) => mobaAttention(x, { blockSize: 512, topK: 3 }), (x: any) => mobaAttentionBackward(x, { blockSize: 512, topK: 3 })], ["full", (x: any) => flashAttention(x), (x: any) => flashAttentionBackward(x)]] as const) {
  for (let rep = 0; rep < 2; rep++) {
    let t = performance.now();
    const f = await fn({ q, k, v });
    const tf = performance.now() - t;
    t = performance.now();
    await bfn({ q, k, v, out: f.out, lse: f.lse, dout, routing: f.routing });
    const tb = performance.now() - t;
    const pairs = name === "full" ? N * N / 2 : N * 1280;
    console.log(name, "fwd ms", tf.toFixed(0), "GFLOP/s", (pairs * D * 4 / tf / 1e6).toFixed(2), "bwd ms", tb.toFixed(0), "GFLOP/s", (pairs * D * 10 / tb / 1e6).toFixed(2));
  }
}
