// The WebGPU backend's host-side geometry and kernel choice, on the CPU (no device): block
// geometry of packed sequences, the tiles the kernels walk, the tile-shape policy, and which
// passes run on tensor cores.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { AttentionProblem } from "../src/attention/problem.js";
import { dkdvPass, dqPass, forwardPass, type Pass, storesDs } from "../src/webgpu/attention/paths.js";
import {
  type DeviceLimits,
  forwardShape,
  keyTiles,
  naturalTiles,
  plan,
  planKey,
  storableDs,
  storedDsBytes,
  storedDsStride,
  unionTiles,
} from "../src/webgpu/attention/plan.js";
import { MobaError } from "../src/tensor.js";
import { type GemmCall, hasMmaGemm, MMA_TILES, mmaTiles, planMmaGemm } from "../src/webgpu/gemm/index.js";
import type { MobaDevice } from "../src/webgpu/device.js";

/** Two sequences of 10 and 5 tokens in blocks of 4: blocks [0,4) [4,8) [8,10) | [10,14) [14,15). */
const problem = (topK: number, extra: Partial<AttentionProblem> = {}): AttentionProblem => ({
  tokens: 15,
  qHeads: 2,
  kvHeads: 1,
  headDim: 64,
  scale: 0.125,
  blockSize: 4,
  topK,
  cuSeqlens: Int32Array.of(0, 10, 15),
  ...extra,
});
/** The 8 words of tile i. */
const tile = (words: Uint32Array, i: number) => [...words.subarray(8 * i, 8 * i + 8)];

test("plan: the blocks of packed sequences", () => {
  const pl = plan(problem(2));
  assert.equal(pl.blocks, 5);
  assert.equal(pl.all, false);
  assert.equal(pl.width, 1);
  assert.deepEqual([...pl.offsets], [0, 3, 5]);
  assert.deepEqual([...pl.blockStart], [0, 4, 8, 10, 14]);
  assert.deepEqual([...pl.blockEnd], [4, 8, 10, 14, 15]);
  assert.deepEqual([...pl.seqStart], [0, 0, 0, 10, 10]);
  assert.deepEqual([...pl.seqEnd], [10, 10, 10, 15, 15]);
  assert.equal(plan(problem(3)).all, true); // no sequence has more than 3 blocks
  assert.throws(
    () => plan(problem(2, { headDim: 320 })),
    (e: unknown) => e instanceof MobaError && /headDim: expected at most 256/.test(e.message),
  );
});

test("plan: query tiles per block and head; the forward's own blocks carry the routed rounds' state", () => {
  const pl = plan(problem(2));
  const tiles = naturalTiles(pl, 2, true);
  assert.equal(tiles.count, (2 + 2 + 1 + 2 + 1) * 2);
  // (queryStart, count, keyStart, keyEnd), (head, gathered, carried, block)
  assert.deepEqual(tile(tiles.words, 0), [0, 2, 0, 2, 0, 0, 0, 0]); // a sequence's first block: nothing routed
  assert.deepEqual(tile(tiles.words, 2), [0, 2, 0, 2, 1, 0, 0, 0]); // head 1
  assert.deepEqual(tile(tiles.words, 4), [4, 2, 4, 6, 0, 0, 1, 0]); // block 1 carries
  assert.deepEqual(tile(tiles.words, 8), [8, 2, 8, 10, 0, 0, 1, 0]);
  assert.deepEqual(tile(tiles.words, 10), [10, 2, 10, 12, 0, 0, 0, 0]); // the second sequence's first block
  assert.deepEqual(tile(naturalTiles(pl, 2, false).words, 4), [4, 2, 4, 6, 0, 0, 0, 0]); // dq: nothing carried
});

test("plan: full attention lists the last blocks first, keys from the sequence start", () => {
  const full = plan(problem(Infinity));
  assert.equal(full.all, true);
  const tiles = naturalTiles(full, 16, true);
  assert.equal(tiles.count, 5 * 2);
  assert.deepEqual(tile(tiles.words, 0), [14, 1, 10, 15, 0, 0, 0, 0]);
  assert.deepEqual(tile(tiles.words, 9), [0, 4, 0, 4, 1, 0, 0, 0]);
});

test("plan: union tiles run MoBA as full attention's causal tiles, only for short sequences and few rows", () => {
  const pl = plan(problem(2));
  // the same tiles as full attention's, last blocks first, nothing carried (one round)
  assert.deepEqual(naturalTiles(pl, 16, false, true).words, naturalTiles(plan(problem(Infinity)), 16, true).words);
  assert.equal(unionTiles(pl), true); // 3 and 2 blocks, 30 query rows
  assert.equal(unionTiles(pl, 2), false); // the first sequence has 3 blocks
  assert.equal(unionTiles(pl, 3, 29), false); // 30 rows
  assert.equal(unionTiles(plan(problem(Infinity))), false); // full attention
  assert.throws(
    () => unionTiles(pl, 33),
    (e: unknown) => e instanceof MobaError && /maxBlocks must be at most 32/.test(e.message),
  );
  const long = (tokens: number, qHeads: number) =>
    unionTiles(plan(problem(3, { tokens, qHeads, kvHeads: 1, blockSize: 512, cuSeqlens: Int32Array.of(0, tokens) })));
  assert.deepEqual([long(4096, 1), long(4096, 8), long(8192, 1)], [true, false, false]); // as measured on the H200
  assert.notEqual(planKey(pl), planKey(plan(problem(2, { cuSeqlens: Int32Array.of(0, 9, 15) }))));
});

test("plan: key tiles with the end of their natural queries", () => {
  const moba = keyTiles(plan(problem(2)), 4);
  assert.equal(moba.count, 5);
  assert.deepEqual(tile(moba.words, 2), [0, 0, 8, 10, 0, 0, 10, 2]); // MoBA: the block's own queries
  const full = keyTiles(plan(problem(3)), 2);
  assert.equal(full.count, 2 + 2 + 1 + 2 + 1);
  assert.deepEqual(tile(full.words, 1), [2, 0, 2, 4, 0, 0, 10, 0]); // full: every later query of the sequence; word 0 the offset in the block
});

const device = (limits: Partial<DeviceLimits> = {}): DeviceLimits => ({
  software: false,
  maxWorkgroupStorage: 49152,
  mma16: false,
  storageBuffersPerStage: 8,
  maxStorageBinding: 1 << 30,
  ...limits,
});

test("tile shapes: 16 (8 above headDim 128) rows, the other side as large as workgroup memory allows", () => {
  assert.deepEqual(forwardShape(device({ software: true }), 64), { headDim: 64, TQ: 16, TK: 32, unroll: false, input: "f32" });
  assert.deepEqual(forwardShape(device({ software: true }), 256, "f16"), { headDim: 256, TQ: 8, TK: 8, unroll: false, input: "f16" }); // 32 KiB on software
  assert.deepEqual(forwardShape(device(), 256), { headDim: 256, TQ: 8, TK: 16, unroll: true, input: "f32" });
  assert.throws(
    () => forwardShape(device({ maxWorkgroupStorage: 1024 }), 64),
    (e: unknown) => e instanceof MobaError && /more workgroup memory than 1024/.test(e.message),
  );
});

test("paths: tensor cores only in the f16 path, on a device with them, where headDim and memory allow", () => {
  const f16 = problem(2, { precision: "f16" });
  const mma = device({ mma16: true, storageBuffersPerStage: 10 });
  const names = (gpu: DeviceLimits, p: AttentionProblem) =>
    [forwardPass(gpu, p), dqPass(gpu, p), dkdvPass(gpu, p)].map((pass) => pass.kernel);
  assert.deepEqual(names(mma, problem(2)), ["forward", "dq", "dkdv"]);
  assert.deepEqual(names(mma, f16), ["forwardMma", "dqMma", "dkdvMma"]);
  assert.deepEqual(names(device({ mma16: true }), f16), ["forwardMma", "dq", "dkdvMma"]); // dq needs 9 storage buffers
  assert.deepEqual(names(mma, { ...f16, headDim: 40 }), ["forward", "dq", "dkdv"]);
  assert.deepEqual(names(device(), f16), ["forward", "dq", "dkdv"]);
  assert.equal(forwardPass(device(), f16).shape.input, "f16"); // f32 arithmetic on f16 copies
  const forward = forwardPass(mma, f16);
  assert.deepEqual([forward.tensorCores, forward.shape.TQ, forward.shape.TK], [true, 16, 64]);
  // dk/dv: 32 keys per workgroup at headDim 64, 64 above where they fit, else 32
  assert.equal(dkdvPass(mma, f16).shape.TK, 32);
  assert.equal(dkdvPass(mma, { ...f16, headDim: 128 }).shape.TK, 64);
  assert.equal(dkdvPass({ ...mma, maxWorkgroupStorage: 41000 }, { ...f16, headDim: 128 }).shape.TK, 32);
  assert.equal(dkdvPass({ ...mma, maxWorkgroupStorage: 16384 }, f16).kernel, "dkdv"); // not even 32 keys fit: the float32 kernel
});

test("stored dS: its rows and bytes, the key tiles' offsets in their blocks, and where the policy stores it", () => {
  const aligned = problem(3, { tokens: 160, cuSeqlens: Int32Array.of(0, 32, 160), blockSize: 16, precision: "f16" });
  const pl = plan(aligned);
  // 2 query heads x 160 tokens x (own + 2 routed) rows, 16 more, of 64 f16
  assert.equal(storedDsBytes(pl), (2 * 160 * 3 + 16) * 64 * 2);
  const wide = problem(2, { tokens: 400, cuSeqlens: Int32Array.of(0, 400), blockSize: 65 }); // 7 blocks, 1 routed a query
  assert.equal(storedDsBytes(plan(wide)), (2 * 400 * 2 + 16) * 128 * 2); // rows of 128
  assert.equal(storableDs(pl, storedDsBytes(pl)), true);
  assert.equal(storableDs(pl, storedDsBytes(pl) - 1), false); // over the bytes allowed
  assert.equal(storableDs(plan({ ...aligned, cuSeqlens: Int32Array.of(0, 40, 160) }), 1 << 30), false); // a block starts at 40
  assert.equal(storableDs(plan({ ...aligned, blockSize: 24 }), 1 << 30), false);
  assert.equal(storableDs(plan({ ...aligned, topK: Infinity }), 1 << 30), false); // full attention: dS is tokens²
  // key tiles of 32 keys over blocks of 48: word 0 is the first key's offset in its block
  const tiles = keyTiles(plan({ ...aligned, blockSize: 48, topK: 2 }), 32);
  const words = (i: number) => Array.from(tiles.words.subarray(8 * i, 8 * i + 8));
  assert.deepEqual(words(0), [0, 0, 0, 32, 0, 0, 32, 0]); // block [0, 32): the first sequence's only block
  assert.deepEqual(words(1), [0, 0, 32, 64, 0, 0, 80, 1]); // block [32, 80)
  assert.deepEqual(words(2), [32, 0, 64, 80, 0, 0, 80, 1]);
  const mma = device({ mma16: true, storageBuffersPerStage: 9 });
  assert.equal(storesDs(mma, aligned), true);
  assert.deepEqual([dqPass(mma, aligned).kernel, dkdvPass(mma, aligned).kernel], ["dqStored", "dkdvMmaStoringDs"]);
  assert.equal(storesDs(mma, { ...aligned, precision: "f32" }), false);
  assert.equal(storesDs(device({ mma16: true }), aligned), false); // 8 storage buffers a stage
  assert.equal(storesDs({ ...mma, maxStorageBinding: storedDsBytes(pl) - 1 }, aligned), false);
  assert.equal(storesDs(mma, { ...aligned, blockSize: 24 }), false);
  // a harness's variant overrides the policy both ways
  assert.equal(dqPass(mma, aligned, { tensorCores: true, TK: 64 }).kernel, "dqMma");
  assert.equal(dkdvPass(device(), aligned, { tensorCores: true, TK: 32, storedDs: true }).kernel, "dkdvMmaStoringDs");
});

/**
 * The own blocks' stored dS elements dq reads that the dk/dv kernel never writes, by simulating both
 * kernels' loops over the host's tiles. dk/dv (dkdvMma.wgsl.ts, storeChunk): a key tile writes its
 * block's own queries from its first key to the block's end, every column of its keys (word 0: their
 * offset in the block). dq (dqMma.wgsl.ts, dqStoredWgsl): subgroup sg of a 64-row own tile reads its
 * 16 rows at the 16-key steps from the block's start to `keyEnd`. Routed rows are whole blocks that
 * every key tile of the block writes, so only own rows can be missed.
 */
function unwrittenReads(pl: ReturnType<typeof plan>, keys: number, keyEnd: (tileEnd: number, sgFirstRow: number) => number): number {
  const stride = storedDsStride(pl.p.blockSize);
  const written = new Set<number>();
  const kt = keyTiles(pl, keys);
  for (let i = 0; i < kt.count; i++) {
    const [offset, , keyStart, , , , naturalEnd] = kt.words.subarray(8 * i, 8 * i + 8);
    for (let q = keyStart; q < naturalEnd; q++) for (let c = offset; c < offset + keys; c++) written.add(q * stride + c);
  }
  let missed = 0;
  const qt = naturalTiles(pl, 64, false);
  for (let i = 0; i < qt.count; i++) {
    const [t0, count, blockStart, end] = qt.words.subarray(8 * i, 8 * i + 4);
    for (let sg = 0; 16 * sg < count; sg++)
      for (let k0 = blockStart; k0 < keyEnd(end, t0 + 16 * sg); k0 += 16)
        for (let row = t0 + 16 * sg; row < Math.min(t0 + 16 * sg + 16, t0 + count); row++)
          for (let c = k0 - blockStart; c < k0 - blockStart + 16; c++) if (!written.has(row * stride + c)) missed++;
  }
  return missed;
}

test("stored dS: every element of an own block dq reads, the dk/dv kernel writes (both kernels' loops simulated)", () => {
  const src = (tileEnd: number, sgFirstRow: number) => Math.min(tileEnd, sgFirstRow + 16); // dqStoredWgsl's keyEnd
  const toTileEnd = (tileEnd: number) => tileEnd; // every subgroup to the tile's last key: reads unwritten dS
  for (const [cu, blockSize] of [
    [[0, 48, 400], 48],
    [[0, 16, 16, 528], 64],
    [[0, 2048], 512],
    [[0, 336], 80],
  ] as const) {
    const pl = plan(problem(3, { tokens: cu[cu.length - 1], cuSeqlens: Int32Array.from(cu), blockSize, qHeads: 1, precision: "f16" }));
    assert.ok(storableDs(pl, 1 << 30), `cuSeqlens [${cu}], block ${blockSize}: MoBA, blocks on 16-key tiles`);
    for (const keys of [32, 64]) {
      assert.equal(unwrittenReads(pl, keys, src), 0, `cuSeqlens [${cu}], block ${blockSize}, dk/dv on ${keys} keys`);
    }
    assert.ok(unwrittenReads(pl, 32, toTileEnd) > 0, `cuSeqlens [${cu}]: the simulation finds the reads past a row's 16-key tile`);
  }
});

test("paths: a forced variant (the kernel harnesses in dev/attention/) overrides the policy, precision and device alike", () => {
  const shape = (pass: Pass) => [pass.kernel, pass.shape.TQ, pass.shape.TK].join(" ");
  const f32 = problem(2);
  assert.equal(shape(forwardPass(device(), f32, { tensorCores: true, TK: 32 })), "forwardMma 16 32");
  assert.equal(
    shape(forwardPass(device({ mma16: true }), problem(2, { precision: "f16" }), { tensorCores: false, TQ: 16, TK: 8 })),
    "forward 16 8",
  );
  assert.equal(shape(dqPass(device(), f32, { tensorCores: true, TK: 16 })), "dqMma 16 16");
  assert.equal(shape(dqPass(device(), f32, { tensorCores: false, TQ: 16, TK: 4 })), "dq 16 4");
  const dkdvMma = dkdvPass(device(), f32, { tensorCores: true, TK: 32 });
  assert.deepEqual([dkdvMma.kernel, dkdvMma.shape.TK], ["dkdvMma", 32]); // keys per workgroup; its queries per chunk are the kernel's own
  assert.equal(shape(dkdvPass(device(), f32, { tensorCores: false, TQ: 8, TK: 16 })), "dkdv 8 16");
  assert.equal(forwardPass(device(), problem(2, { precision: "f16" }), { tensorCores: false, TQ: 16, TK: 8 }).shape.input, "f16");
});

test("tensor-core GEMM plan: the 128 x 256 tile only where its columns divide N and it fills the GPU, the tiles a device's workgroup memory holds", () => {
  const call = (M: number, N: number, K: number): GemmCall => ({ M, N, K, aTransposed: false, bTransposed: false, accumulate: false });
  const tileOf = (c: GemmCall, tiles = MMA_TILES) => {
    const { shape, splits } = planMmaGemm(c, tiles);
    return `${shape.tileM}x${shape.tileN}/${splits}`;
  };
  assert.equal(tileOf(call(32768, 512, 1344)), "128x256/1"); // the step's down projection: 512 tiles
  assert.equal(tileOf(call(32768, 1344, 512)), "128x128/1"); // 1344 columns: a partial sixth column of 256
  assert.equal(tileOf(call(32768, 256, 512)), "128x128/1"); // 256 tiles of 128 x 256 do not fill the GPU
  assert.equal(tileOf(call(1344, 512, 32768)), "64x64/4"); // few tiles: the smallest, K split 4 ways (168 tiles, 528 workgroups aimed at)
  const device = (maxWorkgroupStorage: number) => ({ mma16: true, maxWorkgroupStorage }) as unknown as MobaDevice;
  assert.deepEqual(mmaTiles(device(49152)), MMA_TILES);
  const small = mmaTiles(device(32768));
  assert.ok(!small.includes(MMA_TILES[0]) && small.length === 2, `${small.length} tiles fit 32 KiB`);
  assert.equal(tileOf(call(32768, 512, 1344), small), "128x128/1");
  assert.ok(hasMmaGemm(device(32768)));
  assert.ok(!hasMmaGemm(device(4096)));
});
