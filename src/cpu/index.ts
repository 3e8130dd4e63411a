// The CPU backend: prepares routing state, cuts the work into units and runs them on the calling
// thread (small inputs) or on worker threads.
import { blockMeans, blockOffsets, invertRouting, pastPerQuery, routeAll, selectsAll } from "../attention/blocks.js";
import type { AttentionProblem } from "../attention/problem.js";
import { type BackwardArrays, backwardUnits, type ForwardArrays, forwardSpan, forwardUnits, listUnits } from "./attention.js";
import { claim, cores, type Job, runJobs, shared, SharedScratch, splitByCost } from "./pool.js";
import { simd } from "./simd.js";

/**
 * Multiply-adds below which a call runs on the calling thread (~15 ms of one thread's tiles): each
 * worker copies the inputs into its module and packs K and V, and waking it costs more than the call
 * on a busy machine. The tour's attention (1024 tokens, block 64) stays below: on 2 loaded cores its
 * steps took 1.8x the CPU time on two threads than on one.
 */
const THREAD_THRESHOLD = 2e8;

export interface CpuForward {
  out: Float32Array; // [tokens, qHeads, headDim]
  lse: Float32Array; // [tokens, qHeads]
  past: Int32Array; // [tokens, qHeads, width] selected past blocks, ascending
  width: number;
}

async function threadCount(requested: number | undefined, work: number): Promise<number> {
  if (requested !== undefined) return requested;
  return work < THREAD_THRESHOLD ? 1 : cores();
}

/**
 * kernels: the tile kernels when the calling thread does the work (tests pass null for the scalar
 * fallback, or another SIMD build); worker threads load their own.
 */
export async function cpuForward(
  p: AttentionProblem,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  threads?: number,
  kernels = simd,
): Promise<CpuForward> {
  const width = pastPerQuery(p);
  const all = selectsAll(p);
  const offsets = blockOffsets(p);
  const span = forwardSpan(p, all);
  const { units, cost } = listUnits(p, p.qHeads, all, span);
  // two multiply-adds per (query, key) and head dimension: QKᵀ and PV
  const n = await threadCount(threads, 2 * cost.reduce((a, b) => a + b, 0) * p.headDim);
  const arrays: ForwardArrays = {
    q,
    k,
    v,
    offsets,
    width,
    all,
    span,
    out: new Float32Array(p.tokens * p.qHeads * p.headDim),
    lse: new Float32Array(p.tokens * p.qHeads),
    past: new Int32Array(p.tokens * p.qHeads * width),
  };
  if (n === 1) {
    let u = 0;
    forwardUnits(p, arrays, units, () => (u < cost.length ? u++ : -1), kernels);
  } else {
    const scratch = new SharedScratch();
    const s: ForwardArrays = {
      ...arrays,
      q: scratch.input(q),
      k: scratch.input(k),
      v: scratch.input(v),
      out: shared(arrays.out, false),
      lse: shared(arrays.lse, false),
      past: shared(arrays.past, false),
    };
    // the calling thread and n - 1 workers take units one at a time, the costliest first (claim);
    // each thread sets up once per call, whatever its share
    const order = shared(Int32Array.from(cost.keys()).sort((x, y) => cost[y] - cost[x] || x - y));
    const claimed = shared(new Int32Array(1), false);
    const job: Job = { kind: "forward", problem: p, arrays: s, units, order, claimed };
    const others = runJobs(
      Array.from({ length: n - 1 }, () => job),
      n - 1,
    );
    try {
      forwardUnits(p, s, units, claim(order, claimed), kernels);
    } finally {
      await others;
    }
    scratch.recycle();
    Object.assign(arrays, { out: s.out, lse: s.lse, past: s.past });
  }
  return { out: arrays.out, lse: arrays.lse, past: arrays.past, width };
}

export interface CpuGradients {
  dq: Float32Array; // [tokens, qHeads, headDim]
  dk: Float32Array; // [tokens, kvHeads, headDim]
  dv: Float32Array; // [tokens, kvHeads, headDim]
}

export async function cpuBackward(
  p: AttentionProblem,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array, // [tokens, qHeads, headDim]
  lse: Float32Array, // [tokens, qHeads]
  dout: Float32Array, // [tokens, qHeads, headDim]
  past: Int32Array | undefined, // the forward's routing table; recomputed when absent
  threads?: number,
  kernels = simd, // as cpuForward's
): Promise<CpuGradients> {
  const { tokens, qHeads, kvHeads, headDim: D } = p;
  const width = pastPerQuery(p);
  const all = selectsAll(p);
  const offsets = blockOffsets(p);
  if (!all && past === undefined) {
    past = new Int32Array(tokens * qHeads * width);
    routeAll(p, q, blockMeans(p, k, offsets), offsets, past);
  }
  // delta = rowsum(dout * out): the softmax backward's correction term
  const delta = new Float64Array(tokens * qHeads);
  for (let r = 0; r < tokens * qHeads; r++) {
    let sum = 0;
    for (let d = 0; d < D; d++) sum += dout[r * D + d] * out[r * D + d];
    delta[r] = sum;
  }
  const inverted = all ? null : invertRouting(p, past!, offsets);
  const { units, cost } = listUnits(p, kvHeads, all);
  // five per (query, key) and head dimension: QKᵀ, dO·Vᵀ, Pᵀ·dO, dSᵀ·Q, dS·K (a kv head's unit serves its group of query heads)
  const n = await threadCount(threads, 5 * cost.reduce((a, b) => a + b, 0) * D * (qHeads / kvHeads));
  const arrays: BackwardArrays = {
    q,
    k,
    v,
    dout,
    lse,
    delta,
    offsets,
    inverted,
    dq: new Float64Array(tokens * qHeads * D),
    dk: new Float32Array(tokens * kvHeads * D),
    dv: new Float32Array(tokens * kvHeads * D),
  };
  const dq = arrays.dq;
  if (n === 1) {
    backwardUnits(p, arrays, units, 0, units.length / 3, kernels);
  } else {
    // one dq accumulator per thread (the calling thread's is dq): the key-major walk adds into every query's dq
    const scratch = new SharedScratch();
    const s = {
      ...arrays,
      q: scratch.input(q),
      k: scratch.input(k),
      v: scratch.input(v),
      dout: scratch.input(dout),
      lse: scratch.input(lse),
      delta: scratch.input(delta),
      inverted: inverted && { start: scratch.input(inverted.start), queries: scratch.input(inverted.queries) },
      dk: shared(arrays.dk, false),
      dv: shared(arrays.dv, false),
    };
    // contiguous ranges of units, one per thread, the calling thread taking the first: which thread adds
    // which dq terms is fixed, so the sum is the same in every run
    const [first, ...rest] = splitByCost(backwardCost(p, units, cost, inverted, offsets), n);
    const parts = rest.map(() => scratch.zeros(dq));
    const jobs: Job[] = rest.map(([from, to], i) => ({ kind: "backward", problem: p, arrays: { ...s, dq: parts[i] }, units, from, to }));
    const others = runJobs(jobs, n - 1);
    try {
      backwardUnits(p, { ...s, dq }, units, first[0], first[1], kernels);
    } finally {
      await others;
    }
    for (const part of parts) for (let i = 0; i < dq.length; i++) dq[i] += part[i];
    scratch.recycle();
    Object.assign(arrays, { dk: s.dk, dv: s.dv });
  }
  return { dq: Float32Array.from(dq), dk: arrays.dk, dv: arrays.dv };
}

/** Per key block: how many (query, key) pairs its unit visits, from the inverted index. */
function backwardCost(
  p: AttentionProblem,
  units: Int32Array,
  cost: Float64Array,
  inverted: BackwardArrays["inverted"],
  offsets: Int32Array,
): Float64Array {
  if (inverted === null) {
    // full attention: block j is seen by every later query, so early blocks cost the most
    const out = new Float64Array(cost.length);
    for (let u = 0; u < cost.length; u++) {
      const b = units[3 * u],
        j = units[3 * u + 2];
      out[u] = (p.cuSeqlens[b + 1] - p.cuSeqlens[b] - j * p.blockSize) * p.blockSize;
    }
    return out;
  }
  const blocks = offsets[offsets.length - 1];
  const group = p.qHeads / p.kvHeads;
  const out = new Float64Array(cost.length);
  for (let u = 0; u < cost.length; u++) {
    const b = units[3 * u],
      g = units[3 * u + 1],
      j = units[3 * u + 2];
    let queries = p.blockSize;
    for (let h = g * group; h < (g + 1) * group; h++) {
      const G = h * blocks + offsets[b] + j;
      queries += inverted.start[G + 1] - inverted.start[G];
    }
    out[u] = queries * p.blockSize;
  }
  return out;
}
