// A small pool of worker threads that run slices of the attention kernels and GEMMs. Every array a job
// writes lives in a SharedArrayBuffer, so posting the job shares it instead of copying it.
// Node's modules are loaded only when a pool starts (runtime.ts), so the package also loads in
// browsers and Deno, where the CPU backend runs on the calling thread.
import type { Worker } from "node:worker_threads";
import type { AttentionProblem } from "../attention/problem.js";
import { importAtRunTime, isNode } from "../runtime.js";
import type { BackwardArrays, ForwardArrays, SharedBackward, SharedForward } from "./attention.js";
import type { GemmOp, SimdVariant, WasmMemory } from "./simd.js";

/**
 * A job on the shared build of the kernels (simd.ts): its instance on `memory` (`id` tells a worker's
 * earlier instance apart), the inputs prepared by the calling thread once ready[0] says so (signalReady),
 * this job's scratch slot.
 */
export interface SharedLink {
  memory: WasmMemory;
  id: number;
  variant: SimdVariant;
  ready: Int32Array;
  slot: number;
}

export type Job =
  // the units of order[claimed[0]++] until none is left (claim)
  | {
      kind: "forward";
      problem: AttentionProblem;
      arrays: ForwardArrays;
      units: Int32Array;
      order: Int32Array;
      claimed: Int32Array;
      shared?: SharedLink & { forward: SharedForward };
    }
  | {
      kind: "backward";
      problem: AttentionProblem;
      arrays: BackwardArrays;
      units: Int32Array;
      from: number;
      to: number;
      shared?: SharedLink & { backward: SharedBackward };
    }
  // rows [from, to) of C (+)= A · B
  | { kind: "gemm"; op: GemmOp; from: number; to: number };

export type JobReply = { id: number; error?: string };

let coreCount: number | undefined;

/**
 * Threads the CPU backend uses for large inputs: the machine's cores in Node (or MOBA_THREADS, e.g.
 * to run several trainings side by side), 1 elsewhere. A function, not a constant: a top-level await
 * would break require("moba") and non-ESM bundles.
 */
export async function cores(): Promise<number> {
  if (coreCount !== undefined) return coreCount;
  if (!isNode) coreCount = 1;
  else if (Number(process.env.MOBA_THREADS) >= 1) coreCount = Math.floor(Number(process.env.MOBA_THREADS));
  else coreCount = (await importAtRunTime<typeof import("node:os")>("node:os")).availableParallelism();
  return coreCount;
}

// The package runs dist/*.js; under tsx (tests, dev) the worker must register tsx itself,
// because Node 20 does not apply --import to worker threads.
async function startWorker(): Promise<Worker> {
  const { Worker } = await importAtRunTime<typeof import("node:worker_threads")>("node:worker_threads");
  if (!import.meta.url.endsWith(".ts")) return new Worker(new URL("./worker.js", import.meta.url));
  const url = new URL("./worker.ts", import.meta.url).href;
  return new Worker(`import("tsx/esm/api").then(({ register }) => { register(); return import(${JSON.stringify(url)}); });`, {
    eval: true,
  });
}

const idle: Worker[] = [];
let nextId = 0;

function runOn(worker: Worker, job: Job): Promise<void> {
  return new Promise((resolve, reject) => {
    const id = nextId++;
    const onMessage = (reply: JobReply) => {
      if (reply.id !== id) return;
      cleanup();
      if (reply.error) reject(new Error(`cpu worker: ${reply.error}`));
      else resolve();
    };
    const onError = (error: Error) => {
      cleanup();
      reject(new Error(`cpu worker failed: ${error.message}`));
    };
    const cleanup = () => {
      worker.off("message", onMessage);
      worker.off("error", onError);
    };
    worker.on("message", onMessage);
    worker.on("error", onError);
    worker.postMessage({ id, job });
  });
}

/**
 * Runs the jobs on up to `threads` workers, each worker taking the next job when it is done. Waits for
 * every worker before it reports the first failure: the others may still be writing memory the caller
 * would hand to its next call.
 */
export async function runJobs(jobs: Job[], threads: number): Promise<void> {
  const queue = [...jobs];
  const lane = async () => {
    const worker = idle.pop() ?? (await startWorker());
    worker.unref(); // an idle pool never keeps the process alive
    try {
      for (let job = queue.shift(); job; job = queue.shift()) await runOn(worker, job);
      idle.push(worker);
    } catch (error) {
      await worker.terminate();
      throw error;
    }
  };
  const settled = await Promise.allSettled(Array.from({ length: Math.min(threads, jobs.length) }, lane));
  const failed = settled.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) throw failed.reason;
}

/**
 * Hands out order[0], order[1], ... one per call across threads (claimed: a shared counter, from 0),
 * then -1: each thread takes its next unit when it is done with the last, so the load balances itself
 * and a thread that starts late takes fewer.
 */
export function claim(order: Int32Array, claimed: Int32Array): () => number {
  return () => {
    const i = Atomics.add(claimed, 0, 1);
    return i < order.length ? order[i] : -1;
  };
}

/**
 * Runs `prepare` (the calling thread laying out a shared job's inputs), then wakes the workers waiting
 * in awaitReady: ready[0] becomes 1, or 2 when `prepare` threw (the workers then do nothing).
 */
export function signalReady(ready: Int32Array, prepare: () => void): void {
  try {
    prepare();
    Atomics.store(ready, 0, 1);
  } finally {
    if (Atomics.load(ready, 0) === 0) Atomics.store(ready, 0, 2);
    Atomics.notify(ready, 0);
  }
}

/** In a worker: blocks until signalReady; whether the inputs are there. */
export function awaitReady(ready: Int32Array): boolean {
  Atomics.wait(ready, 0, 0);
  return Atomics.load(ready, 0) === 1;
}

/**
 * Splits units [0, cost.length) into at most `parts` contiguous ranges of about equal cost, each cut at
 * the unit boundary nearest its share (cutting after the unit that crosses it gave the calling thread's
 * range 53% of MoBA's 16K backward, which with its own setup left the worker idle for tens of ms).
 */
export function splitByCost(cost: Float64Array, parts: number): [number, number][] {
  const prefix = [0];
  for (const c of cost) prefix.push(prefix[prefix.length - 1] + c);
  const total = prefix[cost.length];
  const cuts = [0];
  for (let k = 1; k < parts; k++) {
    const target = (total * k) / parts;
    let b = cuts[cuts.length - 1];
    while (b < cost.length && Math.abs(prefix[b + 1] - target) <= Math.abs(prefix[b] - target)) b++;
    if (b > cuts[cuts.length - 1] && b < cost.length) cuts.push(b);
  }
  cuts.push(cost.length);
  return cuts
    .slice(1)
    .map((end, i) => [cuts[i], end] as [number, number])
    .filter(([from, to]) => to > from);
}

type Typed = Float32Array | Float64Array | Int32Array;

/** A copy of the array in shared memory (or a zeroed shared array of that length). */
export function shared<T extends Typed>(array: T, copy = true): T {
  const Ctor = array.constructor as new (buffer: SharedArrayBuffer) => T;
  const out = new Ctor(new SharedArrayBuffer(array.byteLength));
  if (copy) out.set(array as never);
  return out;
}

export const isShared = (a: Typed) => typeof SharedArrayBuffer !== "undefined" && a.buffer instanceof SharedArrayBuffer;

// buffers of finished calls, for the next ones (SharedScratch), at most SPARE_BYTES of them
const spare: SharedArrayBuffer[] = [];
const SPARE_BYTES = 64 * 2 ** 20;

/**
 * Shared memory for one call's inputs and scratch, in buffers recycled from earlier calls: a fresh
 * SharedArrayBuffer costs a page fault per 4 KiB on its first write (three of 4 MB took 10-20 ms on the
 * development machine), a recycled one only the copy (1.2 ms). Outputs the caller keeps are fresh
 * (`shared`). `recycle` hands the buffers back once no thread uses them; after a failure they are left
 * to the garbage collector instead (a worker may still be running).
 */
export class SharedScratch {
  private readonly taken: SharedArrayBuffer[] = [];

  /** The array itself when it is already shared, else a shared copy (copy false: of its type and length, contents unspecified). */
  input<T extends Typed>(array: T, copy = true): T {
    if (isShared(array)) return array;
    const out = this.take(array);
    if (copy) out.set(array as never);
    return out;
  }

  /** Zeros of the array's type and length. */
  zeros<T extends Typed>(array: T): T {
    return this.take(array).fill(0) as T;
  }

  private take<T extends Typed>(like: T): T {
    // the smallest spare buffer that fits, else a new one
    let best = -1;
    for (let i = 0; i < spare.length; i++) {
      if (spare[i].byteLength >= like.byteLength && (best < 0 || spare[i].byteLength < spare[best].byteLength)) best = i;
    }
    const buffer = best >= 0 ? spare.splice(best, 1)[0] : new SharedArrayBuffer(like.byteLength);
    this.taken.push(buffer);
    const Ctor = like.constructor as new (buffer: SharedArrayBuffer, offset: number, length: number) => T;
    return new Ctor(buffer, 0, like.length);
  }

  recycle(): void {
    spare.push(...this.taken.splice(0));
    let bytes = spare.reduce((sum, b) => sum + b.byteLength, 0);
    while (bytes > SPARE_BYTES) bytes -= spare.shift()!.byteLength; // the oldest go first
  }
}
