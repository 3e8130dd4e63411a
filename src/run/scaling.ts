// Loss against training compute, for issue 21's scaling study: each run's validation points at
// C = 6 · N · D (N parameters, D training tokens seen so far: the forward and backward's matrix
// FLOPs of a dense model, attention left out, so MoBA and full attention share the axis as in the
// MoBA paper's figures), their lower envelope (the best loss reached at or below each compute), and
// the power law L(C) = a · C^b fitted to that envelope by least squares in log-log space. Pure
// functions: experiment.ts's report draws and prints them.

/** A validation point of a run: training compute (FLOPs) and loss. */
export interface ComputePoint {
  flops: number;
  loss: number;
}

/** Training FLOPs of a dense model of `parameters` after `tokens` training tokens (6 N D). */
export const trainingFlops = (parameters: number, tokens: number): number => 6 * parameters * tokens;

/**
 * The lower envelope of points from any number of runs: sorted by compute, each kept only where its
 * loss is below every point of less or equal compute (so one run's late points stand only where no
 * smaller run did better for the same compute).
 */
export function lowerEnvelope(points: ComputePoint[]): ComputePoint[] {
  const sorted = [...points].sort((p, q) => p.flops - q.flops || p.loss - q.loss);
  const envelope: ComputePoint[] = [];
  for (const p of sorted) if (envelope.length === 0 || p.loss < envelope[envelope.length - 1].loss) envelope.push(p);
  return envelope;
}

/** L(C) = a · C^b through `points` by least squares on log L = log a + b log C; null for fewer than 2 distinct C. */
export function fitPowerLaw(points: ComputePoint[]): { a: number; b: number } | null {
  const xs = points.map((p) => Math.log(p.flops)),
    ys = points.map((p) => Math.log(p.loss));
  const n = xs.length;
  const mx = xs.reduce((s, x) => s + x, 0) / n,
    my = ys.reduce((s, y) => s + y, 0) / n;
  let sxx = 0,
    sxy = 0;
  for (let i = 0; i < n; i++) {
    sxx += (xs[i] - mx) ** 2;
    sxy += (xs[i] - mx) * (ys[i] - my);
  }
  if (n < 2 || sxx === 0) return null;
  const b = sxy / sxx;
  return { a: Math.exp(my - b * mx), b };
}
