export { type Tensor, tensor, MobaError } from "./tensor.js";
export type { AttentionInputs, MobaOptions, FullOptions, Backend } from "./attention/problem.js";
export {
  mobaAttention, mobaAttentionBackward, flashAttention, flashAttentionBackward,
  type AttentionOutput, type BackwardInputs, type Gradients, type Tensor32i,
} from "./attention/api.js";
