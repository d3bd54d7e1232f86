// Float64 reference for rotary embeddings (Llama rotate-half): for each head and i < Dh/2, the pair
// (x_i, x_{i+Dh/2}) is rotated by the angle θ = pos·inv_freq_i:
//   y_i = x_i cos θ − x_{i+h} sin θ,   y_{i+h} = x_{i+h} cos θ + x_i sin θ.
// The reference takes the angles' cos/sin as arrays [maxPos, Dh/2] (so the rotation is checked apart
// from the tables, which have their own tests). The backward is the transpose: rotation by −θ.
// Also the llama3 inverse frequencies from the definition (Meta's llama3 `apply_scaling`), in f64.

export function ropeRef(
  x: ArrayLike<number>,
  positions: ArrayLike<number>,
  heads: number,
  dh: number,
  cos: ArrayLike<number>,
  sin: ArrayLike<number>,
  inverse = false,
): Float64Array {
  const h = dh / 2;
  const y = new Float64Array(x.length);
  const tokens = positions.length;
  for (let t = 0; t < tokens; t++) {
    const pos = positions[t]!;
    for (let hd = 0; hd < heads; hd++) {
      const base = (t * heads + hd) * dh;
      for (let i = 0; i < h; i++) {
        const c = cos[pos * h + i]!;
        const s = inverse ? -sin[pos * h + i]! : sin[pos * h + i]!;
        const a = x[base + i]!;
        const b = x[base + i + h]!;
        y[base + i] = a * c - b * s;
        y[base + i + h] = b * c + a * s;
      }
    }
  }
  return y;
}

/**
 * inv_freq_i = θ^(−2i/Dh), then llama3 scaling by wavelength λ = 2π/f: λ < L/high → f,
 * λ > L/low → f/factor, otherwise (1 − s)·f/factor + s·f with s = (L/λ − low)/(high − low).
 */
export function llama3InvFreqRef(
  dh: number,
  theta: number,
  scaling: { factor: number; low: number; high: number; orig: number } | null,
): Float64Array {
  const out = new Float64Array(dh / 2);
  for (let i = 0; i < dh / 2; i++) {
    const f = Math.exp(((-2 * i) / dh) * Math.log(theta));
    if (!scaling) {
      out[i] = f;
      continue;
    }
    const lambda = (2 * Math.PI) / f;
    if (lambda < scaling.orig / scaling.high) out[i] = f;
    else if (lambda > scaling.orig / scaling.low) out[i] = f / scaling.factor;
    else {
      const s = (scaling.orig / lambda - scaling.low) / (scaling.high - scaling.low);
      out[i] = (1 - s) * (f / scaling.factor) + s * f;
    }
  }
  return out;
}
