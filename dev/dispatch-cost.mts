// The host's cost of recording one model op on WebGPU: N tiny element-wise ops (SwiGLU on 256
// floats: one uniform buffer, one bind group, one compute pass and one dispatch each), recorded into
// the backend's encoder, timed apart from submitting and waiting for them. A training step of the
// bench-train model records ~890 dispatches, so this times what a step spends before the GPU works.
// Usage: node --import tsx dev/dispatch-cost.mts [N]
import { webgpuModelBackend } from "../src/webgpu/model.js";
import { getDevice } from "../src/webgpu/device.js";

const N = Number(process.argv[2] ?? 2000);
const gpu = await getDevice();
for (const poison of [true, false]) {
  const backend = await webgpuModelBackend("f32", poison);
  for (let round = 0; round < 3; round++) {
    await backend.scope("dispatch cost", async () => {
      const a = backend.upload(new Float32Array(256).fill(1));
      const outs = Array.from({ length: 8 }, () => backend.zeros(256)); // a few distinct outputs, as a step has
      const t0 = performance.now();
      for (let i = 0; i < N; i++) await backend.swiglu(outs[i % outs.length], a, a);
      const recorded = performance.now() - t0;
      const fresh = Array.from({ length: N / 10 }, () => backend.empty(256)); // `empty` tensors: a poison fill each when poisoning
      const t1 = performance.now();
      await backend.download(outs[0]); // submits and waits
      const waited = performance.now() - t1;
      if (round === 2)
        console.log(
          `${gpu.adapterInfo.slice(0, 40)} poison=${poison}: ${((1000 * recorded) / N).toFixed(1)} µs per recorded op, ` +
            `${fresh.length} empty tensors, submit + wait ${waited.toFixed(1)} ms`,
        );
    });
  }
}
process.exit(0);
