// Decoding on the GPU: the KV cache (keys after rotary, values) and the completed blocks' key sums
// live in GPU buffers, and a step records the whole token (embedding, every layer, final norm, LM
// head) into one command buffer; the host writes the token and its rotary angles and reads back
// only the logits. The kernels are decode.wgsl.ts and the forward's RMSNorm, rotary and SwiGLU.
import type { DecodeShape, DecoderWeights, DeviceDecoder } from "../backend.js";
import { MobaError } from "../tensor.js";
import { checked, type MobaDevice } from "./device.js";
import * as Dk from "./decode.wgsl.js";
import { Buffers, dispatch, type Kernel, pipeline, readBack } from "./kernel.js";
import type { GpuTensor } from "./model.js";
import * as K from "./model.wgsl.js";

/** The largest head dimension the attention kernel serves (its acc groups span one 256-thread workgroup). */
const MAX_HEAD_DIM = Dk.CHUNK;

/** One layer's cache: keys and values [capacity, kvHeads, D], key sums of the completed blocks [capacity / B, kvHeads, D]. */
interface LayerCache {
  k: GPUBuffer;
  v: GPUBuffer;
  sums: GPUBuffer;
}

export class GpuDecoder implements DeviceDecoder<GpuTensor> {
  length = 0;
  private readonly mem: Buffers;
  private readonly layers: LayerCache[];
  /** [token, t, first block to sum, blocks to sum] */
  private readonly stepWords: GPUBuffer;
  private readonly cos: GPUBuffer;
  private readonly sin: GPUBuffer;
  // one token's activations
  private readonly x: GPUBuffer; // [H] the residual stream
  private readonly h: GPUBuffer; // [H] normed
  private readonly rstd: GPUBuffer; // [1]
  private readonly q: GPUBuffer; // [qHeads, D]
  private readonly k: GPUBuffer; // [kvHeads, D]
  private readonly v: GPUBuffer;
  private readonly attn: GPUBuffer; // [qHeads, D]
  private readonly g: GPUBuffer; // [F]
  private readonly u: GPUBuffer;
  private readonly m: GPUBuffer;
  private readonly logits: GPUBuffer; // [V]
  private readonly scores: GPUBuffer; // [qHeads, maxBlocks] gate scores
  private readonly route: GPUBuffer; // [qHeads, max(1, topK − 1)] chosen past blocks
  private readonly partials: GPUBuffer; // [qHeads, maxChunks, D + 2]
  // uniforms of the forward's kernels at M = 1
  private readonly normWords: GPUBuffer;
  private readonly ropeQWords: GPUBuffer;
  private readonly ropeKWords: GPUBuffer;
  private readonly swigluWords: GPUBuffer;
  private p: Pipelines | null = null;
  private readonly maxBlocks: number;
  private readonly maxChunks: number;
  private readonly row: number;

  constructor(
    private readonly gpu: MobaDevice,
    private readonly s: DecodeShape,
    private readonly w: DecoderWeights<GpuTensor>,
    /** Submits the backend's recorded work (fill reads tensors it wrote). */
    private readonly flush: () => void,
  ) {
    if (s.headDim > MAX_HEAD_DIM) throw new MobaError(`decode: headDim ${s.headDim} exceeds the ${MAX_HEAD_DIM} the GPU decoder serves`);
    const mem = (this.mem = new Buffers(gpu));
    const f32 = (n: number, label: string) => mem.storage(n * 4, label);
    this.row = s.kvHeads * s.headDim;
    this.maxBlocks = Math.ceil(s.capacity / s.blockSize);
    this.maxChunks = Math.ceil(s.capacity / Dk.CHUNK);
    this.layers = s.kinds.map((_, l) => ({
      k: f32(s.capacity * this.row, `layer ${l} key cache`),
      v: f32(s.capacity * this.row, `layer ${l} value cache`),
      sums: f32(this.maxBlocks * this.row, `layer ${l} block key sums`),
    }));
    this.stepWords = f32(4, "decode step");
    this.cos = f32(s.headDim / 2, "rotary cos");
    this.sin = f32(s.headDim / 2, "rotary sin");
    this.x = f32(s.hidden, "x");
    this.h = f32(s.hidden, "h");
    this.rstd = f32(1, "rstd");
    this.q = f32(s.qHeads * s.headDim, "q");
    this.k = f32(this.row, "k");
    this.v = f32(this.row, "v");
    this.attn = f32(s.qHeads * s.headDim, "attention");
    this.g = f32(s.intermediate, "gate");
    this.u = f32(s.intermediate, "up");
    this.m = f32(s.intermediate, "swiglu");
    this.logits = f32(s.vocab, "logits");
    this.scores = f32(s.qHeads * this.maxBlocks, "gate scores");
    this.route = f32(s.qHeads * Math.max(1, s.topK - 1), "routed blocks");
    this.partials = f32(s.qHeads * this.maxChunks * Dk.partialFloats(s.headDim), "attention partials");
    this.normWords = mem.uniform([1, s.hidden, { f32: s.eps }], "rms norm");
    this.ropeQWords = mem.uniform([1, s.qHeads, s.headDim, { f32: 1 }], "rope q");
    this.ropeKWords = mem.uniform([1, s.kvHeads, s.headDim, { f32: 1 }], "rope k");
    this.swigluWords = mem.uniform([s.intermediate], "swiglu");
  }

  /** Compiles every kernel a step or a fill records. */
  async prepare(): Promise<this> {
    const s = this.s;
    const compile = <C>(kernel: Kernel<C>, constants: C) => pipeline(this.gpu, kernel, constants);
    const attention = (full: boolean): Dk.AttentionShape => ({
      qHeads: s.qHeads,
      kvHeads: s.kvHeads,
      headDim: s.headDim,
      blockSize: s.blockSize,
      width: s.topK - 1,
      full,
    });
    const gemv = (N: number, K_: number, accumulate: boolean) => compile(Dk.GEMV, { N, K: K_, accumulate });
    const D = s.headDim;
    this.p = {
      embed: await compile(Dk.EMBED_ROW, { hidden: s.hidden }),
      q: await gemv(s.qHeads * D, s.hidden, false),
      kv: await gemv(this.row, s.hidden, false),
      o: await gemv(s.hidden, s.qHeads * D, true),
      mlp: await gemv(s.intermediate, s.hidden, false),
      down: await gemv(s.hidden, s.intermediate, true),
      head: await gemv(s.vocab, s.hidden, false),
      append: await compile(Dk.APPEND, { row: this.row }),
      sums: await compile(Dk.BLOCK_SUMS, { row: this.row, blockSize: s.blockSize }),
      gate: await compile(Dk.GATE, { ...attention(false), maxBlocks: this.maxBlocks }),
      attend: [
        await compile(Dk.ATTEND, { ...attention(false), maxChunks: this.maxChunks }),
        await compile(Dk.ATTEND, { ...attention(true), maxChunks: this.maxChunks }),
      ],
      combine: [
        await compile(Dk.COMBINE, { ...attention(false), maxChunks: this.maxChunks }),
        await compile(Dk.COMBINE, { ...attention(true), maxChunks: this.maxChunks }),
      ],
      rmsNorm: await compile(K.RMS_NORM, null),
      rope: await compile(K.ROPE, null),
      swiglu: await compile(K.SWIGLU, null),
    };
    return this;
  }

  private pipelinesOf(): Pipelines {
    if (!this.p) throw new MobaError("decode: the GPU decoder is used before prepare()");
    return this.p;
  }

  /** Writes the step words: the token and position, and the completed blocks whose key sums the work recorded next computes. */
  private setStep(token: number, t: number, firstBlock: number, blocks: number): void {
    this.gpu.device.queue.writeBuffer(this.stepWords, 0, Uint32Array.of(token, t, firstBlock, blocks));
  }

  async fill(keys: GpuTensor[], values: GpuTensor[], tokens: number): Promise<void> {
    const s = this.s;
    if (this.length !== 0) throw new MobaError(`decode: fill expects an empty cache, got ${this.length} tokens`);
    if (tokens > s.capacity) throw new MobaError(`decode: expected at most ${s.capacity} tokens (the cache), got ${tokens}`);
    const p = this.pipelinesOf();
    this.flush(); // the keys and values are written by the backend's recorded work
    await checked(this.gpu, "decode fill", { destroy: () => undefined }, async () => {
      const blocks = Math.floor(tokens / s.blockSize);
      this.setStep(0, 0, 0, blocks);
      const encoder = this.gpu.device.createCommandEncoder();
      for (const [l, cache] of this.layers.entries()) {
        encoder.copyBufferToBuffer(keys[l].buffer, 0, cache.k, 0, tokens * this.row * 4);
        encoder.copyBufferToBuffer(values[l].buffer, 0, cache.v, 0, tokens * this.row * 4);
        dispatch(encoder, this.gpu, p.sums, [this.stepWords, cache.k, cache.sums], Math.ceil((blocks * this.row) / 256), "block sums");
      }
      this.gpu.device.queue.submit([encoder.finish()]);
    });
    this.length = tokens;
  }

  async step(token: number, cos: Float32Array, sin: Float32Array): Promise<Float32Array> {
    const s = this.s;
    const t = this.length;
    if (t >= s.capacity) throw new MobaError(`decode: the cache is full (${s.capacity} tokens)`);
    if (!Number.isInteger(token) || token < 0 || token >= s.vocab)
      throw new MobaError(`decode: expected a token in [0, ${s.vocab}), got ${token}`);
    const p = this.pipelinesOf();
    const B = s.blockSize,
      D = s.headDim,
      width = s.topK - 1;
    const completes = (t + 1) % B === 0; // this token completes its block: its key sum is computed now
    return checked(this.gpu, "decode step", { destroy: () => undefined }, async () => {
      this.setStep(token, t, Math.floor(t / B), completes ? 1 : 0);
      this.gpu.device.queue.writeBuffer(this.cos, 0, cos);
      this.gpu.device.queue.writeBuffer(this.sin, 0, sin);
      const e = this.gpu.device.createCommandEncoder();
      const run = (pl: GPUComputePipeline, buffers: GPUBuffer[], workgroups: number, label: string) =>
        dispatch(e, this.gpu, pl, buffers, workgroups, label);
      const gemv = (pl: GPUComputePipeline, x: GPUBuffer, w: GpuTensor, y: GPUBuffer, N: number, label: string) =>
        run(pl, [x, w.buffer, y], Math.ceil(N / Dk.GEMV_ROWS), label);
      const norm = (w: GpuTensor) => run(p.rmsNorm, [this.normWords, this.x, w.buffer, this.h, this.rstd], 1, "rms norm");
      const own = Math.floor(t / B);
      run(p.embed, [this.stepWords, this.w.embedding.buffer, this.x], Math.ceil(s.hidden / 256), "embedding");
      for (const [l, w] of this.w.layers.entries()) {
        const cache = this.layers[l];
        const full = s.kinds[l] === "full";
        norm(w.inputNorm);
        gemv(p.q, this.h, w.q, this.q, s.qHeads * D, "q");
        gemv(p.kv, this.h, w.k, this.k, this.row, "k");
        gemv(p.kv, this.h, w.v, this.v, this.row, "v");
        run(p.rope, [this.ropeQWords, this.cos, this.sin, this.q], Math.ceil((s.qHeads * D) / 2 / 256), "rope q");
        run(p.rope, [this.ropeKWords, this.cos, this.sin, this.k], Math.ceil(this.row / 2 / 256), "rope k");
        run(p.append, [this.stepWords, this.k, this.v, cache.k, cache.v], Math.ceil(this.row / 256), "append");
        if (completes) run(p.sums, [this.stepWords, cache.k, cache.sums], Math.ceil(this.row / 256), "block sums");
        // the keys it attends: all t + 1, or (MoBA past topK − 1 completed blocks) the routed blocks and its own up to t
        const routed = !full && own > width;
        const keys = routed ? width * B + t + 1 - own * B : t + 1;
        if (routed) run(p.gate, [this.stepWords, this.q, cache.sums, this.scores, this.route], s.qHeads, "gate");
        const which = full ? 1 : 0;
        run(
          p.attend[which],
          [this.stepWords, this.q, cache.k, cache.v, this.route, this.partials],
          s.qHeads * Math.ceil(keys / Dk.CHUNK),
          "attend",
        );
        run(p.combine[which], [this.stepWords, this.partials, this.attn], s.qHeads, "combine");
        gemv(p.o, this.attn, w.o, this.x, s.hidden, "o (+ residual)");
        norm(w.postNorm);
        gemv(p.mlp, this.h, w.gate, this.g, s.intermediate, "gate");
        gemv(p.mlp, this.h, w.up, this.u, s.intermediate, "up");
        run(p.swiglu, [this.swigluWords, this.g, this.u, this.m], Math.ceil(s.intermediate / 256), "swiglu");
        gemv(p.down, this.m, w.down, this.x, s.hidden, "down (+ residual)");
      }
      norm(this.w.finalNorm);
      gemv(p.head, this.h, this.w.head, this.logits, s.vocab, "lm head");
      this.gpu.device.queue.submit([e.finish()]);
      const [logits] = await readBack(this.gpu, [{ buffer: this.logits, bytes: s.vocab * 4 }]);
      this.length = t + 1;
      return new Float32Array(logits);
    });
  }

  free(): void {
    this.mem.destroy();
  }
}

interface Pipelines {
  embed: GPUComputePipeline;
  q: GPUComputePipeline;
  kv: GPUComputePipeline;
  o: GPUComputePipeline;
  mlp: GPUComputePipeline;
  down: GPUComputePipeline;
  head: GPUComputePipeline;
  append: GPUComputePipeline;
  sums: GPUComputePipeline;
  gate: GPUComputePipeline;
  /** [MoBA, full] */
  attend: GPUComputePipeline[];
  combine: GPUComputePipeline[];
  rmsNorm: GPUComputePipeline;
  rope: GPUComputePipeline;
  swiglu: GPUComputePipeline;
}
