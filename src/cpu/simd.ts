// The WebAssembly SIMD kernels (src/cpu/wasm/assembly/, built by scripts/build-wasm.sh): one
// instance per thread — the main thread and each worker load this module — each with its own
// memory. A call copies its operands into that memory (memcpy speed), runs, and copies the result
// out: the copies are O(n²) against the kernels' O(n³) or O(n² · keys) work. The attention on several
// threads runs instead on the shared build: every thread's instance imports one shared memory
// (withSharedKernels), where the calling thread lays the inputs out once for all of them.
//
// Which build runs: the relaxed-SIMD one (fused multiply-add) where the runtime validates it, else
// plain SIMD; with no SIMD at all (or MOBA_SIMD=off) `simd` is null and the CPU backend runs its
// scalar JavaScript kernels, the reference-checked fallback. MOBA_SIMD=plain forces plain SIMD.
import { importAtRunTime, isNode } from "../runtime.js";
import { PLAIN_SHARED_WASM, PLAIN_WASM, RELAXED_SHARED_WASM, RELAXED_WASM } from "./wasm/binary.js";

/** A WebAssembly.Memory: the module's own, or a shared one. */
export interface WasmMemory {
  readonly buffer: ArrayBuffer;
  grow(pages: number): number;
}

// the little of the WebAssembly API used here (the project's lib is ES2022, which does not declare it)
declare const WebAssembly: {
  validate(bytes: Uint8Array): boolean;
  instantiate(bytes: Uint8Array, imports?: { env: { memory: WasmMemory } }): Promise<{ instance: { exports: unknown } }>;
  Memory: new (descriptor: { initial: number; maximum: number; shared: boolean }) => WasmMemory;
};

interface Exports {
  gemm(
    M: number,
    N: number,
    K: number,
    a: number,
    aRow: number,
    aCol: number,
    b: number,
    bRow: number,
    bCol: number,
    c: number,
    ldc: number,
    accumulate: number,
    work: number,
  ): void;
  gemmWorkBytes(N: number): number;
  attendForward(
    rows: number,
    rowIndex: number,
    q: number,
    qStride: number,
    k: number,
    v: number,
    kvStride: number,
    keys: number,
    causal: number,
    D: number,
    scale: number,
    m: number,
    l: number,
    acc: number,
    kPacked: number,
    vPacked: number,
    vStride: number,
    work: number,
  ): void;
  packPanel(K: number, N: number, b: number, bRow: number, bCol: number, out: number): void;
  attendBackward(
    rows: number,
    tokens: number,
    q: number,
    dout: number,
    dq: number,
    qStride: number,
    lse: number,
    delta: number,
    statStride: number,
    k: number,
    v: number,
    kvStride: number,
    keys: number,
    causal: number,
    D: number,
    scale: number,
    dk: number,
    dv: number,
    work: number,
  ): void;
  forwardWorkBytes(D: number): number;
  backwardWorkBytes(keys: number, D: number): number;
  blockMeans(length: number, size: number, D: number, k: number, kStride: number, out: number): void;
  meansBytes(blocks: number, D: number): number;
  route(
    rows: number,
    q: number,
    qStride: number,
    means: number,
    blocks: number,
    D: number,
    width: number,
    past: number,
    pastStride: number,
    work: number,
  ): void;
  routeWorkBytes(blocks: number, width: number): number;
  firstNonFinite(x: number, n: number): number;
}

/**
 * C[M, N] (+)= A[M, K] · B[K, N] with A[i][k] = a[i·aRow + k·aCol], B[k][j] = b[k·bRow + j·bCol] and C
 * row-major: x·wᵀ, dy·w and dyᵀ·x are all this with different strides.
 */
export interface GemmOp {
  c: Float32Array; // [M, N]
  a: Float32Array;
  b: Float32Array;
  M: number;
  N: number;
  K: number;
  aRow: number;
  aCol: number;
  bRow: number;
  bCol: number;
  accumulate: boolean; // C += A · B instead of C = A · B
}

export type SimdVariant = "relaxed" | "plain";

/** The shared build's first page holds its own data (its only initial page); scratch starts after it. */
const SHARED_BASE = 65536;
/** The most pages a memory of wasm32 has: 4 GiB. */
const MAX_PAGES = 65536;

const bytesOf = (base64: string) => Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));

/** The addresses of one call's regions: its inputs', then each thread's scratch regions ([threads][regions]). */
export interface Regions {
  inputAt: number[];
  scratchAt: number[][];
}

const regionBytes = (inputBytes: number[], scratchBytes: number[], threads: number) => [
  ...inputBytes,
  ...Array.from({ length: threads }, () => scratchBytes).flat(),
];

/**
 * A module instance; its memory above `base` (past the module's own data) is scratch that each call
 * lays out anew — on the shared memory only the calling thread lays it out, during its turn.
 */
export class SimdKernels {
  constructor(
    readonly exports: Exports,
    readonly variant: SimdVariant,
    readonly memory: WasmMemory,
    private readonly base = memory.buffer.byteLength,
  ) {}

  /** Addresses of consecutive regions of the given byte sizes (64-byte aligned), memory grown to hold them. */
  alloc(bytes: number[]): number[] {
    const { at, end } = this.place(bytes);
    const missing = end - this.memory.buffer.byteLength;
    if (missing > 0) this.memory.grow(Math.ceil(missing / 65536));
    return at;
  }

  /** Whether alloc(bytes) fits the 4 GiB of wasm32 memory. */
  fits(bytes: number[]): boolean {
    return this.place(bytes).end <= MAX_PAGES * 65536;
  }

  /** Where alloc puts regions of these sizes, and where the last ends. */
  private place(bytes: number[]): { at: number[]; end: number } {
    const at: number[] = [];
    let end = this.base;
    for (const n of bytes) {
      at.push(end);
      end = Math.ceil((end + n) / 64) * 64;
    }
    return { at, end };
  }

  /** Whether one call's regions (see `regions`) fit the 4 GiB of wasm32 memory. */
  regionsFit(inputBytes: number[], scratchBytes: number[], threads: number): boolean {
    return this.fits(regionBytes(inputBytes, scratchBytes, threads));
  }

  /** One call's regions, allocated: its inputs once, then `threads` copies of one thread's scratch. */
  regions(inputBytes: number[], scratchBytes: number[], threads: number): Regions {
    const at = this.alloc(regionBytes(inputBytes, scratchBytes, threads));
    const inputAt = at.slice(0, inputBytes.length);
    const scratchAt = Array.from({ length: threads }, (_, i) =>
      at.slice(inputAt.length + i * scratchBytes.length, inputAt.length + (i + 1) * scratchBytes.length),
    );
    return { inputAt, scratchAt };
  }

  /** Views of module memory: valid until the next alloc. */
  f32(at: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, at, n);
  }

  i32(at: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, at, n);
  }

  /** Index of the first NaN or ±Infinity of the n floats at `at`, or -1. */
  firstNonFinite(at: number, n: number): number {
    return this.exports.firstNonFinite(at, n);
  }

  /** Rows [from, to) of C. */
  gemmRows(op: GemmOp, from: number, to: number): void {
    const { M, N, K, a, b, c, aRow, aCol, bRow, bCol } = op;
    if (from < 0 || to > M || from >= to) return;
    const rows = to - from;
    // the spans of a and b that rows [from, to) read
    const aLo = from * aRow,
      aHi = (to - 1) * aRow + Math.max(0, K - 1) * aCol + 1;
    const bHi = K === 0 ? 0 : (K - 1) * bRow + (N - 1) * bCol + 1;
    const [aAt, bAt, cAt, work] = this.alloc([4 * (aHi - aLo), 4 * bHi, 4 * rows * N, this.exports.gemmWorkBytes(N)]);
    this.f32(aAt, aHi - aLo).set(a.subarray(aLo, aHi));
    this.f32(bAt, bHi).set(b.subarray(0, bHi));
    const cRows = c.subarray(from * N, to * N);
    if (op.accumulate) this.f32(cAt, rows * N).set(cRows);
    this.exports.gemm(rows, N, K, aAt, aRow, aCol, bAt, bRow, bCol, cAt, N, op.accumulate ? 1 : 0, work);
    cRows.set(this.f32(cAt, rows * N));
  }
}

/** The given build of the kernels (on `memory`: the shared build importing it), or null where this runtime cannot run it. */
export async function loadKernels(variant: SimdVariant, memory?: WasmMemory): Promise<SimdKernels | null> {
  if (typeof (globalThis as { WebAssembly?: unknown }).WebAssembly !== "object") return null;
  const base64 = memory
    ? variant === "relaxed"
      ? RELAXED_SHARED_WASM
      : PLAIN_SHARED_WASM
    : variant === "relaxed"
      ? RELAXED_WASM
      : PLAIN_WASM;
  const bytes = bytesOf(base64);
  // Node 20's V8 has relaxed SIMD behind a flag (on by default from Node 22); V8 reads it when it
  // validates a module, so setting it is enough
  if (isNode && variant === "relaxed" && !WebAssembly.validate(bytes))
    (await importAtRunTime<typeof import("node:v8")>("node:v8")).setFlagsFromString("--experimental-wasm-relaxed-simd");
  if (!WebAssembly.validate(bytes)) return null;
  if (!memory) {
    const { instance } = await WebAssembly.instantiate(bytes);
    const exports = instance.exports as Exports & { memory: WasmMemory };
    return new SimdKernels(exports, variant, exports.memory);
  }
  const { instance } = await WebAssembly.instantiate(bytes, { env: { memory } });
  return new SimdKernels(instance.exports as Exports, variant, memory, SHARED_BASE);
}

async function load(): Promise<SimdKernels | null> {
  const choice = isNode ? (process.env.MOBA_SIMD ?? "") : "";
  if (choice === "off") return null;
  if (choice !== "plain") {
    const relaxed = await loadKernels("relaxed");
    if (relaxed) return relaxed;
  }
  return loadKernels("plain");
}

/** This thread's kernels, or null where WebAssembly SIMD is unavailable (or MOBA_SIMD=off). */
export const simd: SimdKernels | null = await load();

/** This thread's instance on a shared memory (kernels.memory); `id` tells the workers' instances apart from earlier ones. */
export interface SharedKernels {
  kernels: SimdKernels;
  id: number;
}

let sharedOnThisThread: Promise<SharedKernels | null> | undefined;
let turn: Promise<unknown> = Promise.resolve();

/**
 * The calling thread's instance of the shared build, on a shared memory made for it (one a process),
 * or null where there is no SIMD or no shared memory. `run` gets it in turn: one call at a time lays
 * out and uses the memory, the next waits.
 */
export async function withSharedKernels<T>(run: (shared: SharedKernels | null) => Promise<T>): Promise<T> {
  sharedOnThisThread ??= (async () => {
    if (!simd || typeof SharedArrayBuffer === "undefined") return null;
    try {
      const memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
      const kernels = await loadKernels(simd.variant, memory);
      return kernels && { kernels, id: Math.random() };
    } catch {
      return null; // no address space for it (it reserves 4 GiB), or no shared memory: each thread its own
    }
  })();
  const shared = await sharedOnThisThread;
  const mine = turn.then(() => run(shared));
  turn = mine.catch(() => undefined);
  return mine;
}

let workerShared: { id: number; kernels: Promise<SimdKernels | null> } | undefined;

/** A worker's instance of the shared build on the memory `id` the job names (loaded on its first job there). */
export function sharedKernelsOn(memory: WasmMemory, id: number, variant: SimdVariant): Promise<SimdKernels | null> {
  if (workerShared?.id !== id) workerShared = { id, kernels: loadKernels(variant, memory) };
  return workerShared.kernels;
}
