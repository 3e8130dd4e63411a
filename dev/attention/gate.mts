// The gate's harness (harness.mts: cases, timing, table): numbered versions of MoBA's gate (each
// query's top-(topK - 1) past blocks by q · block key sum, and the histogram of its choices), each
// checked against float64 and timed on `moba bench`'s MoBA shapes. The gate runs alone here: the
// block key sums come from the host, routing is poisoned first (so an unwritten choice shows).
// Usage: node --import tsx dev/attention/gate.mts [VERSION,...]    (default: all)
//
// Versions (src/webgpu/attention/gate.wgsl.ts, its shape set by routing.ts's gateShape):
//   1: src/'s gate: q read as vec4 rows where headDim is a multiple of 4 (else as version 2 does)
//   2: q read one element at a time (the path for headDim not a multiple of 4)
import { blockMeans, forEachRoute } from "../../src/attention/blocks.js";
import type { AttentionProblem } from "../../src/attention/problem.js";
import type { GateShape } from "../../src/webgpu/attention/gate.wgsl.js";
import { plan, type Plan } from "../../src/webgpu/attention/plan.js";
import { gateShape, recordGate, type GateBuffers } from "../../src/webgpu/attention/routing.js";
import { checked, type MobaDevice } from "../../src/webgpu/device.js";
import { Buffers, readBack } from "../../src/webgpu/kernel.js";
import { type Case, problemOf, referenceProblem, replayRouting } from "../../test/helpers.js";
import { CHECKS, describeCase, device, gpuTime, report, shapes, type Timing, wantedVersions } from "./harness.mts";

const VERSIONS: Record<number, (pl: Plan) => GateShape> = {
  1: gateShape,
  2: (pl) => ({ ...gateShape(pl), vec4Rows: false }),
};
/** What an unwritten routing entry holds: the NaN bits Buffers.poisoned fills with. */
const POISON = 0x7fc00000;

/** The gate's buffers for a case: q, the block key sums (float64 on the host, stored as f32), routing poisoned, counts zero. */
function gateBuffers(mem: Buffers, c: Case, pl: Plan): GateBuffers {
  const p = pl.p;
  const means = blockMeans(p, c.k.data, pl.offsets);
  const sums = new Float32Array(means.length);
  const row = p.kvHeads * p.headDim; // one block's sums
  for (let G = 0; G < pl.blocks; G++)
    for (let i = 0; i < row; i++) sums[G * row + i] = means[G * row + i] * (pl.blockEnd[G] - pl.blockStart[G]);
  return {
    cu: mem.storage(Uint32Array.from(p.cuSeqlens), "cuSeqlens"),
    offsets: mem.storage(Uint32Array.from(pl.offsets), "block offsets"),
    q: mem.storage(c.q.data, "q"),
    sums: mem.storage(sums, "block sums"),
    routing: mem.poisoned(p.tokens * p.qHeads * pl.width, "routing"),
    counts: mem.storage(pl.width * p.qHeads * pl.blocks * 4, "segment counts"),
  };
}

/** FLOPs of the scores: 2 · headDim per (query, past block) of every query that chooses (one past its first width + 1 blocks). */
function gateFlops(p: AttentionProblem, width: number): number {
  let pairs = 0;
  for (let b = 0; b + 1 < p.cuSeqlens.length; b++) {
    const length = p.cuSeqlens[b + 1] - p.cuSeqlens[b];
    for (let i = width + 1; i * p.blockSize < length; i++) pairs += Math.min(p.blockSize, length - i * p.blockSize) * i;
  }
  return 2 * p.headDim * p.qHeads * pairs;
}

/**
 * Checks a version on every MoBA case: every query's choice is a top-(topK - 1) of the float64
 * scores in ascending order (replayRouting), no entry it must write is left poisoned, and the counts
 * are the histogram of the choices. Returns the table's text.
 */
async function check(gpu: MobaDevice, version: number): Promise<string> {
  let failed = false;
  for (const c of CHECKS.filter((c) => c.topK !== Infinity)) {
    const pl = plan(problemOf(c, "f32"));
    const shape = VERSIONS[version](pl);
    if (shape.vec4Rows && c.headDim % 4 !== 0) {
      console.log(
        JSON.stringify({ kernel: "gate", version, check: describeCase(c), skipped: `headDim ${c.headDim} is not a multiple of 4` }),
      );
      continue;
    }
    const mem = new Buffers(gpu);
    const [routing, counts] = await checked(gpu, "gate check", mem, async () => {
      const b = gateBuffers(mem, c, pl);
      const encoder = gpu.device.createCommandEncoder();
      await recordGate(mem, encoder, pl, b, shape);
      gpu.device.queue.submit([encoder.finish()]);
      const entries = c.tokens * c.qHeads * pl.width;
      const read = await readBack(gpu, [
        { buffer: b.routing, bytes: entries * 4 },
        { buffer: b.counts, bytes: pl.width * c.qHeads * pl.blocks * 4 },
      ]);
      return [new Int32Array(read[0]), new Uint32Array(read[1])];
    });
    const failures: string[] = [];
    let unwritten = 0;
    forEachRoute(pl.p, routing, pl.offsets, (t, h, r) => (unwritten += routing[(t * c.qHeads + h) * pl.width + r] === POISON ? 1 : 0));
    if (unwritten > 0) failures.push(`${unwritten} routing entries unwritten`);
    else {
      // the replay checks each (sequence, head) as the reference asks for its selection
      const select = replayRouting(c, { data: routing, shape: [c.tokens, c.qHeads, pl.width] }, failures);
      for (let s = 0; s + 1 < c.cuSeqlens.length; s++)
        for (let h = 0; h < c.qHeads; h++)
          select(referenceProblem(c), c.q.data, c.k.data, c.cuSeqlens[s], c.cuSeqlens[s + 1] - c.cuSeqlens[s], h);
      const histogram = new Uint32Array(counts.length);
      forEachRoute(pl.p, routing, pl.offsets, (_t, h, r, G) => histogram[(r * c.qHeads + h) * pl.blocks + G]++);
      const wrong = histogram.filter((n, i) => n !== counts[i]).length;
      if (wrong > 0) failures.push(`${wrong} of ${counts.length} counts differ from the routing's histogram`);
    }
    failed ||= failures.length > 0;
    console.log(JSON.stringify({ kernel: "gate", version, check: describeCase(c), shape, unwritten, failures: failures.length }));
    for (const f of failures.slice(0, 3)) console.log(`FAIL version ${version}: ${describeCase(c)}: ${f}`);
  }
  return failed ? "FAIL" : "ok";
}

const gpu = await device();
const versions = wantedVersions(VERSIONS);
const checks = new Map<number, string>();
for (const v of versions) checks.set(v, await check(gpu, v));
const timings: Timing[] = [];
const legend = new Map(versions.map((v) => [v, new Set<string>()]));
for (const { name, case: c } of shapes()) {
  if (c.topK === Infinity) continue; // full attention has no gate
  const pl = plan(problemOf(c, "f32"));
  const held = new Buffers(gpu);
  const b = gateBuffers(held, c, pl);
  for (const version of versions) {
    const shape = VERSIONS[version](pl);
    const call = async () => {
      const encoder = gpu.device.createCommandEncoder();
      await recordGate(held, encoder, pl, b, shape); // counts keep adding up: their values do not matter here
      gpu.device.queue.submit([encoder.finish()]);
    };
    const ms = await gpuTime(gpu, call, /^gate$/);
    const gflop = gateFlops(pl.p, pl.width) / 1e9;
    const srcDefault = JSON.stringify(shape) === JSON.stringify(gateShape(pl));
    legend.get(version)!.add(`gate ${JSON.stringify(shape)}`);
    timings.push({ version, shape: name, gflop, ms, tflops: gflop / ms, tensorCores: false, srcDefault });
    const { tokens, qHeads, kvHeads, headDim, blockSize, topK } = c;
    console.log(
      JSON.stringify({
        kernel: "gate",
        version,
        shape: name,
        tokens,
        qHeads,
        kvHeads,
        headDim,
        blockSize,
        topK,
        gate: shape,
        srcDefault,
        ms,
        gflop,
        tflops: gflop / ms,
        check: checks.get(version),
      }),
    );
  }
  held.destroy();
}
report("gate", gpu, timings, checks, legend);
process.exit(0);
