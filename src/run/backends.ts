// Picks the model backend. "auto" takes WebGPU only on a hardware adapter: on a software one
// (lavapipe, SwiftShader) the CPU backend is faster.
import type { Backend } from "../attention/problem.js";
import type { ModelBackend } from "../backend.js";
import { cpuBackend } from "../cpu/model.js";
import { getDevice } from "../webgpu/device.js";
import { webgpuModelBackend } from "../webgpu/model.js";

/** `note` hears why "auto" took the CPU: no adapter, or a software one. */
export async function modelBackend(name: Backend | "auto", note: (line: string) => void = () => undefined): Promise<ModelBackend> {
  if (name === "cpu") return cpuBackend;
  if (name === "webgpu") return webgpuModelBackend(); // a missing adapter is an error here
  const gpu = await getDevice().catch((error: Error) => {
    note(`backend: cpu (no WebGPU adapter: ${error.message.split("\n")[0]})`);
    return null;
  });
  if (gpu?.software) note(`backend: cpu (the WebGPU adapter, ${gpu.adapterInfo}, is a software one: slower than the CPU backend; --backend webgpu takes it anyway)`);
  return gpu && !gpu.software ? webgpuModelBackend() : cpuBackend;
}
