// The model backend on WebGPU: every tensor is a GPU buffer, every op a WGSL kernel recorded into
// one command encoder (submitted before an attention call, which submits its own work, before a
// read-back, and at the end of a scope). Weights, gradients and AdamW moments stay on the GPU
// across steps; a training step reads back only the loss and the gradient norm, at its end.
import { pastPerQuery } from "../attention/blocks.js";
import { type AttentionProblem, FULL_ATTENTION_TILE, type Precision } from "../attention/problem.js";
import type { AdamWScalars, AttentionCall, AttentionSaved, DecodeShape, DecoderWeights, ModelBackend } from "../backend.js";
import { MobaError } from "../tensor.js";
import { backwardOnGpu, backwardReadsHalf, forwardOnGpu, headGroups } from "./attention/index.js";
import { GpuDecoder } from "./decode.js";
import { checked, getDevice, type MobaDevice } from "./device.js";
import { type GemmCall, recordGemm } from "./gemm/index.js";
import { Buffers, dispatch, type Kernel, pipeline, readBack, storageBuffer } from "./kernel.js";
import * as K from "./model.wgsl.js";

/** A GPU buffer and how many float32 (or int32) elements it holds; `f16`: f16 elements instead (the attention's kept copies). */
export interface GpuTensor {
  readonly buffer: GPUBuffer;
  readonly length: number;
  readonly f16?: boolean;
}

/**
 * Rows per workgroup of RMSNorm's backward, each chunk one partial sum of the weight gradient: 512
 * workgroups at 32K tokens, each row's reduction a few barriers long.
 */
const ROWS_PER_CHUNK = 64;
/** Elements each workgroup of sumOfSquares reduces. */
const SQUARES_PER_GROUP = 4096; // 5.6K workgroups for the 23M bench-train model: 65536 (350) left the GPU idle for 6 ms

type Word = number | { f32: number };

class WebGpuModel implements ModelBackend<GpuTensor> {
  readonly name = "webgpu" as const;
  private mem: Buffers | null = null;
  private persistentBytes = 0;
  /** The most bytes held at once in any scope: persistent tensors plus the scope's buffers and, during an attention call, its scratch. */
  peakBytes = 0;
  private encoder: GPUCommandEncoder | null = null;
  /** An attention call's temporaries, recycled when the call has submitted (the next layer's call reuses them). */
  private readonly scratch: Buffers;
  /** The most bytes held during an attention call of this scope: the scope's buffers at its end plus the scratch it filled. */
  private callPeak = 0;

  /** "f16": every GEMM and the attention on f16 operands with float32 accumulation (tensor cores where the device has them). */
  constructor(
    private readonly gpu: MobaDevice,
    readonly precision: Precision,
    /** Fill every `empty` tensor with NaN first (a dispatch each), so an element an op fails to write shows; off for training speed. */
    private readonly poison: boolean,
  ) {
    this.scratch = new Buffers(gpu);
  }

  // ---- memory ----

  async scope<T>(what: string, work: () => Promise<T>): Promise<T> {
    if (this.mem) throw new MobaError(`webgpu: ${what} started inside another scope`);
    const mem = (this.mem = new Buffers(this.gpu));
    const end = {
      destroy: () => {
        this.flush();
        this.peakBytes = Math.max(this.peakBytes, this.persistentBytes + Math.max(mem.peakBytes, this.callPeak));
        this.callPeak = 0;
        this.adamwScalars.clear();
        this.mem = null;
        mem.destroy();
      },
    };
    return checked(this.gpu, what, end, work);
  }

  private scoped(): Buffers {
    if (!this.mem) throw new MobaError("webgpu: model tensors are made inside backend.scope()");
    return this.mem;
  }

  zeros(n: number): GpuTensor {
    return { buffer: this.scoped().storage(n * 4, "zeros"), length: n };
  }

  empty(n: number): GpuTensor {
    const mem = this.scoped();
    return { buffer: this.poison ? mem.poisoned(n, "output", this.record()) : mem.uninitialized(n * 4, "output"), length: n };
  }

  upload(data: Float32Array | Int32Array | Uint32Array, persistent = false): GpuTensor {
    const buffer = persistent ? storageBuffer(this.gpu, data, "persistent") : this.scoped().storage(data, "upload");
    if (persistent) this.persistentBytes += buffer.size;
    return { buffer, length: data.length };
  }

  async download(x: GpuTensor): Promise<Float32Array> {
    this.flush();
    const [bytes] = await readBack(this.gpu, [{ buffer: x.buffer, bytes: x.length * 4 }]);
    return new Float32Array(bytes);
  }

  free(xs: GpuTensor[]): void {
    for (const x of xs) {
      this.persistentBytes -= x.buffer.size;
      x.buffer.destroy();
    }
  }

  release(xs: GpuTensor[]): void {
    this.flush(); // the work recorded with them runs before anything that reuses them
    this.scoped().release(xs.map((x) => x.buffer));
  }

  clear(x: GpuTensor): void {
    this.record().clearBuffer(x.buffer);
  }

  copy(dst: GpuTensor, dstOffset: number, src: GpuTensor, srcOffset: number, n: number): void {
    this.record().copyBufferToBuffer(src.buffer, srcOffset * 4, dst.buffer, dstOffset * 4, n * 4);
  }

  resetPeak(): void {
    this.peakBytes = this.persistentBytes;
  }

  // ---- recording ----

  private record(): GPUCommandEncoder {
    this.encoder ??= this.gpu.device.createCommandEncoder();
    return this.encoder;
  }

  private flush(): void {
    if (this.encoder) this.gpu.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
  }

  /** Records one kernel: binding 0 is the uniform of `words`, then the tensors in order. */
  private run(
    kernel: Kernel<null>,
    words: Word[][],
    tensors: GpuTensor[],
    items: number,
    label: string,
    workgroups = Math.ceil(items / K.THREADS),
  ): void {
    // pipelines compile on first use (awaited in prepare()); here they are cached
    const p = this.pipelines.get(kernel.name);
    if (!p) throw new MobaError(`webgpu: kernel ${kernel.name} used before prepare()`);
    dispatch(this.record(), this.gpu, p, [this.scoped().uniform(words.flat(), label), ...tensors.map((t) => t.buffer)], workgroups, label);
  }

  private readonly pipelines = new Map<string, GPUComputePipeline>();

  /** Compiles every kernel once. */
  async prepare(): Promise<this> {
    const kernels = [
      K.EMBEDDING,
      K.EMBEDDING_BACKWARD,
      K.RMS_NORM,
      K.COLUMN_SUM_INTO,
      K.ROPE,
      K.SWIGLU,
      K.SWIGLU_BACKWARD,
      K.CROSS_ENTROPY,
      K.CROSS_ENTROPY_BACKWARD,
      K.SUM_OF_SQUARES,
      K.GRADIENT_CLIP,
      K.ADAMW,
    ];
    for (const k of kernels) this.pipelines.set(k.name, await pipeline(this.gpu, k, null));
    return this;
  }

  private async gemm(c: GemmCall, a: GpuTensor, b: GpuTensor, y: GpuTensor, residual?: GpuTensor): Promise<void> {
    const partials = (bytes: number) => this.splitKPartials(bytes);
    const buffers = { a: a.buffer, b: b.buffer, y: y.buffer, residual: residual?.buffer };
    await recordGemm(this.gpu, this.scoped(), () => this.record(), buffers, c, this.precision, partials);
  }

  /** One buffer for every GEMM's split-K partials (the queue runs the GEMMs in order), grown as needed. */
  private partials: GPUBuffer | null = null;
  private splitKPartials(bytes: number): GPUBuffer {
    if (this.partials && this.partials.size >= bytes) return this.partials;
    this.flush(); // recorded GEMMs may use the old one
    if (this.partials) this.free([{ buffer: this.partials, length: 0 }]);
    this.partials = storageBuffer(this.gpu, bytes, "gemm split-K partials");
    this.persistentBytes += this.partials.size;
    return this.partials;
  }

  // ---- layers ----

  async embedding(out: GpuTensor, table: GpuTensor, tokens: Int32Array, H: number): Promise<void> {
    this.run(K.EMBEDDING, [[tokens.length, H]], [this.upload(tokens), table, out], tokens.length * H, "embedding");
  }

  async embeddingBackward(dTable: GpuTensor, dOut: GpuTensor, tokens: Int32Array, H: number): Promise<void> {
    // the positions of each vocabulary entry, by counting sort on the host (the tokens are host data)
    const V = dTable.length / H;
    const start = new Uint32Array(V + 1);
    for (const t of tokens) start[t + 1]++;
    for (let v = 0; v < V; v++) start[v + 1] += start[v];
    const order = new Uint32Array(tokens.length),
      cursor = start.slice(0, V);
    tokens.forEach((t, i) => (order[cursor[t]++] = i));
    this.run(K.EMBEDDING_BACKWARD, [[V, H]], [this.upload(start), this.upload(order), dOut, dTable], V * H, "embedding backward");
  }

  async rmsNorm(y: GpuTensor, rstd: GpuTensor, x: GpuTensor, w: GpuTensor, M: number, H: number, eps: number): Promise<void> {
    this.run(K.RMS_NORM, [[M, H, { f32: eps }]], [x, w, y, rstd], M, "rms norm", M);
  }

  async rmsNormBackward(
    dx: GpuTensor,
    dw: GpuTensor,
    dy: GpuTensor,
    x: GpuTensor,
    w: GpuTensor,
    rstd: GpuTensor,
    M: number,
    H: number,
    accumulate: boolean,
  ): Promise<void> {
    const chunks = Math.ceil(M / ROWS_PER_CHUNK);
    const partial = this.empty(chunks * H); // every element written
    const p = await pipeline(this.gpu, K.RMS_NORM_BACKWARD, { columns: Math.ceil(H / K.THREADS) });
    const words = this.scoped().uniform([M, H, accumulate ? 1 : 0, ROWS_PER_CHUNK], "rms norm backward");
    dispatch(
      this.record(),
      this.gpu,
      p,
      [words, dy.buffer, x.buffer, w.buffer, rstd.buffer, dx.buffer, partial.buffer],
      chunks,
      "rms norm backward",
    );
    this.run(K.COLUMN_SUM_INTO, [[chunks, H]], [partial, dw], 0, "rms norm dw sum", Math.ceil(H / 32));
  }

  async rope(x: GpuTensor, cos: GpuTensor, sin: GpuTensor, heads: number, D: number, direction: 1 | -1): Promise<void> {
    const T = x.length / (heads * D); // cos and sin may hold more rows (the model's resident table)
    if (cos.length < (T * D) / 2)
      throw new MobaError(`webgpu rope: cos holds ${cos.length} angles, expected at least ${(T * D) / 2} (${T} tokens)`);
    this.run(K.ROPE, [[T, heads, D, { f32: direction }]], [cos, sin, x], (T * heads * D) / 2, "rope");
  }

  async swiglu(m: GpuTensor, g: GpuTensor, u: GpuTensor): Promise<void> {
    this.run(K.SWIGLU, [[m.length]], [g, u, m], m.length, "swiglu");
  }

  async swigluBackward(dg: GpuTensor, du: GpuTensor, dm: GpuTensor, g: GpuTensor, u: GpuTensor): Promise<void> {
    this.run(K.SWIGLU_BACKWARD, [[dm.length]], [dm, g, u, dg, du], dm.length, "swiglu backward");
  }

  async linear(y: GpuTensor, x: GpuTensor, w: GpuTensor, M: number, K_: number, N: number, residual?: GpuTensor): Promise<void> {
    await this.gemm(
      { aTransposed: false, bTransposed: false, accumulate: false, M, N, K: K_, residual: residual !== undefined },
      x,
      w,
      y,
      residual,
    );
  }

  async linearBackward(
    dx: GpuTensor,
    dw: GpuTensor,
    dy: GpuTensor,
    x: GpuTensor,
    w: GpuTensor,
    M: number,
    K_: number,
    N: number,
    accumulate: boolean,
  ): Promise<void> {
    // dx[M, K] (+)= dy[M, N] · w[N, K]: B = w stored [K' = N, N' = K]
    await this.gemm({ aTransposed: false, bTransposed: true, accumulate, M, N: K_, K: N }, dy, w, dx);
    // dw[N, K] += dyᵀ · x: A = dy stored [K' = M, M' = N], B = x stored [K' = M, N' = K]
    await this.gemm({ aTransposed: true, bTransposed: true, accumulate: true, M: N, N: K_, K: M }, dy, x, dw);
  }

  async crossEntropy(
    lse: GpuTensor,
    losses: GpuTensor,
    logits: GpuTensor,
    targets: Int32Array,
    weights: Float32Array,
    V: number,
  ): Promise<void> {
    const M = targets.length;
    this.run(K.CROSS_ENTROPY, [[M, V]], [logits, this.upload(targets), this.upload(weights), lse, losses], M, "cross entropy", M);
  }

  async crossEntropyBackward(
    dLogits: GpuTensor,
    logits: GpuTensor,
    lse: GpuTensor,
    targets: Int32Array,
    weights: Float32Array,
    V: number,
    scale: number,
  ): Promise<void> {
    const M = targets.length;
    this.run(
      K.CROSS_ENTROPY_BACKWARD,
      [[M, V, { f32: scale }]],
      [logits, lse, this.upload(targets), this.upload(weights), dLogits],
      M * V,
      "cross entropy backward",
    );
  }

  private problem(c: AttentionCall): AttentionProblem {
    const p = {
      tokens: c.tokens,
      qHeads: c.qHeads,
      kvHeads: c.kvHeads,
      headDim: c.headDim,
      scale: 1 / Math.sqrt(c.headDim),
      blockSize: c.kind === "moba" ? c.blockSize : FULL_ATTENTION_TILE,
      topK: c.kind === "moba" ? c.topK : Infinity,
      cuSeqlens: c.cuSeqlens,
      precision: this.precision,
    };
    if (headGroups(this.gpu, p) !== 1)
      throw new MobaError(
        `webgpu: ${c.tokens} tokens × ${c.qHeads} heads × headDim ${c.headDim} exceed one storage binding; train with a shorter context`,
      );
    return p;
  }

  async attention(c: AttentionCall, q: GpuTensor, k: GpuTensor, v: GpuTensor, training: boolean): Promise<AttentionSaved<GpuTensor>> {
    this.flush(); // q, k, v are written by recorded work; the attention submits its own
    const p = this.problem(c);
    // a backward that reads only f16 copies of q, k, v takes the forward's, kept in half the bytes of q, k, v
    const keepHalf = training && backwardReadsHalf(this.gpu, p);
    const r = await this.withScratch(() =>
      forwardOnGpu(this.scoped(), p, { q: q.buffer, k: k.buffer, v: v.buffer }, undefined, this.scratch, undefined, keepHalf),
    );
    const kept = r.kept;
    const inputs = kept
      ? {
          q: { buffer: kept.q, length: q.length, f16: true },
          k: { buffer: kept.k, length: k.length, f16: true },
          v: { buffer: kept.v, length: v.length, f16: true },
        }
      : { q, k, v };
    return { out: { buffer: r.out, length: q.length }, lse: { buffer: r.lse, length: c.tokens * c.qHeads }, routing: r.routed, inputs };
  }

  async attentionBackward(c: AttentionCall, saved: AttentionSaved<GpuTensor>, dout: GpuTensor) {
    this.flush();
    const routed = saved.routing as Parameters<typeof backwardOnGpu>[6];
    const { q, k, v } = saved.inputs;
    const g = await this.withScratch(() =>
      backwardOnGpu(
        this.scoped(),
        this.problem(c),
        { q: q.buffer, k: k.buffer, v: v.buffer, f16: q.f16 },
        saved.out.buffer,
        saved.lse.buffer,
        dout.buffer,
        routed,
        undefined,
        this.scratch,
      ),
    );
    // dk and dv share one buffer: copy them apart (4-byte offsets; a binding offset would need 256)
    const dk = this.empty(k.length),
      dv = this.empty(v.length);
    const encoder = this.record();
    encoder.copyBufferToBuffer(g.dkdv, 0, dk.buffer, 0, k.length * 4);
    encoder.copyBufferToBuffer(g.dkdv, k.length * 4, dv.buffer, 0, v.length * 4);
    this.release([{ buffer: g.dkdv, length: 2 * k.length }]);
    return { dq: { buffer: g.dq, length: q.length }, dk, dv };
  }

  async routingTable(c: AttentionCall, saved: AttentionSaved<GpuTensor>): Promise<Int32Array> {
    const routed = saved.routing as Parameters<typeof backwardOnGpu>[6]; // null where every block is selected
    const bytes = c.tokens * c.qHeads * pastPerQuery(this.problem(c)) * 4;
    if (!routed || bytes === 0) return new Int32Array(0);
    this.flush();
    const [table] = await readBack(this.gpu, [{ buffer: routed.routing, bytes }]); // u32 block indices, < 2^31
    return new Int32Array(table);
  }

  /** Runs an attention call (which submits its work) and recycles its temporaries. */
  private async withScratch<T>(call: () => Promise<T>): Promise<T> {
    try {
      return await call();
    } finally {
      // the scratch only grows during a call and the scope's buffers only by the call's outputs: an upper bound of what it held at once
      this.callPeak = Math.max(this.callPeak, this.scoped().bytes + this.scratch.bytes);
      this.scratch.recycle();
    }
  }

  // ---- optimizer ----

  async gradientClip(clip: GpuTensor, grads: GpuTensor[], maxNorm: number, lossScale: number, guard: GpuTensor): Promise<void> {
    const groups = grads.map((x) => Math.ceil(x.length / SQUARES_PER_GROUP));
    const partials = this.empty(groups.reduce((a, b) => a + b, 0));
    let base = 0;
    grads.forEach((x, i) => {
      this.run(K.SUM_OF_SQUARES, [[x.length, SQUARES_PER_GROUP, base]], [x, partials], 0, "sum of squares", groups[i]);
      base += groups[i];
    });
    this.run(K.GRADIENT_CLIP, [[partials.length, { f32: maxNorm }, { f32: lossScale }]], [partials, guard, clip], 0, "gradient clip", 1);
  }

  async adamw(w: GpuTensor, g: GpuTensor, m: GpuTensor, v: GpuTensor, s: AdamWScalars, clip: GpuTensor): Promise<void> {
    const scalars = Float32Array.of(s.lr, s.beta1, s.beta2, s.eps, s.decayFactor, s.c1, s.c2);
    // one upload per distinct set in this scope (a step has two: tensors that decay and those that do not)
    const key = scalars.join(",");
    let uploaded = this.adamwScalars.get(key);
    if (!uploaded) this.adamwScalars.set(key, (uploaded = this.upload(scalars)));
    this.run(K.ADAMW, [[w.length]], [uploaded, g, clip, w, m, v], w.length, "adamw");
  }
  /** This scope's uploaded AdamW scalars, by their values. */
  private readonly adamwScalars = new Map<string, GpuTensor>();

  // ---- decoding ----

  async decoder(shape: DecodeShape, weights: DecoderWeights<GpuTensor>): Promise<GpuDecoder> {
    return new GpuDecoder(this.gpu, shape, weights, () => this.flush()).prepare();
  }
}

/**
 * The WebGPU model backend on the process's device (kernels compiled). precision "f16" needs
 * shader-f16 (modelBackend in src/run/backends.ts falls back to float32 with a note). `poison`
 * (the default) fills every fresh tensor with NaN so unwritten elements show, as the tests want;
 * training runs turn it off (one dispatch fewer per tensor, 161 in a step of the bench-train model).
 */
export async function webgpuModelBackend(precision: Precision = "f32", poison = true): Promise<ModelBackend<GpuTensor>> {
  const gpu = await getDevice();
  if (precision === "f16" && !gpu.f16)
    throw new MobaError(`precision: "f16" needs a device with shader-f16, and ${gpu.adapterInfo} has none`);
  return new WebGpuModel(gpu, precision, poison).prepare();
}
