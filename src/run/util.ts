// Small helpers of the runs: seeded inputs, error norms, text tables.
import type { Tensor } from "../tensor.js";

/** mulberry32: a small seedable generator, so every run can be repeated. */
export function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function uniformTensor(random: () => number, shape: number[], spread = 1): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  for (let i = 0; i < size; i++) data[i] = (random() * 2 - 1) * spread;
  return { data, shape };
}

export function randomInputs(
  seed: number,
  tokens: number,
  qHeads: number,
  kvHeads: number,
  headDim: number,
): Record<"q" | "k" | "v" | "dout", Tensor> {
  const random = seeded(seed);
  return {
    q: uniformTensor(random, [tokens, qHeads, headDim], 2),
    k: uniformTensor(random, [tokens, kvHeads, headDim], 2),
    v: uniformTensor(random, [tokens, kvHeads, headDim]),
    dout: uniformTensor(random, [tokens, qHeads, headDim]),
  };
}

/** ‖a − b‖ / ‖b‖ (‖a − b‖ when b is zero); NaN anywhere gives Infinity. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let num = 0,
    den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  if (Number.isNaN(num)) return Infinity;
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** A plain text table, columns padded, first column left-aligned and the rest right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]) => cells.map((x, c) => (c === 0 ? x.padEnd(widths[c]) : x.padStart(widths[c]))).join("  ");
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...rows.map(line)].join("\n");
}
