// Picks the model backend. "auto" takes WebGPU only on a hardware adapter: on a software one
// (lavapipe, SwiftShader) the CPU backend is faster.
import type { Backend, Precision } from "../attention/problem.js";
import type { ModelBackend } from "../backend.js";
import { cpuBackend } from "../cpu/model.js";
import { getDevice } from "../webgpu/device.js";
import { webgpuModelBackend } from "../webgpu/model.js";

/**
 * The backend for `name`; precision "f16" where it can run (WebGPU with shader-f16), else float32
 * with one line to `note` saying why.
 */
export async function modelBackend(name: Backend | "auto", precision: Precision = "f32", note: (line: string) => void = () => {}): Promise<ModelBackend> {
  const gpu = name === "cpu" ? null : await getDevice().catch((error) => (name === "webgpu" ? Promise.reject(error) : null)); // a missing adapter is an error for "webgpu"
  const useGpu = gpu !== null && (name === "webgpu" || !gpu.software);
  if (precision === "f16" && !(useGpu && gpu.f16)) {
    note(`precision f16: ${useGpu ? `${gpu.adapterInfo} has no shader-f16` : "the CPU backend has no f16 path"}; training in float32`);
    precision = "f32";
  }
  return useGpu ? webgpuModelBackend(precision) : cpuBackend;
}
