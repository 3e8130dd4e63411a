// The WebGPU backend's failures become clear errors naming what failed: no adapter, a shader that
// does not compile, a GPU error inside a call, a lost device (and the next call gets a fresh device).
// A file of its own: it destroys the process's device on purpose.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { test } from "node:test";
import { promisify } from "node:util";
import { MobaError } from "../src/index.js";
import { checked, getDevice } from "../src/webgpu/device.js";
import { type Kernel, pipeline } from "../src/webgpu/kernel.js";
import { compareWithReference, makeCase, runImplementation, webgpuSkip as skip } from "./helpers.js";

test("no adapter (a Vulkan loader that finds no driver) is a MobaError saying so, at once", async () => {
  // a child process: this one's device is open already; the loader is pointed at a driver file that does not exist
  const script = `import("./src/webgpu/device.ts").then((m) => m.getDevice()).then(
    (d) => { console.log("adapter: " + d.adapterInfo); },
    (e) => { console.log(e.constructor.name + ": " + e.message); })`;
  const env = { ...process.env, VK_ICD_FILENAMES: "/nonexistent.json", VK_DRIVER_FILES: "/nonexistent.json" };
  const { stdout } = await promisify(execFile)(process.execPath, ["--import", "tsx", "-e", script], { env, timeout: 60_000 });
  assert.match(stdout, /^MobaError: webgpu: no adapter found \(no GPU driver; without a GPU install Mesa's lavapipe/m);
});

test("a shader that does not compile is an error naming the kernel and the line", { skip }, async () => {
  const gpu = await getDevice();
  const broken: Kernel<null> = {
    name: "broken",
    workgroupSize: 64,
    key: () => "broken/1",
    wgsl: () => "@compute @workgroup_size(64)\nfn main() {\n  let x: u32 = 1.5;\n}\n",
  };
  await assert.rejects(
    pipeline(gpu, broken, null),
    (e: unknown) => e instanceof MobaError && /shader broken:broken\/1 does not compile: line 3:16: .*u32/.test(e.message),
  );
});

test("a GPU error inside a call is an error naming the call, and the call's buffers are released", { skip }, async () => {
  const gpu = await getDevice();
  let released = false;
  // a buffer larger than the device allows: a validation error Dawn reports asynchronously
  const work = () => gpu.device.createBuffer({ size: gpu.maxBuffer + 4, usage: GPUBufferUsage.STORAGE });
  await assert.rejects(
    checked(gpu, "the oversized call", { destroy: () => (released = true) }, work),
    (e: unknown) => e instanceof MobaError && /webgpu: the oversized call failed \(\w+\)/.test(e.message),
  );
  assert.ok(released);
});

test("a lost device is an error naming it, and the next call opens a fresh device that computes right", { skip }, async () => {
  const gpu = await getDevice();
  gpu.device.destroy();
  const reason = await gpu.device.lost;
  assert.equal(reason.reason, "destroyed");
  assert.ok(gpu.lost);
  await assert.rejects(
    checked(gpu, "a call after the loss", { destroy() {} }, () => 0),
    (e: unknown) => e instanceof MobaError && /device lost \(destroyed/.test(e.message) && /before a call after the loss/.test(e.message),
  );
  const fresh = await getDevice();
  assert.notEqual(fresh.device, gpu.device);
  const c = makeCase(3, { cuSeqlens: [0, 37, 90], qHeads: 2, kvHeads: 1, headDim: 8, blockSize: 8, topK: 3 });
  assert.deepEqual(await compareWithReference(c, undefined, (x, threads) => runImplementation(x, threads, "webgpu"), true), []);
});
