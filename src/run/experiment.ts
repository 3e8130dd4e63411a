// moba experiment <name>: the runs of one experiment from its config in experiments/, each trained
// (resumable: an interrupted experiment picks up where it stopped) and evaluated, then one report:
// results.jsonl, a table, and SVG plots.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeFileAtomic } from "../io/files.js";
import { MobaError } from "../tensor.js";
import { modelBackend } from "./backends.js";
import { lossReport, type LossReport, passkeyGrid, type PasskeyCell } from "./evaluate.js";
import { heatmap, lineChart } from "./plot.js";
import { checkTrainOptions, kindsAt, type StepLog, train, type TrainOptions } from "./train.js";
import { table } from "./util.js";

export interface ExperimentConfig {
  description: string;
  /** Options every run shares; a run's own options override them (its model fields one by one). */
  base: Partial<TrainOptions>;
  runs: { name: string; train: Partial<TrainOptions> }[];
  eval: {
    contextLength: number;
    rows: number;
    buckets: number;
    trailing: number;
    passkey?: { lengths: number[]; depths: number[]; trials: number };
  };
}

export interface RunResult {
  name: string;
  steps: number;
  tokens: number;
  wallSeconds: number;
  tokensPerSecond: number;
  finalTrainLoss: number;
  validationLoss: number;
  eval: LossReport;
  passkey?: PasskeyCell[];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

export function readExperiment(path: string): ExperimentConfig {
  let config: ExperimentConfig;
  try {
    config = JSON.parse(readFileSync(path, "utf8")) as ExperimentConfig;
  } catch (error) {
    throw new MobaError(`experiment: cannot read ${path} (${(error as Error).message.split("\n")[0]})`);
  }
  if (!Array.isArray(config.runs) || config.runs.length === 0)
    throw new MobaError(`${path}: expected "runs": a non-empty list, got ${JSON.stringify(config.runs)}`);
  config.runs.forEach((r) => checkTrainOptions(runOptions(config, r.name, "")));
  return config;
}

function runOptions(config: ExperimentConfig, name: string, out: string): Partial<TrainOptions> {
  const run = config.runs.find((r) => r.name === name);
  if (!run) throw new MobaError(`--run: expected one of ${config.runs.map((r) => r.name).join(", ")}, got "${name}"`);
  return { ...config.base, ...run.train, model: { ...config.base.model, ...run.train.model }, out: join(out, name) };
}

/** What the command line may override in every run of an experiment. */
export type RunOverrides = Partial<Pick<TrainOptions, "backend" | "precision">>;

/** Trains (or finishes) one run and evaluates its checkpoint. */
export async function runOne(
  config: ExperimentConfig,
  name: string,
  out: string,
  print: (line: string) => void,
  overrides: RunOverrides = {},
): Promise<RunResult> {
  const options = runOptions(config, name, out);
  if (overrides.backend) options.backend = overrides.backend;
  if (overrides.precision) options.precision = overrides.precision;
  const done = join(out, name, "result.json");
  if (existsSync(done)) {
    print(`[${name}] finished earlier (${done})`);
    return JSON.parse(readFileSync(done, "utf8")) as RunResult;
  }
  const result = await train(
    options,
    {
      print: (l) => print(`[${name}] ${l}`),
      onStep: (l, total) => {
        if ((l.step + 1) % 25 === 0 || l.step + 1 === total)
          print(
            `[${name}] step ${l.step + 1}/${total} loss ${l.loss.toFixed(4)}${l.validationLoss ? ` val ${l.validationLoss.toFixed(4)}` : ""} ${l.tokensPerSecond.toFixed(0)} tok/s`,
          );
      },
    },
    true,
  );
  // the trained model and held-out documents as train() left them: nothing read again
  const { model, validation } = result;
  const o = checkTrainOptions(options);
  const backend = await modelBackend(result.backend);
  const e = config.eval;
  // evaluated as it ends training: a stage switch to full attention yields a full-attention model
  const kinds = kindsAt(o, o.steps - 1);
  const report = await lossReport(model, validation, e, backend, kinds);
  const passkey = e.passkey
    ? await passkeyGrid(model, e.passkey.lengths, e.passkey.depths, e.passkey.trials, 7, backend, kinds)
    : undefined;
  const log = result.log;
  const last = log[log.length - 1];
  const r: RunResult = {
    name,
    steps: log.length,
    tokens: last.tokens,
    wallSeconds: last.seconds,
    tokensPerSecond: last.tokens / last.seconds,
    finalTrainLoss: last.loss,
    validationLoss: result.validationLoss ?? NaN,
    eval: report,
    passkey,
  };
  await writeFileAtomic(done, new TextEncoder().encode(JSON.stringify(r, null, 1)));
  print(
    `[${name}] eval with [${kinds.join(", ")}]: loss ${report.loss.toFixed(4)} (${report.rows} rows of ${report.contextLength}), trailing ${report.trailingTokens}: ${report.trailing.toFixed(4)}`,
  );
  return r;
}

/** Collects every finished run's result.json into results.jsonl, a table and the plots. */
export async function report(config: ExperimentConfig, name: string, out: string, print: (line: string) => void): Promise<RunResult[]> {
  const results = config.runs
    .map((r) => join(out, r.name, "result.json"))
    .filter(existsSync)
    .map((f) => JSON.parse(readFileSync(f, "utf8")) as RunResult);
  if (results.length === 0) throw new MobaError(`experiment ${name}: no finished runs in ${out}`);
  const encode = (s: string) => new TextEncoder().encode(s);
  await writeFileAtomic(join(out, "results.jsonl"), encode(results.map((r) => JSON.stringify(r) + "\n").join("")));
  const logs = results.map((r) =>
    readFileSync(join(out, r.name, "log.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as StepLog),
  );
  await writeFileAtomic(
    join(out, "validation.svg"),
    encode(
      lineChart(
        `${name}: validation loss`,
        results.map((r, i) => ({
          name: r.name,
          color: COLORS[i % COLORS.length],
          points: logs[i].filter((l) => l.validationLoss !== undefined).map((l) => [l.step + 1, l.validationLoss!] as [number, number]),
        })),
        "step",
        "nats per byte",
      ),
    ),
  );
  await writeFileAtomic(
    join(out, "position.svg"),
    encode(
      lineChart(
        `${name}: loss by position (${results[0].eval.contextLength} bytes)`,
        results.map((r, i) => ({
          name: r.name,
          color: COLORS[i % COLORS.length],
          points: r.eval.byPosition.map((b) => [(b.from + b.to) / 2, b.loss] as [number, number]),
        })),
        "position in the sequence",
        "nats per byte",
      ),
    ),
  );
  for (const r of results) {
    if (!r.passkey) continue;
    const lengths = [...new Set(r.passkey.map((c) => c.length))],
      depths = [...new Set(r.passkey.map((c) => c.depth))];
    const grid = lengths.map((l) => depths.map((d) => r.passkey!.find((c) => c.length === l && c.depth === d)!.accuracy));
    await writeFileAtomic(
      join(out, `passkey-${r.name}.svg`),
      encode(
        heatmap(
          `${name} / ${r.name}: passkey accuracy`,
          lengths.map(String),
          depths.map(String),
          grid,
          "context length (bytes)",
          "depth of the key",
        ),
      ),
    );
  }
  print(
    table(
      [
        "run",
        "steps",
        "tokens",
        "wall s",
        "tok/s",
        "train loss",
        "val loss",
        "eval loss",
        `last ${results[0].eval.trailingTokens}`,
        ...(results[0].passkey ? ["passkey"] : []),
      ],
      results.map((r) => [
        r.name,
        String(r.steps),
        String(r.tokens),
        r.wallSeconds.toFixed(0),
        r.tokensPerSecond.toFixed(0),
        r.finalTrainLoss.toFixed(4),
        r.validationLoss.toFixed(4),
        r.eval.loss.toFixed(4),
        r.eval.trailing.toFixed(4),
        ...(r.passkey ? [(r.passkey.reduce((a, c) => a + c.accuracy, 0) / r.passkey.length).toFixed(2)] : []),
      ]),
    ),
  );
  print(`wrote ${join(out, "results.jsonl")}, validation.svg, position.svg${results.some((r) => r.passkey) ? ", passkey-*.svg" : ""}`);
  return results;
}

/** `name`: a config in experiments/ (e.g. "parity") or a path to a .json config. */
export async function experiment(
  name: string,
  o: { runs?: string[]; reportOnly: boolean; out?: string } & RunOverrides,
  print: (line: string) => void,
): Promise<RunResult[]> {
  const bundled = new URL(`../../experiments/${name}.json`, import.meta.url);
  const path = name.endsWith(".json") ? name : /^[a-z0-9-]+$/.test(name) && existsSync(bundled) ? fileURLToPath(bundled) : null;
  if (path === null || !existsSync(path))
    throw new MobaError(
      `experiment: expected the name of a config in experiments/ (parity, trailing, granularity, passkey) or a .json file, got "${name}"`,
    );
  const config = readExperiment(path);
  const label = basename(path, ".json");
  const out = o.out ?? join("runs", "experiments", label);
  mkdirSync(out, { recursive: true });
  if (!o.reportOnly) {
    print(`experiment ${label}: ${config.description}`);
    for (const run of o.runs ?? config.runs.map((r) => r.name))
      await runOne(config, run, out, print, { backend: o.backend, precision: o.precision });
  }
  return report(config, label, out, print);
}
