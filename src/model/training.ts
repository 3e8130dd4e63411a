// What `moba train` (run/train.ts: files, checkpoints, logs; Node) and the playground's training (web/main.ts,
// in a browser) share: the options with their defaults, the tour's, and one optimizer step. The page trains
// with these and its losses are the CLI's for the same seed and documents (test/playground.test.ts).
import type { Backend, Precision } from "../attention/problem.js";
import type { ModelBackend, Sized } from "../backend.js";
import { type AdamW, learningRateAt } from "./adamw.js";
import type { AttentionKind, LlamaConfig } from "./config.js";
import { backward, type Batch, forward, lossOf, type Model, zeroGradients } from "./llama.js";

/** From `start` (a fraction of the steps) on, the layers use this attention. */
export interface Stage {
  start: number;
  /** "moba", "full", or one entry per layer. */
  attention?: AttentionKind | AttentionKind[];
  /** The last N layers full, the others MoBA (the paper's hybrid recipe). */
  fullAttentionLastLayers?: number;
}

export interface TrainOptions {
  model: Partial<LlamaConfig>;
  /** A Hugging Face model directory to start from (continual training): its config (model overrides fields), weights and tokenizer; null: random weights, bytes. */
  init: string | null;
  /** "moba", "full" or "hybrid-last-N" for every layer, after the config (null: the config's kinds). */
  attention: string | null;
  /** "sotu" (bundled corpus) or a path to text files. */
  data: string;
  out: string;
  steps: number;
  contextLength: number;
  /** Rows of contextLength tokens per micro-batch. */
  batchRows: number;
  /** Micro-batches per optimizer step. */
  accumulation: number;
  learningRate: number;
  /** The cosine ends at learningRate · this. */
  minLearningRateFraction: number;
  warmupSteps: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  adamEps: number;
  gradClip: number;
  seed: number;
  evalEvery: number;
  /** Validation rows (of contextLength tokens) for each evaluation. */
  evalRows: number;
  checkpointEvery: number;
  backend: Backend | "auto";
  /** "f16": GEMMs and attention on f16 operands (WebGPU), float32 weights, gradients and AdamW, dynamic loss scaling. */
  precision: Precision;
  stages: Stage[];
  /** Share of rows replaced by passkey-retrieval samples (random key and depth), so a small model can learn the task. */
  passkeyShare: number;
}

export const TRAIN_DEFAULTS: TrainOptions = {
  model: {},
  init: null,
  attention: null,
  data: "sotu",
  out: "runs/tour",
  steps: 150,
  contextLength: 512,
  batchRows: 2,
  accumulation: 1,
  learningRate: 3e-3,
  minLearningRateFraction: 0.1,
  warmupSteps: 15,
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  adamEps: 1e-8,
  gradClip: 1,
  seed: 1,
  evalEvery: 50,
  evalRows: 8,
  checkpointEvery: 50,
  backend: "auto",
  precision: "f32",
  stages: [],
  passkeyShare: 0,
};

/**
 * One optimizer step of `o`'s schedule at `step`: the batches' gradients accumulated (each token's loss scaled by
 * lossScale / the tokens counted in all of them), clipped and applied by AdamW. Recorded whole before anything
 * waits for a read-back (on a GPU it runs to its end without waiting for the host). Returns the mean loss per counted
 * token, the gradient norm before clipping (non-finite: f16 overflow, no update taken) and the learning rate.
 */
export async function trainingStep<B extends Sized>(
  model: Model,
  backend: ModelBackend<B>,
  optimizer: AdamW<B>,
  batches: Batch[],
  kinds: AttentionKind[],
  step: number,
  o: TrainOptions,
  lossScale = 1,
): Promise<{ loss: number; gradNorm: number; lr: number }> {
  const count = batches.reduce((n, b) => n + b.weights.reduce((a, w) => a + w, 0), 0);
  const lr = learningRateAt(step, o.steps, o.learningRate, o.warmupSteps, o.minLearningRateFraction);
  const adamw = { beta1: o.beta1, beta2: o.beta2, eps: o.adamEps, weightDecay: o.weightDecay, gradClip: o.gradClip };
  return backend.scope("training step", async () => {
    await zeroGradients(model, backend);
    const traces = [];
    for (const batch of batches) {
      const trace = await forward(model, batch, backend, kinds);
      await backward(model, trace, backend, lossScale / Math.max(1, count));
      traces.push(trace);
    }
    // the losses' read-backs go in before the update is recorded, so the host waits for the GPU once a step, not
    // twice (the update's gradient norm, then the losses); a non-finite loss still throws, after the update as before
    const losses = Promise.all(traces.map((trace) => lossOf(trace, backend)));
    losses.catch(() => undefined); // awaited below: not an unhandled rejection while the update records
    const gradNorm = await optimizer.update(lr, adamw, lossScale);
    let loss = 0;
    for (const l of await losses) loss += l;
    return { loss: loss / Math.max(1, count), gradNorm, lr };
  });
}
