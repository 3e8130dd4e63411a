// Device check: MoBA forward on 1M tokens x 8 heads x headDim 128 (4 GiB per tensor, more than
// one 2 GiB storage binding) through the public API, with spot checks of a few rows in float64,
// in each precision of MOBA_BIG_PRECISIONS (default "f32"; "f32,f16" for both: the f16 reference
// rounds q, k and v as the API does).
import { mobaAttention } from "../dist/index.js";
import { f16ToFloat, floatToF16 } from "../dist/io/half.js";
const [tokens, heads, D, blockSize, topK] = [Number(process.env.MOBA_BIG_TOKENS ?? 1 << 20), 8, 128, 4096, 12];
let seed = 7;
const random = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
const make = (spread) => {
  const a = new Float32Array(tokens * heads * D);
  for (let i = 0; i < a.length; i++) a[i] = random() * spread;
  return a;
};
const shape = [tokens, heads, D];
const q = { data: make(2), shape },
  k = { data: make(2), shape },
  v = { data: make(1), shape };
for (const precision of (process.env.MOBA_BIG_PRECISIONS ?? "f32").split(",")) {
  const start = performance.now();
  const { out, lse, routing } = await mobaAttention({ q, k, v }, { blockSize, topK, backend: "webgpu", precision });
  console.log(
    `${precision} forward ${tokens} tokens x ${heads} heads x ${D}: ${((performance.now() - start) / 1000).toFixed(1)} s through the API (uploads, head groups, read-backs)`,
  );
  // the values the kernels saw (rounded per element read: the whole tensors are 4 GiB each)
  const seen = precision === "f16" ? (x) => f16ToFloat(floatToF16(x)) : (x) => x;
  const [qs, ks, vs] = [q.data, k.data, v.data].map((a) => ({ at: (i) => seen(a[i]) }));
  let worst = 0;
  for (const [t, h] of [
    [5, 0],
    [Math.floor(tokens * 0.29), 3],
    [tokens - 1, 7],
    [Math.floor(tokens * 0.74), 5],
  ]) {
    const width = routing.shape[2];
    const i = Math.floor(t / blockSize);
    const blocks = [...routing.data.subarray((t * heads + h) * width, (t * heads + h) * width + Math.min(width, i))];
    const keys = [];
    for (const j of blocks) for (let s = j * blockSize; s < (j + 1) * blockSize; s++) keys.push(s);
    for (let s = i * blockSize; s <= t; s++) keys.push(s);
    const scores = keys.map((s) => {
      let x = 0;
      for (let d = 0; d < D; d++) x += qs.at((t * heads + h) * D + d) * ks.at((s * heads + h) * D + d);
      return x / Math.sqrt(D);
    });
    const m = Math.max(...scores);
    const sum = scores.reduce((a, x) => a + Math.exp(x - m), 0);
    const ref = new Float64Array(D);
    keys.forEach((s, n) => {
      const p = Math.exp(scores[n] - m) / sum;
      for (let d = 0; d < D; d++) ref[d] += p * vs.at((s * heads + h) * D + d);
    });
    let num = 0,
      den = 0;
    for (let d = 0; d < D; d++) {
      num += (out.data[(t * heads + h) * D + d] - ref[d]) ** 2;
      den += ref[d] ** 2;
    }
    const lseError = Math.abs(lse.data[t * heads + h] - (m + Math.log(sum)));
    worst = Math.max(worst, Math.sqrt(num / den));
    console.log(
      `  token ${t} head ${h}: ${keys.length} keys, out relative error ${Math.sqrt(num / den).toExponential(2)}, lse error ${lseError.toExponential(2)}`,
    );
  }
  let nonFinite = 0;
  for (let i = 0; i < out.data.length; i += 997) if (!Number.isFinite(out.data[i])) nonFinite++;
  console.log(`  worst spot-check error ${worst.toExponential(2)}; non-finite among sampled outputs: ${nonFinite}`);
}
process.exit(0);
