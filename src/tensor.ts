// The one tensor type of the public API: a flat float32 array and its row-major shape; the error
// type; the arrays the CPU's dense ops take.

/** float32 in the model, float64 in the finite-difference checks of its backward. */
export type Floats = Float32Array | Float64Array;

export interface Tensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
}

export function tensor(data: Float32Array, shape: readonly number[]): Tensor {
  const size = shape.reduce((a, b) => a * b, 1);
  if (data.length !== size) {
    throw new MobaError(`tensor: expected ${size} elements for shape [${shape.join(", ")}], got ${data.length}`);
  }
  return { data, shape: [...shape] };
}

/** Every error caused by bad input: the message names the argument, the expected and the actual value. */
export class MobaError extends Error {
  override name = "MobaError";
}

/** A value as it goes into an error message: JSON, cut to `max` characters (a 100k-deep or 90 MB value included). */
export function shown(value: unknown, max = 80): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = Array.isArray(value) ? "[...]" : typeof value === "object" ? "{...}" : String(value);
  }
  return text.length > max ? `${text.slice(0, max)}...` : text;
}
