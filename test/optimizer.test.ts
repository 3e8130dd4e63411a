// The optimizer and the schedule against their specification: the AdamW class (which computes
// the bias corrections, the clip factor and the decay itself) over several steps against the
// float64 loop of src/reference/adamw.ts, on every model backend; learningRateAt at the values
// that define it.
import assert from "node:assert/strict";
import { test } from "node:test";
import { AdamW, type AdamWOptions, learningRateAt } from "../src/model/adamw.js";
import { checkConfig } from "../src/model/config.js";
import { initModel, release } from "../src/model/llama.js";
import { ReferenceAdamW } from "../src/reference/adamw.js";
import { MODEL_BACKENDS, relativeError, rng, TINY } from "./helpers.js";

/** float32 storage of w, m and v against float64 over a few steps: a few ulps. */
const TOLERANCE = 1e-6;

for (const [name, make, skip] of MODEL_BACKENDS) {
  test(
    `${name}: AdamW over six steps (clipping on and off, decay on matrices only, resumed from its moments midway) equals the float64 reference`,
    { skip },
    async () => {
      const backend = await make();
      const model = initModel(checkConfig(TINY), 5);
      const o: AdamWOptions = { beta1: 0.8, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, gradClip: 1 };
      const reference = new ReferenceAdamW(model.params.map((p) => ({ w: p.data, decay: p.decay })));
      let optimizer = new AdamW(model, backend);
      const random = rng(9);
      // the global norm of each step's gradient (clipped to 1 when above it) and its learning rate
      const norms = [5, 0.3, 2, 0.6, 8, 1.5],
        lrs = [1e-2, 2e-2, 5e-3, 1e-2, 3e-2, 1e-2];
      for (const [step, norm] of norms.entries()) {
        if (step === 3) {
          // a resumed run: a new optimizer from the saved moments (the step count drives the bias correction)
          const moments = await optimizer.moments();
          assert.equal(moments.step, 3);
          optimizer.free();
          optimizer = new AdamW(model, backend, moments);
        }
        const grads = model.params.map((p) => Float32Array.from(p.grad, () => random() - 0.5));
        const size = Math.sqrt(grads.reduce((s, g) => s + g.reduce((a, x) => a + x * x, 0), 0));
        grads.forEach((g, j) => model.params[j].grad.set(g.map((x) => (x * norm) / size)));
        const want = reference.update(
          model.params.map((p) => p.grad),
          lrs[step],
          o,
        );
        const got = await backend.scope("test step", () => optimizer.update(lrs[step], o));
        await release(model); // the weights back on the host; the next update uploads the new gradients
        assert.ok(Math.abs(got - want) <= TOLERANCE * want, `step ${step}: norm ${got} vs ${want}`);
        const moments = await optimizer.moments();
        model.params.forEach((p, j) => {
          const r = reference.params[j];
          for (const [what, a, b] of [
            ["w", p.data, r.w],
            ["m", moments.m[j], r.m],
            ["v", moments.v[j], r.v],
          ] as const) {
            const error = relativeError(a, b);
            assert.ok(error <= TOLERANCE, `step ${step} ${p.name} ${what}: relative error ${error}`);
          }
        });
      }
      optimizer.free();
    },
  );
}

test("learningRateAt: linear warmup from lr / warmup at step 0, cosine to the floor at the last step, the floor after", () => {
  const lr = 3e-3,
    steps = 111,
    warmup = 10,
    floor = 0.1;
  const at = (step: number, s = steps, w = warmup) => learningRateAt(step, s, lr, w, floor);
  const close = (got: number, want: number, what: string) => assert.ok(Math.abs(got - want) <= 1e-15, `${what}: ${got} vs ${want}`);
  close(at(0), 3e-4, "step 0: one warmup step's share, not 0");
  close(at(4), 1.5e-3, "step 4");
  close(at(9), 3e-3, "the last warmup step");
  close(at(10), 3e-3, "the first cosine step");
  close(at(35), 3e-3 * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI / 4))), "a quarter of the cosine");
  close(at(60), 3e-3 * 0.55, "the middle of the cosine: halfway to the floor");
  close(at(110), 3e-4, "the last step: the floor");
  close(at(200), 3e-4, "past the last step: the floor");
  close(at(0, 111, 0), 3e-3, "no warmup: the full rate at step 0");
  close(at(0, 1, 0), 3e-4, "a single step is the last step");
  close(at(1, 2, 1), 3e-4, "warmup of 1 in 2 steps: the second is the last");
  close(learningRateAt(55, 100, 1, 0, 0), 0.5 * (1 + Math.cos((Math.PI * 55) / 99)), "floor 0");
});
