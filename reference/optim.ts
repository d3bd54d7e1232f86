// Float64 references for the optimizer, from the PyTorch documentation's AdamW algorithm and
// clip_grad_norm_ definition (not from the WGSL).

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

export interface AdamWRefState {
  p: Float64Array;
  m: Float64Array;
  v: Float64Array;
  t: number;
}

export function adamwRefInit(p: ArrayLike<number>): AdamWRefState {
  return { p: Float64Array.from(p), m: new Float64Array(p.length), v: new Float64Array(p.length), t: 0 };
}

/** One step: θ ← θ(1 − γλ); m ← β1 m + (1−β1) g; v ← β2 v + (1−β2) g²; θ ← θ − γ m̂/(√v̂ + ε). */
export function adamwRefStep(s: AdamWRefState, g: ArrayLike<number>, h: AdamWHyper): void {
  s.t++;
  const bc1 = 1 - h.beta1 ** s.t;
  const bc2 = 1 - h.beta2 ** s.t;
  for (let i = 0; i < s.p.length; i++) {
    const gi = g[i]!;
    s.p[i] = s.p[i]! * (1 - h.lr * h.weightDecay);
    s.m[i] = h.beta1 * s.m[i]! + (1 - h.beta1) * gi;
    s.v[i] = h.beta2 * s.v[i]! + (1 - h.beta2) * gi * gi;
    const mhat = s.m[i]! / bc1;
    const vhat = s.v[i]! / bc2;
    s.p[i] = s.p[i]! - (h.lr * mhat) / (Math.sqrt(vhat) + h.eps);
  }
}

/** Global L2 norm over all gradients and torch's clip coefficient min(1, max/(norm + 1e-6)). */
export function clipRef(grads: ArrayLike<number>[], maxNorm: number): { norm: number; coef: number } {
  let ss = 0;
  for (const g of grads) for (let i = 0; i < g.length; i++) ss += g[i]! * g[i]!;
  const norm = Math.sqrt(ss);
  return { norm, coef: Math.min(1, maxNorm / (norm + 1e-6)) };
}
