// `moba attention`: attention on tensors from a safetensors file, results to another.
import { flashAttention, flashAttentionBackward, mobaAttention, mobaAttentionBackward } from "../api.js";
import type { Backend, Precision } from "../attention/problem.js";
import { readSafetensors, serializeSafetensors, type TensorToWrite, toFloat32, toIntegers } from "../io/safetensors.js";
import { checkOutputPath, writeFileAtomic } from "../io/files.js";
import { MobaError, type Tensor } from "../tensor.js";

export interface AttentionFileOptions {
  input: string;
  output: string;
  blockSize: number;
  topK: number;
  full: boolean;
  scale?: number;
  backend: Backend;
  precision?: Precision;
}

export async function attentionFile(o: AttentionFileOptions): Promise<{ written: string[] }> {
  checkOutputPath(o.output, "--output"); // before the work, not after it
  const file = await readSafetensors(o.input);
  const load = (name: string): Tensor => {
    const t = file.tensors.get(name);
    if (!t) throw new MobaError(`${o.input}: missing tensor "${name}" (found: ${[...file.tensors.keys()].join(", ") || "none"})`);
    return { data: toFloat32(t, name), shape: t.shape };
  };
  const cu = file.tensors.get("cu_seqlens");
  const inputs = { q: load("q"), k: load("k"), v: load("v"), cuSeqlens: cu && toIntegers(cu, "cu_seqlens") };
  const options = { blockSize: o.blockSize, topK: o.topK, scale: o.scale, backend: o.backend, precision: o.precision };
  const fwd = o.full ? await flashAttention(inputs, options) : await mobaAttention(inputs, options);
  const f32 = (t: Tensor): TensorToWrite => ({ dtype: "F32", shape: t.shape, data: t.data });
  const tensors: Record<string, TensorToWrite> = { out: f32(fwd.out), lse: f32(fwd.lse) };
  if (file.tensors.has("dout")) {
    const bwd = { ...inputs, out: fwd.out, lse: fwd.lse, dout: load("dout"), routing: fwd.routing };
    const g = o.full ? await flashAttentionBackward(bwd, options) : await mobaAttentionBackward(bwd, options);
    Object.assign(tensors, { dq: f32(g.dq), dk: f32(g.dk), dv: f32(g.dv) });
  }
  const metadata = {
    attention: o.full ? "full" : "moba",
    ...(o.full ? {} : { block_size: String(o.blockSize), top_k: String(o.topK) }),
    scale: String(o.scale ?? 1 / Math.sqrt(inputs.q.shape[2])),
    backend: o.backend,
    precision: o.precision ?? "f32",
  };
  await writeFileAtomic(o.output, serializeSafetensors(tensors, metadata));
  return { written: Object.keys(tensors) };
}
