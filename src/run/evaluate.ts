// moba eval: validation loss and perplexity, loss by position, trailing-token loss and passkey
// retrieval, from a checkpoint on the CPU or WebGPU.
import type { ModelBackend } from "../backend.js";
import type { Document } from "../model/packing.js";
import { passkeySample } from "../io/passkey.js";
import type { AttentionKind } from "../model/config.js";
import { forward, lossOf, type Model } from "../model/llama.js";
import { sequenceBatch } from "../model/packing.js";
import { Rng } from "../model/rng.js";
import { MobaError } from "../tensor.js";

/**
 * Rows of `contextLength` bytes cut from documents at least that long, each starting at position 0
 * (consecutive windows of a document), up to `maxRows`: every row is one full-length sequence, so
 * loss by position and trailing loss measure long-range use.
 */
export function evaluationWindows(docs: Document[], contextLength: number, maxRows: number): (Uint8Array | Int32Array)[] {
  const rows: (Uint8Array | Int32Array)[] = [];
  // one window per document first, then second windows: rows spread over as many documents as possible
  for (let w = 0; rows.length < maxRows; w++) {
    let added = false;
    for (const doc of docs) {
      const start = w * contextLength;
      if (start + contextLength + 1 <= doc.bytes.length && rows.length < maxRows) {
        rows.push(doc.bytes.subarray(start, start + contextLength + 1)); // + the last target
        added = true;
      }
    }
    if (!added) break;
  }
  if (rows.length === 0) throw new MobaError(`eval: expected documents longer than the context length ${contextLength}, got none`);
  return rows;
}

/** Negative log-likelihood of every position of one row [contextLength]. */
export async function tokenLosses(
  model: Model,
  row: Uint8Array | Int32Array,
  backend: ModelBackend,
  kinds?: AttentionKind[],
): Promise<Float64Array> {
  const batch = sequenceBatch(row);
  const V = model.config.vocab_size;
  return backend.scope("evaluation", async () => {
    const trace = await forward(model, batch, backend, kinds);
    const [lse, logits] = [await backend.download(trace.lse), await backend.download(trace.logits)];
    return Float64Array.from({ length: batch.tokens.length }, (_, t) => lse[t] - logits[t * V + batch.targets[t]]);
  });
}

/**
 * Mean loss in nats per predicted token of a tokenized text, scored in windows of `contextLength`
 * predictions each starting at position 0 (window w reads tokens [w·C, (w+1)·C], so every token
 * after the first is predicted once).
 */
export async function textLoss(
  model: Model,
  tokens: Int32Array,
  contextLength: number,
  backend: ModelBackend,
  kinds?: AttentionKind[],
): Promise<{ loss: number; predicted: number; windows: number }> {
  if (tokens.length < 2) throw new MobaError(`--text: expected at least 2 tokens, got ${tokens.length}`);
  let sum = 0,
    windows = 0;
  for (let start = 0; start + 1 < tokens.length; start += contextLength, windows++) {
    const batch = sequenceBatch(tokens.subarray(start, Math.min(tokens.length, start + contextLength + 1)));
    sum += await backend.scope("evaluation", async () => lossOf(await forward(model, batch, backend, kinds), backend));
  }
  return { loss: sum / (tokens.length - 1), predicted: tokens.length - 1, windows };
}

export interface LossReport {
  contextLength: number;
  rows: number;
  /** Mean nats per byte over every position. */
  loss: number;
  perplexity: number;
  /** Mean loss of positions [i · bucket, (i + 1) · bucket). */
  byPosition: { from: number; to: number; loss: number }[];
  /** Mean loss of the last `trailing` positions of each row. */
  trailing: number;
  trailingTokens: number;
}

export async function lossReport(
  model: Model,
  docs: Document[],
  o: { contextLength: number; rows: number; buckets: number; trailing: number },
  backend: ModelBackend,
  kinds?: AttentionKind[],
): Promise<LossReport> {
  if (o.trailing > o.contextLength)
    throw new MobaError(`--trailing: expected at most the context length ${o.contextLength}, got ${o.trailing}`);
  const windows = evaluationWindows(docs, o.contextLength, o.rows);
  const sum = new Float64Array(o.contextLength);
  for (const row of windows) (await tokenLosses(model, row, backend, kinds)).forEach((x, t) => (sum[t] += x));
  const mean = (from: number, to: number) => sum.subarray(from, to).reduce((a, b) => a + b, 0) / ((to - from) * windows.length);
  const bucket = Math.ceil(o.contextLength / o.buckets);
  const byPosition = [];
  for (let from = 0; from < o.contextLength; from += bucket)
    byPosition.push({ from, to: Math.min(o.contextLength, from + bucket), loss: mean(from, Math.min(o.contextLength, from + bucket)) });
  const loss = mean(0, o.contextLength);
  return {
    contextLength: o.contextLength,
    rows: windows.length,
    loss,
    perplexity: Math.exp(loss),
    byPosition,
    trailing: mean(o.contextLength - o.trailing, o.contextLength),
    trailingTokens: o.trailing,
  };
}

export interface PasskeyCell {
  length: number;
  depth: number;
  accuracy: number;
  trials: number;
}

/**
 * Passkey accuracy per (length, depth): a trial counts when the model's greedy choice is right at
 * every digit of the answer (teacher-forced, which equals greedy decoding when all are right).
 */
export async function passkeyGrid(
  model: Model,
  lengths: number[],
  depths: number[],
  trials: number,
  seed: number,
  backend: ModelBackend,
  kinds?: AttentionKind[],
): Promise<PasskeyCell[]> {
  const rng = new Rng(seed);
  const V = model.config.vocab_size;
  const cells: PasskeyCell[] = [];
  for (const length of lengths) {
    for (const depth of depths) {
      let correct = 0;
      for (let i = 0; i < trials; i++) {
        const s = passkeySample(length, depth, rng);
        const T = s.bytes.length - 1;
        const logits = await backend.scope("passkey", async () =>
          backend.download((await forward(model, sequenceBatch(s.bytes), backend, kinds)).logits),
        );
        let right = true;
        for (let t = s.answerStart - 1; t < T && right; t++) {
          let best = 0;
          for (let v = 1; v < V; v++) if (logits[t * V + v] > logits[t * V + best]) best = v;
          right = best === s.bytes[t + 1];
        }
        if (right) correct++;
      }
      cells.push({ length, depth, accuracy: correct / trials, trials });
    }
  }
  return cells;
}
