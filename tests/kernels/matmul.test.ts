import { describe, expect, it } from 'vitest';
import { expectWithinGemmBound, gemmReference } from '../../reference/gemm.js';
import { dotErrorBound, halfBitsToNumber, type MatRef, matmulGradRef, matmulRef } from '../../reference/matmul.js';
import { backward, GradNode } from '../../src/engine/autograd.js';
import { withPrecision } from '../../src/engine/precision.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor, tidy } from '../../src/engine/tensor.js';
import { f32ToBf16, f32ToF16 } from '../../src/io/dtype.js';
import { saveActivation } from '../../src/kernels/activations.js';
import { mul, sumToSuffix } from '../../src/kernels/elementwise.js';
import { gemmPlan } from '../../src/kernels/gemm.js';
import { chooseMatmulKernel, linear, matmul, matmulForward, matmulGemv } from '../../src/kernels/matmul.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { requireFeature, testRng, useEngine } from '../helpers/index.js';

useEngine();

const TRANSPOSES: [boolean, boolean][] = [
  [false, false],
  [true, false],
  [false, true],
  [true, true],
];

/**
 * Every element within the f32 rounding bound of a `terms`-term dot product, γ_terms·Σ|a·b| (see
 * reference/matmul.ts): a rigorous bound for any summation order, so it cannot flake, yet a
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
      if (bad.length < 8)
        bad.push(
          `  [${i}] got ${actual[i]} want ${ref.data[i]} (err ${err.toExponential(2)}, bound ${bound.toExponential(2)})`,
        );
    }
    if (Number.isFinite(err)) worst = Math.max(worst, err / bound);
  }
  if (nBad > 0)
    throw new Error(
      `${label}: ${nBad}/${ref.data.length} elements outside γ_${terms}·Σ|ab| (worst err/bound ${worst.toFixed(2)})\n${bad.join('\n')}`,
    );
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
function randomHalf(
  rng: Rng,
  shape: number[],
  dtype: 'bf16' | 'f16',
): { bits: Uint16Array; values: Float64Array; t: Tensor } {
  const n = shape.reduce((x, y) => x * y, 1);
  const src = rng.normalArray(n);
  const bits = Uint16Array.from(src, (v) => (dtype === 'bf16' ? f32ToBf16(v) : f32ToF16(v)));
  const values = Float64Array.from(bits, (b) => halfBitsToNumber(b, dtype));
  return { bits, values, t: Tensor.from(bits, shape, dtype) };
}

describe('matmul (the GEMM family and the decode GEMV) vs float64 reference', () => {
  // Every tile, loader and epilogue of the GEMM generator is tested in gemm.test.ts; here the
  // promoted entry points: the GEMV for decode shapes, the tuned GEMM otherwise.
  it('promoted matmul and the GEMV on odd shapes (1×1×1, primes, empty K), every transpose', async () => {
    const rng = testRng('matmul-shapes');
    // [M, N, K]
    // Odd sizes throughout: every operand takes the scalar loads, so the API tests of this file share
    // a handful of pipelines (lavapipe compiles each in seconds); the vector loads are gemm.test.ts's.
    const shapes: [number, number, number][] = [
      [1, 1, 1],
      [7, 13, 5],
      [3, 17, 11],
      [2, 5, 0],
      [65, 67, 129],
    ];
    for (const [M, N, K] of shapes) {
      for (const [tA, tB] of TRANSPOSES) {
        const a = randomOperand(rng, stored([M, K], tA));
        const b = randomOperand(rng, stored([K, N], tB));
        const ref = matmulRef(a, b, tA, tB);
        const fns: [string, typeof matmulForward][] = [['promoted', matmulForward]];
        if (tB && M <= 4) fns.push(['gemv', matmulGemv]);
        for (const [name, fn] of fns) {
          const c = fn(a.t, b.t, { transA: tA, transB: tB });
          expect(c.shape).toEqual([M, N]);
          expectWithinDotBound(
            await c.toFloat32(),
            ref,
            Math.max(K, 1),
            `${name} ${M}×${N}×${K} transA=${tA} transB=${tB}`,
          );
          c.dispose();
        }
        a.t.dispose();
        b.t.dispose();
      }
    }
  });

  it('GEMV with packed bf16 / f16 weights (8 halves per load, and per element) against the rounded weights', async () => {
    const rng = testRng('matmul-half');
    const shapes: [number, number, number][] = [
      [1, 1, 1],
      [1, 11, 16],
      [3, 37, 40],
      [4, 13, 5],
    ]; // K % 8 == 0: 8 halves per load
    for (const dtype of ['bf16', 'f16'] as const) {
      for (const [M, N, K] of shapes) {
        const a = randomOperand(rng, [M, K]);
        const b = randomHalf(rng, [N, K], dtype);
        const ref = matmulRef(a, { data: b.values, shape: [N, K] }, false, true);
        const c = matmulGemv(a.t, b.t, { transB: true });
        expectWithinDotBound(await c.toFloat32(), ref, K, `gemv ${dtype} ${M}×${N}×${K}`);
        c.dispose();
        a.t.dispose();
        b.t.dispose();
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
        for (const [name, fn] of Object.entries({ promoted: matmul })) {
          const c = fn(a.t, b.t, { transA: tA, transB: tB });
          expect(c.shape, name).toEqual(ref.shape);
          expectWithinDotBound(
            await c.toFloat32(),
            ref,
            K,
            `${name} a[${a.shape}] b[${b.shape}] transA=${tA} transB=${tB}`,
          );
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

  it('the promoted matmul picks GEMV for decode and the GEMM otherwise', () => {
    const x = Tensor.empty([1, 64]);
    const w = Tensor.empty([96, 64], 'bf16');
    expect(chooseMatmulKernel(x, w, { transB: true })).toBe('gemv');
    expect(chooseMatmulKernel(Tensor.empty([2, 2, 64]), w, { transB: true })).toBe('gemv');
    expect(
      chooseMatmulKernel(Tensor.empty([1, 64], 'f16'), w, { transB: true }),
      'the GEMV reads f32 activations only',
    ).toBe('gemm');
    expect(chooseMatmulKernel(Tensor.empty([64, 64]), w, { transB: true })).toBe('gemm');
    expect(chooseMatmulKernel(Tensor.empty([4096, 64]), Tensor.empty([64, 2048]))).toBe('gemm');
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
    const [M, N, K] = [5, 9, 7];
    // bf16 in every layout; f16 shares the 16-bit loader (gemm.test.ts covers both kinds): two layouts.
    for (const dtype of ['bf16', 'f16'] as const) {
      for (const [tA, tB] of dtype === 'bf16' ? TRANSPOSES : TRANSPOSES.filter(([x, y]) => x !== y)) {
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

  it('fp16-mixed: linear runs the f16 GEMM variant, saves x in f16; y, dX and dW within the f16 bound', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const rng = testRng('linear-fp16');
    const [rows, inF, outF] = [37, 24, 19];
    const x = randomOperand(rng, [rows, inF]);
    const w = randomOperand(rng, [outF, inF]);
    x.t.requiresGrad = true;
    w.t.requiresGrad = true;
    const g = rng.normalArray(rows * outF);
    const y = withPrecision('fp16-mixed', () => {
      expect(gemmPlan({ a: { t: x.t }, b: { t: w.t, trans: true } }).choice.compute).toBe('f16');
      const node = new GradNode('probe', [], [], () => []);
      const saved = saveActivation(node, x.t);
      expect(saved.dtype, 'activations are saved in f16').toBe('f16');
      node.release();
      const out = linear(x.t, w.t);
      backward(out, Tensor.from(g, [rows, outF]));
      return out;
    });
    expect(
      gemmPlan({ a: { t: x.t }, b: { t: w.t, trans: true } }).choice.compute,
      'fp32 again outside withPrecision',
    ).toBe('f32');
    const X = { data: x.data, shape: [rows, inF] as [number, number] };
    const W = { data: w.data, shape: [outF, inF] as [number, number] };
    const G = { data: g, shape: [rows, outF] as [number, number] };
    expectWithinGemmBound(
      await y.toFloat32(),
      gemmReference({ a: X, b: { ...W, trans: true }, f16: true }),
      'fp16-mixed y',
    );
    expectWithinGemmBound(await x.t.grad!.toFloat32(), gemmReference({ a: G, b: W, f16: true }), 'fp16-mixed dX');
    expectWithinGemmBound(
      await w.t.grad!.toFloat32(),
      gemmReference({ a: { ...G, trans: true }, b: X, f16: true }),
      'fp16-mixed dW',
    );
    // the f16 result really differs from the f32 one (the variant is not the f32 kernel in disguise)
    const y32 = await linear(x.t, w.t).toFloat32();
    const y16 = await y.toFloat32();
    expect(y16.some((v, i) => v !== y32[i])).toBe(true);
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
