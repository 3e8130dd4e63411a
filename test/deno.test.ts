// The package under Deno: test/deno/smoke.js loads dist/ with no permissions and compares WebGPU
// (Deno's navigator.gpu: wgpu on lavapipe in CI) with the CPU backend. Under CI=true a missing Deno
// fails; elsewhere the test is skipped without one (scripts/setup-deno.sh installs it).
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const root = fileURLToPath(new URL("..", import.meta.url));
const DENO = `${root}.tools/deno/node_modules/.bin/deno`;
const skip = !existsSync(DENO) && process.env.CI !== "true" ? "no Deno (bash scripts/setup-deno.sh)" : false;

test(
  "under Deno, with no permissions, WebGPU MoBA and full attention equal the CPU backend, in f32 and f16",
  { skip, timeout: 240_000 },
  async () => {
    assert.ok(existsSync(`${root}dist/index.js`), "dist/ is built (npm ci runs tsc)");
    const { stdout, stderr } = await promisify(execFile)(DENO, ["run", "--unstable-webgpu", "test/deno/smoke.js"], {
      cwd: root,
      env: { ...process.env, NO_COLOR: "1" },
    });
    const line = stdout.trim().split("\n").pop() ?? "";
    const result = JSON.parse(line) as { adapter?: string; shaderF16?: boolean; errors?: Record<string, number>; error?: string };
    assert.equal(result.error, undefined, `${result.error}\n${stderr}`);
    console.log(`# deno adapter: ${result.adapter}; shader-f16: ${result.shaderF16}`);
    assert.notEqual(result.adapter, "none", "Deno found no WebGPU adapter");
    const errors = result.errors ?? {};
    for (const [name, error] of Object.entries(errors)) assert.ok(error <= 1e-5, `${name}: WebGPU vs CPU relative error ${error}`);
    const names = ["dk", "dq", "dv", "full", "lse", "out"];
    // with shader-f16 (wgpu on lavapipe has it) the f16 path is compared too: f32 arithmetic on f16 inputs there
    assert.deepEqual(Object.keys(errors).sort(), [...names, ...(result.shaderF16 ? names.map((n) => `f16 ${n}`) : [])].sort());
  },
);
