import { describe, expect, it } from 'vitest';
import { dropoutKeepRef, loraRef } from '../../reference/lora.js';
import { expectWithinSumBound } from '../../reference/nf4.js';
import { backward } from '../../src/engine/autograd.js';
import { type Precision, withPrecision } from '../../src/engine/precision.js';
import { Tensor } from '../../src/engine/tensor.js';
import { bf16ArrayToF32, f32ArrayToBf16 } from '../../src/io/dtype.js';
import { binary, sumToSuffix } from '../../src/kernels/elementwise.js';
import { loraLinear } from '../../src/kernels/lora.js';
import { dequantizeNf4, disposeNf4, quantizeNf4 } from '../../src/kernels/nf4.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { requireFeature, testRng, useEngine } from '../helpers/index.js';

useEngine();

type Base = 'f32' | 'bf16' | 'nf4';

async function checkCase(
  label: string,
  M: number,
  K: number,
  N: number,
  r: number,
  dropout: number,
  base: Base,
  lead?: number[],
  precision: Precision = 'fp32',
): Promise<void> {
  const rng = testRng(label);
  const seed = rng.nextU32();
  const x = rng.normalArray(M * K);
  let w = rng.normalArray(N * K, 0, 0.2);
  const a = rng.normalArray(r * K, 0, 0.2);
  const b = rng.normalArray(N * r, 0, 0.2);
  const g = rng.normalArray(M * N);
  const scale = 16 / r;
  let baseArg: Tensor | ReturnType<typeof quantizeNf4>;
  if (base === 'f32') baseArg = Tensor.from(w, [N, K]);
  else if (base === 'bf16') {
    const bits = f32ArrayToBf16(w);
    w = bf16ArrayToF32(bits); // the reference uses the exact bf16 values
    baseArg = Tensor.from(bits, [N, K], 'bf16');
  } else {
    baseArg = quantizeNf4(Tensor.from(w, [N, K]));
    w = await dequantizeNf4(baseArg).toFloat32();
  }
  const xShape = lead ? [...lead, K] : [M, K];
  const xt = Tensor.from(x, xShape);
  const at = Tensor.from(a, [r, K]);
  const bt = Tensor.from(b, [N, r]);
  for (const t of [xt, at, bt]) t.requiresGrad = true;
  const y = withPrecision(precision, () => {
    const out = loraLinear(xt, baseArg, at, bt, scale, { dropout, seed });
    backward(out, Tensor.from(g, out.shape));
    return out;
  });
  expect(y.shape).toEqual(lead ? [...lead, N] : [M, N]);
  const inp = { M, K, N, r, x, w, a, b, g, scale, dropout, seed };
  const ref = loraRef(inp);
  const mag = loraRef(inp, true); // the same sums over |terms|: the scale of f32 rounding error
  // f32 error ≤ (sequential additions + roundings of products/scales)·2^-24·Σ|terms| along each chain.
  // fp16-mixed: every GEMM operand is rounded to f16 (≤ 2^-10 relative each, WGSL may pick either
  // neighbour) and a LoRA term passes through at most two GEMMs with its intermediate (u or gu)
  // rounded again: ≤ (1 + 2^-10)^5 − 1 < 6·2^-10 relative per term; 8·2^-10 = 2^17·2^-24 is the
  // extra allowance (f16 subnormals add at most 2^-24·|other operand| per term, far below it).
  const extra = precision === 'fp16-mixed' ? 8 + 2 ** 17 : 8;
  const sb = (v: Float64Array, m: Float64Array) => ({ y: v, absSum: m });
  expectWithinSumBound(await y.toFloat32(), sb(ref.y, mag.y), 2 * K + r, `${label} y`, extra);
  expectWithinSumBound(await xt.grad!.toFloat32(), sb(ref.dx, mag.dx), 2 * N + r, `${label} dX`, extra);
  expectWithinSumBound(await at.grad!.toFloat32(), sb(ref.dA, mag.dA), M + N, `${label} dA`, extra);
  expectWithinSumBound(await bt.grad!.toFloat32(), sb(ref.dB, mag.dB), M + K, `${label} dB`, extra);
  if (!(baseArg instanceof Tensor)) disposeNf4(baseArg);
  for (const t of [xt, at, bt]) t.grad!.dispose();
}

describe('loraLinear vs float64 reference (forward, dX, dA, dB)', () => {
  // [M, K, N, r]: size 1 (decode: GEMV + update), primes, non-multiples of the tiles, M ≥ 256 for the
  // skinny down-projection tile. Odd sizes: every operand takes the scalar loads, so the cases share
  // pipelines (lavapipe compiles each in seconds); vector loads and split-K are gemm.test.ts's.
  const shapes: [number, number, number, number][] = [
    [1, 7, 5, 1],
    [7, 37, 29, 3],
    [67, 65, 71, 15],
    [601, 23, 11, 3],
    [97, 33, 131, 13],
  ];
  for (const dropout of [0, 0.3]) {
    it(`f32 base, dropout ${dropout}`, async () => {
      for (const [M, K, N, r] of shapes)
        await checkCase(`lora f32 p=${dropout} [${M},${K},${N},r${r}]`, M, K, N, r, dropout, 'f32');
    });
  }
  it('bf16 base and batched [B, T, in] input', async () => {
    await checkCase('lora bf16', 2 * 5, 40, 23, 8, 0.1, 'bf16', [2, 5]);
  });
  it('NF4 base (dX through the fused dequant kernel)', async () => {
    await checkCase('lora nf4 aligned', 70, 64, 33, 8, 0.2, 'nf4');
    await checkCase('lora nf4 gemv', 2, 72, 20, 4, 0, 'nf4');
    await checkCase('lora nf4 unaligned', 9, 21, 11, 2, 0.5, 'nf4');
  });

  it('fp16-mixed: f16 GEMM operands, x and u saved in f16, within the f16 allowance (f32 and NF4 bases)', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    await checkCase('lora fp16-mixed f32', 67, 65, 71, 15, 0.3, 'f32', undefined, 'fp16-mixed');
    await checkCase('lora fp16-mixed nf4', 70, 64, 33, 8, 0.2, 'nf4', undefined, 'fp16-mixed');
  });

  it('dropout mask: same seed same mask, keep rate ≈ 1 − p, and the GPU hash matches the CPU twin', async () => {
    const rng = testRng('lora-dropout');
    const M = 64;
    const K = 64;
    const p = 0.25;
    const seed = rng.nextU32();
    // With A = identity rows e_j and B = I, s = 1 and W = 0: y[m, j] = drop(x)[m, j] for j < r.
    const r = 64;
    const ident = new Float32Array(r * K);
    for (let j = 0; j < r; j++) ident[j * K + j] = 1;
    const x = rng.uniformArray(M * K, 1, 2);
    const y = await loraLinear(
      Tensor.from(x, [M, K]),
      Tensor.from(new Float32Array(K * K), [K, K]),
      Tensor.from(ident, [r, K]),
      Tensor.from(ident, [K, r]),
      1,
      { dropout: p, seed },
    ).toFloat32();
    let kept = 0;
    for (let i = 0; i < M * K; i++) {
      const keep = dropoutKeepRef(seed, i, p);
      kept += keep ? 1 : 0;
      expect(y[i], `element ${i}`).toBeCloseTo(keep ? x[i]! / (1 - p) : 0, 5);
    }
    expect(Math.abs(kept / (M * K) - (1 - p))).toBeLessThan(0.03); // 4096 Bernoulli draws: sd 0.007
  });

  it('finite-difference gradients of x, A, B with dropout', async () => {
    const rng = testRng('lora-fd');
    const [M, K, N, r] = [5, 12, 7, 3];
    const w = Tensor.from(rng.normalArray(N * K, 0, 0.3), [N, K]);
    const wt = rng.normalArray(M * N);
    await gradCheck(
      'loraLinear',
      ([x, a, b]) =>
        sumToSuffix(
          binary('mul', loraLinear(x!, w, a!, b!, 2, { dropout: 0.3, seed: 1234 }), Tensor.from(wt, [M, N])),
          [1],
        ),
      [
        { data: rng.normalArray(M * K), shape: [M, K] },
        { data: rng.normalArray(r * K, 0, 0.5), shape: [r, K] },
        { data: rng.normalArray(N * r, 0, 0.5), shape: [N, r] },
      ],
      rng,
    );
  });

  it('rejects bad shapes, a trainable base and dropout without a seed', () => {
    const w = Tensor.from(new Float32Array(12), [3, 4]);
    const x = Tensor.from(new Float32Array(8), [2, 4]);
    const a = Tensor.from(new Float32Array(8), [2, 4]);
    const b = Tensor.from(new Float32Array(6), [3, 2]);
    expect(() => loraLinear(x, w, b, a, 1)).toThrow(/needs A/);
    expect(() => loraLinear(x, w, a, b, 1, { dropout: 0.1 })).toThrow(/seed/);
    w.requiresGrad = true;
    expect(() => loraLinear(x, w, a, b, 1)).toThrow(/frozen/);
  });
});
