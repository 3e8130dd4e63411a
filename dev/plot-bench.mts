// Redraws docs/bench-webgpu.svg from the recorded rows (docs/bench-webgpu-h100-f16.jsonl up to 32K,
// docs/bench-webgpu-h100-long.jsonl above): the forward-only rows from 32K up, as `moba bench --svg` draws them.
// Usage: node --import tsx dev/plot-bench.mts
import { readFileSync, writeFileSync } from "node:fs";
import { gpuBenchPlot, type GpuBenchRow, OFFICIAL_MOBA_SPEEDUP } from "../src/run/benchGpu.ts";

const read = (file: string): GpuBenchRow[] =>
  readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.trim())
    .map((line) => {
      // JSON has no NaN: the bench writes a row's missing times as null
      const row = JSON.parse(line) as Record<string, number | string | null>;
      return Object.fromEntries(Object.entries(row).map(([k, v]) => [k, v ?? Number.NaN])) as unknown as GpuBenchRow;
    });
const rows = [...read("docs/bench-webgpu-h100-f16.jsonl"), ...read("docs/bench-webgpu-h100-long.jsonl")]
  .filter((r) => r.tokens >= 32768 && Number.isNaN(r.mobaTrainMs))
  .sort((a, b) => a.tokens - b.tokens || a.heads - b.heads || (a.precision === "f16" ? -1 : 1));
writeFileSync("docs/bench-webgpu.svg", gpuBenchPlot(rows, OFFICIAL_MOBA_SPEEDUP));
console.log(`docs/bench-webgpu.svg: ${rows.length} rows`);
