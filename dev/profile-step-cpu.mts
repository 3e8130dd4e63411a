// Where a CPU training step's time goes: every backend op of the CPU backend timed (wall clock,
// awaited), for the tour's model by default. Usage:
//   node --import tsx dev/profile-step-cpu.mts [ROWS] [CONTEXT] [HIDDEN] [LAYERS]   (tour: 2 512 128 4)
//   MOBA_SIMD=off for the scalar kernels, MOBA_THREADS=1 for one thread; wall and CPU time (all threads) per op
import { cpuBackend } from "../src/cpu/model.js";
import { cores } from "../src/cpu/pool.js";
import { simd } from "../src/cpu/simd.js";
import { AdamW } from "../src/model/adamw.js";
import { checkConfig } from "../src/model/config.js";
import { backward, forward, initModel, zeroGradients } from "../src/model/llama.js";
import { type OpTimes, printTimes, timedBackend } from "./timed-backend.mts";

const [rows, context, hidden, layers] = [2, 512, 128, 4].map((d, i) => Number(process.argv[2 + i] ?? d));
const config = checkConfig(
  hidden === 128
    ? { num_hidden_layers: layers }
    : {
        hidden_size: hidden,
        intermediate_size: Math.round((hidden * 8) / 3 / 64) * 64,
        num_hidden_layers: layers,
        num_attention_heads: hidden / 64,
        num_key_value_heads: hidden / 128,
      },
);
const times: OpTimes = new Map();
const timed = timedBackend(cpuBackend, times);
const T = rows * context;
const model = initModel(config, 1);
const optimizer = new AdamW(model, timed);
const tokens = Int32Array.from({ length: T }, (_, i) => (i * 31) % 256);
const batch = {
  tokens,
  targets: tokens.map((t) => (t + 1) % 256),
  weights: new Float32Array(T).fill(1),
  cuSeqlens: Int32Array.from({ length: rows + 1 }, (_, i) => i * context),
};
const steps: string[] = [];
const STEPS = 3;
for (let s = 0; s <= STEPS; s++) {
  if (s === 1) times.clear();
  const [t0, c0] = [performance.now(), process.cpuUsage()];
  await zeroGradients(model, timed);
  await backward(model, await forward(model, batch, timed), timed, 1 / T);
  await optimizer.update(1e-4, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 });
  const cpu = process.cpuUsage(c0);
  if (s > 0) steps.push(`${(performance.now() - t0).toFixed(0)} (CPU ${((cpu.user + cpu.system) / 1000).toFixed(0)})`);
}
console.log(
  `${simd ? `WebAssembly SIMD (${simd.variant})` : "scalar"}: ${rows} x ${context} tokens, hidden ${hidden}, ${layers} layers, ${await cores()} threads: step ms ${steps.join(", ")}`,
);
printTimes(times, STEPS);
