// Run by test/deno.test.ts under Deno (no permissions): the package's dist/ through Deno's own
// navigator.gpu (wgpu, whose WGSL compiler is naga, not Dawn's Tint), WebGPU against the CPU backend.
// Prints one JSON line: the adapter and each output's relative error.
import * as moba from "../../dist/index.js";
import { compareBackends } from "../browser/compare.js";

try {
  const adapter = await navigator.gpu?.requestAdapter();
  const info = adapter?.info ?? {};
  const errors = await compareBackends(moba);
  console.log(JSON.stringify({ adapter: [info.vendor, info.architecture, info.device, info.description].filter(Boolean).join(" ") || "none", errors }));
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.stack ?? error) }));
}
