// AdamW (decoupled weight decay, Loshchilov & Hutter) with global-norm gradient clipping, run on
// the backend that holds the model's gradients; dynamic loss scaling for the f16 path; the
// learning-rate schedule (linear warmup, cosine decay to a floor).
import type { ModelBackend, Sized } from "../backend.js";
import { type Model, residentTensors } from "./llama.js";

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Gradients are scaled so their global L2 norm is at most this. */
  gradClip: number;
}

/** AdamW's state on the host (what a checkpoint stores). */
export interface Moments {
  m: Float32Array[]; // first moments, one per parameter
  v: Float32Array[]; // second moments
  /** Updates taken so far (bias correction uses it). */
  step: number;
}

export function zeroMoments(model: Model): Moments {
  return {
    m: model.params.map((p) => new Float32Array(p.data.length)),
    v: model.params.map((p) => new Float32Array(p.data.length)),
    step: 0,
  };
}

/** The optimizer with its moments on the backend beside the model's weights and gradients. */
export class AdamW<B extends Sized> {
  private readonly m: B[];
  private readonly v: B[];
  private step: number;

  constructor(
    private readonly model: Model,
    private readonly backend: ModelBackend<B>,
    moments: Moments = zeroMoments(model),
  ) {
    this.m = moments.m.map((x) => backend.upload(x, true));
    this.v = moments.v.map((x) => backend.upload(x, true));
    this.step = moments.step;
  }

  /**
   * Clips the gradients to o.gradClip (global norm) and updates every weight; returns the norm
   * before clipping. The gradients hold lossScale times the true ones (the loss was scaled before
   * the backward): they are divided by it in the same multiply as the clipping. A non-finite norm
   * (an overflow of the scaled gradients) takes no step: weights, moments and the step count stay.
   * The norm and the clip are computed on the backend and the norm read back after every update
   * is recorded, so on a GPU the step runs to its end without waiting for the host.
   */
  async update(lr: number, o: AdamWOptions, lossScale = 1): Promise<number> {
    const { data, grad } = await residentTensors(this.model, this.backend);
    const clip = this.backend.empty(2); // [norm, gradient multiplier]
    await this.backend.gradientClip(clip, grad, o.gradClip, lossScale);
    const step = this.step + 1;
    const common = { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, c1: 1 - o.beta1 ** step, c2: 1 - o.beta2 ** step };
    for (const [j, p] of this.model.params.entries()) {
      await this.backend.adamw(
        data[j],
        grad[j],
        this.m[j],
        this.v[j],
        { ...common, decayFactor: p.decay ? 1 - lr * o.weightDecay : 1 },
        clip,
      );
    }
    const [norm] = await this.backend.download(clip);
    if (Number.isFinite(norm)) this.step = step;
    return norm;
  }

  /** The moments on the host. */
  async moments(): Promise<Moments> {
    const copy = async (x: B) => Float32Array.from(await this.backend.download(x));
    return { m: await Promise.all(this.m.map(copy)), v: await Promise.all(this.v.map(copy)), step: this.step };
  }

  free(): void {
    this.backend.free([...this.m, ...this.v]);
  }
}

/** The loss scale's state (what a checkpoint stores). */
export interface LossScaleState {
  scale: number;
  /** Finite steps since the scale last changed. */
  cleanSteps: number;
  /** Steps skipped so far (their scaled gradients overflowed). */
  skipped: number;
}

/** Scale after 2^16: f16's largest finite value is 65504, so gradients start with headroom of about 1. */
export const INITIAL_LOSS_SCALE = 2 ** 16;
/** Clean steps before the scale doubles (PyTorch's GradScaler uses 2000). */
export const LOSS_SCALE_GROWTH_STEPS = 1000;

/**
 * Dynamic loss scaling for f16 gradients: the loss is multiplied by `scale` before the backward so
 * small gradients stay above f16's underflow; a step whose gradients overflowed (inf or NaN) is
 * skipped and the scale halves; after LOSS_SCALE_GROWTH_STEPS clean steps it doubles.
 */
export class LossScale implements LossScaleState {
  scale: number;
  cleanSteps: number;
  skipped: number;

  constructor(state: LossScaleState = { scale: INITIAL_LOSS_SCALE, cleanSteps: 0, skipped: 0 }) {
    ({ scale: this.scale, cleanSteps: this.cleanSteps, skipped: this.skipped } = state);
  }

  /** Records a step's gradient norm; returns whether the step was taken. */
  record(norm: number): boolean {
    if (!Number.isFinite(norm)) {
      this.scale /= 2;
      this.cleanSteps = 0;
      this.skipped++;
      return false;
    }
    if (++this.cleanSteps >= LOSS_SCALE_GROWTH_STEPS) {
      this.scale *= 2;
      this.cleanSteps = 0;
    }
    return true;
  }

  state(): LossScaleState {
    return { scale: this.scale, cleanSteps: this.cleanSteps, skipped: this.skipped };
  }
}

/** Linear warmup over warmupSteps, then cosine from lr down to lr · minFraction at the last step. */
export function learningRateAt(step: number, steps: number, lr: number, warmupSteps: number, minFraction: number): number {
  if (step < warmupSteps) return (lr * (step + 1)) / warmupSteps;
  const progress = steps <= warmupSteps + 1 ? 1 : (step - warmupSteps) / (steps - warmupSteps - 1);
  return lr * (minFraction + (1 - minFraction) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}
