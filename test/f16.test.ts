// The f16 training path: the model at precision "f16" on WebGPU against the float32 CPU model,
// dynamic loss scaling (an overflow skips the step and halves the scale, nothing else moves), and
// training runs that log and resume the scale.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import type { ModelBackend, Sized } from "../src/backend.js";
import { cpuBackend } from "../src/cpu/model.js";
import { AdamW, INITIAL_LOSS_SCALE, LOSS_SCALE_GROWTH_STEPS, LossScale, learningRateAt } from "../src/model/adamw.js";
import { loadCheckpoint } from "../src/model/checkpoint.js";
import { checkConfig } from "../src/model/config.js";
import { backward, forward, initModel, release, syncToHost, zeroGradients } from "../src/model/llama.js";
import { TRAIN_DEFAULTS } from "../src/model/training.js";
import { train } from "../src/run/train.js";
import { backwardReadsHalf } from "../src/webgpu/attention/index.js";
import { getDevice } from "../src/webgpu/device.js";
import { webgpuModelBackend } from "../src/webgpu/model.js";
import { gradients, randomBatch, relativeError, TINY, webgpuSkip } from "./helpers.js";

const f16Skip: string | false = webgpuSkip || (await getDevice().then((gpu) => (gpu.f16 ? false : `${gpu.adapterInfo} has no shader-f16`)));
const ADAMW = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 0.5 };

test(
  "precision f16 on WebGPU: loss and every gradient within f16 tolerance of the float32 CPU model, and not equal to it",
  { skip: f16Skip },
  async () => {
    const config = checkConfig({
      ...TINY,
      hidden_size: 32,
      intermediate_size: 64,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      layer_attention: ["moba", "full"],
    });
    const model = initModel(config, 3);
    const batch = randomBatch(4, [0, 41, 80]);
    const cpu = await gradients(model, batch, cpuBackend, undefined, 1 / 80);
    await release(model);
    const gpu = await gradients(model, batch, await webgpuModelBackend("f16"), undefined, 1 / 80);
    await release(model);
    // every GEMM and attention operand rounded to f16 (unit roundoff 2^-11 ≈ 4.9e-4), sums in float32:
    // measured on lavapipe: the loss 2e-5 relative, gradients up to 2.7e-3 (products of several rounded factors)
    assert.ok(Math.abs(gpu.loss - cpu.loss) <= 2e-4 * cpu.loss, `loss ${gpu.loss} vs ${cpu.loss}`);
    const errors = gpu.grads.map((g, j) => relativeError(g, cpu.grads[j]));
    errors.forEach((e, j) => assert.ok(e < 1e-2, `${model.params[j].name}: relative error ${e}`));
    // the rounding happened (a float32 path would be within ~1e-6)
    assert.ok(Math.max(...errors) > 1e-5, `largest gradient error ${Math.max(...errors)}: the f16 path did not round`);
  },
);

test("loss scale: halves on an overflow and counts it, doubles after LOSS_SCALE_GROWTH_STEPS clean steps", () => {
  const s = new LossScale();
  assert.equal(s.scale, INITIAL_LOSS_SCALE);
  assert.equal(s.record(Infinity), false);
  assert.equal(s.record(NaN), false);
  assert.deepEqual(s.state(), { scale: INITIAL_LOSS_SCALE / 4, cleanSteps: 0, skipped: 2 });
  for (let i = 0; i < LOSS_SCALE_GROWTH_STEPS - 1; i++) assert.equal(s.record(1), true);
  assert.equal(s.scale, INITIAL_LOSS_SCALE / 4);
  s.record(1);
  assert.deepEqual(s.state(), { scale: INITIAL_LOSS_SCALE / 2, cleanSteps: 0, skipped: 2 });
});

for (const [name, make, skip] of [
  ["cpu", async () => cpuBackend, false],
  ["webgpu f16", () => webgpuModelBackend("f16"), f16Skip],
] as const) {
  test(
    `${name}: an injected inf in the scaled gradients skips the step (weights, moments, step count unchanged) and halves the scale`,
    { skip },
    async () => {
      const backend: ModelBackend = await make();
      const model = initModel(checkConfig({ ...TINY, layer_attention: ["moba", "full"] }), 5);
      const optimizer = new AdamW(model, backend);
      const scale = new LossScale();
      const step = async (inject: boolean) => {
        const norm = await backend.scope("step", async () => {
          await zeroGradients(model, backend);
          await backward(model, await forward(model, randomBatch(7, [0, 30, 64]), backend), backend, scale.scale / 64);
          if (inject) {
            // one element of the last gradient overflows, as an f16 product would: the gradients come to
            // the host (release), one is edited, and they go back to the backend on next use
            await release(model);
            model.params[model.params.length - 1].grad[0] = Infinity;
          }
          return optimizer.update(1e-2, ADAMW, scale.scale);
        });
        return scale.record(norm);
      };
      assert.equal(await step(false), true);
      await syncToHost(model);
      const weights = model.params.map((p) => Float32Array.from(p.data));
      const moments = await optimizer.moments();
      assert.equal(await step(true), false);
      assert.equal(scale.scale, INITIAL_LOSS_SCALE / 2);
      assert.equal(scale.skipped, 1);
      await syncToHost(model);
      model.params.forEach((p, j) => assert.deepEqual(p.data, weights[j], `${p.name} changed on a skipped step`));
      const after = await optimizer.moments();
      assert.equal(after.step, moments.step);
      after.m.forEach((m, j) => assert.deepEqual(m, moments.m[j], `first moment ${j} changed on a skipped step`));
      after.v.forEach((v, j) => assert.deepEqual(v, moments.v[j], `second moment ${j} changed on a skipped step`));
      // and the next clean step moves the weights again
      assert.equal(await step(false), true);
      await syncToHost(model);
      assert.ok(model.params.some((p, j) => relativeError(p.data, weights[j]) > 0));
      optimizer.free();
      await release(model);
    },
  );
}

for (const [name, make, skip] of [
  ["cpu", async () => cpuBackend, false],
  ["webgpu f16", () => webgpuModelBackend("f16"), f16Skip],
] as const) {
  test(
    `${name}: an update recorded before the last one's norm was read (speculative) takes no step after an overflow, and matches the serial steps after a clean one`,
    { skip },
    async () => {
      const backend: ModelBackend = await make();
      type Model = ReturnType<typeof initModel>;
      // one step's gradients and recorded update in a scope, as recordTrainingStep does; the norm is read after it ends
      const stepOf = (model: Model, optimizer: AdamW<Sized>, seed: number, inject: boolean, speculative: boolean) =>
        backend.scope("step", async () => {
          await zeroGradients(model, backend);
          await backward(model, await forward(model, randomBatch(seed, [0, 30, 64]), backend), backend, 1024 / 64);
          if (inject) {
            await release(model); // as in the test above: one gradient element overflows on the host, back on next use
            model.params[model.params.length - 1].grad[0] = Infinity;
          }
          return optimizer.record(1e-2, ADAMW, 1024, speculative);
        });
      const config = checkConfig({ ...TINY, layer_attention: ["moba", "full"] });
      // serial: two clean updates
      const serial = initModel(config, 6);
      const reference = new AdamW(serial, backend);
      for (const seed of [11, 12])
        assert.ok(Number.isFinite(reference.settle(await (await stepOf(serial, reference, seed, false, false)).norm)));
      await syncToHost(serial);
      reference.free();
      await release(serial);
      // pipelined: an overflowing update, the next recorded before its norm is read, then that one again, then a
      // speculative clean one
      const model = initModel(config, 6);
      const optimizer = new AdamW(model, backend);
      const before = model.params.map((p) => Float32Array.from(p.data));
      const overflow = await stepOf(model, optimizer, 10, true, false);
      const guarded = await stepOf(model, optimizer, 11, false, true);
      assert.equal(optimizer.settle(await overflow.norm), Infinity);
      assert.ok(!Number.isFinite(optimizer.settle(await guarded.norm)), "the speculative update after an overflow reads as skipped");
      await syncToHost(model);
      model.params.forEach((p, j) => assert.deepEqual(p.data, before[j], `${p.name} changed by a guarded update`));
      assert.equal((await optimizer.moments()).step, 0);
      const again = await stepOf(model, optimizer, 11, false, false); // step 11 again, as the training loop records it
      const speculative = await stepOf(model, optimizer, 12, false, true);
      assert.ok(Number.isFinite(optimizer.settle(await again.norm)));
      assert.ok(Number.isFinite(optimizer.settle(await speculative.norm)));
      assert.equal((await optimizer.moments()).step, 2);
      await syncToHost(model);
      model.params.forEach((p, j) => assert.deepEqual(p.data, serial.params[j].data, `${p.name}: pipelined against serial`));
      optimizer.free();
      await release(model);
    },
  );
}

test("the loss scale cancels: AdamW with scaled gradients and lossScale equals AdamW unscaled (CPU)", async () => {
  const run = async (scale: number) => {
    const model = initModel(checkConfig({ ...TINY }), 8);
    const optimizer = new AdamW(model, cpuBackend);
    for (let s = 0; s < 3; s++) {
      await zeroGradients(model, cpuBackend);
      await backward(model, await forward(model, randomBatch(9 + s, [0, 40]), cpuBackend), cpuBackend, scale / 40);
      await optimizer.update(1e-2, ADAMW, scale); // the clip (0.5) is active, on the unscaled norm
    }
    return model.params.map((p) => p.data);
  };
  const plain = await run(1),
    scaled = await run(1024); // a power of two: the scaled gradients are exact multiples
  plain.forEach((w, j) => assert.ok(relativeError(scaled[j], w) < 1e-6, `tensor ${j}: ${relativeError(scaled[j], w)}`));
});

test(
  "train --precision f16: the log carries the loss scale, the checkpoint stores it, a resumed run continues with it; on the CPU a note and float32",
  { skip: f16Skip },
  async () => {
    const out = mkdtempSync(join(tmpdir(), "moba-f16-"));
    try {
      const options = {
        model: { ...TINY },
        out,
        steps: 4,
        contextLength: 64,
        batchRows: 1,
        evalEvery: 4,
        evalRows: 1,
        checkpointEvery: 2,
        backend: "webgpu" as const,
        precision: "f16" as const,
      };
      const lines: string[] = [];
      const first = await train({ ...options, steps: 2 }, { print: (l) => lines.push(l) });
      assert.ok(
        first.log.every((l) => l.lossScale === INITIAL_LOSS_SCALE && l.skipped === false),
        JSON.stringify(first.log),
      );
      assert.match(lines.join("\n"), /backend: webgpu f16/);
      const saved = await loadCheckpoint(first.checkpoint);
      assert.deepEqual((saved.state as { lossScale?: unknown }).lossScale, { scale: INITIAL_LOSS_SCALE, cleanSteps: 2, skipped: 0 });
      const resumed = await train(options, { print: () => {} }, true);
      assert.equal(resumed.log.length, 4);
      const state = (await loadCheckpoint(resumed.checkpoint)).state as { lossScale?: { cleanSteps: number } };
      assert.equal(state.lossScale?.cleanSteps, 4);
      const cpuLines: string[] = [];
      const cpu = await train({ ...options, steps: 1, backend: "cpu", out: join(out, "cpu") }, { print: (l) => cpuLines.push(l) });
      assert.match(cpuLines[0], /precision f16: the CPU backend has no f16 path; training in float32/);
      assert.equal(cpu.log[0].lossScale, undefined);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  },
);

test(
  "train --precision f16: steps recorded back to back give the log, weights and loss scale of steps one at a time, with overflows forced on chosen steps",
  { skip: f16Skip },
  async () => {
    const out = mkdtempSync(join(tmpdir(), "moba-f16-pipelined-"));
    // an overflow on steps 2, 3 (two in a row), 6 and 8 (the last): their gradient norm is read with a loss scale of 0,
    // so it is infinite, on every recording of the step; each step has its own warmup learning rate, which tells them apart
    const steps = 9;
    const options = {
      model: { ...TINY },
      steps,
      warmupSteps: steps,
      contextLength: 64,
      batchRows: 1,
      evalEvery: steps,
      evalRows: 1,
      backend: "webgpu" as const,
      precision: "f16" as const,
    };
    const overflowing = new Set(
      [2, 3, 6, 8].map((s) => learningRateAt(s, steps, TRAIN_DEFAULTS.learningRate, steps, TRAIN_DEFAULTS.minLearningRateFraction)),
    );
    const record = AdamW.prototype.record;
    let speculative = 0;
    AdamW.prototype.record = function (this: AdamW<Sized>, lr, o, lossScale, ahead) {
      if (ahead) speculative++;
      return record.call(this, lr, o, overflowing.has(lr) ? 0 : lossScale, ahead);
    };
    try {
      // a checkpoint after every step makes the loop wait for each step before recording the next: one at a time
      const serial = await train({ ...options, out: join(out, "serial"), checkpointEvery: 1 }, { print: () => {} });
      assert.equal(speculative, 0);
      const pipelined = await train({ ...options, out: join(out, "pipelined"), checkpointEvery: steps }, { print: () => {} });
      assert.ok(speculative >= steps - 2, `${speculative} steps recorded ahead`);
      const plain = (log: typeof serial.log) => log.map(({ seconds: _, tokensPerSecond: __, ...rest }) => rest);
      assert.deepEqual(plain(pipelined.log), plain(serial.log));
      assert.deepEqual(
        serial.log.map((l) => l.skipped),
        [false, false, true, true, false, false, true, false, true],
      );
      pipelined.model.params.forEach((p, j) => assert.deepEqual(p.data, serial.model.params[j].data, p.name));
      const [a, b] = await Promise.all([serial, pipelined].map(async (r) => (await loadCheckpoint(r.checkpoint)).state));
      for (const key of ["step", "data", "rng", "lossScale"] as const) assert.deepEqual(b?.[key], a?.[key], key);
    } finally {
      AdamW.prototype.record = record;
      rmSync(out, { recursive: true, force: true });
    }
  },
);

test(
  "f16 training on tensor cores: the forward keeps f16 copies of q, k, v for the backward, whose gradients equal a backward from the float32 q, k, v",
  { skip: f16Skip },
  async (t) => {
    const gpu = await getDevice();
    const call = {
      kind: "moba",
      tokens: 77,
      qHeads: 4,
      kvHeads: 2,
      headDim: 32,
      blockSize: 16,
      topK: 3,
      cuSeqlens: Int32Array.of(0, 30, 77),
    } as const;
    const problem = { ...call, scale: 1 / Math.sqrt(call.headDim), precision: "f16" as const };
    if (!backwardReadsHalf(gpu, problem)) return t.skip(`${gpu.adapterInfo}: no tensor-core backward, which reads float32 q, k, v`);
    const backend = await webgpuModelBackend("f16");
    const seed = (n: number, s: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.37 + s));
    const grads = await backend.scope("test", async () => {
      const [q, k, v] = [4, 2, 2].map((heads, s) => backend.upload(seed(call.tokens * heads * call.headDim, s)));
      const dout = backend.upload(seed(call.tokens * call.qHeads * call.headDim, 9));
      const runs = [];
      for (const training of [true, false]) {
        const saved = await backend.attention(call, q, k, v, training);
        assert.equal(
          saved.inputs.q.f16 === true,
          training,
          `training ${training}: the backward's q is ${saved.inputs.q.f16 ? "an f16 copy" : "the float32 q"}`,
        );
        const g = await backend.attentionBackward(call, saved, dout);
        runs.push(await Promise.all([g.dq, g.dk, g.dv].map((x) => backend.download(x))));
      }
      return runs;
    });
    grads[0].forEach((x, i) => assert.deepEqual(x, grads[1][i], `gradient ${["dq", "dk", "dv"][i]}`));
  },
);
