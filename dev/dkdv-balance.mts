// How evenly the dk/dv kernel's work spreads over the GPU, predicted on the CPU: the bench-train
// model's attention (8 query / 4 kv heads of 64, block 512 / top-3, random inputs as the harnesses
// use, routed by the CPU gate), each key tile's work counted in chunks of 32 queries (its own block's
// queries from its first key, then every round's routed queries, for both query heads of its kv head;
// plus about two chunks for gathering Kᵀ, Vᵀ and writing dK, dV), then list-scheduled in the order
// the GPU is given the tiles (keyTiles) and longest first onto SLOTS workgroups at once (132 SMs x 8
// resident workgroups by default). Prints each schedule's length against the ideal (total / SLOTS).
// Usage: node --import tsx dev/dkdv-balance.mts [TOKENS] [KEYS] [SLOTS]
import { blockMeans, blockOffsets, forEachRoute, pastPerQuery, routeAll } from "../src/attention/blocks.js";
import { keyTiles, plan } from "../src/webgpu/attention/plan.js";
import { makeCase, problemOf } from "../test/helpers.js";

const [T, KEYS, SLOTS] = [32768, 32, 1056].map((fallback, i) => Number(process.argv[2 + i] ?? fallback));
const [qHeads, kvHeads, QUERIES] = [8, 4, 32];
const c = makeCase(7, { cuSeqlens: [0, T], qHeads, kvHeads, headDim: 64, blockSize: 512, topK: 3 });
const p = problemOf(c, "f16");
const offsets = blockOffsets(p);
const width = pastPerQuery(p);
const past = new Int32Array(T * qHeads * width);
routeAll(p, c.q.data, blockMeans(p, c.k.data, offsets), offsets, past);
const pl = plan(p);
const counts = new Int32Array(width * qHeads * pl.blocks); // routed queries by (round, head, block)
forEachRoute(p, past, offsets, (_t, h, r, G) => counts[(r * qHeads + h) * pl.blocks + G]++);
const tiles = keyTiles(pl, KEYS);
const work: number[] = [];
for (let i = 0; i < tiles.count; i++) {
  const [, , keyStart, , g, , naturalEnd, G] = tiles.words.subarray(8 * i, 8 * i + 8);
  let chunks = 2;
  for (let h = g * (qHeads / kvHeads); h < (g + 1) * (qHeads / kvHeads); h++) {
    chunks += Math.ceil((naturalEnd - keyStart) / QUERIES);
    for (let r = 0; r < width; r++) chunks += Math.ceil(counts[(r * qHeads + h) * pl.blocks + G] / QUERIES);
  }
  work.push(chunks);
}
/** The schedule's length: each tile, in `order`, to the slot free first. */
function schedule(order: number[]): number {
  const busyUntil = new Float64Array(SLOTS);
  let length = 0;
  for (const i of order) {
    let s = 0;
    for (let j = 1; j < SLOTS; j++) if (busyUntil[j] < busyUntil[s]) s = j;
    busyUntil[s] += work[i];
    length = Math.max(length, busyUntil[s]);
  }
  return length;
}
const total = work.reduce((a, b) => a + b, 0);
const ideal = total / SLOTS;
const order = work.map((_, i) => i);
const sorted = work.slice().sort((a, b) => a - b);
console.log(
  `${T} tokens, ${KEYS}-key tiles: ${tiles.count} tiles of ${sorted[0]}-${sorted[sorted.length - 1]} chunks (median ${sorted[sorted.length >> 1]}), ${total} in all`,
);
for (const [name, length] of [
  ["as given (keyTiles)", schedule(order)],
  ["longest first", schedule(order.slice().sort((a, b) => work[b] - work[a]))],
] as const)
  console.log(`${SLOTS} slots, ${name}: ${length.toFixed(0)} chunks, ${(length / ideal).toFixed(2)}x the ideal ${ideal.toFixed(0)}`);
