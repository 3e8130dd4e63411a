// Documents packed into training batches: rows of `contextLength` tokens, each row a run of
// document pieces whose boundaries go into cuSeqlens, so no token attends across documents.
// The stream's position (epoch, document, byte, shuffling RNG) is the whole data state a
// checkpoint keeps. And which documents are held out for validation.
import type { Document } from "../io/corpus.js";
import { MobaError, shown } from "../tensor.js";
import type { Batch } from "./llama.js";
import { Rng } from "./rng.js";

export type { Document };

export interface DataPosition {
  epoch: number;
  /** Index into this epoch's document order. */
  doc: number;
  /** Byte offset inside that document. */
  offset: number;
  /** State of the shuffling RNG before it drew this epoch's order; null: documents in corpus order. */
  rng: number[] | null;
}

/** Where a run starts: the first byte of an order drawn from `seed` (or corpus order without one). */
export function startPosition(seed: number | null): DataPosition {
  return { epoch: 0, doc: 0, offset: 0, rng: seed === null ? null : new Rng(seed).state };
}

export class Packer {
  private order: number[] = [];
  private nextRng: number[] | null = null;
  readonly position: DataPosition;

  constructor(
    private readonly docs: Document[],
    private readonly contextLength: number,
    position: DataPosition,
  ) {
    this.position = structuredClone(position);
    this.checkPosition();
  }

  /** A position read from a checkpoint must lie inside these documents: the data may have changed since. */
  private checkPosition(): void {
    const p = this.position;
    const fail = (message: string): never => {
      throw new MobaError(`data position ${shown(p)}: ${message} (has the data changed since the checkpoint?)`);
    };
    if (typeof p !== "object" || p === null) fail("expected { epoch, doc, offset, rng }");
    if (!Number.isSafeInteger(p.epoch) || p.epoch < 0) fail(`epoch: expected an integer >= 0, got ${shown(p.epoch)}`);
    if (
      p.rng !== null &&
      (!Array.isArray(p.rng) || p.rng.length !== 4 || !p.rng.every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32))
    ) {
      fail(`rng: expected null or 4 unsigned 32-bit integers, got ${shown(p.rng)}`);
    }
    this.drawOrder();
    if (!Number.isInteger(p.doc) || p.doc < 0 || p.doc >= this.order.length)
      fail(`doc: expected an index below the ${this.order.length} documents, got ${shown(p.doc)}`);
    const length = this.docs[this.order[p.doc]].bytes.length;
    if (!Number.isInteger(p.offset) || p.offset < 0 || p.offset >= length)
      fail(`offset: expected a byte offset below the document's ${length} bytes, got ${shown(p.offset)}`);
  }

  private drawOrder(): void {
    const order = this.docs.map((_, i) => i);
    if (this.position.rng === null) {
      this.order = order;
      return;
    }
    const rng = new Rng(this.position.rng);
    this.order = rng.shuffle(order);
    this.nextRng = rng.state;
  }

  /** The next `rows` rows as one packed batch of rows · contextLength tokens. */
  next(rows: number): Batch {
    const T = rows * this.contextLength;
    const tokens = new Int32Array(T),
      targets = new Int32Array(T),
      weights = new Float32Array(T);
    const cuSeqlens = [0];
    let t = 0;
    for (let r = 0; r < rows; r++) {
      const rowEnd = (r + 1) * this.contextLength;
      while (t < rowEnd) {
        const doc = this.docs[this.order[this.position.doc]];
        const { offset } = this.position;
        const n = Math.min(rowEnd - t, doc.bytes.length - offset);
        for (let i = 0; i < n; i++) {
          tokens[t + i] = doc.bytes[offset + i];
          // the document's last byte has no next byte to predict
          const hasNext = offset + i + 1 < doc.bytes.length;
          targets[t + i] = hasNext ? doc.bytes[offset + i + 1] : 0;
          weights[t + i] = hasNext && (doc.lossMask === undefined || doc.lossMask[offset + i] === 1) ? 1 : 0;
        }
        t += n;
        cuSeqlens.push(t);
        this.advance(n);
      }
    }
    return { tokens, targets, weights, cuSeqlens: Int32Array.from(cuSeqlens) };
  }

  private advance(n: number): void {
    const p = this.position;
    p.offset += n;
    if (p.offset < this.docs[this.order[p.doc]].bytes.length) return;
    p.offset = 0;
    p.doc++;
    if (p.doc === this.order.length) {
      p.doc = 0;
      p.epoch++;
      p.rng = this.nextRng;
      this.drawOrder();
    }
  }
}

/** One packed batch from several (rows side by side; each keeps its own sequences). */
export function concatBatches(batches: Batch[]): Batch {
  const T = batches.reduce((n, b) => n + b.tokens.length, 0);
  const out: Batch = { tokens: new Int32Array(T), targets: new Int32Array(T), weights: new Float32Array(T), cuSeqlens: Int32Array.of(0) };
  const cu = [0];
  let at = 0;
  for (const b of batches) {
    out.tokens.set(b.tokens, at);
    out.targets.set(b.targets, at);
    out.weights.set(b.weights, at);
    for (let s = 1; s < b.cuSeqlens.length; s++) cu.push(at + b.cuSeqlens[s]);
    at += b.tokens.length;
  }
  out.cuSeqlens = Int32Array.from(cu);
  return out;
}

/** A single-sequence batch of the bytes: every next byte predicted. */
export function sequenceBatch(bytes: Uint8Array | Int32Array): Batch {
  const T = bytes.length - 1;
  return {
    tokens: Int32Array.from(bytes.subarray(0, T)),
    targets: Int32Array.from(bytes.subarray(1)),
    weights: new Float32Array(T).fill(1),
    cuSeqlens: Int32Array.of(0, T),
  };
}

/** Every tenth document (the 10th, 20th, …) is held out for validation, so both splits span the whole corpus. */
export function splitDocuments(docs: Document[]): { train: Document[]; validation: Document[] } {
  if (docs.length < 2) return { train: docs, validation: docs };
  // fewer than ten documents: the last one is held out
  const held = (i: number) => (docs.length < 10 ? i === docs.length - 1 : i % 10 === 9);
  return { train: docs.filter((_, i) => !held(i)), validation: docs.filter((_, i) => held(i)) };
}
