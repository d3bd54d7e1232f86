import { describe, expect, it } from 'vitest';
import { backward } from '../../src/engine/autograd.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor, tidy } from '../../src/engine/tensor.js';
import { f32ToBf16, f32ToF16 } from '../../src/io/dtype.js';
import { sumToSuffix, mul } from '../../src/kernels/elementwise.js';
import {
  chooseMatmulKernel,
  linear,
  matmul,
  matmulGemv,
  matmulV1,
  matmulV2,
  matmulV3,
  type MatmulKernel,
  type MatmulOptions,
} from '../../src/kernels/matmul.js';
import { dotErrorBound, halfBitsToNumber, matmulGradRef, matmulRef, type MatRef } from '../reference/matmul.js';
import { testRng, useEngine } from '../helpers/index.js';
import { gradCheck } from '../helpers/gradcheck.js';

useEngine();

const KERNELS: Record<MatmulKernel, (a: Tensor, b: Tensor, o?: MatmulOptions) => Tensor> = {
  v1: matmulV1,
  v2: matmulV2,
  v3: matmulV3,
  gemv: matmulGemv,
};
const TRANSPOSES: [boolean, boolean][] = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

/**
 * Every element within the f32 rounding bound of a `terms`-term dot product, γ_terms·Σ|a·b| (see
 * tests/reference/matmul.ts): a rigorous bound for any summation order, so it cannot flake, yet a
 * wrong index or a missed term is off by O(|a·b|) and fails. NaN (a poisoned, unwritten output) fails.
 */
function expectWithinDotBound(actual: ArrayLike<number>, ref: MatRef, terms: number, label: string): void {
  expect(actual.length, `${label}: length`).toBe(ref.data.length);
  const bad: string[] = [];
  let nBad = 0;
  let worst = 0;
  for (let i = 0; i < ref.data.length; i++) {
    const err = Math.abs(actual[i]! - ref.data[i]!);
    const bound = dotErrorBound(ref.absDot[i]!, terms);
    if (!(err <= bound)) {
      nBad++;
      if (bad.length < 8) bad.push(`  [${i}] got ${actual[i]} want ${ref.data[i]} (err ${err.toExponential(2)}, bound ${bound.toExponential(2)})`);
    }
    if (Number.isFinite(err)) worst = Math.max(worst, err / bound);
  }
  if (nBad > 0) throw new Error(`${label}: ${nBad}/${ref.data.length} elements outside γ_${terms}·Σ|ab| (worst err/bound ${worst.toFixed(2)})\n${bad.join('\n')}`);
}

function stored(shape: number[], trans: boolean): number[] {
  if (!trans) return shape;
  const s = [...shape];
  [s[s.length - 2], s[s.length - 1]] = [s[s.length - 1]!, s[s.length - 2]!];
  return s;
}

function randomOperand(rng: Rng, shape: number[]): { data: Float32Array; shape: number[]; t: Tensor } {
  const n = shape.reduce((x, y) => x * y, 1);
  const data = rng.normalArray(n);
  return { data, shape, t: Tensor.from(data, shape) };
}

/** Random 16-bit weights: the raw bits for the GPU, their exact values for the reference. */
function randomHalf(rng: Rng, shape: number[], dtype: 'bf16' | 'f16'): { bits: Uint16Array; values: Float64Array; t: Tensor } {
  const n = shape.reduce((x, y) => x * y, 1);
  const src = rng.normalArray(n);
  const bits = Uint16Array.from(src, (v) => (dtype === 'bf16' ? f32ToBf16(v) : f32ToF16(v)));
  const values = Float64Array.from(bits, (b) => halfBitsToNumber(b, dtype));
  return { bits, values, t: Tensor.from(bits, shape, dtype) };
}

describe('matmul kernels vs float64 reference', () => {
  it('every kernel version and transpose on odd shapes (1×1×1, primes, non-multiples of the tiles)', async () => {
    const rng = testRng('matmul-shapes');
    // [M, N, K]
    const shapes: [number, number, number][] = [[1, 1, 1], [7, 13, 5], [65, 67, 129], [130, 131, 17], [3, 17, 12], [4, 9, 40], [2, 5, 0]];
    for (const [M, N, K] of shapes) {
      for (const [tA, tB] of TRANSPOSES) {
        const a = randomOperand(rng, stored([M, K], tA));
        const b = randomOperand(rng, stored([K, N], tB));
        const ref = matmulRef(a, b, tA, tB);
        for (const [name, fn] of Object.entries(KERNELS) as [MatmulKernel, typeof matmulV1][]) {
          if (name === 'gemv' && (!tB || M > 4)) continue;
          const c = fn(a.t, b.t, { transA: tA, transB: tB });
          expect(c.shape).toEqual([M, N]);
          expectWithinDotBound(await c.toFloat32(), ref, Math.max(K, 1), `${name} ${M}×${N}×${K} transA=${tA} transB=${tB}`);
          c.dispose();
        }
        a.t.dispose();
        b.t.dispose();
      }
    }
  });

  it('packed bf16 / f16 B (unpacked in-kernel) against the reference on the rounded weights', async () => {
    const rng = testRng('matmul-half');
    const shapes: [number, number, number][] = [[1, 1, 1], [7, 13, 5], [3, 37, 40], [1, 11, 16], [66, 70, 33]];
    for (const dtype of ['bf16', 'f16'] as const) {
      for (const [M, N, K] of shapes) {
        // transA does not touch the 16-bit loads (the f32 test covers it): two layouts of B here, which
        // halves the pipelines lavapipe must compile.
        for (const [tA, tB] of [[false, false], [false, true], [true, true]] as [boolean, boolean][]) {
          const a = randomOperand(rng, stored([M, K], tA));
          const bShape = stored([K, N], tB);
          const b = randomHalf(rng, bShape, dtype);
          const ref = matmulRef(a, { data: b.values, shape: bShape }, tA, tB);
          for (const [name, fn] of Object.entries(KERNELS) as [MatmulKernel, typeof matmulV1][]) {
            if (name === 'gemv' && (!tB || M > 4)) continue;
            // V3 shares V2's 16-bit loader; compiling it per layout costs lavapipe minutes, so V3 is
            // checked on the layout linear uses (B = W[out, in], transposed).
            if (name === 'v3' && (tA || !tB)) continue;
            const c = fn(a.t, b.t, { transA: tA, transB: tB });
            expectWithinDotBound(await c.toFloat32(), ref, K, `${name} ${dtype} ${M}×${N}×${K} transA=${tA} transB=${tB}`);
            c.dispose();
          }
          a.t.dispose();
          b.t.dispose();
        }
      }
    }
  });

  it('batched, 2-D b broadcast over a batch, and 2-D a broadcast over b’s batch', async () => {
    const rng = testRng('matmul-batched');
    const [M, N, K] = [7, 5, 13];
    const cases: { aB: number[]; bB: number[] }[] = [
      { aB: [2, 3], bB: [2, 3] },
      { aB: [2, 3], bB: [] },
      { aB: [], bB: [3] },
      { aB: [1], bB: [1] },
    ];
    for (const { aB, bB } of cases) {
      for (const [tA, tB] of TRANSPOSES) {
        const a = randomOperand(rng, [...aB, ...stored([M, K], tA)]);
        const b = randomOperand(rng, [...bB, ...stored([K, N], tB)]);
        const ref = matmulRef(a, b, tA, tB);
        for (const [name, fn] of Object.entries({ ...KERNELS, promoted: matmul })) {
          if (name === 'gemv') continue;
          const c = fn(a.t, b.t, { transA: tA, transB: tB });
          expect(c.shape, name).toEqual(ref.shape);
          expectWithinDotBound(await c.toFloat32(), ref, K, `${name} a[${a.shape}] b[${b.shape}] transA=${tA} transB=${tB}`);
          c.dispose();
        }
      }
    }
    // Batched GEMV (decode attention-like: few rows per batch, B transposed).
    const a = randomOperand(rng, [3, 2, 24]);
    const b = randomOperand(rng, [3, 9, 24]);
    const c = matmulGemv(a.t, b.t, { transB: true });
    expectWithinDotBound(await c.toFloat32(), matmulRef(a, b, false, true), 24, 'batched gemv');
  });

  it('the promoted matmul picks GEMV for decode and tiles otherwise', () => {
    const x = Tensor.empty([1, 64]);
    const w = Tensor.empty([96, 64], 'bf16');
    expect(chooseMatmulKernel(x, w, { transB: true })).toBe('gemv');
    expect(chooseMatmulKernel(Tensor.empty([2, 2, 64]), w, { transB: true })).toBe('gemv');
    expect(chooseMatmulKernel(Tensor.empty([64, 64]), w, { transB: true })).toBe('v2');
    expect(chooseMatmulKernel(Tensor.empty([4096, 64]), Tensor.empty([64, 2048]))).toBe('v3');
    expect(() => matmul(Tensor.empty([3, 4]), Tensor.empty([5, 6]))).toThrow(/inner dims/);
    expect(() => matmul(Tensor.empty([2, 3, 4]), Tensor.empty([3, 4, 6]))).toThrow(/batch dims/);
  });

  it('backward: dA and dB for every transpose, batched and broadcast, against the reference', async () => {
    const rng = testRng('matmul-backward');
    const [M, N, K] = [6, 11, 9];
    const cases: { aB: number[]; bB: number[] }[] = [
      { aB: [], bB: [] },
      { aB: [2, 2], bB: [2, 2] },
      { aB: [3], bB: [] },
      { aB: [], bB: [3] },
    ];
    for (const { aB, bB } of cases) {
      for (const [tA, tB] of TRANSPOSES) {
        const a = randomOperand(rng, [...aB, ...stored([M, K], tA)]);
        const b = randomOperand(rng, [...bB, ...stored([K, N], tB)]);
        a.t.requiresGrad = true;
        b.t.requiresGrad = true;
        const batch = (aB.length ? aB : bB).reduce((x, y) => x * y, 1);
        const cShape = [...(aB.length ? aB : bB), M, N];
        const g = rng.normalArray(batch * M * N);
        tidy(() => backward(matmul(a.t, b.t, { transA: tA, transB: tB }), Tensor.from(g, cShape)));
        const ref = matmulGradRef(a, b, g, tA, tB);
        const label = `a[${a.shape}] b[${b.shape}] transA=${tA} transB=${tB}`;
        expect(a.t.grad!.shape).toEqual(a.shape);
        expect(b.t.grad!.shape).toEqual(b.shape);
        // dA sums N products per batch (times the batch for a broadcast a); dB sums M per batch likewise,
        // and a broadcast operand's batch partials are added once more (+ batch).
        const bcA = aB.length === 0 && bB.length > 0 ? batch : 1;
        const bcB = bB.length === 0 && aB.length > 0 ? batch : 1;
        expectWithinDotBound(await a.t.grad!.toFloat32(), ref.dA, N * bcA + bcA, `dA ${label}`);
        expectWithinDotBound(await b.t.grad!.toFloat32(), ref.dB, M * bcB + bcB, `dB ${label}`);
        a.t.grad!.dispose();
        b.t.grad!.dispose();
      }
    }
  });

  it('backward with packed 16-bit B: dA for every transpose (B itself frozen)', async () => {
    const rng = testRng('matmul-backward-half');
    const [M, N, K] = [5, 9, 8];
    for (const dtype of ['bf16', 'f16'] as const) {
      for (const [tA, tB] of TRANSPOSES) {
        const a = randomOperand(rng, [2, ...stored([M, K], tA)]);
        const bShape = stored([K, N], tB);
        const b = randomHalf(rng, bShape, dtype);
        a.t.requiresGrad = true;
        const g = rng.normalArray(2 * M * N);
        tidy(() => backward(matmul(a.t, b.t, { transA: tA, transB: tB }), Tensor.from(g, [2, M, N])));
        const ref = matmulGradRef(a, { data: b.values, shape: bShape }, g, tA, tB);
        expectWithinDotBound(await a.t.grad!.toFloat32(), ref.dA, N, `dA ${dtype} transA=${tA} transB=${tB}`);
        expect(b.t.grad).toBeNull();
        a.t.grad!.dispose();
      }
    }
  });

  it('linear: f32 / bf16 / f16 weights forward; dX always, dW only when the weight requires grad', async () => {
    const rng = testRng('linear');
    const [inF, outF] = [19, 10];
    for (const dtype of ['f32', 'bf16', 'f16'] as const) {
      for (const rows of [[1], [2, 3], [1, 1]]) {
        const x = randomOperand(rng, [...rows, inF]);
        const w =
          dtype === 'f32'
            ? (() => {
                const o = randomOperand(rng, [outF, inF]);
                return { values: Float64Array.from(o.data), t: o.t };
              })()
            : randomHalf(rng, [outF, inF], dtype);
        const wRef = { data: w.values, shape: [outF, inF] };
        for (const wGrad of [false, true]) {
          x.t.requiresGrad = true;
          w.t.requiresGrad = wGrad;
          const y = linear(x.t, w.t);
          const label = `linear ${dtype} x[${x.shape}] wGrad=${wGrad}`;
          expect(y.shape).toEqual([...rows, outF]);
          const x2 = { data: x.data, shape: [rows.reduce((p, q) => p * q, 1), inF] };
          const ref = matmulRef(x2, wRef, false, true);
          expectWithinDotBound(await y.toFloat32(), ref, inF, `${label} forward`);
          const g = rng.normalArray(ref.data.length);
          backward(y, Tensor.from(g, y.shape));
          const gr = matmulGradRef(x2, wRef, g, false, true);
          expectWithinDotBound(await x.t.grad!.toFloat32(), gr.dA, outF, `${label} dX`);
          if (wGrad) {
            expect(w.t.grad!.shape).toEqual([outF, inF]);
            expectWithinDotBound(await w.t.grad!.toFloat32(), gr.dB, x2.shape[0]!, `${label} dW`);
          } else {
            expect(w.t.grad, `${label}: a frozen weight must get no gradient`).toBeNull();
          }
          x.t.grad!.dispose();
          x.t.grad = null;
          w.t.grad?.dispose();
          w.t.grad = null;
        }
      }
    }
  });

  it('finite differences: matmul (transposes, broadcast) and linear', async () => {
    const rng = testRng('matmul-fd');
    const wts = rng.normalArray(2 * 4 * 3);
    await gradCheck(
      'sum(w ⊙ (aᵀ·bᵀ)) with 2-D b broadcast',
      ([a, b]) => sumToSuffix(mul(matmul(a!, b!, { transA: true, transB: true }), Tensor.from(wts, [2, 4, 3])), [1]),
      [
        { data: rng.normalArray(2 * 5 * 4), shape: [2, 5, 4] },
        { data: rng.normalArray(3 * 5), shape: [3, 5] },
      ],
      rng,
    );
    const wl = rng.normalArray(3 * 2 * 6);
    await gradCheck(
      'sum(w ⊙ linear(x, W))',
      ([x, w]) => sumToSuffix(mul(linear(x!, w!), Tensor.from(wl, [3, 2, 6])), [1]),
      [
        { data: rng.normalArray(3 * 2 * 7), shape: [3, 2, 7] },
        { data: rng.normalArray(6 * 7), shape: [6, 7] },
      ],
      rng,
    );
  });
});
