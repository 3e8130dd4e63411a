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

/** A storage buffer holding `data`, or of `data` bytes zero-filled; the caller destroys it. */
export function storageBuffer(gpu: MobaDevice, data: ArrayBufferView | number, label: string): GPUBuffer {
  const size = typeof data === "number" ? data : data.byteLength;
  const bytes = Math.max(16, Math.ceil(size / 16) * 16);
  if (bytes > gpu.maxStorageBinding) {
    throw new MobaError(`webgpu: ${label} needs ${bytes} bytes, more than one storage binding allows (${gpu.maxStorageBinding})`);
  }
  const buffer = gpu.device.createBuffer({
    label, size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST, mappedAtCreation: typeof data !== "number",
  });
  if (typeof data !== "number") {
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    buffer.unmap();
  }
  return buffer;
}

/**
 * The buffers of one call: every buffer is created through it and destroyed with it, so GPU memory
 * is given back when the call ends (or fails) instead of whenever the garbage collector runs.
 */
export class Buffers {
  private readonly owned: GPUBuffer[] = [];
  /** Bytes of the buffers it holds. */
  bytes = 0;
  constructor(readonly gpu: MobaDevice) {}

  /** A storage buffer holding `data`, or of `data` bytes zero-filled. */
  storage(data: ArrayBufferView | number, label: string): GPUBuffer {
    const buffer = storageBuffer(this.gpu, data, label);
    this.owned.push(buffer);
    this.bytes += buffer.size;
    return buffer;
  }

  /** A buffer filled with NaN bit patterns, so elements a kernel fails to write show up. */
  poisoned(elements: number, label: string): GPUBuffer {
    return this.storage(new Uint32Array(elements).fill(0x7fc00000), label);
  }

  /** A uniform buffer of u32 words (or f32 where given as { f32 }). */
  uniform(words: (number | { f32: number })[], label: string): GPUBuffer {
    const data = new ArrayBuffer(Math.max(16, Math.ceil(words.length / 4) * 16));
    const u = new Uint32Array(data);
    const f = new Float32Array(data);
    words.forEach((w, i) => (typeof w === "number" ? (u[i] = w) : (f[i] = w.f32)));
    const buffer = this.gpu.device.createBuffer({ label, size: data.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST, mappedAtCreation: true });
    this.owned.push(buffer);
    this.bytes += buffer.size;
    new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data));
    buffer.unmap();
    return buffer;
  }

  destroy(): void {
    for (const buffer of this.owned.splice(0)) buffer.destroy();
    this.bytes = 0;
  }
}

/** Records one dispatch: binding i of group 0 is buffers[i]. */
export function dispatch(encoder: GPUCommandEncoder, gpu: MobaDevice, p: GPUComputePipeline, buffers: GPUBuffer[], workgroups: number, label: string): void {
  if (workgroups === 0) return;
  const bindGroup = gpu.device.createBindGroup({
    label, layout: p.getBindGroupLayout(0), entries: buffers.map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const pass = encoder.beginComputePass({ label });
  pass.setPipeline(p);
  pass.setBindGroup(0, bindGroup);
  const [x, y] = grid(gpu, workgroups);
  pass.dispatchWorkgroups(x, y);
  pass.end();
}

/** Copies buffers back to the CPU (one submit, one wait). */
export async function readBack(gpu: MobaDevice, buffers: { buffer: GPUBuffer; bytes: number }[]): Promise<ArrayBuffer[]> {
  const device = gpu.device;
  const encoder = device.createCommandEncoder();
  const staging = buffers.map(({ buffer, bytes }) => {
    const s = device.createBuffer({ size: Math.max(4, Math.ceil(bytes / 4) * 4), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    if (bytes > 0) encoder.copyBufferToBuffer(buffer, 0, s, 0, Math.ceil(bytes / 4) * 4);
    return s;
  });
  device.queue.submit([encoder.finish()]);
  return Promise.all(staging.map(async (s, i) => {
    await s.mapAsync(GPUMapMode.READ);
    const copy = s.getMappedRange().slice(0, buffers[i].bytes);
    s.unmap();
    s.destroy();
    return copy;
  }));
}
