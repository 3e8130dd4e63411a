// MoBA's forward over union tiles against rounds of gathered tiles (and full attention), wall clock
// and GPU time by length, heads and head dim: what UNION_MAX_BLOCKS (src/webgpu/attention/plan.ts)
// is set from. Each MoBA row also states how far the two paths' outputs are apart (max |out_union -
// out_rounds|). Block 512, top-3, random inputs (so a tile's rows choose unlike blocks: the union's
// worst case); the bench rows (head dim 128, query heads = kv heads) and the training model's
// attention (8 query / 4 kv heads of 64, 4 sequences of 8K packed, as experiments/h200/ trains).
// Usage (device): node --import tsx dev/union-forward.mts [PRECISION]   (default f16)
import { fullProblem, mobaProblem, type Precision } from "../src/attention/problem.ts";
import { time } from "../src/run/benchGpu.ts";
import { median, seeded, table, uniformTensor } from "../src/run/util.ts";
import { forwardOnGpu } from "../src/webgpu/attention/forward.ts";
import { forwardPass } from "../src/webgpu/attention/paths.ts";
import { plan, UNION_LIMIT, unionTiles } from "../src/webgpu/attention/plan.ts";
import { getDevice } from "../src/webgpu/device.ts";
import { Buffers, readBack } from "../src/webgpu/kernel.ts";

const precision = (process.argv[2] ?? "f16") as Precision;
const RUNS = 20;
const WARM_UP_MS = 500;
// [sequences, tokens per sequence, query heads, kv heads, head dim]
const CASES: [number, number, number, number, number][] = [
  [1, 4096, 1, 1, 128],
  [1, 8192, 1, 1, 128],
  [1, 16384, 1, 1, 128],
  [1, 32768, 1, 1, 128],
  [1, 4096, 8, 8, 128],
  [1, 8192, 8, 8, 128],
  [1, 16384, 8, 8, 128],
  [4, 8192, 8, 4, 64],
  [1, 32768, 8, 4, 64],
];
const gpu = await getDevice();
console.log(`${gpu.adapterInfo}; precision ${precision}; median of ${RUNS} calls after ${WARM_UP_MS} ms`);
const rows: string[][] = [];
for (const [sequences, length, heads, kvHeads, headDim] of CASES) {
  const tokens = sequences * length;
  const r = seeded(tokens + heads);
  const [q, k, v] = [heads, kvHeads, kvHeads].map((n) => uniformTensor(r, [tokens, n, headDim], 1));
  const held = new Buffers(gpu);
  const t = { q: held.storage(q.data, "q"), k: held.storage(k.data, "k"), v: held.storage(v.data, "v") };
  const cuSeqlens = Array.from({ length: sequences + 1 }, (_, i) => i * length);
  const moba = mobaProblem({ q, k, v, cuSeqlens }, { blockSize: 512, topK: 3, precision });
  const full = fullProblem({ q, k, v, cuSeqlens }, { precision });
  const variants: [string, typeof moba, boolean | null][] = [["MoBA rounds", moba, false]];
  if (unionTiles(plan(moba), UNION_LIMIT, Infinity)) variants.push(["MoBA union", moba, true]);
  variants.push(["full", full, null]);
  const outs: Float32Array[] = [];
  const measured: Record<string, { wall: number; gpu: number }> = {};
  for (const [name, p, union] of variants) {
    const pass = union === null ? undefined : forwardPass(gpu, p, undefined, union);
    const call = async () => {
      const mem = new Buffers(gpu);
      const result = await forwardOnGpu(mem, p, t, undefined, mem, pass);
      return { mem, result };
    };
    const start = performance.now();
    do (await call()).mem.destroy();
    while (performance.now() - start < WARM_UP_MS);
    const walls: number[] = [];
    const gpus: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      let done!: Awaited<ReturnType<typeof call>>;
      const x = await time(gpu, async () => (done = await call()));
      walls.push(x.wall);
      gpus.push(x.gpu);
      if (i === 0 && union !== null) {
        const [out] = await readBack(gpu, [{ buffer: done.result.out, bytes: q.data.byteLength }]);
        outs.push(new Float32Array(out));
      }
      done.mem.destroy();
    }
    measured[name] = { wall: median(walls), gpu: median(gpus) };
  }
  held.destroy();
  let apart = 0;
  if (outs.length === 2) for (let i = 0; i < outs[0].length; i++) apart = Math.max(apart, Math.abs(outs[0][i] - outs[1][i]));
  const cell = (name: string) => (measured[name] ? `${measured[name].wall.toFixed(2)} (${measured[name].gpu.toFixed(2)})` : "-");
  const speedup = (name: string) => (measured[name] ? `${(measured.full.wall / measured[name].wall).toFixed(2)}x` : "-");
  rows.push([
    `${sequences > 1 ? `${sequences} x ` : ""}${length / 1024}K x ${heads}/${kvHeads} x ${headDim}`,
    String(plan(moba).blocks / sequences),
    cell("MoBA rounds"),
    cell("MoBA union"),
    cell("full"),
    speedup("MoBA rounds"),
    speedup("MoBA union"),
    outs.length === 2 ? apart.toExponential(1) : "-",
  ]);
  console.log(JSON.stringify({ sequences, length, heads, kvHeads, headDim, precision, ...measured, apart }));
}
console.log(
  table(
    [
      "case",
      "blocks a sequence",
      "MoBA rounds ms (GPU)",
      "MoBA union ms (GPU)",
      "full ms (GPU)",
      "rounds vs full",
      "union vs full",
      "max |diff| of out",
    ],
    rows,
  ),
);
process.exit(0);
