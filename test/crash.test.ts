// kill -9 during training: a run killed at several points (between steps, while writing the log, the checkpoint
// or the plot) keeps a checkpoint that loads, leaves no temporary file behind once resumed, and resumed to the end
// gives the losses of the run that was never killed.
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, watch, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";
import { loadCheckpoint } from "../src/model/checkpoint.js";
import { type StepLog, train, type TrainOptions } from "../src/run/train.js";
import { TINY } from "./helpers.js";

const dir = mkdtempSync(join(tmpdir(), "moba-crash-"));
after(() => rmSync(dir, { recursive: true, force: true }));
const main = fileURLToPath(new URL("../src/cli/main.ts", import.meta.url));

const corpus = join(dir, "corpus");
mkdirSync(corpus);
const text = readFileSync(fileURLToPath(new URL("../docs/design.md", import.meta.url)), "utf8");
for (let i = 0; i < 8; i++) writeFileSync(join(corpus, `doc${i}.txt`), text.slice(i * 900, i * 900 + 400 + 61 * i));
// a checkpoint every step: most of the run's time is spent saving, so the kills land in the writes
const options: Partial<TrainOptions> = {
  model: TINY,
  data: corpus,
  steps: 10,
  contextLength: 48,
  batchRows: 2,
  warmupSteps: 2,
  evalEvery: 5,
  evalRows: 2,
  checkpointEvery: 1,
  backend: "cpu",
  learningRate: 1e-2,
};
const config = join(dir, "crash.json");
writeFileSync(config, JSON.stringify(options));

const losses = (out: string) =>
  readFileSync(join(out, "log.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((l) => (JSON.parse(l) as StepLog).loss);
const temporaries = (out: string) => readdirSync(out).filter((f) => f.includes(".tmp-"));

/** Starts `moba train` into `out` and kills it (SIGKILL) at its `event`-th file event there; resolves with the files present then. */
function killAtEvent(out: string, resume: boolean, event: number): Promise<string[]> {
  mkdirSync(out, { recursive: true });
  const child: ChildProcess = spawn(
    process.execPath,
    ["--import", "tsx", main, "train", "--config", config, "--out", out, ...(resume ? ["--resume"] : [])],
    { stdio: "ignore" },
  );
  return new Promise((resolve, reject) => {
    let seen = 0,
      present: string[] = [];
    const watcher = watch(out, () => {
      if (++seen !== event) return;
      child.kill("SIGKILL");
      present = readdirSync(out);
    });
    child.on("exit", (code, signal) => {
      watcher.close();
      if (signal !== "SIGKILL") reject(new Error(`the run ended (code ${code}) before its ${event}-th file event: kill earlier`));
      else resolve(present);
    });
  });
}

test(
  "kill -9 at several points, including mid-write: every surviving checkpoint loads, and the resumed run equals the uninterrupted one",
  { timeout: 180_000 },
  async () => {
    const reference = join(dir, "uninterrupted");
    await train({ ...options, out: reference }, { print: () => undefined });

    const out = join(dir, "killed");
    const killedWith: string[][] = [];
    // each save writes log.jsonl, checkpoint.safetensors and loss.svg (a temporary file each, then a rename): ~6 events
    for (const [round, event] of [3, 8, 14, 5].entries()) {
      killedWith.push(await killAtEvent(out, round > 0, event));
      if (existsSync(join(out, "checkpoint.safetensors"))) {
        const saved = await loadCheckpoint(join(out, "checkpoint.safetensors")); // whole and verified, whenever the kill came
        assert.ok(saved.moments && saved.state, `round ${round}: a training checkpoint`);
      }
    }
    // a kill in the middle of a checkpoint write, made certain: the partial temporary file of a dead process
    const partial = readFileSync(join(out, "checkpoint.safetensors"));
    writeFileSync(join(out, "checkpoint.safetensors.tmp-2147483646-0"), partial.subarray(0, partial.length >> 1));

    await train({ ...options, out }, { print: () => undefined }, true);
    assert.deepEqual(losses(out), losses(reference), "the resumed run's losses");
    const [a, b] = await Promise.all([
      loadCheckpoint(join(out, "checkpoint.safetensors")),
      loadCheckpoint(join(reference, "checkpoint.safetensors")),
    ]);
    a.model.params.forEach((p, j) => assert.deepEqual(p.data, b.model.params[j].data, p.name));
    assert.deepEqual(temporaries(out), [], "temporary files of killed runs removed");
    console.log(
      `killed with these files present: ${killedWith.map((files) => files.filter((f) => f.includes(".tmp-")).join(" ") || "(no write in flight)").join(" | ")}`,
    );
  },
);
