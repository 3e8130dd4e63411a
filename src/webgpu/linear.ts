// The Linear layer's GEMMs on WebGPU: forward y = x · wᵀ; backward dx = dy · w and dw += dyᵀ · x
// in one submission. Inputs go up and results come back each call (the model's other layers run
// on the CPU), so this backend pays a PCIe round trip per GEMM.
import type { ModelBackend } from "../backend.js";
import { checked, getDevice, type MobaDevice } from "./device.js";
import { Buffers, dispatch, pipeline, readBack } from "./kernel.js";
import { GEMM, type GemmConstants, TILE } from "./linear.wgsl.js";

/** Records y[M, N] (+)= A · B. */
async function gemm(encoder: GPUCommandEncoder, gpu: MobaDevice, mem: Buffers, c: GemmConstants, a: GPUBuffer, b: GPUBuffer, y: GPUBuffer, M: number, N: number, K: number): Promise<void> {
  const tilesN = Math.ceil(N / TILE);
  dispatch(encoder, gpu, await pipeline(gpu, GEMM, c), [a, b, y, mem.uniform([M, N, K, tilesN], "gemm shape")], Math.ceil(M / TILE) * tilesN, "gemm");
}

export const webgpuBackend: ModelBackend = {
  name: "webgpu",
  async linear(x, w, M, K, N) {
    const gpu = await getDevice();
    const mem = new Buffers(gpu);
    return checked(gpu, "linear forward", mem, async () => {
      const y = mem.poisoned(M * N, "y");
      const encoder = gpu.device.createCommandEncoder();
      await gemm(encoder, gpu, mem, { aTransposed: false, bTransposed: false, accumulate: false }, mem.storage(x, "x"), mem.storage(w, "w"), y, M, N, K);
      gpu.device.queue.submit([encoder.finish()]);
      const [out] = await readBack(gpu, [{ buffer: y, bytes: M * N * 4 }]);
      return new Float32Array(out);
    });
  },
  async linearBackward(dy, x, w, dw, M, K, N) {
    const gpu = await getDevice();
    const mem = new Buffers(gpu);
    return checked(gpu, "linear backward", mem, async () => {
      const dyBuffer = mem.storage(dy, "dy");
      const dx = mem.poisoned(M * K, "dx");
      const dwBuffer = mem.storage(dw, "dw");
      const encoder = gpu.device.createCommandEncoder();
      // dx[M, K] = dy[M, N] · w[N, K]: B = w stored [K' = N, N' = K]
      await gemm(encoder, gpu, mem, { aTransposed: false, bTransposed: true, accumulate: false }, dyBuffer, mem.storage(w, "w"), dx, M, K, N);
      // dw[N, K] += dyᵀ · x: A = dy stored [K' = M, M' = N], B = x stored [K' = M, N' = K]
      await gemm(encoder, gpu, mem, { aTransposed: true, bTransposed: true, accumulate: true }, dyBuffer, mem.storage(x, "x"), dwBuffer, N, K, M);
      gpu.device.queue.submit([encoder.finish()]);
      const [dxOut, dwOut] = await readBack(gpu, [{ buffer: dx, bytes: M * K * 4 }, { buffer: dwBuffer, bytes: N * K * 4 }]);
      dw.set(new Float32Array(dwOut));
      return new Float32Array(dxOut);
    });
  },
};
