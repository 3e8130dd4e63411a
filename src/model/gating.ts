// What MoBA's gate chose inside a model: a sequence's prefill forward on a backend, and for each MoBA
// layer the blocks each query block chose and their gate scores, read from the layer's own attention
// (its routing table, as that backend chose it) and its q and k. The playground draws it as a heatmap.
import { type BlockGating, gatingByBlock } from "../attention/blocks.js";
import type { ModelBackend, Sized } from "../backend.js";
import { MobaError } from "../tensor.js";
import { type Model, prefillForward } from "./llama.js";

/** One MoBA layer's gate over the sequence (layer: its index among all the model's layers). */
export interface LayerGating extends BlockGating {
  layer: number;
}

/** The gate of every MoBA layer (full-attention layers have none) over `tokens`, one sequence, run on `backend`. */
export async function modelGating<B extends Sized>(model: Model, tokens: Int32Array, backend: ModelBackend<B>): Promise<LayerGating[]> {
  const { vocab_size: vocab, max_position_embeddings: positions } = model.config;
  const T = tokens.length;
  if (T < 1 || T > positions) throw new MobaError(`tokens: expected 1 to ${positions} tokens (max_position_embeddings), got ${T}`);
  const outside = tokens.findIndex((id) => id < 0 || id >= vocab);
  if (outside >= 0) throw new MobaError(`tokens: expected ids in [0, ${vocab}) (vocab_size), got ${tokens[outside]} at ${outside}`);
  const layers: LayerGating[] = [];
  await backend.scope("gating", async () => {
    await prefillForward(model, tokens, backend, {
      onAttention: async ({ layer, call, q, k, attn }) => {
        if (call.kind !== "moba") return;
        const { qHeads, kvHeads, headDim: D, blockSize, topK, cuSeqlens } = call;
        const problem = { tokens: T, qHeads, kvHeads, headDim: D, scale: 1 / Math.sqrt(D), blockSize, topK, cuSeqlens };
        const [qs, ks, routing] = [await backend.download(q), await backend.download(k), await backend.routingTable(call, attn)];
        layers.push({ layer, ...gatingByBlock(problem, qs, ks, routing) });
      },
    });
  });
  return layers;
}
