// The published types stand alone: a consumer compiling with skipLibCheck false (every .d.ts of ours
// checked) and no types of its own sees WebGPU's (GPUDevice, GPUBuffer) through the reference in
// dist/index.d.ts to @webgpu/types, a dependency. Compiles a small consumer against dist/, as npm installs it.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = fileURLToPath(new URL("..", import.meta.url));

const CONSUMER = `
import { mobaAttention, webgpuModelBackend, type GpuTensor } from "moba";
const q = { data: new Float32Array(16), shape: [4, 1, 4] };
const out: Promise<{ out: { data: Float32Array } }> = mobaAttention({ q, k: q, v: q }, { blockSize: 2, topK: 1 });
const gpu = webgpuModelBackend();
export type T = GpuTensor;
export { out, gpu };
`;

for (const conditions of [["node"], ["browser"]]) {
  test(`a consumer type-checks against dist/*.d.ts with skipLibCheck false (${conditions} export)`, () => {
    const dir = mkdtempSync(join(tmpdir(), "moba-types-"));
    try {
      mkdirSync(join(dir, "node_modules"));
      symlinkSync(root, join(dir, "node_modules", "moba"));
      writeFileSync(join(dir, "package.json"), '{ "type": "module" }');
      writeFileSync(join(dir, "consumer.ts"), CONSUMER);
      const program = ts.createProgram([join(dir, "consumer.ts")], {
        strict: true,
        noEmit: true,
        skipLibCheck: false,
        target: ts.ScriptTarget.ES2022,
        module: conditions[0] === "node" ? ts.ModuleKind.NodeNext : ts.ModuleKind.ESNext,
        moduleResolution: conditions[0] === "node" ? ts.ModuleResolutionKind.NodeNext : ts.ModuleResolutionKind.Bundler,
        customConditions: conditions[0] === "node" ? undefined : conditions,
        lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
        types: [],
      });
      const errors = ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n"));
      assert.deepEqual(errors, []);
      assert.ok(
        program.getSourceFiles().some((f) => f.fileName.includes("@webgpu/types")),
        "@webgpu/types was loaded",
      );
    } finally {
      rmSync(dir, { recursive: true });
    }
  });
}
