// The CPU backend: prepares routing state, cuts the work into units and runs them on the calling
// thread (small inputs) or on worker threads.
import { blockMeans, blockOffsets, invertRouting, pastPerQuery, routeAll, selectsAll } from "../attention/blocks.js";
import { type AttentionProblem, checkFinite } from "../attention/problem.js";
import {
  type BackwardArrays,
  backwardLayout,
  backwardUnits,
  type ForwardArrays,
  forwardLayout,
  forwardSpan,
  forwardUnits,
  listUnits,
  prepareBackward,
  prepareForward,
  type SharedBackward,
  type SharedForward,
} from "./attention.js";
import { claim, cores, type Job, runJobs, shared, type SharedLink, SharedScratch, signalReady, splitByCost } from "./pool.js";
import { type Regions, type SharedKernels, simd, withSharedKernels } from "./simd.js";

/** The forward's inputs are finite (the SIMD forward checks its own copies instead: prepareForward). */
function checkValues(q: Float32Array, k: Float32Array, v: Float32Array): void {
  checkFinite("q", q);
  checkFinite("k", k);
  checkFinite("v", v);
}

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
 * fallback, or another SIMD build); worker threads load their own. Checks that q, k, v are finite
 * (the API's problem checks leave that to the backend: the SIMD kernels check the copies they read).
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
  // the outputs in shared memory when worker threads write them too
  const outputBuffer = (length: number) => (n === 1 ? new ArrayBuffer(4 * length) : new SharedArrayBuffer(4 * length));
  const outputs = {
    out: new Float32Array(outputBuffer(p.tokens * p.qHeads * p.headDim)),
    lse: new Float32Array(outputBuffer(p.tokens * p.qHeads)),
    past: new Int32Array(outputBuffer(p.tokens * p.qHeads * width)),
  };
  const arrays: ForwardArrays = { q, k, v, offsets, width, all, span, ...outputs };
  if (n === 1) {
    if (!kernels) checkValues(q, k, v); // the SIMD forward checks its copies (prepareForward)
    let u = 0;
    forwardUnits(p, arrays, units, () => (u < cost.length ? u++ : -1), kernels);
    return { ...outputs, width };
  }
  // the calling thread and n - 1 workers take units one at a time, the costliest first (claim); each
  // thread sets up once per call, whatever its share
  const order = shared(Int32Array.from(cost.keys()).sort((x, y) => cost[y] - cost[x] || x - y));
  const claimed = shared(new Int32Array(1), false);
  await withSharedKernels(async (memory) => {
    const layout = memory && kernels === simd ? forwardLayout(memory.kernels, p, arrays) : null;
    const regions = memory && layout && sharedLayout(memory, layout.inputBytes, layout.scratchBytes, n);
    if (memory && layout && regions) {
      // the inputs laid out once in the shared memory, each thread's scratch after them; the workers
      // start on their jobs while this thread copies, checks and packs the inputs (signalReady)
      const forward: SharedForward = { layout, ...regions };
      const { inputAt } = regions;
      const empty = new Float32Array(0);
      const inShared: ForwardArrays = { ...arrays, q: empty, k: empty, v: empty };
      await onSharedMemory(
        memory,
        n - 1,
        (link) => ({ kind: "forward", problem: p, arrays: inShared, units, order, claimed, shared: { ...link, forward } }),
        () => prepareForward(memory.kernels, p, arrays, layout, inputAt),
        () => forwardUnits(p, inShared, units, claim(order, claimed), memory.kernels, { forward, slot: 0 }),
      );
      return;
    }
    // each thread its own memory (the scalar kernels, another build, or a call the shared memory cannot
    // hold), the inputs in shared buffers; checked here, so that a bad input fails here, not in a worker
    checkValues(q, k, v);
    const scratch = new SharedScratch();
    const s: ForwardArrays = { ...arrays, q: scratch.input(q), k: scratch.input(k), v: scratch.input(v) };
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
  });
  return { ...outputs, width };
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
  // contiguous ranges of units, one per thread, the calling thread taking the first, each thread with a dq
  // partial of its own (the key-major walk adds into every query's dq): which thread adds which dq terms
  // is fixed, and the partials are summed in thread order, so the sum is the same in every run
  const ranges = n === 1 ? [] : splitByCost(backwardCost(p, units, cost, inverted, offsets), n);
  if (ranges.length < 2) {
    backwardUnits(p, arrays, units, 0, units.length / 3, kernels);
    return { dq: Float32Array.from(arrays.dq), dk: arrays.dk, dv: arrays.dv };
  }
  const scratch = new SharedScratch();
  const s: BackwardArrays = {
    ...arrays,
    inverted: inverted && { start: scratch.input(inverted.start), queries: scratch.input(inverted.queries) },
    dk: shared(arrays.dk, false),
    dv: shared(arrays.dv, false),
  };
  const dq = arrays.dq;
  await withSharedKernels(async (memory) => {
    const layout = memory && kernels === simd ? backwardLayout(memory.kernels, p) : null;
    const regions = memory && layout && sharedLayout(memory, layout.inputBytes, layout.scratchBytes, ranges.length);
    if (memory && regions) {
      // the inputs copied once into the shared memory, each thread's scratch (and dq partial) after them
      const { inputAt, scratchAt } = regions;
      const backward: SharedBackward = regions;
      const empty = new Float32Array(0);
      // (what the workers do not read stays here: posting an unshared array copies it)
      const inShared: BackwardArrays = {
        ...s,
        q: empty,
        k: empty,
        v: empty,
        dout: empty,
        lse: empty,
        delta: new Float64Array(0),
        dq: new Float64Array(0),
      };
      await onSharedMemory(
        memory,
        ranges.length - 1,
        (link) => {
          const [from, to] = ranges[link.slot];
          return { kind: "backward", problem: p, arrays: inShared, units, from, to, shared: { ...link, backward } };
        },
        () => prepareBackward(memory.kernels, arrays, inputAt),
        () => backwardUnits(p, inShared, units, ranges[0][0], ranges[0][1], memory.kernels, { backward, slot: 0 }),
      );
      for (const [partAt] of scratchAt) {
        const part = memory.kernels.f32(partAt, dq.length);
        for (let i = 0; i < dq.length; i++) dq[i] += part[i];
      }
      return;
    }
    // each thread its own memory (the scalar kernels, another build, or a call the shared memory cannot
    // hold), the inputs in shared buffers, a float64 dq partial per worker (the calling thread's is dq)
    const inputs: BackwardArrays = {
      ...s,
      q: scratch.input(q),
      k: scratch.input(k),
      v: scratch.input(v),
      dout: scratch.input(dout),
      lse: scratch.input(lse),
      delta: scratch.input(delta),
    };
    const parts = ranges.slice(1).map(() => scratch.zeros(dq));
    const jobs: Job[] = ranges
      .slice(1)
      .map(([from, to], i) => ({ kind: "backward", problem: p, arrays: { ...inputs, dq: parts[i] }, units, from, to }));
    const others = runJobs(jobs, n - 1);
    try {
      backwardUnits(p, inputs, units, ranges[0][0], ranges[0][1], kernels);
    } finally {
      await others;
    }
    for (const part of parts) for (let i = 0; i < dq.length; i++) dq[i] += part[i];
  });
  scratch.recycle();
  return { dq: Float32Array.from(dq), dk: s.dk, dv: s.dv };
}

/**
 * A call on the shared memory: a job for each of `workers` workers (`job` gets its link: scratch slots
 * 1 .. workers), started before this thread prepares the inputs (the workers wait for them: signalReady),
 * then this thread's own part (slot 0).
 */
async function onSharedMemory(
  memory: SharedKernels,
  workers: number,
  job: (link: SharedLink) => Job,
  prepare: () => void,
  own: () => void,
): Promise<void> {
  const ready = shared(new Int32Array(1), false);
  const link = (slot: number) => ({ memory: memory.kernels.memory, id: memory.id, variant: memory.kernels.variant, ready, slot });
  const others = runJobs(
    Array.from({ length: workers }, (_, i) => job(link(i + 1))),
    workers,
  );
  try {
    signalReady(ready, prepare);
    own();
  } finally {
    await others;
  }
}

/**
 * Regions for a job on the shared memory: the inputs once, then `threads` copies of one thread's scratch;
 * null where they do not fit its 4 GiB (then each thread works in its own memory).
 */
function sharedLayout({ kernels }: SharedKernels, inputBytes: number[], scratchBytes: number[], threads: number): Regions | null {
  return kernels.regionsFit(inputBytes, scratchBytes, threads) ? kernels.regions(inputBytes, scratchBytes, threads) : null;
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
