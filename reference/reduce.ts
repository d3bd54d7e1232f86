// Float64 references for reductions and softmax, from the definitions (not from the WGSL).

export interface RowsRef {
  values: Float64Array;
  /** Σ|x| per row: the scale of the f32 rounding error of the sum. */
  absSum: Float64Array;
  /** Index of the first maximum per row (max only). */
  argmax: Int32Array;
}

/** Reduces consecutive rows of length D (D = data.length for an all-element reduction). */
export function reduceRowsRef(data: ArrayLike<number>, D: number): { sum: RowsRef; max: RowsRef } {
  const rows = D === 0 ? 0 : data.length / D;
  const sum = new Float64Array(rows);
  const absSum = new Float64Array(rows);
  const mx = new Float64Array(rows);
  const arg = new Int32Array(rows);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    let a = 0;
    let best = -Infinity;
    let bi = -1;
    for (let j = 0; j < D; j++) {
      const v = data[r * D + j]!;
      s += v;
      a += Math.abs(v);
      if (v > best) {
        best = v;
        bi = j;
      }
    }
    sum[r] = s;
    absSum[r] = a;
    mx[r] = best;
    arg[r] = bi;
  }
  return { sum: { values: sum, absSum, argmax: arg }, max: { values: mx, absSum, argmax: arg } };
}

/** Softmax of each row of length D: exp(x_j) / Σ_k exp(x_k), evaluated stably in f64. */
export function softmaxRef(data: ArrayLike<number>, D: number): Float64Array {
  const out = new Float64Array(data.length);
  for (let r = 0; r < data.length / D; r++) {
    let m = -Infinity;
    for (let j = 0; j < D; j++) m = Math.max(m, data[r * D + j]!);
    let s = 0;
    for (let j = 0; j < D; j++) s += Math.exp(data[r * D + j]! - m);
    for (let j = 0; j < D; j++) out[r * D + j] = Math.exp(data[r * D + j]! - m) / s;
  }
  return out;
}

/** Softmax backward from the Jacobian J_jk = y_j(δ_jk − y_k): dx_j = Σ_k g_k·y_k(δ_jk − y_j). */
export function softmaxBackwardRef(
  y: ArrayLike<number>,
  g: ArrayLike<number>,
  D: number,
): { dx: Float64Array; scale: Float64Array } {
  const dx = new Float64Array(y.length);
  const scale = new Float64Array(y.length);
  for (let r = 0; r < y.length / D; r++) {
    for (let j = 0; j < D; j++) {
      const yj = y[r * D + j]!;
      let s = 0;
      let a = 0;
      for (let k = 0; k < D; k++) {
        const yk = y[r * D + k]!;
        const jac = (j === k ? yj : 0) - yj * yk;
        s += g[r * D + k]! * jac;
        a += Math.abs(g[r * D + k]! * yk);
      }
      dx[r * D + j] = s;
      // |y_j|·(|g_j| + Σ|g·y|): the magnitude the f32 evaluation y·(g − Σg·y) rounds against
      scale[r * D + j] = Math.abs(yj) * (Math.abs(g[r * D + j]!) + a);
    }
  }
  return { dx, scale };
}
