// The specification of the optimizer, written as plainly as possible in float64: AdamW
// (Loshchilov & Hutter: Adam's bias-corrected moments, weight decay decoupled from the gradient)
// after clipping the gradients by their global L2 norm. It imports nothing of ours;
// src/model/adamw.ts (and the training loop that calls it) is tested against it.

export interface ReferenceAdamWOptions {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** The gradients are scaled by gradClip / norm when their global norm is above it. */
  gradClip: number;
}

export interface ReferenceParam {
  w: Float64Array;
  m: Float64Array; // first moment
  v: Float64Array; // second moment
  /** Whether weight decay applies (matrices yes, norms and embeddings no). */
  decay: boolean;
}

export class ReferenceAdamW {
  readonly params: ReferenceParam[];

  /** Starts from the weights (and moments after `step` updates: a resumed run). */
  constructor(
    params: { w: ArrayLike<number>; decay: boolean; m?: ArrayLike<number>; v?: ArrayLike<number> }[],
    public step = 0,
  ) {
    this.params = params.map((p) => ({
      w: Float64Array.from(p.w),
      m: p.m ? Float64Array.from(p.m) : new Float64Array(p.w.length),
      v: p.v ? Float64Array.from(p.v) : new Float64Array(p.w.length),
      decay: p.decay,
    }));
  }

  /**
   * One update from the gradient of the loss, one array per parameter; returns the global norm
   * before clipping. The gradients are the loss's own: a loss-scaled (f16) step divides them by
   * its scale before this, and a step it skips for overflow calls nothing (no state moves).
   */
  update(grads: ArrayLike<number>[], lr: number, o: ReferenceAdamWOptions): number {
    let sumOfSquares = 0;
    for (const g of grads) for (let i = 0; i < g.length; i++) sumOfSquares += g[i] * g[i];
    const norm = Math.sqrt(sumOfSquares);
    const clip = norm > o.gradClip ? o.gradClip / norm : 1;
    this.step++;
    this.params.forEach(({ w, m, v, decay }, j) => {
      for (let i = 0; i < w.length; i++) {
        const g = grads[j][i] * clip;
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * g;
        v[i] = o.beta2 * v[i] + (1 - o.beta2) * g * g;
        const mHat = m[i] / (1 - o.beta1 ** this.step);
        const vHat = v[i] / (1 - o.beta2 ** this.step);
        // decoupled: the decay shrinks the weight itself, it never enters m or v
        if (decay) w[i] -= lr * o.weightDecay * w[i];
        w[i] -= (lr * mHat) / (Math.sqrt(vHat) + o.eps);
      }
    });
    return norm;
  }
}
