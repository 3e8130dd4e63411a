// The model's commands: tour (npm start), train, generate.
import { readFileSync } from "node:fs";
import { generateFromCheckpoint } from "../run/generate.js";
import { tour } from "../run/tour.js";
import { train, TRAIN_DEFAULTS, type TrainOptions } from "../run/train.js";
import { MobaError } from "../tensor.js";
import { autoBackend, type Command, decimal, integer, usageError } from "./args.js";
import { trainingProgress } from "./progress.js";

const print = (line: string) => console.log(line);
const write = (text: string) => process.stdout.write(text);

function readConfig(path: string | boolean | undefined): Partial<TrainOptions> {
  if (path === undefined) return {};
  let text: string;
  try {
    text = readFileSync(String(path), "utf8");
  } catch {
    return usageError(`--config: expected a JSON file, got "${String(path)}" (cannot read it)`);
  }
  try {
    return JSON.parse(text) as Partial<TrainOptions>;
  } catch (error) {
    throw new MobaError(`--config: ${String(path)} is not valid JSON (${(error as Error).message})`);
  }
}

const trainFlags = {
  config: { type: "string" }, out: { type: "string" }, data: { type: "string" }, steps: { type: "string" }, "context-length": { type: "string" },
  "batch-rows": { type: "string" }, accumulation: { type: "string" }, lr: { type: "string" }, seed: { type: "string" }, backend: { type: "string" },
  attention: { type: "string" }, "full-last": { type: "string" }, resume: { type: "boolean" },
} as const;

const TRAIN_USAGE = `Options:
  --config FILE         JSON training options: {"model": {LlamaConfig fields}, "steps": ..., "stages": [...]}
                        (docs/training.md lists every option); the flags below override it
  --out DIR             output folder: checkpoint.safetensors, log.jsonl, loss.svg (default ${TRAIN_DEFAULTS.out})
  --data PATH           "sotu" (bundled State of the Union corpus) or a text file / folder (default sotu)
  --steps N             optimizer steps (default ${TRAIN_DEFAULTS.steps})
  --context-length N    tokens (bytes) per row (default ${TRAIN_DEFAULTS.contextLength})
  --batch-rows N        rows per micro-batch (default ${TRAIN_DEFAULTS.batchRows})
  --accumulation N      micro-batches per step (default ${TRAIN_DEFAULTS.accumulation})
  --lr X                peak learning rate (default ${TRAIN_DEFAULTS.learningRate})
  --seed N              weights and data order (default ${TRAIN_DEFAULTS.seed})
  --attention KIND      moba or full for every layer
  --full-last N         MoBA layers except the last N (full attention)
  --backend NAME        auto, cpu or webgpu (default auto: WebGPU on a hardware adapter, else CPU)
  --resume              continue from out/checkpoint.safetensors if it exists`;

/** Training options from --config and the flags. */
function trainOptions(v: Record<string, string | boolean | undefined>): Partial<TrainOptions> {
  const o: Partial<TrainOptions> = readConfig(v.config);
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
  if (v.attention !== undefined) {
    if (v.attention !== "moba" && v.attention !== "full") usageError(`--attention: expected "moba" or "full", got "${String(v.attention)}"`);
    const layers = model.num_hidden_layers ?? 4;
    model.layer_attention = Array(layers).fill(v.attention);
  }
  if (v["full-last"] !== undefined) {
    delete model.layer_attention;
    model.full_attention_last_layers = Number(v["full-last"]);
  }
  o.model = model;
  return o;
}

export const modelCommands: Record<string, Command> = {
  tour: {
    summary: "npm start: train a small MoBA model on the bundled corpus, evaluate it, sample from it",
    usage: `moba tour [options]\n\nTrains with the defaults of moba train (${TRAIN_DEFAULTS.steps} steps), then prints the validation loss and a sample.\n\n${TRAIN_USAGE}`,
    options: trainFlags,
    async run(v) {
      const progress = trainingProgress(print);
      try {
        await tour(trainOptions(v), { print, onStep: progress.onStep, write });
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
      const progress = trainingProgress(print);
      let result;
      try {
        result = await train(trainOptions(v), { print, onStep: progress.onStep }, v.resume === true);
      } finally {
        progress.stop();
      }
      print(`validation loss ${result.validationLoss?.toFixed(4)} nats/byte; wrote ${result.checkpoint}`);
      return 0;
    },
  },
  generate: {
    summary: "generate text from a checkpoint (KV cache, MoBA decoding)",
    usage: `moba generate --checkpoint FILE [options]

Options:
  --checkpoint FILE   a checkpoint written by moba train (required)
  --prompt TEXT       text to continue (default: "The ")
  --tokens N          bytes to generate (default 400)
  --temperature X     0 = greedy (default 0.8)
  --top-p X           nucleus sampling mass (default 0.95)
  --seed N            sampling seed (default 1)
  --backend NAME      auto, cpu or webgpu for the prompt (decoding runs on the CPU)`,
    options: {
      checkpoint: { type: "string" }, prompt: { type: "string" }, tokens: { type: "string" }, temperature: { type: "string" },
      "top-p": { type: "string" }, seed: { type: "string" }, backend: { type: "string" },
    },
    async run(v) {
      if (typeof v.checkpoint !== "string") usageError("--checkpoint: expected a checkpoint file, got nothing");
      const prompt = v.prompt === undefined ? "The " : String(v.prompt);
      write(prompt);
      const { tokens, seconds } = await generateFromCheckpoint(v.checkpoint, {
        prompt, tokens: integer("tokens", v.tokens, 400), temperature: decimal("temperature", v.temperature, 0.8, 0),
        topP: decimal("top-p", v["top-p"], 0.95, 0, 1), seed: integer("seed", v.seed, 1), backend: autoBackend(v.backend),
      }, write);
      print(`\n\n(${tokens} bytes in ${seconds.toFixed(2)} s)`);
      return 0;
    },
  },
};
