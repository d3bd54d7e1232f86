import { describe, expect, it } from 'vitest';
import { reduceRowsRef, softmaxBackwardRef, softmaxRef } from '../../reference/reduce.js';
import { backward } from '../../src/engine/autograd.js';
import { Tensor } from '../../src/engine/tensor.js';
import { mul, sumToSuffix } from '../../src/kernels/elementwise.js';
import { argmax, max, mean, REDUCE_CHUNK, softmax, sum } from '../../src/kernels/reduce.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';

useEngine();

const U = 2 ** -24; // f32 unit roundoff
const ULP = 2 ** -23; // one ulp, relative, upper bound
const gamma = (n: number) => (n * U) / (1 - n * U);

/** Per-element |a − r| ≤ bound[i]; NaN fails. */
function expectWithin(
  actual: ArrayLike<number>,
  ref: ArrayLike<number>,
  bound: (i: number) => number,
  label: string,
): void {
  expect(actual.length, `${label}: length`).toBe(ref.length);
  const bad: string[] = [];
  let nBad = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(actual[i]! - ref[i]!);
    if (!(err <= bound(i))) {
      nBad++;
      if (bad.length < 8)
        bad.push(
          `  [${i}] got ${actual[i]} want ${ref[i]} (err ${err.toExponential(2)}, bound ${bound(i).toExponential(2)})`,
        );
    }
  }
  if (nBad) throw new Error(`${label}: ${nBad}/${ref.length} elements out of bounds\n${bad.join('\n')}`);
}

/** Threads per row the kernels use (mirrors rowThreads in reduce.ts: it sets the summation tree). */
const wgFor = (D: number) => (D > 256 ? 256 : 64);

describe('reductions vs float64 reference', () => {
  it('sum / mean / max over the last axis, forward and backward', async () => {
    const rng = testRng('reduce-last');
    for (const shape of [
      [1, 1],
      [3, 7],
      [5, 300],
      [2, 3, 37],
      [4, 1],
      [2, 1000],
    ]) {
      const D = shape[shape.length - 1]!;
      const n = shape.reduce((a, b) => a * b, 1);
      const rows = n / D;
      const data = rng.normalArray(n);
      const ref = reduceRowsRef(data, D);
      const g = rng.normalArray(rows);
      const label = `[${shape}]`;
      // f32 sum of D terms: ≤ γ_D·Σ|x| for any order; mean adds the rounded 1/D and the product (2 more).
      for (const [name, fn] of [
        ['sum', sum],
        ['mean', mean],
        ['max', max],
      ] as const) {
        const x = Tensor.from(data, shape);
        x.requiresGrad = true;
        const y = fn(x, -1);
        expect(y.shape, `${name} ${label}`).toEqual(shape.slice(0, -1));
        const got = await y.toFloat32();
        backward(y, Tensor.from(g, y.shape));
        const dx = await x.grad!.toFloat32();
        if (name === 'sum') {
          expectWithin(got, ref.sum.values, (i) => gamma(D) * ref.sum.absSum[i]!, `sum ${label}`);
          expectClose(
            dx,
            Array.from(data, (_, i) => g[Math.floor(i / D)]!),
            { atol: 0, rtol: 0 },
            `sum backward ${label}`,
          ); // a copy: exact
        } else if (name === 'mean') {
          expectWithin(
            got,
            Array.from(ref.sum.values, (s) => s / D),
            (i) => (gamma(D + 2) * ref.sum.absSum[i]!) / D,
            `mean ${label}`,
          );
          // g·fl(1/D): two roundings
          expectClose(
            dx,
            Array.from(data, (_, i) => g[Math.floor(i / D)]! / D),
            { atol: 0, rtol: 2 * ULP },
            `mean backward ${label}`,
          );
        } else {
          expectClose(got, ref.max.values, { atol: 0, rtol: 0 }, `max ${label}`); // a selection: exact
          const want = Array.from(data, (_, i) =>
            i % D === ref.max.argmax[Math.floor(i / D)] ? g[Math.floor(i / D)]! : 0,
          );
          expectClose(dx, want, { atol: 0, rtol: 0 }, `max backward ${label}`);
        }
        x.grad!.dispose();
      }
      const am = (await argmax(Tensor.from(data, shape)).read()) as Int32Array;
      expect(Array.from(am), `argmax ${label}`).toEqual(Array.from(ref.max.argmax));
    }
  });

  it('all-element reductions, including multi-pass ones (n > REDUCE_CHUNK)', async () => {
    const rng = testRng('reduce-all');
    for (const n of [1, 5, 1000, 3 * REDUCE_CHUNK + 5]) {
      const data = rng.normalArray(n);
      const ref = reduceRowsRef(data, n);
      const g = rng.normalArray(1);
      for (const [name, fn] of [
        ['sum', sum],
        ['mean', mean],
        ['max', max],
      ] as const) {
        const x = Tensor.from(data, [n]);
        x.requiresGrad = true;
        const y = fn(x);
        expect(y.shape).toEqual([1]);
        const got = await y.toFloat32();
        backward(y, Tensor.from(g, [1]));
        const dx = await x.grad!.toFloat32();
        if (name === 'sum') {
          expectWithin(got, ref.sum.values, () => gamma(n) * ref.sum.absSum[0]!, `sum all n=${n}`);
          expectClose(dx, new Float64Array(n).fill(g[0]!), { atol: 0, rtol: 0 }, `sum all backward n=${n}`);
        } else if (name === 'mean') {
          expectWithin(got, [ref.sum.values[0]! / n], () => (gamma(n + 2) * ref.sum.absSum[0]!) / n, `mean all n=${n}`);
          expectClose(dx, new Float64Array(n).fill(g[0]! / n), { atol: 0, rtol: 2 * ULP }, `mean all backward n=${n}`);
        } else {
          expectClose(got, ref.max.values, { atol: 0, rtol: 0 }, `max all n=${n}`);
          const want = new Float64Array(n);
          want[ref.max.argmax[0]!] = g[0]!;
          expectClose(dx, want, { atol: 0, rtol: 0 }, `max all backward n=${n}`);
        }
        x.grad!.dispose();
      }
    }
    // Multi-dim input with no axis reduces everything.
    const d = rng.normalArray(6 * 7);
    expectWithin(
      await sum(Tensor.from(d, [6, 7])).toFloat32(),
      reduceRowsRef(d, 42).sum.values,
      () => gamma(42) * reduceRowsRef(d, 42).sum.absSum[0]!,
      'sum [6,7] all',
    );
  });

  it('max breaks ties toward the first index, in rows and across passes; results are deterministic', async () => {
    const x = Tensor.from(new Float32Array([1, 3, 3, 2, -5, -5, -5, -5]), [2, 4]);
    x.requiresGrad = true;
    const y = max(x, -1);
    expect(Array.from(await y.toFloat32())).toEqual([3, -5]);
    backward(y, Tensor.from(new Float32Array([10, 20]), [2]));
    expect(Array.from(await x.grad!.toFloat32())).toEqual([0, 10, 0, 0, 20, 0, 0, 0]);
    const n = 2 * REDUCE_CHUNK + 3;
    const data = new Float32Array(n).fill(-1);
    data[REDUCE_CHUNK + 7] = 4; // first maximum in the second chunk
    data[2 * REDUCE_CHUNK + 1] = 4;
    const big = Tensor.from(data, [n]);
    big.requiresGrad = true;
    const m = max(big);
    backward(m, Tensor.from(new Float32Array([1]), [1]));
    const dx = await big.grad!.toFloat32();
    expect(dx.indexOf(1)).toBe(REDUCE_CHUNK + 7);
    expect(dx.reduce((a, b) => a + b, 0)).toBe(1);
    const rng = testRng('reduce-determinism');
    const v = Tensor.from(rng.normalArray(5000), [5000]);
    const a = await sum(v).toFloat32();
    const b = await sum(v).toFloat32();
    expect(Array.from(a)).toEqual(Array.from(b));
  });

  it('rejects axes other than the last', () => {
    expect(() => sum(Tensor.empty([2, 3]), 0)).toThrow(/last axis/);
  });

  it('softmax forward and backward, including large offsets (stability)', async () => {
    const rng = testRng('softmax');
    for (const [shape, offset] of [
      [[1, 1], 0],
      [[3, 7], 0],
      [[2, 300], 0],
      [[2, 2, 37], 1000],
      [[3, 1000], -50],
    ] as [number[], number][]) {
      const D = shape[shape.length - 1]!;
      const n = shape.reduce((a, b) => a * b, 1);
      const data = rng.normalArray(n, offset, 3);
      const yRef = softmaxRef(data, D);
      const g = rng.normalArray(n);
      const x = Tensor.from(data, shape);
      x.requiresGrad = true;
      const y = softmax(x);
      const got = await y.toFloat32();
      backward(y, Tensor.from(g, shape));
      const dx = await x.grad!.toFloat32();
      // WGSL allows exp an error of 3 + 2|t| ulp. A term passes through ≤ k + 2 exp evaluations (its
      // own, k rescales, the output's) whose arguments sum to ≤ 2R in magnitude (R = row range), and
      // the denominator is a tree sum with ≤ k additions per path, k = ceil(D/wg) + log2(wg).
      let R = 0;
      for (let r = 0; r < n / D; r++) {
        const row = data.subarray(r * D, (r + 1) * D);
        R = Math.max(R, Math.max(...row) - Math.min(...row));
      }
      const wg = wgFor(D);
      const k = Math.ceil(D / wg) + Math.log2(wg);
      const eY = (3 * (k + 2) + 4 * R + k + 2) * ULP;
      const label = `softmax [${shape}] offset ${offset}`;
      expectWithin(got, yRef, (i) => eY * yRef[i]!, `${label} forward`);
      // dx = y(g − Σg·y) with y carrying relative error eY: bound (eY + γ_{k+2})·|y|(|g| + Σ|g·y|)
      const { dx: dxRef, scale } = softmaxBackwardRef(yRef, g, D);
      expectWithin(dx, dxRef, (i) => (eY + gamma(k + 2)) * scale[i]! + 1e-30, `${label} backward`);
    }
  });

  it('finite differences through sum, mean, max and softmax', async () => {
    const rng = testRng('reduce-fd');
    const shape = [3, 6];
    const w = rng.normalArray(18);
    await gradCheck(
      'sum(w ⊙ softmax(x))',
      ([x]) => sum(mul(softmax(x!), Tensor.from(w, shape))),
      [{ data: rng.normalArray(18), shape }],
      rng,
    );
    const w3 = rng.normalArray(3);
    await gradCheck(
      'sum(w ⊙ mean(x ⊙ x, -1))',
      ([x]) => sumToSuffix(mul(mean(mul(x!, x!), -1), Tensor.from(w3, [3])), [1]),
      [{ data: rng.normalArray(18), shape }],
      rng,
    );
    // Distinct values 0.25 apart: the finite-difference step (≤ 0.05) never changes the argmax.
    const perm = rng.shuffle(Array.from({ length: 18 }, (_, i) => (i - 9) * 0.25));
    await gradCheck(
      'sum(w ⊙ max(x, -1))',
      ([x]) => sum(mul(max(x!, -1), Tensor.from(w3, [3]))),
      [{ data: Float32Array.from(perm), shape }],
      rng,
    );
    await gradCheck(
      'sum(x)² over all elements',
      ([x]) => mul(sum(x!), sum(x!)),
      [{ data: rng.normalArray(18), shape }],
      rng,
    );
  });
});
