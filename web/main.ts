// The playground (web/index.html): MoBA against full attention on random inputs, and the blocks its gate chose.
// Uses only the package's browser entry, "moba" (scripts/build-web.mjs bundles it from src/index.ts; web/tsconfig.json
// checks this file against its types in dist/). test/playground.test.ts drives the page through the ids below and
// reads document.body.dataset.state ("running", "done", "error").
import {
  type AttentionOutput,
  type Backend,
  attendedKeys,
  flashAttention,
  mobaAttention,
  plantTopics,
  randomInputs,
  referenceForward,
  relativeError,
} from "moba";

const Q_HEADS = 4;
const KV_HEADS = 2;
const HEAD_DIM = 64;
const SEED = 1;
/** Up to this many tokens the float64 reference runs too (it is dense and slow: O(tokens² · headDim) per head). */
const REFERENCE_TOKENS = 2048;

const byId = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;
const status = byId<HTMLParagraphElement>("status");
const canvas = byId<HTMLCanvasElement>("heatmap");
const cell = byId<HTMLParagraphElement>("cell");
const headSelect = byId<HTMLSelectElement>("head");

/** WebGPU where the browser has an adapter, else the CPU backend. */
async function pickBackend(): Promise<[Backend, string]> {
  if (!("gpu" in navigator)) return ["cpu", "CPU (this browser has no navigator.gpu)"];
  const adapter = await navigator.gpu.requestAdapter();
  return adapter ? ["webgpu", "WebGPU"] : ["cpu", "CPU (navigator.gpu found no adapter)"];
}
const backendReady = pickBackend();
void backendReady.then(([, text]) => (byId("backend").textContent = text));

async function timed<T>(run: () => Promise<T>): Promise<[T, number]> {
  await run(); // compiles the shaders / warms up the CPU kernels
  const start = performance.now();
  const result = await run();
  return [result, performance.now() - start];
}

/** What the heatmap draws for one head: per query block i and key block j, how many queries chose j and their mean gate score. */
interface Gating {
  blocks: number;
  rows: number[]; // queries in each block
  chosen: Float64Array; // [blocks, blocks]
  score: Float64Array; // [blocks, blocks] mean over the block's queries of q · mean(K_j), j < i
}

let last: { q: Float32Array; k: Float32Array; routing: AttentionOutput["routing"]; tokens: number; blockSize: number; topK: number };
let gating: Gating;
let focus = { i: 0, j: 0 };

function gatingOf(head: number): Gating {
  const { q, k, routing, tokens, blockSize: B } = last;
  const blocks = Math.ceil(tokens / B);
  const width = routing.shape[2];
  const g = Math.floor(head / (Q_HEADS / KV_HEADS));
  const means = Array.from({ length: blocks }, (_, j) => {
    const mean = new Float64Array(HEAD_DIM);
    const end = Math.min((j + 1) * B, tokens);
    for (let t = j * B; t < end; t++) for (let d = 0; d < HEAD_DIM; d++) mean[d] += k[(t * KV_HEADS + g) * HEAD_DIM + d] / (end - j * B);
    return mean;
  });
  const rows: number[] = [];
  const chosen = new Float64Array(blocks * blocks);
  const score = new Float64Array(blocks * blocks);
  for (let i = 0; i < blocks; i++) {
    rows.push(Math.min(B, tokens - i * B));
    chosen[i * blocks + i] = rows[i];
    for (let t = i * B; t < i * B + rows[i]; t++) {
      const qt = (t * Q_HEADS + head) * HEAD_DIM;
      for (let r = 0; r < Math.min(width, i); r++) chosen[i * blocks + routing.data[(t * Q_HEADS + head) * width + r]]++;
      for (let j = 0; j < i; j++) {
        let dot = 0;
        for (let d = 0; d < HEAD_DIM; d++) dot += q[qt + d] * means[j][d];
        score[i * blocks + j] += dot / rows[i];
      }
    }
  }
  return { blocks, rows, chosen, score };
}

function draw(): void {
  const { blocks, rows, chosen } = gating;
  const size = Math.max(1, Math.floor(480 / blocks));
  canvas.width = canvas.height = size * blocks;
  const c = canvas.getContext("2d")!;
  c.fillStyle = "#ffffff";
  c.fillRect(0, 0, canvas.width, canvas.height);
  for (let i = 0; i < blocks; i++) {
    for (let j = 0; j <= i; j++) {
      const share = chosen[i * blocks + j] / rows[i];
      // white (never chosen, a light grey cell) to deep blue (every query of the block chose it); the own block darkest
      c.fillStyle = j === i ? "#0b2a5b" : share === 0 ? "#eef0f3" : `hsl(215 70% ${Math.round(92 - share * 55)}%)`;
      c.fillRect(j * size, i * size, size, size);
    }
  }
  // the described cell, outlined (hover or arrow keys)
  c.strokeStyle = "#f0a500";
  c.lineWidth = 2;
  c.strokeRect(focus.j * size + 1, focus.i * size + 1, size - 2, size - 2);
  canvas.dataset.blocks = String(blocks);
}

function describe(i: number, j: number): void {
  focus = { i, j };
  const { blocks, rows, chosen, score } = gating;
  const at = i * blocks + j;
  cell.textContent =
    j > i
      ? `query block ${i}, key block ${j}: in the future (causal mask)`
      : j === i
        ? `query block ${i}, its own block: always attended (causally)`
        : `query block ${i}, key block ${j}: chosen by ${chosen[at]} of ${rows[i]} queries; ` +
          `mean gate score q·mean(K) ${score[at].toFixed(2)} (the row's best past block: ${Math.max(
            ...score.subarray(i * blocks, i * blocks + i),
          ).toFixed(2)})`;
  draw();
}

function showHead(): void {
  gating = gatingOf(Number(headSelect.value));
  const { tokens, blockSize, topK } = last;
  const share = attendedKeys([0, tokens], blockSize, topK) / attendedKeys([0, tokens], blockSize, Infinity);
  byId("share").textContent = `MoBA attended ${(share * 100).toFixed(1)}% of the causal mask (${gating.blocks} blocks of ${blockSize}).`;
  describe(Math.min(focus.i, gating.blocks - 1), Math.min(focus.j, gating.blocks - 1));
}

async function run(tokens: number, blockSize: number, topK: number): Promise<void> {
  const [backend] = await backendReady;
  const { q, k, v } = randomInputs(SEED, tokens, Q_HEADS, KV_HEADS, HEAD_DIM);
  plantTopics({ tokens, qHeads: Q_HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM, blockSize, topK, seed: SEED }, q.data, k.data);
  const inputs = { q, k, v };
  status.textContent = `Running on ${backend}…`;
  const [moba, mobaMs] = await timed(() => mobaAttention(inputs, { blockSize, topK, backend }));
  const [, fullMs] = await timed(() => flashAttention(inputs, { backend }));
  const mobaKeys = attendedKeys([0, tokens], blockSize, topK);
  const fullKeys = attendedKeys([0, tokens], blockSize, Infinity);
  const row = (name: string, ms: number, keys: number) =>
    `<tr><td>${name}</td><td>${ms.toFixed(1)}</td><td>${(fullMs / ms).toFixed(2)}×</td><td>${(keys / tokens).toFixed(0)}</td></tr>`;
  byId("times").innerHTML = row("full", fullMs, fullKeys) + row("MoBA", mobaMs, mobaKeys);
  byId("ideal").textContent = `Ideal ratio (keys read by full / by MoBA): ${(fullKeys / mobaKeys).toFixed(2)}×`;

  const reference = byId<HTMLParagraphElement>("reference");
  delete reference.dataset.error;
  if (tokens <= REFERENCE_TOKENS) {
    status.textContent = "Checking against the float64 reference…";
    await new Promise((resolve) => setTimeout(resolve)); // let the page paint first
    const problem = { tokens, qHeads: Q_HEADS, kvHeads: KV_HEADS, headDim: HEAD_DIM, cuSeqlens: [0, tokens], blockSize, topK };
    const ref = referenceForward({ ...problem, scale: 1 / Math.sqrt(HEAD_DIM) }, q.data, k.data, v.data);
    const error = Math.max(relativeError(moba.out.data, ref.out), relativeError(moba.lse.data, ref.lse));
    reference.dataset.error = String(error);
    reference.className = error <= 1e-5 ? "ok" : "bad";
    reference.textContent =
      `MoBA vs the float64 reference: max norm-wise relative error (out, lse) ${error.toExponential(1)} ` +
      (error <= 1e-5 ? "✓ within 1e-5" : "✗ above 1e-5");
  } else {
    reference.className = "note";
    reference.textContent = `The float64 reference check runs up to ${REFERENCE_TOKENS} tokens.`;
  }
  last = { q: q.data, k: k.data, routing: moba.routing, tokens, blockSize, topK };
  showHead();
}

headSelect.innerHTML = Array.from({ length: Q_HEADS }, (_, h) => `<option value="${h}">${h}</option>`).join("");
headSelect.addEventListener("change", () => last && showHead());

canvas.addEventListener("mousemove", (event) => {
  if (!gating) return;
  const size = canvas.getBoundingClientRect().width / gating.blocks;
  const clamp = (x: number) => Math.min(gating.blocks - 1, Math.max(0, Math.floor(x / size)));
  describe(clamp(event.offsetY), clamp(event.offsetX));
});
canvas.addEventListener("keydown", (event) => {
  if (!gating) return;
  const step: Record<string, [number, number]> = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
  if (!(event.key in step)) return;
  event.preventDefault();
  const [di, dj] = step[event.key];
  const clamp = (x: number) => Math.min(gating.blocks - 1, Math.max(0, x));
  describe(clamp(focus.i + di), clamp(focus.j + dj));
});

byId<HTMLFormElement>("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  const value = (id: string) => Number(byId<HTMLInputElement>(id).value);
  const button = byId<HTMLButtonElement>("run");
  button.disabled = true;
  document.body.dataset.state = "running";
  run(value("tokens"), value("blockSize"), value("topK"))
    .then(() => {
      status.textContent = "Done.";
      document.body.dataset.state = "done";
    })
    .catch((error: unknown) => {
      status.textContent = `Error: ${error instanceof Error ? error.message : String(error)}`;
      document.body.dataset.state = "error";
    })
    .finally(() => (button.disabled = false));
});
