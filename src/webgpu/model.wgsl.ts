// WGSL of the model's layers besides GEMMs and attention: each is the float32 loop of
// src/model/layers.ts (or the optimizer) with one thread per element, or one 256-thread
// workgroup per row where a row needs a reduction (RMSNorm, cross-entropy). WGSL has no float
// atomics, so sums over rows (RMSNorm's weight gradient, the embedding's) are gathers: each
// thread owns one output element and reads every input that adds into it.
import { defineKernel, type Kernel } from "./kernel.js";

export const THREADS = 256;

/** The workgroup reduction every row kernel shares. */
const REDUCE = /* wgsl */ `var<workgroup> partial: array<f32, ${THREADS}>;

// the sum (or maximum) of every thread's value, in partial[0], seen by all threads
fn reduce(lid: u32, value: f32, useMax: bool) -> f32 {
  partial[lid] = value;
  workgroupBarrier();
  for (var stride = ${THREADS / 2}u; stride > 0u; stride /= 2u) {
    if (lid < stride) { partial[lid] = select(partial[lid] + partial[lid + stride], max(partial[lid], partial[lid + stride]), useMax); }
    workgroupBarrier();
  }
  let result = partial[0];
  workgroupBarrier();
  return result;
}`;

/** The entry point's header: `item` (one thread per element) or `row` (one workgroup per row) from the workgroup's place in a 2D grid. */
const entry = (per: "element" | "row") => `@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32) {
  ${per === "element" ? `let item = (wg.x + wg.y * groups.x) * ${THREADS}u + lid;` : `let row = wg.x + wg.y * groups.x;`}`;

/** A kernel of fixed WGSL whose `main` sees `item` (one thread per element) or `row` (one workgroup per row). */
function kernel(name: string, bindings: string, body: string, per: "element" | "row"): Kernel<null> {
  return {
    name,
    workgroupSize: THREADS,
    key: () => "",
    wgsl: () => `${bindings}
${REDUCE}

${entry(per)}
${body}
}`,
  };
}

export const EMBEDDING = kernel(
  "embedding",
  `
struct P { T: u32, H: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> tokens: array<i32>;    // [T]
@group(0) @binding(2) var<storage, read> table: array<f32>;     // [V, H]
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [T, H]`,
  `
  if (item >= p.T * p.H) { return; }
  out[item] = table[u32(tokens[item / p.H]) * p.H + item % p.H];`,
  "element",
);

/** One thread per (vocabulary entry, h): the sum of dOut over the tokens of that entry (listed by the host). */
export const EMBEDDING_BACKWARD = kernel(
  "embeddingBackward",
  `
struct P { V: u32, H: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> start: array<u32>;        // [V + 1] each entry's first slot in order
@group(0) @binding(2) var<storage, read> order: array<u32>;        // [T] token positions, grouped by entry
@group(0) @binding(3) var<storage, read> dOut: array<f32>;         // [T, H]
@group(0) @binding(4) var<storage, read_write> dTable: array<f32>; // [V, H] accumulated`,
  `
  if (item >= p.V * p.H) { return; }
  let v = item / p.H;
  let h = item % p.H;
  var sum = 0.0;
  for (var e = start[v]; e < start[v + 1u]; e++) { sum += dOut[order[e] * p.H + h]; }
  dTable[item] += sum;`,
  "element",
);

export const RMS_NORM = kernel(
  "rmsNorm",
  `
struct P { M: u32, H: u32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;          // [M, H]
@group(0) @binding(2) var<storage, read> w: array<f32>;          // [H]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;    // [M, H]
@group(0) @binding(4) var<storage, read_write> rstd: array<f32>; // [M]`,
  `
  if (row >= p.M) { return; }
  var ss = 0.0;
  for (var h = lid; h < p.H; h += ${THREADS}u) { let v = x[row * p.H + h]; ss += v * v; }
  let r = 1.0 / sqrt(reduce(lid, ss, false) / f32(p.H) + p.eps);
  if (lid == 0u) { rstd[row] = r; }
  for (var h = lid; h < p.H; h += ${THREADS}u) { y[row * p.H + h] = x[row * p.H + h] * r * w[h]; }`,
  "row",
);

/**
 * RMSNorm's backward over a chunk of rows per workgroup: dx = r · (dy·w − x̂ · mean(dy·w·x̂)), x̂ = x · r,
 * written or added (accumulate), and the weight gradient's partial sum over the chunk, partial[chunk, h]
 * = Σ_rows dy · x̂ (COLUMN_SUM_INTO adds the chunks into dw). One pass over dy and x for both: as two
 * kernels (dx a row per workgroup, then the partials reading dy and x again) a [32768, 512] call took
 * ~0.23 ms on the H200 (~1 TB/s). A thread holds `columns` elements of a row (h = lid + 256 c).
 */
export const RMS_NORM_BACKWARD = defineKernel<{ columns: number }>({
  name: "rmsNormBackward",
  workgroupSize: THREADS,
  bindings: ["p", "dy", "x", "w", "rstd", "dx", "partial"],
  wgsl: ({ columns }) => {
    const each = (f: (c: number) => string) => Array.from({ length: columns }, (_, c) => f(c)).join("\n    ");
    return /* wgsl */ `
struct P { M: u32, H: u32, accumulate: u32, rowsPerChunk: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> dy: array<f32>;              // [M, H]
@group(0) @binding(2) var<storage, read> x: array<f32>;               // [M, H]
@group(0) @binding(3) var<storage, read> w: array<f32>;               // [H]
@group(0) @binding(4) var<storage, read> rstd: array<f32>;            // [M]
@group(0) @binding(5) var<storage, read_write> dx: array<f32>;        // [M, H]
@group(0) @binding(6) var<storage, read_write> partial_: array<f32>;  // [chunks, H]
${REDUCE}

${entry("row")}
  let chunk = row;
  let begin = chunk * p.rowsPerChunk;
  let end = min(p.M, begin + p.rowsPerChunk);
  ${each((c) => `let h${c} = lid + ${c * THREADS}u; let in${c} = h${c} < p.H; let w${c} = select(0.0, w[min(h${c}, p.H - 1u)], in${c}); var dw${c} = 0.0;`)}
  for (var t = begin; t < end; t++) {
    let r = rstd[t];
    ${each((c) => `var dy${c} = 0.0; var x${c} = 0.0; if (in${c}) { dy${c} = dy[t * p.H + h${c}]; x${c} = x[t * p.H + h${c}]; }`)}
    let mean = reduce(lid, ${Array.from({ length: columns }, (_, c) => `dy${c} * w${c} * x${c}`).join(" + ")}, false) * r / f32(p.H);
    ${each(
      (c) => `if (in${c}) {
      let i = t * p.H + h${c};
      let value = r * (dy${c} * w${c} - x${c} * r * mean);
      dx[i] = select(value, dx[i] + value, p.accumulate == 1u);
      dw${c} += dy${c} * x${c} * r;
    }`,
    )}
  }
  ${each((c) => `if (in${c}) { partial_[chunk * p.H + h${c}] = dw${c}; }`)}
}`;
  },
});

/**
 * dw[h] += Σ_chunks partial[chunk, h]: a workgroup per 32 columns, its 8 subgroups of 32 threads taking every
 * 8th chunk (consecutive threads read consecutive columns), four loads in flight at once, then summed across.
 * (One thread per column, one chunk at a time, waits on each load in turn: 512 chunks are 512 load latencies.)
 */
export const COLUMN_SUM_INTO = kernel(
  "columnSumInto",
  `
struct P { rows: u32, H: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> partial_: array<f32>; // [rows, H]
@group(0) @binding(2) var<storage, read_write> dw: array<f32>; // [H]`,
  `
  let h = row * 32u + lid % 32u;
  let part = lid / 32u;
  var sums = vec4<f32>();
  if (h < p.H) {
    var c = part;
    for (; c + 24u < p.rows; c += 32u) {
      sums += vec4<f32>(partial_[c * p.H + h], partial_[(c + 8u) * p.H + h], partial_[(c + 16u) * p.H + h], partial_[(c + 24u) * p.H + h]);
    }
    for (; c < p.rows; c += 8u) { sums.x += partial_[c * p.H + h]; }
  }
  partial[lid] = (sums.x + sums.y) + (sums.z + sums.w);
  workgroupBarrier();
  if (lid < 32u && h < p.H) {
    var sum = 0.0;
    for (var i = 0u; i < 8u; i++) { sum += partial[i * 32u + lid]; }
    dw[h] += sum;
  }`,
  "row",
);

/** One thread per (token, head, i < D/2): (x₁, x₂) → (x₁ cos − x₂ sin, x₂ cos + x₁ sin), sin negated for the inverse. */
export const ROPE = kernel(
  "rope",
  `
struct P { T: u32, heads: u32, D: u32, direction: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> cosines: array<f32>;  // [T, D / 2]
@group(0) @binding(2) var<storage, read> sines: array<f32>;    // [T, D / 2]
@group(0) @binding(3) var<storage, read_write> x: array<f32>;  // [T, heads, D]`,
  `
  let half = p.D / 2u;
  if (item >= p.T * p.heads * half) { return; }
  let i = item % half;
  let th = item / half; // t · heads + head
  let t = th / p.heads;
  let c = cosines[t * half + i];
  let s = p.direction * sines[t * half + i];
  let a = x[th * p.D + i];
  let b = x[th * p.D + i + half];
  x[th * p.D + i] = a * c - b * s;
  x[th * p.D + i + half] = b * c + a * s;`,
  "element",
);

export const SWIGLU = kernel(
  "swiglu",
  `
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> u: array<f32>;
@group(0) @binding(3) var<storage, read_write> m: array<f32>;`,
  `
  if (item >= p.n) { return; }
  m[item] = g[item] / (1.0 + exp(-g[item])) * u[item];`,
  "element",
);

export const SWIGLU_BACKWARD = kernel(
  "swigluBackward",
  `
struct P { n: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> dm: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> u: array<f32>;
@group(0) @binding(4) var<storage, read_write> dg: array<f32>;
@group(0) @binding(5) var<storage, read_write> du: array<f32>;`,
  `
  if (item >= p.n) { return; }
  let sigmoid = 1.0 / (1.0 + exp(-g[item]));
  du[item] = dm[item] * g[item] * sigmoid;
  dg[item] = dm[item] * u[item] * sigmoid * (1.0 + g[item] * (1.0 - sigmoid));`,
  "element",
);

/** One workgroup per row: lse = max + log Σ exp(logit − max); loss = weight · (lse − logit[target]). */
export const CROSS_ENTROPY = kernel(
  "crossEntropy",
  `
struct P { M: u32, V: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;     // [M, V]
@group(0) @binding(2) var<storage, read> targets: array<i32>;    // [M]
@group(0) @binding(3) var<storage, read> weights: array<f32>;    // [M]
@group(0) @binding(4) var<storage, read_write> lse: array<f32>;  // [M]
@group(0) @binding(5) var<storage, read_write> loss: array<f32>; // [M]`,
  `
  if (row >= p.M) { return; }
  var m = -3.4e38;
  for (var v = lid; v < p.V; v += ${THREADS}u) { m = max(m, logits[row * p.V + v]); }
  m = reduce(lid, m, true);
  var sum = 0.0;
  for (var v = lid; v < p.V; v += ${THREADS}u) { sum += exp(logits[row * p.V + v] - m); }
  let l = m + log(reduce(lid, sum, false));
  if (lid == 0u) {
    lse[row] = l;
    let w = weights[row];
    loss[row] = select(w * (l - logits[row * p.V + u32(targets[row])]), 0.0, w == 0.0);
  }`,
  "row",
);

export const CROSS_ENTROPY_BACKWARD = kernel(
  "crossEntropyBackward",
  `
struct P { M: u32, V: u32, scale: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> logits: array<f32>;        // [M, V]
@group(0) @binding(2) var<storage, read> lse: array<f32>;           // [M]
@group(0) @binding(3) var<storage, read> targets: array<i32>;       // [M]
@group(0) @binding(4) var<storage, read> weights: array<f32>;       // [M]
@group(0) @binding(5) var<storage, read_write> dLogits: array<f32>; // [M, V]`,
  `
  if (item >= p.M * p.V) { return; }
  let row = item / p.V;
  let w = weights[row] * p.scale;
  var d = select(w * exp(logits[item] - lse[row]), 0.0, w == 0.0);
  if (item % p.V == u32(targets[row])) { d -= w; }
  dLogits[item] = d;`,
  "element",
);

/** One workgroup per slice of `perGroup` elements: partial[base + group] = Σ x² over the slice. */
export const SUM_OF_SQUARES = kernel(
  "sumOfSquares",
  `
struct P { n: u32, perGroup: u32, base: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> partial_: array<f32>;`,
  `
  var sum = 0.0;
  for (var i = row * p.perGroup + lid; i < min(p.n, (row + 1u) * p.perGroup); i += ${THREADS}u) { sum += x[i] * x[i]; }
  sum = reduce(lid, sum, false);
  if (lid == 0u) { partial_[p.base + row] = sum; }`,
  "row",
);

/**
 * One workgroup: the global norm from sumOfSquares' partials, clip = [norm / lossScale, min(1, maxNorm / norm) / lossScale]
 * (the gradients hold lossScale times the true ones; the norm is read back once, at the step's end); clip[0] = guard[0]
 * where that is not finite (tested on its exponent bits: the step before overflowed, so this one takes no update).
 */
export const GRADIENT_CLIP = kernel(
  "gradientClip",
  `
struct P { n: u32, maxNorm: f32, lossScale: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> partial_: array<f32>;
@group(0) @binding(2) var<storage, read> guard: array<f32>;
@group(0) @binding(3) var<storage, read_write> clip: array<f32>;`,
  `
  var sum = 0.0;
  for (var i = lid; i < p.n; i += ${THREADS}u) { sum += partial_[i]; }
  sum = reduce(lid, sum, false);
  if (lid == 0u) {
    let norm = sqrt(sum) / p.lossScale;
    clip[0] = select(norm, guard[0], (bitcast<u32>(guard[0]) & 0x7f800000u) == 0x7f800000u);
    clip[1] = select(1.0, p.maxNorm / norm, norm > p.maxNorm) / p.lossScale;
  }`,
  "row",
);

/**
 * AdamW with the gradients times clip[1]; an inf or NaN norm (clip[0], tested on its exponent bits, which no
 * fast-math folds away) leaves w, m, v. The scalars that change every step (learning rate, bias corrections)
 * come in a storage buffer, not the uniform, so a step's buffers and bind groups are the last step's.
 */
export const ADAMW = kernel(
  "adamw",
  `
struct P { n: u32 }
struct S { lr: f32, beta1: f32, beta2: f32, eps: f32, decayFactor: f32, c1: f32, c2: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> s: S;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> clip: array<f32>;
@group(0) @binding(4) var<storage, read_write> w: array<f32>;
@group(0) @binding(5) var<storage, read_write> m: array<f32>;
@group(0) @binding(6) var<storage, read_write> v: array<f32>;`,
  `
  if (item >= p.n || (bitcast<u32>(clip[0]) & 0x7f800000u) == 0x7f800000u) { return; }
  let grad = g[item] * clip[1];
  m[item] = s.beta1 * m[item] + (1.0 - s.beta1) * grad;
  v[item] = s.beta2 * v[item] + (1.0 - s.beta2) * grad * grad;
  w[item] = w[item] * s.decayFactor - s.lr * (m[item] / s.c1) / (sqrt(v[item] / s.c2) + s.eps);`,
  "element",
);
