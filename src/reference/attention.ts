// The specification of MoBA, written as plainly as possible: dense, masked, float64 loops.
// It imports nothing of ours and is never optimized; every fast implementation is tested
// against it, and its backward is tested against finite differences.
//
// Layout (FlashAttention varlen): q [tokens, qHeads, headDim], k and v [tokens, kvHeads, headDim],
// packed sequences delimited by cuSeqlens [batch + 1]. Query head h reads kv head
// floor(h / (qHeads / kvHeads)).

export interface ReferenceProblem {
  tokens: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  cuSeqlens: ArrayLike<number>; // [batch + 1]
  blockSize: number;
  topK: number; // Infinity means full causal attention
  scale: number;
}

type Values = ArrayLike<number>;

/** Chooses the blocks of one sequence and head: sel[p][j] for positions p and blocks j. */
export type Selection = (problem: ReferenceProblem, q: Values, k: Values, start: number, length: number, head: number) => boolean[][];

/** Which blocks a query attends to: sel[p][j] for positions p and blocks j of one sequence and head. */
export function referenceSelection(
  problem: ReferenceProblem,
  q: Values, // [tokens, qHeads, headDim]
  k: Values, // [tokens, kvHeads, headDim]
  start: number,
  length: number,
  head: number,
): boolean[][] {
  const { qHeads, kvHeads, headDim: D, blockSize: B, topK } = problem;
  const kvHead = Math.floor(head / (qHeads / kvHeads));
  const numBlocks = Math.ceil(length / B);
  // mean key of every block, float64
  const means: number[][] = [];
  for (let j = 0; j < numBlocks; j++) {
    const mean = new Array<number>(D).fill(0);
    const end = Math.min((j + 1) * B, length);
    for (let t = j * B; t < end; t++) {
      for (let d = 0; d < D; d++) mean[d] += k[((start + t) * kvHeads + kvHead) * D + d];
    }
    for (let d = 0; d < D; d++) mean[d] /= end - j * B;
    means.push(mean);
  }
  const sel: boolean[][] = [];
  for (let p = 0; p < length; p++) {
    const i = Math.floor(p / B);
    const row = new Array<boolean>(numBlocks).fill(false);
    row[i] = true; // the own block is always attended
    const past: { j: number; score: number }[] = [];
    for (let j = 0; j < i; j++) {
      let score = 0;
      for (let d = 0; d < D; d++) score += q[((start + p) * qHeads + head) * D + d] * means[j][d];
      past.push({ j, score });
    }
    // highest score first; ties go to the lower block index
    past.sort((a, b) => b.score - a.score || a.j - b.j);
    for (const { j } of past.slice(0, Math.max(0, topK - 1))) row[j] = true;
    sel.push(row);
  }
  return sel;
}

/** The keys (positions in the sequence) that the query at position p sees: the dense mask, row p. */
function visibleKeys(sel: boolean[][], B: number, p: number, length: number): number[] {
  const keys: number[] = [];
  for (let t = 0; t < length; t++) if (t <= p && sel[p][Math.floor(t / B)]) keys.push(t);
  return keys;
}

/** scale · (a[row] · b[key]) for each visible key. */
function scores(
  a: Values,
  row: number,
  b: Values,
  visible: number[],
  kvRow: (t: number) => number,
  D: number,
  scale: number,
): Float64Array {
  const out = new Float64Array(visible.length);
  for (let n = 0; n < visible.length; n++) {
    const kv = kvRow(visible[n]);
    let dot = 0;
    for (let d = 0; d < D; d++) dot += a[row + d] * b[kv + d];
    out[n] = scale * dot;
  }
  return out;
}

export interface ReferenceForward {
  out: Float64Array; // [tokens, qHeads, headDim]
  lse: Float64Array; // [tokens, qHeads]
}

/** `select` replaces the gate (e.g. to replay another implementation's float32 choice); default: the spec. */
export function referenceForward(
  problem: ReferenceProblem,
  q: Values,
  k: Values,
  v: Values,
  select: Selection = referenceSelection,
): ReferenceForward {
  const { tokens, qHeads, kvHeads, headDim: D, cuSeqlens, blockSize: B, scale } = problem;
  const out = new Float64Array(tokens * qHeads * D);
  const lse = new Float64Array(tokens * qHeads);
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const start = cuSeqlens[b];
    const length = cuSeqlens[b + 1] - start;
    for (let h = 0; h < qHeads; h++) {
      const g = Math.floor(h / (qHeads / kvHeads));
      const sel = select(problem, q, k, start, length, h);
      for (let p = 0; p < length; p++) {
        const qi = ((start + p) * qHeads + h) * D;
        const visible = visibleKeys(sel, B, p, length);
        const kvRow = (t: number) => ((start + t) * kvHeads + g) * D;
        const s = scores(q, qi, k, visible, kvRow, D, scale);
        const max = Math.max(...s);
        let sum = 0;
        for (const x of s) sum += Math.exp(x - max);
        lse[(start + p) * qHeads + h] = max + Math.log(sum);
        for (let n = 0; n < visible.length; n++) {
          const prob = Math.exp(s[n] - max) / sum;
          const kv = kvRow(visible[n]);
          for (let d = 0; d < D; d++) out[qi + d] += prob * v[kv + d];
        }
      }
    }
  }
  return { out, lse };
}

export interface ReferenceGradients {
  dq: Float64Array; // [tokens, qHeads, headDim]
  dk: Float64Array; // [tokens, kvHeads, headDim]
  dv: Float64Array; // [tokens, kvHeads, headDim]
}

/** Gradients of sum(out · dout); the block selection is a constant. */
export function referenceBackward(
  problem: ReferenceProblem,
  q: Values,
  k: Values,
  v: Values,
  dout: Values, // [tokens, qHeads, headDim]
  select: Selection = referenceSelection,
): ReferenceGradients {
  const { tokens, qHeads, kvHeads, headDim: D, cuSeqlens, blockSize: B, scale } = problem;
  const dq = new Float64Array(tokens * qHeads * D);
  const dk = new Float64Array(tokens * kvHeads * D);
  const dv = new Float64Array(tokens * kvHeads * D);
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const start = cuSeqlens[b];
    const length = cuSeqlens[b + 1] - start;
    for (let h = 0; h < qHeads; h++) {
      const g = Math.floor(h / (qHeads / kvHeads));
      const sel = select(problem, q, k, start, length, h);
      const kvRow = (t: number) => ((start + t) * kvHeads + g) * D;
      for (let p = 0; p < length; p++) {
        const qi = ((start + p) * qHeads + h) * D;
        const visible = visibleKeys(sel, B, p, length);
        // probabilities P of this query row over its visible keys
        const s = scores(q, qi, k, visible, kvRow, D, scale);
        const max = Math.max(...s);
        let sum = 0;
        for (const x of s) sum += Math.exp(x - max);
        const P = s.map((x) => Math.exp(x - max) / sum);
        // dP[n] = dout[p] · v[t];  dS = P ∘ (dP − Σ P dP)
        const dP = scores(dout, qi, v, visible, kvRow, D, 1);
        let rowDot = 0;
        for (let n = 0; n < visible.length; n++) rowDot += P[n] * dP[n];
        for (let n = 0; n < visible.length; n++) {
          const dS = P[n] * (dP[n] - rowDot);
          const kv = kvRow(visible[n]);
          for (let d = 0; d < D; d++) {
            dq[qi + d] += scale * dS * k[kv + d];
            dk[kv + d] += scale * dS * q[qi + d];
            dv[kv + d] += P[n] * dout[qi + d];
          }
        }
      }
    }
  }
  return { dq, dk, dv };
}
