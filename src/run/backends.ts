// Picks the model backend. "auto" takes WebGPU only on a hardware adapter: on a software one
// (lavapipe, SwiftShader) the CPU backend is faster.
import type { Backend } from "../attention/problem.js";
import type { ModelBackend } from "../backend.js";
import { cpuBackend } from "../cpu/linear.js";
import { getDevice } from "../webgpu/device.js";
import { webgpuBackend } from "../webgpu/linear.js";

export async function modelBackend(name: Backend | "auto"): Promise<ModelBackend> {
  if (name === "cpu") return cpuBackend;
  if (name === "webgpu") {
    await getDevice(); // a missing adapter is an error here
    return webgpuBackend;
  }
  return getDevice().then((gpu) => (gpu.software ? cpuBackend : webgpuBackend), () => cpuBackend);
}
