// Helpers shared by the kernels (AssemblyScript).

/** a · b + c, fused where the build has relaxed SIMD and the CPU an FMA unit. */
// @ts-ignore: decorator
@inline
export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

/**
 * e^x lane-wise (Cephes' expf: x = n ln 2 + r, |r| <= ln 2 / 2, a degree-6 polynomial for e^r, 2^n
 * built in the exponent bits): relative error below 2e-7; 0 for x < -87.33 (so -Infinity gives 0).
 */
// @ts-ignore: decorator
@inline
export function exp4(x: v128): v128 {
  const underflow = f32x4.lt(x, f32x4.splat(-87.33654));
  x = f32x4.max(f32x4.min(x, f32x4.splat(88.37626)), f32x4.splat(-87.33654));
  const n = f32x4.nearest(f32x4.mul(x, f32x4.splat(1.44269504088896341)));
  // r = x - n ln 2, with ln 2 in two parts so that n · ln2hi is exact
  const r = madd(n, f32x4.splat(2.12194440e-4), madd(n, f32x4.splat(-0.693359375), x));
  let p = madd(f32x4.splat(1.9875691500e-4), r, f32x4.splat(1.3981999507e-3));
  p = madd(p, r, f32x4.splat(8.3334519073e-3));
  p = madd(p, r, f32x4.splat(4.1665795894e-2));
  p = madd(p, r, f32x4.splat(1.6666665459e-1));
  p = madd(p, r, f32x4.splat(5.0000001201e-1));
  const y = madd(f32x4.mul(p, r), r, f32x4.add(r, f32x4.splat(1)));
  const scale = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(y, scale), underflow);
}

/** The largest of the four lanes. */
// @ts-ignore: decorator
@inline
export function hmax(x: v128): f32 {
  return max(max(f32x4.extract_lane(x, 0), f32x4.extract_lane(x, 1)), max(f32x4.extract_lane(x, 2), f32x4.extract_lane(x, 3)));
}

/** The sum of the four lanes. */
// @ts-ignore: decorator
@inline
export function hsum(x: v128): f32 {
  return f32x4.extract_lane(x, 0) + f32x4.extract_lane(x, 1) + (f32x4.extract_lane(x, 2) + f32x4.extract_lane(x, 3));
}
