// IEEE half (F16) and bfloat16 (BF16) conversions, round to nearest even.

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function f16ToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exponent = (h >> 10) & 0x1f;
  const mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24; // zero and subnormals
  if (exponent === 0x1f) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function floatToF16(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) return sign | 0x7c00 | (mantissa ? 0x200 : 0); // Inf, NaN
  const e = exponent - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00; // overflow to Inf
  if (e <= 0) {
    if (e < -10) return sign; // underflow to zero
    // subnormal: shift the full significand, round to nearest even
    const m = mantissa | 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = m & ((1 << shift) - 1);
    let out = m >> shift;
    if (rest > half || (rest === half && out & 1)) out++;
    return sign | out;
  }
  let out = (e << 10) | (mantissa >> 13);
  const rest = mantissa & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && out & 1)) out++; // may carry into the exponent: still right
  return sign | out;
}

export function bf16ToFloat(h: number): number {
  u32[0] = h << 16;
  return f32[0];
}

export function floatToBf16(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  if ((bits & 0x7f800000) === 0x7f800000 && bits & 0x7fffff) return (bits >>> 16) | 0x40; // NaN stays NaN
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

/**
 * Each element rounded to the nearest f16 value (kept as float32: every f16 is exact there). In
 * f16's normal range below 2^15 the rounding is done on the float32 bits — drop 13 mantissa bits,
 * ties to even — which is ~10x faster than a round trip through f16 bits and gives the same values
 * (1M tokens x 8 heads x 128 dims is 1G elements per tensor); the rest takes the round trip.
 */
export function roundToF16(x: Float32Array): Float32Array {
  const out = new Float32Array(x.length);
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const rounded = new Uint32Array(out.buffer);
  for (let i = 0; i < x.length; i++) {
    const b = bits[i];
    const exponent = (b >>> 23) & 0xff;
    if (exponent >= 113 && exponent <= 141)
      rounded[i] = (b + 0xfff + ((b >>> 13) & 1)) & 0xffffe000; // 2^-14 <= |x| < 2^15
    else out[i] = f16ToFloat(floatToF16(x[i]));
  }
  return out;
}
