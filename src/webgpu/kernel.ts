// The one small kernel interface: a kernel is WGSL generated from a few compile-time constants,
// a cache key, a workgroup size and a dispatch size computed from the shape. Pipelines are
// compiled once per (device, key); compile errors become clear errors naming the kernel.
import { MobaError } from "../tensor.js";
import type { MobaDevice } from "./device.js";

export interface Kernel<C> {
  name: string;
  /** Threads per workgroup (x only). */
  workgroupSize: number;
  /** Compile-time constants -> cache key. */
  key(constants: C): string;
  wgsl(constants: C): string;
  /** Where listed: the names of bindings 0, 1, ... of group 0, the buffers a dispatch passes in this order. */
  bindings?: readonly string[];
}

/** The cache key of compile-time constants: every field as name=value, by name, so none can be left out of it. */
export function constantsKey(constants: object | null): string {
  if (constants === null) return "";
  return Object.entries(constants)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, value]) => `${name}=${value}`)
    .join(",");
}

/** A kernel whose cache key is derived from all of its constants (constantsKey), beside the WGSL it generates. */
export function defineKernel<C extends object | null>(kernel: Omit<Kernel<C>, "key"> & { bindings: readonly string[] }): Kernel<C> {
  return { ...kernel, key: constantsKey };
}

const pipelines = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

export function pipeline<C>(gpu: MobaDevice, kernel: Kernel<C>, constants: C): Promise<GPUComputePipeline> {
  let cache = pipelines.get(gpu.device);
  if (!cache) pipelines.set(gpu.device, (cache = new Map()));
  const key = `${kernel.name}:${kernel.key(constants)}`;
  let p = cache.get(key);
  if (!p) {
    p = compile(gpu, kernel, constants, key);
    cache.set(key, p);
    p.catch(() => cache!.delete(key));
  }
  return p;
}

async function compile<C>(gpu: MobaDevice, kernel: Kernel<C>, constants: C, key: string): Promise<GPUComputePipeline> {
  const device = gpu.device;
  const code = kernel.wgsl(constants);
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ label: key, code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === "error");
  if (errors.length > 0) {
    await device.popErrorScope();
    const m = errors[0];
    throw new MobaError(`webgpu: shader ${key} does not compile: line ${m.lineNum}:${m.linePos}: ${m.message}`);
  }
  // createComputePipelineAsync aborts the process in Dawn's Node build (seen on lavapipe): compile synchronously
  const p = device.createComputePipeline({ label: key, layout: "auto", compute: { module, entryPoint: "main" } });
  const error = await device.popErrorScope();
  if (error) throw new MobaError(`webgpu: shader ${key} is invalid: ${error.message}`);
  return p;
}

/** Workgroup counts for n workgroups: x up to the per-dimension limit, the rest in y. */
export function grid(gpu: MobaDevice, workgroups: number): [number, number] {
  const max = gpu.device.limits.maxComputeWorkgroupsPerDimension;
  if (workgroups <= max) return [workgroups, 1];
  return [max, Math.ceil(workgroups / max)];
}

/** Workgroups for a kernel that runs one thread per item. */
export function threadGroups<C>(kernel: Kernel<C>, items: number): number {
  return Math.ceil(items / kernel.workgroupSize);
}

/** The bytes a storage buffer of `size` bytes takes (16-byte multiples, at least 16), checked against one binding. */
function storageBytes(gpu: MobaDevice, size: number, label: string): number {
  const bytes = Math.max(16, Math.ceil(size / 16) * 16);
  if (bytes > gpu.maxStorageBinding) {
    throw new MobaError(`webgpu: ${label} needs ${bytes} bytes, more than one storage binding allows (${gpu.maxStorageBinding})`);
  }
  return bytes;
}

/** A storage buffer holding `data`, or of `data` bytes zero-filled; the caller destroys it. */
export function storageBuffer(gpu: MobaDevice, data: ArrayBufferView | number, label: string): GPUBuffer {
  const bytes = storageBytes(gpu, typeof data === "number" ? data : data.byteLength, label);
  const buffer = gpu.device.createBuffer({
    label,
    size: bytes,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    mappedAtCreation: typeof data !== "number",
  });
  if (typeof data !== "number") {
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buffer.unmap();
  }
  return buffer;
}

/** Reusable buffers of one device, by usage and size class, with the generation that gave them back. */
interface Pool {
  free: Map<string, { buffer: GPUBuffer; generation: number }[]>;
  generation: number;
  fill: GPUComputePipeline | null;
  /** Uniform buffers by their contents, least recently used first (see Buffers.uniform). */
  uniforms: Map<string, GPUBuffer>;
  /** Read-only storage buffers by their callers' keys, least recently used first, and their bytes (see Buffers.constant). */
  constants: Map<string, { buffer: GPUBuffer; bytes: number }>;
  constantBytes: number;
}

/** Bytes of constant storage buffers kept per device: tile lists of 32K tokens x 8 heads take 512 KiB each. */
const CONSTANT_BYTES_KEPT = 64 * 2 ** 20;

/** Uniform buffers kept by contents per device: a training step uses a few hundred distinct ones. */
const UNIFORMS_KEPT = 4096;

const pools = new WeakMap<GPUDevice, Pool>();

/** Buffers given back this many generations ago and not taken since are destroyed. */
const POOL_GENERATIONS = 2;

/** Sizes round up to 1/8 of their power of two (at most 12.5% waste), so varying sizes share buffers. */
function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const step = 2 ** (Math.floor(Math.log2(bytes)) - 3);
  return Math.ceil(bytes / step) * step;
}

/** u32 words each fill workgroup writes: 256 threads, 4 each, 256 apart (coalesced). */
const FILL_WORDS = 1024;
const FILL_WGSL = `
struct P { n: u32, bits: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> out: array<u32>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(num_workgroups) groups: vec3u, @builtin(local_invocation_index) lid: u32) {
  let first = (wg.x + wg.y * groups.x) * 1024u + lid;
  for (var j = 0u; j < 4u; j++) {
    if (first + j * 256u < p.n) { out[first + j * 256u] = p.bits; }
  }
}`;

/**
 * The buffers of one call: every buffer is taken through it and given back with it. Given-back
 * buffers are reused by later calls of the same sizes (a training step repeats its shapes, and
 * on Vulkan a fresh allocation costs about a millisecond); buffers unused for POOL_GENERATIONS
 * calls are destroyed, so memory follows the current shapes.
 */
export class Buffers {
  private readonly owned: { buffer: GPUBuffer; key: string; size: number }[] = [];
  private readonly pool: Pool;
  /** Bytes of the buffers it holds. */
  bytes = 0;
  /** The most bytes it has held at once. */
  peakBytes = 0;

  constructor(readonly gpu: MobaDevice) {
    let pool = pools.get(gpu.device);
    if (!pool)
      pools.set(
        gpu.device,
        (pool = { free: new Map(), generation: 0, fill: null, uniforms: new Map(), constants: new Map(), constantBytes: 0 }),
      );
    this.pool = pool;
  }

  /** A buffer of at least `bytes`; `fresh` tells whether it was just created (zero-filled) rather than reused. */
  private take(bytes: number, usage: number, label: string): { buffer: GPUBuffer; fresh: boolean } {
    const size = sizeClass(bytes);
    const key = `${usage}/${size}`;
    const reused = this.pool.free.get(key)?.pop();
    const buffer = reused?.buffer ?? this.gpu.device.createBuffer({ label, size, usage });
    this.owned.push({ buffer, key, size });
    this.bytes += size;
    this.peakBytes = Math.max(this.peakBytes, this.bytes);
    return { buffer, fresh: !reused };
  }

  /** A storage buffer of at least `bytes` whose contents are whatever it last held: for an output the next op overwrites whole. */
  uninitialized(bytes: number, label: string): GPUBuffer {
    return this.take(
      storageBytes(this.gpu, bytes, label),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      label,
    ).buffer;
  }

  /**
   * A storage buffer holding `data`, or of `data` bytes zero-filled: a reused buffer's clear is
   * recorded into `encoder` when given (one submit fewer per buffer; the clear then runs after any
   * queue.writeBuffer to it, so give no encoder for a buffer that is written that way), else submitted now.
   */
  storage(data: ArrayBufferView | number, label: string, encoder?: GPUCommandEncoder): GPUBuffer {
    const bytes = storageBytes(this.gpu, typeof data === "number" ? data : data.byteLength, label);
    const { buffer, fresh } = this.take(bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, label);
    if (typeof data !== "number") this.gpu.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    else if (!fresh && encoder) encoder.clearBuffer(buffer);
    else if (!fresh) this.submit((e) => e.clearBuffer(buffer));
    return buffer;
  }

  /**
   * A buffer filled with NaN bit patterns, so elements a kernel fails to write show up; the fill is
   * recorded into `encoder` when given (it must run before the kernels recorded after it), else submitted now.
   */
  poisoned(elements: number, label: string, encoder?: GPUCommandEncoder): GPUBuffer {
    const { buffer } = this.take(
      storageBytes(this.gpu, elements * 4, label),
      GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      label,
    );
    // compiled synchronously here (poisoned() is synchronous; pipeline() is async): a one-line shader
    this.pool.fill ??= this.gpu.device.createComputePipeline({
      label: "fill",
      layout: "auto",
      compute: { module: this.gpu.device.createShaderModule({ code: FILL_WGSL }), entryPoint: "main" },
    });
    const record = (e: GPUCommandEncoder) =>
      dispatch(
        e,
        this.gpu,
        this.pool.fill!,
        [this.uniform([elements, 0x7fc00000], "fill"), buffer],
        Math.ceil(elements / FILL_WORDS),
        `poison ${label}`,
      );
    if (encoder) record(encoder);
    else this.submit(record);
    return buffer;
  }

  private submit(record: (encoder: GPUCommandEncoder) => void): void {
    const encoder = this.gpu.device.createCommandEncoder();
    record(encoder);
    this.gpu.device.queue.submit([encoder.finish()]);
  }

  /**
   * A uniform buffer of u32 words (or f32 where given as { f32 }), never written after: one per
   * distinct contents, kept by the device's pool (not this scope) and shared by every call that
   * passes the same words. A step repeats its ops' parameters, so its dispatches find the same
   * uniform buffers, no write each, and (with the same tensors) the same bind groups.
   */
  uniform(words: (number | { f32: number })[], label: string): GPUBuffer {
    const data = new ArrayBuffer(Math.max(16, Math.ceil(words.length / 4) * 16));
    const u = new Uint32Array(data);
    const f = new Float32Array(data);
    words.forEach((w, i) => (typeof w === "number" ? (u[i] = w) : (f[i] = w.f32)));
    // the least recently used goes past UNIFORMS_KEPT; work recorded with it keeps it alive until it has run
    return mostRecent(this.pool.uniforms, u.join(","), UNIFORMS_KEPT, () => {
      const buffer = this.gpu.device.createBuffer({
        label,
        size: data.byteLength,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      });
      this.gpu.device.queue.writeBuffer(buffer, 0, data);
      return buffer;
    });
  }

  /**
   * A read-only storage buffer holding what `make` returns, made once per `key` and kept by the
   * device's pool (not this scope): calls of the same shapes (a training step's layers, a benchmark's
   * runs) find their tile lists and sequence tables again instead of building and uploading them
   * each call (at 32K tokens x 8 heads a tile list took ~0.45 ms of JavaScript and 512 KiB of upload,
   * twice per layer and step). The key must name everything the contents depend on. Past
   * CONSTANT_BYTES_KEPT the least recently used are dropped, not destroyed: work recorded with them
   * keeps them alive until it has run.
   */
  constant(key: string, make: () => ArrayBufferView, label: string): GPUBuffer {
    const cache = this.pool.constants;
    return mostRecent(cache, key, Infinity, () => {
      const data = make();
      const bytes = storageBytes(this.gpu, data.byteLength, label);
      const buffer = this.gpu.device.createBuffer({
        label,
        size: bytes,
        usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
      });
      this.gpu.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
      this.pool.constantBytes += bytes;
      for (const [old, e] of cache) {
        if (this.pool.constantBytes <= CONSTANT_BYTES_KEPT) break;
        cache.delete(old);
        this.pool.constantBytes -= e.bytes;
      }
      return { buffer, bytes };
    }).buffer;
  }

  /**
   * Gives every buffer back to the pool without trimming it: work submitted before may still use
   * them (the queue keeps its order), work recorded after takes them again. A call's temporaries,
   * recycled when it has submitted, so the next call of the same shapes reuses them.
   */
  recycle(): void {
    this.giveBack(this.owned.splice(0));
  }

  /**
   * Gives some of its buffers back to the pool before the call ends, for later tensors of the same
   * call: the work recorded with them must be submitted first (a queue.writeBuffer into a reused
   * buffer runs before any command buffer submitted after it).
   */
  release(buffers: GPUBuffer[]): void {
    const set = new Set(buffers);
    const kept: typeof this.owned = [];
    const given: typeof this.owned = [];
    for (const e of this.owned) (set.has(e.buffer) ? given : kept).push(e);
    this.owned.splice(0, this.owned.length, ...kept);
    this.giveBack(given);
  }

  private giveBack(entries: { buffer: GPUBuffer; key: string; size: number }[]): void {
    for (const { buffer, key, size } of entries) {
      const list = this.pool.free.get(key) ?? [];
      list.push({ buffer, generation: this.pool.generation });
      this.pool.free.set(key, list);
      this.bytes -= size;
    }
  }

  /** Gives every buffer back to the pool (the work that uses them has been submitted) and trims it. */
  destroy(): void {
    const generation = ++this.pool.generation;
    this.recycle();
    for (const [key, list] of this.pool.free) {
      const keep = [];
      for (const e of list) {
        if (e.generation > generation - POOL_GENERATIONS) keep.push(e);
        else e.buffer.destroy();
      }
      // newest buffer last, so pop() hands out the oldest first: every call of the same ops then gets the
      // same buffers in the same roles as the last one, and finds its bind groups cached (in the order
      // they came back, a training step's roles moved each step and 460 of its ~890 dispatches made one)
      keep.sort((a, b) => bufferId(b.buffer) - bufferId(a.buffer));
      if (keep.length > 0) this.pool.free.set(key, keep);
      else this.pool.free.delete(key);
    }
  }
}

/** A whole buffer, or a range of one (offset a multiple of 256 bytes). */
export type Binding = GPUBuffer | { buffer: GPUBuffer; offset: number; size: number };

/** GPU time of each dispatch recorded between startProfile and stopProfile (timestamp queries). */
interface Profile {
  gpu: MobaDevice;
  querySet: GPUQuerySet;
  labels: string[];
  capacity: number;
}

let profile: Profile | null = null;

/** Starts timing every dispatch (up to `capacity`) on the GPU; needs the timestamp-query feature. */
export function startProfile(gpu: MobaDevice, capacity = 2048): void {
  // WebGPU allows 4096 queries per set
  if (!gpu.timestamps) throw new MobaError(`webgpu: profiling needs timestamp-query, which ${gpu.adapterInfo} lacks`);
  profile = { gpu, querySet: gpu.device.createQuerySet({ type: "timestamp", count: 2 * capacity }), labels: [], capacity };
}

/**
 * Stops profiling; each dispatch since startProfile in recording order: its GPU milliseconds, and
 * when it started, in milliseconds after the first dispatch started.
 */
export async function stopProfile(): Promise<{ label: string; ms: number; start: number }[]> {
  const p = profile;
  if (!p) throw new MobaError("webgpu: stopProfile without startProfile");
  profile = null;
  const count = 2 * p.labels.length;
  if (count === 0) return [];
  const device = p.gpu.device;
  const resolved = device.createBuffer({ size: count * 8, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const encoder = device.createCommandEncoder();
  encoder.resolveQuerySet(p.querySet, 0, count, resolved, 0);
  device.queue.submit([encoder.finish()]);
  const [data] = await readBack(p.gpu, [{ buffer: resolved, bytes: count * 8 }]);
  const ns = new BigUint64Array(data);
  resolved.destroy();
  p.querySet.destroy();
  return p.labels.map((label, i) => ({ label, ms: Number(ns[2 * i + 1] - ns[2 * i]) / 1e6, start: Number(ns[2 * i] - ns[0]) / 1e6 }));
}

const bufferIds = new WeakMap<GPUBuffer, number>();
let nextBufferId = 0;
/** A number per buffer object, for bind-group cache keys. */
function bufferId(b: GPUBuffer): number {
  let n = bufferIds.get(b);
  if (n === undefined) bufferIds.set(b, (n = nextBufferId++));
  return n;
}
const bindGroups = new WeakMap<GPUComputePipeline, Map<string, GPUBindGroup>>();
/**
 * Bind groups kept per pipeline, the least recently used going first: pooled buffers come back in the
 * same roles call after call, and a training step uses one pipeline with up to ~150 sets of buffers
 * (AdamW: one per parameter tensor), which a smaller cache would evict before the next step came round.
 */
const BIND_GROUPS_PER_PIPELINE = 512;

/**
 * The bind group of `buffers` for pipeline p, created once per distinct set of buffers (creating
 * one costs about 10 µs of host time in Dawn, a tenth of a small MoBA call's recording).
 */
function bindGroup(gpu: MobaDevice, p: GPUComputePipeline, buffers: Binding[], label: string): GPUBindGroup {
  const key = buffers.map((b) => ("offset" in b ? `${bufferId(b.buffer)}@${b.offset}+${b.size}` : `${bufferId(b)}`)).join(",");
  let cache = bindGroups.get(p);
  if (!cache) bindGroups.set(p, (cache = new Map()));
  return mostRecent(cache, key, BIND_GROUPS_PER_PIPELINE, () =>
    gpu.device.createBindGroup({
      label,
      layout: p.getBindGroupLayout(0),
      entries: buffers.map((b, binding) => ({ binding, resource: "offset" in b ? b : { buffer: b } })),
    }),
  );
}

/**
 * `cache`'s value for `key`, made by `make` where absent, moved last (a Map keeps insertion order, so its
 * first entry is the least recently used); past `kept` entries that first one goes. `make` runs before the
 * new entry is in the cache, so it may evict by its own measure (Buffers.constant: bytes).
 */
function mostRecent<V>(cache: Map<string, V>, key: string, kept: number, make: () => V): V {
  let value = cache.get(key);
  if (value !== undefined) cache.delete(key);
  else {
    value = make();
    if (cache.size >= kept) cache.delete(cache.keys().next().value!);
  }
  cache.set(key, value);
  return value;
}

/** Records one dispatch: binding i of group 0 is buffers[i]. */
export function dispatch(
  encoder: GPUCommandEncoder,
  gpu: MobaDevice,
  p: GPUComputePipeline,
  buffers: Binding[],
  workgroups: number,
  label: string,
): void {
  if (workgroups === 0) return;
  const group = bindGroup(gpu, p, buffers, label);
  let timestampWrites: GPUComputePassTimestampWrites | undefined;
  if (profile && profile.gpu === gpu && profile.labels.length < profile.capacity) {
    const index = profile.labels.push(label) - 1;
    timestampWrites = { querySet: profile.querySet, beginningOfPassWriteIndex: 2 * index, endOfPassWriteIndex: 2 * index + 1 };
  }
  const pass = encoder.beginComputePass({ label, timestampWrites });
  pass.setPipeline(p);
  pass.setBindGroup(0, group);
  const [x, y] = grid(gpu, workgroups);
  pass.dispatchWorkgroups(x, y);
  pass.end();
}

/** Copies buffers back to the CPU (one submit, one wait). */
export async function readBack(gpu: MobaDevice, buffers: { buffer: GPUBuffer; bytes: number }[]): Promise<ArrayBuffer[]> {
  const device = gpu.device;
  const encoder = device.createCommandEncoder();
  const staging = buffers.map(({ buffer, bytes }) => {
    const s = device.createBuffer({
      size: Math.max(4, Math.ceil(bytes / 4) * 4),
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    if (bytes > 0) encoder.copyBufferToBuffer(buffer, 0, s, 0, Math.ceil(bytes / 4) * 4);
    return s;
  });
  device.queue.submit([encoder.finish()]);
  return Promise.all(
    staging.map(async (s, i) => {
      await s.mapAsync(GPUMapMode.READ);
      const copy = s.getMappedRange().slice(0, buffers[i].bytes);
      s.unmap();
      s.destroy();
      return copy;
    }),
  );
}
