// The public attention API: input checks, then the chosen backend.
import { cpuBackward, cpuForward } from "./cpu/index.js";
import { type BlockGating, gatingByBlock, pastPerQuery } from "./attention/blocks.js";
import { roundToF16 } from "./io/half.js";
import { MobaError, type Tensor } from "./tensor.js";
import { gpuBackward, gpuForward } from "./webgpu/attention/index.js";
import {
  type AttentionInputs,
  type AttentionProblem,
  type Backend,
  checkBackwardInputs,
  type FullOptions,
  fullProblem,
  mobaProblem,
  type MobaOptions,
} from "./attention/problem.js";

export interface AttentionOutput {
  out: Tensor; // [tokens, qHeads, headDim]
  lse: Tensor; // [tokens, qHeads] natural log of each query's softmax denominator
  /** [tokens, qHeads, topK - 1] each query's selected past blocks, ascending (width 0 when all are selected). */
  routing: Tensor32i;
}

export interface Tensor32i {
  readonly data: Int32Array;
  readonly shape: readonly number[];
}

export interface BackwardInputs extends AttentionInputs {
  out: Tensor;
  lse: Tensor;
  dout: Tensor; // [tokens, qHeads, headDim]
  /** The forward's routing; recomputed from q and k when absent. */
  routing?: Tensor32i;
}

export interface Gradients {
  dq: Tensor; // [tokens, qHeads, headDim]
  dk: Tensor; // [tokens, kvHeads, headDim] summed over the query heads sharing each kv head
  dv: Tensor; // [tokens, kvHeads, headDim]
}

function checkBackend(backend: Backend | undefined): void {
  if (backend !== undefined && backend !== "cpu" && backend !== "webgpu") {
    throw new MobaError(`backend: expected "cpu" or "webgpu", got ${JSON.stringify(backend)}`);
  }
}

function checkThreads(threads: number | undefined): void {
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 1)) {
    throw new MobaError(`threads: expected a positive integer, got ${threads}`);
  }
}

/**
 * Whether the forward's problem check looks for non-finite q, k, v itself: the CPU forward checks
 * the copies its kernels read instead (in WebAssembly, ~0.3 ms at 16K tokens against 2.7 here).
 */
const onGpu = (options: FullOptions) => options?.backend === "webgpu";

/** q, k, v as the kernels see them: rounded to f16 values in the f16 path (every backend, so they agree; dout too, in the backward). */
function stored(p: AttentionProblem, inputs: AttentionInputs): [Float32Array, Float32Array, Float32Array] {
  const round = (x: Float32Array) => (p.precision === "f16" ? roundToF16(x) : x);
  return [round(inputs.q.data), round(inputs.k.data), round(inputs.v.data)];
}

async function forward(p: AttentionProblem, inputs: AttentionInputs, options: FullOptions): Promise<AttentionOutput> {
  checkBackend(options.backend);
  checkThreads(options.threads);
  const [q, k, v] = stored(p, inputs);
  const r = options.backend === "webgpu" ? await gpuForward(p, q, k, v) : await cpuForward(p, q, k, v, options.threads);
  return {
    out: { data: r.out, shape: [p.tokens, p.qHeads, p.headDim] },
    lse: { data: r.lse, shape: [p.tokens, p.qHeads] },
    routing: { data: r.past, shape: [p.tokens, p.qHeads, r.width] },
  };
}

/** The forward's routing table for problem `p`: [tokens, qHeads, topK - 1], or width 0 when every block is selected. */
function checkRouting(p: AttentionProblem, routing: Tensor32i): Int32Array {
  const { shape, data } = routing;
  const width = pastPerQuery(p);
  if (
    shape.length !== 3 ||
    shape[0] !== p.tokens ||
    shape[1] !== p.qHeads ||
    shape[2] !== width ||
    data.length !== p.tokens * p.qHeads * width
  )
    throw new MobaError(
      `routing: expected shape [${p.tokens}, ${p.qHeads}, ${width}] from the forward (topK - 1 past blocks a query, 0 when topK covers every block), ` +
        `got [${shape.join(", ")}]`,
    );
  return data;
}

async function backward(p: AttentionProblem, inputs: BackwardInputs, options: FullOptions): Promise<Gradients> {
  checkBackend(options.backend);
  checkThreads(options.threads);
  checkBackwardInputs(p, inputs.out, inputs.lse, inputs.dout);
  const past = inputs.routing === undefined ? undefined : checkRouting(p, inputs.routing);
  const { out, lse } = inputs;
  const [q, k, v] = stored(p, inputs);
  // dout is stored as f16 too: the tensor-core dq reads it as f16, and delta = rowsum(dout · out)
  // must see the same values, or the terms that cancel (exactly, for a one-token sequence) do not
  const dout = p.precision === "f16" ? roundToF16(inputs.dout.data) : inputs.dout.data;
  const g =
    options.backend === "webgpu"
      ? await gpuBackward(p, q, k, v, out.data, lse.data, dout, past)
      : await cpuBackward(p, q, k, v, out.data, lse.data, dout, past, options.threads);
  return {
    dq: { data: g.dq, shape: [p.tokens, p.qHeads, p.headDim] },
    dk: { data: g.dk, shape: [p.tokens, p.kvHeads, p.headDim] },
    dv: { data: g.dv, shape: [p.tokens, p.kvHeads, p.headDim] },
  };
}

/** MoBA: each query attends causally to its own block and to the topK - 1 past blocks whose mean key scores highest. */
export async function mobaAttention(inputs: AttentionInputs, options: MobaOptions): Promise<AttentionOutput> {
  return forward(mobaProblem(inputs, options, onGpu(options)), inputs, options);
}

/** Gradients of sum(out · dout) with respect to q, k, v; the block choice is a constant. */
export async function mobaAttentionBackward(inputs: BackwardInputs, options: MobaOptions): Promise<Gradients> {
  return backward(mobaProblem(inputs, options), inputs, options);
}

/** Causal (flash) attention with the same layout and outputs. */
export async function flashAttention(inputs: AttentionInputs, options: FullOptions = {}): Promise<AttentionOutput> {
  return forward(fullProblem(inputs, options, onGpu(options)), inputs, options);
}

export async function flashAttentionBackward(inputs: BackwardInputs, options: FullOptions = {}): Promise<Gradients> {
  return backward(fullProblem(inputs, options), inputs, options);
}

/**
 * MoBA's gate over one sequence, block by block: per query head, how many queries of each block chose each past block,
 * and their mean gate score q · mean(K_j). `inputs` and `options` are those given to mobaAttention (v does not enter the
 * gate), `routing` is its output.
 */
export function blockGating(inputs: Omit<AttentionInputs, "v">, options: MobaOptions, routing: Tensor32i): BlockGating {
  // k stands in for v: q, k, cuSeqlens and the options are checked as mobaAttention checks them
  const p = mobaProblem({ ...inputs, v: inputs.k }, options);
  if (p.cuSeqlens.length !== 2) throw new MobaError(`cuSeqlens: expected one sequence [0, ${p.tokens}], got ${p.cuSeqlens.length - 1}`);
  return gatingByBlock(p, inputs.q.data, inputs.k.data, checkRouting(p, routing));
}
