// The Llama layers that are not GEMMs or attention, each a forward/backward pair (llm.c style):
// the forward writes what the backward needs (rstd, lse), the backward writes input gradients
// (=) and accumulates parameter gradients (+=). Arrays are float32 in the model and float64 in
// the finite-difference tests; shapes are in the comments, row-major.
import type { Floats } from "../tensor.js";
import type { RopeScaling } from "./config.js";

// ---- token embedding ----

export function embeddingForward(
  out: Floats, // [T, H]
  table: Floats, // [V, H]
  tokens: Int32Array, // [T]
  H: number,
): void {
  for (let t = 0; t < tokens.length; t++) out.set(table.subarray(tokens[t] * H, tokens[t] * H + H), t * H);
}

export function embeddingBackward(
  dTable: Floats, // [V, H] accumulated
  dOut: Floats, // [T, H]
  tokens: Int32Array, // [T]
  H: number,
): void {
  for (let t = 0; t < tokens.length; t++) {
    const row = tokens[t] * H;
    for (let h = 0; h < H; h++) dTable[row + h] += dOut[t * H + h];
  }
}

// ---- RMSNorm: y = x / sqrt(mean(x²) + eps) · w ----

export function rmsNormForward(
  y: Floats, // [M, H]
  rstd: Floats, // [M] saved for the backward
  x: Floats, // [M, H]
  w: Floats, // [H]
  M: number,
  H: number,
  eps: number,
): void {
  for (let i = 0; i < M; i++) {
    let ss = 0;
    for (let h = 0; h < H; h++) ss += x[i * H + h] * x[i * H + h];
    const r = 1 / Math.sqrt(ss / H + eps);
    rstd[i] = r;
    for (let h = 0; h < H; h++) y[i * H + h] = x[i * H + h] * r * w[h];
  }
}

export function rmsNormBackward(
  dx: Floats, // [M, H]
  dw: Floats, // [H] accumulated
  dy: Floats, // [M, H]
  x: Floats, // [M, H]
  w: Floats, // [H]
  rstd: Floats, // [M]
  M: number,
  H: number,
): void {
  for (let i = 0; i < M; i++) {
    const r = rstd[i];
    // dx = r · (dy·w − x̂ · mean(dy·w·x̂)), x̂ = x · r
    let dot = 0;
    for (let h = 0; h < H; h++) dot += dy[i * H + h] * w[h] * x[i * H + h] * r;
    dot /= H;
    for (let h = 0; h < H; h++) {
      const xHat = x[i * H + h] * r;
      dx[i * H + h] = r * (dy[i * H + h] * w[h] - xHat * dot);
      dw[h] += dy[i * H + h] * xHat;
    }
  }
}

// ---- rotary position embedding (Hugging Face's rotate-half form) ----

export interface Rotary {
  cos: Floats; // [T, D / 2]
  sin: Floats; // [T, D / 2]
}

/** The frequency theta^(−2i / D) of each pair i, scaled as Hugging Face's rope_scaling says (its _compute_llama3_parameters for "llama3"). */
export function rotaryFrequencies(D: number, theta: number, scaling?: RopeScaling): Float64Array {
  const freq = Float64Array.from({ length: D / 2 }, (_, i) => theta ** ((-2 * i) / D));
  if (scaling?.rope_type === "linear") return freq.map((f) => f / scaling.factor);
  if (scaling?.rope_type !== "llama3") return freq;
  const { factor, low_freq_factor: low, high_freq_factor: high, original_max_position_embeddings: context } = scaling;
  return freq.map((f) => {
    const wavelength = (2 * Math.PI) / f;
    if (wavelength < context / high) return f; // high frequencies: kept
    if (wavelength > context / low) return f / factor; // low frequencies: scaled
    const smooth = (context / wavelength - low) / (high - low); // between: blended
    return (1 - smooth) * (f / factor) + smooth * f;
  });
}

/** Angles pos · frequency of each token's position within its sequence, computed in float64, kept as float32 (every backend reads the same table). */
export function rotary(positions: Int32Array, D: number, theta: number, scaling?: RopeScaling): { cos: Float32Array; sin: Float32Array } {
  const half = D / 2;
  const freq = rotaryFrequencies(D, theta, scaling);
  const cos = new Float32Array(positions.length * half);
  const sin = new Float32Array(positions.length * half);
  for (let t = 0; t < positions.length; t++) {
    for (let i = 0; i < half; i++) {
      const angle = positions[t] * freq[i];
      cos[t * half + i] = Math.cos(angle);
      sin[t * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** Rotates x in place: (x₁, x₂) → (x₁ cos − x₂ sin, x₂ cos + x₁ sin); direction −1 applies the inverse (the backward). */
export function rope(
  x: Floats, // [T, heads, D]
  r: Rotary,
  heads: number,
  D: number,
  direction: 1 | -1 = 1,
): void {
  const half = D / 2;
  const T = x.length / (heads * D);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < heads; h++) {
      const row = (t * heads + h) * D;
      for (let i = 0; i < half; i++) {
        const c = r.cos[t * half + i];
        const s = direction * r.sin[t * half + i];
        const a = x[row + i];
        const b = x[row + i + half];
        x[row + i] = a * c - b * s;
        x[row + i + half] = b * c + a * s;
      }
    }
  }
}

// ---- SwiGLU: m = silu(g) · u ----

export function swigluForward(
  m: Floats, // [M, F]
  g: Floats, // [M, F] gate projection
  u: Floats, // [M, F] up projection
): void {
  for (let i = 0; i < m.length; i++) m[i] = (g[i] / (1 + Math.exp(-g[i]))) * u[i];
}

export function swigluBackward(
  dg: Floats, // [M, F]
  du: Floats, // [M, F]
  dm: Floats, // [M, F]
  g: Floats,
  u: Floats,
): void {
  for (let i = 0; i < dm.length; i++) {
    const sigmoid = 1 / (1 + Math.exp(-g[i]));
    du[i] = dm[i] * g[i] * sigmoid;
    dg[i] = dm[i] * u[i] * sigmoid * (1 + g[i] * (1 - sigmoid));
  }
}

// ---- cross-entropy over the vocabulary, weighted per token ----

/** Writes each row's log-sum-exp and loss weight · (lse − logit[target]); returns Σ of the losses as stored. */
export function crossEntropyForward(
  lse: Floats, // [M]
  losses: Floats, // [M]
  logits: Floats, // [M, V]
  targets: Int32Array, // [M]
  weights: Floats, // [M]
  V: number,
): number {
  let loss = 0;
  for (let i = 0; i < targets.length; i++) {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[i * V + v]);
    let sum = 0;
    for (let v = 0; v < V; v++) sum += Math.exp(logits[i * V + v] - max);
    lse[i] = max + Math.log(sum);
    losses[i] = weights[i] === 0 ? 0 : weights[i] * (lse[i] - logits[i * V + targets[i]]);
    loss += losses[i];
  }
  return loss;
}

/** dlogits = scale · weight · (softmax − onehot(target)) */
export function crossEntropyBackward(
  dLogits: Floats, // [M, V]
  logits: Floats, // [M, V]
  lse: Floats, // [M]
  targets: Int32Array, // [M]
  weights: Floats, // [M]
  V: number,
  scale: number,
): void {
  for (let i = 0; i < targets.length; i++) {
    const w = weights[i] * scale;
    for (let v = 0; v < V; v++) dLogits[i * V + v] = w === 0 ? 0 : w * Math.exp(logits[i * V + v] - lse[i]);
    dLogits[i * V + targets[i]] -= w;
  }
}
