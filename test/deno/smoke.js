// Run by test/deno.test.ts under Deno (no permissions): the package's dist/ through Deno's own
// navigator.gpu (wgpu, whose WGSL compiler is naga, not Dawn's Tint), WebGPU against the CPU backend.
// Prints one JSON line: the adapter and each output's relative error, f32 and (with shader-f16) f16.
import * as moba from "../../dist/index.js";
import { compareBackends } from "../browser/compare.js";

try {
  const adapter = await navigator.gpu?.requestAdapter();
  const info = adapter?.info ?? {};
  const errors = await compareBackends(moba);
  // the f16 path too where the adapter has shader-f16 (wgpu on lavapipe has; no subgroup matrices)
  const shaderF16 = adapter?.features.has("shader-f16") ?? false;
  const f16 = shaderF16 ? await compareBackends(moba, "f16") : {};
  for (const [name, error] of Object.entries(f16)) errors[`f16 ${name}`] = error;
  console.log(
    JSON.stringify({
      adapter: [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ") || "none",
      shaderF16,
      errors,
    }),
  );
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.stack ?? error) }));
}
