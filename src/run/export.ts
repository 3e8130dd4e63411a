// moba export: a checkpoint as a Hugging Face model directory (LlamaForCausalLM.from_pretrained reads it).
import { writeDirectory } from "../io/modelDir.js";
import { checkpointTokenizer, loadCheckpoint } from "../model/checkpoint.js";
import { exportModel } from "../model/pretrained.js";

/** Writes the checkpoint's weights (no optimizer state), config and tokenizer into `out`; returns the file names. */
export async function exportCheckpoint(checkpoint: string, out: string): Promise<string[]> {
  const saved = await loadCheckpoint(checkpoint);
  const files = exportModel(saved.model, await checkpointTokenizer(saved, checkpoint));
  await writeDirectory(out, files);
  return Object.keys(files);
}
