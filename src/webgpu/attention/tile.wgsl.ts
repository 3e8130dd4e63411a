// WGSL pieces the tile kernels share: the float32 forward (forward.wgsl.ts) and backward
// (backward.wgsl.ts) use all of them, the tensor-core kernels the tile bindings, the row inputs and
// the masking constants.
// The float32 kernels: a workgroup of 64 threads takes one tile:
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

/** The forward's constants: a tile shape, and whether its tiles are union tiles (unionPieces). */
export interface ForwardShape extends TileShape {
  union: boolean;
}

/** Threads of a float32 tile kernel. */
export const THREADS = 64;
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
  segments: u32, dvOffset: u32, tokens: u32, blockSize: u32,
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
export function loadRowInputs(start: string, gathered: string, inputs: "state" | "stats", union = false): string {
  const load =
    inputs === "state"
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
    ${load}${union ? UNION_ROW : ""}
  }`;
}

/**
 * Union tiles: MoBA's forward in one round where sequences are short (plan.ts: unionTiles). A tile
 * of consecutive queries runs over its causal key range from the sequence start (a.z), but only
 * through chunks that meet a block some row chose, and each row sees only the keys of its own
 * choice: its own block and its routed blocks, read from the routing table (bound as \`entries\`,
 * [tokens, qHeads, width] local block indices, as the gate writes them). One round instead of
 * 1 + width, and no inverted index, gathered tiles or softmax state between rounds: at 4K tokens
 * those are most of the forward's dispatches. rowBlocks[r]: row r's blocks, one bit each, so a
 * sequence has at most 32 blocks (plan.ts: UNION_LIMIT).
 */
const unionMemory = (TQ: number) => `var<workgroup> rowBlocks: array<u32, ${TQ}>; // union tiles: each row's blocks, a bit each`;

/** Row lid's blocks (its own and those it routed to), set with the row's other inputs. */
const UNION_ROW = `
    var bits = 0u;
    if (lid < count) {
      let own = (token - a.z) / P.blockSize;
      bits = 1u << own;
      let at = (token * P.qHeads + h) * P.width;
      for (var j = 0u; j < min(own, P.width); j++) { bits |= 1u << entries[at + j]; }
    }
    rowBlocks[lid] = bits;`;

/** The blocks any row of a union tile chose, read uniformly (loops over chunks hold barriers); after loadRowInputs. */
const unionChosen = (TQ: number) => `let rowsChosen = workgroupUniformLoad(&rowBlocks);
  var chosen = 0u;
  for (var i = 0u; i < ${TQ}u; i++) { chosen |= rowsChosen[i]; }`;

/**
 * Whether a row of a union tile sees `key` (at or after the sequence start a.z): its block is one of
 * the row's `bits`. A division per element: the float32 kernel's; the tensor-core one steps each
 * softmax thread's block column by column instead (forwardMma.wgsl.ts).
 */
export const unionVisible = (bits: string, key: string) => `((${bits} >> ((${key} - a.z) / P.blockSize)) & 1u) == 1u`;

const UNION_FUNCTIONS = /* wgsl */ `
// a union tile's first chunk from k on (chunks of tk keys) whose keys in [start, end) meet a chosen block, else one at or past end
fn nextChunk(k0: u32, tk: u32, start: u32, end: u32, chosen: u32) -> u32 {
  var k = k0;
  while (k < end) {
    let first = (max(k, start) - start) / P.blockSize;
    let last = (min(k + tk, end) - 1u - start) / P.blockSize;
    if (((chosen >> first) & (0xffffffffu >> (31u - min(last - first, 31u)))) != 0u) { break; }
    k += tk;
  }
  return k;
}`;

/**
 * What a forward kernel (float32 or tensor-core) adds for union tiles, all empty without them: its
 * workgroup memory and functions, the union of its rows' blocks (after loadRowInputs), and the
 * first chunk to visit from key k (k itself without union tiles), chunks of `TK` keys (WGSL).
 */
export function unionPieces(union: boolean, TQ: number, TK: string): { declarations: string; chosen: string; next: (k: string) => string } {
  return {
    declarations: union ? `${unionMemory(TQ)}\n${UNION_FUNCTIONS}` : "",
    chosen: union ? unionChosen(TQ) : "",
    next: (k) => (union ? `nextChunk(${k}, ${TK}, a.z, a.w, chosen)` : k),
  };
}

/** The dk/dv kernels' segment starts ([width * qHeads * globalBlocks + 1]), which follow the tile words in tiles from vec4 P.segments. */
export const SEGMENT_START = /* wgsl */ `fn segmentStart(i: u32) -> u32 { return tiles[P.segments + i / 4u][i % 4u]; }`;

/**
 * The tile constants. Unrolled (GPUs): WGSL constants, so loops over D, TQ and TK unroll. On
 * software adapters they are private variables read from the uniform at entry: LLVM then does not
 * unroll, which keeps lavapipe's compile time to seconds instead of minutes.
 */
export function header(c: TileShape): string {
  const D = c.headDim;
  const values: [string, number][] = [
    ["D", D],
    ["STRIDE", D + 1],
    ["TQ", c.TQ],
    ["TK", c.TK],
  ];
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
export function tileEntry(c: TileShape): string {
  return `@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  ${setHeadDim(c)}
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= P.tiles) { return; }
  let a = tiles[2u * tile];
  let b = tiles[2u * tile + 1u];`;
}

/** The entry of a query tile: its query count, query head h and kv head g. */
export function queryTileEntry(c: TileShape): string {
  return `${tileEntry(c)}
  let count = a.y;
  let h = b.x;
  let g = h / (P.qHeads / P.kvHeads);`;
}

/**
 * Copies keys and values [k0, min(k0 + TK, end)) of kv head g into Ks and Vs (zeros past end).
 * All of a thread's loads are issued before its stores, so their latencies overlap.
 */
export function loadKeys(c: TileShape, k0: string, end: string): string {
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
export function uniformConstant(c: TileShape, name: "TQ" | "TK"): string {
  return c.unroll ? name : name === "TQ" ? "P.tq" : "P.tk";
}

/** Without unrolling, the tile constants are set from the uniform at entry. */
function setHeadDim(c: TileShape): string {
  return c.unroll ? "" : "D = P.headDim;\n  STRIDE = D + 1u;\n  TQ = P.tq;\n  TK = P.tk;";
}

/** Workgroup memory every tile kernel has: query rows (Qs), key and value chunks, the rows' tokens. */
export function tileMemory(c: TileShape): string {
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
export function registerTiles(rows: Side, cols: Side): string {
  return `let QK_COLS = clamp((${rows} / 2u) * ${cols} / ${THREADS}u, 1u, min(4u, ${cols})); // score columns per thread: 4, fewer where the grid has fewer than 8 elements per thread
  let QK_GROUPS = ${cols} / QK_COLS;  // threads sharing a pair of score rows
  let ROWS = ${rows} / ${TILE_ROW_GROUPS}u;         // accumulator rows per thread: tileRow, tileRow + ${TILE_ROW_GROUPS}, ...
  let COLS = (D + ${TILE_LANES - 1}u) / ${TILE_LANES}u;  // accumulator columns per thread: tileLane, tileLane + ${TILE_LANES}, ...
  let tileRow = lid / ${TILE_LANES}u;
  let tileLane = lid % ${TILE_LANES}u;`;
}

/** Accumulator elements per thread (a compile-time array size). */
export function accumulators(c: TileShape, rows: Side): number {
  return (c[rows] / TILE_ROW_GROUPS) * Math.ceil(c.headDim / TILE_LANES);
}

/**
 * The thread's accumulators `acc` ([rows, D] of the query tile), from `state` — the previous
 * round's partial result for the same rows — when the tile carries state (CARRIED), else zero.
 */
export function accumulatorsFrom(c: TileShape, state: string): string {
  return `var acc: array<f32, ${accumulators(c, "TQ")}>;
  ${eachAccumulator(`acc[at] = 0.0;
      if (${CARRIED} && row < count && col < D) { acc[at] = ${state}[(rowToken[row] * P.qHeads + h) * D + col]; }`)}`;
}

/** `body` for each of the thread's accumulators: its row, col and index at. */
export function eachAccumulator(body: string): string {
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
export function scoreBlocks(rows: Side, products: [string, string, string][], body: string): string {
  return `for (var m = lid; m < (${rows} / 2u) * QK_GROUPS; m += ${THREADS}u) {
      let r0 = 2u * (m / QK_GROUPS);
      let c0 = m % QK_GROUPS;
      ${products.map(([name]) => `var ${name}: array<f32, 8>; // [2, QK_COLS]`).join("\n      ")}
      for (var i = 0u; i < 8u; i++) { ${products.map(([name]) => `${name}[i] = 0.0;`).join(" ")} }
      for (var d = 0u; d < D; d++) {
        ${products
          .map(
            ([name, left]) => `let ${name}0 = ${left}[r0 * STRIDE + d];
        let ${name}1 = ${left}[(r0 + 1u) * STRIDE + d];`,
          )
          .join("\n        ")}
        for (var j = 0u; j < QK_COLS; j++) {
          ${products
            .map(
              ([name, , right]) => `{
            let x = ${right}[(c0 + QK_GROUPS * j) * STRIDE + d];
            ${name}[j] += ${name}0 * x;
            ${name}[4u + j] += ${name}1 * x;
          }`,
            )
            .join("\n          ")}
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
export function accumulateBlocks(c: TileShape, rows: Side, inner: Side, terms: [string, string, string][]): string {
  const perThread = c[rows] / TILE_ROW_GROUPS;
  return `for (var n = 0u; n < ${inner}; n++) {
      ${terms
        .map(
          ([, weights], t) => `var w${t}: array<f32, ${perThread}>;
      for (var i = 0u; i < ROWS; i++) { w${t}[i] = ${weights}[(tileRow + ${TILE_ROW_GROUPS}u * i) * ${inner} + n]; }`,
        )
        .join("\n      ")}
      for (var j = 0u; j < COLS; j++) {
        let col = tileLane + ${TILE_LANES}u * j;
        ${terms
          .map(
            ([acc, , values], t) => `{
          let x = select(0.0, ${values}[n * STRIDE + col], col < D);
          for (var i = 0u; i < ROWS; i++) { ${acc}[i * COLS + j] += w${t}[i] * x; }
        }`,
          )
          .join("\n        ")}
      }
    }`;
}

/** Stages the tile's query rows of each [global, local] pair into workgroup memory (zeros past count). */
export function stageQueryRows(rows: [string, string][]): string {
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
