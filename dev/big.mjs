// Device check: MoBA forward on 1M tokens x 8 heads x headDim 128 (4 GiB per tensor, more than
// one 2 GiB storage binding) through the public API, with spot checks of a few rows in float64.
import { mobaAttention } from "../dist/index.js";
const [tokens, heads, D, blockSize, topK] = [1 << 20, 8, 128, 4096, 12];
let seed = 7;
const random = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
const make = (spread) => { const a = new Float32Array(tokens * heads * D); for (let i = 0; i < a.length; i++) a[i] = random() * spread; return a; };
const shape = [tokens, heads, D];
const q = { data: make(2), shape }, k = { data: make(2), shape }, v = { data: make(1), shape };
const start = performance.now();
const { out, lse, routing } = await mobaAttention({ q, k, v }, { blockSize, topK, backend: "webgpu" });
console.log(`forward ${tokens} tokens x ${heads} heads x ${D}: ${((performance.now() - start) / 1000).toFixed(1)} s through the API (uploads, 8 head groups, read-backs)`);
let worst = 0;
for (const [t, h] of [[5, 0], [300000, 3], [tokens - 1, 7], [777777, 5]]) {
  const width = routing.shape[2];
  const i = Math.floor(t / blockSize);
  const blocks = [...routing.data.subarray((t * heads + h) * width, (t * heads + h) * width + Math.min(width, i))];
  const keys = [];
  for (const j of blocks) for (let s = j * blockSize; s < (j + 1) * blockSize; s++) keys.push(s);
  for (let s = i * blockSize; s <= t; s++) keys.push(s);
  const scores = keys.map((s) => { let x = 0; for (let d = 0; d < D; d++) x += q.data[(t * heads + h) * D + d] * k.data[(s * heads + h) * D + d]; return x / Math.sqrt(D); });
  const m = Math.max(...scores);
  const sum = scores.reduce((a, x) => a + Math.exp(x - m), 0);
  const ref = new Float64Array(D);
  keys.forEach((s, n) => { const p = Math.exp(scores[n] - m) / sum; for (let d = 0; d < D; d++) ref[d] += p * v.data[(s * heads + h) * D + d]; });
  let num = 0, den = 0;
  for (let d = 0; d < D; d++) { num += (out.data[(t * heads + h) * D + d] - ref[d]) ** 2; den += ref[d] ** 2; }
  const lseError = Math.abs(lse.data[t * heads + h] - (m + Math.log(sum)));
  worst = Math.max(worst, Math.sqrt(num / den));
  console.log(`token ${t} head ${h}: ${keys.length} keys, out relative error ${Math.sqrt(num / den).toExponential(2)}, lse error ${lseError.toExponential(2)}`);
}
let nonFinite = 0;
for (let i = 0; i < out.data.length; i += 997) if (!Number.isFinite(out.data[i])) nonFinite++;
console.log(`worst spot-check error ${worst.toExponential(2)}; non-finite among sampled outputs: ${nonFinite}`);
process.exit(0);
