// The model as a whole: gradients against finite differences, MoBA = full when every block is
// selected, WebGPU = CPU, cached decoding = recomputing the prefix, packed sequences independent,
// the prefill forward (MLP in row chunks, last logits only) = the forward, and what each holds.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { ModelBackend, Sized } from "../src/backend.js";
import { cpuBackend } from "../src/cpu/model.js";
import { checkConfig, type LlamaConfig } from "../src/model/config.js";
import { decodeStep, KvCache, prefill } from "../src/model/decode.js";
import { AdamW } from "../src/model/adamw.js";
import { modelGating } from "../src/model/gating.js";
import {
  backward,
  type Batch,
  forward,
  initModel,
  lossOf,
  type Model,
  prefillForward,
  release,
  zeroGradients,
} from "../src/model/llama.js";
import { type GpuTensor, webgpuModelBackend } from "../src/webgpu/model.js";
import { gradients, MODEL_BACKENDS, randomBatch, referenceGating, relativeError, TINY, webgpuSkip } from "./helpers.js";

test("model gradients match finite differences along random directions, every parameter tensor", async () => {
  const model = initModel(checkConfig({ ...TINY, layer_attention: ["moba", "full"] }), 3);
  const batch = randomBatch(7, [0, 29, 40]);
  const { grads } = await gradients(model, batch, cpuBackend);
  const loss = async () => lossOf(await forward(model, batch, cpuBackend), cpuBackend);
  let seed = 11;
  for (const [j, p] of model.params.entries()) {
    // a random ±1 direction: the directional derivative sums every element's gradient
    const dir = Float32Array.from(p.data, () => ((seed = (Math.imul(seed, 69069) + 1) >>> 0) >>> 31 ? 1 : -1)); // the LCG's top bit (its low bit alternates)
    const analytic = grads[j].reduce((s, g, i) => s + g * dir[i], 0);
    // small enough that no MoBA block choice flips between the two evaluations (a flip is a jump in the loss)
    const h = 1e-3 / Math.sqrt(p.data.length);
    // in place: the CPU backend computes with param.data itself
    const base = Float32Array.from(p.data);
    p.data.set(base.map((x, i) => x + h * dir[i]));
    const up = await loss();
    p.data.set(base.map((x, i) => x - h * dir[i]));
    const down = await loss();
    p.data.set(base);
    const numeric = (up - down) / (2 * h);
    // float32 forward passes: central differences carry ~1e-3 relative noise at this step size
    // float32 forward passes: the loss (~200) carries ~1e-5 rounding, ~0.03 after dividing by 2h
    assert.ok(Math.abs(numeric - analytic) <= 1e-2 * Math.abs(analytic) + 0.05, `${p.name}: analytic ${analytic}, numeric ${numeric}`);
  }
});

test("MoBA layers with topK >= blocks equal full layers (loss and every gradient)", async () => {
  const model = initModel(checkConfig({ ...TINY, moba_chunk_size: 16, moba_topk: 3 }), 4);
  const batch = randomBatch(5, [0, 48, 60]); // at most 3 blocks of 16 per sequence
  const moba = await gradients(model, batch, cpuBackend, ["moba", "moba"]);
  const full = await gradients(model, batch, cpuBackend, ["full", "full"]);
  assert.ok(Math.abs(moba.loss - full.loss) <= 1e-5 * Math.abs(full.loss), `loss ${moba.loss} vs ${full.loss}`);
  moba.grads.forEach((g, j) =>
    assert.ok(relativeError(g, full.grads[j]) < 1e-5, `${model.params[j].name}: ${relativeError(g, full.grads[j])}`),
  );
  // and with fewer blocks selected the two differ (the check above can fail)
  const sparse = initModel(checkConfig({ ...TINY, moba_chunk_size: 8, moba_topk: 2 }), 4);
  const a = await gradients(sparse, batch, cpuBackend, ["moba", "moba"]),
    b = await gradients(sparse, batch, cpuBackend, ["full", "full"]);
  assert.ok(Math.abs(a.loss - b.loss) > 1e-4 * Math.abs(b.loss));
});

test("WebGPU model backend: loss and every gradient equal the CPU backend's", { skip: webgpuSkip }, async () => {
  const model = initModel(
    checkConfig({
      ...TINY,
      hidden_size: 24,
      intermediate_size: 70,
      num_attention_heads: 6,
      num_key_value_heads: 3,
      layer_attention: ["moba", "full"],
    }),
    6,
  );
  const batch = randomBatch(9, [0, 37, 70, 71]);
  const cpu = await gradients(model, batch, cpuBackend);
  const gpu = await gradients(model, batch, await webgpuModelBackend());
  assert.ok(Math.abs(cpu.loss - gpu.loss) <= 1e-5 * Math.abs(cpu.loss), `loss ${gpu.loss} vs ${cpu.loss}`);
  // different summation orders in float32 (measured ~2e-6 on lavapipe)
  gpu.grads.forEach((g, j) =>
    assert.ok(relativeError(g, cpu.grads[j]) < 1e-5, `${model.params[j].name}: ${relativeError(g, cpu.grads[j])}`),
  );
});

test("WebGPU model backend: three AdamW training steps give the CPU backend's losses and weights", { skip: webgpuSkip }, async () => {
  const config = checkConfig({ ...TINY, layer_attention: ["moba", "full"] });
  const run = async (backend: ModelBackend) => {
    const model = initModel(config, 12);
    const optimizer = new AdamW(model, backend);
    const losses: number[] = [];
    for (let step = 0; step < 3; step++) {
      losses.push(
        await backend.scope("test step", async () => {
          await zeroGradients(model, backend);
          const trace = await forward(model, randomBatch(20 + step, [0, 50, 64]), backend);
          await backward(model, trace, backend, 1 / 64);
          await optimizer.update(1e-2, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 0.5 }); // clipping active
          return lossOf(trace, backend);
        }),
      );
    }
    await release(model);
    return { losses, weights: model.params.map((p) => p.data) };
  };
  const cpu = await run(cpuBackend),
    gpu = await run(await webgpuModelBackend());
  cpu.losses.forEach((l, i) => assert.ok(Math.abs(l - gpu.losses[i]) <= 1e-5 * l, `step ${i}: ${gpu.losses[i]} vs ${l}`));
  // AdamW normalizes each update, so float32 differences in tiny gradients move weights by up to lr: compare norm-wise
  gpu.weights.forEach((w, j) =>
    assert.ok(
      relativeError(w, cpu.weights[j]) < 1e-4,
      `${config.num_hidden_layers} layers, tensor ${j}: ${relativeError(w, cpu.weights[j])}`,
    ),
  );
});

for (const [name, make, skip] of MODEL_BACKENDS) {
  test(
    `${name}: two identical sequences packed in one batch give bit-identical logits (positions and attention restart with each sequence)`,
    { skip },
    async () => {
      const backend = await make();
      const model = initModel(checkConfig({ ...TINY, layer_attention: ["moba", "full"] }), 13);
      const one = randomBatch(3, [0, 37]); // 37: the second copy starts mid-block and off every 4- or 16-row tile
      const T = 37,
        V = model.config.vocab_size;
      const twice: Batch = {
        tokens: Int32Array.of(...one.tokens, ...one.tokens),
        targets: Int32Array.of(...one.targets, ...one.targets),
        weights: Float32Array.of(...one.weights, ...one.weights),
        cuSeqlens: Int32Array.of(0, T, 2 * T),
      };
      const logits = await backend.scope("test", async () =>
        Float32Array.from(await backend.download((await forward(model, twice, backend)).logits)),
      );
      assert.deepEqual(logits.subarray(T * V), logits.subarray(0, T * V));
      await release(model);
    },
  );
}

for (const [name, attention] of [
  ["MoBA", ["moba", "moba"]],
  ["full", ["full", "full"]],
  ["hybrid", ["moba", "full"]],
] as const) {
  test(`${name} decoding with the KV cache equals recomputing the whole prefix (greedy, logits)`, async () => {
    const model = initModel(checkConfig({ ...TINY, layer_attention: [...attention] }), 8);
    const prompt = Int32Array.from({ length: 13 }, (_, i) => (i * 37) % 256);
    const cache = new KvCache(model, 60);
    let logits = await prefill(model, cache, prompt, cpuBackend);
    const tokens = [...prompt];
    for (let step = 0; step < 40; step++) {
      // recompute: a full forward pass over everything so far, last position's logits
      const T = tokens.length;
      const trace = await forward(
        model,
        { tokens: Int32Array.from(tokens), targets: new Int32Array(T), weights: new Float32Array(T), cuSeqlens: Int32Array.of(0, T) },
        cpuBackend,
      );
      const expected = (trace.logits as Float32Array).subarray((T - 1) * 256, T * 256);
      assert.ok(relativeError(logits, expected) < 1e-5, `position ${T}: ${relativeError(logits, expected)}`);
      let next = 0;
      for (let i = 1; i < 256; i++) if (expected[i] > expected[next]) next = i;
      tokens.push(next);
      logits = decodeStep(model, cache, next);
    }
  });
}

/** Tokens, hidden size and SwiGLU width of the memory tests' models. */
const [MEM_T, MEM_H, MEM_F] = [512, 64, 160];

/** The WebGPU model backend's peak bytes for `run` on a fresh model of `layers` layers ([MEM_H, MEM_F], extra config on top). */
async function peakBytesOf(
  layers: number,
  extra: Partial<LlamaConfig>,
  run: (model: Model, backend: ModelBackend<GpuTensor>) => Promise<void>,
): Promise<number> {
  const backend = await webgpuModelBackend("f32", false);
  const model = initModel(checkConfig({ ...TINY, hidden_size: MEM_H, intermediate_size: MEM_F, num_hidden_layers: layers, ...extra }), 3);
  await run(model, backend);
  await release(model);
  return backend.peakBytes!;
}

test(
  "WebGPU training step memory: the backward ends each layer's tensors, so a layer more costs its activations, not its gradients too",
  { skip: webgpuSkip },
  async () => {
    const [T, H, F] = [MEM_T, MEM_H, MEM_F];
    const peak = (layers: number) =>
      peakBytesOf(layers, { num_attention_heads: 4, num_key_value_heads: 2 }, (model, backend) =>
        backend.scope("step", async () => {
          await zeroGradients(model, backend);
          await backward(model, await forward(model, randomBatch(5, [0, T]), backend), backend, 1 / T);
        }),
      );
    // one layer's activations kept for the backward, float32: x, h1, q, attention out, mid, h2 [T, H]; k, v [T, H / 2]; g, u, m [T, F]; rstd ×2, lse [T, heads]
    const activations = 4 * T * (6 * H + H + 3 * F + 2 + 4);
    const gradients = 4 * T * (4 * H + 2 * H + 3 * F); // dx, dh2, dMid, dAttn, dq, dh1 (about H each), dk, dv, dm, dg, du
    const perLayer = (await peak(4)) - (await peak(2)); // 2 layers more
    // 1.3: buffer size classes (up to 12.5%) and MoBA's block choice, kept for the backward (measured 1.21; without the release 2.2)
    assert.ok(
      perLayer <= 2 * activations * 1.3,
      `2 layers more cost ${perLayer} bytes; their activations ${2 * activations}, gradients ${2 * gradients}`,
    );
  },
);

for (const [name, make, skip] of MODEL_BACKENDS) {
  test(
    `${name}: the prefill forward (MLP in chunks of rows, the last logits only) gives the forward's keys, values and last logits`,
    { skip },
    async () => {
      const backend = await make();
      const model = initModel(checkConfig({ ...TINY, layer_attention: ["moba", "full"] }), 4);
      const T = 23, // 3 blocks of 8: the MoBA layer's gate chooses
        V = model.config.vocab_size;
      const batch = randomBatch(9, [0, T]);
      const chunks = [5, T, 4096];
      const [want, ...prefills] = await backend.scope("test", async () => {
        const host = (xs: Sized[]) => Promise.all(xs.map(async (x) => Float32Array.from(await backend.download(x))));
        const trace = await forward(model, batch, backend);
        const all = await host([...trace.layers.flatMap((l) => [l.attn.inputs.k, l.attn.inputs.v]), trace.logits]);
        all[all.length - 1] = all[all.length - 1].slice((T - 1) * V); // the last position's logits
        const runs = [all];
        for (const rows of chunks) {
          const p = await prefillForward(model, batch.tokens, backend, { rows });
          runs.push(await host([...p.keys.flatMap((k, l) => [k, p.values[l]]), p.logits]));
        }
        return runs;
      });
      for (const [r, got] of prefills.entries())
        got.forEach((x, i) => {
          const error = relativeError(x, want[i]);
          assert.ok(error <= 1e-6, `rows per chunk ${chunks[r]}, tensor ${i} (keys and values by layer, then logits): ${error}`);
        });
      await release(model);
    },
  );
}

test(
  "WebGPU prefill memory: a layer more costs its keys and values (kept for the cache), not its activations",
  { skip: webgpuSkip },
  async () => {
    const [T, H, F] = [MEM_T, MEM_H, MEM_F];
    const peak = (layers: number) =>
      peakBytesOf(layers, { full_attention_last_layers: layers }, (model, backend) =>
        backend.scope("prefill", async () => void (await prefillForward(model, randomBatch(5, [0, T]).tokens, backend))),
      );
    const weights = 4 * (4 * H * (H / 2) + 2 * H * H + 3 * H * F + 2 * H); // q, o [H, H]; k, v [H / 2, H]; gate, up, down; norms
    const kv = 4 * T * H; // k and v [T, H / 2] float32
    const activations = 4 * T * (5 * H + 3 * F); // x, h1, q, attention out, mid [T, H]; g, u, m [T, F]
    const perLayer = ((await peak(4)) - (await peak(2))) / 2 - 2 * weights; // weights and their gradients are persistent
    // 1.3: buffer size classes (up to 12.5%); measured 0.82 of kv; a layer that kept its activations too would cost 13.5x kv
    assert.ok(perLayer <= kv * 1.3, `a layer more costs ${perLayer} bytes; its keys and values ${kv}, activations ${activations}`);
  },
);

test(
  "WebGPU: a view of a model with another config (attention kinds, block size) computes on the same resident weights",
  { skip: webgpuSkip },
  async () => {
    const backend = await webgpuModelBackend();
    const model = initModel(checkConfig({ ...TINY, layer_attention: ["full", "full"] }), 5);
    const view = { ...model, config: checkConfig({ ...model.config, layer_attention: ["moba", "moba"], moba_chunk_size: 16 }) };
    const batch = randomBatch(3, [0, 40]);
    const logitsOn = (m: typeof model, b: ModelBackend) =>
      b.scope("test", async () => Float32Array.from(await b.download((await forward(m, batch, b)).logits)));
    await logitsOn(model, backend);
    backend.resetPeak!();
    const held = backend.peakBytes!; // the weights and gradients, uploaded once
    const logits = await logitsOn(view, backend);
    backend.resetPeak!();
    assert.equal(backend.peakBytes, held, "no second copy of the weights");
    await release(model);
    assert.ok(relativeError(logits, await logitsOn(view, cpuBackend)) <= 1e-5, "the view's own config: MoBA, block 16");
  },
);

for (const [name, make, skip] of MODEL_BACKENDS) {
  test(
    `${name}: modelGating reports each MoBA layer's block choice (the reference's on the layer's q and k) and gate scores`,
    { skip },
    async () => {
      const backend = await make();
      const model = initModel(checkConfig({ ...TINY, layer_attention: ["moba", "full"] }), 5);
      const T = 45; // 6 blocks of 8, the last short; top-2: from block 2 on the gate chooses one past block of several
      const batch = randomBatch(13, [0, T]);
      const gating = await modelGating(model, batch.tokens, backend);
      assert.deepEqual(
        gating.map((l) => l.layer),
        [0],
        "the MoBA layer only",
      );
      // the layer's q and k from the forward on the CPU (the prefill's, measured bit for bit)
      const c = model.config;
      const { q, k } = (await forward(model, batch, cpuBackend)).layers[0].attn.inputs;
      const problem = { tokens: T, qHeads: 4, kvHeads: 2, headDim: c.hidden_size / 4, cuSeqlens: [0, T], blockSize: 8, topK: 2, scale: 1 };
      gating[0].heads.forEach(({ chosen, score }, h) => {
        const want = referenceGating(problem, q, k, h);
        assert.deepEqual([...chosen], want.chosen, `head ${h}: queries choosing each block`);
        // WebGPU's q and k differ from the CPU's by float32 rounding
        assert.ok(relativeError(score, Float64Array.from(want.score)) <= 1e-5, `head ${h}: gate scores ${score} vs ${want.score}`);
      });
      await release(model);
    },
  );
}
