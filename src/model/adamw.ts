// AdamW (decoupled weight decay, Loshchilov & Hutter) with global-norm gradient clipping, run on
// the backend that holds the model's gradients; the learning-rate schedule (linear warmup, cosine
// decay to a floor).
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
  return { m: model.params.map((p) => new Float32Array(p.data.length)), v: model.params.map((p) => new Float32Array(p.data.length)), step: 0 };
}

/** The optimizer with its moments on the backend beside the model's weights and gradients. */
export class AdamW<B extends Sized> {
  private readonly m: B[];
  private readonly v: B[];
  private step: number;

  constructor(private readonly model: Model, private readonly backend: ModelBackend<B>, moments: Moments = zeroMoments(model)) {
    this.m = moments.m.map((x) => backend.upload(x, true));
    this.v = moments.v.map((x) => backend.upload(x, true));
    this.step = moments.step;
  }

  /** Clips the gradients to o.gradClip (global norm) and updates every weight; returns the norm before clipping. */
  async update(lr: number, o: AdamWOptions): Promise<number> {
    const { data, grad } = await residentTensors(this.model, this.backend);
    const norm = Math.sqrt(await this.backend.sumOfSquares(grad));
    const step = ++this.step;
    const common = { lr, beta1: o.beta1, beta2: o.beta2, eps: o.eps, c1: 1 - o.beta1 ** step, c2: 1 - o.beta2 ** step, gradScale: norm > o.gradClip ? o.gradClip / norm : 1 };
    for (const [j, p] of this.model.params.entries()) {
      await this.backend.adamw(data[j], grad[j], this.m[j], this.v[j], { ...common, decayFactor: p.decay ? 1 - lr * o.weightDecay : 1 });
    }
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

/** Linear warmup over warmupSteps, then cosine from lr down to lr · minFraction at the last step. */
export function learningRateAt(step: number, steps: number, lr: number, warmupSteps: number, minFraction: number): number {
  if (step < warmupSteps) return (lr * (step + 1)) / warmupSteps;
  const progress = steps <= warmupSteps + 1 ? 1 : (step - warmupSteps) / (steps - warmupSteps - 1);
  return lr * (minFraction + (1 - minFraction) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}
