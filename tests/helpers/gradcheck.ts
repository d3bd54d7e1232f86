// Finite-difference gradient checks of the GPU autograd: the analytic gradient from backward()
// against central differences of the same GPU forward, at sampled coordinates of every input.
// f32 forward passes limit the accuracy of a difference quotient to about 1e-7*|f|/eps from rounding;
// Richardson extrapolation (h and h/2) cuts the truncation error from O(h^2) to O(h^4). Hence eps = 1e-2
// (relative to the value's scale) and a tolerance of a few 1e-3 relative.
import { expect } from 'vitest';
import { backward, noGrad } from '../../src/engine/autograd.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor, tidy } from '../../src/engine/tensor.js';

export interface GradInput {
  data: Float32Array;
  shape: number[];
}

export interface GradCheckOptions {
  samples?: number;
  eps?: number;
  rtol?: number;
  atol?: number;
}

/** `f` maps leaf tensors to a scalar loss tensor. */
export async function gradCheck(
  label: string,
  f: (xs: Tensor[]) => Tensor,
  inputs: GradInput[],
  rng: Rng,
  opts: GradCheckOptions = {},
): Promise<void> {
  const { samples = 6, eps = 1e-2, rtol = 5e-3, atol = 1e-4 } = opts;
  const leaves = inputs.map((inp) => {
    const t = Tensor.from(inp.data, inp.shape).keep();
    t.requiresGrad = true;
    return t;
  });
  tidy(() => backward(f(leaves)));
  const analytic = await Promise.all(leaves.map((l) => l.grad!.toFloat32()));
  const evalAt = async (k: number, idx: number, delta: number): Promise<number> => {
    const data = Float32Array.from(inputs[k]!.data);
    data[idx]! += delta;
    return noGrad(() => {
      const xs = inputs.map((inp, j) => Tensor.from(j === k ? data : inp.data, inp.shape));
      const loss = f(xs);
      return loss;
    }).item();
  };
  for (let k = 0; k < inputs.length; k++) {
    const n = inputs[k]!.data.length;
    const picks = new Set<number>();
    while (picks.size < Math.min(samples, n)) picks.add(rng.int(n));
    for (const idx of picks) {
      const h = eps * Math.max(1, Math.abs(inputs[k]!.data[idx]!));
      let lossScale = 0;
      const central = async (step: number) => {
        const up = await evalAt(k, idx, step);
        const down = await evalAt(k, idx, -step);
        lossScale = Math.max(lossScale, Math.abs(up), Math.abs(down));
        return (up - down) / (2 * step);
      };
      // Richardson extrapolation of two central differences cancels their h^2 truncation term,
      // which otherwise reaches ~1% on strongly curved functions (e.g. 1/b) at h = 1e-2.
      const dh = await central(h);
      const dh2 = await central(h / 2);
      const fd = (4 * dh2 - dh) / 3;
      // The two estimates disagree by about their own error (truncation, and f32 rounding of the
      // forward divided by h): that disagreement is added to the tolerance as the estimate's error bar.
      // The two can also agree by chance when both are quantized to the same multiple of the loss's
      // f32 spacing, so the rounding bound of the combination is a floor: with each loss off by at
      // most 2 ulp, (4·D(h/2) − D(h))/3 is off by at most 3·(2 ulp)/h.
      const ulp = lossScale > 0 ? 2 ** (Math.floor(Math.log2(lossScale)) - 23) : 0;
      const fdError = Math.max(Math.abs(dh - dh2), (6 * ulp) / h);
      const an = analytic[k]![idx]!;
      const err = Math.abs(an - fd);
      expect(
        err,
        `${label}: input ${k} [${idx}] analytic ${an} vs finite difference ${fd} (±${fdError.toExponential(1)})`,
      ).toBeLessThanOrEqual(atol + rtol * Math.max(Math.abs(fd), Math.abs(an)) + fdError);
    }
  }
  for (const l of leaves) {
    l.grad?.dispose();
    l.dispose();
  }
}
