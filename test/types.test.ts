// The published types stand alone: a consumer compiling with skipLibCheck false (every .d.ts of ours
// checked) and no types of its own sees WebGPU's (GPUDevice, GPUBuffer) through the reference in
// dist/index.d.ts to @webgpu/types, a dependency. Compiles a small consumer against dist/, as npm installs it,
// and the README's example of a shared GPUDevice, so that it cannot drift from the API.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
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

/** The type errors of `code` compiled as a consumer of the installed package under the export `condition`. */
function consumerErrors(code: string, condition: "node" | "browser"): { errors: string[]; webgpuTypes: boolean } {
  const dir = mkdtempSync(join(tmpdir(), "moba-types-"));
  try {
    mkdirSync(join(dir, "node_modules"));
    symlinkSync(root, join(dir, "node_modules", "moba"));
    writeFileSync(join(dir, "package.json"), '{ "type": "module" }');
    writeFileSync(join(dir, "consumer.ts"), code);
    const program = ts.createProgram([join(dir, "consumer.ts")], {
      strict: true,
      noEmit: true,
      skipLibCheck: false,
      target: ts.ScriptTarget.ES2022,
      module: condition === "node" ? ts.ModuleKind.NodeNext : ts.ModuleKind.ESNext,
      moduleResolution: condition === "node" ? ts.ModuleResolutionKind.NodeNext : ts.ModuleResolutionKind.Bundler,
      customConditions: condition === "node" ? undefined : [condition],
      lib: ["lib.es2022.d.ts", "lib.dom.d.ts"],
      types: [],
    });
    return {
      errors: ts.getPreEmitDiagnostics(program).map((d) => ts.flattenDiagnosticMessageText(d.messageText, "\n")),
      webgpuTypes: program.getSourceFiles().some((f) => f.fileName.includes("@webgpu/types")),
    };
  } finally {
    rmSync(dir, { recursive: true });
  }
}

for (const condition of ["node", "browser"] as const) {
  test(`a consumer type-checks against dist/*.d.ts with skipLibCheck false (${condition} export)`, () => {
    const { errors, webgpuTypes } = consumerErrors(CONSUMER, condition);
    assert.deepEqual(errors, []);
    assert.ok(webgpuTypes, "@webgpu/types was loaded");
  });
}

test("the README's example of a shared GPUDevice type-checks as a bundler's consumer (browser export)", () => {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const [, code] = readme.match(/<!-- test\/types\.test\.ts compiles this block -->\n```ts\n([\s\S]*?)```/) ?? [];
  assert.ok(code, "README.md has the marked example");
  assert.deepEqual(consumerErrors(code, "browser").errors, []);
  // the check can fail: the same code with a wrong option name does not compile
  assert.notDeepEqual(consumerErrors(code.replace("blockSize:", "blocksize:"), "browser").errors, []);
});
