// WebGPU against the CPU backend on one small MoBA problem (forward, backward, full attention),
// through the package's dist/: what the browser page (test/browser/page.html) and the Deno test
// (test/deno/smoke.js) run, in precision "f32" or "f16" (then both backends round q, k, v and
// dout to f16). Returns each output's norm-wise relative error.
export async function compareBackends({ mobaAttention, mobaAttentionBackward, flashAttention }, precision = "f32") {
  const tokens = 300,
    qHeads = 4,
    kvHeads = 2,
    D = 16,
    blockSize = 24,
    topK = 3;
  let seed = 5;
  const random = () => ((seed = (seed * 1664525 + 1013904223) >>> 0) / 2 ** 32) * 2 - 1;
  const tensor = (heads) => ({ data: Float32Array.from({ length: tokens * heads * D }, random), shape: [tokens, heads, D] });
  const inputs = { q: tensor(qHeads), k: tensor(kvHeads), v: tensor(kvHeads), cuSeqlens: [0, 100, 100, 300] };
  const dout = tensor(qHeads);
  const relative = (a, b) => {
    let n = 0,
      d = 0;
    for (let i = 0; i < a.length; i++) {
      n += (a[i] - b[i]) ** 2;
      d += b[i] ** 2;
    }
    return Math.sqrt(n / d);
  };
  const results = {};
  for (const backend of ["cpu", "webgpu"]) {
    const options = { blockSize, topK, backend, precision };
    const f = await mobaAttention(inputs, options);
    const g = await mobaAttentionBackward({ ...inputs, ...f, dout }, options);
    const full = await flashAttention(inputs, { backend, precision });
    results[backend] = { out: f.out.data, lse: f.lse.data, dq: g.dq.data, dk: g.dk.data, dv: g.dv.data, full: full.out.data };
  }
  const errors = {};
  for (const name of ["out", "lse", "dq", "dk", "dv", "full"]) errors[name] = relative(results.webgpu[name], results.cpu[name]);
  return errors;
}
