// The tensor-core GEMM: y[M, N] (+)= A · B, A stored [M, K] or [K, M], B stored [N, K] or [K, N]
// (the same operand layouts as the f32 GEMM in linear.wgsl.ts, so the model's forward x · wᵀ and
// both backward products dy · w and dyᵀ · x are one kernel). Operands are float32 in storage and
// rounded to f16 as they are staged into workgroup memory; products accumulate in float32 in
// subgroup matrices (16x16x16, f16 -> f32). The model keeps every tensor in float32, so the f16
// path costs no extra casting passes and no second copy of the weights.
//
// A workgroup computes a tileM x tileN tile of y over a range of K (all of it, or one split of it:
// split-K for dW, whose output is small and whose K is the token count, writes partial tiles that
// a reduction adds up). Its subgroups form a warpsM x warpsN grid, each owning a
// (tileM / warpsM) x (tileN / warpsN) block of 16x16 accumulators in registers. Per slice of
// `depth` keys of K: every thread stages its share of A's and B's slices (f32 -> f16) into
// workgroup memory; with `prefetch` the next slice's values are loaded into registers while this
// slice multiplies (the loads' latency hides behind the MMAs). With `natural` a slice keeps its
// storage's orientation in workgroup memory (consecutive threads write consecutive halves) and the
// fragments are loaded column-major where that is the transpose of what the MMA wants; with vec4
// loads a thread reads four consecutive words at once. The epilogue goes through a 16x16 f32
// scratch per subgroup so edge tiles and y += need no special matrix stores.
import type { Kernel } from "../kernel.js";

export interface MmaGemmShape {
  /** A is stored [K, M] instead of [M, K]. */
  aTransposed: boolean;
  /** B is stored [K, N] instead of [N, K]. */
  bTransposed: boolean;
  /** y += A · B instead of y = A · B (with split-K: the reduction adds). */
  accumulate: boolean;
  /** y = residual + A · B from a fifth binding residual[M, N] (the residual stream's add); not with accumulate. */
  residual: boolean;
  /** y's tile per workgroup (multiples of 16 · warps). */
  tileM: number;
  tileN: number;
  /** Subgroups along M and N (32 lanes each). */
  warpsM: number;
  warpsN: number;
  /** K per staged slice (a multiple of 16). */
  depth: number;
  /** Load the next slice into registers while this one multiplies. */
  prefetch: boolean;
  /**
   * Stage each slice in its storage's orientation (consecutive threads write consecutive halves)
   * and load fragments row- or column-major to match, instead of always A[m][k] and B[k][n]
   * (which writes one of them column by column).
   */
  natural: boolean;
  /** Read A (B) as vec4<f32>: its contiguous extent (K, or M / N where transposed) is a multiple of 4. */
  vectorA: boolean;
  vectorB: boolean;
  /**
   * A tile wholly inside y stores its accumulators straight to storage (y += starts them from y's
   * values) instead of through the scratch, whose two barriers per accumulator double a short-K
   * tile's barriers; edge tiles keep the scratch's bounds checks. Only for a y that holds a whole
   * tile (planMmaGemm): the matrix accesses make Dawn require a binding of at least 1024 bytes.
   */
  directStore: boolean;
}

const F = 16; // the subgroup matrix side
const each = <T>(n: number, f: (i: number) => T) => Array.from({ length: n }, (_, i) => f(i));

export const mmaThreads = (s: MmaGemmShape) => s.warpsM * s.warpsN * 32;

/** How one operand's slice is read and staged. */
function layout(operand: "a" | "b", s: MmaGemmShape) {
  const rows = operand === "a" ? s.tileM : s.tileN; // the M (or N) extent of the slice
  // stored with K contiguous ([M, K] for A, [N, K] for B) or the row index contiguous
  const kContiguous = operand === "a" ? !s.aTransposed : !s.bTransposed;
  // the slice in workgroup memory as [k][row] (kMajor) or [row][k]; rows padded by 8 halves (16 bytes) against bank conflicts
  const kMajor = s.natural ? !kContiguous : operand === "b";
  const stride = kMajor ? rows + 8 : s.depth + 8;
  return {
    rows,
    kContiguous,
    kMajor,
    stride,
    halves: kMajor ? s.depth * stride : rows * stride,
    width: (operand === "a" ? s.vectorA : s.vectorB) ? 4 : 1,
  };
}

/** Workgroup bytes: A's and B's f16 slices and one f32 16x16 scratch per subgroup. */
export function mmaGemmSharedBytes(s: MmaGemmShape): number {
  return (layout("a", s).halves + layout("b", s).halves) * 2 + s.warpsM * s.warpsN * F * F * 4;
}

/**
 * One operand's slice: `count` loads per thread (of `width` consecutive words), load e = lid + i ·
 * THREADS mapped so that consecutive threads read consecutive words of storage, staged rounded to f16.
 */
function slice(operand: "a" | "b", s: MmaGemmShape) {
  const { rows, kContiguous, kMajor, stride, width } = layout(operand, s);
  const count = (rows * s.depth) / mmaThreads(s) / width;
  const extent = operand === "a" ? "shape.M" : "shape.N";
  const origin = operand === "a" ? "m0" : "n0";
  const coords = (i: number) =>
    kContiguous
      ? `let e${i} = lid + ${i}u * THREADS; let d${i} = (e${i} % ${s.depth / width}u) * ${width}u; let r${i} = e${i} / ${s.depth / width}u;`
      : `let e${i} = lid + ${i}u * THREADS; let r${i} = (e${i} % ${rows / width}u) * ${width}u; let d${i} = e${i} / ${rows / width}u;`;
  const element = (i: number) =>
    kContiguous ? `(${origin} + r${i}) * shape.K + k + d${i}` : `(k + d${i}) * ${extent} + ${origin} + r${i}`;
  const address = (i: number) => (width > 1 ? `(${element(i)}) / 4u` : element(i));
  // component c of a load is element (r, d + c) where K is contiguous, (r + c, d) where the row index is
  const local = (i: number, c: number) => {
    const [r, d] = kContiguous ? [`r${i}`, `d${i} + ${c}u`] : [`r${i} + ${c}u`, `d${i}`];
    return kMajor ? `(${d}) * ${stride}u + ${r}` : `(${r}) * ${stride}u + ${d}`;
  };
  const shared = operand === "a" ? "As" : "Bs";
  const reg = operand === "a" ? "ra" : "rb";
  const zero = width > 1 ? "vec4f()" : "0.0";
  const component = (i: number, c: number) => (width > 1 ? `${reg}[${i}][${c}]` : `${reg}[${i}]`);
  return {
    count,
    declare: `var ${reg}: array<${width > 1 ? "vec4f" : "f32"}, ${count}>;`,
    binding: `array<${width > 1 ? "vec4f" : "f32"}>`,
    /** Loads slice k into registers (zero outside the matrix or the K range; a vec4 is wholly in or out). */
    load: each(
      count,
      (i) =>
        `{ ${coords(i)} ${reg}[${i}] = ${zero}; if (${origin} + r${i} < ${extent} && k + d${i} < kEnd) { ${reg}[${i}] = ${operand}[${address(i)}]; } }`,
    ).join("\n      "),
    /** Writes the registers to workgroup memory, rounded to f16. */
    store: each(
      count,
      (i) => `{ ${coords(i)} ${each(width, (c) => `${shared}[${local(i, c)}] = f16(${component(i, c)});`).join(" ")} }`,
    ).join("\n      "),
    /** The fragment load of accumulator row (or column) `t` at the slice's 16-deep step kk. */
    fragment: (t: number, kk: number) => {
      const base = operand === "a" ? `wm + ${t * F}u` : `wn + ${t * F}u`;
      const type = operand === "a" ? "Left" : "Right";
      // Left is [m][k], Right [k][n]: row-major where the slice is stored that way, else column-major
      const rowMajor = operand === "a" ? !kMajor : kMajor;
      const offset = kMajor ? `${kk * F}u * ${stride}u + ${base}` : `(${base}) * ${stride}u + ${kk * F}u`;
      return `subgroupMatrixLoad<${type}, ${rowMajor ? "row_major" : "col_major"}>(&${shared}, ${offset}, ${stride}u)`;
    },
    halves: layout(operand, s).halves,
  };
}

export function mmaGemmWgsl(s: MmaGemmShape): string {
  const threads = mmaThreads(s);
  const fm = s.tileM / s.warpsM / F,
    fn = s.tileN / s.warpsN / F; // accumulators per subgroup along M and N
  if (!Number.isInteger(fm) || !Number.isInteger(fn) || s.depth % F !== 0)
    throw new Error(`mmaGemmWgsl: shape ${JSON.stringify(s)} does not tile by 16`);
  const a = slice("a", s),
    b = slice("b", s);
  if (!Number.isInteger(a.count) || !Number.isInteger(b.count))
    throw new Error(`mmaGemmWgsl: a slice of ${JSON.stringify(s)} does not split evenly over ${threads} threads`);
  const acc = (i: number, j: number) => `c${i}_${j}`;
  const mma = each(
    s.depth / F,
    (kk) =>
      `{ ${[
        ...each(fm, (i) => `let l${i} = ${a.fragment(i, kk)};`),
        ...each(fn, (j) => `let r${j} = ${b.fragment(j, kk)};`),
        ...each(fm, (i) => each(fn, (j) => `${acc(i, j)} = subgroupMatrixMultiplyAccumulate(l${i}, r${j}, ${acc(i, j)});`).join(" ")),
      ].join("\n        ")} }`,
  ).join("\n    ");
  // what the products add to: y itself (y +=), the residual, or nothing
  const addTo = s.accumulate ? "y" : s.residual ? "residual" : null;
  const write = addTo ? `${addTo}[at] + Cs[c]` : "Cs[c]";
  // y's element offset of accumulator (i, j)'s first element, [M, N]
  const at = (i: number, j: number) => `(m0 + wm + ${i * F}u) * shape.N + n0 + wn + ${j * F}u`;
  return /* wgsl */ `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
// every subgroup-matrix call runs in subgroup-uniform control flow (all loops are uniform over the workgroup)
diagnostic(off, chromium.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);

struct Shape { M: u32, N: u32, K: u32, tilesN: u32, tiles: u32, kPerSplit: u32, splits: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> a: ${a.binding};
@group(0) @binding(1) var<storage, read> b: ${b.binding};
@group(0) @binding(2) var<storage, read_write> y: array<f32>; // [splits, M, N] with split-K, else [M, N]
@group(0) @binding(3) var<uniform> shape: Shape;${s.residual ? "\n@group(0) @binding(4) var<storage, read> residual: array<f32>; // [M, N]: y = residual + A · B" : ""}

const THREADS = ${threads}u;
const DEPTH = ${s.depth}u;
alias Left = subgroup_matrix_left<f16, ${F}, ${F}>;
alias Right = subgroup_matrix_right<f16, ${F}, ${F}>;
alias Result = subgroup_matrix_result<f32, ${F}, ${F}>;
var<workgroup> As: array<f16, ${a.halves}>;
var<workgroup> Bs: array<f16, ${b.halves}>;
var<workgroup> Cs: array<f32, ${s.warpsM * s.warpsN * F * F}>; // one 16x16 scratch per subgroup

@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32, @builtin(subgroup_invocation_id) lane: u32) {
  let flat = wid.x + wid.y * groups.x;
  if (flat >= shape.tiles * shape.splits) { return; } // the grid's spill-over (uniform per workgroup)
  let split = flat / shape.tiles;
  let tile = flat % shape.tiles;
  let m0 = (tile / shape.tilesN) * ${s.tileM}u;
  let n0 = (tile % shape.tilesN) * ${s.tileN}u;
  let kBegin = split * shape.kPerSplit;
  let kEnd = min(shape.K, kBegin + shape.kPerSplit);
  let wm = (sg / ${s.warpsN}u) * ${fm * F}u; // this subgroup's block within the tile
  let wn = (sg % ${s.warpsN}u) * ${fn * F}u;
  ${each(fm, (i) => each(fn, (j) => `var ${acc(i, j)} = Result();`).join(" ")).join("\n  ")}
  ${
    s.directStore
      ? `// a tile wholly inside y (uniform per workgroup) stores straight to storage; y += (y = residual +) starts from y (residual)
  // (matrix loads and stores in storage take rows 16-byte aligned: N a multiple of 4)
  let interior = m0 + ${s.tileM}u <= shape.M && n0 + ${s.tileN}u <= shape.N && shape.N % 4u == 0u;
  ${
    addTo
      ? `if (interior && shape.splits == 1u) {
    ${each(fm, (i) => each(fn, (j) => `${acc(i, j)} = subgroupMatrixLoad<Result, row_major>(&${addTo}, ${at(i, j)}, shape.N);`).join("\n    ")).join("\n    ")}
  }`
      : ""
  }`
      : ""
  }
  ${a.declare}
  ${b.declare}
  ${s.prefetch ? `{ let k = kBegin;\n      ${a.load}\n      ${b.load}\n  }` : ""}
  for (var k = kBegin; k < kEnd; k += DEPTH) {
    ${s.prefetch ? "" : `${a.load}\n      ${b.load}`}
    ${a.store}
    ${b.store}
    workgroupBarrier();
    ${s.prefetch ? `{ let k = k + DEPTH;\n      ${a.load}\n      ${b.load}\n    }` : ""}
    ${mma}
    workgroupBarrier();
  }
  ${
    s.directStore
      ? `if (interior) {
    let base = select(0u, split * shape.M * shape.N, shape.splits > 1u); // split-K: this split's partial [M, N]
    ${each(fm, (i) => each(fn, (j) => `subgroupMatrixStore<row_major>(&y, base + ${at(i, j)}, ${acc(i, j)}, shape.N);`).join("\n    ")).join("\n    ")}
    return;
  }`
      : ""
  }
  // epilogue: each accumulator through this subgroup's scratch, 8 elements per lane, bounds-checked
  let scratch = sg * ${F * F}u;
  ${each(fm, (i) =>
    each(
      fn,
      (j) => `subgroupMatrixStore<row_major>(&Cs, scratch, ${acc(i, j)}, ${F}u);
  workgroupBarrier();
  for (var e = lane; e < ${F * F}u; e += 32u) {
    let row = m0 + wm + ${i * F}u + e / ${F}u;
    let col = n0 + wn + ${j * F}u + e % ${F}u;
    let c = scratch + e;
    if (row < shape.M && col < shape.N) {
      if (shape.splits > 1u) { y[(split * shape.M + row) * shape.N + col] = Cs[c]; }
      else { let at = row * shape.N + col; y[at] = ${write}; }
    }
  }
  workgroupBarrier();`,
    ).join("\n  "),
  ).join("\n  ")}
}
`;
}

export const MMA_GEMM: Kernel<MmaGemmShape> = {
  name: "gemm-mma",
  workgroupSize: 0, // depends on the shape: mmaThreads(shape)
  key: (s) =>
    `${+s.aTransposed}${+s.bTransposed}${+s.accumulate}${s.residual ? "r" : ""}-${s.tileM}x${s.tileN}-${s.warpsM}x${s.warpsN}-${s.depth}${s.prefetch ? "p" : ""}` +
    `${s.natural ? "n" : ""}${s.vectorA ? "va" : ""}${s.vectorB ? "vb" : ""}${s.directStore ? "d" : ""}`,
  wgsl: mmaGemmWgsl,
};

/** y[i] (+)= Σ_s partial[s · n + i], or residual[i] + Σ: split-K's reduction. */
export const SPLIT_SUM: Kernel<{ accumulate: boolean; residual: boolean }> = {
  name: "gemm-split-sum",
  workgroupSize: 256,
  key: (c) => `${+c.accumulate}${+c.residual}`,
  wgsl: (c) => /* wgsl */ `
struct P { n: u32, splits: u32 }
@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<uniform> p: P;${c.residual ? "\n@group(0) @binding(3) var<storage, read> residual: array<f32>;" : ""}
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32) {
  let i = (wid.x + wid.y * groups.x) * 256u + lid;
  if (i >= p.n) { return; }
  var sum = ${c.accumulate ? "y[i]" : c.residual ? "residual[i]" : "0.0"};
  for (var s = 0u; s < p.splits; s++) { sum += partial[s * p.n + i]; }
  y[i] = sum;
}
`,
};
