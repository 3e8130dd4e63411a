export { type Tensor, tensor, MobaError } from "./tensor.js";
export type { AttentionInputs, MobaOptions, FullOptions, Backend } from "./attention/problem.js";
export {
  mobaAttention,
  mobaAttentionBackward,
  flashAttention,
  flashAttentionBackward,
  type AttentionOutput,
  type BackwardInputs,
  type Gradients,
  type Tensor32i,
} from "./api.js";
export { type LlamaConfig, type AttentionKind, checkConfig, layerKinds, SMALL_CONFIG } from "./model/config.js";
export {
  type Model,
  type Param,
  type Batch,
  initModel,
  forward,
  backward,
  zeroGradients,
  parameterCount,
  syncToHost,
  release,
} from "./model/llama.js";
export { KvCache, prefill, decodeStep, generate, sampleToken, type SampleOptions } from "./model/decode.js";
export { AdamW, zeroMoments, learningRateAt, type Moments, type AdamWOptions } from "./model/adamw.js";
export type { ModelBackend, Sized } from "./backend.js";
export { cpuBackend } from "./cpu/model.js";
export { webgpuModelBackend, type GpuTensor } from "./webgpu/model.js";
