// moba train: language-model training (byte-level, or from a Hugging Face model with its tokenizer) with AdamW, warmup + cosine, clipping,
// gradient accumulation, attention stages, atomic checkpoints that resume exactly, a JSONL log
// of every step and an SVG loss curve.
import { existsSync, mkdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Backend } from "../attention/problem.js";
import type { ModelBackend } from "../backend.js";
import { isBundled, loadDocuments } from "../io/corpus.js";
import { writeFileAtomic } from "../io/files.js";
import { AdamW, LossScale, type LossScaleState, type Moments, zeroMoments } from "../model/adamw.js";
import { type Checkpoint, checkpointTokenizer, loadCheckpoint, saveCheckpoint } from "../model/checkpoint.js";
import { type AttentionKind, checkConfig, kindsFromSpec, type LlamaConfig, layerKinds } from "../model/config.js";
import { loadModel } from "../model/pretrained.js";
import type { TextTokenizer } from "../model/tokenizer.js";
import { type Batch, forward, initModel, lossOf, type Model, parameterCount, release, syncToHost } from "../model/llama.js";
import { concatBatches, type DataPosition, type Document, Packer, sequenceBatch, splitDocuments, startPosition } from "../model/packing.js";
import { type RecordedStep, recordTrainingStep, type Stage, TRAIN_DEFAULTS, type TrainOptions } from "../model/training.js";
import { Rng } from "../model/rng.js";
import { passkeySample } from "../io/passkey.js";
import { MobaError, shown } from "../tensor.js";
import { modelBackend } from "./backends.js";
import { lineChart } from "./plot.js";

export { TRAIN_DEFAULTS, type Stage, type TrainOptions };

export interface StepLog {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  tokens: number;
  seconds: number;
  tokensPerSecond: number;
  attention: string;
  validationLoss?: number;
  /** f16 runs: the loss scale the step used, and whether its gradients overflowed (the step was skipped). */
  lossScale?: number;
  skipped?: boolean;
}

function fail(message: string): never {
  throw new MobaError(message);
}

/** The config fields that set the weights' shapes. */
const SHAPE_FIELDS = [
  "vocab_size",
  "hidden_size",
  "intermediate_size",
  "num_hidden_layers",
  "num_attention_heads",
  "num_key_value_heads",
  "head_dim",
  "tie_word_embeddings",
] as const;

/**
 * Fills defaults and checks every option; unknown keys are errors. All of it before any work starts.
 * `base`: the config of the init model (the "model" option overrides its fields).
 */
export function checkTrainOptions(input: Partial<TrainOptions>, base?: LlamaConfig): TrainOptions & { config: LlamaConfig } {
  if (typeof input !== "object" || input === null || Array.isArray(input))
    fail(`train: expected an object of options, got ${shown(input)}`);
  for (const key of Object.keys(input))
    if (!(key in TRAIN_DEFAULTS)) fail(`train.${key}: unknown option (expected one of ${Object.keys(TRAIN_DEFAULTS).join(", ")})`);
  const o: TrainOptions = { ...TRAIN_DEFAULTS, ...input };
  if (o.init !== null && (typeof o.init !== "string" || o.init === ""))
    fail(`train.init: expected a Hugging Face model folder or null, got ${shown(o.init)}`);
  if (o.attention !== null && typeof o.attention !== "string")
    fail(`train.attention: expected "moba", "full", "hybrid-last-N" or null, got ${shown(o.attention)}`);
  // the init model's weights are used as they are: a field that would change their shapes is refused
  for (const key of SHAPE_FIELDS)
    if (base && o.model !== null && typeof o.model === "object" && key in o.model && o.model[key] !== base[key])
      fail(`config.${key}: expected ${shown(base[key])} (the init model's; its weights have that shape), got ${shown(o.model[key])}`);
  let config = checkConfig(base ? { ...base, ...o.model } : o.model);
  if (o.attention !== null) config = checkConfig({ ...config, layer_attention: kindsFromSpec(o.attention, config.num_hidden_layers) });
  // without init the data are bytes: every byte value is a token (with init, the model's tokenizer makes the tokens)
  if (o.init === null && config.vocab_size < 256)
    fail(`config.vocab_size: expected at least 256 (one token per byte value), got ${config.vocab_size}`);
  if (o.init !== null && o.passkeyShare > 0)
    fail(`train.passkeyShare: expected 0 with init (passkey samples are bytes, not the model's tokens), got ${o.passkeyShare}`);
  for (const name of ["steps", "contextLength", "batchRows", "accumulation", "evalEvery", "evalRows", "checkpointEvery"] as const) {
    if (!Number.isInteger(o[name]) || o[name] < 1) fail(`train.${name}: expected a positive integer, got ${shown(o[name])}`);
  }
  for (const name of ["learningRate", "adamEps", "gradClip"] as const) {
    if (!(o[name] > 0) || !Number.isFinite(o[name])) fail(`train.${name}: expected a positive number, got ${shown(o[name])}`);
  }
  for (const name of ["beta1", "beta2"] as const) {
    if (!(o[name] >= 0 && o[name] < 1)) fail(`train.${name}: expected a number in [0, 1), got ${shown(o[name])}`);
  }
  if (!(o.minLearningRateFraction >= 0 && o.minLearningRateFraction <= 1))
    fail(`train.minLearningRateFraction: expected a number in [0, 1], got ${shown(o.minLearningRateFraction)}`);
  if (!(o.passkeyShare >= 0 && o.passkeyShare <= 1))
    fail(`train.passkeyShare: expected a fraction in [0, 1], got ${shown(o.passkeyShare)}`);
  if (o.passkeyShare > 0 && o.contextLength < 128)
    fail(`train.contextLength: expected at least 128 with passkeyShare > 0 (a passkey sample needs ~100 bytes), got ${o.contextLength}`);
  if (!(o.weightDecay >= 0)) fail(`train.weightDecay: expected a number >= 0, got ${shown(o.weightDecay)}`);
  if (!Number.isInteger(o.warmupSteps) || o.warmupSteps < 0)
    fail(`train.warmupSteps: expected an integer >= 0, got ${shown(o.warmupSteps)}`);
  if (!Number.isInteger(o.seed)) fail(`train.seed: expected an integer, got ${shown(o.seed)}`);
  if (o.precision !== "f32" && o.precision !== "f16") fail(`train.precision: expected "f32" or "f16", got ${shown(o.precision)}`);
  if (o.backend !== "auto" && o.backend !== "cpu" && o.backend !== "webgpu")
    fail(`train.backend: expected "auto", "cpu" or "webgpu", got ${shown(o.backend)}`);
  if (o.contextLength > config.max_position_embeddings) {
    fail(`train.contextLength: expected at most max_position_embeddings ${config.max_position_embeddings}, got ${o.contextLength}`);
  }
  if (typeof o.out !== "string" || o.out === "") fail(`train.out: expected a folder path, got ${shown(o.out)}`);
  if (existsSync(o.out) && !statSync(o.out).isDirectory()) fail(`train.out: expected a folder, got "${o.out}" (a file)`);
  if (typeof o.data !== "string") fail(`train.data: expected "sotu", "gutenberg", "sotu+gutenberg" or a path, got ${shown(o.data)}`);
  if (!isBundled(o.data) && !existsSync(o.data))
    fail(`train.data: expected "sotu", "gutenberg", "sotu+gutenberg" or an existing file or folder, got "${o.data}" (not found)`);
  if (!Array.isArray(o.stages)) fail(`train.stages: expected a list, got ${shown(o.stages)}`);
  o.stages.forEach((s, i) => {
    if (typeof s !== "object" || s === null || Array.isArray(s))
      fail(`train.stages[${i}]: expected { start, attention or fullAttentionLastLayers }, got ${shown(s)}`);
    for (const key of Object.keys(s))
      if (!["start", "attention", "fullAttentionLastLayers"].includes(key))
        fail(`train.stages[${i}].${key}: unknown field (expected start, attention, fullAttentionLastLayers)`);
    if (!(s.start >= 0 && s.start < 1)) fail(`train.stages[${i}].start: expected a fraction of the steps in [0, 1), got ${shown(s.start)}`);
    if (i > 0 && s.start <= o.stages[i - 1].start)
      fail(`train.stages[${i}].start: expected stages in increasing order (> ${o.stages[i - 1].start}), got ${s.start}`);
    stageKinds(config, s, `train.stages[${i}]`);
  });
  return { ...o, config };
}

/** The attention of every layer in a stage (checked). */
function stageKinds(config: LlamaConfig, stage: Stage, where: string): AttentionKind[] {
  const L = config.num_hidden_layers;
  const { attention, fullAttentionLastLayers } = stage;
  if (attention !== undefined && fullAttentionLastLayers !== undefined)
    fail(`${where}: expected either attention or fullAttentionLastLayers, got both`);
  if (fullAttentionLastLayers !== undefined) {
    if (!Number.isInteger(fullAttentionLastLayers) || fullAttentionLastLayers < 0 || fullAttentionLastLayers > L) {
      fail(`${where}.fullAttentionLastLayers: expected an integer from 0 to ${L}, got ${shown(fullAttentionLastLayers)}`);
    }
    return layerKinds({ ...config, layer_attention: undefined, full_attention_last_layers: fullAttentionLastLayers });
  }
  if (attention === "moba" || attention === "full") return Array(L).fill(attention);
  if (Array.isArray(attention))
    return checkConfig({ ...config, layer_attention: attention, full_attention_last_layers: undefined }).layer_attention!;
  return fail(`${where}.attention: expected "moba", "full" or a list of ${L} of them, got ${shown(attention)}`);
}

/** The attention of every layer at `step`: the last stage started by then, else the config's. */
export function kindsAt(o: TrainOptions & { config: LlamaConfig }, step: number): AttentionKind[] {
  let kinds = layerKinds(o.config);
  o.stages.forEach((s, i) => {
    if (step >= Math.round(s.start * o.steps)) kinds = stageKinds(o.config, s, `train.stages[${i}]`);
  });
  return kinds;
}

/** The documents' text as the tokenizer's ids (a document's bytes decoded as UTF-8). */
export function tokenizeDocuments(docs: Document[], tokenizer: TextTokenizer): Document[] {
  return docs.map((d) => {
    if (d.lossMask)
      fail(
        `train.data: ${d.name}: prompt/completion documents need a byte-level model (their loss mask is per byte), got a model with a tokenizer`,
      );
    return { name: d.name, bytes: tokenizer.encode(new TextDecoder().decode(d.bytes)) };
  });
}

/** Σ loss and Σ weight of the validation rows (nats per predicted token = loss / count). */
export async function evaluateLoss(
  model: Model,
  batches: Batch[],
  backend: ModelBackend,
  kinds: AttentionKind[],
): Promise<{ loss: number; count: number }> {
  let loss = 0,
    count = 0;
  for (const batch of batches) {
    loss += await backend.scope("evaluation", async () => lossOf(await forward(model, batch, backend, kinds), backend));
    count += batch.weights.reduce((a, b) => a + b, 0);
  }
  return { loss, count };
}

interface SavedState {
  step: number;
  data: DataPosition;
  /** The passkey mixer's RNG. */
  rng: number[];
  options: TrainOptions;
  /** f16 runs: the loss scale, so a resumed run continues with it. */
  lossScale?: LossScaleState;
  /** Runs from a pretrained model: its validation loss before the first step (under the run's attention). */
  initialValidationLoss?: number;
  [key: string]: unknown;
}

export interface TrainResult {
  model: Model;
  log: StepLog[];
  validationLoss: number | undefined;
  /** A run from a pretrained model (init): the validation loss of its starting weights under the run's first attention, before any step. */
  initialValidationLoss: number | undefined;
  checkpoint: string;
  backend: Backend;
  /** The held-out documents (what evaluation should read). */
  validation: Document[];
}

export interface TrainIo {
  print(line: string): void;
  /** Called after every step (a progress bar, a test that stops the run). */
  onStep?(log: StepLog, total: number): void;
}

/** Options a resumed run may change: how long it runs, its learning-rate schedule, evaluation, checkpoints and where it runs. */
const CHANGEABLE_ON_RESUME: readonly string[] = [
  "steps",
  "learningRate",
  "minLearningRateFraction",
  "warmupSteps",
  "evalEvery",
  "evalRows",
  "checkpointEvery",
  "backend",
  "precision",
  "out",
];

/**
 * The options of a resumed run: the checkpoint's, with what `input` sets of the changeable ones. The model is the
 * checkpoint's; any other option `input` sets differently (a model field included) is refused, naming it.
 */
export function resumedOptions(
  saved: Partial<TrainOptions>,
  config: LlamaConfig,
  input: Partial<TrainOptions>,
  checkpoint: string,
): Partial<TrainOptions> {
  const refuse = (name: string, had: unknown, asked: unknown): never =>
    fail(
      `${checkpoint}: cannot resume with ${name} ${shown(asked, 40)}: the checkpoint has ${shown(had, 40)} (a resumed run may change only ` +
        `${CHANGEABLE_ON_RESUME.join(", ")}; --overwrite starts over)`,
    );
  for (const [key, value] of Object.entries(input)) {
    if (key === "model" || CHANGEABLE_ON_RESUME.includes(key)) continue;
    const had = (saved as Record<string, unknown>)[key] ?? (TRAIN_DEFAULTS as unknown as Record<string, unknown>)[key];
    if (JSON.stringify(value) !== JSON.stringify(had)) refuse(`train.${key}`, had, value);
  }
  const model = input.model ?? {};
  for (const [key, value] of Object.entries(model)) {
    if (key === "layer_attention" || key === "full_attention_last_layers") continue;
    if (JSON.stringify(value) !== JSON.stringify(config[key as keyof LlamaConfig]))
      refuse(`config.${key}`, config[key as keyof LlamaConfig], value);
  }
  // the two ways of saying which layers are full compare by what they mean (layer_attention wins, as in checkConfig)
  if ("layer_attention" in model || "full_attention_last_layers" in model) {
    const asked = layerKinds(
      checkConfig({ ...config, layer_attention: model.layer_attention, full_attention_last_layers: model.full_attention_last_layers }),
    );
    if (JSON.stringify(asked) !== JSON.stringify(layerKinds(config))) refuse("the layers' attention", layerKinds(config), asked);
  }
  return { ...saved, ...input, model: config };
}

/** The training state of a checkpoint, checked: a hand-edited or foreign one is refused before it can hang the data stream. */
function checkSavedState(saved: Checkpoint, checkpoint: string): SavedState {
  const state = saved.state as SavedState | undefined;
  if (!saved.moments || !state) fail(`${checkpoint}: expected a training checkpoint (weights, moments and state), got weights only`);
  const bad = (name: string, expected: string, got: unknown): never =>
    fail(`${checkpoint}: training_state.${name}: expected ${expected}, got ${shown(got)}`);
  if (!Number.isSafeInteger(state.step) || state.step < 0) bad("step", "an integer >= 0", state.step);
  if (!Array.isArray(state.rng) || state.rng.length !== 4 || !state.rng.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32))
    bad("rng", "4 unsigned 32-bit integers", state.rng);
  if (typeof state.options !== "object" || state.options === null || Array.isArray(state.options))
    bad("options", "an object", state.options);
  if (typeof state.data !== "object" || state.data === null) bad("data", "a data position { epoch, doc, offset, rng }", state.data);
  const scale = state.lossScale;
  if (scale !== undefined) {
    const ok = typeof scale === "object" && scale !== null && scale.scale > 0 && Number.isFinite(scale.scale);
    if (!ok || !Number.isSafeInteger(scale.cleanSteps) || scale.cleanSteps < 0 || !Number.isSafeInteger(scale.skipped) || scale.skipped < 0)
      bad("lossScale", "{ scale > 0, cleanSteps >= 0, skipped >= 0 }", scale);
  }
  const initial = state.initialValidationLoss;
  if (initial !== undefined && !(typeof initial === "number" && Number.isFinite(initial)))
    bad("initialValidationLoss", "a finite number", initial);
  return state;
}

/**
 * Trains and returns the model. An existing out/checkpoint.safetensors is resumed with `resume` (its model and options,
 * see resumedOptions), replaced with `overwrite`, and otherwise refused: a run never silently replaces another.
 */
export async function train(input: Partial<TrainOptions>, io: TrainIo, resume = false, overwrite = false): Promise<TrainResult> {
  // a run from a Hugging Face model: its config is the base the options are checked against (a non-string init is refused there)
  const pretrained = typeof input?.init === "string" ? await loadModel(input.init) : undefined;
  let o = checkTrainOptions(input, pretrained?.model.config);
  const checkpoint = join(o.out, "checkpoint.safetensors"),
    logPath = join(o.out, "log.jsonl");
  if (resume && overwrite) fail(`train: expected resume or overwrite, got both`);
  const exists = existsSync(checkpoint);
  if (exists && !resume && !overwrite) fail(`train.out: ${checkpoint} exists (--resume continues it, --overwrite starts over)`);
  const saved = exists && resume ? await loadCheckpoint(checkpoint) : undefined;
  const state = saved && checkSavedState(saved, checkpoint);
  if (saved && state) o = checkTrainOptions((input = resumedOptions(state.options, saved.model.config, input, checkpoint)));
  if (pretrained && !saved && !pretrained.tokenizer)
    fail(`train.init: ${o.init} has no tokenizer.json (the text must be tokenized as the model was)`);
  if (!saved) for (const line of pretrained?.notes ?? []) io.print(`note: ${line}`);
  const backend = await modelBackend(o.backend, o.precision, io.print, false);
  // a run started from a Hugging Face model reads the text as its tokenizer's ids (a resumed one: the checkpoint's tokenizer)
  const tokenizer = saved ? await checkpointTokenizer(saved, checkpoint) : pretrained?.tokenizer;
  const docs = tokenizer ? tokenizeDocuments(loadDocuments(o.data), tokenizer) : loadDocuments(o.data);
  const { train: trainDocs, validation } = splitDocuments(docs);
  mkdirSync(o.out, { recursive: true });

  let model: Model,
    moments: Moments,
    step = 0,
    position = startPosition(o.seed),
    rng = new Rng(o.seed + 1);
  let lossScale: LossScale | null = backend.precision === "f16" ? new LossScale() : null;
  let log: StepLog[] = [];
  if (saved && state) {
    ({ model } = saved);
    moments = saved.moments!;
    step = state.step;
    position = state.data;
    rng = new Rng(state.rng);
    if (lossScale && state.lossScale) lossScale = new LossScale(state.lossScale);
    if (existsSync(logPath)) log = readLog(logPath).filter((l) => l.step < step);
  } else {
    // the pretrained weights under the run's config (its attention kinds; the shapes are the same)
    model = pretrained ? { ...pretrained.model, config: o.config } : initModel(o.config, o.seed);
    moments = zeroMoments(model);
  }
  const optimizer = new AdamW(model, backend, moments);
  const packer = new Packer(trainDocs, o.contextLength, position); // checks a resumed position against the data
  if (saved) io.print(`resumed ${checkpoint} at step ${step}`);
  const evalBatches = [new Packer(validation, o.contextLength, startPosition(null)).next(o.evalRows)];
  io.print(
    `model: ${(parameterCount(model) / 1e6).toFixed(2)}M parameters, ${o.config.num_hidden_layers} layers [${layerKinds(o.config).join(", ")}], ` +
      `block ${o.config.moba_chunk_size} / top-${o.config.moba_topk}; data: ${o.data} (${trainDocs.length} train / ${validation.length} validation documents); backend: ${backend.name} ${backend.precision}`,
  );

  // continual training: what switching the attention costs before training adapts to it
  let initialValidationLoss = state?.initialValidationLoss;
  if (pretrained && !saved) {
    const v = await evaluateLoss(model, evalBatches, backend, kindsAt(o, 0));
    initialValidationLoss = v.loss / v.count;
    io.print(`validation loss before training: ${initialValidationLoss.toFixed(4)} (the init model with [${kindsAt(o, 0).join(", ")}])`);
  }

  const tokensPerStep = o.batchRows * o.contextLength * o.accumulation;
  const started = performance.now() - (log.at(-1)?.seconds ?? 0) * 1000;
  let validationLoss = [...log].reverse().find((l) => l.validationLoss !== undefined)?.validationLoss; // a finished run resumed
  const save = async () => {
    const state: SavedState = {
      step,
      data: packer.position,
      rng: rng.state,
      options: input as TrainOptions,
      ...(lossScale && { lossScale: lossScale.state() }),
      ...(initialValidationLoss !== undefined && { initialValidationLoss }),
    };
    // the log first: a kill between the two leaves a log ahead of the checkpoint, which resuming trims
    await writeFileAtomic(logPath, new TextEncoder().encode(log.map((l) => JSON.stringify(l) + "\n").join("")));
    await syncToHost(model);
    await saveCheckpoint(checkpoint, model, await optimizer.moments(), state, tokenizer);
    await writeFileAtomic(join(o.out, "loss.svg"), new TextEncoder().encode(lossPlot(log)));
  };
  /** A step recorded (recordTrainingStep) with what it used. */
  interface Pending {
    step: number;
    kinds: AttentionKind[];
    scale: number;
    recorded: RecordedStep;
  }
  const recordAt = async (at: number, batches: Batch[], speculative: boolean): Promise<Pending> => {
    const kinds = kindsAt(o, at);
    const scale = lossScale ? (speculative ? lossScale.afterClean() : lossScale.scale) : 1;
    const recorded = await recordTrainingStep(model, backend, optimizer, batches, kinds, at, o, scale, speculative).catch(
      divergence(at, o),
    );
    return { step: at, kinds, scale, recorded };
  };
  const draw = () => Array.from({ length: o.accumulation }, () => nextBatch(packer, o, rng));
  // after these steps the host reads the weights (validation, checkpoint: its data position too) or the run ends
  const drains = (at: number) => (at + 1) % o.evalEvery === 0 || (at + 1) % o.checkpointEvery === 0 || at + 1 >= o.steps;
  let t0 = performance.now(); // a step's time: from the last step's result (or its own recording) to its result
  let next = step < o.steps ? await recordAt(step, draw(), false) : null;
  while (next) {
    const current = next;
    // the step after goes in while this one runs (the GPU's queue never waits for the host between them); where its
    // recording fails, the failure waits until this step is logged, as it would have been one step at a time
    const following = drains(current.step) ? null : { batches: draw(), failed: null as { error: unknown } | null };
    next =
      following &&
      (await recordAt(current.step + 1, following.batches, true).catch((error: unknown) => ((following.failed = { error }), null)));
    const { loss, gradNorm } = await current.recorded.result.catch(divergence(current.step, o));
    // f16: an overflow skips the step (the optimizer took none) and halves the scale; float32 gradients do not overflow but diverge
    const skipped = lossScale ? !lossScale.record(gradNorm) : false;
    if (!lossScale && !Number.isFinite(gradNorm)) diverged(current.step, o, `gradient norm ${gradNorm}`);
    if (skipped && following) {
      // recorded before the overflow was known, it took no update (its guard): again, with the halved scale
      await next?.recorded.result.catch(() => undefined);
      following.failed = null;
      next = await recordAt(current.step + 1, following.batches, false);
    }
    step = current.step + 1;
    const now = performance.now();
    const entry: StepLog = {
      step: current.step,
      loss,
      lr: current.recorded.lr,
      gradNorm,
      tokens: step * tokensPerStep,
      seconds: (now - started) / 1000,
      tokensPerSecond: tokensPerStep / ((now - t0) / 1000),
      attention: current.kinds.map((k) => k[0]).join(""),
      ...(lossScale && { lossScale: current.scale, skipped }),
    };
    t0 = now;
    if (step % o.evalEvery === 0 || step === o.steps) {
      const v = await evaluateLoss(model, evalBatches, backend, current.kinds).catch(divergence(current.step, o));
      validationLoss = entry.validationLoss = v.loss / v.count;
    }
    log.push(entry);
    io.onStep?.(entry, o.steps);
    if (step % o.checkpointEvery === 0 || step === o.steps) await save().catch(divergence(current.step, o));
    if (following?.failed) throw following.failed.error;
    if (!next && step < o.steps) {
      t0 = performance.now();
      next = await recordAt(step, draw(), false);
    }
  }
  optimizer.free();
  await release(model); // the weights back on the host, the backend's copies freed
  return { model, log, validationLoss, initialValidationLoss, checkpoint, backend: backend.name, validation };
}

/** A run whose numbers left the finite range fails before its next checkpoint: the last one written stays good. */
function diverged(step: number, o: TrainOptions, why: string): never {
  return fail(
    `train.learningRate: the run diverged at step ${step + 1} (${why}); lower the learning rate (${o.learningRate}) or check the data`,
  );
}

/** Weights that overflowed are noticed downstream (attention's non-finite q, the loss, a checkpoint that refuses NaN): say what happened. */
function divergence(step: number, o: TrainOptions): (error: unknown) => never {
  return (error) => {
    if (error instanceof MobaError && /finite|diverged/.test(error.message)) diverged(step, o, error.message);
    throw error;
  };
}

/** The steps of a log.jsonl; a line that is not a step (a file edited or cut by hand) is refused, naming it. */
function readLog(path: string): StepLog[] {
  return readFileSync(path, "utf8")
    .split("\n")
    .filter(Boolean)
    .map((line, i) => {
      let entry: unknown;
      try {
        entry = JSON.parse(line);
      } catch {
        entry = undefined;
      }
      if (typeof entry !== "object" || entry === null || !Number.isInteger((entry as StepLog).step))
        fail(`${path}:${i + 1}: expected a JSON step record, got ${shown(line, 40)}`);
      return entry as StepLog;
    });
}

/** batchRows rows of text, a passkeyShare of them replaced by passkey samples. */
function nextBatch(packer: Packer, o: TrainOptions, rng: Rng): Batch {
  if (o.passkeyShare === 0) return packer.next(o.batchRows);
  return concatBatches(
    Array.from({ length: o.batchRows }, () =>
      rng.next() < o.passkeyShare ? sequenceBatch(passkeySample(o.contextLength + 1, rng.next(), rng).bytes) : packer.next(1),
    ),
  );
}

export function lossPlot(log: StepLog[]): string {
  return lineChart(
    "Training loss (bytes, nats per byte)",
    [
      { name: "train", color: "#1f77b4", points: log.map((l) => [l.step + 1, l.loss]) },
      {
        name: "validation",
        color: "#d62728",
        points: log.filter((l) => l.validationLoss !== undefined).map((l) => [l.step + 1, l.validationLoss!]),
      },
    ],
    "step",
    "loss",
  );
}
