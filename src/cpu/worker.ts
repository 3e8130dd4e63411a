// Worker thread entry: runs one slice of a kernel per message.
import { parentPort } from "node:worker_threads";
import { backwardUnits, forwardUnits } from "./attention.js";
import { matmulXWt } from "./ops.js";
import type { Job, JobReply } from "./pool.js";

parentPort!.on("message", ({ id, job }: { id: number; job: Job }) => {
  let reply: JobReply = { id };
  try {
    if (job.kind === "forward") forwardUnits(job.problem, job.arrays, job.units, job.from, job.to);
    else if (job.kind === "backward") backwardUnits(job.problem, job.arrays, job.units, job.from, job.to);
    else {
      const { K, N, from, to } = job;
      matmulXWt(job.y.subarray(from * N, to * N), job.x.subarray(from * K, to * K), job.w, to - from, K, N);
    }
  } catch (error) {
    reply = { id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
  }
  parentPort!.postMessage(reply);
});
