import { describe, expect, it } from 'vitest';
import { embeddingGradRef, embeddingRef } from '../../reference/embedding.js';
import { halfBitsToNumber } from '../../reference/matmul.js';
import { backward } from '../../src/engine/autograd.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { f32ToBf16, f32ToF16 } from '../../src/io/dtype.js';
import { mul, sumToSuffix } from '../../src/kernels/elementwise.js';
import { embedding } from '../../src/kernels/embedding.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';

useEngine();

const U = 2 ** -24;

function randomIds(rng: Rng, n: number, V: number): Int32Array {
  return Int32Array.from({ length: n }, () => rng.int(V));
}

describe('embedding vs float64 reference', () => {
  it('gathers f32, bf16 and f16 tables (ids with repeats, odd sizes)', async () => {
    const rng = testRng('embedding-forward');
    for (const [V, D, idsShape] of [
      [1, 1, [1]],
      [11, 13, [29]],
      [50, 300, [2, 7]],
      [7, 2, [0]],
    ] as [number, number, number[]][]) {
      const n = idsShape.reduce((a, b) => a * b, 1);
      const ids = randomIds(rng, n, V);
      const src = rng.normalArray(V * D);
      for (const dtype of ['f32', 'bf16', 'f16'] as const) {
        const bits =
          dtype === 'f32' ? null : Uint16Array.from(src, (v) => (dtype === 'bf16' ? f32ToBf16(v) : f32ToF16(v)));
        const values = bits
          ? Float64Array.from(bits, (b) => halfBitsToNumber(b, dtype as 'bf16' | 'f16'))
          : Float64Array.from(src);
        const table = bits ? Tensor.from(bits, [V, D], dtype) : Tensor.from(src, [V, D]);
        const y = embedding(Tensor.from(ids, idsShape, 'i32'), table);
        expect(y.shape).toEqual([...idsShape, D]);
        // a copy (16-bit values widen exactly to f32): exact
        expectClose(
          await y.toFloat32(),
          embeddingRef(ids, values, V, D),
          { atol: 0, rtol: 0 },
          `${dtype} V=${V} D=${D} ids[${idsShape}]`,
        );
      }
    }
  });

  it('an id outside the vocabulary gives a NaN row and no gradient', async () => {
    const table = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [3, 2]);
    table.requiresGrad = true;
    const y = embedding(Tensor.from(new Int32Array([2, -1, 3, 0]), [4], 'i32'), table);
    const got = Array.from(await y.toFloat32());
    expect(got.slice(0, 2)).toEqual([5, 6]);
    expect(got.slice(2, 6).every(Number.isNaN)).toBe(true);
    expect(got.slice(6)).toEqual([1, 2]);
    backward(y, Tensor.from(new Float32Array([1, 1, 7, 7, 9, 9, 2, 3]), [4, 2]));
    expect(Array.from(await table.grad!.toFloat32())).toEqual([2, 3, 0, 0, 1, 1]);
  });

  it('scatter-add backward for f32 and 16-bit tables; rows never used are exactly zero', async () => {
    const rng = testRng('embedding-backward');
    for (const [V, D, n] of [
      [1, 1, 1],
      [11, 13, 29],
      [40, 300, 64],
      [5, 3, 200],
    ] as [number, number, number][]) {
      for (const dtype of ['f32', 'bf16'] as const) {
        const ids = randomIds(rng, n, V);
        const src = rng.normalArray(V * D);
        const table =
          dtype === 'f32' ? Tensor.from(src, [V, D]) : Tensor.from(Uint16Array.from(src, f32ToBf16), [V, D], 'bf16');
        table.requiresGrad = true;
        const g = rng.normalArray(n * D);
        backward(embedding(Tensor.from(ids, [n], 'i32'), table), Tensor.from(g, [n, D]));
        expect(table.grad!.shape).toEqual([V, D]);
        expect(table.grad!.dtype).toBe('f32');
        const ref = embeddingGradRef(ids, g, V, D);
        const got = await table.grad!.toFloat32();
        // a sum of count[v] terms in f32: within γ_count·Σ|g|; zero where count is 0
        const bad: number[] = [];
        for (let e = 0; e < V * D; e++) {
          const c = ref.count[Math.floor(e / D)]!;
          const bound = ((c * U) / (1 - c * U)) * ref.absSum[e]!;
          if (!(Math.abs(got[e]! - ref.dTable[e]!) <= bound)) bad.push(e);
        }
        expect(
          bad.slice(0, 5).map((e) => `[${e}] got ${got[e]} want ${ref.dTable[e]}`),
          `dTable ${dtype} V=${V} D=${D} N=${n}`,
        ).toEqual([]);
      }
    }
  });

  it('backward is bitwise deterministic, also with one id repeated at every position', async () => {
    const rng = testRng('embedding-determinism');
    const [V, D, n] = [3, 17, 300];
    const g = rng.normalArray(n * D);
    for (const ids of [new Int32Array(n).fill(1), randomIds(rng, n, V)]) {
      const runs: Float32Array[] = [];
      for (let r = 0; r < 2; r++) {
        const table = Tensor.from(rng.normalArray(V * D), [V, D]);
        table.requiresGrad = true;
        backward(embedding(Tensor.from(ids, [n], 'i32'), table), Tensor.from(g, [n, D]));
        runs.push(await table.grad!.toFloat32());
      }
      expect(Array.from(runs[0]!)).toEqual(Array.from(runs[1]!));
      // Sequential f32 sum in index order: the same rounding as a left-to-right f32 fold on the CPU.
      const ref = new Float32Array(V * D);
      for (let i = 0; i < n; i++)
        for (let d = 0; d < D; d++) ref[ids[i]! * D + d] = Math.fround(ref[ids[i]! * D + d]! + g[i * D + d]!);
      expectClose(runs[0]!, ref, { atol: 0, rtol: 0 }, 'index-order f32 sum');
    }
  });

  it('finite differences through the gather', async () => {
    const rng = testRng('embedding-fd');
    const [V, D, n] = [6, 4, 9];
    const ids = randomIds(rng, n, V);
    const w = rng.normalArray(n * D);
    await gradCheck(
      'sum(w ⊙ embedding(ids, T))',
      ([t]) => sumToSuffix(mul(embedding(Tensor.from(ids, [n], 'i32'), t!), Tensor.from(w, [n, D])), [1]),
      [{ data: rng.normalArray(V * D), shape: [V, D] }],
      rng,
    );
  });
});
