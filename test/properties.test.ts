// Properties of MoBA that hold for any input, checked on every backend (the gate-order and thread
// tests on the CPU, whose float64 gate reproduces the reference bit for bit), and a fixed packed
// batch against the reference for what otherwise only the random runs would catch.
import assert from "node:assert/strict";
import { test } from "node:test";
import { blockMeans, blockOffsets, routeAll } from "../src/attention/blocks.js";
import { mobaProblem } from "../src/attention/problem.js";
import { splitByCost } from "../src/cpu/pool.js";
import { blockGating, mobaAttention, mobaAttentionBackward, type Tensor } from "../src/index.js";
import { referenceSelection } from "../src/reference/attention.js";
import {
  BACKENDS,
  type Case,
  compareWithReference,
  makeCase,
  referenceGating,
  referenceProblem,
  relativeError,
  rng,
  runImplementation,
} from "./helpers.js";

/**
 * A fixed packed batch (the random runs' seeds change every run): an empty and a length-1
 * sequence, a sequence starting mid-block whose first queries have fewer past blocks than
 * topK - 1 (per-sequence block counts, not global ones), and a last sequence of 8 blocks whose
 * keys repeat its first block's, so every gate score of its queries ties.
 */
function fixedCase(): Case {
  const c = makeCase(21, { cuSeqlens: [0, 45, 45, 46, 75, 139], qHeads: 4, kvHeads: 2, headDim: 8, blockSize: 8, topK: 4 });
  const row = c.kvHeads * c.headDim;
  for (let t = 8; t < 64; t++) c.k.data.copyWithin((75 + t) * row, (75 + (t % 8)) * row, (75 + (t % 8) + 1) * row);
  return c;
}

test("routing: the own block plus exactly min(topK - 1, i) past blocks, equal to the reference's choice", async () => {
  for (const [seed, blockSize, topK] of [
    [1, 5, 3],
    [2, 1, 4],
    [3, 16, 1],
    [4, 7, 6],
  ] as const) {
    const c = makeCase(seed, { cuSeqlens: [0, 70, 70, 71, 160], qHeads: 4, kvHeads: 2, headDim: 8, blockSize, topK });
    const { routing, lse } = await mobaAttention(c, c);
    assert.deepEqual(routing.shape, [c.tokens, c.qHeads, topK - 1]);
    const width = topK - 1;
    for (let b = 0; b + 1 < c.cuSeqlens.length; b++) {
      const start = c.cuSeqlens[b];
      const length = c.cuSeqlens[b + 1] - start;
      for (let h = 0; h < c.qHeads; h++) {
        const selection = referenceSelection(referenceProblem(c), c.q.data, c.k.data, start, length, h);
        for (let p = 0; p < length; p++) {
          const i = Math.floor(p / blockSize);
          const row = (start + p) * c.qHeads + h;
          const chosen = [...routing.data.subarray(row * width, row * width + Math.min(width, i))];
          const expected = selection[p].flatMap((on, j) => (on && j !== i ? [j] : []));
          assert.ok(selection[p][i], "the reference keeps the own block");
          assert.deepEqual(chosen, expected, `seed ${seed} position ${p} head ${h}`);
          assert.equal(chosen.length + 1, Math.min(topK, i + 1));
          // the own block is attended: lse >= the query's score against its own key
          let self = 0;
          for (let d = 0; d < c.headDim; d++)
            self += c.q.data[row * c.headDim + d] * c.k.data[((start + p) * c.kvHeads + Math.floor(h / 2)) * c.headDim + d];
          assert.ok(lse.data[row] >= c.scale * self - 1e-5, `lse ${lse.data[row]} < own score ${c.scale * self}`);
        }
      }
    }
  }
});

test("worker threads give the same forward bit for bit, and the same gradients, the same in every run", async () => {
  const c = makeCase(15, { cuSeqlens: [0, 300, 301, 700], qHeads: 4, kvHeads: 1, headDim: 16, blockSize: 32, topK: 3 });
  const one = await runImplementation(c, 1);
  const two = await runImplementation(c, 2);
  assert.deepEqual(one.out.data, two.out.data);
  assert.deepEqual(one.lse.data, two.lse.data);
  for (const name of ["dq", "dk", "dv"] as const) assert.ok(relativeError(two[name].data, one[name].data) < 1e-6, name);
  // the threads' dq partials are summed in a fixed order (and each thread's dk, dv blocks are its own)
  const again = await runImplementation(c, 2);
  for (const name of ["dq", "dk", "dv"] as const) assert.deepEqual(again[name].data, two[name].data, name);
});

test("the backward's thread ranges cover every unit once, in order, each cut at the boundary nearest its share", () => {
  const split = (cost: number[], parts: number) => splitByCost(Float64Array.from(cost), parts);
  // MoBA's 16K backward (unit costs in 10^4 pairs): crossing the half after unit 8 would give the first range 53%
  const moba = [
    235, 178, 156, 143, 136, 123, 113, 100, 97, 83, 76, 72, 65, 61, 73, 72, 57, 57, 54, 49, 49, 52, 45, 35, 38, 37, 35, 32, 31, 30, 28, 26,
  ];
  assert.deepEqual(split(moba, 2), [
    [0, 8],
    [8, 32],
  ]);
  assert.deepEqual(split([1, 1, 1, 1, 1, 1, 1], 3), [
    [0, 2],
    [2, 5],
    [5, 7],
  ]);
  assert.deepEqual(split([5], 2), [[0, 1]]); // fewer units than parts: fewer ranges
  assert.deepEqual(split([], 2), []);
  for (let seed = 1; seed <= 20; seed++) {
    const cost = Array.from({ length: 1 + ((seed * 7) % 40) }, (_, i) => 1 + ((i * seed * 13) % 17));
    const ranges = split(cost, 1 + (seed % 5));
    assert.equal(ranges[0][0], 0);
    assert.equal(ranges[ranges.length - 1][1], cost.length);
    ranges.forEach(([from, to], i) => {
      assert.ok(to > from, `seed ${seed}: empty range`);
      if (i > 0) assert.equal(from, ranges[i - 1][1], `seed ${seed}: a gap or overlap`);
    });
  }
});

test("the comparison catches a wrong implementation (a harness that cannot fail is a bug)", async () => {
  const c = makeCase(17, { cuSeqlens: [0, 120], qHeads: 1, kvHeads: 1, headDim: 8, blockSize: 10, topK: 3 });
  assert.deepEqual(await compareWithReference(c), []);
  const fewerBlocks = await compareWithReference(c, 1, (x, threads) => runImplementation({ ...x, topK: x.topK - 1 }, threads));
  assert.ok(
    fewerBlocks.some((f) => f.includes("out relative error")),
    fewerBlocks.join("\n"),
  );
  const fullInstead = await compareWithReference(c, 1, (x, threads) => runImplementation({ ...x, topK: Infinity }, threads));
  assert.ok(
    fullInstead.some((f) => f.includes("dk relative error")),
    fullInstead.join("\n"),
  );
});

test("the CPU's two gates (WebAssembly in the forward; blocks.ts's routeAll: the scalar fallback, a backward without the routing, decoding) choose the same blocks, ties to the lower block", async () => {
  const c = makeCase(23, { cuSeqlens: [0, 700, 1500, 1600], qHeads: 4, kvHeads: 2, headDim: 33, blockSize: 16, topK: 4 });
  // the last sequence's keys all equal: every score of its queries ties
  c.k.data.fill(0.25, 1500 * c.kvHeads * c.headDim);
  const p = mobaProblem(c, c);
  const offsets = blockOffsets(p);
  const { routing } = await mobaAttention(c, c);
  const past = new Int32Array(routing.data.length);
  routeAll(p, c.q.data, blockMeans(p, c.k.data, offsets), offsets, past);
  assert.deepEqual(past, routing.data);
  for (let t = 1500 + 3 * 16; t < 1600; t++) assert.deepEqual([...past.subarray(t * 4 * 3, t * 4 * 3 + 3)], [0, 1, 2], `token ${t}`);
});

for (const [backend, skip] of BACKENDS) {
  test(`${backend}: ties in the gate go to the lower block index`, { skip }, async () => {
    // all keys equal: every past block has the same score, so the first topK - 1 blocks win
    const tokens = 40,
      blockSize = 4,
      topK = 3;
    const random = rng(7);
    const q: Tensor = { data: Float32Array.from({ length: tokens * 2 }, () => random() - 0.5), shape: [tokens, 1, 2] };
    const k: Tensor = { data: new Float32Array(tokens * 2).fill(0.25), shape: [tokens, 1, 2] };
    const { routing } = await mobaAttention({ q, k, v: k }, { blockSize, topK, backend });
    for (let t = 2 * blockSize; t < tokens; t++) assert.deepEqual([...routing.data.subarray(t * 2, t * 2 + 2)], [0, 1], `token ${t}`);
  });

  test(
    `${backend}: a fixed packed batch with tied gate scores equals the reference (forward and backward); ties go to the lower blocks`,
    { skip },
    async () => {
      const c = fixedCase();
      // the GPU gates in float32: its choice is checked to be a top-k, then replayed in the reference
      assert.deepEqual(
        await compareWithReference(c, undefined, (x, threads) => runImplementation(x, threads, backend), backend === "webgpu"),
        [],
      );
      // the tied sequence's blocks are exact copies, so their scores are equal in float32 too: the lowest blocks win
      const { routing } = await mobaAttention(c, { blockSize: 8, topK: 4, backend });
      for (let t = 75; t < 139; t++) {
        const n = Math.min(3, Math.floor((t - 75) / 8));
        for (let h = 0; h < 4; h++)
          assert.deepEqual([...routing.data.subarray((t * 4 + h) * 3, (t * 4 + h) * 3 + n)], [0, 1, 2].slice(0, n), `token ${t} head ${h}`);
      }
    },
  );

  test(`${backend}: full attention equals MoBA with topK >= blocks`, { skip }, async () => {
    const c = makeCase(11, { cuSeqlens: [0, 100, 333], qHeads: 4, kvHeads: 2, headDim: 16, blockSize: 10, topK: 24 });
    const moba = await runImplementation(c, undefined, backend);
    const full = await runImplementation({ ...c, topK: Infinity }, undefined, backend);
    for (const name of ["out", "lse", "dq", "dk", "dv"] as const) {
      const error = relativeError(moba[name].data, full[name].data);
      assert.ok(error < 1e-6, `${name}: ${error}`);
    }
  });

  test(`${backend}: a sequence's result does not change when another sequence in the batch changes`, { skip }, async () => {
    const c = makeCase(12, { cuSeqlens: [0, 90, 200], qHeads: 2, kvHeads: 1, headDim: 8, blockSize: 16, topK: 2 });
    const changed = makeCase(13, { ...c });
    // keep the second sequence of c, replace the first with other data
    for (const name of ["q", "k", "v", "dout"] as const) {
      const rowSize = c[name].data.length / c.tokens;
      changed[name].data.set(c[name].data.subarray(90 * rowSize), 90 * rowSize);
    }
    const a = await runImplementation(c, undefined, backend);
    const b = await runImplementation(changed, undefined, backend);
    for (const name of ["out", "lse", "dq", "dk", "dv"] as const) {
      const rowSize = a[name].data.length / c.tokens;
      const [kept, again] = [a[name].data.subarray(90 * rowSize), b[name].data.subarray(90 * rowSize)];
      // bit for bit, except the GPU's dk/dv, whose per-block query lists are filled by atomics in any order
      if (backend === "webgpu" && (name === "dk" || name === "dv")) assert.ok(relativeError(again, kept) < 1e-6, name);
      else assert.deepEqual(again, kept, name);
      assert.notDeepEqual(
        a[name].data.subarray(0, 90 * rowSize),
        b[name].data.subarray(0, 90 * rowSize),
        `${name}: the first sequence did change`,
      );
    }
  });

  test(`${backend}: GQA equals explicitly repeated K/V`, { skip }, async () => {
    const c = makeCase(14, { cuSeqlens: [0, 57, 150], qHeads: 6, kvHeads: 2, headDim: 5, blockSize: 8, topK: 3 });
    const repeat = (t: Tensor): Tensor => {
      const out = new Float32Array(c.tokens * 6 * 5);
      for (let token = 0; token < c.tokens; token++) {
        for (let h = 0; h < 6; h++)
          out.set(t.data.subarray((token * 2 + Math.floor(h / 3)) * 5, (token * 2 + Math.floor(h / 3) + 1) * 5), (token * 6 + h) * 5);
      }
      return { data: out, shape: [c.tokens, 6, 5] };
    };
    const gqa = await runImplementation(c, undefined, backend);
    const mha = await runImplementation({ ...c, kvHeads: 6, k: repeat(c.k), v: repeat(c.v) }, undefined, backend);
    assert.deepEqual(gqa.out.data, mha.out.data);
    assert.deepEqual(gqa.lse.data, mha.lse.data);
    assert.deepEqual(gqa.dq.data, mha.dq.data);
    // dk of a kv head is the sum over the query heads that share it
    for (const name of ["dk", "dv"] as const) {
      const summed = new Float32Array(c.tokens * 2 * 5);
      for (let token = 0; token < c.tokens; token++) {
        for (let h = 0; h < 6; h++) {
          for (let d = 0; d < 5; d++) summed[(token * 2 + Math.floor(h / 3)) * 5 + d] += mha[name].data[(token * 6 + h) * 5 + d];
        }
      }
      assert.ok(relativeError(gqa[name].data, summed) < 1e-6, name);
    }
  });

  test(`${backend}: the backward recomputes the routing when the forward's is not passed`, { skip }, async () => {
    const c = makeCase(16, { cuSeqlens: [0, 200], qHeads: 2, kvHeads: 2, headDim: 4, blockSize: 9, topK: 4 });
    const options = { blockSize: c.blockSize, topK: c.topK, backend };
    const fwd = await mobaAttention(c, options);
    const given = await mobaAttentionBackward({ ...c, out: fwd.out, lse: fwd.lse, dout: c.dout, routing: fwd.routing }, options);
    const recomputed = await mobaAttentionBackward({ ...c, out: fwd.out, lse: fwd.lse, dout: c.dout }, options);
    // the GPU's inverted index is filled with atomics, so dk/dv sum in a varying order there
    for (const name of ["dq", "dk", "dv"] as const) assert.ok(relativeError(recomputed[name].data, given[name].data) < 1e-6, name);
  });
}

test("blockGating: the queries of each block that chose each key block, and their mean gate score, are the reference's", async () => {
  // a short last block; every past block selected (the routing table has width 0); the own block only (topK 1)
  for (const [seed, tokens, blockSize, topK] of [
    [5, 70, 8, 3],
    [6, 40, 8, 6],
    [7, 33, 4, 1],
  ] as const) {
    const c = makeCase(seed, { cuSeqlens: [0, tokens], qHeads: 4, kvHeads: 2, headDim: 8, blockSize, topK });
    const { routing } = await mobaAttention(c, c);
    const gating = blockGating(c, c, routing);
    const blocks = Math.ceil(tokens / blockSize);
    assert.equal(gating.blocks, blocks);
    assert.deepEqual(
      [...gating.rows],
      Array.from({ length: blocks }, (_, i) => Math.min(blockSize, tokens - i * blockSize)),
    );
    gating.heads.forEach(({ chosen, score }, h) => {
      const want = referenceGating(referenceProblem(c), c.q.data, c.k.data, h);
      assert.deepEqual([...chosen], want.chosen, `seed ${seed}, head ${h}: queries choosing each block`);
      const error = Math.max(...score.map((s, at) => Math.abs(s - want.score[at]))) / Math.max(...want.score.map(Math.abs));
      assert.ok(error <= 1e-12, `seed ${seed}, head ${h}: gate scores off by ${error} (relative to the largest)`);
    });
  }
});
