// The model's GEMMs on the CPU: C (+)= A · B for any strides (simd.ts's GemmOp), split by rows of C
// over the worker threads when the product is large enough to pay for them. Each slice runs the
// WebAssembly SIMD kernel, or — where there is none — the scalar 4x4 kernel of ops.ts.
import { addInto, matmulXWt } from "./ops.js";
import { cores, type Job, runJobs, SharedScratch } from "./pool.js";
import { type GemmOp, simd } from "./simd.js";

/**
 * Multiply-adds below which the product runs on the calling thread (one thread does 2·10⁸ in ~8 ms): a
 * slice copies its operands into its thread's module memory, and waking a worker costs more than a
 * small product on a busy machine (a threaded 1024 x 352 x 128 took 1-2 ms more CPU than one thread's 2).
 */
const THREAD_THRESHOLD = 2e8;

/** Runs the product on `threads` threads (default: the cores, or 1 below the threshold); op.c is written (or added to) in place. */
export async function gemm(op: GemmOp, threads?: number): Promise<void> {
  const { M, N, K } = op;
  const n = Math.min(threads ?? (M * N * K < THREAD_THRESHOLD ? 1 : await cores()), Math.ceil(M / 8));
  if (n === 1) return gemmRows(op, 0, M);
  const scratch = new SharedScratch();
  const s: GemmOp = { ...op, a: scratch.input(op.a), b: scratch.input(op.b), c: scratch.input(op.c, op.accumulate) };
  // one slice per thread (each slice copies B in whole), whole 8-row tiles except the last; the calling
  // thread takes the first slice rather than wait (on a busy machine a worker may wake up late)
  const step = Math.ceil(M / n / 8) * 8;
  const jobs: Job[] = [];
  for (let from = step; from < M; from += step) jobs.push({ kind: "gemm", op: s, from, to: Math.min(M, from + step) });
  const others = runJobs(jobs, n - 1);
  gemmRows(s, 0, Math.min(M, step));
  await others;
  if (s.c !== op.c) op.c.set(s.c);
  scratch.recycle();
}

/** Rows [from, to) of C on this thread, on `kernels` (null: the scalar kernel). */
export function gemmRows(op: GemmOp, from: number, to: number, kernels = simd): void {
  if (kernels) return kernels.gemmRows(op, from, to);
  // the scalar kernel computes x[rows, K] · w[N, K]ᵀ: gather A's rows and Bᵀ unless already laid out so
  const { N, K } = op;
  const rows = to - from;
  const a = gather(op.a, from, rows, K, op.aRow, op.aCol);
  const bt = gather(op.b, 0, N, K, op.bCol, op.bRow);
  const c = op.c.subarray(from * N, to * N);
  const y = op.accumulate ? new Float32Array(rows * N) : c;
  matmulXWt(y, a, bt, rows, K, N);
  if (op.accumulate) addInto(c, y);
}

// rows [from, from + rows) of the [*, cols] matrix whose element (i, j) is src[i·rowStride + j·colStride], row-major
function gather(src: Float32Array, from: number, rows: number, cols: number, rowStride: number, colStride: number): Float32Array {
  if (colStride === 1 && rowStride === cols) return src.subarray(from * cols, (from + rows) * cols);
  const out = new Float32Array(rows * cols);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[i * cols + j] = src[(from + i) * rowStride + j * colStride];
  return out;
}
