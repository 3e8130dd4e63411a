// AssemblyScript: the attention's input check, on the copies the kernels read anyway.

/** Index of the first NaN or ±Infinity among the n float32s at x, or -1 when every one is finite. */
export function firstNonFinite(x: usize, n: i32): i32 {
  // x · 0 is 0 for a finite x and NaN otherwise: four lanes of sums of them, in four accumulators
  // (no branch per element), say whether to look for the first one at all
  const zero = f32x4.splat(0);
  let s0 = zero,
    s1 = zero,
    s2 = zero,
    s3 = zero;
  let i = 0;
  for (; i + 15 < n; i += 16) {
    const at = x + <usize>i * 4;
    s0 = f32x4.add(s0, f32x4.mul(v128.load(at), zero));
    s1 = f32x4.add(s1, f32x4.mul(v128.load(at, 16), zero));
    s2 = f32x4.add(s2, f32x4.mul(v128.load(at, 32), zero));
    s3 = f32x4.add(s3, f32x4.mul(v128.load(at, 48), zero));
  }
  let tail: f32 = 0;
  for (; i < n; i++) tail += load<f32>(x + <usize>i * 4) * 0;
  const sum = f32x4.add(f32x4.add(s0, s1), f32x4.add(s2, s3));
  if (f32x4.extract_lane(sum, 0) + f32x4.extract_lane(sum, 1) + f32x4.extract_lane(sum, 2) + f32x4.extract_lane(sum, 3) + tail == 0) return -1;
  for (let j = 0; j < n; j++) {
    const value = load<f32>(x + <usize>j * 4);
    if (value - value != 0) return j; // NaN - NaN and ∞ - ∞ are NaN
  }
  return -1;
}
