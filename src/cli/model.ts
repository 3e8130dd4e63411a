// The model's commands: tour (npm start), train, generate, eval, export, experiment.
import { readFileSync } from "node:fs";
import { splitDocuments } from "../model/packing.js";
import { writeFileAtomic } from "../io/files.js";
import { checkpointTokenizer, loadCheckpoint } from "../model/checkpoint.js";
import { modelBackend } from "../run/backends.js";
import { lossReport, passkeyGrid, textLoss } from "../run/evaluate.js";
import { exportCheckpoint } from "../run/export.js";
import { type LoadModelOptions, loadModel } from "../model/pretrained.js";
import { benchModel, benchTrain } from "../run/benchTrain.js";
import { experiment } from "../run/experiment.js";
import { generateFromCheckpoint, generateFromModel } from "../run/generate.js";
import { layerKinds } from "../model/config.js";
import { heatmap, lineChart } from "../run/plot.js";
import { isBundled, loadDocuments } from "../io/corpus.js";
import { tokenizeDocuments } from "../run/train.js";
import { table } from "../run/util.js";
import { tour } from "../run/tour.js";
import { train, TRAIN_DEFAULTS, type TrainOptions } from "../run/train.js";
import { checkOutputPath } from "../io/files.js";
import { MobaError, shown } from "../tensor.js";
import { autoBackend, type Command, count, decimal, integer, integers, note, precision, print, streams, usageError } from "./args.js";
import { trainingProgress } from "./progress.js";

const write = (text: string) => streams.out(text);

function readConfig(path: string | boolean | undefined): Partial<TrainOptions> {
  if (path === undefined) return {};
  let text: string;
  try {
    text = readFileSync(String(path), "utf8");
  } catch {
    return usageError(`--config: expected a JSON file, got "${String(path)}" (cannot read it)`);
  }
  let options: unknown;
  try {
    options = JSON.parse(text);
  } catch (error) {
    throw new MobaError(`--config: ${String(path)} is not valid JSON (${(error as Error).message})`);
  }
  if (typeof options !== "object" || options === null || Array.isArray(options))
    usageError(`--config: expected a JSON object of training options in ${String(path)}, got ${shown(options)}`);
  return options as Partial<TrainOptions>;
}

const trainFlags = {
  config: { type: "string" },
  out: { type: "string" },
  data: { type: "string" },
  steps: { type: "string" },
  "context-length": { type: "string" },
  "batch-rows": { type: "string" },
  accumulation: { type: "string" },
  lr: { type: "string" },
  seed: { type: "string" },
  backend: { type: "string" },
  attention: { type: "string" },
  "full-last": { type: "string" },
  resume: { type: "boolean" },
  overwrite: { type: "boolean" },
  precision: { type: "string" },
  init: { type: "string" },
} as const;

const TRAIN_USAGE = `Options:
  --config FILE         JSON training options: {"model": {LlamaConfig fields}, "steps": ..., "stages": [...]}
                        (docs/training.md lists every option); the flags below override it
  --out DIR             output folder: checkpoint.safetensors, log.jsonl, loss.svg (default ${TRAIN_DEFAULTS.out})
  --data PATH           a bundled corpus — "sotu" (State of the Union, 10.8 MB), "gutenberg" (18 books,
                        11.8 MB), "sotu+gutenberg" — or a text file / folder (default sotu)
  --steps N             optimizer steps (default ${TRAIN_DEFAULTS.steps})
  --context-length N    tokens (bytes) per row (default ${TRAIN_DEFAULTS.contextLength})
  --batch-rows N        rows per micro-batch (default ${TRAIN_DEFAULTS.batchRows})
  --accumulation N      micro-batches per step (default ${TRAIN_DEFAULTS.accumulation})
  --lr X                peak learning rate (default ${TRAIN_DEFAULTS.learningRate})
  --seed N              weights and data order (default ${TRAIN_DEFAULTS.seed})
  --init DIR            start from a Hugging Face Llama directory (continual training): its config, weights and
                        tokenizer (the text is tokenized with it); "model" fields of --config override the config
  --attention KIND      moba, full, or hybrid-last-N (MoBA except the last N layers) for every layer
  --full-last N         MoBA layers except the last N (full attention)
  --backend NAME        auto, cpu or webgpu (default auto: WebGPU on a hardware adapter, else CPU)
  --precision P         f32, or f16: GEMMs and attention on f16 operands with float32 weights, gradients
                        and AdamW, dynamic loss scaling (WebGPU with shader-f16; elsewhere float32, said once)
  --resume              continue from out/checkpoint.safetensors if it exists, with its model and options
                        (only steps, the learning-rate schedule, evaluation, checkpoints and the backend may change)
  --overwrite           start over even if out/checkpoint.safetensors exists (without either, it is refused)`;

/** Training options from --config and the flags. */
function trainOptions(v: Record<string, string | boolean | undefined>): Partial<TrainOptions> {
  const o: Partial<TrainOptions> = readConfig(v.config);
  if (o.model !== undefined && (typeof o.model !== "object" || o.model === null || Array.isArray(o.model)))
    usageError(`config: expected an object, got ${shown(o.model)}`);
  const model = { ...(o.model ?? {}) };
  if (v.out !== undefined) o.out = String(v.out);
  if (v.data !== undefined) o.data = String(v.data);
  if (v.steps !== undefined) o.steps = integer("steps", v.steps, 0);
  if (v["context-length"] !== undefined) o.contextLength = integer("context-length", v["context-length"], 0);
  if (v["batch-rows"] !== undefined) o.batchRows = integer("batch-rows", v["batch-rows"], 0);
  if (v.accumulation !== undefined) o.accumulation = integer("accumulation", v.accumulation, 0);
  if (v.lr !== undefined) o.learningRate = decimal("lr", v.lr, 0, 0);
  if (v.seed !== undefined) o.seed = integer("seed", v.seed, 0);
  if (v.backend !== undefined) o.backend = autoBackend(v.backend);
  if (v.precision !== undefined) o.precision = precision(v.precision);
  if (v.init !== undefined) o.init = String(v.init);
  if (v.attention !== undefined) o.attention = String(v.attention);
  if (v["full-last"] !== undefined) {
    delete model.layer_attention;
    model.full_attention_last_layers = count("full-last", v["full-last"], 0);
  }
  o.model = model;
  return o;
}

export const modelCommands: Record<string, Command> = {
  tour: {
    summary: "npm start: train a small MoBA model on the bundled corpus, evaluate it, sample from it",
    usage: `moba tour [options]\n\nTrains with the defaults of moba train (${TRAIN_DEFAULTS.steps} steps), then prints the validation loss and a sample.
The tour starts over each time: it replaces the checkpoint in its folder (default ${TRAIN_DEFAULTS.out}) unless --resume.\n\n${TRAIN_USAGE}`,
    options: trainFlags,
    async run(v) {
      const progress = trainingProgress(note);
      try {
        await tour(trainOptions(v), { print, onStep: progress.onStep, write }, v.resume === true);
      } finally {
        progress.stop();
      }
      return 0;
    },
  },
  train: {
    summary: "train a byte-level Llama with MoBA, full or hybrid attention",
    usage: `moba train [options]\n\n${TRAIN_USAGE}`,
    options: trainFlags,
    async run(v) {
      const progress = trainingProgress(note);
      let result;
      try {
        result = await train(trainOptions(v), { print: note, onStep: progress.onStep }, v.resume === true, v.overwrite === true);
      } finally {
        progress.stop();
      }
      print(
        `validation loss ${result.validationLoss?.toFixed(4)} nats/${v.init === undefined ? "byte" : "token"}; wrote ${result.checkpoint}`,
      );
      return 0;
    },
  },
  generate: {
    summary: "generate text from a checkpoint or a Hugging Face model (KV cache, MoBA decoding)",
    usage: `moba generate (--checkpoint FILE | --model DIR) [options]

Options:
  --checkpoint FILE   a checkpoint written by moba train
  --model DIR         or a Hugging Face Llama directory (config.json, safetensors, tokenizer.json)
  --attention KIND    with --model: moba, full or hybrid-last-N for every layer (default: the config's; full for a plain HF model)
  --block-size N      with --model: MoBA's block size (default: moba_chunk_size of config.json, else 4096)
  --top-k N           with --model: MoBA's blocks per query (default: moba_topk of config.json, else 12)
  --prompt TEXT       text to continue (default: "The ")
  --tokens N          tokens to generate (bytes for a byte-level model; default 400)
  --temperature X     0 = greedy (default 0.8)
  --top-p X           nucleus sampling mass (default 0.95)
  --seed N            sampling seed (default 1)
  --backend NAME      auto, cpu or webgpu for the prompt (decoding runs on the CPU)`,
    options: {
      checkpoint: { type: "string" },
      prompt: { type: "string" },
      tokens: { type: "string" },
      temperature: { type: "string" },
      "top-p": { type: "string" },
      seed: { type: "string" },
      backend: { type: "string" },
      model: { type: "string" },
      attention: { type: "string" },
      "block-size": { type: "string" },
      "top-k": { type: "string" },
    },
    async run(v) {
      if (typeof v.checkpoint !== "string" && typeof v.model !== "string")
        usageError("--checkpoint or --model: expected a checkpoint file or a model directory, got nothing");
      if (typeof v.model === "string" && typeof v.checkpoint === "string")
        usageError("--checkpoint and --model: expected one of them, got both");
      const prompt = v.prompt === undefined ? "The " : String(v.prompt);
      if (typeof v.model !== "string") onlyWithModel(v, ["attention", "block-size", "top-k"]);
      // every option is checked before the model is read
      const o = {
        prompt,
        tokens: integer("tokens", v.tokens, 400),
        temperature: decimal("temperature", v.temperature, 0.8, 0),
        topP: decimal("top-p", v["top-p"], 0.95, 0, 1),
        seed: integer("seed", v.seed, 1),
        backend: autoBackend(v.backend),
      };
      const { tokens, seconds } =
        typeof v.model === "string"
          ? await generateFromModel(v.model, { ...o, ...loadOptions(v) }, write)
          : await generateFromCheckpoint(String(v.checkpoint), o, write);
      write("\n");
      note(`(${tokens} tokens in ${seconds.toFixed(2)} s)`);
      return 0;
    },
  },
  eval: {
    summary: "validation loss, loss by position, trailing loss and passkey retrieval of a checkpoint",
    usage: `moba eval --checkpoint FILE [options]
       moba eval --model DIR --text FILE [--max-tokens N] [--context-length N] [--attention KIND] [--json]

With --model (a Hugging Face Llama directory): tokenizes the text file with the model's tokenizer (no
special tokens), keeps the first --max-tokens, scores them in windows of the context length
(default max_position_embeddings) from position 0 and prints the mean loss in nats per predicted
token; --json prints {"loss_nats_per_token", "tokens", "predicted", "windows", "context_length", "attention", "block_size", "top_k"}.
--attention there takes moba, full or hybrid-last-N; --block-size and --top-k set MoBA's
(default: moba_chunk_size / moba_topk of config.json, else the official MoBA's 4096 / 12).

Options:
  --checkpoint FILE       a checkpoint written by moba train (required)
  --data PATH             a bundled corpus ("sotu", "gutenberg", "sotu+gutenberg": its held-out documents)
                          or text files (default sotu)
  --context-length N      bytes per evaluated sequence (default 2048); windows of documents at least this long
  --rows N                sequences to evaluate (default 8)
  --buckets N             position buckets of the loss-by-position table (default 8)
  --trailing N            also report the loss of the last N positions (default: a quarter of the context)
  --attention KIND        evaluate with every layer "moba" or "full" (default: the checkpoint's layers)
  --passkey-lengths LIST  comma-separated context lengths for passkey retrieval (default: none)
  --passkey-depths LIST   depths in percent (default 0,25,50,75,100)
  --passkey-trials N      samples per cell (default 10)
  --svg PREFIX            write PREFIX-position.svg (and PREFIX-passkey.svg)
  --backend NAME          auto, cpu or webgpu`,
    options: {
      checkpoint: { type: "string" },
      data: { type: "string" },
      "context-length": { type: "string" },
      rows: { type: "string" },
      buckets: { type: "string" },
      trailing: { type: "string" },
      attention: { type: "string" },
      "passkey-lengths": { type: "string" },
      "passkey-depths": { type: "string" },
      "passkey-trials": { type: "string" },
      svg: { type: "string" },
      backend: { type: "string" },
      model: { type: "string" },
      text: { type: "string" },
      "max-tokens": { type: "string" },
      json: { type: "boolean" },
      "block-size": { type: "string" },
      "top-k": { type: "string" },
    },
    async run(v) {
      if (typeof v.model === "string" && typeof v.checkpoint === "string")
        usageError("--checkpoint and --model: expected one of them, got both");
      if (typeof v.model === "string") return evalModel(v);
      if (typeof v.checkpoint !== "string")
        usageError("--checkpoint or --model: expected a checkpoint file or a model directory, got nothing");
      onlyWithModel(v, ["text", "max-tokens", "json", "block-size", "top-k"]);
      if (v.attention !== undefined && v.attention !== "moba" && v.attention !== "full")
        usageError(`--attention: expected "moba" or "full", got "${String(v.attention)}"`);
      // every option is checked before the checkpoint is read and the work starts
      const contextLength = integer("context-length", v["context-length"], 2048);
      const sizes = {
        contextLength,
        rows: integer("rows", v.rows, 8),
        buckets: integer("buckets", v.buckets, 8),
        trailing: integer("trailing", v.trailing, Math.max(1, Math.floor(contextLength / 4))),
      };
      const lengths = integers("passkey-lengths", v["passkey-lengths"], []);
      const depths =
        v["passkey-depths"] === undefined
          ? [0, 25, 50, 75, 100]
          : String(v["passkey-depths"])
              .split(",")
              .map((d) => decimal("passkey-depths", d, 0, 0, 100));
      const trials = integer("passkey-trials", v["passkey-trials"], 10);
      const svg = typeof v.svg === "string" ? v.svg : undefined;
      if (svg) checkOutputPath(`${svg}-position.svg`, "--svg");
      const backendName = autoBackend(v.backend);
      const data = typeof v.data === "string" ? v.data : "sotu";
      const docs = loadDocuments(data);
      const saved = await loadCheckpoint(v.checkpoint);
      const { model, tokenizer } = saved;
      if (tokenizer !== undefined && lengths.length > 0)
        usageError("--passkey-lengths: expected a byte-level checkpoint (passkey samples are bytes), got one with a tokenizer");
      const positions = model.config.max_position_embeddings;
      for (const [name, n] of [
        ["context-length", contextLength],
        ["passkey-lengths", Math.max(0, ...lengths)],
      ] as const) {
        if (n > positions) usageError(`--${name}: expected at most the checkpoint's max_position_embeddings ${positions}, got ${n}`);
      }
      const kinds = v.attention === undefined ? undefined : Array(model.config.num_hidden_layers).fill(v.attention);
      const backend = await modelBackend(backendName);
      // a run started from a Hugging Face model (train --init) reads its tokens, not bytes
      const textTokenizer = await checkpointTokenizer(saved, v.checkpoint);
      const read = textTokenizer === undefined ? docs : tokenizeDocuments(docs, textTokenizer);
      // a bundled corpus is evaluated on its held-out documents only, a user's files whole
      const r = await lossReport(model, isBundled(data) ? splitDocuments(read).validation : read, sizes, backend, kinds);
      const unit = tokenizer === undefined ? "byte" : "token";
      print(
        `loss ${r.loss.toFixed(4)} nats/${unit}, perplexity ${r.perplexity.toFixed(3)} over ${r.rows} sequences of ${r.contextLength} ${unit}s; last ${r.trailingTokens}: ${r.trailing.toFixed(4)}`,
      );
      print(
        table(
          ["positions", "loss"],
          r.byPosition.map((b) => [`${b.from}-${b.to - 1}`, b.loss.toFixed(4)]),
        ),
      );
      if (svg)
        await writeFileAtomic(
          `${svg}-position.svg`,
          new TextEncoder().encode(
            lineChart(
              "loss by position",
              [{ name: v.checkpoint, color: "#1f77b4", points: r.byPosition.map((b) => [(b.from + b.to) / 2, b.loss]) }],
              "position",
              `nats per ${unit}`,
            ),
          ),
        );
      if (lengths.length > 0) {
        const cells = await passkeyGrid(
          model,
          lengths,
          depths.map((d) => d / 100),
          trials,
          7,
          backend,
          kinds,
        );
        const grid = lengths.map((l) => depths.map((d) => cells.find((c) => c.length === l && c.depth === d / 100)!.accuracy));
        print(
          table(
            ["length \\ depth %", ...depths.map(String)],
            lengths.map((l, i) => [String(l), ...grid[i].map((a) => a.toFixed(2))]),
          ),
        );
        if (svg)
          await writeFileAtomic(
            `${svg}-passkey.svg`,
            new TextEncoder().encode(
              heatmap("passkey accuracy", lengths.map(String), depths.map(String), grid, "context length (bytes)", "depth of the key (%)"),
            ),
          );
      }
      return 0;
    },
  },
  export: {
    summary: "write a checkpoint as a Hugging Face model directory (LlamaForCausalLM.from_pretrained loads it)",
    usage: `moba export --checkpoint FILE --out DIR

Writes config.json (LlamaConfig plus moba_chunk_size, moba_topk, layer_attention), model.safetensors
(float32 weights only, metadata format "pt"), generation_config.json, tokenizer.json (a byte-level
model's: each byte's id is its value) and tokenizer_config.json into DIR, each atomically.

Options:
  --checkpoint FILE   a checkpoint written by moba train (required)
  --out DIR           the folder to write (created)`,
    options: { checkpoint: { type: "string" }, out: { type: "string" } },
    async run(v) {
      if (typeof v.checkpoint !== "string") usageError("--checkpoint: expected a checkpoint file, got nothing");
      if (typeof v.out !== "string") usageError("--out: expected a folder to write, got nothing");
      const files = await exportCheckpoint(v.checkpoint, v.out);
      print(`wrote ${files.join(", ")} to ${v.out}`);
      return 0;
    },
  },
  experiment: {
    summary: "run one of the experiments in experiments/ end to end (resumable) and report it",
    usage: `moba experiment NAME [options]

NAME is a config in experiments/ (parity, trailing, granularity, passkey: the small CPU set; continual:
continual training from a full-attention model pretrained and exported first) or a path to a .json
config (experiments/h100/*.json: the H100 set). Runs are trained one after another (or only those
named), each resumable; finished runs are not repeated.

Options:
  --run LIST      only these runs (comma-separated), e.g. to spread runs over processes
  --report        only collect finished runs into results.jsonl, a table and SVG plots
  --out DIR       output folder (default runs/experiments/NAME)
  --backend NAME  auto, cpu or webgpu (default: the config's)
  --precision P   f32 or f16 (default: the config's)`,
    options: {
      run: { type: "string" },
      report: { type: "boolean" },
      out: { type: "string" },
      backend: { type: "string" },
      precision: { type: "string" },
    },
    positionals: true,
    async run(v, positionals) {
      const [name] = positionals ?? [];
      if (name === undefined) usageError("experiment: expected a name (e.g. moba experiment parity), got nothing");
      await experiment(
        name,
        {
          runs: typeof v.run === "string" ? v.run.split(",") : undefined,
          reportOnly: v.report === true,
          out: typeof v.out === "string" ? v.out : undefined,
          backend: v.backend === undefined ? undefined : autoBackend(v.backend),
          precision: v.precision === undefined ? undefined : precision(v.precision),
        },
        print,
      );
      return 0;
    },
  },
  "bench-train": {
    summary: "training-step throughput at long context, MoBA vs full, and decode speed with a long cache",
    usage: `moba bench-train [options]

Times forward + backward + AdamW of one sequence per step on random bytes (the data does not change
the speed), MoBA layers against full layers, and prints the FLOPs each step implies.

Options:
  --lengths LIST        tokens per step (default 8192,32768)
  --hidden N            hidden_size (default 512); intermediate_size is 8/3 of it, rounded to 64
  --layers N            num_hidden_layers (default 8)
  --heads N             num_attention_heads (default 8; kv heads: half)
  --block-size N        moba_chunk_size (default 512)
  --top-k N             moba_topk (default 3)
  --steps N             timed steps per row, after one warm-up (default 3)
  --decode-context LIST cached tokens of each decode timing, CPU and (with --backend webgpu) GPU (default 32768; 0 skips it)
  --precision P         f32, or f16: GEMMs and attention on f16 operands (tensor cores on WebGPU where present)
  --backend NAME        auto, cpu or webgpu`,
    options: {
      lengths: { type: "string" },
      hidden: { type: "string" },
      layers: { type: "string" },
      heads: { type: "string" },
      "block-size": { type: "string" },
      "top-k": { type: "string" },
      steps: { type: "string" },
      "decode-context": { type: "string" },
      backend: { type: "string" },
      precision: { type: "string" },
    },
    async run(v) {
      // "0" (or a list of zeros) skips the decode timing
      const decode = String(v["decode-context"] ?? 32768)
        .split(",")
        .map((part) => count("decode-context", part, 0))
        .filter((n) => n > 0);
      await benchTrain(
        {
          model: benchModel(
            integer("hidden", v.hidden, 512),
            integer("layers", v.layers, 8),
            integer("heads", v.heads, 8),
            integer("block-size", v["block-size"], 512),
            integer("top-k", v["top-k"], 3),
          ),
          lengths: integers("lengths", v.lengths, [8192, 32768]),
          steps: integer("steps", v.steps, 3),
          backend: autoBackend(v.backend),
          decodeContext: decode,
          precision: precision(v.precision),
        },
        print,
        note,
      );
      return 0;
    },
  },
};

/** moba eval --model DIR --text FILE: the mean loss per token of a text under a Hugging Face model. */
async function evalModel(v: Record<string, string | boolean | undefined>): Promise<number> {
  onlyWithCheckpoint(v, ["data", "rows", "buckets", "trailing", "passkey-lengths", "passkey-depths", "passkey-trials", "svg"]);
  if (typeof v.text !== "string") usageError("--text: expected a text file to score, got nothing");
  // every option is checked before the model is read
  const maxTokens = v["max-tokens"] === undefined ? undefined : integer("max-tokens", v["max-tokens"], 0);
  const asked = v["context-length"] === undefined ? undefined : integer("context-length", v["context-length"], 0);
  const backendName = autoBackend(v.backend);
  const options = loadOptions(v);
  let text: string;
  try {
    text = readFileSync(v.text, "utf8");
  } catch (error) {
    throw new MobaError(`--text: cannot read "${v.text}" (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  const dir = String(v.model);
  const { model, tokenizer, notes } = await loadModel(dir, options);
  if (!tokenizer) throw new MobaError(`--model: ${dir} has no tokenizer.json (expected one to tokenize the text)`);
  const positions = model.config.max_position_embeddings;
  if (asked !== undefined && asked > positions)
    usageError(`--context-length: expected at most the model's max_position_embeddings ${positions}, got ${asked}`);
  const contextLength = asked ?? positions;
  for (const line of notes) note(`note: ${line}`);
  const all = tokenizer.encode(text);
  const tokens = maxTokens === undefined ? all : all.subarray(0, maxTokens);
  const r = await textLoss(model, tokens, contextLength, await modelBackend(backendName));
  const attention = layerKinds(model.config).join(", ");
  if (v.json === true)
    print(
      JSON.stringify({
        loss_nats_per_token: r.loss,
        tokens: tokens.length,
        predicted: r.predicted,
        windows: r.windows,
        context_length: contextLength,
        attention,
        block_size: model.config.moba_chunk_size,
        top_k: model.config.moba_topk,
      }),
    );
  else
    print(
      `loss ${r.loss.toFixed(4)} nats/token (perplexity ${Math.exp(r.loss).toFixed(3)}) over ${r.predicted} predicted tokens of ${v.text}, ` +
        `${r.windows} window(s) of up to ${contextLength}; attention [${attention}]`,
    );
  return 0;
}

/** --attention, --block-size and --top-k of a command that loads a Hugging Face model. */
function loadOptions(v: Record<string, string | boolean | undefined>): LoadModelOptions {
  return {
    attention: v.attention === undefined ? undefined : String(v.attention),
    blockSize: v["block-size"] === undefined ? undefined : integer("block-size", v["block-size"], 0),
    topK: v["top-k"] === undefined ? undefined : integer("top-k", v["top-k"], 0),
  };
}

/** Options that mean something only with --model are refused without it (nothing is silently ignored). */
function onlyWithModel(v: Record<string, string | boolean | undefined>, names: string[]): void {
  for (const name of names) if (v[name] !== undefined) usageError(`--${name}: expected only with --model, got it with --checkpoint`);
}

/** Options that mean something only with --checkpoint are refused with --model. */
function onlyWithCheckpoint(v: Record<string, string | boolean | undefined>, names: string[]): void {
  for (const name of names) if (v[name] !== undefined) usageError(`--${name}: expected only with --checkpoint, got it with --model`);
}
