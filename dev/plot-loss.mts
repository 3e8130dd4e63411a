// Draws training logs (log.jsonl of `moba train`) as one loss chart: each run's validation loss
// and a 50-step moving average of its training loss, and prints the final validation losses.
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
  const smooth = log.map(
    (l, j) => [l.step + 1, log.slice(Math.max(0, j - 49), j + 1).reduce((a, b) => a + b.loss, 0) / Math.min(50, j + 1)] as [number, number],
  );
  return [
    { name: `${name} train (50-step mean)`, color: colors[i % colors.length], points: smooth },
    {
      name: `${name} validation`,
      color: colors[i % colors.length],
      points: validation.map((l) => [l.step + 1, l.validationLoss!] as [number, number]),
    },
  ];
});
writeFileSync(out, lineChart(title, series, "step", "loss (nats per byte)"));
