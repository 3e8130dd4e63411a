// Variants of the tensor-core forward (src/webgpu/attention/mma.wgsl.ts), timed on one full causal
// problem in one run: which part costs what (a phase left out), and candidate changes (padding,
// K and V read as matrices straight from storage, Q held in registers, longer key chunks).
// Each complete variant is checked against the first; the table lists ms, TFLOP/s and that error.
// Usage: node --import tsx dev/mma/variants.mts [TOKENS] [HEADS]
import { getDevice } from "../../src/webgpu/device.ts";
import { dispatch } from "../../src/webgpu/kernel.ts";
import { f16ToFloat, floatToF16 } from "../../src/io/half.ts";
import { relativeError, seeded, table } from "../../src/run/util.ts";

interface Variant {
  name: string;
  TQ: number;
  TK: number;
  pad: boolean;
  direct: boolean; // K and V as subgroup matrices loaded from storage
  qRegs: boolean; // Q fragments loaded once into registers (one row of S tiles: TQ = 16, or one S tile per subgroup)
  threads?: number; // default 128
  parallelRows?: boolean;
  /** O in registers for the whole key range (needs parallelRows, direct, 16 queries): rows rescaled through Os when m moves ("flag"), or every chunk ("always"). */
  oRegs?: "flag" | "always" | "never" | "single";
  threshold?: boolean;
  /** 16 queries, 128 threads: each subgroup's S tiles (TK / 64 of them) and O tiles (2) as independent, interleaved MMA chains. */
  interleave?: boolean;
  /** 32 queries, 128 threads, K/V from storage: Q fragments of both row tiles in registers, each K and V fragment used for both rows. */
  rows2?: boolean;
  /** 16 queries, TK 64, K from storage: the next chunk's K fragments are loaded while this chunk's softmax and P V run. */
  prefetchK?: boolean;
  /** 16 queries, TK 64, V from storage: this chunk's V fragments are loaded before its QK and softmax. */
  prefetchV?: boolean; // with oRegs: a row's m moves only when the chunk's max exceeds it by more than 8 // softmax: THREADS / TQ threads per row, all rows at once, O rescaled only where the max moved
  skip?: "qk" | "softmax" | "pv";
  /** V read from a transposed f16 copy [heads, D, tokens + pad] as column-major matrices: keys contiguous, so each lane's pair of keys is one 4-byte load. */
  vT?: boolean;
  /** K read from a transposed f16 copy [heads, D, tokens + pad] as row-major matrices (Kᵀ's rows are keys, contiguous). */
  kT?: boolean;
  /** With prefetchK: Q fragments loaded from workgroup memory at each use instead of held in registers (32 fewer registers per lane). */
  qShared?: boolean;
  /** With prefetchK: QK as this many independent MMA chains over the head dimension (summed in the softmax), instead of one chain 8 deep. */
  qkChains?: number;
  /** With oRegs: each P fragment loaded from workgroup memory for every MMA that uses it, instead of once per key step. */
  freshLeft?: boolean;
  /** With oRegs: every statement on an O tile in registers inside if (its column < 8) { ... }, and P V per tile (each P fragment loaded per MMA), as dq and dk/dv write theirs. */
  guarded?: boolean;
  /** With oRegs "never": the softmax of the correct kernel (rows of Os scaled where the max moved, which with the max fixed is only the zero O of the first chunk) instead of writing rowAlpha and the rescale flag. */
  plainSoftmax?: boolean;
  /** With oRegs "never": of the O-in-registers softmax's two writes, only rowAlpha[r] or only the rescale flag. */
  softmaxWrites?: "alpha" | "flag";
  /** With tilesPerGroup, prefetchK, prefetchV, kT: the next tile's first K and V chunk loaded during this tile's last chunk (as the next chunk's are within a tile). */
  crossTile?: boolean;
  /** Q fragments loaded straight from storage (the tile's rows are consecutive tokens), without staging the rows in workgroup memory. */
  qDirect?: boolean;
  /** Diagnostic: the output is not written (what a tile's end costs). */
  skipOut?: boolean;
  /** Each workgroup takes this many consecutive tiles one after another (fewer, longer-lived workgroups). */
  tilesPerGroup?: number;
  /** Tiles listed in a random order (the work is the same): do workgroups running side by side gain from reading the same K and V? */
  shuffle?: boolean;
  /** Each tile's key range cut into SEGMENT-key tiles, as MoBA's routed rounds have them (timing only: the output is not the attention), listed by query tile or by key segment. */
  segments?: "by query" | "by block";
  /** The rescale flag as a vec4<u32> (16 bytes) instead of a u32: see the twenty-second run. */
  flagVec4?: boolean;
  /** With oRegs: the O tiles declared after the K fragments instead of before. */
  declareLate?: boolean;
  /** A row's max fixed by its first chunk (as oRegs "never"), O otherwise as in the correct kernel. */
  fixedMax?: boolean;
  /** With oRegs: the O tiles start as zero matrices (Result()) instead of loaded from the zeroed Os. */
  zeroInit?: boolean;
  /** With oRegs "never": the O tiles are function-scope variables but still loaded from and stored to Os around every P V. */
  reloadEachChunk?: boolean;
  /** With oRegs: only the first this many of a subgroup's O tiles in registers, the others loaded from and stored to Os every chunk. */
  regSlots?: number;
  /** The softmax's row max and sum through workgroup memory instead of subgroup shuffles. */
  sharedReduce?: boolean;
  /** No barrier after P V: the next chunk's QK overlaps other subgroups' P V. */
  noPvBarrier?: boolean;
  /** With prefetchK, TQ 32, TK 64, 256 threads: a 2 x 4 grid of S tiles, one per subgroup (query tile sg / 4, key tile sg % 4), and O tiles (sg / 4, sg % 4 + 4 n). */
  grid?: boolean;
  /** K (as Kᵀ tiles) and/or V stored as contiguous 16 x 16 tiles, [heads, tokens / 16, D / 16, 16, 16]: a fragment is 512 consecutive bytes (4 cache lines) instead of 16 rows of 32 bytes in 16 lines. */
  tiled?: "k" | "v" | "kv";
  /** FlashAttention-2 layout: `split` subgroups per workgroup, each owning 16 query rows (all their S and O tiles), K and V read from storage by each (shared through L1). */
  split?: number;
}

const D = 128;

/** Every variant's extensions, the given constants, and the same parameters and bindings (one bind group serves all). */
function prologue(constants: string): string {
  return `enable f16;
enable subgroups;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
diagnostic(off, subgroup_uniformity);
${constants}
const MASKED = -3.0e38; const VISIBLE = -1.0e38;
struct Params { qHeads: u32, kvHeads: u32, tiles: u32, scale: f32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> tiles: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read> q: array<vec4<f16>>;
@group(0) @binding(3) var<storage, read> k: array<vec4<f16>>;
@group(0) @binding(4) var<storage, read> v: array<vec4<f16>>;
@group(0) @binding(5) var<storage, read> kh: array<f16>;
@group(0) @binding(6) var<storage, read> vh: array<f16>;
@group(0) @binding(7) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(8) var<storage, read> qh: array<f16>;`;
}

/** Every variant's tile: its descriptor, rows, head and kv head; the rows' softmax state; Q rows staged as f16 and O zeroed in workgroup memory. */
const TILE_PROLOGUE = `if (tile >= P.tiles) { return; }
  let a = tiles[2u * tile];
  let b = tiles[2u * tile + 1u];
  let count = a.y;
  let h = b.x;
  let g = h / (P.qHeads / P.kvHeads);
  if (lid < TQ) { rowToken[lid] = a.x + lid; rowM[lid] = MASKED; rowL[lid] = 0.0; }
  for (var e = lid; e < TQ * D4; e += THREADS) {
    let r = e / D4;
    var x = vec4<f16>(0.0);
    if (r < count) { x = q[((a.x + r) * P.qHeads + h) * D4 + e % D4]; }
    let at = r * QS + (e % D4) * 4u;
    Qs[at] = x.x; Qs[at + 1u] = x.y; Qs[at + 2u] = x.z; Qs[at + 3u] = x.w;
    let ot = r * OS + (e % D4) * 4u;
    Os[ot] = 0.0; Os[ot + 1u] = 0.0; Os[ot + 2u] = 0.0; Os[ot + 3u] = 0.0;
  }
  workgroupBarrier();`;

function wgsl(v: Variant): string {
  if (v.split) return splitWgsl(v);
  const p = v.pad ? 1 : 0;
  const QS = D + 8 * p, SS = v.TK + 4 * p, PS = v.TK + 8 * p, OS = D + 4 * p;
  const sTiles = (v.TQ / 16) * (v.TK / 16);
  const THREADS = v.threads ?? 128;
  const qRegs = v.qRegs && (sTiles === THREADS / 32 || v.TQ === 16);
  const R = THREADS / v.TQ; // threads per row in the parallel softmax
  const T = v.tilesPerGroup ?? 1;
  const flag = v.flagVec4 ? ".x" : ""; // the rescale flag's component
  // a tiled fragment: 16 x 16 tile (keyTile, dTile) of kv head g, 256 elements each
  const tileAt = (keyTile: string, dTile: string) => `((g * ${tokensPadded / 16}u + ${keyTile}) * ${D / 16}u + ${dTile}) * 256u`;
  const kRight = (j: string, d: string) => v.tiled?.includes("k")
    ? `subgroupMatrixLoad<Right>(&kh, ${tileAt(`k0 / 16u + ${j}`, `(${d}) / 16u`)}, false, 16u)`
    : v.kT
    ? `subgroupMatrixLoad<Right>(&kh, (g * D + ${d}) * TP + k0 + ${j} * 16u, false, TP)`
    : v.direct
    ? `subgroupMatrixLoad<Right>(&kh, ((k0 + ${j} * 16u) * P.kvHeads + g) * D + ${d}, true, P.kvHeads * D)`
    : `subgroupMatrixLoad<Right>(&KVs, ${j} * 16u * QS + ${d}, true, QS)`;
  const vRight = (kk: string, j: string) => v.tiled?.includes("v")
    ? `subgroupMatrixLoad<Right>(&vh, ${tileAt(`(k0 + ${kk}) / 16u`, j)}, false, 16u)`
    : v.vT
    ? `subgroupMatrixLoad<Right>(&vh, (g * D + ${j} * 16u) * TP + k0 + ${kk}, true, TP)`
    : v.direct
    ? `subgroupMatrixLoad<Right>(&vh, ((k0 + ${kk}) * P.kvHeads + g) * D + ${j} * 16u, false, P.kvHeads * D)`
    : `subgroupMatrixLoad<Right>(&KVs, ${kk} * QS + ${j} * 16u, false, QS)`;
  const stage = (src: string) => v.direct ? "" : `
    for (var e = lid; e < TK * D4; e += THREADS) {
      let key = k0 + e / D4;
      var x = vec4<f16>(0.0);
      if (key < a.w) { x = ${src}[(key * P.kvHeads + g) * D4 + e % D4]; }
      let at = (e / D4) * QS + (e % D4) * 4u;
      KVs[at] = x.x; KVs[at + 1u] = x.y; KVs[at + 2u] = x.z; KVs[at + 3u] = x.w;
    }
    workgroupBarrier();`;
  const sChains = Array.from({ length: v.TK / 64 }, (_, n) => n);
  const oChains = [0, 1];
  const interleavedQk = `{
      ${sChains.map((n) => `var s${n} = Result();`).join(" ")}
      ${Array.from({ length: D / 16 }, (_, d) => sChains.map((n) => `s${n} = subgroupMatrixMultiplyAccumulate(qf${d}, ${kRight(`(sg + ${4 * n}u)`, `${d * 16}u`)}, s${n});`).join(" ")).join("\n      ")}
      ${sChains.map((n) => `subgroupMatrixStore(&Ss, (sg + ${4 * n}u) * 16u, s${n}, false, SS);`).join(" ")}
    }`;
  const interleavedPv = `{
      ${oChains.map((n) => `var o${n} = subgroupMatrixLoad<Result>(&Os, (sg + ${4 * n}u) * 16u, false, OS);`).join(" ")}
      for (var kk = 0u; kk < TK; kk += 16u) {
        let pl = subgroupMatrixLoad<Left>(&Ps, kk, false, PS);
        ${oChains.map((n) => `o${n} = subgroupMatrixMultiplyAccumulate(pl, ${vRight("kk", `(sg + ${4 * n}u)`)}, o${n});`).join(" ")}
      }
      ${oChains.map((n) => `subgroupMatrixStore(&Os, (sg + ${4 * n}u) * 16u, o${n}, false, OS);`).join(" ")}
    }`;
  const both = [0, 1];
  const rows2Qk = `
    for (var j = sg; j < TK / 16u; j += subgroups) {
      ${both.map((i) => `var s${i} = Result();`).join(" ")}
      ${Array.from({ length: D / 16 }, (_, d) => `{ let kf = ${kRight("j", `${d * 16}u`)}; ${both.map((i) => `s${i} = subgroupMatrixMultiplyAccumulate(qr${i}_${d}, kf, s${i});`).join(" ")} }`).join("\n      ")}
      ${both.map((i) => `subgroupMatrixStore(&Ss, ${i * 16}u * SS + j * 16u, s${i}, false, SS);`).join(" ")}
    }`;
  const rows2Pv = `
    for (var j = sg; j < D / 16u; j += 2u * subgroups) {
      let j1 = j + subgroups;
      ${both.map((i) => `var o${i}a = subgroupMatrixLoad<Result>(&Os, ${i * 16}u * OS + j * 16u, false, OS); var o${i}b = subgroupMatrixLoad<Result>(&Os, ${i * 16}u * OS + j1 * 16u, false, OS);`).join("\n      ")}
      for (var kk = 0u; kk < TK; kk += 16u) {
        ${both.map((i) => `let p${i} = subgroupMatrixLoad<Left>(&Ps, ${i * 16}u * PS + kk, false, PS);`).join(" ")}
        let va = ${vRight("kk", "j")};
        let vb = ${vRight("kk", "j1")};
        ${both.map((i) => `o${i}a = subgroupMatrixMultiplyAccumulate(p${i}, va, o${i}a); o${i}b = subgroupMatrixMultiplyAccumulate(p${i}, vb, o${i}b);`).join("\n        ")}
      }
      ${both.map((i) => `subgroupMatrixStore(&Os, ${i * 16}u * OS + j * 16u, o${i}a, false, OS); subgroupMatrixStore(&Os, ${i * 16}u * OS + j1 * 16u, o${i}b, false, OS);`).join("\n      ")}
    }`;
  const dims = Array.from({ length: D / 16 }, (_, d) => d);
  const chains = Array.from({ length: v.qkChains ?? 1 }, (_, c) => c);
  const sArray = (c: number) => (c === 0 ? "Ss" : `Ss${c}`);
  // the prefetching variants' S tile: key tile kTile of query tile qTile (grid), else key tile sg of the 16 queries
  const [kTile, qTile] = v.grid ? ["(sg % 4u)", "(sg / 4u)"] : ["sg", "0u"];
  // the cross-tile prefetch: K fragments of the chunk at key K0 of kv head G
  const kAt = (G: string, K0: string, d: number) => `subgroupMatrixLoad<Right>(&kh, (${G} * D + ${d * 16}u) * TP + ${K0} + ${kTile} * 16u, false, TP)`;
  const prefetchQk = `{
      ${chains.map((c) => `var s${c} = Result();`).join(" ")}
      ${dims.map((d) => `s${d % chains.length} = subgroupMatrixMultiplyAccumulate(${v.qShared ? `subgroupMatrixLoad<Left>(&Qs, ${d * 16}u, false, QS)` : `qf${d}`}, kf${d}, s${d % chains.length});`).join("\n      ")}
      ${chains.map((c) => `subgroupMatrixStore(&${sArray(c)}, ${qTile} * 16u * SS + ${kTile} * 16u, s${c}, false, SS);`).join(" ")}
      // the next chunk's K (rows past the range are the zero padding or masked keys)
      ${v.crossTile ? dims.map((d) => `kf${d} = ${kAt("nextG", "nextK0", d)};`).join("\n      ") : dims.map((d) => `kf${d} = ${kRight(`(${kTile} + ${v.TK / 16}u)`, `${d * 16}u`)};`).join("\n      ")}
    }`;
  // the prefetching variants: one S tile per subgroup (TQ 16, TK = 16 x subgroups), O tiles sg, sg + subgroups, ...
  const SGc = THREADS / 32;
  const keySteps = Array.from({ length: v.TK / 16 }, (_, kk) => kk);
  const pvChains = Array.from({ length: v.grid ? 2 : D / 16 / SGc }, (_, n) => n);
  const oColumn = (n: number) => (v.grid ? `(sg % 4u + ${4 * n}u)` : `(sg + ${SGc * n}u)`);
  const vLoads = keySteps.flatMap((kk) => pvChains.map((n) => `let vf${kk}_${n} = ${vRight(`${kk * 16}u`, oColumn(n))};`)).join("\n    ");
  // the cross-tile prefetch: V fragments of the chunk at key K0 of kv head G (kAt, K's, above)
  const vAt = (G: string, K0: string, kk: number, n: number) => `subgroupMatrixLoad<Right>(&vh, ((${K0} + ${kk * 16}u) * P.kvHeads + ${G}) * D + ${oColumn(n)} * 16u, false, P.kvHeads * D)`;
  const crossLoads = (G: string, K0: string, keyword: string) => [
    ...dims.map((d) => `${keyword}kf${d} = ${kAt(G, K0, d)};`),
    ...keySteps.flatMap((kk) => pvChains.map((n) => `${keyword}vf${kk}_${n} = ${vAt(G, K0, kk, n)};`)),
  ].join("\n  ");
  const prefetchedPv = `{
      ${pvChains.map((n) => `var o${n} = subgroupMatrixLoad<Result>(&Os, ${qTile} * 16u * OS + ${oColumn(n)} * 16u, false, OS);`).join(" ")}
      ${keySteps.map((kk) => `{ let pl = subgroupMatrixLoad<Left>(&Ps, ${qTile} * 16u * PS + ${kk * 16}u, false, PS); ${pvChains.map((n) => `o${n} = subgroupMatrixMultiplyAccumulate(pl, vf${kk}_${n}, o${n});`).join(" ")} }`).join("\n      ")}
      ${pvChains.map((n) => `subgroupMatrixStore(&Os, ${qTile} * 16u * OS + ${oColumn(n)} * 16u, o${n}, false, OS);`).join(" ")}
    }`;
  const qk = v.skip === "qk" ? "" : v.prefetchK ? prefetchQk : v.rows2 ? rows2Qk : v.interleave ? interleavedQk : qRegs ? `
    for (var t = sg; t < (TQ / 16u) * (TK / 16u); t += subgroups) {
      let i = t / (TK / 16u);
      let j = t % (TK / 16u);
      var s = Result();
      ${Array.from({ length: D / 16 }, (_, d) => `s = subgroupMatrixMultiplyAccumulate(qf${d}, ${kRight("j", `${d * 16}u`)}, s);`).join("\n      ")}
      subgroupMatrixStore(&Ss, i * 16u * SS + j * 16u, s, false, SS);
    }` : `
    for (var t = sg; t < (TQ / 16u) * (TK / 16u); t += subgroups) {
      let i = t / (TK / 16u);
      let j = t % (TK / 16u);
      var s = Result();
      for (var d = 0u; d < D; d += 16u) {
        let ql = subgroupMatrixLoad<Left>(&Qs, i * 16u * QS + d, false, QS);
        s = subgroupMatrixMultiplyAccumulate(ql, ${kRight("j", "d")}, s);
      }
      subgroupMatrixStore(&Ss, i * 16u * SS + j * 16u, s, false, SS);
    }`;
  const softmax = v.skip === "softmax" ? `for (var e = lid; e < TQ * TK; e += THREADS) { Ps[(e / TK) * PS + e % TK] = f16(Ss[(e / TK) * SS + e % TK] * 0.001); }` : v.parallelRows ? `{
      let r = lid / ${R}u;
      let part = lid % ${R}u;
      let token = rowToken[r];
      let mOld = rowM[r];
      let lOld = rowL[r];
      var localMax = MASKED;
      for (var i = 0u; i < TK / ${R}u; i++) {
        let col = part + i * ${R}u;
        let key = k0 + col;
        var x = MASKED;
        if (r < count && key < a.w && key <= token) { x = P.scale * (${chains.map((c) => `${sArray(c)}[r * SS + col]`).join(" + ")}); }
        Ss[r * SS + col] = x;
        localMax = max(localMax, x);
      }
      ${v.sharedReduce ? `red[lid] = localMax; workgroupBarrier(); for (var i = 0u; i < ${R}u; i++) { localMax = max(localMax, red[r * ${R}u + i]); } workgroupBarrier();` : Array.from({ length: Math.log2(R) }, (_, i) => `localMax = max(localMax, subgroupShuffleXor(localMax, ${2 ** i}u));`).join("\n      ")}
      let mNew = ${v.oRegs === "never" || v.fixedMax ? "select(mOld, localMax, mOld == MASKED)" : v.threshold ? "select(mOld, localMax, localMax > mOld + 8.0)" : "max(mOld, localMax)"};
      var localSum = 0.0;
      for (var i = 0u; i < TK / ${R}u; i++) {
        let col = part + i * ${R}u;
        let x = Ss[r * SS + col];
        var p = 0.0;
        if (x > VISIBLE) { p = exp(x - mNew); }
        Ps[r * PS + col] = f16(p);
        localSum += p;
      }
      ${v.sharedReduce ? `red[lid] = localSum; workgroupBarrier(); localSum = 0.0; for (var i = 0u; i < ${R}u; i++) { localSum += red[r * ${R}u + i]; }` : Array.from({ length: Math.log2(R) }, (_, i) => `localSum += subgroupShuffleXor(localSum, ${2 ** i}u);`).join("\n      ")}
      let alpha = exp(mOld - mNew);
      ${v.oRegs === "single" ? `if (part == 0u) { rowAlpha[r] = alpha; rowMoved[r] = u32(alpha != 1.0 && lOld > 0.0); }` : v.oRegs && v.softmaxWrites === "alpha" ? `if (part == 0u) { rowAlpha[r] = alpha; }` : v.oRegs && v.softmaxWrites === "flag" ? `if (part == 0u && alpha != 1.0 && lOld > 0.0) { rescale${flag} = 1u; }` : v.oRegs && !v.plainSoftmax ? `if (part == 0u) { rowAlpha[r] = alpha; if (alpha != 1.0 && lOld > 0.0) { rescale${flag} = 1u; } }` : `if (alpha != 1.0) { for (var i = 0u; i < D / ${R}u; i++) { Os[r * OS + part + i * ${R}u] *= alpha; } }`}
      if (part == 0u) { rowM[r] = mNew; rowL[r] = lOld * alpha + localSum; }
    }` : `
    for (var r = sg; r < TQ; r += subgroups) {
      let token = rowToken[r];
      var localMax = MASKED;
      for (var col = lane; col < TK; col += sgSize) {
        let key = k0 + col;
        var x = MASKED;
        if (r < count && key < a.w && key <= token) { x = P.scale * Ss[r * SS + col]; }
        Ss[r * SS + col] = x;
        localMax = max(localMax, x);
      }
      let mOld = rowM[r];
      let mNew = max(mOld, subgroupMax(localMax));
      var localSum = 0.0;
      for (var col = lane; col < TK; col += sgSize) {
        let x = Ss[r * SS + col];
        var p = 0.0;
        if (x > VISIBLE) { p = exp(x - mNew); }
        Ps[r * PS + col] = f16(p);
        localSum += p;
      }
      let alpha = exp(mOld - mNew);
      let sum = subgroupAdd(localSum);
      if (lane == 0u) { rowM[r] = mNew; rowL[r] = rowL[r] * alpha + sum; }
      for (var col = lane; col < D; col += sgSize) { Os[r * OS + col] *= alpha; }
    }`;
  // O in registers: subgroup sg holds its O tiles oColumn(n) (D = 128, 16 queries), the first regSlots of them
  const slots = pvChains.slice(0, v.regSlots ?? pvChains.length);
  const sharedSlots = pvChains.slice(slots.length);
  const guard = (n: number, body: string) => (v.guarded ? `if (${oColumn(n)} < ${D / 16}u) { ${body} }` : body);
  const rescaleO = `{
      ${slots.map((n) => guard(n, `subgroupMatrixStore(&Os, ${oColumn(n)} * 16u, o${n}, false, OS);`)).join(" ")}
      workgroupBarrier();
      let r = lid / ${R}u;
      let part = lid % ${R}u;
      for (var i = 0u; i < D / ${R}u; i++) { Os[r * OS + part + i * ${R}u] *= rowAlpha[r]; }
      workgroupBarrier();
      ${slots.map((n) => guard(n, `o${n} = subgroupMatrixLoad<Result>(&Os, ${oColumn(n)} * 16u, false, OS);`)).join(" ")}
    }`;
  const afterSoftmax = !v.oRegs ? "workgroupBarrier();" : v.oRegs === "single" ? `workgroupBarrier();
    // one writer: the racy flag of the "flag" forms corrupted O on this driver
    if (lid == 0u) {
      var moved = 0u;
      for (var i = 0u; i < TQ; i++) { moved |= rowMoved[i]; }
      rescale${flag} = moved;
    }
    if (workgroupUniformLoad(&rescale)${flag} == 1u) {
      ${rescaleO}
    }` : v.oRegs === "never" ? "workgroupBarrier();" : v.oRegs === "always" ? `workgroupBarrier();
    ${rescaleO}` : `if (workgroupUniformLoad(&rescale)${flag} == 1u) {
      ${rescaleO}
      if (lid == 0u) { rescale${flag} = 0u; }
    }`;
  // O in registers, the key steps unrolled and V prefetched (the 17th run's form)
  const pLeft = (kk: string) => `subgroupMatrixLoad<Left>(&Ps, ${kk}, false, PS)`;
  const pUse = (kk: string) => (v.freshLeft ? pLeft(kk) : "pl");
  const pLet = (kk: string) => (v.freshLeft ? "" : `let pl = ${pLeft(kk)};`);
  // the O tiles not in registers: loaded, accumulated and stored back every chunk
  const sharedSlotsPv = (right: (kk: string, n: number) => string) => sharedSlots.map((n) => `{
      var o = subgroupMatrixLoad<Result>(&Os, ${oColumn(n)} * 16u, false, OS);
      ${keySteps.map((kk) => `o = subgroupMatrixMultiplyAccumulate(${pLeft(`${kk * 16}u`)}, ${right(`${kk * 16}u`, n)}, o);`).join(" ")}
      subgroupMatrixStore(&Os, ${oColumn(n)} * 16u, o, false, OS);
    }`).join("\n    ");
  const unrolledRegsPv = (v.guarded
    ? slots.map((n) => guard(n, keySteps.map((kk) => `o${n} = subgroupMatrixMultiplyAccumulate(${pLeft(`${kk * 16}u`)}, vf${kk}_${n}, o${n});`).join("\n      "))).join("\n    ")
    : keySteps.map((kk) => `{ ${pLet(`${kk * 16}u`)} ${slots.map((n) => `o${n} = subgroupMatrixMultiplyAccumulate(${pUse(`${kk * 16}u`)}, vf${kk}_${n}, o${n});`).join(" ")} }`).join("\n    ")) +
    sharedSlotsPv((kk, n) => `vf${Number(kk.slice(0, -1)) / 16}_${n}`);
  const guardedPv = slots.map((n) => guard(n, keySteps.map((kk) => `o${n} = subgroupMatrixMultiplyAccumulate(${pLeft(`${kk * 16}u`)}, ${vRight(`${kk * 16}u`, oColumn(n))}, o${n});`).join("\n      "))).join("\n    ");
  const reloadedPv = `${slots.map((n) => `o${n} = subgroupMatrixLoad<Result>(&Os, ${oColumn(n)} * 16u, false, OS);`).join(" ")}
    ${unrolledRegsPv}
    ${slots.map((n) => `subgroupMatrixStore(&Os, ${oColumn(n)} * 16u, o${n}, false, OS);`).join(" ")}`;
  const pv = v.skip === "pv" ? "" : v.reloadEachChunk ? reloadedPv : v.oRegs && v.prefetchV ? unrolledRegsPv : v.oRegs && v.guarded ? guardedPv + sharedSlotsPv((kk, n) => vRight(kk, oColumn(n))) : v.prefetchV ? prefetchedPv : v.rows2 ? rows2Pv : v.interleave ? interleavedPv : v.oRegs ? `
    for (var kk = 0u; kk < TK; kk += 16u) {
      ${pLet("kk")}
      ${slots.map((n) => `o${n} = subgroupMatrixMultiplyAccumulate(${pUse("kk")}, ${vRight("kk", oColumn(n))}, o${n});`).join("\n      ")}
    }
    ${sharedSlotsPv((kk, n) => vRight(kk, oColumn(n)))}` : `
    for (var t = sg; t < (TQ / 16u) * (D / 16u); t += subgroups) {
      let i = t / (D / 16u);
      let j = t % (D / 16u);
      var o = subgroupMatrixLoad<Result>(&Os, i * 16u * OS + j * 16u, false, OS);
      for (var kk = 0u; kk < TK; kk += 16u) {
        let pl = subgroupMatrixLoad<Left>(&Ps, i * 16u * PS + kk, false, PS);
        o = subgroupMatrixMultiplyAccumulate(pl, ${vRight("kk", "j")}, o);
      }
      subgroupMatrixStore(&Os, i * 16u * OS + j * 16u, o, false, OS);
    }`;
  return `${prologue(`const D = ${D}u; const D4 = ${D / 4}u; const TQ = ${v.TQ}u; const TK = ${v.TK}u; const THREADS = ${THREADS}u;
const QS = ${QS}u; const SS = ${SS}u; const PS = ${PS}u; const OS = ${OS}u; const TP = ${tokensPadded}u;`)}
var<workgroup> Qs: array<f16, ${v.TQ * QS}>;
${v.direct ? "" : `var<workgroup> KVs: array<f16, ${v.TK * QS}>;`}
var<workgroup> Ss: array<f32, ${v.TQ * SS}>;
${(v.qkChains ?? 1) > 1 ? Array.from({ length: (v.qkChains ?? 1) - 1 }, (_, c) => `var<workgroup> Ss${c + 1}: array<f32, ${v.TQ * SS}>;`).join("\n") : ""}
var<workgroup> Ps: array<f16, ${v.TQ * PS}>;
var<workgroup> Os: array<f32, ${v.TQ * OS}>;
var<workgroup> rowToken: array<u32, ${v.TQ}>;
var<workgroup> rowM: array<f32, ${v.TQ}>;
var<workgroup> rowL: array<f32, ${v.TQ}>;
var<workgroup> rowAlpha: array<f32, ${v.TQ}>;
var<workgroup> rescale: ${v.flagVec4 ? "vec4<u32>" : "u32"};
var<workgroup> rowMoved: array<u32, ${v.TQ}>;
var<workgroup> red: array<f32, ${THREADS}>;
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;
alias Result = subgroup_matrix_result<f32, 16, 16>;
@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32, @builtin(subgroup_size) sgSize: u32, @builtin(subgroup_invocation_id) lane: u32) {
  ${v.crossTile ? `let firstTile = (wid.x + wid.y * nwg.x) * ${T}u;
  if (firstTile >= P.tiles) { return; }
  let firstA = tiles[2u * firstTile];
  let firstG = tiles[2u * firstTile + 1u].x / (P.qHeads / P.kvHeads);
  ${crossLoads("firstG", "firstA.z", "var ")}` : ""}
  ${T > 1 ? `for (var ti = 0u; ti < ${T}u; ti++) {
  let tile = (wid.x + wid.y * nwg.x) * ${T}u + ti;` : "let tile = wid.x + wid.y * nwg.x;"}
  _ = q[0]; _ = k[0]; _ = v[0]; _ = kh[0]; _ = vh[0]; _ = qh[0]; _ = out[0]; // every variant has the same bindings ("auto" layouts drop unused ones)
  ${(v.qDirect ? TILE_PROLOGUE.replace("if (r < count) { x = q[((a.x + r) * P.qHeads + h) * D4 + e % D4]; }", "") : TILE_PROLOGUE).replace("{ return; }", T > 1 ? "{ break; }" : "{ return; }")}
  let subgroups = THREADS / sgSize;
  ${v.rows2 ? [0, 1].flatMap((i) => Array.from({ length: D / 16 }, (_, d) => `let qr${i}_${d} = subgroupMatrixLoad<Left>(&Qs, ${i * 16}u * QS + ${d * 16}u, false, QS);`)).join("\n  ") : ""}
  ${qRegs && !v.rows2 && !v.qShared ? Array.from({ length: D / 16 }, (_, d) => v.qDirect ? `let qf${d} = subgroupMatrixLoad<Left>(&qh, (a.x * P.qHeads + h) * D + ${d * 16}u, false, P.qHeads * D);` : `let qf${d} = subgroupMatrixLoad<Left>(&Qs, (sg / (TK / 16u)) * 16u * QS + ${d * 16}u, false, QS);`).join("\n  ") : ""}
  ${(v.oRegs || v.reloadEachChunk) && !v.declareLate ? slots.map((n) => v.zeroInit || v.reloadEachChunk ? `var o${n} = Result();` : v.guarded ? `var o${n} = Result(); ${guard(n, `o${n} = subgroupMatrixLoad<Result>(&Os, ${oColumn(n)} * 16u, false, OS);`)}` : `var o${n} = subgroupMatrixLoad<Result>(&Os, ${oColumn(n)} * 16u, false, OS);`).join("\n  ") : ""}
  ${v.prefetchK && !v.crossTile ? dims.map((d) => `var kf${d} = ${kRight(kTile, `${d * 16}u`).replace("k0", "a.z")};`).join("\n  ") : ""}
  ${v.crossTile ? `// the next tile's coordinates, for the prefetch in this tile's last chunk
  var nextA = a;
  var nextTileG = g;
  if (ti + 1u < ${T}u && tile + 1u < P.tiles) { nextA = tiles[2u * tile + 2u]; nextTileG = tiles[2u * tile + 3u].x / (P.qHeads / P.kvHeads); }` : ""}
  ${v.oRegs && v.declareLate ? slots.map((n) => v.zeroInit || v.reloadEachChunk ? `var o${n} = Result();` : v.guarded ? `var o${n} = Result(); ${guard(n, `o${n} = subgroupMatrixLoad<Result>(&Os, ${oColumn(n)} * 16u, false, OS);`)}` : `var o${n} = subgroupMatrixLoad<Result>(&Os, ${oColumn(n)} * 16u, false, OS);`).join("\n  ") : ""}
  for (var k0 = a.z; k0 < a.w; k0 += TK) {
    ${v.crossTile ? `let lastChunk = k0 + TK >= a.w;
    let nextK0 = select(k0 + TK, nextA.z, lastChunk);
    let nextG = select(g, nextTileG, lastChunk);` : v.prefetchV ? vLoads : ""}
    ${stage("k")}
    ${qk}
    workgroupBarrier();
    ${softmax}
    ${afterSoftmax}
    ${stage("v")}
    ${pv}
    ${v.crossTile ? keySteps.flatMap((kk) => pvChains.map((n) => `vf${kk}_${n} = ${vAt("nextG", "nextK0", kk, n)};`)).join("\n    ") : ""}
    ${v.noPvBarrier ? "// no barrier: the next chunk's QK writes only Ss, which every subgroup finished reading before the barrier above; the barrier after QK orders this P V before the next softmax" : "workgroupBarrier();"}
  }
  ${v.noPvBarrier ? "workgroupBarrier();" : ""}
  ${v.oRegs && !v.reloadEachChunk ? slots.map((n) => guard(n, `subgroupMatrixStore(&Os, ${oColumn(n)} * 16u, o${n}, false, OS);`)).join("\n  ") + "\n  workgroupBarrier();" : ""}
  for (var e = lid; e < TQ * D4; e += THREADS) {
    let r = e / D4;
    if (r < count) {
      let ot = r * OS + (e % D4) * 4u;
      ${v.skipOut ? "// (diagnostic: out not written)" : "out[((a.x + r) * P.qHeads + h) * D4 + e % D4] = vec4<f32>(Os[ot], Os[ot + 1u], Os[ot + 2u], Os[ot + 3u]) / rowL[r];"}
    }
  }
  ${T > 1 ? "workgroupBarrier(); // the next tile restages Qs and Os\n  }" : ""}
}`;
}

/** FlashAttention-2's layout in subgroup matrices: subgroup sg owns query rows [16 sg, 16 sg + 16), its 4 S tiles and 8 O tiles. */
function splitWgsl(v: Variant): string {
  const SG = v.split!;
  const TQ = 16 * SG, THREADS = 32 * SG, R = THREADS / TQ;
  const QS = D + 8, SS = v.TK + 4, PS = v.TK + 8, OS = D + 4;
  const kTiles = v.TK / 16, dims = Array.from({ length: D / 16 }, (_, d) => d), keys = Array.from({ length: kTiles }, (_, j) => j);
  const kRight = (j: number, d: number) => v.kT
    ? `subgroupMatrixLoad<Right>(&kh, (g * D + ${d * 16}u) * TP + k0 + ${j * 16}u, false, TP)`
    : `subgroupMatrixLoad<Right>(&kh, ((k0 + ${j * 16}u) * P.kvHeads + g) * D + ${d * 16}u, true, P.kvHeads * D)`;
  const vRight = (kk: number, j: number) => v.vT
    ? `subgroupMatrixLoad<Right>(&vh, (g * D + ${j * 16}u) * TP + k0 + ${kk * 16}u, true, TP)`
    : `subgroupMatrixLoad<Right>(&vh, ((k0 + ${kk * 16}u) * P.kvHeads + g) * D + ${j * 16}u, false, P.kvHeads * D)`;
  const shuffle = (x: string, op: (a: string, b: string) => string) =>
    Array.from({ length: Math.log2(R) }, (_, i) => `${x} = ${op(x, `subgroupShuffleXor(${x}, ${2 ** i}u)`)};`).join(" ");
  return `${prologue(`const D = ${D}u; const D4 = ${D / 4}u; const TQ = ${TQ}u; const TK = ${v.TK}u; const THREADS = ${THREADS}u; const R = ${R}u;
const QS = ${QS}u; const SS = ${SS}u; const PS = ${PS}u; const OS = ${OS}u; const TP = ${tokensPadded}u;`)}
var<workgroup> Qs: array<f16, ${TQ * QS}>;
var<workgroup> Ss: array<f32, ${TQ * SS}>;
var<workgroup> Ps: array<f16, ${TQ * PS}>;
var<workgroup> Os: array<f32, ${TQ * OS}>;
var<workgroup> rowToken: array<u32, ${TQ}>;
var<workgroup> rowM: array<f32, ${TQ}>;
var<workgroup> rowL: array<f32, ${TQ}>;
alias Left = subgroup_matrix_left<f16, 16, 16>;
alias Right = subgroup_matrix_right<f16, 16, 16>;
alias Result = subgroup_matrix_result<f32, 16, 16>;
@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(subgroup_id) sg: u32) {
  let tile = wid.x + wid.y * nwg.x;
  _ = q[0]; _ = k[0]; _ = v[0]; _ = kh[0]; _ = vh[0]; _ = qh[0]; _ = out[0];
  ${TILE_PROLOGUE}
  let row0 = sg * 16u; // this subgroup's rows
  ${dims.map((d) => `let q${d} = subgroupMatrixLoad<Left>(&Qs, row0 * QS + ${d * 16}u, false, QS);`).join("\n  ")}
  let r = lid / R;
  let part = lid % R;
  for (var k0 = a.z; k0 < a.w; k0 += TK) {
    {
      ${keys.map((j) => `var s${j} = Result();`).join(" ")}
      ${dims.map((d) => keys.map((j) => `s${j} = subgroupMatrixMultiplyAccumulate(q${d}, ${kRight(j, d)}, s${j});`).join(" ")).join("\n      ")}
      ${keys.map((j) => `subgroupMatrixStore(&Ss, row0 * SS + ${j * 16}u, s${j}, false, SS);`).join(" ")}
    }
    workgroupBarrier();
    {
      let token = rowToken[r];
      let mOld = rowM[r];
      let lOld = rowL[r];
      var rowMax = MASKED;
      for (var i = 0u; i < TK / R; i++) {
        let col = part + i * R;
        let key = k0 + col;
        var x = MASKED;
        if (r < count && key < a.w && key <= token) { x = P.scale * Ss[r * SS + col]; }
        Ss[r * SS + col] = x;
        rowMax = max(rowMax, x);
      }
      ${shuffle("rowMax", (x, y) => `max(${x}, ${y})`)}
      let mNew = max(mOld, rowMax);
      var rowSum = 0.0;
      for (var i = 0u; i < TK / R; i++) {
        let col = part + i * R;
        let x = Ss[r * SS + col];
        var p = 0.0;
        if (x > VISIBLE) { p = exp(x - mNew); }
        Ps[r * PS + col] = f16(p);
        rowSum += p;
      }
      ${shuffle("rowSum", (x, y) => `${x} + ${y}`)}
      let alpha = exp(mOld - mNew);
      if (alpha != 1.0) { for (var i = 0u; i < D / R; i++) { Os[r * OS + part + i * R] *= alpha; } }
      if (part == 0u) { rowM[r] = mNew; rowL[r] = lOld * alpha + rowSum; }
    }
    workgroupBarrier();
    {
      ${keys.map((kk) => `let p${kk} = subgroupMatrixLoad<Left>(&Ps, row0 * PS + ${kk * 16}u, false, PS);`).join(" ")}
      ${dims.map((j) => `{
        var o = subgroupMatrixLoad<Result>(&Os, row0 * OS + ${j * 16}u, false, OS);
        ${keys.map((kk) => `o = subgroupMatrixMultiplyAccumulate(p${kk}, ${vRight(kk, j)}, o);`).join(" ")}
        subgroupMatrixStore(&Os, row0 * OS + ${j * 16}u, o, false, OS);
      }`).join("\n      ")}
    }
    workgroupBarrier();
  }
  for (var e = lid; e < TQ * D4; e += THREADS) {
    let row = e / D4;
    if (row < count) {
      let ot = row * OS + (e % D4) * 4u;
      out[((a.x + row) * P.qHeads + h) * D4 + e % D4] = vec4<f32>(Os[ot], Os[ot + 1u], Os[ot + 2u], Os[ot + 3u]) / rowL[row];
    }
  }
}`;
}

const tokens = Number(process.argv[2] ?? 32768);
const heads = Number(process.argv[3] ?? 8);
const SEGMENT = 512; // keys per tile of the "segments" variants: a MoBA block of the 32K benchmark
const maxTK = 256; // two chunks of up to 128: the prefetch reads one chunk ahead
const tokensPadded = tokens + maxTK;
// Second run (same card and problem): the parallel-row softmax, 8 threads per row, O rescaled only where
// the max moved: 212.7 -> 114.2 ms at 32/32; K/V from storage, Q in registers, 16/64: 103.4 -> 77.1 ms
// (73.3 without the softmax), now the kernel in src/; 16/128 113.0; 32/64 105.4; K/V staged 168.2.
// what was measured on an H200 (2026-11-25, 32768 tokens x 8 heads): src 221.6 ms; without the softmax
// 106.0; without QK 196.2, without PV 208.9; unpadded 270.0; K/V from storage 242.3, with TK 64 159.5,
// with Q in registers at TQ 16 / TK 64 105.0 ms. The softmax (one row per subgroup at a time) costs half.
const base: Variant = { name: "src (padded, K/V staged)", TQ: 32, TK: 32, pad: true, direct: false, qRegs: false };
const best: Variant = { ...base, name: "K/V from storage, Q regs, 16/64", direct: true, qRegs: true, TQ: 16, TK: 64 };
const fast: Variant = { ...best, name: "16/64, parallel rows (src/)", parallelRows: true };
// Third run: O in registers across the key range is wrong on this driver (relative error 1.4 in all
// three forms, even rescaling through Os every chunk, which only moves where O lives between chunks)
// and no faster (87.2 / 77.7 / 73.3 ms against 76.8): left here, not in src/.
// Fourth run: without QK 39.5 ms, without PV 44.0 (of 76.8): each matrix phase runs at about 30
// TFLOP/s, one chain of dependent MMAs per subgroup (8 deep in QK, 4 deep twice in PV). 256 threads:
// 78.1 (16/64), 89.7 (16/128).
// Fifth run: interleaving independent MMA chains does not help (74.2 ms at 16/64; 98.0 at 16/128,
// 94.5 at 16/256): not latency-bound on one chain. Next guess: K and V traffic, each fragment serving 16 queries.
// Sixth run: 32 queries sharing each K and V fragment between two row tiles 70.5 ms (+9%, predicted
// 2x if K/V traffic bound: it is not); at 32/32 88.8.
// Seventh run (H100): K of the next chunk loaded during this chunk's softmax and P V: 74.7 -> 69.4 ms,
// correct (loop-carried subgroup matrices work on this driver; O in registers failed for another reason).
// Eighth run (H100): this chunk's V loaded before QK 72.2 ms, both prefetches 66.5 against 75.5:
// taken into src/ (the kernel there is now "both").
// Ninth run (H100): V transposed for column-major loads, and FlashAttention-2's layout (each subgroup
// owns 16 query rows and all their tiles; 1 or 2 subgroups per workgroup).
const src: Variant = { ...fast, name: "16/64, K next chunk, V before QK", prefetchK: true, prefetchV: true };
const split: Variant = { ...fast, name: "split, 1 subgroup", split: 1 };
const ninth: Variant[] = [
  { ...src, name: "... V transposed", vT: true },
  split,
  { ...split, name: "split, 1 subgroup, V transposed", vT: true },
  { ...split, name: "split, 2 subgroups", split: 2, TQ: 32 },
  { ...split, name: "split, 2 subgroups, V transposed", split: 2, TQ: 32, vT: true },
  { ...split, name: "split, 1 subgroup, V transposed", vT: true, TK: 32 },
  { ...split, name: "split, 2 subgroups, V transposed", split: 2, TQ: 32, TK: 32, vT: true },
];
// Ninth run: V transposed 83.9 ms against 66.6 (column-major loads of V slower than row-major);
// split, 1 subgroup 116.1, 2 subgroups 123.4 (with V transposed 123.1 / 140.8; TK 32 141.4 / 162.4).
// Tenth run: the mirror, K transposed so Kᵀ loads row-major.
// Tenth run: K transposed 52.7 ms against 69.5 (41.7 TFLOP/s): row-major loads from storage are the
// fast ones; K and V transposed 66.3; split with K transposed 111.1 (1 subgroup), 107.9 (2).
const kTsrc: Variant = { ...src, name: "src/ (Kᵀ row-major)", kT: true };
// Eleventh run: src/ with K transposed 48.8 ms (45.1 TFLOP/s; 51.6 before: machine spread); K
// prefetch only 54.5, V prefetch only 58.5; O in registers still wrong (1.4) at 48.6 / 47.9.
// Twelfth run: 16/128 with 256 threads and both prefetches 56.5 ms against 49.2; without prefetch 91.8;
// V prefetch only 69.2.
// Thirteenth run: 64 threads at 16/32 61.0 ms, 32 threads at 16/16 73.7, against 58.1 for src/ with
// Kᵀ in that run (the first variant ran cold: runs since warm up first). Kᵀ taken into src/.
// Fourteenth run: the barrier after P V dropped (the barrier after QK already orders each chunk's
// P V before the next softmax), and 64 threads again, warm.
// Result: 48.3 ms; without the barrier 49.2; 64 threads 60.6, without the barrier 61.9.
// Fifteenth run: Q fragments from workgroup memory at each use (fewer registers, maybe more
// workgroups per SM).
// Result: Q from workgroup memory 51.6 ms (54.1 without V prefetch) against 48.1.
// Sixteenth run: QK as 2 or 4 independent MMA chains (the loads are fast since Kᵀ; maybe the MMA
// chain's latency shows now): 54.4 and 87.4 ms against 47.9 (with no barrier after P V 51.5): not
// latency-bound on the chain, as before.
// Seventeenth run: the dk/dv kernel went from 4 subgroups to 8 (one S or dP tile each, a staged
// chunk serving 32 keys) and ran 2.4x faster; the same here: 32 queries, 8 subgroups, each one S
// tile of a 2 x 4 grid and two O tiles, K and V fragments prefetched as in src/.
const grid: Variant = { ...kTsrc, name: "... 32 queries, 8 subgroups, S tile grid", TQ: 32, threads: 256, grid: true };
// Result: 55.8 ms, 64.2 without V prefetch, 54.4 without the barrier after P V, against 48.4: slower.
// Eighteenth run: O in registers again, now that the backward keeps dq, dK and dV in registers
// across chunks correctly: P V unrolled over the key steps with V prefetched (the wrong forms ran a
// loop over them), rescaled through Os every chunk, or only when a row's max moves by more than 8
// (p ≤ e^8 fits f16). The output buffer is now poisoned before every variant.
// Result (4096 x 1 and 32768 x 8 heads; MOBA_ERROR_MAP=1 at 256 tokens): every O-in-registers form
// still wrong, error 1.4 ≈ √2 in every 16 x 16 block, so the values have the right size but are
// not the right ones (uncorrelated with the reference), also with the rescale never run (m fixed by
// the first chunk), without any prefetch, and with the row max and sum reduced through workgroup
// memory instead of subgroup shuffles (that form alone is correct: 5.8e-8). Timings of the wrong
// forms, for what O in registers might give: 45.0 ms (e^8) against 48.5. The same change in src/
// (f16 check on the H100) failed 9 of 14 cases, NaN in several. Cause not found; dq, dK and dV
// in registers are correct (they have no softmax state, no rescale, no P·V from prefetched V).
// Nineteenth run: what the failing forms share and the backward's correct ones do not. dq keeps one
// accumulator per subgroup on 8 subgroups, and every left fragment it multiplies is loaded for that
// one MMA; the forward's O-in-registers forms keep two per subgroup on 4 subgroups and multiply each
// P fragment into both. Diagnostics (m fixed by the first chunk, so no rescale is involved): each
// P fragment loaded per MMA; only one of the two O tiles in registers; 8 subgroups with one O tile each
// (TK 128: one S tile per subgroup); no barrier after P V.
const never: Variant = { ...kTsrc, name: "... O in registers, never rescaled, no prefetch (the failing control)", oRegs: "never", prefetchV: false, prefetchK: false };
// Result (H100): every form still wrong (1.4), 8 subgroups with one O tile each included; the wrong
// forms with prefetch ran 44.6 ms against 49.0. dq and dk/dv differ in one more way: each statement
// on an accumulator sits inside if (tile < count) { ... }, its initial load too.
// Twentieth run: O in registers written that way (guarded).
// Result: still wrong in every guarded form (1.4), 45.7 ms against 48.2.
// Twenty-first run: is it the register-held O at all? O declared at function scope but loaded from
// and stored to Os around every P V (the correct kernel's dataflow), O started as Result() instead of
// loaded, and the error map (tokens 0-15 are one chunk: nothing is carried across chunks there).
// Result (256 tokens, against float64): all wrong, tokens 0-15 as well, the reloaded form too: the
// fault is not in how O is kept. Twenty-second run: the differences left one at a time — the max
// fixed alone (right), the O-in-registers softmax's two writes (rowAlpha[r]: right; the rescale
// flag, a var<workgroup> u32: wrong), and the flag as a vec4<u32>: right in every form, one writer
// or many. So a 4-byte workgroup variable in the shader corrupts the subgroup-matrix results on this
// driver. 32K x 8 heads: src/ 48.5 ms; O in registers, m moving by more than 8, flag a vec4 45.3;
// one writer 45.5 (45.2 without the barrier after P V); m never moving (diagnostic) 44.3. Taken into
// src/ with the rows' flags read by workgroupUniformLoad and no flag variable (48.5 -> 45.3 here;
// the bench's full forward 51.6-51.9 -> 48.5-48.6 ms). The list below is the 21st and 22nd runs.
const twentyFirst: Variant[] = [
  kTsrc,
  { ...kTsrc, name: "... the max fixed by the first chunk only", fixedMax: true },
  { ...kTsrc, name: "... function-scope O reloaded every chunk, rescaled through Os", oRegs: "always", reloadEachChunk: true },
  { ...kTsrc, name: "... max fixed, function-scope O reloaded every chunk, the correct kernel's softmax", fixedMax: true, reloadEachChunk: true },
  { ...kTsrc, name: "... never, O in registers, the correct kernel's softmax", oRegs: "never", plainSoftmax: true },
  { ...kTsrc, name: "... never, O in registers, softmax writes the flag only, flag a vec4", oRegs: "never", softmaxWrites: "flag", flagVec4: true },
  { ...kTsrc, name: "... O in registers, e^8 flag, flag a vec4", oRegs: "flag", threshold: true, flagVec4: true },
  { ...kTsrc, name: "... O in registers, one writer, flag a vec4", oRegs: "single", flagVec4: true },
  { ...kTsrc, name: "... O in registers, one writer, e^8, flag a vec4", oRegs: "single", threshold: true, flagVec4: true },
  { ...kTsrc, name: "... O in registers, one writer, e^8, flag a vec4, no barrier after P V", oRegs: "single", threshold: true, flagVec4: true, noPvBarrier: true },
  { ...kTsrc, name: "... O in registers, one writer of the rescale flag", oRegs: "single" },
  { ...kTsrc, name: "... O in registers, one writer, e^8", oRegs: "single", threshold: true },
  { ...kTsrc, name: "... O in registers, one writer, e^8, no barrier after P V", oRegs: "single", threshold: true, noPvBarrier: true },
  { ...kTsrc, name: "... never, O in registers, softmax writes rowAlpha only", oRegs: "never", softmaxWrites: "alpha" },
  { ...kTsrc, name: "... never, O in registers, softmax writes the flag only", oRegs: "never", softmaxWrites: "flag" },
  { ...kTsrc, name: "... never, O in registers, declared after the K fragments", oRegs: "never", declareLate: true },
  { ...kTsrc, name: "... e^8 flag, O in registers, declared after the K fragments", oRegs: "flag", threshold: true, declareLate: true },
  { ...kTsrc, name: "... never, function-scope O reloaded every chunk", oRegs: "never", reloadEachChunk: true },
  { ...kTsrc, name: "... never, O from Result()", oRegs: "never", zeroInit: true },
  { ...kTsrc, name: "... never, O loaded before the loop", oRegs: "never" },
];
const twentieth: Variant[] = [
  kTsrc,
  { ...never, name: "... never, no prefetch, guarded", guarded: true },
  { ...kTsrc, name: "... never, prefetch, guarded", oRegs: "never", guarded: true },
  { ...kTsrc, name: "... e^8 flag, prefetch, guarded", oRegs: "flag", threshold: true, guarded: true },
  { ...kTsrc, name: "... rescale when m moves, prefetch, guarded", oRegs: "flag", guarded: true },
  { ...kTsrc, name: "... 8 subgroups, TK 128, e^8 flag, guarded", oRegs: "flag", threshold: true, threads: 256, TK: 128, guarded: true },
];
const nineteenth: Variant[] = [
  never,
  { ...never, name: "... never, P loaded per MMA", freshLeft: true },
  { ...never, name: "... never, one O tile in registers", regSlots: 1 },
  { ...never, name: "... never, one O tile in registers, P per MMA", regSlots: 1, freshLeft: true },
  { ...never, name: "... never, 8 subgroups, TK 128, one O tile each", threads: 256, TK: 128 },
  { ...never, name: "... never, no barrier after P V", noPvBarrier: true },
  { ...kTsrc, name: "... never, prefetch, P per MMA", oRegs: "never", freshLeft: true },
  { ...kTsrc, name: "... never, prefetch, 8 subgroups, TK 128", oRegs: "never", threads: 256, TK: 128 },
  { ...kTsrc, name: "... e^8 flag, prefetch, P per MMA", oRegs: "flag", threshold: true, freshLeft: true },
  { ...kTsrc, name: "... e^8 flag, prefetch, 8 subgroups, TK 128", oRegs: "flag", threshold: true, threads: 256, TK: 128 },
  { ...kTsrc, name: "... 8 subgroups, TK 128 (O through Os)", threads: 256, TK: 128 },
];
// Twenty-third run: why MoBA's rounds cost 1.3-1.5x full attention per query-key pair. A fit of
// the profiles (own-block tiles of 4.6 chunks on average, routed ones of 8) gives ~2.5 us fixed per
// tile but ~8.8 us per chunk per workgroup, against ~6.3 in full attention's long tiles: the chunks
// themselves are slower. Guess: in full attention, workgroups running side by side on an SM read
// the same K and V chunks at about the same time (every tile walks keys from 0), so L1 serves most
// of them; a routed round's neighbours read different blocks. Full attention with its tiles
// shuffled, and cut into 512-key tiles (as routed rounds are) listed by query tile, by key block,
// or shuffled: timing only for the cut ones.
const twentyThird: Variant[] = [
  kTsrc,
  { ...kTsrc, name: "... tiles shuffled", shuffle: true },
  { ...kTsrc, name: "... 512-key tiles by query tile", segments: "by query" },
  { ...kTsrc, name: "... 512-key tiles by key block", segments: "by block" },
  { ...kTsrc, name: "... 512-key tiles shuffled", segments: "by block", shuffle: true },
  { ...kTsrc, name: "... Q fragments from storage", qDirect: true },
  { ...kTsrc, name: "... 512-key tiles by key block, Q fragments from storage", segments: "by block", qDirect: true },
  { ...kTsrc, name: "... 512-key tiles by key block, out not written (diagnostic)", segments: "by block", skipOut: true },
  { ...kTsrc, name: "... 512-key tiles by key block, Q from storage, 4 per workgroup", segments: "by block", qDirect: true, tilesPerGroup: 4 },
  { ...kTsrc, name: "... 512-key tiles by key block, 4 per workgroup, next tile's first chunk prefetched", segments: "by block", tilesPerGroup: 4, crossTile: true },
  { ...kTsrc, name: "... 512-key tiles by key block, 16 per workgroup, next tile's first chunk prefetched", segments: "by block", tilesPerGroup: 16, crossTile: true },
  { ...kTsrc, name: "... 4 tiles per workgroup, next tile's first chunk prefetched", tilesPerGroup: 4, crossTile: true },
  { ...kTsrc, name: "... 4 tiles per workgroup", tilesPerGroup: 4 },
  { ...kTsrc, name: "... 512-key tiles by key block, 4 per workgroup", segments: "by block", tilesPerGroup: 4 },
  { ...kTsrc, name: "... 512-key tiles by key block, 16 per workgroup", segments: "by block", tilesPerGroup: 16 },
];
// Result (H100, ms, 1 head / 8 heads): src/ 6.65-6.89 / 48.6; shuffled 7.00-7.21 / 50.4-50.6 (+4-5%:
// neighbours sharing K and V in L1 is worth a little); cut into 512-key tiles 7.2-8.0 / 60.4-63.5
// (+8-17% / +24-30%, the same work: short tiles are what costs, about 14 us per tile at 8 heads,
// with no softmax state to load or store here); 4 whole tiles per workgroup 6.62 / 49.5; 512-key
// tiles 4 per workgroup 7.73 / 58.8, 16 per workgroup 14.0 / 56.6 (fewer launches win back 4-7% at
// 8 heads, and lose where the tiles are too few to fill the GPU). Then, at 8 / 1 heads: Q fragments
// read straight from storage instead of staged rows 64.2 / 8.35 against 61.2 / 7.86 (slower); out
// not written (diagnostic) 60.1 / 7.64 (the tile's end costs ~2%). Not taken: what is left is the
// first chunk of every tile, whose K and V loads nothing overlaps (a long tile prefetches each next
// chunk during the current one). Last, workgroups that prefetch their next tile's first K and V
// chunk during the current tile's last one (crossTile): 512-key tiles, 16 per workgroup 54.9 / 7.30
// against 56.2 / 7.61 without the prefetch and 60.4 / 7.87 one per workgroup (whole tiles: 49.6 /
// 6.66); 4 per workgroup no gain (58.4 against 58.3). Half the short-tile cost comes back, but only
// with 16 tiles per workgroup, and a routed round of the 32K x 8 benchmark has ~17K tiles: 1K
// workgroups, two waves on 132 SMs. Not taken.
// 24th run: K and V fragments as contiguous 16 x 16 tiles (512 bytes, 4 cache lines) instead of 16
// rows of 32 bytes, each in its own line. Guess: the loads cost per cache line touched, not per byte.
const oRegs: Variant = { ...kTsrc, name: "src/ (O in registers, e^8 flag as a vec4, no barrier after P V)", oRegs: "flag", threshold: true, flagVec4: true, noPvBarrier: true };
const twentyFourth: Variant[] = [
  oRegs,
  { ...oRegs, name: "... K tiled", tiled: "k" },
  { ...oRegs, name: "... V tiled", tiled: "v" },
  { ...oRegs, name: "... K and V tiled", tiled: "kv" },
  kTsrc,
  { ...kTsrc, name: "... K and V tiled", tiled: "kv" },
  { ...kTsrc, name: "... K and V tiled, 32 queries sharing K and V fragments", tiled: "kv", TQ: 32, rows2: true, prefetchK: false, prefetchV: false },
  { ...kTsrc, name: "... 32 queries sharing K and V fragments", TQ: 32, rows2: true, prefetchK: false, prefetchV: false },
];
// Result (H100, ms): src/'s form 44.85, K tiled 36.92, V tiled 39.37, both 31.73 (69.3 TFLOP/s,
// identical output); the first session's src/ 48.73, tiled 34.74; 32 queries sharing K and V
// fragments 61.50, tiled 50.10. Tiles taken into src/ (33.5 ms there).
// 25th run: with loads this cheap, do the layouts that lost to load costs win now? Tiled: 8
// subgroups at TK 128 (half the chunks, so half the barriers per key), 32 queries as a 2 x 4 grid on
// 8 subgroups, and TK 32.
const tiledSrc: Variant = { ...oRegs, name: "src/ (O in registers, K and V tiled)", tiled: "kv" };
const twentyFifth: Variant[] = [
  tiledSrc,
  { ...tiledSrc, name: "... 8 subgroups, TK 128", threads: 256, TK: 128, guarded: true },
  { ...kTsrc, name: "... 32 queries, 8 subgroups, S tile grid (O through workgroup memory)", TQ: 32, threads: 256, grid: true, tiled: "kv", flagVec4: true },
  { ...kTsrc, name: "... 16 queries, O through workgroup memory (the grid's control)", tiled: "kv", flagVec4: true },
  { ...tiledSrc, name: "... tiles shuffled (do neighbours still share K and V?)", shuffle: true },
];
// Result (H100, ms): tiled src/ 31.65; 8 subgroups at TK 128 42.91; the 32-query grid 40.23 against
// 34.77 for its 16-query control (O through workgroup memory both); tiles shuffled 38.22 (+21%,
// against +4-5% with strided loads: with cheap loads, neighbouring workgroups reading the same K and
// V through L1/L2 matter much more). Nothing taken.
// 26th run: short tiles (full attention cut into 512-key tiles listed by key block, as MoBA's
// routed rounds are) with fewer registers per thread, so more workgroups per SM hide each tile's
// first chunk: V not prefetched (32 registers), Q fragments read from workgroup memory at each use (32).
const shortTiles: Variant = { ...tiledSrc, name: "tiled src/, 512-key tiles by key block", segments: "by block" };
const twentySixth: Variant[] = [
  tiledSrc,
  shortTiles,
  { ...shortTiles, name: "... V not prefetched", prefetchV: false },
  { ...shortTiles, name: "... Q fragments from workgroup memory", qShared: true },
  { ...shortTiles, name: "... both", prefetchV: false, qShared: true },
  { ...tiledSrc, name: "whole tiles, V not prefetched", prefetchV: false },
  { ...tiledSrc, name: "whole tiles, Q fragments from workgroup memory", qShared: true },
];
// Result (H100, ms, 8 heads / 1 head): whole tiles 31.89 / 4.08; cut into 512-key tiles 37.25 / 4.76
// (+17%, +24-30% with strided loads); V not prefetched 42.28 / 5.40; Q from workgroup memory 38.81 /
// 4.86; both 41.65 / 5.37 (whole tiles: 37.57 / 4.45 and 32.12 / 4.18). Registers do not bound the
// short tiles: nothing taken.
const variants = process.env.MOBA_VARIANTS ? twentySixth.filter((_, i) => i === 0 || process.env.MOBA_VARIANTS!.split(",").includes(String(i))) : twentySixth;
const eighteenth: Variant[] = [
  { ...kTsrc, name: "... O in registers, unrolled, rescale every chunk", oRegs: "always" },
  { ...kTsrc, name: "... O in registers, unrolled, m moves beyond e^8", oRegs: "flag", threshold: true },
  { ...kTsrc, name: "... O in registers, unrolled, rescale when m moves", oRegs: "flag" },
  { ...kTsrc, name: "... O in registers, never rescaled (diagnostic: m fixed by the first chunk)", oRegs: "never" },
  { ...kTsrc, name: "... never rescaled, no V prefetch", oRegs: "never", prefetchV: false },
  { ...kTsrc, name: "... never rescaled, no prefetch", oRegs: "never", prefetchV: false, prefetchK: false },
  { ...kTsrc, name: "... row max and sum through workgroup memory", sharedReduce: true },
  { ...kTsrc, name: "... O in registers, e^8, reductions through workgroup memory", oRegs: "flag", threshold: true, sharedReduce: true },
  { ...kTsrc, name: "... O in registers, every chunk, reductions through workgroup memory", oRegs: "always", sharedReduce: true },
];
const earlier: Variant[] = [
  ...twentyFirst.slice(1),
  ...twentieth.slice(1),
  ...nineteenth,
  ...eighteenth,
  grid,
  { ...grid, name: "... grid, no V prefetch", prefetchV: false },
  { ...grid, name: "... grid, no barrier after P V", noPvBarrier: true },
  { ...kTsrc, name: "... QK as 2 chains", qkChains: 2 },
  { ...kTsrc, name: "... QK as 4 chains", qkChains: 4 },
  { ...kTsrc, name: "... QK as 2 chains, no barrier after P V", qkChains: 2, noPvBarrier: true },
  { ...kTsrc, name: "... 256 threads, 16/128", threads: 256, TK: 128 },
  { ...kTsrc, name: "... 16/128, no prefetch", TK: 128, prefetchK: false, prefetchV: false },
  { ...kTsrc, name: "... 256 threads, 16/128, V prefetch only", threads: 256, TK: 128, prefetchK: false },
  { ...kTsrc, name: "... 64 threads, 16/32", threads: 64, TK: 32 },
  { ...kTsrc, name: "... 32 threads, 16/16", threads: 32, TK: 16 },
  { ...kTsrc, name: "... K prefetch only", prefetchV: false },
  { ...kTsrc, name: "... V prefetch only", prefetchK: false },
  { ...kTsrc, name: "... O in registers, rescale every chunk", oRegs: "always", prefetchV: false },
  { ...kTsrc, name: "... O in registers, rescale when m moves", oRegs: "flag", prefetchV: false },
  { ...kTsrc, name: "... O in registers, m moves beyond e^8", oRegs: "flag", threshold: true, prefetchV: false },
  { ...kTsrc, name: "... no QK", skip: "qk" },
  { ...kTsrc, name: "... no PV", skip: "pv" },
  { ...kTsrc, name: "... no softmax", skip: "softmax" },
  { ...kTsrc, name: "... 32 queries sharing K, V fragments", TQ: 32, qRegs: false, rows2: true, prefetchK: false, prefetchV: false },
  { ...kTsrc, name: "... no prefetch", prefetchK: false, prefetchV: false },
  { ...src, name: "... K and V transposed", kT: true, vT: true },
  { ...split, name: "split, 1 subgroup, K transposed", kT: true },
  { ...split, name: "split, 2 subgroups, K transposed", split: 2, TQ: 32, kT: true },
  ...ninth,
  base,
  fast,
  { ...fast, name: "... next chunk's K loaded during softmax and P V", prefetchK: true },
  { ...fast, name: "... this chunk's V loaded before QK", prefetchV: true },
  { ...fast, name: "... 32 queries, K/V fragments shared by 2 rows", TQ: 32, qRegs: false, rows2: true },
  { ...fast, name: "... 32 queries, shared fragments, 32/32", TQ: 32, TK: 32, qRegs: false, rows2: true },
  { ...fast, name: "... interleaved chains, 16/64", interleave: true },
  { ...fast, name: "... interleaved chains, 16/128", interleave: true, TK: 128 },
  { ...fast, name: "... interleaved chains, 16/256", interleave: true, TK: 256 },
  { ...fast, name: "... no QK", skip: "qk" },
  { ...fast, name: "... no PV", skip: "pv" },
  { ...fast, name: "... 256 threads, 16/64", threads: 256 },
  { ...fast, name: "... 256 threads, 16/128", threads: 256, TK: 128 },
  { ...fast, name: "... O in registers, rescale every chunk", oRegs: "always" },
  { ...fast, name: "... O in registers, rescale when m moves", oRegs: "flag" },
  { ...fast, name: "... O in registers, m moves beyond e^8", oRegs: "flag", threshold: true },
  { ...base, name: "parallel rows", parallelRows: true },
  best,
  { ...best, name: "... + parallel rows", parallelRows: true },
  { ...best, name: "... no softmax", skip: "softmax" },
  { ...best, name: "... parallel rows, 16/128", parallelRows: true, TK: 128 },
  { ...best, name: "... parallel rows, 32/64", parallelRows: true, TQ: 32 },
  { ...best, name: "... parallel rows, K/V staged", parallelRows: true, direct: false },
  { ...best, name: "... parallel rows, 32/64, 256 threads", parallelRows: true, TQ: 32, threads: 256 },
  { ...best, name: "... parallel rows, 16/32", parallelRows: true, TK: 32 },
  { ...best, name: "... parallel rows, 32/32, 128 threads, Q regs", parallelRows: true, TQ: 32, TK: 32 },
];
// MOBA_PRINT_VARIANT=i prints variant i's WGSL and stops (no device needed)
if (process.env.MOBA_PRINT_VARIANT) {
  console.log(wgsl(variants[Number(process.env.MOBA_PRINT_VARIANT)]));
  process.exit(0);
}
const gpu = await getDevice();
const device = gpu.device;
const random = seeded(7);
// f16 inputs with maxTK zero rows past the end, so matrices read straight from storage stay in bounds
const half = (rows: number, spread: number) => {
  const x = new Uint16Array((rows + maxTK) * heads * D);
  for (let i = 0; i < rows * heads * D; i++) x[i] = floatToF16((random() * 2 - 1) * spread);
  return x;
};
const buffer = (data: ArrayBufferView, usage = GPUBufferUsage.STORAGE) => {
  const b = device.createBuffer({ size: Math.ceil(data.byteLength / 16) * 16, usage: usage | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC });
  device.queue.writeBuffer(b, 0, data.buffer, data.byteOffset, data.byteLength);
  return b;
};
const [qData, kData, vData] = [half(tokens, 2), half(tokens, 2), half(tokens, 1)];
const q = buffer(qData), k = buffer(kData), v = buffer(vData);
// V transposed, [heads, D, tokens + maxTK]: the layout a column-major Right load of V reads with keys contiguous
const transposed = (x: Uint16Array) => {
  const y = new Uint16Array(heads * D * tokensPadded);
  for (let t = 0; t < tokens; t++) for (let h = 0; h < heads; h++) for (let d = 0; d < D; d++) y[(h * D + d) * tokensPadded + t] = x[(t * heads + h) * D + d];
  return buffer(y);
};
const kT = transposed(kData), vT = transposed(vData);
// the tiled layouts [heads, tokensPadded / 16, D / 16, 16, 16]: Kᵀ tiles (rows d, columns keys) and V tiles (rows keys, columns d)
const tiledCopy = (x: Uint16Array, transpose: boolean) => {
  const y = new Uint16Array(heads * D * tokensPadded);
  const keyTiles = tokensPadded / 16;
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      for (let d = 0; d < D; d++) {
        const base = ((h * keyTiles + Math.floor(t / 16)) * (D / 16) + Math.floor(d / 16)) * 256;
        y[base + (transpose ? (d % 16) * 16 + (t % 16) : (t % 16) * 16 + (d % 16))] = x[(t * heads + h) * D + d];
      }
    }
  }
  return buffer(y);
};
const kTiled = tiledCopy(kData, true), vTiled = tiledCopy(vData, false);
const out = device.createBuffer({ size: tokens * heads * D * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
const flops = 4 * D * heads * (tokens * (tokens + 1)) / 2;

async function run(variant: Variant): Promise<{ ms: number; out: Float32Array | null }> {
  let list: number[][] = [];
  for (let t = Math.ceil(tokens / variant.TQ) - 1; t >= 0; t--) {
    for (let h = 0; h < heads; h++) {
      const start = t * variant.TQ, count = Math.min(variant.TQ, tokens - start);
      if (!variant.segments) list.push([start, count, 0, start + count, h, 0, 0, 0]);
      else for (let s = 0; s < start + count; s += SEGMENT) list.push([start, count, s, Math.min(s + SEGMENT, start + count), h, 0, 0, 0]);
    }
  }
  // segments "by block": every tile of one key segment (and head) together, as a routed round lists them
  if (variant.segments === "by block") list.sort((x, y) => x[2] - y[2] || x[4] - y[4] || x[0] - y[0]);
  if (variant.shuffle) {
    const random = seeded(11);
    for (let i = list.length - 1; i > 0; i--) {
      const j = Math.floor(random() * (i + 1));
      [list[i], list[j]] = [list[j], list[i]];
    }
  }
  const words = list.flat();
  list = [];
  const tiles = buffer(Uint32Array.from(words));
  const params = new ArrayBuffer(16);
  new Uint32Array(params).set([heads, heads, words.length / 8]);
  new Float32Array(params)[3] = 1 / Math.sqrt(D);
  const uniform = buffer(new Uint8Array(params), GPUBufferUsage.UNIFORM);
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code: wgsl(variant) });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === "error");
  if (errors.length) throw new Error(`line ${errors[0].lineNum}: ${errors[0].message}`);
  const pipe = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const error = await device.popErrorScope();
  if (error) throw new Error(error.message);
  // NaN in every element first: a variant that leaves an element unwritten shows as an error, not as the previous variant's value
  device.queue.writeBuffer(out, 0, new Float32Array(out.size / 4).fill(Number.NaN));
  const once = () => {
    const encoder = device.createCommandEncoder();
    dispatch(encoder, gpu, pipe, [uniform, tiles, q, k, v, variant.tiled?.includes("k") ? kTiled : variant.kT ? kT : k, variant.tiled?.includes("v") ? vTiled : variant.vT ? vT : v, out, q], Math.ceil(words.length / 8 / (variant.tilesPerGroup ?? 1)), variant.name);
    device.queue.submit([encoder.finish()]);
    return device.queue.onSubmittedWorkDone();
  };
  await once();
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await once();
    times.push(performance.now() - t0);
  }
  times.sort((x, y) => x - y);
  let result: Float32Array | null = null;
  if (!variant.skip) {
    const staging = device.createBuffer({ size: out.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const encoder = device.createCommandEncoder();
    encoder.copyBufferToBuffer(out, 0, staging, 0, out.size);
    device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    result = new Float32Array(staging.getMappedRange().slice(0));
    staging.destroy();
  }
  return { ms: times[2], out: result };
}

/** MOBA_ERROR_MAP=1: each variant's relative error by 16-token x 16-column block of the first head (rows of blocks: tokens), where an error has a pattern. */
function errorMap(x: Float32Array, ref: Float32Array): string {
  const lines: string[] = [];
  for (let t0 = 0; t0 < Math.min(tokens, 256); t0 += 16) {
    const cells: string[] = [];
    for (let d0 = 0; d0 < D; d0 += 16) {
      let [e, n] = [0, 0];
      for (let t = t0; t < Math.min(t0 + 16, tokens); t++) {
        for (let d = d0; d < d0 + 16; d++) {
          const i = t * heads * D + d;
          e += (x[i] - ref[i]) ** 2;
          n += ref[i] ** 2;
        }
      }
      cells.push(Math.sqrt(e / n).toExponential(0));
    }
    lines.push(`  tokens ${t0}: ${cells.join(" ")}`);
  }
  return lines.join("\n");
}

/** Causal attention in float64 on the f16 inputs (heads share nothing here: kv head = head), for runs of at most 4096 tokens. */
function float64Reference(): Float32Array | null {
  if (tokens > 4096) return null;
  const y = new Float32Array(tokens * heads * D);
  const at = (x: Uint16Array, t: number, h: number, d: number) => f16ToFloat(x[(t * heads + h) * D + d]);
  const scores = new Float64Array(tokens);
  for (let h = 0; h < heads; h++) {
    for (let t = 0; t < tokens; t++) {
      let max = -Infinity;
      for (let s = 0; s <= t; s++) {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += at(qData, t, h, d) * at(kData, s, h, d);
        scores[s] = dot / Math.sqrt(D);
        max = Math.max(max, scores[s]);
      }
      let sum = 0;
      for (let s = 0; s <= t; s++) sum += (scores[s] = Math.exp(scores[s] - max));
      for (let d = 0; d < D; d++) {
        let o = 0;
        for (let s = 0; s <= t; s++) o += scores[s] * at(vData, s, h, d);
        y[(t * heads + h) * D + d] = o / sum;
      }
    }
  }
  return y;
}
const exact = float64Reference();

let reference: Float32Array | null = null;
const rows: string[][] = [];
// MOBA_ALL_VARIANTS=1 also runs the earlier ones
const list = process.env.MOBA_ALL_VARIANTS ? [...variants, ...earlier] : variants;
// the GPU idles at a low clock: one untimed pass over the first variant brings it up before anything is timed
await run(list[0]);
for (const variant of list) {
  try {
    const r = await run(variant);
    reference ??= r.out;
    const error = r.out && reference ? relativeError(r.out, reference).toExponential(1) : "-";
    if (process.env.MOBA_ERROR_MAP && r.out && reference) console.log(errorMap(r.out, exact ?? reference));
    const exactError = r.out && exact ? relativeError(r.out, exact).toExponential(1) : "-";
    rows.push([variant.name, `${variant.TQ}/${variant.TK}`, r.ms.toFixed(2), (flops / (r.ms / 1000) / 1e12).toFixed(1), error, exactError]);
  } catch (e) {
    rows.push([variant.name, `${variant.TQ}/${variant.TK}`, "failed", String((e as Error).message).slice(0, 80), "", ""]);
  }
  console.log(rows[rows.length - 1].join("  "));
}
console.log(`\nfull causal f16 forward, ${tokens} tokens x ${heads} heads, headDim ${D}, one dispatch, median of 5 (wall clock to idle queue) on ${gpu.adapterInfo}; workgroup storage limit ${gpu.maxWorkgroupStorage} bytes`);
console.log(table(["variant", "TQ/TK", "ms", "TFLOP/s", "error vs first", "error vs float64 (up to 4096 tokens)"], rows));
process.exit(0);
