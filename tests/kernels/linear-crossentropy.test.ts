import { describe, expect, it } from 'vitest';
import { type LinearCrossEntropyRef, linearCrossEntropyRef } from '../../reference/linear-crossentropy.js';
import { dotErrorBound, halfBitsToNumber } from '../../reference/matmul.js';
import { backward } from '../../src/engine/autograd.js';
import type { Rng } from '../../src/engine/random.js';
import { engine, Tensor, tidy } from '../../src/engine/tensor.js';
import { f32ToBf16 } from '../../src/io/dtype.js';
import { crossEntropy } from '../../src/kernels/crossentropy.js';
import { binary, sumToSuffix } from '../../src/kernels/elementwise.js';
import { LOSS_CHUNK_BYTES, linearCrossEntropy, lossChunkRows } from '../../src/kernels/linear-crossentropy.js';
import { linear } from '../../src/kernels/matmul.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, expectNoGrowth, expectWithin, testRng, useEngine } from '../helpers/index.js';

useEngine();

// Tolerances. The logits are f32 GEMM outputs: |Δz| ≤ γ_D·Σ_k|h·w| (dotErrorBound). A loss moves by at
// most 2·max|Δz| (lse and z_label each by ≤ max|Δz|), on top of the cross-entropy kernel's own 1e-5
// (crossentropy.test.ts). dlogits = scale·(p − onehot) inherit 2·max|Δz| + 1e-5 relative from p (see
// crossentropy.test.ts), and dh, dW are f32 sums of V resp. M products of them: each element is
// within (2·max|Δz| + 1e-5 + γ_terms)·Σ|terms|.
const CE_ATOL = 1e-5;

function makeLabels(rng: Rng, m: number, v: number): Int32Array {
  const labels = Int32Array.from({ length: m }, () => rng.int(v));
  if (m > 2) labels[1] = -100;
  if (m > 4) labels[4] = -7; // any negative label is ignored too
  if (m > 5) labels[m - 1] = v - 1;
  return labels;
}

interface Case {
  n: number;
  d: number;
  v: number;
  rows: number[] | null;
  chunk?: number;
  reduction: 'mean' | 'none';
  wDtype: 'f32' | 'bf16';
}

async function runCase(rng: Rng, c: Case): Promise<void> {
  const { n, d, v, rows, chunk, reduction, wDtype } = c;
  const m = rows ? rows.length : n;
  const hData = rng.normalArray(n * d);
  const wSrc = rng.normalArray(v * d, 0, 0.5);
  const wBits = Uint16Array.from(wSrc, (x) => f32ToBf16(x));
  const wValues =
    wDtype === 'f32' ? Float64Array.from(wSrc) : Float64Array.from(wBits, (b) => halfBitsToNumber(b, 'bf16'));
  const labels = makeLabels(rng, m, v);
  const gRows = reduction === 'none' ? rng.normalArray(m) : null;
  const gMean = 0.5 + rng.uniform();

  const h = Tensor.from(hData, [n, d]);
  h.requiresGrad = true;
  const w = wDtype === 'f32' ? Tensor.from(wSrc, [v, d]) : Tensor.from(wBits, [v, d], 'bf16');
  w.requiresGrad = wDtype === 'f32';
  const rowsT = rows ? Tensor.from(Int32Array.from(rows), [m]) : undefined;
  const out = linearCrossEntropy(h, w, Tensor.from(labels, [m]), {
    reduction,
    ...(chunk ? { chunkRows: chunk } : {}),
    ...(rowsT ? { rows: rowsT } : {}),
  });
  backward(out, reduction === 'mean' ? Tensor.from([gMean], [1]) : Tensor.from(gRows!, [m]));

  const counted = Array.from(labels, (l) => l >= 0 && l !== -100).filter(Boolean).length;
  const scale =
    reduction === 'mean' ? Array.from({ length: m }, () => (counted > 0 ? gMean / counted : 0)) : Array.from(gRows!);
  const ref: LinearCrossEntropyRef = linearCrossEntropyRef(hData, n, d, wValues, v, labels, rows, scale);
  const dz = Math.max(0, ...Array.from(ref.logitAbsDot, (a) => dotErrorBound(a, d)));
  const label = `N=${n} D=${d} V=${v} rows=${rows ? m : 'all'} chunk=${chunk ?? 'default'} ${reduction} ${wDtype}`;
  if (reduction === 'mean') {
    const mean = counted > 0 ? ref.loss.reduce((a, b) => a + b, 0) / counted : 0;
    expectClose([await out.item()], [mean], { atol: CE_ATOL + 2 * dz, rtol: 1e-6 }, `${label} loss`);
  } else {
    expectClose(await out.toFloat32(), ref.loss, { atol: CE_ATOL + 2 * dz, rtol: 1e-6 }, `${label} per-row loss`);
  }
  const rel = 2 * dz + 1e-5;
  expectWithin(
    await h.grad!.toFloat32(),
    ref.dh,
    (i) => (rel + dotErrorBound(1, v)) * ref.dhAbs[i]! + 1e-30,
    `${label} dh`,
  );
  if (wDtype === 'f32')
    expectWithin(
      await w.grad!.toFloat32(),
      ref.dw,
      (i) => (rel + dotErrorBound(1, m)) * ref.dwAbs[i]! + 1e-30,
      `${label} dW`,
    );
  else expect(w.grad).toBeNull();
}

describe('fused LM head + cross-entropy vs float64 reference', () => {
  it('forward and backward (dh, dW) on odd shapes, chunk sizes 1, prime, default; ignored labels', async () => {
    const rng = testRng('linear-ce');
    const cases: Case[] = [
      { n: 13, d: 33, v: 601, rows: null, chunk: 4, reduction: 'mean', wDtype: 'f32' },
      { n: 13, d: 33, v: 601, rows: null, chunk: 1, reduction: 'mean', wDtype: 'f32' },
      { n: 7, d: 5, v: 257, rows: null, reduction: 'mean', wDtype: 'f32' },
      { n: 1, d: 1, v: 1, rows: null, reduction: 'mean', wDtype: 'f32' },
    ];
    for (const c of cases) await runCase(rng, c);
  });

  it('a subset of rows (response-only loss), per-row reduction, frozen bf16 head', async () => {
    const rng = testRng('linear-ce-rows');
    await runCase(rng, {
      n: 17,
      d: 19,
      v: 130,
      rows: [0, 3, 4, 9, 11, 16],
      chunk: 4,
      reduction: 'mean',
      wDtype: 'f32',
    });
    await runCase(rng, { n: 11, d: 24, v: 301, rows: null, chunk: 3, reduction: 'none', wDtype: 'f32' });
    await runCase(rng, { n: 9, d: 24, v: 131, rows: [8, 2, 5], chunk: 2, reduction: 'none', wDtype: 'bf16' });
  });

  it('every label ignored: loss 0 and zero gradients, not NaN', async () => {
    const rng = testRng('linear-ce-ignored');
    const h = Tensor.from(rng.normalArray(5 * 7), [5, 7]);
    const w = Tensor.from(rng.normalArray(11 * 7), [11, 7]);
    h.requiresGrad = true;
    w.requiresGrad = true;
    const loss = linearCrossEntropy(h, w, Tensor.from(new Int32Array(5).fill(-100), [5]), { chunkRows: 2 });
    backward(loss);
    expect(await loss.item()).toBe(0);
    for (const g of [h.grad!, w.grad!]) expect(Array.from(await g.toFloat32()).every((x) => x === 0)).toBe(true);
  });

  it('finite differences agree with backward (h and W, mean and per-row, rows subset)', async () => {
    const rng = testRng('linear-ce-fd');
    const labels = Tensor.from(new Int32Array([2, -100, 0, 10]), [4]).keep();
    const rows = Tensor.from(new Int32Array([4, 0, 2, 3]), [4]).keep();
    const weights = rng.normalArray(4);
    const inputs = [
      { data: rng.normalArray(5 * 6), shape: [5, 6] },
      { data: rng.normalArray(11 * 6, 0, 0.5), shape: [11, 6] },
    ];
    await gradCheck(
      'linearCrossEntropy mean',
      ([h, w]) => linearCrossEntropy(h!, w!, labels, { rows, chunkRows: 3 }),
      inputs,
      rng,
    );
    await gradCheck(
      'linearCrossEntropy per-row',
      ([h, w]) =>
        sumToSuffix(
          binary(
            'mul',
            linearCrossEntropy(h!, w!, labels, { rows, chunkRows: 3, reduction: 'none' }),
            Tensor.from(weights, [4]),
          ),
          [1],
        ),
      inputs,
      rng,
    );
    labels.dispose();
    rows.dispose();
  });
});

describe('fused LM head + cross-entropy: memory', () => {
  it('never holds the [N, V] logits or their gradient: peak ≤ one chunk, where linear + crossEntropy needs both', async () => {
    const rng = testRng('linear-ce-peak');
    const [n, d, v, chunk] = [256, 16, 1024, 32];
    const h = Tensor.from(rng.normalArray(n * d), [n, d]).keep();
    const w = Tensor.from(rng.normalArray(v * d, 0, 0.3), [v, d]).keep();
    const labels = Tensor.from(
      Int32Array.from({ length: n }, () => rng.int(v)),
      [n],
    ).keep();
    h.requiresGrad = true;
    const pool = engine().pool;
    const peakOf = async (f: () => void): Promise<number> => {
      await engine().dev.sync();
      const base = pool.liveBytes;
      pool.resetPeak();
      f();
      await engine().dev.sync();
      h.grad?.dispose();
      h.grad = null;
      return pool.peakBytes - base;
    };
    const logitsBytes = n * v * 4;
    const fused = await peakOf(() => tidy(() => backward(linearCrossEntropy(h, w, labels, { chunkRows: chunk }))));
    const unfused = await peakOf(() => tidy(() => backward(crossEntropy(linear(h, w), labels))));
    // Fused: one chunk's logits (chunk·V·4 = 128 KiB) plus h-sized buffers (dh, the chunk rows) and
    // [N]-sized vectors; the unfused path holds logits and dlogits (2 MiB here) at once.
    console.log(`peak above live: fused ${fused} B, unfused ${unfused} B, logits ${logitsBytes} B`);
    expect(unfused).toBeGreaterThanOrEqual(2 * logitsBytes);
    expect(fused).toBeLessThan(chunk * v * 4 + 4 * n * d * 4 + 16 * n * 4);
    await expectNoGrowth(() => {
      tidy(() => backward(linearCrossEntropy(h, w, labels, { chunkRows: chunk })));
      h.grad?.dispose();
      h.grad = null;
    });
    for (const t of [h, w, labels]) t.dispose();
  });

  it('lossChunkRows: chunk logits within the budget and one binding, multiples of 64, never more than M', () => {
    expect(lossChunkRows(4096, 32000)).toBe(256); // 32 MiB / (4·32000) = 262 → 256
    expect(lossChunkRows(4096, 32000) * 32000 * 4).toBeLessThanOrEqual(LOSS_CHUNK_BYTES);
    expect(lossChunkRows(4096, 128256, 128 * 2 ** 20)).toBe(64); // 65 rows fit → 64
    expect(lossChunkRows(100, 600)).toBe(100);
    expect(lossChunkRows(10, 600_000)).toBe(10); // 13 fit, only 10 rows
    expect(lossChunkRows(4096, 2 ** 30)).toBe(1);
  });
});
