// moba experiment <name>: the runs of one experiment from its config in experiments/, each trained
// (resumable: an interrupted experiment picks up where it stopped) and evaluated, then one report:
// results.jsonl, a table, and SVG plots. A continual-training experiment first trains its
// "pretrain" run, exports it as `moba export` does, and starts every run from that directory.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { fileURLToPath } from "node:url";
import { writeFileAtomic } from "../io/files.js";
import { exportCheckpoint } from "./export.js";
import { MobaError } from "../tensor.js";
import { modelBackend } from "./backends.js";
import { lossReport, type LossReport, passkeyGrid, type PasskeyCell } from "./evaluate.js";
import { heatmap, lineChart } from "./plot.js";
import { checkTrainOptions, kindsAt, type StepLog, train, type TrainOptions } from "./train.js";
import { table } from "./util.js";
import { configParameterCount } from "../model/llama.js";
import { type ComputePoint, fitPowerLaw, lowerEnvelope, trainingFlops } from "./scaling.js";

export interface ExperimentConfig {
  description: string;
  /**
   * Continual training (the MoBA paper's recipe): a run trained first into OUT/pretrain and exported
   * as a Hugging Face directory (OUT/pretrain/hf); every run then starts from it (its `init`).
   */
  pretrain?: Partial<TrainOptions>;
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
  /** Runs from a pretrained model: the validation loss of the starting weights under the run's attention. */
  initialValidationLoss?: number;
  eval: LossReport;
  passkey?: PasskeyCell[];
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
/** Run i's line: the palette's colours, dashed on its second time round, so up to 16 runs stay apart. */
const runLine = (i: number) => ({ color: COLORS[i % COLORS.length], dashed: Math.floor(i / COLORS.length) % 2 === 1 });

export function readExperiment(path: string): ExperimentConfig {
  let config: ExperimentConfig;
  try {
    config = JSON.parse(readFileSync(path, "utf8")) as ExperimentConfig;
  } catch (error) {
    throw new MobaError(`experiment: cannot read ${path} (${(error as Error).message.split("\n")[0]})`);
  }
  if (!Array.isArray(config.runs) || config.runs.length === 0)
    throw new MobaError(`${path}: expected "runs": a non-empty list, got ${JSON.stringify(config.runs)}`);
  // runs from the pretrained model are checked against its config (as train() checks them against the exported one)
  const pretrained = config.pretrain === undefined ? undefined : checkTrainOptions({ ...config.pretrain, out: "pretrain" }).config;
  config.runs.forEach((r) => checkTrainOptions(runOptions(config, r.name, ""), pretrained));
  return config;
}

function runOptions(config: ExperimentConfig, name: string, out: string): Partial<TrainOptions> {
  const run = config.runs.find((r) => r.name === name);
  if (!run) throw new MobaError(`--run: expected one of ${config.runs.map((r) => r.name).join(", ")}, got "${name}"`);
  return {
    ...config.base,
    ...run.train,
    model: { ...config.base.model, ...run.train.model },
    out: join(out, name),
    ...(config.pretrain && { init: pretrainedDir(out) }),
  };
}

/** Where a continual-training experiment's pretrained model is exported. */
function pretrainedDir(out: string): string {
  return join(out, "pretrain", "hf");
}

/** What the command line may override in every run of an experiment. */
export type RunOverrides = Partial<Pick<TrainOptions, "backend" | "precision">>;

function withOverrides(options: Partial<TrainOptions>, overrides: RunOverrides): Partial<TrainOptions> {
  if (overrides.backend) options.backend = overrides.backend;
  if (overrides.precision) options.precision = overrides.precision;
  return options;
}

/** Progress every 25 steps and at the end, each line prefixed with the run's name. */
function runIo(name: string, print: (line: string) => void) {
  return {
    print: (l: string) => print(`[${name}] ${l}`),
    onStep: (l: StepLog, total: number) => {
      if ((l.step + 1) % 25 === 0 || l.step + 1 === total)
        print(
          `[${name}] step ${l.step + 1}/${total} loss ${l.loss.toFixed(4)}${l.validationLoss ? ` val ${l.validationLoss.toFixed(4)}` : ""} ${l.tokensPerSecond.toFixed(0)} tok/s`,
        );
    },
  };
}

/**
 * Trains (or finishes: a finished run returns at once) the pretraining run and exports its checkpoint
 * as `moba export` does (again each time: the files are the same); returns the directory.
 */
async function pretrain(config: ExperimentConfig, out: string, print: (line: string) => void, overrides: RunOverrides): Promise<string> {
  const options = withOverrides({ ...config.pretrain, out: join(out, "pretrain") }, overrides);
  const result = await train(options, runIo("pretrain", print), true);
  const dir = pretrainedDir(out);
  await exportCheckpoint(result.checkpoint, dir);
  print(`[pretrain] validation loss ${result.validationLoss?.toFixed(4)} after ${result.log.length} steps; exported to ${dir}`);
  return dir;
}

/** Trains (or finishes) one run and evaluates its checkpoint. */
export async function runOne(
  config: ExperimentConfig,
  name: string,
  out: string,
  print: (line: string) => void,
  overrides: RunOverrides = {},
): Promise<RunResult> {
  const options = withOverrides(runOptions(config, name, out), overrides);
  const done = join(out, name, "result.json");
  if (existsSync(done)) {
    print(`[${name}] finished earlier (${done})`);
    return JSON.parse(readFileSync(done, "utf8")) as RunResult;
  }
  const result = await train(options, runIo(name, print), true);
  // the trained model and held-out documents as train() left them: nothing read again
  const { model, validation } = result;
  // a run from a pretrained model has its config (the layers' attention included) only in the trained model
  const o = checkTrainOptions(options, options.init ? model.config : undefined);
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
    ...(result.initialValidationLoss !== undefined && { initialValidationLoss: result.initialValidationLoss }),
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
        `${name}: validation loss${config.pretrain ? " (step 0: the pretrained weights, before training)" : ""}`,
        results.map((r, i) => ({
          name: r.name,
          ...runLine(i),
          // a run from a pretrained model starts at step 0 with its starting weights' loss
          points: [
            ...(r.initialValidationLoss === undefined ? [] : [[0, r.initialValidationLoss] as [number, number]]),
            ...logs[i].filter((l) => l.validationLoss !== undefined).map((l) => [l.step + 1, l.validationLoss!] as [number, number]),
          ],
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
          ...runLine(i),
          points: r.eval.byPosition.map((b) => [(b.from + b.to) / 2, b.loss] as [number, number]),
        })),
        "position in the sequence",
        "nats per byte",
      ),
    ),
  );
  const fits = config.pretrain ? [] : scalingFits(config, results, logs, out);
  if (fits.length > 0) await writeFileAtomic(join(out, "scaling.svg"), encode(scalingPlot(name, fits)));
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
        ...(results[0].initialValidationLoss !== undefined ? ["val loss at 0"] : []),
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
        ...(results[0].initialValidationLoss !== undefined ? [r.initialValidationLoss?.toFixed(4) ?? ""] : []),
        r.validationLoss.toFixed(4),
        r.eval.loss.toFixed(4),
        r.eval.trailing.toFixed(4),
        ...(r.passkey ? [(r.passkey.reduce((a, c) => a + c.accuracy, 0) / r.passkey.length).toFixed(2)] : []),
      ]),
    ),
  );
  for (const f of fits)
    print(
      `L(C) for ${f.group} (${f.runs} runs, C = 6 N D FLOPs, the lower envelope's ${f.envelope.length} validation points): ` +
        `${f.fit.a.toPrecision(4)} · C^${f.fit.b.toFixed(4)}`,
    );
  print(
    `wrote ${join(out, "results.jsonl")}, validation.svg, position.svg${fits.length > 0 ? ", scaling.svg" : ""}${results.some((r) => r.passkey) ? ", passkey-*.svg" : ""}`,
  );
  return results;
}

/** A group of runs with the same attention in every layer, their lower envelope of validation loss against compute and its power law. */
interface ScalingFit {
  group: string;
  runs: number;
  envelope: ComputePoint[];
  fit: { a: number; b: number };
}

/**
 * The power laws of a scaling study: runs grouped by their layers' attention (e.g. "moba", "full"),
 * every validation point of a run at C = 6 N D, the group's lower envelope and its fit; groups of at
 * least two runs (a law across model sizes).
 */
function scalingFits(config: ExperimentConfig, results: RunResult[], logs: StepLog[][], out: string): ScalingFit[] {
  const groups = new Map<string, { runs: number; points: ComputePoint[] }>();
  results.forEach((r, i) => {
    const { config: model } = checkTrainOptions(runOptions(config, r.name, out));
    const parameters = configParameterCount(model);
    const group = [...new Set(model.layer_attention)].sort().join("+");
    const g = groups.get(group) ?? groups.set(group, { runs: 0, points: [] }).get(group)!;
    g.runs++;
    for (const l of logs[i])
      if (l.validationLoss !== undefined) g.points.push({ flops: trainingFlops(parameters, l.tokens), loss: l.validationLoss });
  });
  return [...groups].flatMap(([group, g]) => {
    const envelope = lowerEnvelope(g.points);
    const fit = g.runs >= 2 ? fitPowerLaw(envelope) : null;
    return fit ? [{ group, runs: g.runs, envelope, fit }] : [];
  });
}

/** Each group's envelope and fitted line on log10 axes. */
function scalingPlot(name: string, fits: ScalingFit[]): string {
  const log10 = (p: ComputePoint) => [Math.log10(p.flops), Math.log10(p.loss)] as [number, number];
  return lineChart(
    `${name}: validation loss against training compute (lower envelope, fitted L = a C^b)`,
    fits.flatMap((f, i) => {
      const ends = [f.envelope[0].flops, f.envelope[f.envelope.length - 1].flops];
      const line = ends.map((flops) => log10({ flops, loss: f.fit.a * flops ** f.fit.b }));
      return [
        { name: `${f.group} envelope`, color: COLORS[(2 * i) % COLORS.length], points: f.envelope.map(log10) },
        { name: `${f.group}: ${f.fit.a.toPrecision(3)} C^${f.fit.b.toFixed(3)}`, color: COLORS[(2 * i + 1) % COLORS.length], points: line },
      ];
    }),
    "log10 training FLOPs (6 N D)",
    "log10 nats per byte",
    true,
  );
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
      `experiment: expected the name of a config in experiments/ (parity, trailing, granularity, passkey, continual) or a .json file, got "${name}"`,
    );
  const config = readExperiment(path);
  const label = basename(path, ".json");
  const out = o.out ?? join("runs", "experiments", label);
  mkdirSync(out, { recursive: true });
  if (!o.reportOnly) {
    print(`experiment ${label}: ${config.description}`);
    const overrides = { backend: o.backend, precision: o.precision };
    if (config.pretrain) await pretrain(config, out, print, overrides);
    for (const run of o.runs ?? config.runs.map((r) => r.name)) await runOne(config, run, out, print, overrides);
  }
  return report(config, label, out, print);
}
