// Float64 reference for RMSNorm, from the math: r = (mean(x²) + eps)^(-1/2), y = x·r·w.
// Backward: with u = g·w, dx_j = r·u_j − r³/D · x_j · Σ_k u_k x_k, and dw_j = Σ_rows g_j·x_j·r.

export function rmsnormRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  d: number,
  eps: number,
): { y: Float64Array; rstd: Float64Array } {
  const rows = x.length / d;
  const y = new Float64Array(x.length);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let j = 0; j < d; j++) ss += x[r * d + j]! ** 2;
    const rs = 1 / Math.sqrt(ss / d + eps);
    rstd[r] = rs;
    for (let j = 0; j < d; j++) y[r * d + j] = x[r * d + j]! * rs * w[j]!;
  }
  return { y, rstd };
}

export function rmsnormBackwardRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  g: ArrayLike<number>,
  d: number,
  eps: number,
): { dx: Float64Array; dw: Float64Array } {
  const rows = x.length / d;
  const { rstd } = rmsnormRef(x, w, d, eps);
  const dx = new Float64Array(x.length);
  const dw = new Float64Array(d);
  for (let r = 0; r < rows; r++) {
    const rs = rstd[r]!;
    let dot = 0;
    for (let j = 0; j < d; j++) dot += g[r * d + j]! * w[j]! * x[r * d + j]!;
    for (let j = 0; j < d; j++) {
      const i = r * d + j;
      dx[i] = rs * g[i]! * w[j]! - (rs ** 3 / d) * dot * x[i]!;
      dw[j] += g[i]! * x[i]! * rs;
    }
  }
  return { dx, dw };
}
