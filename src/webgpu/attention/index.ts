// The WebGPU backend of MoBA and full attention. Entry points: gpuForward / gpuBackward (host
// arrays in and out, split into head groups where a tensor outgrows one storage binding), and
// forwardOnGpu / backwardOnGpu (buffers that stay on the GPU, for the model and the benchmarks).
// The passes: plan.ts (geometry, tiles, tile shapes), paths.ts (float32 or tensor-core kernel per
// pass), routing.ts (routing, rounds of tiles), f16.ts (f16 copies), forward.ts, backward.ts; each
// kernel's WGSL and kernel object in a *.wgsl.ts file beside them.
import { pastPerQuery } from "../../attention/blocks.js";
import type { AttentionProblem } from "../../attention/problem.js";
import { MobaError } from "../../tensor.js";
import { checked, getDevice, type MobaDevice } from "../device.js";
import { Buffers, readBack } from "../kernel.js";
import { backwardOnGpu } from "./backward.js";
import { forwardOnGpu } from "./forward.js";

export { backwardOnGpu, backwardReadsHalf, type GpuGradients } from "./backward.js";
export { halfTiled } from "./f16.js";
export { forwardOnGpu, type GpuForwardResult, type GpuTensors } from "./forward.js";

const f32 = (b: ArrayBuffer) => new Float32Array(b);

/** How many head groups keep every tensor of a call within one storage binding (kv heads split evenly). */
export function headGroups(gpu: MobaDevice, p: AttentionProblem): number {
  const rowBytes = p.tokens * p.headDim * 4; // one head of q, out or dq
  for (let groups = 1; groups <= p.kvHeads; groups++) {
    if (p.kvHeads % groups === 0 && rowBytes * (p.qHeads / groups) <= gpu.maxStorageBinding) return groups;
  }
  throw new MobaError(
    `webgpu: the ${p.qHeads / p.kvHeads} query heads of one kv head need ${rowBytes * (p.qHeads / p.kvHeads)} bytes (${p.tokens} tokens x headDim ${p.headDim}), ` +
      `more than one storage binding allows (${gpu.maxStorageBinding}); pass fewer tokens per call`,
  );
}

type Rows = Float32Array | Int32Array;

/** Heads [h0, h0 + count) of a [tokens, heads, row] array, as [tokens, count, row]. */
function sliceHeads<T extends Rows>(data: T, tokens: number, heads: number, row: number, h0: number, count: number): T {
  const out = new (data.constructor as new (n: number) => T)(tokens * count * row);
  for (let t = 0; t < tokens; t++) out.set(data.subarray((t * heads + h0) * row, (t * heads + h0 + count) * row), t * count * row);
  return out;
}

/** Writes a [tokens, count, row] part back into heads [h0, h0 + count) of a [tokens, heads, row] array. */
function placeHeads(into: Rows, part: Rows, tokens: number, heads: number, row: number, h0: number, count: number): void {
  for (let t = 0; t < tokens; t++) into.set(part.subarray(t * count * row, (t + 1) * count * row), (t * heads + h0) * row);
}

/**
 * Runs `run` once per head group when the inputs exceed one storage binding (heads are independent,
 * so each group is a smaller problem), gathering each group's inputs and scattering its outputs.
 * inputs/outputs: name -> [array, heads per token (q or kv), row length].
 */
async function byHeadGroups<O extends Record<string, Rows>>(
  gpu: MobaDevice,
  p: AttentionProblem,
  inputs: [Rows, "q" | "kv", number][],
  outputs: { [K in keyof O]: readonly ["q" | "kv", number, O[K]] },
  run: (sub: AttentionProblem, parts: Rows[]) => Promise<O>,
): Promise<O> {
  const groups = headGroups(gpu, p);
  if (groups === 1)
    return run(
      p,
      inputs.map(([x]) => x),
    );
  const heads = { q: p.qHeads, kv: p.kvHeads };
  const per = { q: p.qHeads / groups, kv: p.kvHeads / groups };
  const sub = { ...p, qHeads: per.q, kvHeads: per.kv };
  for (let i = 0; i < groups; i++) {
    const parts = inputs.map(([x, kind, row]) => sliceHeads(x, p.tokens, heads[kind], row, i * per[kind], per[kind]));
    const result = await run(sub, parts);
    for (const name of Object.keys(outputs) as (keyof O)[]) {
      const [kind, row, into] = outputs[name];
      placeHeads(into, result[name], p.tokens, heads[kind], row, i * per[kind], per[kind]);
    }
  }
  return Object.fromEntries(Object.entries(outputs).map(([name, [, , into]]) => [name, into])) as O;
}

export async function gpuForward(
  p: AttentionProblem,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
): Promise<{ out: Float32Array; lse: Float32Array; past: Int32Array; width: number }> {
  const gpu = await getDevice();
  const width = pastPerQuery(p);
  const { tokens, qHeads, headDim: D } = p;
  const outputs = {
    out: ["q", D, new Float32Array(q.length)],
    lse: ["q", 1, new Float32Array(tokens * qHeads)],
    past: ["q", width, new Int32Array(tokens * qHeads * width)],
  } as const;
  const r = await byHeadGroups(
    gpu,
    p,
    [
      [q, "q", D],
      [k, "kv", D],
      [v, "kv", D],
    ],
    outputs,
    (sub, [q, k, v]) => {
      const mem = new Buffers(gpu);
      return checked(gpu, "MoBA forward", mem, async () => {
        const t = { q: mem.storage(q, "q"), k: mem.storage(k, "k"), v: mem.storage(v, "v") };
        const r = await forwardOnGpu(mem, sub, t);
        const [out, lse, routing] = await readBack(gpu, [
          { buffer: r.out, bytes: q.byteLength },
          { buffer: r.lse, bytes: sub.tokens * sub.qHeads * 4 },
          { buffer: r.routed?.routing ?? r.lse, bytes: r.routed ? sub.tokens * sub.qHeads * width * 4 : 0 },
        ]);
        return { out: f32(out), lse: f32(lse), past: new Int32Array(routing) };
      });
    },
  );
  return { ...r, width };
}

export async function gpuBackward(
  p: AttentionProblem,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  out: Float32Array,
  lse: Float32Array,
  dout: Float32Array,
  past?: Int32Array,
): Promise<{ dq: Float32Array; dk: Float32Array; dv: Float32Array }> {
  const gpu = await getDevice();
  const D = p.headDim;
  const width = pastPerQuery(p);
  const inputs: [Rows, "q" | "kv", number][] = [
    [q, "q", D],
    [k, "kv", D],
    [v, "kv", D],
    [out, "q", D],
    [lse, "q", 1],
    [dout, "q", D],
  ];
  if (past) inputs.push([past, "q", width]);
  const outputs = {
    dq: ["q", D, new Float32Array(q.length)],
    dk: ["kv", D, new Float32Array(k.length)],
    dv: ["kv", D, new Float32Array(v.length)],
  } as const;
  return byHeadGroups(gpu, p, inputs, outputs, (sub, [q, k, v, out, lse, dout, past]) => {
    const mem = new Buffers(gpu);
    return checked(gpu, "MoBA backward", mem, async () => {
      const t = { q: mem.storage(q, "q"), k: mem.storage(k, "k"), v: mem.storage(v, "v") };
      const g = await backwardOnGpu(
        mem,
        sub,
        t,
        mem.storage(out, "out"),
        mem.storage(lse, "lse"),
        mem.storage(dout, "dout"),
        null,
        past as Int32Array | undefined,
      );
      const [dq, dkdv] = await readBack(gpu, [
        { buffer: g.dq, bytes: q.byteLength },
        { buffer: g.dkdv, bytes: 2 * k.byteLength },
      ]);
      return { dq: f32(dq), dk: new Float32Array(dkdv, 0, k.length), dv: new Float32Array(dkdv, k.byteLength, k.length) };
    });
  });
}
