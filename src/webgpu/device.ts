// One WebGPU device for the process: Dawn through the npm package `webgpu` in Node, navigator.gpu
// in Deno and browsers. On NVIDIA, Dawn exposes shader-f16 and subgroup matrices only with these
// toggles; everything here also runs without them (plain f32 path, e.g. lavapipe).
import { MobaError } from "../tensor.js";

export interface MobaDevice {
  device: GPUDevice;
  adapterInfo: string;
  f16: boolean; // shader-f16
  subgroupMatrix: boolean; // chromium-experimental-subgroup-matrix
  /** Subgroup matrix shapes "f16->f32 16x16x16" (component->result MxNxK); empty without the feature. */
  subgroupMatrixConfigs: string[];
  /** f16 operands, f32 result, 16x16x16, subgroups of 32: what the tensor-core attention forward needs. */
  mma16: boolean;
  timestamps: boolean; // timestamp-query
  software: boolean; // a CPU implementation (lavapipe, SwiftShader)
  maxStorageBinding: number; // bytes one storage binding may span
  maxBuffer: number;
  maxWorkgroupStorage: number;
  storageBuffersPerStage: number; // maxStorageBuffersPerShaderStage
  /** Set once the device is lost; every later call fails with it. */
  lost: string | null;
}

// disable_robustness drops the bounds clamp Dawn adds to every buffer access: the kernels index
// in range by construction (the tests poison outputs and compare every element).
const DAWN_TOGGLES = [
  "enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia,disable_robustness",
  "disable-dawn-features=timestamp_quantization",
];

let pending: Promise<MobaDevice> | null = null;
// Dawn's GPU object must outlive its devices: if it is garbage-collected, the instance is torn
// down under a live device and the process crashes (seen on lavapipe). Keep it for good.
let instance: GPU | null = null;

async function gpuEntry(): Promise<GPU> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  let webgpu: { create(options: string[]): GPU; globals: object };
  try {
    webgpu = (await import("webgpu")) as typeof webgpu;
  } catch (error) {
    throw new MobaError(`webgpu: no navigator.gpu and the npm package "webgpu" (Dawn) did not load: ${(error as Error).message}`);
  }
  Object.assign(globalThis, webgpu.globals); // GPUBufferUsage, GPUMapMode, ...
  instance ??= webgpu.create(DAWN_TOGGLES);
  return instance;
}

async function open(): Promise<MobaDevice> {
  const gpu = await gpuEntry();
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    throw new MobaError("webgpu: no adapter found (no GPU driver; without a GPU install Mesa's lavapipe: scripts/setup-lavapipe.sh)");
  }
  const wanted = ["shader-f16", "timestamp-query", "subgroups", "chromium-experimental-subgroup-matrix"] as GPUFeatureName[];
  const features = wanted.filter((f) => adapter.features.has(f));
  const limits = adapter.limits;
  // storage buffers per stage: WebGPU's default 8 fits every kernel but the tensor-core dq (9), which runs only where the adapter allows more
  const device = await adapter.requestDevice({
    requiredFeatures: features,
    requiredLimits: {
      maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
      maxBufferSize: limits.maxBufferSize,
      maxComputeWorkgroupStorageSize: limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: limits.maxComputeInvocationsPerWorkgroup,
      maxComputeWorkgroupSizeX: limits.maxComputeWorkgroupSizeX,
      maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
      maxStorageBuffersPerShaderStage: Math.min(limits.maxStorageBuffersPerShaderStage, 10),
    },
  });
  const info = adapter.info;
  const configs = subgroupMatrixConfigs(info, features.includes("chromium-experimental-subgroup-matrix" as GPUFeatureName));
  const adapterInfo = [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ") || "unknown adapter";
  const moba: MobaDevice = {
    device,
    adapterInfo,
    software: (info as { isFallbackAdapter?: boolean }).isFallbackAdapter === true || /llvmpipe|lavapipe|swiftshader/i.test(adapterInfo),
    f16: features.includes("shader-f16"),
    subgroupMatrix: features.includes("chromium-experimental-subgroup-matrix" as GPUFeatureName),
    subgroupMatrixConfigs: configs,
    // the tensor-core kernel lays out its subgroups at compile time for 32 lanes (NVIDIA's warps)
    mma16:
      features.includes("shader-f16") &&
      configs.includes("f16->f32 16x16x16") &&
      (info.subgroupMinSize ?? 32) === 32 &&
      (info.subgroupMaxSize ?? 32) === 32,
    timestamps: features.includes("timestamp-query"),
    maxStorageBinding: device.limits.maxStorageBufferBindingSize,
    maxBuffer: device.limits.maxBufferSize,
    maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
    storageBuffersPerStage: device.limits.maxStorageBuffersPerShaderStage,
    lost: null,
  };
  device.lost.then((reason) => {
    moba.lost = `${reason.reason}: ${reason.message}`;
    pending = null; // the next call opens a fresh device
  });
  return moba;
}

interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/**
 * The adapter's subgroup matrix shapes. Dawn lists them in adapterInfo.subgroupMatrixConfigs; an
 * adapter with the feature but no list is taken to have the shape every Dawn NVIDIA/Vulkan adapter has.
 */
function subgroupMatrixConfigs(info: GPUAdapterInfo, feature: boolean): string[] {
  if (!feature) return [];
  const listed = (info as { subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[] }).subgroupMatrixConfigs;
  if (!listed) return ["f16->f32 16x16x16"];
  return [...listed].map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`);
}

/** The process's device, opened on first use. */
export function getDevice(): Promise<MobaDevice> {
  pending ??= open().catch((error) => {
    pending = null;
    throw error;
  });
  return pending;
}

/**
 * Runs GPU work and turns validation, out-of-memory and internal errors into one clear error;
 * the call's buffers are destroyed at the end either way.
 */
export async function checked<T>(gpu: MobaDevice, what: string, buffers: { destroy(): void }, work: () => Promise<T> | T): Promise<T> {
  if (gpu.lost) throw new MobaError(`webgpu: device lost (${gpu.lost}) before ${what}`);
  const device = gpu.device;
  device.pushErrorScope("out-of-memory");
  device.pushErrorScope("validation");
  device.pushErrorScope("internal");
  let result: T;
  try {
    result = await work();
  } finally {
    buffers.destroy();
    const errors = await Promise.all([device.popErrorScope(), device.popErrorScope(), device.popErrorScope()]);
    const error = errors.find((e) => e !== null);
    if (error) {
      const kind = error.constructor?.name ?? "GPUError";
      throw new MobaError(`webgpu: ${what} failed (${kind}): ${error.message.split("\n").slice(0, 4).join(" ")}`);
    }
  }
  if (gpu.lost) throw new MobaError(`webgpu: device lost (${gpu.lost}) during ${what}`);
  return result;
}
