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

/** A recorded optimizer step: its learning rate now, its mean loss per counted token and gradient norm once it has run. */
export interface RecordedStep {
  lr: number;
  /** Rejects where the loss is not finite (diverged). The norm is settled (AdamW.settle) before it resolves. */
  result: Promise<{ loss: number; gradNorm: number }>;
}

/**
 * Records one optimizer step of `o`'s schedule at `step`: the batches' gradients accumulated (each token's loss
 * scaled by lossScale / the tokens counted in all of them), clipped and applied by AdamW, and the read-backs of
 * its losses and gradient norm (non-finite: f16 overflow, no update taken); returns without waiting for them, so
 * the next step can be recorded while this one runs (on a GPU the queue then never waits for the host between
 * steps). `speculative`: recorded before the previous step's result was read; if that step overflowed, this one
 * takes no update and its norm reads as that step's (the optimizer's guard), and the caller records it again.
 */
export async function recordTrainingStep<B extends Sized>(
  model: Model,
  backend: ModelBackend<B>,
  optimizer: AdamW<B>,
  batches: Batch[],
  kinds: AttentionKind[],
  step: number,
  o: TrainOptions,
  lossScale = 1,
  speculative = false,
): Promise<RecordedStep> {
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
    // the losses' read-backs go in before the update is recorded: the host later waits for the GPU once, not twice
    const losses = Promise.all(traces.map((trace) => lossOf(trace, backend)));
    losses.catch(() => undefined); // observed through `result` below, once the update is recorded
    const { norm } = await optimizer.record(lr, adamw, lossScale, speculative);
    const settled = norm.then((n) => optimizer.settle(n)); // even where the loss rejects
    const result = Promise.all([losses, settled]).then(([sums, gradNorm]) => ({
      loss: sums.reduce((a, b) => a + b, 0) / Math.max(1, count),
      gradNorm,
    }));
    result.catch(() => undefined); // the caller awaits it, maybe after recording the next step: not an unhandled rejection meanwhile
    return { lr, result };
  });
}
