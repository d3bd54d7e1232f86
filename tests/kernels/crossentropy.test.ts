import { describe, expect, it } from 'vitest';
import { crossEntropyBackwardRef, crossEntropyMeanRef, crossEntropyRowsRef } from '../../reference/crossentropy.js';
import { backward, zeroGrad } from '../../src/engine/autograd.js';
import { Tensor, tidy } from '../../src/engine/tensor.js';
import { crossEntropy, crossEntropyPerRow, crossEntropyRows } from '../../src/kernels/crossentropy.js';
import { binary, sumToSuffix } from '../../src/kernels/elementwise.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, expectNoGrowth, testRng, useEngine } from '../helpers/index.js';

useEngine();

// Tolerances (f32, u = 6e-8). lse = m + log(s), s = Σ exp(z − m) ∈ [1, V]: the sum of ≤ 32000 terms
// (strided + tree order) is good to ~log2(V)·u relative, WGSL exp to (3 + 2|x|) ulp, so log(s) is
// within ~1e-6 absolute, and lse − z_label adds ~ulp(|lse|) (≤ 1e-6 for |lse| ≲ 20): atol 1e-5 on
// per-row losses and on their mean. dlogits: p = exp(z − lse) carries lse's absolute error as a
// relative one plus exp's ≤ (3 + 2·|z − lse|) ulp (|z − lse| ≲ 25 here): rtol 1e-5, and p − 1 near
// p ≈ 1 makes that error absolute: atol 1e-6·scale.
const LOSS_TOL = { atol: 1e-5, rtol: 1e-6 };

function makeLabels(rng: ReturnType<typeof testRng>, n: number, v: number, ignoreIndex = -100): Int32Array {
  const labels = Int32Array.from({ length: n }, () => rng.int(v));
  if (n > 2) labels[1] = ignoreIndex;
  if (n > 4) labels[4] = -7; // any negative label is ignored too
  if (n > 5) labels[n - 1] = v - 1; // last vocabulary entry
  return labels;
}

describe('cross-entropy vs float64 reference', () => {
  it('mean loss and dlogits on odd shapes (V = 1, 257, 601, 32000), ignored labels', async () => {
    const rng = testRng('crossentropy');
    for (const [n, v] of [
      [1, 1],
      [7, 601],
      [13, 257],
      [3, 32000],
      [1, 5],
    ] as [number, number][]) {
      const z = rng.normalArray(n * v, 0, 3);
      const labels = makeLabels(rng, n, v);
      const g = 0.5 + rng.uniform();
      const logits = Tensor.from(z, [n, v]);
      logits.requiresGrad = true;
      const loss = crossEntropy(logits, Tensor.from(labels, [n]));
      expect(loss.shape).toEqual([1]);
      backward(loss, Tensor.from([g], [1]));
      const ref = crossEntropyMeanRef(z, labels, v);
      const label = `N=${n} V=${v}`;
      expectClose([await loss.item()], [ref.loss], LOSS_TOL, `${label} loss`);
      const scale = ref.count > 0 ? g / ref.count : 0;
      const dref = crossEntropyBackwardRef(z, labels, v, new Array(n).fill(scale));
      expectClose(
        await logits.grad!.toFloat32(),
        dref,
        { atol: 1e-6 * Math.max(scale, 1e-3), rtol: 1e-5 },
        `${label} dlogits`,
      );
    }
  });

  it('per-row losses and lse, and the per-row backward', async () => {
    const rng = testRng('crossentropy-rows');
    for (const [n, v, ignoreIndex] of [
      [7, 601, -100],
      [13, 130, 3],
    ] as [number, number, number][]) {
      const z = rng.normalArray(n * v, 0, 2);
      const labels = makeLabels(rng, n, v, ignoreIndex);
      const gRows = rng.normalArray(n);
      const logits = Tensor.from(z, [n, v]);
      logits.requiresGrad = true;
      const labelsT = Tensor.from(labels, [n]);
      const rows = crossEntropyPerRow(logits, labelsT, { ignoreIndex });
      backward(rows, Tensor.from(gRows, [n]));
      const ref = crossEntropyRowsRef(z, labels, v, ignoreIndex);
      expectClose(await rows.toFloat32(), ref.loss, LOSS_TOL, `N=${n} V=${v} per-row loss`);
      const { loss, lse } = crossEntropyRows(Tensor.from(z, [n, v]), labelsT, { ignoreIndex });
      expectClose(await lse.toFloat32(), ref.lse, LOSS_TOL, `N=${n} V=${v} lse`);
      expectClose(await loss.toFloat32(), ref.loss, LOSS_TOL, `N=${n} V=${v} rows (unrecorded)`);
      expectClose(
        await logits.grad!.toFloat32(),
        crossEntropyBackwardRef(z, labels, v, gRows, ignoreIndex),
        { atol: 3e-6, rtol: 1e-5 },
        `N=${n} V=${v} per-row dlogits`,
      );
    }
  });

  it('is stable for large logits (online max)', async () => {
    const rng = testRng('crossentropy-large');
    const n = 4;
    const v = 301;
    const z = rng.normalArray(n * v, 0, 2);
    for (let j = 0; j < v; j++) {
      z[j] += 1000;
      z[2 * v + j] -= 1000;
    }
    z[v + 17] = 80; // exp(80) overflows f32 without the max shift
    const labels = Int32Array.from([5, 17, 300, 0]);
    const logits = Tensor.from(z, [n, v]);
    logits.requiresGrad = true;
    const rows = crossEntropyPerRow(logits, Tensor.from(labels, [n]));
    backward(rows, Tensor.from(new Float32Array(n).fill(1), [n]));
    // |lse| ≈ 1000: one rounding of lse is ulp(1000)/2 = 3e-5, so atol 1e-4 on those rows.
    expectClose(await rows.toFloat32(), crossEntropyRowsRef(z, labels, v).loss, { atol: 1e-4, rtol: 1e-6 }, 'rows');
    // p = exp(z − lse) inherits lse's 3e-5 absolute error as a relative one.
    expectClose(
      await logits.grad!.toFloat32(),
      crossEntropyBackwardRef(z, labels, v, [1, 1, 1, 1]),
      { atol: 1e-6, rtol: 1e-4 },
      'dlogits',
    );
  });

  it('all labels ignored: loss 0 (count 0) and zero gradient, not NaN', async () => {
    const n = 5;
    const v = 33;
    const logits = Tensor.from(testRng('crossentropy-ignored').normalArray(n * v), [n, v]);
    logits.requiresGrad = true;
    const loss = crossEntropy(logits, Tensor.from(new Int32Array(n).fill(-100), [n]));
    backward(loss);
    expect(await loss.item()).toBe(0);
    expect(Array.from(await logits.grad!.toFloat32()).every((x) => x === 0)).toBe(true);
  });

  it('a label ≥ V makes that row (and the mean) NaN instead of a silent wrong value', async () => {
    const z = testRng('crossentropy-oob').normalArray(3 * 10);
    const labels = Tensor.from(new Int32Array([1, 10, 2]), [3]);
    const rows = await crossEntropyPerRow(Tensor.from(z, [3, 10]), labels).toFloat32();
    expect(Number.isNaN(rows[1]!)).toBe(true);
    expect(Number.isFinite(rows[0]!) && Number.isFinite(rows[2]!)).toBe(true);
    expect(Number.isNaN(await crossEntropy(Tensor.from(z, [3, 10]), labels).item())).toBe(true);
  });

  it('finite differences agree with backward (mean and per-row)', async () => {
    const rng = testRng('crossentropy-fd');
    const labels = Tensor.from(new Int32Array([2, -100, 0, 10]), [4]).keep();
    const weights = rng.normalArray(4);
    await gradCheck(
      'crossEntropy',
      ([z]) => crossEntropy(z!, labels),
      [{ data: rng.normalArray(44), shape: [4, 11] }],
      rng,
    );
    await gradCheck(
      'crossEntropyPerRow',
      ([z]) => sumToSuffix(binary('mul', crossEntropyPerRow(z!, labels), Tensor.from(weights, [4])), [1]),
      [{ data: rng.normalArray(44), shape: [4, 11] }],
      rng,
    );
    labels.dispose();
  });
  it('frees every temporary (per-row losses, lse, count) under tidy: no pool growth', async () => {
    const rng = testRng('crossentropy-leak');
    const logits = Tensor.from(rng.normalArray(6 * 17), [6, 17]).keep();
    const labels = Tensor.from(new Int32Array([1, -100, 16, 0, 3, 3]), [6]).keep();
    logits.requiresGrad = true;
    await expectNoGrowth(() => {
      tidy(() => backward(crossEntropy(logits, labels)));
      tidy(() => backward(sumToSuffix(crossEntropyPerRow(logits, labels), [1])));
      zeroGrad([logits]);
    });
    // Without autograd nothing is saved either.
    logits.requiresGrad = false;
    await expectNoGrowth(() =>
      tidy(() => {
        crossEntropy(logits, labels);
      }),
    );
    for (const t of [logits, labels]) t.dispose();
  });

  it('more rows than workgroups per grid dimension (folded grid)', async () => {
    const rng = testRng('crossentropy-many-rows');
    const n = 66_000; // > 65535
    const v = 2;
    const z = rng.normalArray(n * v);
    const labels = Int32Array.from({ length: n }, (_, i) => (i % 5 === 0 ? -100 : rng.int(v)));
    const logits = Tensor.from(z, [n, v]);
    logits.requiresGrad = true;
    const loss = crossEntropy(logits, Tensor.from(labels, [n]));
    backward(loss);
    const ref = crossEntropyMeanRef(z, labels, v);
    // mean of 52,800 per-row losses summed in f32 (strided + tree): ~1e-6 relative.
    expectClose([await loss.item()], [ref.loss], { atol: 1e-5, rtol: 1e-5 }, 'loss');
    expectClose(
      await logits.grad!.toFloat32(),
      crossEntropyBackwardRef(z, labels, v, new Array(n).fill(1 / ref.count)),
      { atol: 1e-10, rtol: 1e-5 },
      'dlogits',
    );
  });
});
