// Worker thread entry: runs one slice of a kernel per message.
import { parentPort } from "node:worker_threads";
import { backwardUnits, forwardUnits } from "./attention.js";
import { gemmRows } from "./gemm.js";
import { claim, type Job, type JobReply } from "./pool.js";
import { sharedKernelsOn } from "./simd.js";

/** A forward job on the shared memory: the units, once the calling thread has its inputs ready. */
async function sharedForward(job: Extract<Job, { kind: "forward" }>): Promise<void> {
  const { forward, memory, id, variant, ready } = job.shared!;
  const kernels = await sharedKernelsOn(memory, id, variant);
  if (!kernels) throw new Error("the shared WebAssembly build does not load in this worker");
  Atomics.wait(ready, 0, 0);
  if (Atomics.load(ready, 0) !== 1) return;
  forwardUnits(job.problem, job.arrays, job.units, claim(job.order, job.claimed), kernels, { forward, slot: Atomics.add(ready, 1, 1) });
}

parentPort!.on("message", async ({ id, job }: { id: number; job: Job }) => {
  let reply: JobReply = { id };
  try {
    if (job.kind === "forward" && job.shared) await sharedForward(job);
    else if (job.kind === "forward") forwardUnits(job.problem, job.arrays, job.units, claim(job.order, job.claimed));
    else if (job.kind === "backward") backwardUnits(job.problem, job.arrays, job.units, job.from, job.to);
    else gemmRows(job.op, job.from, job.to);
  } catch (error) {
    reply = { id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
  }
  parentPort!.postMessage(reply);
});
