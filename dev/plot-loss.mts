// Draws training logs (log.jsonl of `moba train`) as one chart of their validation losses, and
// prints each run's final validation loss, time and skipped steps.
// Usage: node --import tsx dev/plot-loss.mts OUT.svg TITLE NAME=LOG.jsonl [NAME=LOG.jsonl ...]
import { readFileSync, writeFileSync } from "node:fs";
import type { StepLog } from "../src/run/train.js";
import { lineChart } from "../src/run/plot.js";

const [out, title, ...runs] = process.argv.slice(2);
const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
const series = runs.flatMap((run, i) => {
  const [name, path] = run.split("=");
  const log = readFileSync(path, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as StepLog);
  const validation = log.filter((l) => l.validationLoss !== undefined);
  const skipped = log.filter((l) => l.skipped).length;
  console.log(
    `${name}: final validation loss ${validation.at(-1)?.validationLoss?.toFixed(4)} after ${log.length} steps, ${log.at(-1)?.seconds.toFixed(1)} s, ${skipped} skipped steps`,
  );
  return [{ name, color: colors[i % colors.length], points: validation.map((l) => [l.step + 1, l.validationLoss!] as [number, number]) }];
});
writeFileSync(out, lineChart(title, series, "step", "validation loss (nats per byte)"));
