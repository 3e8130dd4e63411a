// Picks the model backend. "auto" takes WebGPU only on a hardware adapter: on a software one
// (lavapipe, SwiftShader) the CPU backend is faster.
import type { Backend } from "../attention/problem.js";
import type { ModelBackend } from "../backend.js";
import { cpuBackend } from "../cpu/model.js";
import { getDevice } from "../webgpu/device.js";
import { webgpuModelBackend } from "../webgpu/model.js";

export async function modelBackend(name: Backend | "auto"): Promise<ModelBackend> {
  if (name === "cpu") return cpuBackend;
  if (name === "webgpu") return webgpuModelBackend(); // a missing adapter is an error here
  const gpu = await getDevice().catch(() => null);
  return gpu && !gpu.software ? webgpuModelBackend() : cpuBackend;
}
