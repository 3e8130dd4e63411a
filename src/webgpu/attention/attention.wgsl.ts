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
  headDim: u32, tq: u32, tk: u32, perThread: u32,
  segments: u32, dvOffset: u32, tokens: u32,
}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> tiles: array<vec4<u32>>; // 2 per tile: (queryStart, count, keyStart, keyEnd), (head, gathered, naturalEnd, block)
@group(0) @binding(2) var<storage, read> entries: array<u32>;    // gathered query lists

// the i-th query of a tile: consecutive tokens from start, or entries[start + i] when gathered
fn tokenAt(start: u32, i: u32, gathered: bool) -> u32 {
  if (gathered) { return entries[start + i]; }
  return start + i;
}`;

/**
 * Each of the tile's first TQ threads records its row's token (0 past count) and the row's inputs:
 * the forward's running softmax state (m, l) from ml when P.loadState is set, else (MASKED, 0); or
 * the backward's (lse, delta) from rowStats. Rows start at `start`, gathered when `gathered`.
 */
export function loadRowInputs(start: string, gathered: string, inputs: "state" | "stats"): string {
  const load = inputs === "state"
    ? `var state = vec2<f32>(MASKED, 0.0);
    if (P.loadState == 1u && lid < count) { state = ml[token * P.qHeads + h]; }
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
  const values: [string, number][] = [["D", D], ["STRIDE", D + 1], ["TQ", c.TQ], ["TK", c.TK], ["PER_THREAD", perThread(c)]];
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

/** Accumulator elements per thread: TQ rows of D for the query kernels, TK rows for dk/dv. */
export function perThread(c: TileShape): number {
  return Math.ceil((Math.max(c.TQ, c.TK) * c.headDim) / THREADS);
}

/** A tile constant in a loop that holds a barrier: it must be uniform, so read it from P when not unrolled. */
function uniformConstant(c: TileShape, name: "TQ" | "TK"): string {
  return c.unroll ? name : name === "TQ" ? "P.tq" : "P.tk";
}

/** Without unrolling, the tile constants are set from the uniform at entry. */
function setHeadDim(c: TileShape): string {
  return c.unroll ? "" : "D = P.headDim;\n  STRIDE = D + 1u;\n  TQ = P.tq;\n  TK = P.tk;\n  PER_THREAD = P.perThread;";
}

/** `name` = a[aRow] · b[bRow] over D, with four partial sums so the multiply-adds do not wait on each other. */
function dot(name: string, a: string, aRow: string, b: string, bRow: string): string {
  const [acc, ai, bi, d] = [`${name}4`, `${name}A`, `${name}B`, `${name}D`];
  return `var ${acc} = vec4<f32>(0.0);
        let ${ai} = ${aRow} * STRIDE;
        let ${bi} = ${bRow} * STRIDE;
        var ${d} = 0u;
        for (; ${d} + 3u < D; ${d} += 4u) {
          ${acc} += vec4<f32>(${a}[${ai} + ${d}], ${a}[${ai} + ${d} + 1u], ${a}[${ai} + ${d} + 2u], ${a}[${ai} + ${d} + 3u])
            * vec4<f32>(${b}[${bi} + ${d}], ${b}[${bi} + ${d} + 1u], ${b}[${bi} + ${d} + 2u], ${b}[${bi} + ${d} + 3u]);
        }
        for (; ${d} < D; ${d}++) { ${acc}.x += ${a}[${ai} + ${d}] * ${b}[${bi} + ${d}]; }
        let ${name} = ${acc}.x + ${acc}.y + ${acc}.z + ${acc}.w;`;
}

/** Workgroup memory every tile kernel has: query rows (Qs), key and value chunks, the rows' tokens. */
function tileMemory(c: TileShape): string {
  return `var<workgroup> Qs: array<f32, ${c.TQ * (c.headDim + 1)}>;
var<workgroup> Ks: array<f32, ${c.TK * (c.headDim + 1)}>;
var<workgroup> Vs: array<f32, ${c.TK * (c.headDim + 1)}>;
var<workgroup> rowToken: array<u32, ${c.TQ}>;`;
}

/**
 * Copies the tile's query rows from each global array into its workgroup array ([global, shared]
 * pairs; zeros past count) and starts each thread's accumulator `acc` from `state` when
 * P.loadState is set (a later round), else from zero.
 */
function loadQueryRows(c: TileShape, rows: [string, string][], state: string): string {
  return `var acc: array<f32, ${perThread(c)}>;
  for (var i = 0u; i < PER_THREAD; i++) {
    let e = lid + i * ${THREADS}u;
    let r = e / D;
    acc[i] = 0.0;
    if (e < TQ * D && r < count) {
      let at = (rowToken[r] * P.qHeads + h) * D + e % D;
      ${rows.map(([global, local]) => `${local}[r * STRIDE + e % D] = f32(${global}[at]);`).join("\n      ")}
      if (P.loadState == 1u) { acc[i] = ${state}[at]; }
    } else if (e < TQ * D) {
      ${rows.map(([, local]) => `${local}[r * STRIDE + e % D] = 0.0;`).join("\n      ")}
    }
  }`;
}

/** Column lanes of the forward's P·V step: thread lid owns columns lid % 16 + 16 c of rows lid / 16 + 4 i. */
const PV_LANES = 16;
const PV_ROW_GROUPS = THREADS / PV_LANES;

/** The forward's register tiles: each thread's 2 x qkCols block of S, and rowsPerThread x colsPerThread block of O. */
function forwardTiles(c: TileShape) {
  const qkCols = Math.min(4, c.TK); // S columns per thread, TK / qkCols apart
  return { qkCols, rowsPerThread: c.TQ / PV_ROW_GROUPS, colsPerThread: Math.ceil(c.headDim / PV_LANES) };
}

/**
 * Forward: online softmax over the tile's key range; state (acc, m, l) in global memory between
 * rounds. Register-tiled: for S = Q Kᵀ each thread computes a 2 x 4 block (6 workgroup-memory
 * reads per 8 multiply-adds, against 2 per 1 when each thread computed one dot product), and for
 * O += P V a 4 x 8 block (12 reads per 32), O staying in registers across the key range.
 */
export function forwardWgsl(c: TileShape): string {
  const t = forwardTiles(c);
  const acc = t.rowsPerThread * t.colsPerThread;
  if (c.TQ % PV_ROW_GROUPS !== 0 || c.TQ % 2 !== 0) throw new Error(`forwardWgsl: TQ ${c.TQ} must be a multiple of ${PV_ROW_GROUPS}`);
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

${queryTileEntry(c)}
  let QK_COLS = min(4u, TK);     // S columns per thread
  let QK_GROUPS = TK / QK_COLS;  // threads sharing a pair of S rows
  let ROWS = TQ / ${PV_ROW_GROUPS}u;     // O rows per thread: pvRow, pvRow + ${PV_ROW_GROUPS}, ...
  let COLS = (D + ${PV_LANES - 1}u) / ${PV_LANES}u;   // O columns per thread: pvLane, pvLane + ${PV_LANES}, ...
  let pvRow = lid / ${PV_LANES}u;
  let pvLane = lid % ${PV_LANES}u;
  ${loadRowInputs("a.x", "b.y == 1u", "state")}
  workgroupBarrier();
  for (var e = lid; e < TQ * D; e += ${THREADS}u) {
    let r = e / D;
    var x = 0.0;
    if (r < count) { x = f32(q[(rowToken[r] * P.qHeads + h) * D + e % D]); }
    Qs[r * STRIDE + e % D] = x;
  }
  // the thread's O block, from the previous round's accumulator (or zero)
  var acc: array<f32, ${acc}>;
  for (var i = 0u; i < ROWS; i++) {
    let r = pvRow + ${PV_ROW_GROUPS}u * i;
    for (var j = 0u; j < COLS; j++) {
      let col = pvLane + ${PV_LANES}u * j;
      acc[i * COLS + j] = 0.0;
      if (P.loadState == 1u && r < count && col < D) { acc[i * COLS + j] = out[(rowToken[r] * P.qHeads + h) * D + col]; }
    }
  }
  for (var k0 = a.z; k0 < a.w; k0 += ${uniformConstant(c, "TK")}) {
    ${loadKeys(c, "k0", "a.w")}
    workgroupBarrier();
    // S = scale Q Kᵀ, masked: thread m's rows 2 (m / QK_GROUPS) + {0, 1}, columns m % QK_GROUPS + QK_GROUPS j
    for (var m = lid; m < (TQ / 2u) * QK_GROUPS; m += ${THREADS}u) {
      let r0 = 2u * (m / QK_GROUPS);
      let c0 = m % QK_GROUPS;
      var s: array<f32, 8>; // [2, QK_COLS]
      for (var i = 0u; i < 8u; i++) { s[i] = 0.0; }
      for (var d = 0u; d < D; d++) {
        let q0 = Qs[r0 * STRIDE + d];
        let q1 = Qs[(r0 + 1u) * STRIDE + d];
        for (var j = 0u; j < QK_COLS; j++) {
          let kd = Ks[(c0 + QK_GROUPS * j) * STRIDE + d];
          s[j] += q0 * kd;
          s[4u + j] += q1 * kd;
        }
      }
      for (var i = 0u; i < 2u; i++) {
        let r = r0 + i;
        for (var j = 0u; j < QK_COLS; j++) {
          let col = c0 + QK_GROUPS * j;
          let key = k0 + col;
          var score = MASKED;
          if (r < count && key < a.w && key <= rowToken[r]) { score = P.scale * s[4u * i + j]; }
          S[r * TK + col] = score;
        }
      }
    }
    workgroupBarrier();
    if (lid < TQ) {
      var chunkMax = MASKED;
      for (var col = 0u; col < TK; col++) { chunkMax = max(chunkMax, S[lid * TK + col]); }
      let mNew = max(rowM[lid], chunkMax);
      let alpha = exp(rowM[lid] - mNew);
      var sum = 0.0;
      for (var col = 0u; col < TK; col++) {
        let x = S[lid * TK + col];
        var p = 0.0;
        if (x > ${VISIBLE}) { p = exp(x - mNew); }
        S[lid * TK + col] = p;
        sum += p;
      }
      rowL[lid] = rowL[lid] * alpha + sum;
      rowM[lid] = mNew;
      rowAlpha[lid] = alpha;
    }
    workgroupBarrier();
    // O = alpha O + P V on the thread's block
    for (var i = 0u; i < ROWS; i++) {
      let alpha = rowAlpha[pvRow + ${PV_ROW_GROUPS}u * i];
      for (var j = 0u; j < COLS; j++) { acc[i * COLS + j] *= alpha; }
    }
    for (var key = 0u; key < TK; key++) {
      var p: array<f32, ${t.rowsPerThread}>;
      for (var i = 0u; i < ROWS; i++) { p[i] = S[(pvRow + ${PV_ROW_GROUPS}u * i) * TK + key]; }
      for (var j = 0u; j < COLS; j++) {
        let col = pvLane + ${PV_LANES}u * j;
        let vd = select(0.0, Vs[key * STRIDE + col], col < D);
        for (var i = 0u; i < ROWS; i++) { acc[i * COLS + j] += p[i] * vd; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < ROWS; i++) {
    let r = pvRow + ${PV_ROW_GROUPS}u * i;
    for (var j = 0u; j < COLS; j++) {
      let col = pvLane + ${PV_LANES}u * j;
      if (r < count && col < D) {
        out[(rowToken[r] * P.qHeads + h) * D + col] = select(acc[i * COLS + j], acc[i * COLS + j] / rowL[r], P.finalize == 1u);
      }
    }
  }
  if (lid < count) {
    let row = rowToken[lid] * P.qHeads + h;
    if (P.finalize == 1u) { lse[row] = rowM[lid] + log(rowL[lid]); } else { ml[row] = vec2<f32>(rowM[lid], rowL[lid]); }
  }
}
`;
}

/** out = acc / l and lse = m + log l, one thread per (token, head, element). */
/** Elements each FINALIZE workgroup divides: 256 threads, 4 each (fewer, larger workgroups run nearer the memory bandwidth). */
export const FINALIZE_ELEMENTS = 1024;

/** out = acc / l and lse = m + log(l) for every row, each thread 4 elements 256 apart (coalesced). */
export const FINALIZE = /* wgsl */ `
struct Params { rows: u32, headDim: u32, pad0: u32, pad1: u32 }
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var<storage, read> ml: array<vec2<f32>>;   // [tokens, qHeads]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [tokens, qHeads, D]
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;  // [tokens, qHeads]

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let first = (wid.x + wid.y * nwg.x) * 1024u + lid;
  for (var j = 0u; j < 4u; j++) {
    let index = first + j * 256u;
    if (index >= P.rows * P.headDim) { return; }
    let row = index / P.headDim;
    let state = ml[row];
    out[index] = out[index] / state.y;
    if (index % P.headDim == 0u) { lse[row] = state.x + log(state.y); }
  }
}
`;

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
  ${loadRowInputs("a.x", "b.y == 1u", "stats")}
  workgroupBarrier();
  ${loadQueryRows(c, [["q", "Qs"], ["dout", "dOs"]], "dq")}
  for (var k0 = a.z; k0 < a.w; k0 += ${uniformConstant(c, "TK")}) {
    ${loadKeys(c, "k0", "a.w")}
    workgroupBarrier();
    for (var e = lid; e < TQ * TK; e += ${THREADS}u) {
      let r = e / TK;
      let col = e % TK;
      let key = k0 + col;
      var ds = 0.0;
      if (r < count && key < a.w && key <= rowToken[r]) {
        ${dot("s", "Qs", "r", "Ks", "col")}
        let p = exp(P.scale * s - rowLse[r]);
        ${dot("dp", "dOs", "r", "Vs", "col")}
        ds = P.scale * p * (dp - rowDelta[r]);
      }
      dS[e] = ds;
    }
    workgroupBarrier();
    for (var i = 0u; i < PER_THREAD; i++) {
      let e = lid + i * ${THREADS}u;
      if (e < TQ * D) {
        let r = e / D;
        var x = acc[i];
        for (var j = 0u; j < TK; j++) { x += dS[r * TK + j] * Ks[j * STRIDE + e % D]; }
        acc[i] = x;
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < PER_THREAD; i++) {
    let e = lid + i * ${THREADS}u;
    let r = e / D;
    if (e < TQ * D && r < count) { dq[(rowToken[r] * P.qHeads + h) * D + e % D] = acc[i]; }
  }
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
var<private> dkAcc: array<f32, ${perThread(c)}>;
var<private> dvAcc: array<f32, ${perThread(c)}>;

// one chunk of up to TQ queries: tokens start.. (gathered: entries[start..]) against the tile's keys
fn chunk(lid: u32, h: u32, g: u32, start: u32, count: u32, gathered: bool, keyStart: u32, keyEnd: u32) {
  ${loadRowInputs("start", "gathered", "stats")}
  workgroupBarrier();
  for (var e = lid; e < TQ * D; e += ${THREADS}u) {
    let r = e / D;
    var qx = 0.0;
    var dx = 0.0;
    if (r < count) {
      let at = (rowToken[r] * P.qHeads + h) * D + e % D;
      qx = q[at];
      dx = dout[at];
    }
    Qs[r * STRIDE + e % D] = qx;
    dOs[r * STRIDE + e % D] = dx;
  }
  workgroupBarrier();
  for (var e = lid; e < TK * TQ; e += ${THREADS}u) {
    let key = e / TQ;
    let r = e % TQ;
    var p = 0.0;
    var ds = 0.0;
    if (r < count && keyStart + key < keyEnd && keyStart + key <= rowToken[r]) {
      ${dot("s", "Ks", "key", "Qs", "r")}
      p = exp(P.scale * s - rowLse[r]);
      ${dot("dp", "Vs", "key", "dOs", "r")}
      ds = P.scale * p * (dp - rowDelta[r]);
    }
    Pm[e] = p;
    dS[e] = ds;
  }
  workgroupBarrier();
  for (var i = 0u; i < PER_THREAD; i++) {
    let e = lid + i * ${THREADS}u;
    if (e < TK * D) {
      let key = e / D;
      let col = e % D;
      var x = dvAcc[i];
      var y = dkAcc[i];
      for (var r = 0u; r < TQ; r++) {
        x += Pm[key * TQ + r] * dOs[r * STRIDE + col];
        y += dS[key * TQ + r] * Qs[r * STRIDE + col];
      }
      dvAcc[i] = x;
      dkAcc[i] = y;
    }
  }
  workgroupBarrier();
}

${tileEntry(c)}
  let g = b.x;
  let keyStart = a.z;
  let keyEnd = a.w;
  ${loadKeys(c, "keyStart", "keyEnd")}
  for (var i = 0u; i < PER_THREAD; i++) { dkAcc[i] = 0.0; dvAcc[i] = 0.0; }
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
  for (var i = 0u; i < PER_THREAD; i++) {
    let e = lid + i * ${THREADS}u;
    let key = keyStart + e / D;
    if (e < TK * D && key < keyEnd) {
      dkdv[(key * P.kvHeads + g) * D + e % D] = dkAcc[i];
      dkdv[P.dvOffset + (key * P.kvHeads + g) * D + e % D] = dvAcc[i];
    }
  }
}
`;
}
