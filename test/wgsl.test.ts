// Properties of the generated WGSL that no adapter here can check. On the H100 (Dawn, driver 580)
// a 4-byte workgroup variable in a shader with subgroup matrices made every matrix result wrong
// (docs/benchmarks.md, variant run 22): the tensor-core kernels must declare only workgroup
// variables whose sizes are multiples of 16 bytes. And every kernel object's binding list is what
// its WGSL declares.
import assert from "node:assert/strict";
import { test } from "node:test";
import { DELTA, DKDV, DQ } from "../src/webgpu/attention/backward.wgsl.js";
import { DKDV_MMA, DKDV_MMA_STORING_DS, dkdvMmaSharedBytes, dkdvMmaWgsl, MMA_DKDV_KEYS } from "../src/webgpu/attention/dkdvMma.wgsl.js";
import { DQ_MMA, DQ_STORED, dqMmaWgsl } from "../src/webgpu/attention/dqMma.wgsl.js";
import { TO_F16, TO_F16_TILED } from "../src/webgpu/attention/f16.wgsl.js";
import { FORWARD } from "../src/webgpu/attention/forward.wgsl.js";
import { FORWARD_MMA, forwardMmaWgsl } from "../src/webgpu/attention/forwardMma.wgsl.js";
import { GATE } from "../src/webgpu/attention/gate.wgsl.js";
import { BLOCK_SUMS, GATHERED_TILES, SCAN, SCATTER } from "../src/webgpu/attention/routing.wgsl.js";
import * as Decode from "../src/webgpu/decode.wgsl.js";
import type { Kernel } from "../src/webgpu/kernel.js";

const SCALAR_BYTES: Record<string, number> = { f16: 2, f32: 4, u32: 4, i32: 4 };

/** Bytes of a WGSL type written as a scalar, vecN<scalar> or array<element, count>. */
function bytes(type: string): number {
  const array = /^array<(.+),\s*(\d+)>$/.exec(type);
  if (array) return bytes(array[1].trim()) * Number(array[2]);
  const vector = /^vec([234])<(\w+)>$/.exec(type);
  if (vector) return Number(vector[1]) * SCALAR_BYTES[vector[2]];
  const size = SCALAR_BYTES[type];
  if (size === undefined) throw new Error(`unknown WGSL type ${type}`);
  return size;
}

/** [name, type, bytes] of every var<workgroup> of a shader. */
function workgroupVariables(wgsl: string): [string, string, number][] {
  return [...wgsl.matchAll(/var<workgroup>\s+(\w+)\s*:\s*([^;]+);/g)].map((m) => [m[1], m[2].trim(), bytes(m[2].trim())]);
}

test("the tensor-core kernels declare only workgroup variables of a multiple of 16 bytes", () => {
  assert.equal(bytes("array<vec4<f16>, 3>"), 24); // the parser itself
  assert.deepEqual(workgroupVariables("var<workgroup> flag: u32;\nvar<workgroup> rows: array<f32, 16>;"), [
    ["flag", "u32", 4],
    ["rows", "array<f32, 16>", 64],
  ]);
  for (const headDim of [16, 32, 48, 64, 128, 256]) {
    for (const TK of [16, 32, 64]) {
      const shaders: [string, string][] = [
        ["forward", forwardMmaWgsl({ headDim, TK, union: false })],
        ["forward over union tiles", forwardMmaWgsl({ headDim, TK, union: true })],
      ];
      if (MMA_DKDV_KEYS.includes(TK)) shaders.push(["dkdv", dkdvMmaWgsl({ headDim, keys: TK })]);
      if (2 * (TK / 16) <= 8) shaders.push(["dq", dqMmaWgsl({ headDim, TK })]);
      for (const [kernel, wgsl] of shaders) {
        const variables = workgroupVariables(wgsl);
        assert.ok(variables.length > 0, `${kernel}: no workgroup variables found`);
        for (const [name, type, size] of variables)
          assert.equal(size % 16, 0, `${kernel} (headDim ${headDim}, TK ${TK}): var<workgroup> ${name}: ${type} is ${size} bytes`);
      }
    }
  }
});

test("the tensor-core dk/dv kernel declares the workgroup bytes its shape policy counts", () => {
  for (const headDim of [16, 64, 128, 256]) {
    for (const keys of MMA_DKDV_KEYS) {
      const declared = workgroupVariables(dkdvMmaWgsl({ headDim, keys })).reduce((sum, [, , size]) => sum + size, 0);
      assert.equal(declared, dkdvMmaSharedBytes({ headDim, keys }), `headDim ${headDim}, keys ${keys}`);
    }
  }
  // what the H100 and H200 allow (48 KiB): 64 keys up to headDim 128
  assert.ok(dkdvMmaSharedBytes({ headDim: 128, keys: 64 }) <= 49152);
});

/** The names of a shader's group-0 bindings, by binding index. */
function declaredBindings(wgsl: string): string[] {
  const names: string[] = [];
  for (const m of wgsl.matchAll(/@group\(0\)\s*@binding\((\d+)\)\s*var(?:<[^>]*>)?\s+(\w+)/g)) names[Number(m[1])] = m[2];
  return names;
}

test("every attention and decode kernel lists the bindings its WGSL declares, in order", () => {
  assert.deepEqual(declaredBindings("@group(0) @binding(1) var<storage, read> b: array<u32>;\n@group(0) @binding(0) var<uniform> a: P;"), [
    "a",
    "b",
  ]);
  const tile = { headDim: 64, TQ: 16, TK: 32, unroll: true, input: "f32" } as const;
  const mma = { headDim: 64, TK: 64 };
  const attention = { qHeads: 4, kvHeads: 2, headDim: 16, blockSize: 8, width: 2, full: false };
  const kernels: [Kernel<never>, unknown][] = [
    [BLOCK_SUMS, null],
    [SCATTER, null],
    [SCAN, null],
    [GATHERED_TILES, null],
    [GATE, { width: 3, headDim: 64, vec4Rows: true }],
    [DELTA, null],
    [TO_F16, null],
    [TO_F16_TILED, { headDim: 64, input: "f32" }],
    [TO_F16_TILED, { headDim: 64, input: "f16" }],
    [FORWARD, tile],
    [DQ, tile],
    [DKDV, tile],
    [FORWARD_MMA, mma],
    [DQ_MMA, mma],
    [DKDV_MMA, { headDim: 64, keys: 64 }],
    [DKDV_MMA_STORING_DS, { headDim: 64, keys: 32 }],
    [DQ_STORED, { headDim: 64 }],
    [Decode.EMBED_ROW, { hidden: 64 }],
    [Decode.GEMV[0], { parts: [64], K: 64, accumulate: true, swiglu: true }],
    [Decode.GEMV[1], { parts: [64, 32], K: 64, accumulate: false, swiglu: false }],
    [Decode.GEMV[2], { parts: [64, 32, 32], K: 64, accumulate: false, swiglu: false }],
    [Decode.APPEND, { row: 64, at: 128 }],
    [Decode.BLOCK_SUMS, { row: 64, blockSize: 8 }],
    [Decode.GATE, { ...attention, maxBlocks: 8 }],
    [Decode.ATTEND, { ...attention, maxChunks: 8 }],
    [Decode.COMBINE, { ...attention, maxChunks: 8 }],
  ];
  for (const [kernel, constants] of kernels) {
    assert.deepEqual(kernel.bindings, declaredBindings(kernel.wgsl(constants as never)), kernel.name);
  }
});
