import { describe, expect, it } from 'vitest';
import { swigluBackwardRef, swigluRef } from '../../reference/swiglu.js';
import { backward, zeroGrad } from '../../src/engine/autograd.js';
import { Tensor, tidy } from '../../src/engine/tensor.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/io/dtype.js';
import { binary, cast, sumToSuffix } from '../../src/kernels/elementwise.js';
import { swiglu } from '../../src/kernels/swiglu.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, expectNoGrowth, testRng, useEngine } from '../helpers/index.js';

useEngine();

// σ(a) goes through WGSL exp, whose accuracy bound is 3 + 2|x| ulp: for |a| ≤ 30 that is ≤ 63 ulp
// (4e-6) relative on e^(−a), which reaches σ and silu with a factor ≤ 1; then ≤ 4 more roundings.
// Hence rtol 1e-5; atol 1e-6 covers outputs that underflow towards 0 (silu(−100) ≈ −4e-42).
const TOL = { atol: 1e-6, rtol: 1e-5 };

function inputs(n: number, rng: ReturnType<typeof testRng>): Float32Array {
  const a = rng.normalArray(n, 0, 3);
  const extremes = [-100, 100, 0, -20, 30, -30, 8.5, -0.0];
  for (let i = 0; i < Math.min(extremes.length, n); i++) a[(i * 7) % n] = extremes[i]!;
  return a;
}

describe('swiglu vs float64 reference', () => {
  it('forward and fused backward (dGate, dUp) on odd shapes, incl. saturated gates', async () => {
    const rng = testRng('swiglu');
    for (const shape of [[1], [7, 13], [3, 130], [2, 5, 257]]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const gData = inputs(n, rng);
      const uData = rng.normalArray(n);
      const dyData = rng.normalArray(n);
      const gate = Tensor.from(gData, shape);
      const up = Tensor.from(uData, shape);
      gate.requiresGrad = true;
      up.requiresGrad = true;
      const y = swiglu(gate, up);
      backward(y, Tensor.from(dyData, shape));
      const ref = swigluBackwardRef(gData, uData, dyData);
      expectClose(await y.toFloat32(), swigluRef(gData, uData), TOL, `[${shape}] y`);
      expectClose(await gate.grad!.toFloat32(), ref.dGate, TOL, `[${shape}] dGate`);
      expectClose(await up.grad!.toFloat32(), ref.dUp, TOL, `[${shape}] dUp`);
    }
  });

  it('computes only the gradients that are needed (gate only, up only)', async () => {
    const rng = testRng('swiglu-partial');
    const shape = [5, 11];
    const gData = inputs(55, rng);
    const uData = rng.normalArray(55);
    const dyData = rng.normalArray(55);
    const ref = swigluBackwardRef(gData, uData, dyData);
    for (const which of ['gate', 'up'] as const) {
      const gate = Tensor.from(gData, shape);
      const up = Tensor.from(uData, shape);
      (which === 'gate' ? gate : up).requiresGrad = true;
      backward(swiglu(gate, up), Tensor.from(dyData, shape));
      expect((which === 'gate' ? up : gate).grad).toBeNull();
      expectClose(
        await (which === 'gate' ? gate : up).grad!.toFloat32(),
        which === 'gate' ? ref.dGate : ref.dUp,
        TOL,
        `${which} only`,
      );
    }
  });

  it('f16 gate and up (fp16-mixed): forward and backward read exactly the f16 values, so the f32 tolerance applies', async () => {
    // The reference gets the inputs rounded to f16, the values the kernel reads: what is left is the
    // f32 arithmetic of the f32 case. Gradients come back f32 for the f16 tensors.
    const rng = testRng('swiglu f16');
    const round = (x: Float32Array) => f16ArrayToF32(f32ArrayToF16(x));
    for (const shape of [[1], [7, 13], [2, 5, 257]]) {
      const n = shape.reduce((a, b) => a * b, 1);
      const gData = round(inputs(n, rng));
      const uData = round(rng.normalArray(n));
      const dyData = rng.normalArray(n);
      const g32 = Tensor.from(gData, shape);
      const u32 = Tensor.from(uData, shape);
      g32.requiresGrad = true;
      u32.requiresGrad = true;
      const gate = cast(g32, 'f16');
      const up = cast(u32, 'f16');
      const y = swiglu(gate, up);
      backward(y, Tensor.from(dyData, shape));
      const ref = swigluBackwardRef(gData, uData, dyData);
      expectClose(await y.toFloat32(), swigluRef(gData, uData), TOL, `[${shape}] f16 y`);
      expectClose(await g32.grad!.toFloat32(), ref.dGate, TOL, `[${shape}] f16 dGate`);
      expectClose(await u32.grad!.toFloat32(), ref.dUp, TOL, `[${shape}] f16 dUp`);
    }
    expect(() => swiglu(Tensor.empty([4], 'f16'), Tensor.empty([4]))).toThrow(/both be f32 or both f16/);
  });

  it('rejects mismatched shapes', () => {
    expect(() => swiglu(Tensor.from(new Float32Array(6), [2, 3]), Tensor.from(new Float32Array(6), [3, 2]))).toThrow(
      /same shape/,
    );
  });

  it('finite differences agree with backward', async () => {
    const rng = testRng('swiglu-fd');
    const shape = [3, 7];
    const probe = rng.normalArray(21);
    await gradCheck(
      'swiglu',
      ([g, u]) => sumToSuffix(binary('mul', swiglu(g!, u!), Tensor.from(probe, shape)), [1]),
      [
        { data: rng.normalArray(21, 0, 2), shape },
        { data: rng.normalArray(21), shape },
      ],
      rng,
    );
  });
  it('frees every temporary under tidy: no pool growth', async () => {
    const rng = testRng('swiglu-leak');
    const gate = Tensor.from(rng.normalArray(40), [4, 10]).keep();
    const up = Tensor.from(rng.normalArray(40), [4, 10]).keep();
    gate.requiresGrad = true;
    up.requiresGrad = true;
    await expectNoGrowth(() => {
      tidy(() => backward(sumToSuffix(swiglu(gate, up), [1])));
      zeroGrad([gate, up]);
    });
    for (const t of [gate, up]) t.dispose();
  });
});
