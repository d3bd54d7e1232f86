import { describe, expect, it } from 'vitest';
import { Tensor } from '../../src/engine/tensor.js';
import { AdamW, clipGradNorm } from '../../src/kernels/optim.js';
import { adamwRefInit, adamwRefStep, clipRef, type AdamWHyper } from '../reference/optim.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';
import { expectWithinSumBound } from '../reference/nf4.js';

useEngine();

function param(data: Float32Array): Tensor {
  const t = Tensor.from(data, [data.length]).keep();
  t.requiresGrad = true;
  return t;
}

function setGrad(p: Tensor, g: Float32Array): void {
  p.grad?.dispose();
  p.grad = Tensor.from(g, p.shape).keep();
}

describe('AdamW vs float64 reference', () => {
  it('first step by hand: p1 = p0(1 − lr·wd) − lr·g/(|g| + eps)', async () => {
    const rng = testRng('adamw-first');
    const n = 37;
    const p0 = rng.normalArray(n);
    const g = rng.normalArray(n, 0, 1e-3);
    g[0] = 0; // m = v = 0: update 0/(0 + eps) = 0
    g[1] = 1e-9; // comparable to eps: lr·g/(g + eps) = lr/2 ... exactly lr·1e-9/(1e-9 + 1e-8)
    const p = param(p0);
    setGrad(p, g);
    const lr = 5e-3;
    const wd = 0.01;
    const opt = new AdamW([p], { lr, weightDecay: wd, eps: 1e-8 });
    opt.step();
    // m̂ = g and v̂ = g² after one step (bias corrections cancel (1−β)): f32 rounding of a handful of
    // ops on |p| ≤ 4 and an update ≤ lr: 1e-6 absolute is ~16 ulp of |p|.
    const want = Array.from(p0, (v, i) => v * (1 - lr * wd) - (lr * g[i]!) / (Math.abs(g[i]!) + 1e-8));
    expectClose(await p.toFloat32(), want, { atol: 1e-6, rtol: 1e-6 }, 'step 1');
    const st = await opt.exportState();
    expect(st.step).toBe(1);
    expectClose(st.moments[0]!.expAvg, Array.from(g, (v) => 0.1 * v), { atol: 0, rtol: 1e-6 }, 'exp_avg');
    expectClose(st.moments[0]!.expAvgSq, Array.from(g, (v) => 0.001 * v * v), { atol: 0, rtol: 1e-5 }, 'exp_avg_sq');
    opt.dispose();
  });

  it('six steps with changing lr, several tensors (1, prime, > one workgroup), weight decay on and off', async () => {
    const rng = testRng('adamw-steps');
    for (const wd of [0.01, 0]) {
      const sizes = [1, 257, 3 * 70];
      const init = sizes.map((n) => rng.normalArray(n));
      const params = init.map(param);
      const h: AdamWHyper = { lr: 5e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: wd };
      const opt = new AdamW(params, { lr: h.lr, betas: [h.beta1, h.beta2], eps: h.eps, weightDecay: wd });
      const refs = init.map(adamwRefInit);
      const absRefs = init.map(adamwRefInit); // m over |g|: the scale of rounding error in m when terms cancel
      for (let step = 0; step < 6; step++) {
        const lr = 5e-3 * (1 - step / 10);
        params.forEach((p, i) => {
          const g = rng.normalArray(sizes[i]!, 0, step % 2 ? 1e-2 : 1);
          setGrad(p, g);
          adamwRefStep(refs[i]!, g, { ...h, lr });
          adamwRefStep(absRefs[i]!, g.map(Math.abs), { ...h, lr });
        });
        opt.step(lr);
        for (let i = 0; i < params.length; i++) {
          // Each step moves p by ≤ lr; f32 rounding of m, v (relative ~1e-7 per step) and of the
          // update gives errors ≪ 1e-3·lr; |p| ≤ 5 rounds at 2^-24·5 per op.
          expectClose(await params[i]!.toFloat32(), refs[i]!.p, { atol: 1e-3 * lr + 2e-6, rtol: 0 }, `wd ${wd} step ${step + 1} tensor ${i}`);
        }
      }
      const st = await opt.exportState();
      for (let i = 0; i < params.length; i++) {
        // m is a signed sum over steps: 3 f32 roundings per step relative to Σ|terms|
        expectWithinSumBound(st.moments[i]!.expAvg, { y: refs[i]!.m, absSum: absRefs[i]!.m }, 3 * 6, 'exp_avg', 2);
        // v sums positive terms: relative error ≤ 3 roundings per step
        expectClose(st.moments[i]!.expAvgSq, refs[i]!.v, { atol: 1e-12, rtol: 1e-5 }, 'exp_avg_sq');
      }
      opt.dispose();
      for (const p of params) {
        p.grad?.dispose();
        p.dispose();
      }
    }
  });

  it('state export / import resumes bit-identically; parameters without a gradient are skipped', async () => {
    const rng = testRng('adamw-state');
    const n = 300;
    const init = rng.normalArray(n);
    const grads = [0, 1, 2].map(() => rng.normalArray(n));
    const a = param(init);
    const frozen = param(rng.normalArray(5));
    const frozenBefore = await frozen.toFloat32();
    const optA = new AdamW([a, frozen], { lr: 1e-2 });
    for (const g of grads.slice(0, 2)) {
      setGrad(a, g);
      optA.step();
    }
    const saved = await optA.exportState();
    const pSaved = await a.toFloat32();
    setGrad(a, grads[2]!);
    optA.step();
    const after = await a.toFloat32();
    expect(Array.from(await frozen.toFloat32())).toEqual(Array.from(frozenBefore));

    const b = param(pSaved);
    const optB = new AdamW([b, frozen], { lr: 1e-2 });
    optB.importState(saved);
    setGrad(b, grads[2]!);
    optB.step();
    expect(Array.from(await b.toFloat32())).toEqual(Array.from(after));
    expect(() => optB.importState({ step: 1, moments: [saved.moments[0]!] })).toThrow(/moments/);
    optA.dispose();
    optB.dispose();
  });
});

describe('clipGradNorm', () => {
  it('global norm over tensors, scale min(1, max/(norm + 1e-6)) applied in place', async () => {
    const rng = testRng('clip');
    const sizes = [1, 5000, 77]; // 5000 > one workgroup's 4096-element slot: several partials
    for (const maxNorm of [1.0, 1e6]) {
      const grads = sizes.map((n) => rng.normalArray(n, 0, 0.3));
      const params = sizes.map((n) => param(new Float32Array(n)));
      params.forEach((p, i) => setGrad(p, grads[i]!));
      const noGrad = param(new Float32Array(3)); // no .grad: ignored
      const norm = clipGradNorm([...params, noGrad], maxNorm);
      const ref = clipRef(grads, maxNorm);
      // sum of ~5000 squares in f32, partials then a final sum: relative error ≪ 1e-5
      expectClose([await norm.item()], [ref.norm], { atol: 0, rtol: 1e-5 }, 'norm');
      for (let i = 0; i < sizes.length; i++) {
        expectClose(await params[i]!.grad!.toFloat32(), Array.from(grads[i]!, (g) => g * ref.coef), { atol: 1e-12, rtol: 2e-5 }, `clipped grad ${i} (max ${maxNorm})`);
      }
      if (maxNorm > ref.norm) expect(Array.from(await params[1]!.grad!.toFloat32())).toEqual(Array.from(grads[1]!));
      for (const p of [...params, noGrad]) {
        p.grad?.dispose();
        p.dispose();
      }
    }
  });
});
