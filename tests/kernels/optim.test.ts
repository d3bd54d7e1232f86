import { describe, expect, it } from 'vitest';
import { expectWithinSumBound } from '../../reference/nf4.js';
import { type AdamWHyper, adamwRefInit, adamwRefStep, clipRef } from '../../reference/optim.js';
import { engine, type Tensor } from '../../src/engine/tensor.js';
import {
  AdamW,
  adamwTensorsPerDispatch,
  clipGradNorm,
  clipTensorsPerDispatch,
  gradNormCoef,
} from '../../src/kernels/optim.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';
import { param, setGrad } from './optim-helpers.js';

useEngine();

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
    expectClose(
      st.moments[0]!.expAvg,
      Array.from(g, (v) => 0.1 * v),
      { atol: 0, rtol: 1e-6 },
      'exp_avg',
    );
    expectClose(
      st.moments[0]!.expAvgSq,
      Array.from(g, (v) => 0.001 * v * v),
      { atol: 0, rtol: 1e-5 },
      'exp_avg_sq',
    );
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
          expectClose(
            await params[i]!.toFloat32(),
            refs[i]!.p,
            { atol: 1e-3 * lr + 2e-6, rtol: 0 },
            `wd ${wd} step ${step + 1} tensor ${i}`,
          );
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

  it('noWeightDecay: the listed parameters take the step without decay, the others with it', async () => {
    const rng = testRng('adamw-nodecay');
    // More tensors than one dispatch holds, alternating decayed / exempt, so both kinds span groups.
    const sizes = Array.from({ length: 2 * adamwTensorsPerDispatch() + 3 }, (_, i) => 1 + 37 * i);
    const init = sizes.map((n) => rng.normalArray(n));
    const params = init.map(param);
    const exempt = params.filter((_, i) => i % 2 === 1);
    const h: AdamWHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };
    const opt = new AdamW(params, { lr: h.lr, weightDecay: h.weightDecay, noWeightDecay: exempt });
    const refs = init.map(adamwRefInit);
    for (let step = 0; step < 3; step++) {
      params.forEach((p, i) => {
        const g = rng.normalArray(sizes[i]!);
        setGrad(p, g);
        adamwRefStep(refs[i]!, g, { ...h, weightDecay: i % 2 === 1 ? 0 : h.weightDecay });
      });
      opt.step();
    }
    // Three steps of ≤ lr each; f32 rounding ≪ 1e-3·lr (see the six-step test). Decay alone moves
    // |p| ≈ 1 by lr·wd = 1e-3 per step, so mixing the two kinds up fails by far.
    for (let i = 0; i < params.length; i++)
      expectClose(
        await params[i]!.toFloat32(),
        refs[i]!.p,
        { atol: 1e-5 + 2e-6, rtol: 0 },
        `tensor ${i} (${i % 2 ? 'exempt' : 'decayed'})`,
      );
    expect(() => new AdamW(params.slice(0, 2), { noWeightDecay: [params[5]!] })).toThrow(/not among the parameters/);
    opt.dispose();
    for (const p of params) {
      p.grad?.dispose();
      p.dispose();
    }
  });
});

describe('clipGradNorm', () => {
  it('global norm over tensors, scale min(1, max/(norm + 1e-6)) applied in place', async () => {
    const rng = testRng('clip');
    const sizes = [1, 5000, 77]; // 5000 > one workgroup's 4096-element slot: several partials
    for (const maxNorm of [1.0, 1e6]) {
      const grads = sizes.map((n) => rng.normalArray(n, 0, 0.3));
      const params = sizes.map((n) => param(new Float32Array(n)));
      params.forEach((p, i) => {
        setGrad(p, grads[i]!);
      });
      const noGrad = param(new Float32Array(3)); // no .grad: ignored
      const norm = clipGradNorm([...params, noGrad], maxNorm);
      const ref = clipRef(grads, maxNorm);
      // sum of ~5000 squares in f32, partials then a final sum: relative error ≪ 1e-5
      expectClose([await norm.item()], [ref.norm], { atol: 0, rtol: 1e-5 }, 'norm');
      for (let i = 0; i < sizes.length; i++) {
        expectClose(
          await params[i]!.grad!.toFloat32(),
          Array.from(grads[i]!, (g) => g * ref.coef),
          { atol: 1e-12, rtol: 2e-5 },
          `clipped grad ${i} (max ${maxNorm})`,
        );
      }
      if (maxNorm > ref.norm) expect(Array.from(await params[1]!.grad!.toFloat32())).toEqual(Array.from(grads[1]!));
      for (const p of [...params, noGrad]) {
        p.grad?.dispose();
        p.dispose();
      }
    }
  });
});

/** 40 tensor sizes: 1, primes, multiples and non-multiples of 256, and one past the 2048-workgroup grid-stride cap. */
function manySizes(): number[] {
  const s = [1, 2, 3, 5, 7, 256, 257, 511, 512, 1009, 4096, 4099, 5000, 17, 31, 255, 97, 1, 640, 2048 * 256 + 13];
  for (let i = 0; s.length < 40; i++) s.push(1 + ((i * 7919) % 1500));
  return s;
}

function countDispatches(fn: () => void): number {
  const before = engine().dev.dispatchCount;
  fn();
  return engine().dev.dispatchCount - before;
}

describe('multi-tensor optimizer: many tensors per dispatch', () => {
  it('AdamW over 40 tensors (some without gradient, moments split over several state chunks) vs float64; ceil(T / K) dispatches per step', async () => {
    const rng = testRng('adamw-multi');
    const sizes = manySizes();
    const init = sizes.map((n) => rng.normalArray(n));
    const params = init.map(param);
    const noGradAt = new Set([4, 13, 39]); // skipped: parameter and moments stay
    const h: AdamWHyper = { lr: 3e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.05 };
    // Chunks of ≤ 20000 elements: the big tensor gets its own chunk, the rest share a few.
    const opt = new AdamW(params, {
      lr: h.lr,
      betas: [h.beta1, h.beta2],
      eps: h.eps,
      weightDecay: h.weightDecay,
      stateChunkElements: 20000,
    });
    const refs = init.map(adamwRefInit);
    const absRefs = init.map(adamwRefInit);
    const k = adamwTensorsPerDispatch(false);
    console.log(
      `AdamW tensors per dispatch on this device: ${k} (maxStorageBuffersPerShaderStage ${engine().dev.limits.maxStorageBuffersPerShaderStage})`,
    );
    expect(k).toBeGreaterThanOrEqual(3); // WebGPU guarantees ≥ 8 storage buffers per stage
    for (let step = 0; step < 3; step++) {
      params.forEach((p, i) => {
        if (noGradAt.has(i)) return;
        const g = rng.normalArray(sizes[i]!, 0, step === 1 ? 1e-2 : 1);
        setGrad(p, g);
        adamwRefStep(refs[i]!, g, h);
        adamwRefStep(absRefs[i]!, g.map(Math.abs), h);
      });
      const n = countDispatches(() => opt.step());
      // One dispatch per K tensors with a gradient within each state chunk (5 chunks here), instead
      // of one per tensor: far fewer than the 37 tensors updated.
      expect(n).toBeLessThanOrEqual(Math.ceil(37 / k) + 5);
      expect(n).toBeLessThan(37);
    }
    const st = await opt.exportState();
    for (let i = 0; i < params.length; i++) {
      const got = await params[i]!.toFloat32();
      if (noGradAt.has(i)) {
        expect(Array.from(got)).toEqual(Array.from(init[i]!));
        expect(st.moments[i]!.expAvg.every((v) => v === 0) && st.moments[i]!.expAvgSq.every((v) => v === 0)).toBe(true);
        continue;
      }
      // same bounds as the six-step test: each step moves p by ≤ lr, f32 rounding ≪ 1e-3·lr; |p| ≤ 6
      expectClose(got, refs[i]!.p, { atol: 1e-3 * h.lr + 2e-6, rtol: 0 }, `tensor ${i} (${sizes[i]} elements)`);
      expectWithinSumBound(st.moments[i]!.expAvg, { y: refs[i]!.m, absSum: absRefs[i]!.m }, 3 * 3, `exp_avg ${i}`, 2);
      expectClose(st.moments[i]!.expAvgSq, refs[i]!.v, { atol: 1e-12, rtol: 1e-5 }, `exp_avg_sq ${i}`);
    }
    opt.dispose();
    for (const p of params) {
      p.grad?.dispose();
      p.dispose();
    }
  });

  it('export / import across state chunks resumes bit-identically', async () => {
    const rng = testRng('adamw-multi-state');
    const sizes = [3, 300, 1, 257, 40, 600];
    const init = sizes.map((n) => rng.normalArray(n));
    const grads = [0, 1, 2].map(() => sizes.map((n) => rng.normalArray(n)));
    const a = init.map(param);
    const optA = new AdamW(a, { lr: 1e-2, stateChunkElements: 350 });
    for (const gs of grads.slice(0, 2)) {
      a.forEach((p, i) => {
        setGrad(p, gs[i]!);
      });
      optA.step();
    }
    const saved = await optA.exportState();
    const pSaved = await Promise.all(a.map((p) => p.toFloat32()));
    a.forEach((p, i) => {
      setGrad(p, grads[2]![i]!);
    });
    optA.step();
    // a different chunking on the resumed side: the saved format does not depend on it
    const b = pSaved.map(param);
    const optB = new AdamW(b, { lr: 1e-2 });
    optB.importState(saved);
    b.forEach((p, i) => {
      setGrad(p, grads[2]![i]!);
    });
    optB.step();
    for (let i = 0; i < sizes.length; i++)
      expect(Array.from(await b[i]!.toFloat32())).toEqual(Array.from(await a[i]!.toFloat32()));
    const sa = await optA.exportState();
    const sb = await optB.exportState();
    for (let i = 0; i < sizes.length; i++) {
      expect(Array.from(sb.moments[i]!.expAvg)).toEqual(Array.from(sa.moments[i]!.expAvg));
      expect(Array.from(sb.moments[i]!.expAvgSq)).toEqual(Array.from(sa.moments[i]!.expAvgSq));
    }
    optA.dispose();
    optB.dispose();
    for (const p of [...a, ...b]) {
      p.grad?.dispose();
      p.dispose();
    }
  });

  it('clipGradNorm over 40 tensors vs float64; 2·ceil(T / K) + 1 dispatches', async () => {
    const rng = testRng('clip-multi');
    const sizes = manySizes();
    const grads = sizes.map((n) => rng.normalArray(n, 0, 0.01));
    const params = sizes.map((n) => param(new Float32Array(n)));
    params.forEach((p, i) => {
      setGrad(p, grads[i]!);
    });
    const ref = clipRef(grads, 0.5);
    expect(ref.coef).toBeLessThan(0.9); // the clip is active
    let norm: Tensor | null = null;
    const n = countDispatches(() => (norm = clipGradNorm(params, 0.5)));
    const k = clipTensorsPerDispatch();
    expect(n).toBe(2 * Math.ceil(40 / k) + 1);
    expect(n).toBeLessThanOrEqual(2 * Math.ceil(40 / 7) + 1); // WebGPU's minimum of 8 storage buffers gives K ≥ 7
    // sum of ~560k squares in f32, per-workgroup tree sums then a final sum: relative error ≪ 1e-5
    expectClose([await norm!.item()], [ref.norm], { atol: 0, rtol: 1e-5 }, 'norm');
    for (let i = 0; i < sizes.length; i++) {
      expectClose(
        await params[i]!.grad!.toFloat32(),
        Array.from(grads[i]!, (g) => g * ref.coef),
        { atol: 1e-12, rtol: 2e-5 },
        `clipped grad ${i}`,
      );
    }
    norm!.dispose();
    for (const p of params) {
      p.grad?.dispose();
      p.dispose();
    }
  });

  it('clip fused into AdamW (gradNormCoef + step({gradScale})) is bit-identical to clipGradNorm + step, leaves .grad unchanged, and saves the scaling dispatches', async () => {
    const rng = testRng('adamw-fused-clip');
    const sizes = manySizes().slice(0, 19).concat([5000]); // 20 tensors
    const init = sizes.map((n) => rng.normalArray(n));
    const a = init.map(param);
    const b = init.map(param);
    const h: AdamWHyper = { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
    const optA = new AdamW(a, { lr: h.lr });
    const optB = new AdamW(b, { lr: h.lr });
    const refs = init.map(adamwRefInit);
    for (let step = 0; step < 3; step++) {
      const grads = sizes.map((n) => rng.normalArray(n, 0, 0.05));
      a.forEach((p, i) => {
        setGrad(p, grads[i]!);
      });
      b.forEach((p, i) => {
        setGrad(p, grads[i]!);
      });
      const ref = clipRef(grads, 1.0);
      expect(ref.coef).toBeLessThan(1); // clipping active
      refs.forEach((r, i) => {
        adamwRefStep(
          r,
          grads[i]!.map((g) => g * ref.coef),
          h,
        );
      });
      let normA: Tensor | null = null;
      const nA = countDispatches(() => {
        normA = clipGradNorm(a, 1.0);
        optA.step();
      });
      let fused: { norm: Tensor; coef: Tensor } | null = null;
      const nB = countDispatches(() => {
        fused = gradNormCoef(b, 1.0);
        optB.step(undefined, { gradScale: fused.coef });
      });
      const kc = clipTensorsPerDispatch();
      const ka = adamwTensorsPerDispatch(true);
      expect(nB).toBe(Math.ceil(20 / kc) + 1 + Math.ceil(20 / ka));
      expect(nA - nB).toBe(Math.ceil(20 / kc)); // the in-place scaling passes
      expect(nB).toBeLessThan(20);
      expect(await fused!.norm.item()).toBe(await normA!.item());
      for (let i = 0; i < sizes.length; i++) {
        const pa = await a[i]!.toFloat32();
        expect(Array.from(await b[i]!.toFloat32())).toEqual(Array.from(pa));
        expect(Array.from(await b[i]!.grad!.toFloat32())).toEqual(Array.from(grads[i]!)); // not scaled in place
        // each step moves p by ≤ lr; f32 rounding ≪ 1e-3·lr plus ulps of |p| ≤ 6 (the coef is f32: relative 1e-7)
        expectClose(pa, refs[i]!.p, { atol: 1e-3 * h.lr + 2e-6, rtol: 0 }, `step ${step + 1} tensor ${i}`);
      }
      normA!.dispose();
      fused!.norm.dispose();
      fused!.coef.dispose();
    }
    optA.dispose();
    optB.dispose();
    for (const p of [...a, ...b]) {
      p.grad?.dispose();
      p.dispose();
    }
  });
});
