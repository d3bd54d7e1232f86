import { describe, expect, it } from 'vitest';
import { bf16Bits, bf16ToNumber, binaryRef, unaryRef } from '../../reference/elementwise.js';
import { backward } from '../../src/engine/autograd.js';
import { engine, Tensor, tidy } from '../../src/engine/tensor.js';
import {
  type BinaryOp,
  binary,
  cast,
  scale,
  sumToSuffix,
  UNARY_OPS,
  type UnaryOp,
  unary,
} from '../../src/kernels/elementwise.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';

useEngine();

describe('elementwise kernels vs float64 reference', () => {
  it('unary ops forward and backward on an odd-sized tensor', async () => {
    const rng = testRng('unary');
    const shape = [7, 37]; // 259 elements: not a multiple of the 256-wide workgroup
    const n = 7 * 37;
    for (const op of Object.keys(UNARY_OPS) as UnaryOp[]) {
      const positive = op === 'log' || op === 'sqrt';
      const xData = positive ? rng.uniformArray(n, 0.1, 3) : rng.normalArray(n);
      const gData = rng.normalArray(n);
      const x = Tensor.from(xData, shape);
      x.requiresGrad = true;
      const y = unary(op, x);
      backward(y, Tensor.from(gData, shape));
      const ref = unaryRef[op]!;
      expectClose(await y.toFloat32(), Array.from(xData, ref.f), { atol: 1e-6, rtol: 2e-6 }, `${op} forward`);
      // silu/sigmoid backward go through exp(): a few ulp more
      expectClose(
        await x.grad!.toFloat32(),
        Array.from(xData, (v, i) => gData[i]! * ref.df(v)),
        { atol: 1e-6, rtol: 1e-5 },
        `${op} backward`,
      );
    }
  });

  it('binary ops with same-shape, suffix and scalar broadcasting, forward and backward', async () => {
    const rng = testRng('binary');
    const aShape = [3, 5, 13];
    const n = 3 * 5 * 13;
    for (const bShape of [[3, 5, 13], [13], [5, 13], [1]]) {
      const nb = bShape.reduce((x, y) => x * y, 1);
      for (const op of ['add', 'sub', 'mul', 'div'] as BinaryOp[]) {
        const aData = rng.normalArray(n);
        const bData = op === 'div' ? rng.uniformArray(nb, 0.5, 2) : rng.normalArray(nb);
        const gData = rng.normalArray(n);
        const a = Tensor.from(aData, aShape);
        const b = Tensor.from(bData, bShape);
        a.requiresGrad = true;
        b.requiresGrad = true;
        const c = binary(op, a, b);
        backward(c, Tensor.from(gData, aShape));
        const r = binaryRef[op]!;
        const want = new Float64Array(n);
        const da = new Float64Array(n);
        const db = new Float64Array(nb);
        for (let i = 0; i < n; i++) {
          const av = aData[i]!;
          const bv = bData[i % nb]!;
          want[i] = r.f(av, bv);
          da[i] = gData[i]! * r.da(av, bv);
          db[i % nb] += gData[i]! * r.db(av, bv);
        }
        const label = `${op} b=[${bShape}]`;
        expectClose(await c.toFloat32(), want, { atol: 1e-6, rtol: 1e-6 }, `${label} forward`);
        expectClose(await a.grad!.toFloat32(), da, { atol: 1e-6, rtol: 1e-5 }, `${label} dA`);
        // dB sums up to n/nb terms in f32: error grows like sqrt(terms)·ulp
        expectClose(await b.grad!.toFloat32(), db, { atol: 1e-5, rtol: 1e-5 }, `${label} dB`);
      }
    }
  });

  it('f32 <-> bf16 / f16 casts round to nearest even and back exactly', async () => {
    const rng = testRng('cast');
    const data = rng.normalArray(101, 0, 10);
    data[0] = 1.00390625; // exactly halfway between two bf16 values: ties to even
    data[1] = 1.01171875; // halfway, rounds up to even
    const x = Tensor.from(data, [101]);
    const bits = (await cast(x, 'bf16').read()) as Uint16Array;
    expect(Array.from(bits)).toEqual(Array.from(data, bf16Bits));
    const back = await cast(cast(x, 'bf16'), 'f32').toFloat32();
    expectClose(
      back,
      Array.from(data, (v) => bf16ToNumber(bf16Bits(v))),
      { atol: 0, rtol: 0 },
      'bf16 -> f32',
    );
    const h = await cast(cast(x, 'f16'), 'f32').toFloat32();
    // f16 has 11 significant bits: relative rounding error <= 2^-11
    expectClose(h, data, { atol: 0, rtol: 2 ** -11 }, 'f16 round trip');
  });

  it('cast passes the gradient straight through (gradients are f32 whatever the dtype): through f16 and bf16 and back', async () => {
    const rng = testRng('cast grad');
    const data = rng.normalArray(37);
    const g = rng.normalArray(37);
    for (const half of ['f16', 'bf16'] as const) {
      const x = Tensor.from(data, [37]);
      x.requiresGrad = true;
      const h = cast(x, half);
      expect(h.gradFn).not.toBeNull();
      tidy(() => backward(cast(h, 'f32'), Tensor.from(g, [37])));
      expect(Array.from(await x.grad!.toFloat32()), half).toEqual(Array.from(g));
      x.grad!.dispose();
    }
  });

  it('finite-difference check of a composed expression', async () => {
    const rng = testRng('fd-elementwise');
    const shape = [4, 9];
    const w = rng.normalArray(36);
    await gradCheck(
      'silu(a)*b + exp(a)/b',
      ([a, b]) => {
        const y = binary('add', binary('mul', unary('silu', a!), b!), binary('div', unary('exp', scale(a!, 0.5)), b!));
        return sumToSuffix(binary('mul', y, Tensor.from(w, shape)), [1]);
      },
      [
        { data: rng.normalArray(36), shape },
        { data: rng.uniformArray(9, 1, 2), shape: [9] },
      ],
      rng,
    );
  });

  it('tidy frees every temporary: no growth over 1,000 steps', async () => {
    const rng = testRng('tidy');
    const p = Tensor.from(rng.normalArray(64), [64]).keep();
    p.requiresGrad = true;
    const step = () =>
      tidy(() => {
        const y = unary('silu', binary('mul', p, p));
        backward(sumToSuffix(y, [1]));
      });
    step();
    p.grad!.dispose();
    p.grad = null;
    await engine().dev.sync();
    const before = engine().pool.stats();
    for (let i = 0; i < 1000; i++) {
      step();
      p.grad!.dispose();
      p.grad = null;
      if (i % 100 === 99) await engine().dev.sync();
    }
    await engine().dev.sync();
    const after = engine().pool.stats();
    expect(after.liveBytes).toBe(before.liveBytes);
    expect(after.liveBuffers).toBe(before.liveBuffers);
  });
});
