// Where the CPU attention's time goes, MoBA beside full attention, on `moba bench`'s input (1 head,
// headDim 64, MoBA block 512 / top-3, full attention in 64-key tiles). On one thread (forwardUnits,
// backwardUnits): every WebAssembly kernel call timed through the module's exports, by kind — the
// gate (block means; scores and top-k), K and V packed, the tiles of past blocks (MoBA: the routed
// ones) and of the causal diagonal — and what is left, JavaScript: q, k, v copied into the module,
// the walk (units, buckets), out and lse (dk, dv, dq) written back; the backward's inverted index on
// its own. Then the whole call (cpuForward, cpuBackward) on 1 thread and on all: wall time and each
// thread's CPU time (Linux), what the pool costs and what it gains. Each number is the best of RUNS
// (the machine is shared: the best run is the one least disturbed).
//   node --import tsx dev/profile-attention-cpu.mts [TOKENS] [RUNS] [BLOCK] [SEQUENCE] [Q_HEADS] [KV_HEADS]
// defaults 16384 3 512 TOKENS 1 1 (bench's); the tour's attention: 1024 3 64 512 2 1 (sequences of SEQUENCE tokens)
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { cpus } from "node:os";
import { blockOffsets, invertRouting, pastPerQuery } from "../src/attention/blocks.ts";
import { type AttentionProblem, fullProblem, mobaProblem } from "../src/attention/problem.ts";
import { backwardUnits, forwardSpan, forwardUnits, listUnits } from "../src/cpu/attention.ts";
import { cpuBackward, cpuForward } from "../src/cpu/index.ts";
import { cores } from "../src/cpu/pool.ts";
import { simd, SimdKernels } from "../src/cpu/simd.ts";
import { randomInputs, table } from "../src/run/util.ts";
import { type OpTimes, timedBackend } from "./timed-backend.mts";

const arg = (i: number, otherwise: number) => Number(process.argv[2 + i] ?? otherwise);
const [T, runs, blockSize] = [arg(0, 16384), arg(1, 3), arg(2, 512)];
const [sequence, qHeads, kvHeads] = [arg(3, T), arg(4, 1), arg(5, 1)];
if (!simd) throw new Error("no WebAssembly SIMD here (or MOBA_SIMD=off): nothing to profile");
const threads = await cores();
const { q, k, v, dout } = randomInputs(T, T, qHeads, kvHeads, 64);
const cuSeqlens = Array.from({ length: Math.ceil(T / sequence) + 1 }, (_, i) => Math.min(T, i * sequence));
const inputs = { q, k, v, cuSeqlens };

// the kernels' calls by kind (the tiles split into routed / past blocks and the causal diagonal); `rows`
// sums the query rows the tiles were given
const kernelTimes: OpTimes = new Map();
const tileRows = new Map<string, number>();
const kindOf = (op: string, args: unknown[]) => {
  if (op === "attendForward" || op === "attendBackward") {
    const diagonal = op === "attendForward" ? args[8] === 1 : (args[13] as number) >= 0;
    const key = `${op === "attendForward" ? "forward" : "backward"} tiles, ${diagonal ? "diagonal" : "past blocks"}`;
    tileRows.set(key, (tileRows.get(key) ?? 0) + (args[0] as number));
    return key;
  }
  return { route: "gate: scores, top-k (route)", blockMeans: "gate: block means", packPanel: "K, V packed (packPanel)" }[op] ?? op;
};
// (a copy: the exports object is frozen, and a proxy must return a frozen property as it is)
const timed = new SimdKernels(timedBackend({ ...simd.exports }, kernelTimes, undefined, kindOf), simd.variant, simd.memory);

/** CPU ms of each thread of this process (Linux: /proc/self/task), by thread id. */
function threadCpu(): Map<string, number> {
  const tasks = existsSync("/proc/self/task") ? readdirSync("/proc/self/task") : [];
  return new Map(
    tasks.map((id) => {
      const fields = readFileSync(`/proc/self/task/${id}/stat`, "utf8").split(") ")[1].split(" ");
      return [id, (Number(fields[11]) + Number(fields[12])) * (1000 / 100)]; // utime + stime, in 1/100 s
    }),
  );
}

/** The best of `runs` calls of `run` on one thread: its wall ms, and each kernel's ms, calls and rows in that run. */
async function profile(run: () => void): Promise<{ ms: number; kernels: Map<string, { ms: number; calls: number; rows: number }> }> {
  let best = { ms: Infinity, kernels: new Map<string, { ms: number; calls: number; rows: number }>() };
  for (let r = 0; r < runs; r++) {
    kernelTimes.clear();
    tileRows.clear();
    const t0 = performance.now();
    run();
    const ms = performance.now() - t0;
    if (ms < best.ms) best = { ms, kernels: new Map([...kernelTimes].map(([key, t]) => [key, { ...t, rows: tileRows.get(key) ?? 0 }])) };
  }
  return best;
}

/** The best wall ms of `runs` calls, with the CPU ms of the calling thread and of the others in that run. */
async function withThreads(run: () => Promise<unknown>): Promise<string[]> {
  let best = { wall: Infinity, main: 0, others: [] as number[] };
  const main = String(process.pid);
  for (let r = 0; r < runs; r++) {
    const before = threadCpu();
    const t0 = performance.now();
    await run();
    const wall = performance.now() - t0;
    const spent = [...threadCpu()].map(([id, ms]) => [id, ms - (before.get(id) ?? 0)] as const).filter(([, ms]) => ms > 0);
    if (wall < best.wall)
      best = { wall, main: spent.find(([id]) => id === main)?.[1] ?? 0, others: spent.filter(([id]) => id !== main).map(([, ms]) => ms) };
  }
  return [
    best.wall.toFixed(1),
    "",
    `CPU: calling thread ${best.main.toFixed(0)} ms, others ${best.others.map((x) => x.toFixed(0)).join(" + ") || 0} ms`,
  ];
}

const rows: string[][] = [];
function phases(
  name: string,
  pass: string,
  r: { ms: number; kernels: Map<string, { ms: number; calls: number; rows: number }> },
  extra: [string, number][],
) {
  const total = r.ms + extra.reduce((a, [, ms]) => a + ms, 0);
  const add = (phase: string, ms: number, note = "") =>
    rows.push([name, phase, ms.toFixed(1), `${((100 * ms) / total).toFixed(0)}%`, note]);
  let rest = r.ms;
  for (const [phase, ms] of extra) add(phase, ms);
  for (const [kind, t] of [...r.kernels].filter(([kind]) => !kind.endsWith("Bytes")).sort((a, b) => b[1].ms - a[1].ms)) {
    add(kind, t.ms, `${t.calls} calls${t.rows ? `, ${(t.rows / t.calls).toFixed(0)} rows each` : ""}`);
    rest -= t.ms;
  }
  add("JavaScript: copies in, the walk, results out", rest);
  rows.push([name, `${pass}, 1 thread`, total.toFixed(1), "100%", ""]);
}

for (const [name, p] of [
  ["MoBA", mobaProblem(inputs, { blockSize, topK: 3 })],
  ["full", fullProblem(inputs)],
] as [string, AttentionProblem][]) {
  const all = pastPerQuery(p) === 0;
  const offsets = blockOffsets(p);
  const width = pastPerQuery(p);
  const span = forwardSpan(p, all);
  const forwardList = listUnits(p, p.qHeads, all, span).units;
  const arrays = {
    q: q.data,
    k: k.data,
    v: v.data,
    offsets,
    width,
    all,
    span,
    out: new Float32Array(q.data.length),
    lse: new Float32Array(T * qHeads),
    past: new Int32Array(T * qHeads * width),
  };
  // every unit in order, on this thread with the timed kernels
  const inOrder = (count: number) => {
    let u = 0;
    return () => (u < count ? u++ : -1);
  };
  phases(name, "forward", await profile(() => forwardUnits(p, arrays, forwardList, inOrder(forwardList.length / 3), timed)), []);

  const past = arrays.past;
  const backwardList = listUnits(p, p.kvHeads, all).units;
  const grads = {
    q: q.data,
    k: k.data,
    v: v.data,
    dout: dout.data,
    lse: arrays.lse,
    delta: new Float64Array(T * qHeads),
    offsets,
    inverted: all ? null : invertRouting(p, past, offsets),
    dq: new Float64Array(q.data.length),
    dk: new Float32Array(k.data.length),
    dv: new Float32Array(v.data.length),
  };
  const invert = (await profile(() => invertRouting(p, past, offsets))).ms;
  phases(
    name,
    "backward",
    await profile(() => backwardUnits(p, grads, backwardList, 0, backwardList.length / 3, timed)),
    all ? [] : [["inverted index", invert]],
  );

  // the whole calls, on 1 thread and on all of them
  const route = all ? undefined : past;
  for (const n of [1, threads]) {
    const label = `${n} thread${n > 1 ? "s" : ""}`;
    rows.push([name, `cpuForward, ${label}`, ...(await withThreads(() => cpuForward(p, q.data, k.data, v.data, n)))]);
    rows.push([
      name,
      `cpuBackward, ${label}`,
      ...(await withThreads(() => cpuBackward(p, q.data, k.data, v.data, arrays.out, arrays.lse, dout.data, route, n))),
    ]);
  }
}

console.log(
  `${T} tokens in sequences of ${sequence}, ${qHeads} / ${kvHeads} heads, headDim 64, MoBA block ${blockSize} / top-3, full in 64-key tiles; ${simd.variant} SIMD; best of ${runs}; ${cpus()[0]?.model} x${cpus().length}, ${threads} threads, node ${process.version}`,
);
console.log(table(["attention", "phase", "ms", "share", ""], rows));
process.exit(0);
