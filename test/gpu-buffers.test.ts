// The composable GPU API: a device the caller created (Dawn's default limits and no optional feature,
// as a page's navigator.gpu device would be) handed to useDevice, q, k, v in buffers the caller created
// and filled on it, attention run on them, and only `out` and `lse` read back by the caller: compared
// with the float64 reference. Skipped like the other WebGPU tests without an adapter (fails under CI=true).
import assert from "node:assert/strict";
import { test } from "node:test";
import { flashAttentionOnGpu, MobaError, mobaAttentionOnGpu, useDevice, type GpuArray } from "../src/index.js";
import { referenceForward } from "../src/reference/attention.js";
import { F32_TOLERANCE, makeCase, referenceProblem, relativeError, webgpuSkip as skip } from "./helpers.js";

// Dawn's GPU object must outlive its devices (src/webgpu/device.ts): kept for the whole file
let dawn: GPU | undefined;

async function callersDevice(): Promise<GPUDevice> {
  const webgpu = (await import("webgpu")) as { create(options: string[]): GPU; globals: object };
  Object.assign(globalThis, webgpu.globals);
  dawn ??= webgpu.create([]);
  const adapter = await dawn.requestAdapter();
  assert.ok(adapter, "an adapter");
  return adapter.requestDevice();
}

function upload(device: GPUDevice, data: Float32Array, shape: number[]): GpuArray {
  const buffer = device.createBuffer({ size: data.byteLength, usage: GPUBufferUsage.STORAGE, mappedAtCreation: true });
  new Float32Array(buffer.getMappedRange()).set(data);
  buffer.unmap();
  return { buffer, shape };
}

async function download(device: GPUDevice, t: GpuArray): Promise<Float32Array> {
  const bytes = t.shape.reduce((a, b) => a * b, 1) * 4;
  const staging = device.createBuffer({ size: bytes, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(t.buffer, 0, staging, 0, bytes);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const data = new Float32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return data;
}

test("MoBA and full attention on the caller's device and buffers equal the reference", { skip, timeout: 120_000 }, async () => {
  const device = await callersDevice();
  const moba = useDevice(device);
  assert.equal(moba.device, device);
  for (const topK of [2, Infinity]) {
    const c = makeCase(7, { cuSeqlens: [0, 100, 300], qHeads: 4, kvHeads: 2, headDim: 32, blockSize: 32, topK });
    const inputs = {
      q: upload(device, c.q.data, [...c.q.shape]),
      k: upload(device, c.k.data, [...c.k.shape]),
      v: upload(device, c.v.data, [...c.v.shape]),
      cuSeqlens: c.cuSeqlens,
    };
    const r =
      topK === Infinity ? await flashAttentionOnGpu(inputs, { scale: c.scale }) : await mobaAttentionOnGpu(inputs, { blockSize: 32, topK });
    assert.deepEqual(r.out.shape, [300, 4, 32]);
    assert.equal(r.routing === null, topK === Infinity);
    const [out, lse] = [await download(device, r.out), await download(device, r.lse)];
    r.release();
    const ref = referenceForward(referenceProblem(c), c.q.data, c.k.data, c.v.data);
    assert.ok(relativeError(out, ref.out) <= F32_TOLERANCE, `topK ${topK}: out error ${relativeError(out, ref.out)}`);
    assert.ok(relativeError(lse, ref.lse) <= F32_TOLERANCE, `topK ${topK}: lse error ${relativeError(lse, ref.lse)}`);
  }
});

test("the GPU-buffer API refuses a buffer too small or without STORAGE usage", { skip }, async () => {
  const device = await callersDevice();
  useDevice(device);
  const q = upload(device, new Float32Array(64 * 2 * 8), [64, 2, 8]);
  const small = upload(device, new Float32Array(64 * 2 * 4), [64, 2, 8]);
  await assert.rejects(mobaAttentionOnGpu({ q, k: small, v: q }, { blockSize: 16, topK: 2 }), (e: Error) => {
    return e instanceof MobaError && /^k\.buffer: expected at least 4096 bytes .* got 2048$/.test(e.message);
  });
  const uniform = { buffer: device.createBuffer({ size: 4096, usage: GPUBufferUsage.UNIFORM }), shape: [64, 2, 8] };
  await assert.rejects(mobaAttentionOnGpu({ q, k: q, v: uniform }, { blockSize: 16, topK: 2 }), /v\.buffer: expected usage STORAGE/);
  await assert.rejects(mobaAttentionOnGpu({ q, k: { ...q, shape: [64, 2] }, v: q }, { blockSize: 16, topK: 2 }), /k: expected shape/);
});
