// Float64 reference for the fused LM head + cross-entropy, from the definitions: logits_r =
// h[rows_r]·Wᵀ, loss_r = CE(logits_r, label_r) (reference/crossentropy.ts), and for
// L = Σ_r scale_r·loss_r: dlogits_r = scale_r·(softmax − onehot), dh[rows_r] = dlogits_r·W (0 on rows
// not listed), dW = Σ_r dlogits_rᵀ·h[rows_r]. Each gradient element comes with Σ|terms|, the scale
// of its f32 rounding error, and the logits with theirs (Σ_k |h·w|).
import { crossEntropyBackwardRef, crossEntropyRowsRef } from './crossentropy.js';

export interface LinearCrossEntropyRef {
  loss: Float64Array;
  lse: Float64Array;
  counted: boolean[];
  /** Largest Σ_k |h_k·w_k| over a row's logits (bounds the f32 GEMM error of that row). */
  logitAbsDot: Float64Array;
  dh: Float64Array;
  dhAbs: Float64Array;
  dw: Float64Array;
  dwAbs: Float64Array;
}

export function linearCrossEntropyRef(
  h: ArrayLike<number>,
  n: number,
  d: number,
  w: ArrayLike<number>,
  v: number,
  labels: ArrayLike<number>,
  rows: ArrayLike<number> | null,
  rowScale: ArrayLike<number>,
  ignoreIndex = -100,
): LinearCrossEntropyRef {
  const m = labels.length;
  const rowOf = (r: number) => (rows ? rows[r]! : r);
  const logits = new Float64Array(m * v);
  const logitAbsDot = new Float64Array(m);
  for (let r = 0; r < m; r++) {
    const hr = rowOf(r) * d;
    for (let j = 0; j < v; j++) {
      let s = 0;
      let a = 0;
      for (let k = 0; k < d; k++) {
        s += h[hr + k]! * w[j * d + k]!;
        a += Math.abs(h[hr + k]! * w[j * d + k]!);
      }
      logits[r * v + j] = s;
      logitAbsDot[r] = Math.max(logitAbsDot[r]!, a);
    }
  }
  const { loss, lse, counted } = crossEntropyRowsRef(logits, labels, v, ignoreIndex);
  const dl = crossEntropyBackwardRef(logits, labels, v, rowScale, ignoreIndex);
  const dh = new Float64Array(n * d);
  const dhAbs = new Float64Array(n * d);
  const dw = new Float64Array(v * d);
  const dwAbs = new Float64Array(v * d);
  for (let r = 0; r < m; r++) {
    const hr = rowOf(r) * d;
    for (let j = 0; j < v; j++) {
      const g = dl[r * v + j]!;
      for (let k = 0; k < d; k++) {
        dh[hr + k] += g * w[j * d + k]!;
        dhAbs[hr + k] += Math.abs(g * w[j * d + k]!);
        dw[j * d + k] += g * h[hr + k]!;
        dwAbs[j * d + k] += Math.abs(g * h[hr + k]!);
      }
    }
  }
  return { loss, lse, counted, logitAbsDot, dh, dhAbs, dw, dwAbs };
}
