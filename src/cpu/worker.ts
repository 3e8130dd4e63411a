// Worker thread entry: runs one slice of a kernel per message.
import { parentPort } from "node:worker_threads";
import { backwardUnits, forwardUnits } from "./attention.js";
import { gemmRows } from "./gemm.js";
import { claim, type Job, type JobReply } from "./pool.js";

parentPort!.on("message", ({ id, job }: { id: number; job: Job }) => {
  let reply: JobReply = { id };
  try {
    if (job.kind === "forward") forwardUnits(job.problem, job.arrays, job.units, claim(job.order, job.claimed));
    else if (job.kind === "backward") backwardUnits(job.problem, job.arrays, job.units, job.from, job.to);
    else gemmRows(job.op, job.from, job.to);
  } catch (error) {
    reply = { id, error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
  }
  parentPort!.postMessage(reply);
});
