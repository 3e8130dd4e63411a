// Are two identical training runs on the WebGPU backend identical? The tiny model of test/f16.test.ts's
// pipelined-training test, trained RUNS times per configuration (serially: a checkpoint after every
// step), each step's loss and gradient norm compared bit for bit with the first run's. A difference
// that comes and goes between runs of one build is nondeterminism in some kernel, not a logic fault.
// Usage (device): node --import tsx dev/determinism.mts [RUNS]    (default 3)
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { train } from "../src/run/train.ts";
import { TINY } from "../test/helpers.ts";

const runs = Number(process.argv[2] ?? 3);
const steps = 9;
const configs = [
  { name: "f16 moba, checkpoint every step", precision: "f16", attention: "moba", checkpointEvery: 1 },
  { name: "f16 moba, back to back", precision: "f16", attention: "moba", checkpointEvery: steps },
  { name: "f16 full", precision: "f16", attention: "full", checkpointEvery: 1 },
  { name: "f32 moba", precision: "f32", attention: "moba", checkpointEvery: 1 },
] as const;
const out = mkdtempSync(join(tmpdir(), "moba-determinism-"));
const hex = (x: number | undefined) => (x === undefined ? "-" : Buffer.from(Float64Array.of(x).buffer).toString("hex"));
for (const c of configs) {
  const logs: { loss: number; gradNorm?: number }[][] = [];
  for (let r = 0; r < runs; r++) {
    const result = await train(
      {
        model: { ...TINY, layer_attention: Array(TINY.num_hidden_layers).fill(c.attention) },
        steps,
        warmupSteps: steps,
        contextLength: 64,
        batchRows: 1,
        evalEvery: steps,
        evalRows: 1,
        backend: "webgpu",
        precision: c.precision,
        checkpointEvery: c.checkpointEvery,
        out: join(out, `${c.name}-${r}`.replace(/[ ,]/g, "_")),
      },
      { print: () => {} },
    );
    logs.push(result.log);
  }
  const differing = logs
    .slice(1)
    .map((log) =>
      log.flatMap((l, s) => (hex(l.loss) !== hex(logs[0][s].loss) || hex(l.gradNorm) !== hex(logs[0][s].gradNorm) ? [s + 1] : [])),
    );
  console.log(`${c.name}: runs 2..${runs} differ from run 1 at steps ${JSON.stringify(differing)}`);
  for (const [r, log] of logs.entries()) console.log(`  run ${r + 1} gradNorm ${log.map((l) => l.gradNorm?.toPrecision(9)).join(" ")}`);
}
rmSync(out, { recursive: true, force: true });
process.exit(0);
