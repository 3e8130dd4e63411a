// AdamW (decoupled weight decay, Loshchilov & Hutter), the learning-rate schedule (linear warmup,
// cosine decay to a floor) and global-norm gradient clipping.
import type { Param } from "./llama.js";

export interface AdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface Moments {
  m: Float32Array[]; // first moments, one per parameter
  v: Float32Array[]; // second moments
  /** Updates taken so far (bias correction uses it). */
  step: number;
}

export function zeroMoments(params: Param[]): Moments {
  return { m: params.map((p) => new Float32Array(p.data.length)), v: params.map((p) => new Float32Array(p.data.length)), step: 0 };
}

/** One update of every parameter from its .grad; weight decay only where param.decay. */
export function adamwStep(params: Param[], moments: Moments, lr: number, o: AdamWOptions): void {
  const step = ++moments.step;
  const c1 = 1 - o.beta1 ** step, c2 = 1 - o.beta2 ** step;
  params.forEach((p, j) => {
    const m = moments.m[j], v = moments.v[j], w = p.data, g = p.grad;
    const decay = p.decay ? 1 - lr * o.weightDecay : 1;
    for (let i = 0; i < w.length; i++) {
      m[i] = o.beta1 * m[i] + (1 - o.beta1) * g[i];
      v[i] = o.beta2 * v[i] + (1 - o.beta2) * g[i] * g[i];
      w[i] = w[i] * decay - (lr * (m[i] / c1)) / (Math.sqrt(v[i] / c2) + o.eps);
    }
  });
}

/** Linear warmup over warmupSteps, then cosine from lr down to lr · minFraction at the last step. */
export function learningRateAt(step: number, steps: number, lr: number, warmupSteps: number, minFraction: number): number {
  if (step < warmupSteps) return (lr * (step + 1)) / warmupSteps;
  const progress = steps <= warmupSteps + 1 ? 1 : (step - warmupSteps) / (steps - warmupSteps - 1);
  return lr * (minFraction + (1 - minFraction) * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}

/** Scales every gradient so their global L2 norm is at most maxNorm; returns the norm before clipping. */
export function clipGradients(params: Param[], maxNorm: number): number {
  let sum = 0;
  for (const p of params) for (const g of p.grad) sum += g * g;
  const norm = Math.sqrt(sum);
  if (norm > maxNorm) {
    const s = maxNorm / norm;
    for (const p of params) for (let i = 0; i < p.grad.length; i++) p.grad[i] *= s;
  }
  return norm;
}
