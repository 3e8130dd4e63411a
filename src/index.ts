/// <reference types="@webgpu/types" preserve="true" />
// The browser-safe public API (the "browser" and "default" export); node.ts adds what needs files.
// The reference above keeps WebGPU's types (GPUDevice, GPUBuffer in our .d.ts) for consumers (test/types.test.ts).
export { type Tensor, tensor, MobaError } from "./tensor.js";
export type { AttentionInputs, MobaOptions, FullOptions, Backend } from "./attention/problem.js";
export {
  mobaAttention,
  mobaAttentionBackward,
  flashAttention,
  flashAttentionBackward,
  blockGating,
  type AttentionOutput,
  type BackwardInputs,
  type Gradients,
  type Tensor32i,
} from "./api.js";
export {
  type LlamaConfig,
  type AttentionKind,
  type RopeScaling,
  checkConfig,
  layerKinds,
  kindsFromSpec,
  SMALL_CONFIG,
} from "./model/config.js";
export { loadModel, exportModel, type Pretrained, type LoadModelOptions, type ModelSource, type ModelFile } from "./model/pretrained.js";
export { fromHfConfig, toHfConfig, type HfConfigResult } from "./model/hfConfig.js";
export { loadTokenizer, byteTokenizer, byteLevelTokenizerJson, type TextTokenizer } from "./model/tokenizer.js";
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
export { KvCache, prefill, decodeStep, generate, openDecoding, sampleToken, type Decoding, type SampleOptions } from "./model/decode.js";
export { AdamW, zeroMoments, learningRateAt, type Moments, type AdamWOptions } from "./model/adamw.js";
export { TRAIN_DEFAULTS, recordTrainingStep, type RecordedStep, type TrainOptions, type Stage } from "./model/training.js";
export { Packer, startPosition, splitDocuments, type Document, type DataPosition } from "./model/packing.js";
export { loadCheckpoint, serializeCheckpoint, type Checkpoint, type CheckpointContents, type TrainingState } from "./model/checkpoint.js";
export type { BlockGating } from "./attention/blocks.js";
export { modelGating, type LayerGating } from "./model/gating.js";
export { generateText, type GenerateOptions } from "./run/generate.js";
export type { DecodeShape, DecoderWeights, DeviceDecoder, ModelBackend, Sized } from "./backend.js";
export { cpuBackend } from "./cpu/model.js";
export { webgpuModelBackend, type GpuTensor } from "./webgpu/model.js";
export { useDevice, type MobaDevice } from "./webgpu/device.js";
export { mobaAttentionOnGpu, flashAttentionOnGpu, type GpuArray, type GpuAttentionInputs, type GpuAttentionOutput } from "./gpuApi.js";
// For the playground (web/): the float64 reference, the FLOP count and `moba demo`'s input, seeded and with planted topics.
export { attendedKeys } from "./attention/problem.js";
export { referenceForward, type ReferenceProblem } from "./reference/attention.js";
export { randomInputs, relativeError } from "./run/util.js";
export { plantTopics, type DemoOptions } from "./run/demo.js";
