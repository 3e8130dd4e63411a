// Back-to-back timing of the CPU attention of two builds of the package (e.g. a copy of dist/ from
// before a change, and dist/ now): forward and forward + backward, MoBA and full, alternating
// builds so that both see the same load on a shared machine. Wall clock and the process's CPU time
// (all threads; robust to other processes taking the cores) are both printed, then per build the best
// and the median run and MoBA's forward speedup over full attention.
//   node --import tsx dev/ab-attention.mts BEFORE_DIST AFTER_DIST [TOKENS] [RUNS]   (defaults 16384, 1)
// bench's settings: 1 head, headDim 64, MoBA block 512 / top-3, full attention in 64-key tiles.
import { cpus } from "node:os";
import { median } from "../src/run/util.ts";
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";

type Cpu = typeof import("../src/cpu/index.js");
const [before, after] = process.argv.slice(2, 4).map((dir) => resolve(dir));
const T = Number(process.argv[4] ?? 16384),
  runs = Number(process.argv[5] ?? 1),
  D = 64;
const builds: [string, Cpu][] = [];
for (const [name, dir] of [
  ["before", before],
  ["after", after],
])
  builds.push([name, (await import(pathToFileURL(`${dir}/cpu/index.js`).href)) as Cpu]);

const values = (n: number, seed: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.618 + seed));
const q = values(T * D, 1),
  k = values(T * D, 2),
  v = values(T * D, 3),
  dout = values(T * D, 4);

async function time(cpu: Cpu, kind: "moba" | "full") {
  const p = {
    tokens: T,
    qHeads: 1,
    kvHeads: 1,
    headDim: D,
    scale: 1 / 8,
    blockSize: kind === "full" ? 64 : 512,
    topK: kind === "full" ? Infinity : 3,
    cuSeqlens: Int32Array.of(0, T),
  };
  const c0 = process.cpuUsage(),
    t0 = performance.now();
  const f = await cpu.cpuForward(p, q, k, v);
  const c1 = process.cpuUsage(c0),
    t1 = performance.now();
  await cpu.cpuBackward(p, q, k, v, f.out, f.lse, dout, f.width > 0 ? f.past : undefined);
  const c2 = process.cpuUsage(c0),
    t2 = performance.now();
  const ms = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;
  return { fwd: t1 - t0, train: t2 - t0, fwdCpu: ms(c1), trainCpu: ms(c2) };
}

console.log(`ab-attention: ${T} tokens, ${cpus()[0]?.model} x${cpus().length}, node ${process.version}; before ${before}, after ${after}`);
for (const [, cpu] of builds) await time(cpu, "moba"); // warm-up: workers, JIT
const seen = new Map<string, Awaited<ReturnType<typeof time>>[]>();
for (let run = 0; run < runs; run++) {
  for (const kind of ["moba", "full"] as const) {
    for (const [name, cpu] of builds) {
      const r = await time(cpu, kind);
      seen.set(`${kind} ${name}`, [...(seen.get(`${kind} ${name}`) ?? []), r]);
      console.log(
        `${kind} ${name}: fwd ${r.fwd.toFixed(0)} ms (cpu ${r.fwdCpu.toFixed(0)}), fwd+bwd ${r.train.toFixed(0)} ms (cpu ${r.trainCpu.toFixed(0)})`,
      );
    }
  }
}
// per build: the best and the median run of each kind, and MoBA's forward speedup over full attention
// (best runs: the least disturbed on a shared machine)
const best = (key: string, field: "fwd" | "train" | "fwdCpu") => Math.min(...seen.get(key)!.map((r) => r[field]));
const middle = (key: string, field: "fwd" | "train" | "fwdCpu") => median(seen.get(key)!.map((r) => r[field]));
for (const [name] of builds) {
  const line = (f: typeof best) =>
    `MoBA fwd ${f(`moba ${name}`, "fwd").toFixed(0)} (cpu ${f(`moba ${name}`, "fwdCpu").toFixed(0)}), full fwd ${f(`full ${name}`, "fwd").toFixed(0)} (cpu ${f(`full ${name}`, "fwdCpu").toFixed(0)}): ${(f(`full ${name}`, "fwd") / f(`moba ${name}`, "fwd")).toFixed(2)}x (cpu ${(f(`full ${name}`, "fwdCpu") / f(`moba ${name}`, "fwdCpu")).toFixed(2)}x); fwd+bwd MoBA ${f(`moba ${name}`, "train").toFixed(0)}, full ${f(`full ${name}`, "train").toFixed(0)}`;
  console.log(`${name}, best of ${runs}: ${line(best)}`);
  console.log(`${name}, median of ${runs}: ${line(middle)}`);
}
