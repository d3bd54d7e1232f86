import { describe, expect, it } from 'vitest';
import { bf16Bits, bf16ToNumber } from '../../reference/elementwise.js';
import { rmsnormBackwardRef, rmsnormRef } from '../../reference/rmsnorm.js';
import { backward, zeroGrad } from '../../src/engine/autograd.js';
import { Tensor, tidy } from '../../src/engine/tensor.js';
import { binary, sumToSuffix } from '../../src/kernels/elementwise.js';
import { rmsnorm, rmsnormWithStats } from '../../src/kernels/rmsnorm.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, expectNoGrowth, testRng, useEngine } from '../helpers/index.js';

useEngine();

// Tolerances (f32, unit roundoff u = 6e-8):
// - y and rstd: Σx² over D terms in a strided + tree order has relative error ≲ log2(D)·u, the
//   WGSL inverseSqrt is within 2 ulp, then two products: a few ulp → rtol 1e-5 (atol 1e-6 covers y
//   near 0, where the relative bound stays absolute w.r.t. |x·r·w|).
// - dx = r·g·w − c·x subtracts terms of size ~|g·w|·r, so its error is absolute w.r.t. those terms
//   (a few ulp of ~3 plus the dot's D-term sum): atol 2e-5, rtol 1e-5.
// - dw sums up to 70 rows of g·x·r (|terms| ≲ 10): atol 2e-5, rtol 1e-5.
const Y_TOL = { atol: 1e-6, rtol: 1e-5 };
const DX_TOL = { atol: 2e-5, rtol: 1e-5 };
const DW_TOL = { atol: 2e-5, rtol: 1e-5 };

describe('rmsnorm vs float64 reference', () => {
  it('forward (y, rstd) and backward (dx, dw) on odd shapes', async () => {
    const rng = testRng('rmsnorm');
    const eps = 1e-5;
    // D = 1, primes, 48, 130 and 300 (> the 256-thread workgroup); rows 1, 7, 13 and 70 (> one
    // 32-row dW block, so the two-pass dW sum runs).
    const cases: number[][] = [
      [1, 1],
      [7, 5],
      [13, 48],
      [1, 130],
      [7, 300],
      [70, 5],
      [2, 3, 48],
    ];
    for (const shape of cases) {
      const d = shape[shape.length - 1]!;
      const n = shape.reduce((a, b) => a * b, 1);
      const xData = rng.normalArray(n, 0.3, 1.5);
      const wData = rng.normalArray(d, 1, 0.5);
      const gData = rng.normalArray(n);
      const x = Tensor.from(xData, shape);
      const w = Tensor.from(wData, [d]);
      x.requiresGrad = true;
      w.requiresGrad = true;
      const { y, rstd } = rmsnormWithStats(x, w, eps);
      backward(y, Tensor.from(gData, shape));
      const ref = rmsnormRef(xData, wData, d, eps);
      const gref = rmsnormBackwardRef(xData, wData, gData, d, eps);
      const label = `[${shape}]`;
      expectClose(await y.toFloat32(), ref.y, Y_TOL, `${label} y`);
      expectClose(await rstd.toFloat32(), ref.rstd, Y_TOL, `${label} rstd`);
      expectClose(await x.grad!.toFloat32(), gref.dx, DX_TOL, `${label} dx`);
      expectClose(await w.grad!.toFloat32(), gref.dw, DW_TOL, `${label} dw`);
    }
  });

  it('a zero row gives y = 0 and rstd = 1/sqrt(eps)', async () => {
    const eps = 1e-6;
    const x = Tensor.from(new Float32Array(2 * 9).fill(0).fill(2, 9), [2, 9]);
    const w = Tensor.from(new Float32Array(9).fill(1.5), [9]);
    const { y, rstd } = rmsnormWithStats(x, w, eps);
    expectClose(await rstd.toFloat32(), [1 / Math.sqrt(eps), 1 / Math.sqrt(4 + eps)], { rtol: 1e-6 }, 'rstd');
    expectClose(
      await y.toFloat32(),
      [...new Array(9).fill(0), ...new Array(9).fill((2 * 1.5) / Math.sqrt(4 + eps))],
      Y_TOL,
      'y',
    );
  });

  it('frozen weight: no dw is computed; bf16 and f16 weights are read correctly', async () => {
    const rng = testRng('rmsnorm-frozen');
    const rows = 7;
    const d = 37;
    const xData = rng.normalArray(rows * d);
    const gData = rng.normalArray(rows * d);
    const wData = rng.normalArray(d, 1, 0.3);
    const wBits = Uint16Array.from(wData, bf16Bits);
    const wRounded = Array.from(wBits, bf16ToNumber);
    const x = Tensor.from(xData, [rows, d]);
    x.requiresGrad = true;
    const w = Tensor.from(wBits, [d], 'bf16'); // frozen (requiresGrad false)
    const y = rmsnorm(x, w, 1e-5);
    backward(y, Tensor.from(gData, [rows, d]));
    expect(w.grad).toBeNull();
    expectClose(await y.toFloat32(), rmsnormRef(xData, wRounded, d, 1e-5).y, Y_TOL, 'bf16 weight y');
    expectClose(
      await x.grad!.toFloat32(),
      rmsnormBackwardRef(xData, wRounded, gData, d, 1e-5).dx,
      DX_TOL,
      'bf16 weight dx',
    );
    // f16 weight: values exactly representable in f16 (multiples of 1/64 in [0.5, 2))
    const wHalf = Array.from({ length: d }, (_, j) => 0.5 + (j % 96) / 64);
    const f16Bits = Uint16Array.from(wHalf, f16Encode);
    const y16 = rmsnorm(Tensor.from(xData, [rows, d]), Tensor.from(f16Bits, [d], 'f16'), 1e-5);
    expectClose(await y16.toFloat32(), rmsnormRef(xData, wHalf, d, 1e-5).y, Y_TOL, 'f16 weight y');
  });

  it('dw is deterministic (fixed summation order)', async () => {
    const rng = testRng('rmsnorm-dw-determinism');
    const rows = 100;
    const d = 33;
    const xData = rng.normalArray(rows * d);
    const gData = rng.normalArray(rows * d);
    const wData = rng.normalArray(d);
    const grads: Float32Array[] = [];
    for (let k = 0; k < 2; k++) {
      const w = Tensor.from(wData, [d]);
      w.requiresGrad = true;
      backward(rmsnorm(Tensor.from(xData, [rows, d]), w, 1e-5), Tensor.from(gData, [rows, d]));
      grads.push(await w.grad!.toFloat32());
    }
    expect(Array.from(grads[1]!)).toEqual(Array.from(grads[0]!));
    expectClose(
      grads[0]!,
      rmsnormBackwardRef(xData, wData, gData, d, 1e-5).dw,
      { atol: 1e-4, rtol: 1e-5 },
      'dw 100 rows',
    ); // 100-term sums
  });

  it('finite differences agree with backward for x and w', async () => {
    const rng = testRng('rmsnorm-fd');
    const shape = [3, 11];
    const probe = rng.normalArray(33);
    await gradCheck(
      'rmsnorm',
      ([x, w]) => sumToSuffix(binary('mul', rmsnorm(x!, w!, 1e-5), Tensor.from(probe, shape)), [1]),
      [
        { data: rng.normalArray(33), shape },
        { data: rng.normalArray(11, 1, 0.3), shape: [11] },
      ],
      rng,
    );
  });
  it('frees every temporary (rstd, dW partials) under tidy: no pool growth', async () => {
    const rng = testRng('rmsnorm-leak');
    const x = Tensor.from(rng.normalArray(70 * 9), [70, 9]).keep();
    const w = Tensor.from(rng.normalArray(9), [9]).keep();
    x.requiresGrad = true;
    w.requiresGrad = true;
    await expectNoGrowth(() => {
      tidy(() => backward(sumToSuffix(rmsnorm(x, w, 1e-5), [1])));
      zeroGrad([x, w]);
    });
    for (const t of [x, w]) t.dispose();
  });

  it('more rows than workgroups per grid dimension (folded grid)', async () => {
    const rng = testRng('rmsnorm-many-rows');
    const rows = 66_000; // > 65535: the row grid folds into y
    const d = 3;
    const xData = rng.normalArray(rows * d);
    const wData = rng.normalArray(d);
    const gData = rng.normalArray(rows * d);
    const x = Tensor.from(xData, [rows, d]);
    const w = Tensor.from(wData, [d]);
    x.requiresGrad = true;
    w.requiresGrad = true;
    const y = rmsnorm(x, w, 1e-5);
    backward(y, Tensor.from(gData, [rows, d]));
    const gref = rmsnormBackwardRef(xData, wData, gData, d, 1e-5);
    expectClose(await y.toFloat32(), rmsnormRef(xData, wData, d, 1e-5).y, Y_TOL, 'y');
    expectClose(await x.grad!.toFloat32(), gref.dx, DX_TOL, 'dx');
    // dw sums 66,000 rows: f32 error ~ sqrt(rows)·u·Σ|terms| ≈ 1e-3 relative to the sum of |terms|.
    expectClose(await w.grad!.toFloat32(), gref.dw, { atol: 2e-2, rtol: 1e-4 }, 'dw');
  });
});

/** IEEE half bits of a normal value (test-side encoder, independent of the GPU's pack2x16float). */
function f16Encode(v: number): number {
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  const m = Math.round((a / 2 ** e - 1) * 1024);
  return sign | ((e + 15) << 10) | m;
}
