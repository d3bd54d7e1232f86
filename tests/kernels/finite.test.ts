// The GPU non-finite counter (src/kernels/finite.ts) against a float64 reference, on f32 and packed
// 16-bit tensors of sizes that are not workgroup multiples, with every special value placed at
// random positions. Counting is integer arithmetic: the results must be exact.
import { describe, expect, it } from 'vitest';
import { bf16Value, f16Value, nonFiniteRef } from '../../reference/finite.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { countNonFinite, NonFiniteCounter } from '../../src/kernels/finite.js';
import { testRng, useEngine } from '../helpers/index.js';

useEngine();

const F32_SPECIALS = [NaN, Infinity, -Infinity, 3.4028234663852886e38, -3.4028234663852886e38, 1e-45, -0, 0];

/** Normal values with specials sprinkled in (about 1 in `every`). */
function f32Data(rng: Rng, n: number, every: number): Float32Array {
  const a = rng.normalArray(n);
  for (let i = 0; i < n; i++) if (rng.int(every) === 0) a[i] = F32_SPECIALS[rng.int(F32_SPECIALS.length)]!;
  return a;
}

/** Random 16-bit patterns biased toward the all-ones exponent and its neighbours. */
function halfBits(rng: Rng, n: number, dtype: 'bf16' | 'f16'): Uint16Array {
  const expMask = dtype === 'bf16' ? 0x7f80 : 0x7c00;
  const nearMax = dtype === 'bf16' ? 0x7f7f : 0x7bff;
  const out = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    const r = rng.int(4);
    const sign = rng.int(2) ? 0x8000 : 0;
    if (r === 0)
      out[i] = sign | expMask | rng.int(2 ** (dtype === 'bf16' ? 7 : 10)); // Inf or NaN
    else if (r === 1)
      out[i] = sign | nearMax; // largest finite
    else out[i] = rng.int(0x10000);
  }
  return out;
}

describe('non-finite count vs reference', () => {
  it('f32: sizes 1 to several workgroups, specials at random positions', async () => {
    const rng = testRng('finite-f32');
    for (const n of [1, 7, 257, 4099, 70001]) {
      for (const every of [3, 97]) {
        const data = f32Data(rng, n, every);
        const t = Tensor.from(data, [n]);
        expect(await countNonFinite(t), `n=${n} every=${every}`).toBe(nonFiniteRef(data));
        t.dispose();
      }
    }
  });

  it('bf16 and f16 packed two per word, odd and even lengths (the padding half is not counted)', async () => {
    const rng = testRng('finite-16');
    for (const dtype of ['bf16', 'f16'] as const) {
      for (const n of [1, 2, 3, 513, 8193]) {
        const bits = halfBits(rng, n, dtype);
        const ref = nonFiniteRef(Array.from(bits, dtype === 'bf16' ? bf16Value : f16Value));
        // The storage holds one more half than the tensor, a NaN: an odd-length tensor's padding half.
        const padded = Tensor.from(Uint16Array.from([...bits, dtype === 'bf16' ? 0x7fc0 : 0x7e00]), [n + 1], dtype);
        const storage = (padded as unknown as { storage: { retain(): void } }).storage;
        storage.retain();
        const t = new Tensor([n], dtype, storage as never);
        expect(await countNonFinite(t), `${dtype} n=${n}`).toBe(ref);
        t.dispose();
        padded.dispose();
      }
    }
  });

  it('NonFiniteCounter: many tensors, one readback, names in order; a tensor disposed after add still counts as it was', async () => {
    const rng = testRng('finite-counter');
    const counter = new NonFiniteCounter();
    const expected: { label: string; count: number }[] = [];
    // 1030 tensors cross the 1024-slot buffer boundary.
    for (let i = 0; i < 1030; i++) {
      const n = 1 + rng.int(40);
      const data = f32Data(rng, n, i % 7 === 0 ? 4 : 1_000_000);
      const t = Tensor.from(data, [n]);
      counter.add(t, `t${i}`);
      t.dispose();
      // The freed buffer is reused at once with finite data: the recorded pass must see the old values.
      Tensor.from(new Float32Array(n).fill(1), [n]).dispose();
      const c = nonFiniteRef(data);
      if (c > 0) expected.push({ label: `t${i}`, count: c });
    }
    expect(expected.length).toBeGreaterThan(10);
    expect(await counter.read()).toEqual(expected);
    counter.dispose();
  });
});
