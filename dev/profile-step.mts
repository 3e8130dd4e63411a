// Where a WebGPU training step's time goes: every backend op timed (wall clock, awaited), in two
// modes — as the model runs (recording is cheap; waits land on the ops that read back), and
// serialized (each op followed by an idle queue, so its time is its own GPU work plus overhead).
// Usage: node --import tsx dev/profile-step.mts TOKENS HIDDEN LAYERS BLOCK [moba|full] [f32|f16]
import { AdamW } from "../src/model/adamw.js";
import { checkConfig } from "../src/model/config.js";
import { backward, forward, initModel, zeroGradients } from "../src/model/llama.js";
import { getDevice } from "../src/webgpu/device.js";
import { webgpuModelBackend } from "../src/webgpu/model.js";
import { type OpTimes, printTimes, timedBackend } from "./timed-backend.mts";

const [T, hidden, layers, block] = process.argv.slice(2, 6).map(Number);
const kind = (process.argv[6] ?? "moba") as "moba" | "full";
const precision = (process.argv[7] ?? "f32") as "f32" | "f16";
const config = checkConfig({
  hidden_size: hidden,
  intermediate_size: Math.round((hidden * 8) / 3 / 64) * 64,
  num_hidden_layers: layers,
  num_attention_heads: Math.max(1, hidden / 64),
  num_key_value_heads: Math.max(1, hidden / 128),
  moba_chunk_size: block,
  moba_topk: 3,
  max_position_embeddings: T,
  full_attention_last_layers: kind === "full" ? layers : 0,
});
const gpu = await getDevice();
for (const serialize of [false, true]) {
  const backend = await webgpuModelBackend(precision);
  const times: OpTimes = new Map();
  // serialized: each async op waits for the queue (a read-back submits what was recorded and waits for it)
  const timed = timedBackend(backend, times, serialize ? () => backend.download(probe) : undefined);
  const probe = backend.upload(new Float32Array(4), true);
  const model = initModel(config, 1);
  const optimizer = new AdamW(model, timed);
  const tokens = Int32Array.from({ length: T }, (_, i) => (i * 31) % 256);
  const batch = { tokens, targets: tokens.map((t) => (t + 1) % 256), weights: new Float32Array(T).fill(1), cuSeqlens: Int32Array.of(0, T) };
  const steps: number[] = [];
  for (let s = 0; s < 4; s++) {
    if (s === 1) times.clear();
    const t0 = performance.now();
    await timed.scope("step", async () => {
      await zeroGradients(model, timed);
      await backward(model, await forward(model, batch, timed), timed, 1 / T);
      await optimizer.update(1e-4, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 });
    });
    await gpu.device.queue.onSubmittedWorkDone();
    if (s > 0) steps.push(performance.now() - t0);
  }
  console.log(
    `\n${kind} T=${T} hidden=${hidden} layers=${layers} block=${block} ${serialize ? "serialized" : "as run"}: step ms ${steps.map((x) => x.toFixed(0)).join(", ")}`,
  );
  printTimes(times, 3);
}
