// The safetensors format: an 8-byte little-endian header length N, N bytes of JSON
// ({ name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__"?: { string: string } }),
// then the byte buffer the offsets point into (relative to its start). Tensors are row-major,
// little-endian, and must cover the buffer exactly: no overlaps, no holes.
import { readFile } from "node:fs/promises";
import { MobaError, shown } from "../tensor.js";
import { bf16ToFloat, f16ToFloat, floatToBf16, floatToF16 } from "./half.js";

export type Dtype = "F64" | "F32" | "F16" | "BF16" | "I64" | "I32";

const BYTES: Record<Dtype, number> = { F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4 };

export interface StoredTensor {
  dtype: Dtype;
  shape: number[];
  bytes: Uint8Array; // a view into the file
}

export interface SafetensorsFile {
  tensors: Map<string, StoredTensor>;
  metadata: Record<string, string>;
}

/** The header's length is capped before it is parsed, as the safetensors reference does (100 MB). */
const MAX_HEADER = 100_000_000n;

function fail(source: string, message: string): never {
  throw new MobaError(`${source}: ${message}`);
}

/** Parses and validates a whole file; `source` names it in errors. */
export function parseSafetensors(file: Uint8Array, source = "safetensors"): SafetensorsFile {
  if (file.length < 8) fail(source, `expected at least 8 bytes (the header length), got ${file.length}`);
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const headerLength = view.getBigUint64(0, true);
  if (headerLength > MAX_HEADER)
    fail(source, `header length ${headerLength}: expected at most ${MAX_HEADER} bytes (the limit of the safetensors reference)`);
  if (headerLength > BigInt(file.length - 8))
    fail(source, `header length ${headerLength} exceeds the ${file.length - 8} bytes after it (truncated file?)`);
  const n = Number(headerLength);
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(file.subarray(8, 8 + n)));
  } catch (error) {
    fail(source, `header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header))
    fail(source, `header: expected a JSON object, got ${shown(header)}`);
  const data = file.subarray(8 + n);
  const tensors = new Map<string, StoredTensor>();
  let metadata: Record<string, string> = {};
  const ranges: [number, number, string][] = [];
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      if (typeof entry !== "object" || entry === null || Object.values(entry).some((x) => typeof x !== "string")) {
        fail(source, `__metadata__: expected an object of strings, got ${shown(entry)}`);
      }
      metadata = entry as Record<string, string>;
      continue;
    }
    const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (typeof e !== "object" || e === null || Array.isArray(e))
      fail(source, `tensor "${name}": expected { dtype, shape, data_offsets }, got ${shown(entry)}`);
    if (typeof e.dtype !== "string" || !(e.dtype in BYTES)) {
      fail(source, `tensor "${name}": expected dtype F64, F32, F16, BF16, I64 or I32, got ${shown(e.dtype)}`);
    }
    const dtype = e.dtype as Dtype;
    if (!Array.isArray(e.shape) || e.shape.some((s) => !Number.isInteger(s) || s < 0))
      fail(source, `tensor "${name}": expected shape as non-negative integers, got ${shown(e.shape)}`);
    const offsets = e.data_offsets;
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((x) => Number.isInteger(x) && x >= 0) ||
      offsets[0] > offsets[1]
    ) {
      fail(source, `tensor "${name}": expected data_offsets [begin, end] with 0 <= begin <= end, got ${shown(offsets)}`);
    }
    const [begin, end] = offsets as [number, number];
    if (end > data.length)
      fail(source, `tensor "${name}": data_offsets [${begin}, ${end}] out of range of the ${data.length}-byte buffer (truncated file?)`);
    const shape = e.shape as number[];
    const expected = shape.reduce((a, b) => a * b, 1) * BYTES[dtype];
    if (end - begin !== expected)
      fail(source, `tensor "${name}": shape [${shape}] of ${dtype} needs ${expected} bytes, data_offsets give ${end - begin}`);
    ranges.push([begin, end, name]);
    tensors.set(name, { dtype, shape, bytes: data.subarray(begin, end) });
  }
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let covered = 0;
  for (const [begin, end, name] of ranges) {
    if (begin < covered)
      fail(source, `tensor "${name}": data_offsets [${begin}, ${end}] overlap the tensor before it (which ends at ${covered})`);
    if (begin > covered) fail(source, `bytes [${covered}, ${begin}) of the buffer belong to no tensor (a hole before "${name}")`);
    covered = end;
  }
  if (covered !== data.length) fail(source, `bytes [${covered}, ${data.length}) at the end of the buffer belong to no tensor`);
  return { tensors, metadata };
}

export async function readSafetensors(path: string): Promise<SafetensorsFile> {
  let file: Buffer;
  try {
    file = await readFile(path);
  } catch (error) {
    throw new MobaError(`${path}: cannot read (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`);
  }
  return parseSafetensors(file, path);
}

/** The tensor's values as float32 (float types) — float64 to float32 rounds to nearest. */
export function toFloat32(t: StoredTensor, name: string): Float32Array {
  const count = t.bytes.length / BYTES[t.dtype];
  const view = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
  const out = new Float32Array(count);
  switch (t.dtype) {
    case "F64":
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      break;
    case "F32":
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      break;
    case "F16":
      for (let i = 0; i < count; i++) out[i] = f16ToFloat(view.getUint16(2 * i, true));
      break;
    case "BF16":
      for (let i = 0; i < count; i++) out[i] = bf16ToFloat(view.getUint16(2 * i, true));
      break;
    default:
      throw new MobaError(`tensor "${name}": expected a float dtype (F64, F32, F16, BF16), got ${t.dtype}`);
  }
  return out;
}

/** The tensor's values as integers (I32 or I64 within the safe integer range). */
export function toIntegers(t: StoredTensor, name: string): number[] {
  const view = new DataView(t.bytes.buffer, t.bytes.byteOffset, t.bytes.byteLength);
  if (t.dtype === "I32") return Array.from({ length: t.bytes.length / 4 }, (_, i) => view.getInt32(4 * i, true));
  if (t.dtype === "I64") {
    return Array.from({ length: t.bytes.length / 8 }, (_, i) => {
      const x = view.getBigInt64(8 * i, true);
      if (x > BigInt(Number.MAX_SAFE_INTEGER) || x < -BigInt(Number.MAX_SAFE_INTEGER))
        throw new MobaError(`tensor "${name}": element ${i} (${x}) is out of range`);
      return Number(x);
    });
  }
  throw new MobaError(`tensor "${name}": expected an integer dtype (I32, I64), got ${t.dtype}`);
}

export interface TensorToWrite {
  dtype: Dtype;
  shape: readonly number[];
  data: ArrayLike<number>;
}

/** Encodes tensors (in the given order) and string metadata into one safetensors file. */
export function serializeSafetensors(tensors: Record<string, TensorToWrite>, metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const size = t.shape.reduce((a, b) => a * b, 1);
    if (size !== t.data.length) throw new MobaError(`tensor "${name}": shape [${t.shape}] needs ${size} elements, got ${t.data.length}`);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + size * BYTES[t.dtype]] };
    offset += size * BYTES[t.dtype];
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  // pad with spaces so the buffer starts 8-byte aligned, as the reference writer does
  const headerBytes = new Uint8Array(json.length + ((8 - (json.length % 8)) % 8)).fill(0x20);
  headerBytes.set(json);
  const file = new Uint8Array(8 + headerBytes.length + offset);
  const view = new DataView(file.buffer);
  view.setBigUint64(0, BigInt(headerBytes.length), true);
  file.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const t of Object.values(tensors)) {
    const n = t.data.length;
    for (let i = 0; i < n; i++) {
      const x = t.data[i];
      switch (t.dtype) {
        case "F64":
          view.setFloat64(at + 8 * i, x, true);
          break;
        case "F32":
          view.setFloat32(at + 4 * i, x, true);
          break;
        case "F16":
          view.setUint16(at + 2 * i, floatToF16(x), true);
          break;
        case "BF16":
          view.setUint16(at + 2 * i, floatToBf16(x), true);
          break;
        case "I64":
          view.setBigInt64(at + 8 * i, BigInt(x), true);
          break;
        case "I32":
          view.setInt32(at + 4 * i, x, true);
          break;
      }
    }
    at += n * BYTES[t.dtype];
  }
  return file;
}
