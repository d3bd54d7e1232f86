// AdamW where a parameter's moments exceed the device's largest storage binding (e.g. a 128256 ×
// 3072 f32 embedding under full training: 2.9 GiB of moments, above an NVIDIA adapter's 2 GiB): the
// parameter is updated in pieces, each with its moments in a state chunk within one binding and its
// parameter and gradient bound by range. The update is elementwise, so the pieces give exactly the
// unsplit optimizer's parameters and moments, and the saved state does not depend on the split.
// The GPU device's limit is lowered for the test (its own kernels are checked against it).
import { describe, expect, it } from 'vitest';
import { type AdamWHyper, adamwRefInit, adamwRefStep } from '../../reference/optim.js';
import { storageBindingLimit } from '../../src/engine/device.js';
import { engine, type Tensor } from '../../src/engine/tensor.js';
import { AdamW } from '../../src/kernels/optim.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';
import { param, setGrad } from './optim-helpers.js';

useEngine();

/** Runs `fn` with the GPU device's maxStorageBufferBindingSize lowered to `bytes`, restored after. */
function withMaxBinding<T>(bytes: number, fn: () => T): T {
  const dev = engine().dev;
  const limits = dev.limits;
  Object.defineProperty(dev, 'limits', {
    value: Object.freeze({ ...limits, maxStorageBufferBindingSize: bytes }),
    configurable: true,
  });
  try {
    return fn();
  } finally {
    Object.defineProperty(dev, 'limits', { value: limits, configurable: true });
  }
}

const LIMIT = 64 * 1024; // moments of 8192 elements per binding
const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));

describe('AdamW over parameters whose moments exceed one storage binding', () => {
  it('updates them in pieces within the limit, bit-identical to the unsplit optimizer and within f32 rounding of float64; the saved state is the same', async () => {
    const rng = testRng('adamw-binding-limit');
    // Above the limit's 8192 moment elements: 20000 (three pieces), 2·8192 + 69; at it: 8192; below: the rest.
    const sizes = [3, 20000, 100, 2 * 8192 + 69, 7, 8192];
    const init = sizes.map((n) => rng.normalArray(n));
    const grads = [0, 1, 2, 3].map((s) => sizes.map((n) => rng.normalArray(n, 0, s === 1 ? 1e-2 : 1)));
    const h: AdamWHyper = { lr: 3e-3, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0.05 };
    const make = (ps: Tensor[]) =>
      new AdamW(ps, {
        lr: h.lr,
        betas: [h.beta1, h.beta2],
        eps: h.eps,
        weightDecay: h.weightDecay,
        noWeightDecay: [ps[1]!], // a split parameter in the exempt group
      });
    const step = (ps: Tensor[], opt: AdamW, gs: Float32Array[]) => {
      ps.forEach((p, i) => {
        setGrad(p, gs[i]!);
      });
      opt.step();
    };

    const split = init.map(param);
    const whole = init.map(param);
    expect(storageBindingLimit(engine().dev.limits)).toBeGreaterThanOrEqual(8 * 20000);
    const optSplit = withMaxBinding(LIMIT, () => make(split));
    const optWhole = make(whole);
    const refs = init.map(adamwRefInit);
    const refsExempt = refs.map((r, i) => (i === 1 ? r : null));
    for (const gs of grads.slice(0, 3)) {
      // Every dispatch of the split optimizer's step is checked against the lowered limit.
      withMaxBinding(LIMIT, () => step(split, optSplit, gs));
      step(whole, optWhole, gs);
      gs.forEach((g, i) => {
        adamwRefStep(refs[i]!, g, refsExempt[i] ? { ...h, weightDecay: 0 } : h);
      });
    }
    for (let i = 0; i < sizes.length; i++) {
      const got = await split[i]!.toFloat32();
      expect(bits(got), `parameter ${i}`).toEqual(bits(await whole[i]!.toFloat32()));
      // three steps each move p by ≤ lr; f32 rounding ≪ 1e-3·lr; |p| ≤ 6 (as the multi-tensor tests)
      expectClose(got, refs[i]!.p, { atol: 1e-3 * h.lr + 2e-6, rtol: 0 }, `parameter ${i} (${sizes[i]} elements)`);
    }
    const saved = await optSplit.exportState();
    const savedWhole = await optWhole.exportState();
    expect(saved.step).toBe(3);
    for (let i = 0; i < sizes.length; i++) {
      expect(bits(saved.moments[i]!.expAvg), `exp_avg ${i}`).toEqual(bits(savedWhole.moments[i]!.expAvg));
      expect(bits(saved.moments[i]!.expAvgSq), `exp_avg_sq ${i}`).toEqual(bits(savedWhole.moments[i]!.expAvgSq));
    }

    // The unsplit optimizer's state resumes on the split layout (and back) bit-identically.
    const resumed = await Promise.all(whole.map(async (p) => param(await p.toFloat32())));
    const optResumed = withMaxBinding(LIMIT, () => make(resumed));
    withMaxBinding(LIMIT, () => optResumed.importState(savedWhole));
    withMaxBinding(LIMIT, () => step(resumed, optResumed, grads[3]!));
    step(whole, optWhole, grads[3]!);
    for (let i = 0; i < sizes.length; i++)
      expect(bits(await resumed[i]!.toFloat32()), `resumed parameter ${i}`).toEqual(bits(await whole[i]!.toFloat32()));
    const back = await optResumed.exportState();
    const ahead = await optWhole.exportState();
    for (let i = 0; i < sizes.length; i++)
      expect(bits(back.moments[i]!.expAvgSq), `resumed exp_avg_sq ${i}`).toEqual(bits(ahead.moments[i]!.expAvgSq));

    for (const o of [optSplit, optWhole, optResumed]) o.dispose();
    for (const p of [...split, ...whole, ...resumed]) {
      p.grad?.dispose();
      p.dispose();
    }
  });
});
