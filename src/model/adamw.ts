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
  /** Updates taken so far, counting every recorded update whose norm is not yet read as taken (settle corrects it). */
  private step: number;
  /**
   * [norm, gradient multiplier] of the updates, two alternating: an update recorded while the one before is still
   * running (`speculative`) reads that one's clip as its guard and takes no step if it overflowed.
   */
  private readonly clips: [B, B];
  /** [0]: the guard of an update recorded after every earlier norm was read. */
  private readonly finite: B;
  private recorded = 0;

  constructor(
    private readonly model: Model,
    private readonly backend: ModelBackend<B>,
    moments: Moments = zeroMoments(model),
  ) {
    this.m = moments.m.map((x) => backend.upload(x, true));
    this.v = moments.v.map((x) => backend.upload(x, true));
    this.step = moments.step;
    this.clips = [backend.upload(new Float32Array(2), true), backend.upload(new Float32Array(2), true)];
    this.finite = backend.upload(new Float32Array(1), true);
  }

  /**
   * Records the clipping of the gradients to o.gradClip (global norm) and the update of every weight; `norm`
   * reads back the norm before clipping once the update has run. The gradients hold lossScale times the true
   * ones (the loss was scaled before the backward): they are divided by it in the same multiply as the
   * clipping. A non-finite norm (an overflow of the scaled gradients) takes no step: weights, moments and the
   * step count stay. `speculative`: recorded before the previous update's norm was read (settled): if that one
   * overflowed, this one takes no step either and its norm reads as that one's (the caller records it again).
   * Every recorded update's norm goes through settle(), in the order they were recorded.
   */
  async record(lr: number, o: AdamWOptions, lossScale = 1, speculative = false): Promise<{ norm: Promise<number> }> {
    const { data, grad } = await residentTensors(this.model, this.backend);
    const clip = this.clips[this.recorded % 2],
      guard = speculative ? this.clips[(this.recorded + 1) % 2] : this.finite;
    this.recorded++;
    await this.backend.gradientClip(clip, grad, o.gradClip, lossScale, guard);
    const step = ++this.step; // taken unless settle() reads an overflow
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
    return { norm: this.backend.download(clip).then(([norm]) => norm) };
  }

  /** Counts a recorded update's norm (record's read-back): one that is not finite took no step. */
  settle(norm: number): number {
    if (!Number.isFinite(norm)) this.step--;
    return norm;
  }

  /** One update, recorded and read back (record, then settle); returns the norm before clipping. */
  async update(lr: number, o: AdamWOptions, lossScale = 1): Promise<number> {
    return this.settle(await (await this.record(lr, o, lossScale)).norm);
  }

  /** The moments on the host. */
  async moments(): Promise<Moments> {
    const copy = async (x: B) => Float32Array.from(await this.backend.download(x));
    return { m: await Promise.all(this.m.map(copy)), v: await Promise.all(this.v.map(copy)), step: this.step };
  }

  free(): void {
    this.backend.free([...this.m, ...this.v, ...this.clips, this.finite]);
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

  /** The scale once a clean step is recorded: what the next step uses if the one still running does not overflow. */
  afterClean(): number {
    return this.cleanSteps + 1 >= LOSS_SCALE_GROWTH_STEPS ? this.scale * 2 : this.scale;
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
