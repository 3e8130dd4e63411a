// Decoding on the GPU: the KV cache (keys after rotary, values) and the completed blocks' key sums
// live in GPU buffers, and a step records the whole token (embedding, every layer, final norm, LM
// head) into one compute pass, 10-12 dispatches per layer; the host writes the token and its rotary
// angles and reads back only the logits. The kernels are decode.wgsl.ts and the forward's RMSNorm and rotary.
import type { DecodeShape, DecoderWeights, DeviceDecoder } from "../backend.js";
import { MobaError } from "../tensor.js";
import { checked, type MobaDevice } from "./device.js";
import * as Dk from "./decode.wgsl.js";
import { Buffers, dispatch, grid, type Kernel, pipeline } from "./kernel.js";
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

/** One dispatch of a step: its kernel and bind group (fixed buffers), and its workgroups at position t (0: skipped at t). */
interface Dispatch {
  pipeline: GPUComputePipeline;
  group: GPUBindGroup;
  workgroups: (t: number) => number;
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
  private readonly qkv: GPUBuffer; // [qHeads · D + 2 · kvHeads · D] q, k, v
  private readonly attn: GPUBuffer; // [qHeads, D]
  private readonly gu: GPUBuffer; // [2, F] the MLP's gate and up projections
  private readonly logits: GPUBuffer; // [V]
  private readonly scores: GPUBuffer; // [qHeads, maxBlocks] gate scores
  private readonly route: GPUBuffer; // [qHeads, max(1, topK − 1)] chosen past blocks
  private readonly partials: GPUBuffer; // [qHeads, maxChunks, D + 2]
  // uniforms of the forward's kernels at M = 1
  private readonly normWords: GPUBuffer;
  private readonly ropeWords: GPUBuffer;
  private readonly staging: GPUBuffer; // [V] the logits, mapped for reading
  /** A step's dispatches in order (built by prepare). */
  private steps: Dispatch[] = [];
  /** The block sums kernel, which fill records too. */
  private sums: GPUComputePipeline | null = null;
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
    this.qkv = f32(s.qHeads * s.headDim + 2 * this.row, "qkv");
    this.attn = f32(s.qHeads * s.headDim, "attention");
    this.gu = f32(2 * s.intermediate, "gate, up");
    this.logits = f32(s.vocab, "logits");
    this.scores = f32(s.qHeads * this.maxBlocks, "gate scores");
    this.route = f32(s.qHeads * Math.max(1, s.topK - 1), "routed blocks");
    this.partials = f32(s.qHeads * this.maxChunks * Dk.partialFloats(s.headDim), "attention partials");
    this.normWords = mem.uniform([1, s.hidden, { f32: s.eps }], "rms norm");
    // q and k are the first qHeads + kvHeads heads of qkv: one rotary dispatch turns both
    this.ropeWords = mem.uniform([1, s.qHeads + s.kvHeads, s.headDim, { f32: 1 }], "rope q, k");
    this.staging = gpu.device.createBuffer({
      label: "logits read-back",
      size: s.vocab * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  /** Compiles the kernels and builds the step's dispatches (their buffers are fixed: bind groups made once). */
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
    const D = s.headDim,
      B = s.blockSize,
      width = s.topK - 1;
    const steps: Dispatch[] = [];
    const add = (label: string, pl: GPUComputePipeline, buffers: GPUBuffer[], workgroups: number | ((t: number) => number)) => {
      const group = this.gpu.device.createBindGroup({
        label,
        layout: pl.getBindGroupLayout(0),
        entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
      });
      steps.push({ pipeline: pl, group, workgroups: typeof workgroups === "number" ? () => workgroups : workgroups });
    };
    // y = [w₀; w₁; …] · x (accumulate: y +=; swiglu: x holds gate and up, the input is silu(gate) · up)
    const gemv = async (
      label: string,
      x: GPUBuffer,
      ws: GpuTensor[],
      y: GPUBuffer,
      K_: number,
      o = { accumulate: false, swiglu: false },
    ) => {
      const parts = ws.map((w) => w.length / K_);
      const N = parts.reduce((a, b) => a + b, 0);
      add(
        label,
        await compile(Dk.GEMV[ws.length - 1], { parts, K: K_, ...o }),
        [x, ...ws.map((w) => w.buffer), y],
        Math.ceil(N / Dk.GEMV_ROWS),
      );
    };
    const groupsOf = (items: number) => Math.ceil(items / 256);
    const norm = async (w: GpuTensor) =>
      add("rms norm", await compile(K.RMS_NORM, null), [this.normWords, this.x, w.buffer, this.h, this.rstd], 1);
    this.sums = await compile(Dk.BLOCK_SUMS, { row: this.row, blockSize: B });
    add(
      "embedding",
      await compile(Dk.EMBED_ROW, { hidden: s.hidden }),
      [this.stepWords, this.w.embedding.buffer, this.x],
      groupsOf(s.hidden),
    );
    for (const [l, w] of this.w.layers.entries()) {
      const cache = this.layers[l];
      const full = s.kinds[l] === "full";
      // MoBA gates once the query has more than topK − 1 completed blocks before its own
      const routed = (t: number) => !full && Math.floor(t / B) > width;
      const keys = (t: number) => (routed(t) ? width * B + t + 1 - Math.floor(t / B) * B : t + 1);
      await norm(w.inputNorm);
      await gemv("q, k, v", this.h, [w.q, w.k, w.v], this.qkv, s.hidden);
      add("rope", await compile(K.ROPE, null), [this.ropeWords, this.cos, this.sin, this.qkv], groupsOf(((s.qHeads + s.kvHeads) * D) / 2));
      const append = await compile(Dk.APPEND, { row: this.row, at: s.qHeads * D });
      add("append", append, [this.stepWords, this.qkv, cache.k, cache.v], groupsOf(this.row));
      // the token that completes its block sums it (the gate reads completed blocks only)
      add("block sums", this.sums, [this.stepWords, cache.k, cache.sums], (t) => ((t + 1) % B === 0 ? groupsOf(this.row) : 0));
      if (!full) {
        const gate = await compile(Dk.GATE, { ...attention(false), maxBlocks: this.maxBlocks });
        add("gate", gate, [this.stepWords, this.qkv, cache.sums, this.scores, this.route], (t) => (routed(t) ? s.qHeads : 0));
      }
      const shape = { ...attention(full), maxChunks: this.maxChunks };
      add(
        "attend",
        await compile(Dk.ATTEND, shape),
        [this.stepWords, this.qkv, cache.k, cache.v, this.route, this.partials],
        (t) => s.qHeads * Math.ceil(keys(t) / Dk.CHUNK),
      );
      add("combine", await compile(Dk.COMBINE, shape), [this.stepWords, this.partials, this.attn], s.qHeads);
      await gemv("o (+ residual)", this.attn, [w.o], this.x, s.qHeads * D, { accumulate: true, swiglu: false });
      await norm(w.postNorm);
      await gemv("gate, up", this.h, [w.gate, w.up], this.gu, s.hidden);
      await gemv("swiglu, down (+ residual)", this.gu, [w.down], this.x, s.intermediate, { accumulate: true, swiglu: true });
    }
    await norm(this.w.finalNorm);
    await gemv("lm head", this.h, [this.w.head], this.logits, s.hidden);
    this.steps = steps;
    return this;
  }

  /** Writes the step words: the token and position, and the completed blocks whose key sums the work recorded next computes. */
  private setStep(token: number, t: number, firstBlock: number, blocks: number): void {
    this.gpu.device.queue.writeBuffer(this.stepWords, 0, Uint32Array.of(token, t, firstBlock, blocks));
  }

  async fill(keys: GpuTensor[], values: GpuTensor[], tokens: number): Promise<void> {
    const s = this.s;
    if (this.length !== 0) throw new MobaError(`decode: fill expects an empty cache, got ${this.length} tokens`);
    if (tokens > s.capacity) throw new MobaError(`decode: expected at most ${s.capacity} tokens (the cache), got ${tokens}`);
    if (!this.sums) throw new MobaError("decode: the GPU decoder is used before prepare()");
    const sums = this.sums;
    this.flush(); // the keys and values are written by the backend's recorded work
    await checked(this.gpu, "decode fill", { destroy: () => undefined }, async () => {
      const blocks = Math.floor(tokens / s.blockSize);
      this.setStep(0, 0, 0, blocks);
      const encoder = this.gpu.device.createCommandEncoder();
      for (const [l, cache] of this.layers.entries()) {
        encoder.copyBufferToBuffer(keys[l].buffer, 0, cache.k, 0, tokens * this.row * 4);
        encoder.copyBufferToBuffer(values[l].buffer, 0, cache.v, 0, tokens * this.row * 4);
        dispatch(encoder, this.gpu, sums, [this.stepWords, cache.k, cache.sums], Math.ceil((blocks * this.row) / 256), "block sums");
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
    const device = this.gpu.device;
    return checked(this.gpu, "decode step", { destroy: () => undefined }, async () => {
      this.setStep(token, t, Math.floor(t / s.blockSize), 1);
      device.queue.writeBuffer(this.cos, 0, cos);
      device.queue.writeBuffer(this.sin, 0, sin);
      const encoder = device.createCommandEncoder();
      // one pass: WebGPU orders its dispatches (each sees the buffers the previous ones wrote)
      const pass = encoder.beginComputePass({ label: "decode step" });
      for (const d of this.steps) {
        const workgroups = d.workgroups(t);
        if (workgroups === 0) continue;
        pass.setPipeline(d.pipeline);
        pass.setBindGroup(0, d.group);
        const [x, y] = grid(this.gpu, workgroups);
        pass.dispatchWorkgroups(x, y);
      }
      pass.end();
      encoder.copyBufferToBuffer(this.logits, 0, this.staging, 0, s.vocab * 4);
      device.queue.submit([encoder.finish()]);
      await this.staging.mapAsync(GPUMapMode.READ);
      const logits = new Float32Array(this.staging.getMappedRange().slice(0));
      this.staging.unmap();
      this.length = t + 1;
      return logits;
    });
  }

  free(): void {
    this.mem.destroy();
    this.staging.destroy();
  }
}
