// `moba demo`: MoBA and full attention on a generated input, MoBA checked against the reference,
// a table of times and a picture of the blocks the queries chose.
import { flashAttention, flashAttentionBackward, mobaAttention, mobaAttentionBackward, type AttentionOutput } from "../api.js";
import { attendedKeys, type AttentionInputs } from "../attention/problem.js";
import { referenceBackward, referenceForward } from "../reference/attention.js";
import { randomInputs, relativeError, seeded, table } from "./util.js";

export interface DemoOptions {
  tokens: number;
  qHeads: number;
  kvHeads: number;
  headDim: number;
  blockSize: number;
  topK: number;
  seed: number;
}

export const DEMO_DEFAULTS: DemoOptions = { tokens: 4096, qHeads: 4, kvHeads: 2, headDim: 64, blockSize: 256, topK: 3, seed: 1 };

/** Rows: query blocks; columns: key blocks; shade: share of the block's queries that chose it. */
export function routingPicture(routing: AttentionOutput["routing"], tokens: number, head: number, blockSize: number): string[] {
  const [, qHeads, width] = routing.shape;
  const blocks = Math.ceil(tokens / blockSize);
  const lines: string[] = [];
  for (let i = 0; i < blocks; i++) {
    const counts = new Array<number>(blocks).fill(0);
    const rows = Math.min(blockSize, tokens - i * blockSize);
    for (let t = i * blockSize; t < i * blockSize + rows; t++) {
      for (let r = 0; r < Math.min(width, i); r++) counts[routing.data[(t * qHeads + head) * width + r]]++;
    }
    const cells = counts.map((c, j) => (j === i ? "█" : j > i ? " " : c === 0 ? "·" : c < rows / 3 ? "░" : c < (2 * rows) / 3 ? "▒" : "▓"));
    lines.push(`  ${String(i).padStart(3)} │${cells.join("")}│`);
  }
  return lines;
}

/**
 * Plants long-range structure in random inputs, so the picture shows routing at work: every block
 * j gets a topic vector added to its keys, and the queries of block i get the topic of block ⌊i/2⌋.
 */
export function plantTopics(o: DemoOptions, q: Float32Array, k: Float32Array): void {
  const { tokens, qHeads, kvHeads, headDim: D, blockSize: B } = o;
  const random = seeded(o.seed + 1);
  const topics = Array.from({ length: Math.ceil(tokens / B) * kvHeads }, () => Float32Array.from({ length: D }, () => random() * 2 - 1));
  for (let t = 0; t < tokens; t++) {
    const block = Math.floor(t / B);
    for (let g = 0; g < kvHeads; g++) {
      for (let d = 0; d < D; d++) k[(t * kvHeads + g) * D + d] += topics[block * kvHeads + g][d];
    }
    for (let h = 0; h < qHeads; h++) {
      const topic = topics[Math.floor(block / 2) * kvHeads + Math.floor(h / (qHeads / kvHeads))];
      for (let d = 0; d < D; d++) q[(t * qHeads + h) * D + d] += topic[d];
    }
  }
}

async function timed<T>(run: () => Promise<T>): Promise<[T, number]> {
  const start = performance.now();
  const result = await run();
  return [result, performance.now() - start];
}

export async function demo(o: DemoOptions, print: (line: string) => void): Promise<{ maxError: number }> {
  const { tokens, qHeads, kvHeads, headDim, blockSize, topK } = o;
  const { q, k, v, dout } = randomInputs(o.seed, tokens, qHeads, kvHeads, headDim);
  plantTopics(o, q.data, k.data);
  const inputs: AttentionInputs = { q, k, v };
  const mobaOptions = { blockSize, topK };
  print(
    `MoBA demo: ${tokens} tokens, ${qHeads} query heads / ${kvHeads} kv heads, headDim ${headDim}, blockSize ${blockSize}, topK ${topK} (random inputs, seed ${o.seed}, with the queries of block i leaning towards the keys of block ⌊i/2⌋)`,
  );

  const [moba, mobaFwd] = await timed(() => mobaAttention(inputs, mobaOptions));
  const [mobaGrads, mobaBwd] = await timed(() => mobaAttentionBackward({ ...inputs, ...moba, dout }, mobaOptions));
  const [full, fullFwd] = await timed(() => flashAttention(inputs));
  const [, fullBwd] = await timed(() => flashAttentionBackward({ ...inputs, ...full, dout }));

  const problem = { tokens, qHeads, kvHeads, headDim, cuSeqlens: [0, tokens], blockSize, topK, scale: 1 / Math.sqrt(headDim) };
  const [ref, refTime] = await timed(async () => ({
    ...referenceForward(problem, q.data, k.data, v.data),
    ...referenceBackward(problem, q.data, k.data, v.data, dout.data),
  }));
  const got = { out: moba.out, lse: moba.lse, ...mobaGrads };
  const errors = (["out", "lse", "dq", "dk", "dv"] as const).map((name) => [name, relativeError(got[name].data, ref[name])] as const);
  const maxError = Math.max(...errors.map(([, e]) => e));

  const mobaKeys = attendedKeys([0, tokens], blockSize, topK) / tokens;
  const fullKeys = attendedKeys([0, tokens], blockSize, Infinity) / tokens;
  print("");
  print(
    table(
      ["attention", "forward ms", "fwd+bwd ms", "keys / query", "speedup fwd", "speedup fwd+bwd", "ideal (FLOPs)"],
      [
        ["full", fullFwd.toFixed(0), (fullFwd + fullBwd).toFixed(0), fullKeys.toFixed(0), "1.00x", "1.00x", "1.00x"],
        [
          "MoBA",
          mobaFwd.toFixed(0),
          (mobaFwd + mobaBwd).toFixed(0),
          mobaKeys.toFixed(0),
          `${(fullFwd / mobaFwd).toFixed(2)}x`,
          `${((fullFwd + fullBwd) / (mobaFwd + mobaBwd)).toFixed(2)}x`,
          `${(fullKeys / mobaKeys).toFixed(2)}x`,
        ],
      ],
    ),
  );
  print("");
  print(
    `MoBA vs the float64 reference (${refTime.toFixed(0)} ms): ` +
      errors.map(([n, e]) => `${n} ${e.toExponential(1)}`).join(", ") +
      (maxError <= 1e-5 ? "  ✓ within 1e-5" : "  ✗ above 1e-5"),
  );
  print("");
  print(
    `Blocks chosen by query head 0 (rows: query blocks, columns: key blocks; █ own block, ▓ ▒ ░ share of the block's queries, · none):`,
  );
  for (const line of routingPicture(moba.routing, tokens, 0, blockSize)) print(line);
  return { maxError };
}
