// Worker thread entry: runs one slice of a kernel per message.
import { parentPort } from "node:worker_threads";
import { backwardUnits, forwardUnits } from "./attention.js";
import { gemmRows } from "./gemm.js";
import { awaitReady, claim, type Job, type JobReply } from "./pool.js";
import { sharedKernelsOn } from "./simd.js";

/** A job on the shared memory: the units, once the calling thread has its inputs ready. */
async function onSharedMemory(job: Extract<Job, { kind: "forward" | "backward" }>): Promise<void> {
  const { memory, id, variant, ready, slot } = job.shared!;
  const kernels = await sharedKernelsOn(memory, id, variant);
  if (!kernels) throw new Error("the shared WebAssembly build does not load in this worker");
  if (!awaitReady(ready)) return;
  if (job.kind === "forward")
    forwardUnits(job.problem, job.arrays, job.units, claim(job.order, job.claimed), kernels, { forward: job.shared!.forward, slot });
  else backwardUnits(job.problem, job.arrays, job.units, job.from, job.to, kernels, { backward: job.shared!.backward, slot });
}

parentPort!.on("message", async ({ id, job }: { id: number; job: Job }) => {
  let reply: JobReply = { id };
  try {
    if (job.kind !== "gemm" && job.shared) await onSharedMemory(job);
    else if (job.kind === "forward") forwardUnits(job.problem, job.arrays, job.units, claim(job.order, job.claimed));
    else if (job.kind === "backward") backwardUnits(job.problem, job.arrays, job.units, job.from, job.to);
    else gemmRows(job.op, job.from, job.to);
  } catch (error) {
    reply = { id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
  }
  parentPort!.postMessage(reply);
});
