// The playground's bundled model (web/tour-model.safetensors): a `moba train` checkpoint's weights stored in
// F16 and without AdamW's moments, a sixth of the checkpoint's bytes. Made once and committed; it loads with
// loadCheckpoint like any checkpoint (moba generate --checkpoint web/tour-model.safetensors). The committed one:
//   node dist/cli/main.js train --steps 600 --out runs/playground     # the tour's model and data, 600 steps
//   node --import tsx dev/playground-model.mts runs/playground/checkpoint.safetensors web/tour-model.safetensors
import { writeFileSync } from "node:fs";
import { loadCheckpoint, serializeCheckpoint } from "../src/model/checkpoint.js";
import { parameterCount } from "../src/model/llama.js";

const [from, to] = process.argv.slice(2);
if (!from || !to) throw new Error("usage: node --import tsx dev/playground-model.mts CHECKPOINT OUT.safetensors");
const { model, tokenizer } = await loadCheckpoint(from);
const bytes = await serializeCheckpoint(model, { tokenizer, dtype: "F16" }, to);
writeFileSync(to, bytes);
console.log(`${to}: ${(parameterCount(model) / 1e6).toFixed(2)}M parameters in F16, ${(bytes.length / 1e6).toFixed(2)} MB`);
