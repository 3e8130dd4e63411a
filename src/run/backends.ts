// Picks the model backend. "auto" takes WebGPU only on a hardware adapter: on a software one
// (lavapipe, SwiftShader) the CPU backend is faster.
import type { Backend, Precision } from "../attention/problem.js";
import type { ModelBackend } from "../backend.js";
import { cpuBackend } from "../cpu/model.js";
import { getDevice } from "../webgpu/device.js";
import { webgpuModelBackend } from "../webgpu/model.js";

/**
 * The backend for `name`; precision "f16" where it can run (WebGPU with shader-f16), else float32.
 * `note` hears why "auto" took the CPU (no adapter, or a software one) and why f16 fell back.
 * `poison`: WebGPU fills fresh tensors with NaN (webgpuModelBackend); training runs turn it off.
 */
export async function modelBackend(
  name: Backend | "auto",
  precision: Precision = "f32",
  note: (line: string) => void = () => undefined,
  poison = true,
): Promise<ModelBackend> {
  let gpu = null;
  if (name === "webgpu")
    gpu = await getDevice(); // a missing adapter is an error here
  else if (name === "auto") {
    gpu = await getDevice().catch((error: Error) => {
      note(`backend: cpu (no WebGPU adapter: ${error.message.split("\n")[0]})`);
      return null;
    });
    if (gpu?.software) {
      note(
        `backend: cpu (the WebGPU adapter, ${gpu.adapterInfo}, is a software one: slower than the CPU backend; --backend webgpu takes it anyway)`,
      );
      gpu = null;
    }
  }
  if (precision === "f16" && !gpu?.f16) {
    note(`precision f16: ${gpu ? `${gpu.adapterInfo} has no shader-f16` : "the CPU backend has no f16 path"}; training in float32`);
    precision = "f32";
  }
  return gpu ? webgpuModelBackend(precision, poison) : cpuBackend;
}
