// WGSL of the block-sparse attention passes (float32). A workgroup of 64 threads takes one tile:
// up to TQ queries of one head — a contiguous run of tokens, or a gathered list from the inverted
// index — against the key range [keyStart, keyEnd) in chunks of TK keys, causal mask always on.
// MoBA runs one dispatch per round (the own block, then the r-th routed block of every query):
// within a round a query is in exactly one tile, so its online-softmax state (or dq) is updated
// in global memory without races; full attention is one round over [sequence start, tile end).

export interface TileShape {
  headDim: number;
  TQ: number; // queries per tile
  TK: number; // keys per chunk
  /** headDim as a compile-time constant (loops unrolled: fast on GPUs, minutes of LLVM time on lavapipe). */
  unroll: boolean;
  /** Element type of q, k, v (the forward reads f16 in the f16 path; arithmetic stays f32). */
  input: "f32" | "f16";
}

const THREADS = 64;
/** A masked score; every use is guarded by `> VISIBLE` rather than relying on infinities. */
export const MASKED = "-3.0e38";
export const VISIBLE = "-1.0e38";

/**
 * The tile parameters (one layout for every tile kernel, float32 and tensor-core) and bindings 0-2:
 * the tile descriptors and the gathered query lists.
 */
export const TILE_BINDINGS = /* wgsl */ `struct Params {
  qHeads: u32, kvHeads: u32, tiles: u32, loadState: u32,
  finalize: u32, width: u32, globalBlocks: u32, scale: f32,
  headDim: u32, tq: u32, tk: u32,
  segments: u32, dvOffset: u32, tokens: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> tiles: array<vec4<u32>>; // 2 per tile: (queryStart, count, keyStart, keyEnd), (head, gathered, naturalEnd or carried, block)
@group(0) @binding(2) var<storage, read> entries: array<u32>;    // gathered query lists

// the i-th query of a tile: consecutive tokens from start, or entries[start + i] when gathered
fn tokenAt(start: u32, i: u32, gathered: bool) -> u32 {
  if (gathered) { return entries[start + i]; }
  return start + i;
}`;

/**
 * Whether a query tile's rows carry a partial result from earlier rounds (the forward's acc, m and l
 * in out and ml, or dq): a later routed round (P.loadState), or, in the forward, an own-block tile
 * whose queries had routed blocks (b.z = 1: the own blocks' round runs last and finalizes).
 */
export const CARRIED = "(P.loadState == 1u || b.z == 1u)";

/**
 * Each of the tile's first TQ threads records its row's token (0 past count) and the row's inputs:
 * the forward's running softmax state (m, l) from ml when the tile carries state (CARRIED), else (MASKED, 0); or
 * the backward's (lse, delta) from rowStats. Rows start at `start`, gathered when `gathered`.
 */
export function loadRowInputs(start: string, gathered: string, inputs: "state" | "stats"): string {
  const load = inputs === "state"
    ? `var state = vec2<f32>(MASKED, 0.0);
    if (${CARRIED} && lid < count) { state = ml[token * P.qHeads + h]; }
    rowM[lid] = state.x;
    rowL[lid] = state.y;`
    : `let stats = rowStats[token * P.qHeads + h];
    rowLse[lid] = stats.x;
    rowDelta[lid] = stats.y;`;
  return `if (lid < TQ) {
    var token = 0u;
    if (lid < count) { token = tokenAt(${start}, lid, ${gathered}); }
    rowToken[lid] = token;
    ${load}
  }`;
}

/** The dk/dv kernels' segment starts ([width * qHeads * globalBlocks + 1]), which follow the tile words in tiles from vec4 P.segments. */
export const SEGMENT_START = /* wgsl */ `fn segmentStart(i: u32) -> u32 { return tiles[P.segments + i / 4u][i % 4u]; }`;

/**
 * The tile constants. Unrolled (GPUs): WGSL constants, so loops over D, TQ and TK unroll. On
 * software adapters they are private variables read from the uniform at entry: LLVM then does not
 * unroll, which keeps lavapipe's compile time to seconds instead of minutes.
 */
function header(c: TileShape): string {
  const D = c.headDim;
  const values: [string, number][] = [["D", D], ["STRIDE", D + 1], ["TQ", c.TQ], ["TK", c.TK]];
  const constants = c.unroll
    ? values.map(([name, value]) => `const ${name} = ${value}u;`).join("\n")
    : values.map(([name]) => `var<private> ${name}: u32;`).join("\n");
  return /* wgsl */ `${c.input === "f16" ? "enable f16;" : ""}
${constants}
// STRIDE = D + 1: padded shared rows, so threads reading different rows hit different banks
const MASKED = ${MASKED};

${TILE_BINDINGS}
`;
}

/** Entry point and the tile it owns: a = (queryStart, count, keyStart, keyEnd), b = (head, gathered, naturalEnd, block). */
function tileEntry(c: TileShape): string {
  return `@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${setHeadDim(c)}
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= P.tiles) { return; }
  let a = tiles[2u * tile];
  let b = tiles[2u * tile + 1u];`;
}

/** The entry of a query tile: its query count, query head h and kv head g. */
function queryTileEntry(c: TileShape): string {
  return `${tileEntry(c)}
  let count = a.y;
  let h = b.x;
  let g = h / (P.qHeads / P.kvHeads);`;
}

/**
 * Copies keys and values [k0, min(k0 + TK, end)) of kv head g into Ks and Vs (zeros past end).
 * All of a thread's loads are issued before its stores, so their latencies overlap.
 */
function loadKeys(c: TileShape, k0: string, end: string): string {
  const loads = Math.ceil((c.TK * c.headDim) / THREADS);
  return `var kStage: array<f32, ${loads}>;
    var vStage: array<f32, ${loads}>;
    for (var i = 0u; i < ${loads}u; i++) {
      let e = lid + i * ${THREADS}u;
      let key = ${k0} + e / D;
      kStage[i] = 0.0;
      vStage[i] = 0.0;
      if (e < TK * D && key < ${end}) {
        kStage[i] = f32(k[(key * P.kvHeads + g) * D + e % D]);
        vStage[i] = f32(v[(key * P.kvHeads + g) * D + e % D]);
      }
    }
    for (var i = 0u; i < ${loads}u; i++) {
      let e = lid + i * ${THREADS}u;
      if (e < TK * D) {
        Ks[(e / D) * STRIDE + e % D] = kStage[i];
        Vs[(e / D) * STRIDE + e % D] = vStage[i];
      }
    }`;
}

/** A tile constant in a loop that holds a barrier: it must be uniform, so read it from P when not unrolled. */
function uniformConstant(c: TileShape, name: "TQ" | "TK"): string {
  return c.unroll ? name : name === "TQ" ? "P.tq" : "P.tk";
}

/** Without unrolling, the tile constants are set from the uniform at entry. */
function setHeadDim(c: TileShape): string {
  return c.unroll ? "" : "D = P.headDim;\n  STRIDE = D + 1u;\n  TQ = P.tq;\n  TK = P.tk;";
}

/** Workgroup memory every tile kernel has: query rows (Qs), key and value chunks, the rows' tokens. */
function tileMemory(c: TileShape): string {
  return `var<workgroup> Qs: array<f32, ${c.TQ * (c.headDim + 1)}>;
var<workgroup> Ks: array<f32, ${c.TK * (c.headDim + 1)}>;
var<workgroup> Vs: array<f32, ${c.TK * (c.headDim + 1)}>;
var<workgroup> rowToken: array<u32, ${c.TQ}>;`;
}

/** Column lanes of the register tiles: thread lid owns accumulator columns lid % 16 + 16 j of rows lid / 16 + 4 i. */
const TILE_LANES = 16;
const TILE_ROW_GROUPS = THREADS / TILE_LANES;
type Side = "TQ" | "TK";

/**
 * The float32 kernels' register tiles. Scores: a `rows` x `cols` grid (rows: the tile's queries,
 * or its keys in dk/dv), each thread a 2 x QK_COLS block, its columns QK_GROUPS apart (6
 * workgroup-memory reads per 8 multiply-adds, against 2 per 1 for a dot product per thread).
 * Accumulators: `rows` x D, each thread ROWS x COLS (a 4 x 8 block: 12 reads per 32), in registers.
 */
function registerTiles(rows: Side, cols: Side): string {
  return `let QK_COLS = clamp((${rows} / 2u) * ${cols} / ${THREADS}u, 1u, min(4u, ${cols})); // score columns per thread: 4, fewer where the grid has fewer than 8 elements per thread
  let QK_GROUPS = ${cols} / QK_COLS;  // threads sharing a pair of score rows
  let ROWS = ${rows} / ${TILE_ROW_GROUPS}u;         // accumulator rows per thread: tileRow, tileRow + ${TILE_ROW_GROUPS}, ...
  let COLS = (D + ${TILE_LANES - 1}u) / ${TILE_LANES}u;  // accumulator columns per thread: tileLane, tileLane + ${TILE_LANES}, ...
  let tileRow = lid / ${TILE_LANES}u;
  let tileLane = lid % ${TILE_LANES}u;`;
}

/** Accumulator elements per thread (a compile-time array size). */
function accumulators(c: TileShape, rows: Side): number {
  return (c[rows] / TILE_ROW_GROUPS) * Math.ceil(c.headDim / TILE_LANES);
}

/**
 * The thread's accumulators `acc` ([rows, D] of the query tile), from `state` — the previous
 * round's partial result for the same rows — when the tile carries state (CARRIED), else zero.
 */
function accumulatorsFrom(c: TileShape, state: string): string {
  return `var acc: array<f32, ${accumulators(c, "TQ")}>;
  ${eachAccumulator(`acc[at] = 0.0;
      if (${CARRIED} && row < count && col < D) { acc[at] = ${state}[(rowToken[row] * P.qHeads + h) * D + col]; }`)}`;
}

/** `body` for each of the thread's accumulators: its row, col and index at. */
function eachAccumulator(body: string): string {
  return `for (var i = 0u; i < ROWS; i++) {
    let row = tileRow + ${TILE_ROW_GROUPS}u * i;
    for (var j = 0u; j < COLS; j++) {
      let col = tileLane + ${TILE_LANES}u * j;
      let at = i * COLS + j;
      ${body}
    }
  }`;
}

/**
 * The thread's score blocks: for each [name, left, right], name[4 i + j] = left[row] · right[col]
 * over D; then `body` for each element (row, col, at).
 */
function scoreBlocks(rows: Side, products: [string, string, string][], body: string): string {
  return `for (var m = lid; m < (${rows} / 2u) * QK_GROUPS; m += ${THREADS}u) {
      let r0 = 2u * (m / QK_GROUPS);
      let c0 = m % QK_GROUPS;
      ${products.map(([name]) => `var ${name}: array<f32, 8>; // [2, QK_COLS]`).join("\n      ")}
      for (var i = 0u; i < 8u; i++) { ${products.map(([name]) => `${name}[i] = 0.0;`).join(" ")} }
      for (var d = 0u; d < D; d++) {
        ${products.map(([name, left]) => `let ${name}0 = ${left}[r0 * STRIDE + d];
        let ${name}1 = ${left}[(r0 + 1u) * STRIDE + d];`).join("\n        ")}
        for (var j = 0u; j < QK_COLS; j++) {
          ${products.map(([name, , right]) => `{
            let x = ${right}[(c0 + QK_GROUPS * j) * STRIDE + d];
            ${name}[j] += ${name}0 * x;
            ${name}[4u + j] += ${name}1 * x;
          }`).join("\n          ")}
        }
      }
      for (var i = 0u; i < 2u; i++) {
        for (var j = 0u; j < QK_COLS; j++) {
          let row = r0 + i;
          let col = c0 + QK_GROUPS * j;
          let at = 4u * i + j;
          ${body}
        }
      }
    }`;
}

/** For each [acc, weights, values]: acc[row, col] += Σ_n weights[row, n] · values[n, col], n < inner (weights [rows, inner], values rows of STRIDE). */
function accumulateBlocks(c: TileShape, rows: Side, inner: Side, terms: [string, string, string][]): string {
  const perThread = c[rows] / TILE_ROW_GROUPS;
  return `for (var n = 0u; n < ${inner}; n++) {
      ${terms.map(([, weights], t) => `var w${t}: array<f32, ${perThread}>;
      for (var i = 0u; i < ROWS; i++) { w${t}[i] = ${weights}[(tileRow + ${TILE_ROW_GROUPS}u * i) * ${inner} + n]; }`).join("\n      ")}
      for (var j = 0u; j < COLS; j++) {
        let col = tileLane + ${TILE_LANES}u * j;
        ${terms.map(([acc, , values], t) => `{
          let x = select(0.0, ${values}[n * STRIDE + col], col < D);
          for (var i = 0u; i < ROWS; i++) { ${acc}[i * COLS + j] += w${t}[i] * x; }
        }`).join("\n        ")}
      }
    }`;
}

/** Stages the tile's query rows of each [global, local] pair into workgroup memory (zeros past count). */
function stageQueryRows(rows: [string, string][]): string {
  return `for (var e = lid; e < TQ * D; e += ${THREADS}u) {
    let r = e / D;
    ${rows.map(([, local]) => `var ${local}x = 0.0;`).join(" ")}
    if (r < count) {
      let at = (rowToken[r] * P.qHeads + h) * D + e % D;
      ${rows.map(([global, local]) => `${local}x = f32(${global}[at]);`).join(" ")}
    }
    ${rows.map(([, local]) => `${local}[r * STRIDE + e % D] = ${local}x;`).join(" ")}
  }`;
}

/**
 * Forward: online softmax over the tile's key range; state (acc, m, l) in global memory between
 * rounds. Register-tiled (registerTiles): S = Q Kᵀ in 2 x 4 blocks, O += P V in 4 x 8 blocks
 * that stay in registers across the key range.
 */
export function forwardWgsl(c: TileShape): string {
  return /* wgsl */ `${header(c)}
@group(0) @binding(3) var<storage, read> q: array<${c.input}>;          // [tokens, qHeads, D]
@group(0) @binding(4) var<storage, read> k: array<${c.input}>;          // [tokens, kvHeads, D]
@group(0) @binding(5) var<storage, read> v: array<${c.input}>;          // [tokens, kvHeads, D]
@group(0) @binding(6) var<storage, read_write> out: array<f32>;  // [tokens, qHeads, D] acc, or out when finalizing
@group(0) @binding(7) var<storage, read_write> ml: array<vec2<f32>>; // [tokens, qHeads] running (max, sum)
@group(0) @binding(8) var<storage, read_write> lse: array<f32>;  // [tokens, qHeads] when finalizing

${tileMemory(c)}
var<workgroup> S: array<f32, ${c.TQ * c.TK}>;
var<workgroup> rowM: array<f32, ${c.TQ}>;
var<workgroup> rowL: array<f32, ${c.TQ}>;
var<workgroup> rowAlpha: array<f32, ${c.TQ}>;
var<workgroup> partial: array<f32, ${THREADS}>; // the softmax's per-thread maxima, then sums

${queryTileEntry(c)}
  ${registerTiles("TQ", "TK")}
  let R = ${THREADS}u / TQ; // softmax threads per row
  let softmaxRow = lid / R;
  let part = lid % R;
  ${loadRowInputs("a.x", "b.y == 1u", "state")}
  workgroupBarrier();
  ${stageQueryRows([["q", "Qs"]])}
  // the thread's block of O, from the previous round's accumulator (or zero)
  ${accumulatorsFrom(c, "out")}
  for (var k0 = a.z; k0 < a.w; k0 += ${uniformConstant(c, "TK")}) {
    ${loadKeys(c, "k0", "a.w")}
    workgroupBarrier();
    // S = scale Q Kᵀ, masked
    ${scoreBlocks("TQ", [["s", "Qs", "Ks"]], `let key = k0 + col;
          var score = MASKED;
          if (row < count && key < a.w && key <= rowToken[row]) { score = P.scale * s[at]; }
          S[row * TK + col] = score;`)}
    workgroupBarrier();
    // online softmax, R threads per row (columns part, part + R, ...), partial max and sum through workgroup memory
    var rowMax = MASKED;
    for (var col = part; col < TK; col += R) { rowMax = max(rowMax, S[softmaxRow * TK + col]); }
    partial[lid] = rowMax;
    workgroupBarrier();
    for (var i = 0u; i < R; i++) { rowMax = max(rowMax, partial[softmaxRow * R + i]); }
    let mOld = rowM[softmaxRow];
    let mNew = max(mOld, rowMax);
    var rowSum = 0.0;
    for (var col = part; col < TK; col += R) {
      let x = S[softmaxRow * TK + col];
      var p = 0.0;
      if (x > ${VISIBLE}) { p = exp(x - mNew); }
      S[softmaxRow * TK + col] = p;
      rowSum += p;
    }
    workgroupBarrier(); // every thread has read the maxima and rowM
    partial[lid] = rowSum;
    workgroupBarrier();
    if (part == 0u) {
      for (var i = 1u; i < R; i++) { rowSum += partial[softmaxRow * R + i]; }
      let alpha = exp(mOld - mNew);
      rowL[softmaxRow] = rowL[softmaxRow] * alpha + rowSum;
      rowM[softmaxRow] = mNew;
      rowAlpha[softmaxRow] = alpha;
    }
    workgroupBarrier();
    // O = alpha O + P V
    ${eachAccumulator("acc[at] *= rowAlpha[row];")}
    ${accumulateBlocks(c, "TQ", "TK", [["acc", "S", "Vs"]])}
    workgroupBarrier();
  }
  ${eachAccumulator(`if (row < count && col < D) {
        out[(rowToken[row] * P.qHeads + h) * D + col] = select(acc[at], acc[at] / rowL[row], P.finalize == 1u);
      }`)}
  if (lid < count) {
    let row = rowToken[lid] * P.qHeads + h;
    if (P.finalize == 1u) { lse[row] = rowM[lid] + log(rowL[lid]); } else { ml[row] = vec2<f32>(rowM[lid], rowL[lid]); }
  }
}
`;
}

/** Rows of one DELTA workgroup (32 threads each). */
export const DELTA_ROWS = 8;

/**
 * rowStats = (lse, delta = rowsum(dout * out)), 32 threads per (token, head) row reading it along
 * headDim (coalesced; one thread per row read 32 rows 512 bytes apart at once: 0.47 ms at 32K tokens
 * x 8 heads), the 32 partial sums added in a fixed order: the backward's per-row inputs in one buffer.
 */
export const DELTA = /* wgsl */ `
struct Params { rows: u32, headDim: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> out: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> rowStats: array<vec2<f32>>;
var<workgroup> partial: array<f32, ${DELTA_ROWS * 32}>;

@compute @workgroup_size(${DELTA_ROWS * 32})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let row = (wid.x + wid.y * nwg.x) * ${DELTA_ROWS}u + lid / 32u;
  let lane = lid % 32u;
  var s = 0.0;
  if (row < P.rows) {
    for (var d = lane; d < P.headDim; d += 32u) { s += out[row * P.headDim + d] * dout[row * P.headDim + d]; }
  }
  partial[lid] = s;
  workgroupBarrier();
  if (lane == 0u && row < P.rows) {
    var total = 0.0;
    for (var i = 0u; i < 32u; i++) { total += partial[lid + i]; }
    rowStats[row] = vec2<f32>(lse[row], total);
  }
}
`;

/** dq, query-major with the forward's tiles: p = exp(scale q·k − lse), ds = p (dout·v − delta), dq += scale ds k. */
export function dqWgsl(c: TileShape): string {
  return /* wgsl */ `${header(c)}
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;      // [tokens, qHeads, D]
@group(0) @binding(7) var<storage, read> rowStats: array<vec2<f32>>; // [tokens, qHeads] (lse, delta)
@group(0) @binding(8) var<storage, read_write> dq: array<f32>;  // [tokens, qHeads, D]

${tileMemory(c)}
var<workgroup> dOs: array<f32, ${c.TQ * (c.headDim + 1)}>;
var<workgroup> dS: array<f32, ${c.TQ * c.TK}>;
var<workgroup> rowLse: array<f32, ${c.TQ}>;
var<workgroup> rowDelta: array<f32, ${c.TQ}>;

${queryTileEntry(c)}
  ${registerTiles("TQ", "TK")}
  ${loadRowInputs("a.x", "b.y == 1u", "stats")}
  workgroupBarrier();
  ${stageQueryRows([["q", "Qs"], ["dout", "dOs"]])}
  // the thread's block of dq, from the previous round (or zero)
  ${accumulatorsFrom(c, "dq")}
  for (var k0 = a.z; k0 < a.w; k0 += ${uniformConstant(c, "TK")}) {
    ${loadKeys(c, "k0", "a.w")}
    workgroupBarrier();
    // dS = scale P ∘ (dP − delta), P = exp(scale Q Kᵀ − lse), dP = dO Vᵀ
    ${scoreBlocks("TQ", [["s", "Qs", "Ks"], ["dp", "dOs", "Vs"]], `let key = k0 + col;
          var ds = 0.0;
          if (row < count && key < a.w && key <= rowToken[row]) {
            let p = exp(P.scale * s[at] - rowLse[row]);
            ds = P.scale * p * (dp[at] - rowDelta[row]);
          }
          dS[row * TK + col] = ds;`)}
    workgroupBarrier();
    // dq += dS K
    ${accumulateBlocks(c, "TQ", "TK", [["acc", "dS", "Ks"]])}
    workgroupBarrier();
  }
  ${eachAccumulator(`if (row < count && col < D) { dq[(rowToken[row] * P.qHeads + h) * D + col] = acc[at]; }`)}
}
`;
}

/**
 * dk and dv, key-block-major: a tile is TK keys of one block and kv head; it walks, for each query
 * head of the group, the block's own queries (tokens [keyStart, naturalEnd)) and then the queries
 * that routed to the block in every round, TQ at a time. Here TQ counts queries and TK keys.
 */
export function dkdvWgsl(c: TileShape): string {
  const D = c.headDim;
  return /* wgsl */ `${header(c)}
@group(0) @binding(3) var<storage, read> q: array<f32>;
@group(0) @binding(4) var<storage, read> k: array<f32>;
@group(0) @binding(5) var<storage, read> v: array<f32>;
@group(0) @binding(6) var<storage, read> dout: array<f32>;
@group(0) @binding(7) var<storage, read> rowStats: array<vec2<f32>>; // [tokens, qHeads] (lse, delta)
@group(0) @binding(8) var<storage, read_write> dkdv: array<f32>;   // [2, tokens, kvHeads, D]: dk, then dv

// (segment starts ride in the tiles buffer: 8 bindings at most, WebGPU's default per-stage limit)
${SEGMENT_START}


${tileMemory(c)}
var<workgroup> dOs: array<f32, ${c.TQ * (D + 1)}>;
var<workgroup> Pm: array<f32, ${c.TK * c.TQ}>;  // [key, query]
var<workgroup> dS: array<f32, ${c.TK * c.TQ}>;  // [key, query]
var<workgroup> rowLse: array<f32, ${c.TQ}>;
var<workgroup> rowDelta: array<f32, ${c.TQ}>;
// the thread's blocks of dk and dv (registerTiles with the keys as rows)
var<private> dkAcc: array<f32, ${accumulators(c, "TK")}>;
var<private> dvAcc: array<f32, ${accumulators(c, "TK")}>;

// one chunk of up to TQ queries: tokens start.. (gathered: entries[start..]) against the tile's keys
fn chunk(lid: u32, h: u32, g: u32, start: u32, count: u32, gathered: bool, keyStart: u32, keyEnd: u32) {
  ${registerTiles("TK", "TQ")}
  ${loadRowInputs("start", "gathered", "stats")}
  workgroupBarrier();
  ${stageQueryRows([["q", "Qs"], ["dout", "dOs"]])}
  workgroupBarrier();
  // Pᵀ and dSᵀ: rows are keys, columns queries
  ${scoreBlocks("TK", [["s", "Ks", "Qs"], ["dp", "Vs", "dOs"]], `var p = 0.0;
          var ds = 0.0;
          if (col < count && keyStart + row < keyEnd && keyStart + row <= rowToken[col]) {
            p = exp(P.scale * s[at] - rowLse[col]);
            ds = P.scale * p * (dp[at] - rowDelta[col]);
          }
          Pm[row * TQ + col] = p;
          dS[row * TQ + col] = ds;`)}
  workgroupBarrier();
  // dV += Pᵀ dO, dK += dSᵀ Q
  ${accumulateBlocks(c, "TK", "TQ", [["dvAcc", "Pm", "dOs"], ["dkAcc", "dS", "Qs"]])}
  workgroupBarrier();
}

${tileEntry(c)}
  let g = b.x;
  let keyStart = a.z;
  let keyEnd = a.w;
  ${registerTiles("TK", "TQ")}
  ${loadKeys(c, "keyStart", "keyEnd")}
  ${eachAccumulator("dkAcc[at] = 0.0;\n      dvAcc[at] = 0.0;")}
  let group = P.qHeads / P.kvHeads;
  for (var h = g * group; h < (g + 1u) * group; h++) {
    // the block's own queries (all later queries of the sequence for full attention)
    for (var s = keyStart; s < b.z; s += ${uniformConstant(c, "TQ")}) { chunk(lid, h, g, s, min(TQ, b.z - s), false, keyStart, keyEnd); }
    // the queries that routed to this block, round by round
    for (var r = 0u; r < P.width; r++) {
      let segment = (r * P.qHeads + h) * P.globalBlocks + b.w;
      let end = segmentStart(segment + 1u);
      for (var s = segmentStart(segment); s < end; s += ${uniformConstant(c, "TQ")}) { chunk(lid, h, g, s, min(TQ, end - s), true, keyStart, keyEnd); }
    }
  }
  ${eachAccumulator(`let key = keyStart + row;
      if (key < keyEnd && col < D) {
        dkdv[(key * P.kvHeads + g) * D + col] = dkAcc[at];
        dkdv[P.dvOffset + (key * P.kvHeads + g) * D + col] = dvAcc[at];
      }`)}
}
`;
}
