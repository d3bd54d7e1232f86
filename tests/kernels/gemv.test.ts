// The GEMV generator (src/kernels/gemv.ts). Its fused decode options are tested in decode.test.ts
// (decodeGemv), its matmul and nf4Linear callers in matmul.test.ts and nf4.test.ts; here: the matmul
// layouts on every weight format with vector loads (x transposed, batched weights, 1 to 11 rows: one
// and two dispatches), the NF4 load of 8 codes (K a multiple of 8, not of 32), and every registered
// variant compiled on Dawn's Null backend.
//
// Tolerance: the f32 summation bound γ·Σ|x·w|, γ = (K + 4)·2⁻²⁴: K products summed in any order,
// plus the rounding of the products and of the NF4 absmax scale (one multiply per 4 products).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectWithinSumBound } from '../../reference/nf4.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { type GemvSpec, gemv, gemvStorageBuffers, gemvVariants } from '../../src/kernels/gemv.js';
import { type NullCompiler, nullCompiler } from '../../src/kernels/variants.js';
import type { WeightFormat } from '../../src/kernels/weight-formats.js';
import { testRng, useEngine } from '../helpers/index.js';
import { makeGemvWeight } from '../helpers/weights.js';

useEngine();

interface LayoutCase {
  format: WeightFormat;
  M: number;
  N: number;
  K: number;
  batch: number;
  transX: boolean;
}

/** y[b, m, n] = Σ_k x_b[m, k]·W_b[n, k] in float64, with Σ|x·w| per element. */
function layoutRef(
  c: LayoutCase,
  x: ArrayLike<number>,
  w: ArrayLike<number>,
): { y: Float64Array; absSum: Float64Array } {
  const { M, N, K, batch } = c;
  const y = new Float64Array(batch * M * N);
  const absSum = new Float64Array(batch * M * N);
  for (let b = 0; b < batch; b++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        let a = 0;
        for (let k = 0; k < K; k++) {
          const xv = c.transX ? x[b * K * M + k * M + m]! : x[b * M * K + m * K + k]!;
          const p = xv * w[(b * N + n) * K + k]!;
          s += p;
          a += Math.abs(p);
        }
        y[(b * M + m) * N + n] = s;
        absSum[(b * M + m) * N + n] = a;
      }
    }
  }
  return { y, absSum };
}

async function runLayout(rng: Rng, c: LayoutCase): Promise<void> {
  const { M, N, K, batch } = c;
  const label = `${c.format} batch ${batch} M${M} N${N} K${K}${c.transX ? ' x transposed' : ''}`;
  // `batch` weights [N, K] stacked in one [batch·N, K] weight: product b reads rows b·N.. (stride N·K).
  const made = await makeGemvWeight(rng, c.format, batch * N, K);
  const xData = rng.normalArray(batch * M * K);
  const x = Tensor.from(xData, [batch, ...(c.transX ? [K, M] : [M, K])]);
  const out = Tensor.empty([batch, M, N]);
  gemv({ x, segments: [made.w], out, layout: { M, N, K, transX: c.transX, batch, sx: M * K, sw: N * K, sout: M * N } });
  expectWithinSumBound(await out.toFloat32(), layoutRef(c, xData, made.values), K, label, 4);
  x.dispose();
  out.dispose();
  made.dispose();
}

describe('gemv: matmul layouts vs float64', () => {
  const cases: LayoutCase[] = [
    { format: 'f32', M: 3, N: 13, K: 68, batch: 2, transX: true },
    { format: 'f32', M: 8, N: 5, K: 260, batch: 1, transX: false },
    { format: 'bf16', M: 11, N: 7, K: 40, batch: 1, transX: false },
    { format: 'f16', M: 2, N: 9, K: 48, batch: 3, transX: true },
    { format: 'nf4', M: 1, N: 11, K: 40, batch: 2, transX: false },
    { format: 'nf4', M: 5, N: 3, K: 96, batch: 1, transX: true },
    { format: 'nf4dq', M: 4, N: 17, K: 64, batch: 1, transX: false },
    { format: 'f16', M: 1, N: 3, K: 37, batch: 2, transX: true },
  ];
  for (const c of cases) {
    it(`${c.format}, batch ${c.batch}, M ${c.M}, N ${c.N}, K ${c.K}${c.transX ? ', x transposed' : ''}`, async () => {
      await runLayout(testRng(`gemv-layout-${c.format}-${c.M}-${c.K}`), c);
    });
  }

  it('refuses fused options with a matmul layout', () => {
    const w = Tensor.empty([3, 8]);
    const x = Tensor.empty([1, 8]);
    const out = Tensor.empty([1, 3]);
    const layout = { M: 1, N: 3, K: 8, transX: false, batch: 1, sx: 0, sw: 0, sout: 0 };
    expect(() => gemv({ x, segments: [w], out, layout, epilogue: 'accumulate' })).toThrow(/matmul layout/);
    expect(() => gemv({ x, segments: [w, w], out, layout })).toThrow(/matmul layout/);
    for (const t of [w, x, out]) t.dispose();
  });
});

describe('gemv: every registered variant on Dawn Null', () => {
  let nul: NullCompiler;
  beforeAll(async () => {
    nul = await nullCompiler();
  });
  afterAll(() => nul?.destroy());

  it('every format × rows × load width × reachable loop form × fused case compiles with zero errors and zero warnings', async () => {
    const variants = gemvVariants();
    // 5 formats; load widths: f32 {1, 4}, halves {1, 8}, NF4 {1, 8, 32}; rows 1, 2, 4, 8; unrolled
    // always (GPUs), loops only where a software adapter launches them: rows × vec4 chunks > 8.
    const loops = new Set(
      ['bf16', 'f16', 'nf4', 'nf4dq'].flatMap((f) => [
        `${f} 8 8`,
        ...(f.startsWith('nf4') ? [`${f} 2 32`, `${f} 4 32`, `${f} 8 32`] : []),
      ]),
    );
    const forms = new Map<string, Set<boolean>>();
    for (const v of variants) {
      const s = v.spec as GemvSpec;
      const at = `${s.format} ${s.rows} ${s.vec}`;
      forms.set(at, (forms.get(at) ?? new Set()).add(s.unroll));
    }
    const widths = 2 + 2 + 2 + 3 + 3;
    expect(forms.size).toBe(widths * 4);
    for (const [at, f] of forms) expect([...f].sort(), at).toEqual(loops.has(at) ? [false, true] : [true]);
    expect(variants.length % (widths * 4 + loops.size)).toBe(0);
    expect(new Set(variants.map((v) => v.key)).size, 'keys derived from distinct specs are distinct').toBe(
      variants.length,
    );
    const failed: string[] = [];
    for (const v of variants) {
      const code = v.code();
      const declared = (code.match(/var<storage/g) ?? []).length;
      if (declared !== gemvStorageBuffers(v.spec as GemvSpec))
        failed.push(`${v.name}: declares ${declared} storage buffers, counted ${v.storageBuffers}`);
      const problems = await nul.check(code, {
        workgroupBytes: v.workgroupBytes,
        storageBuffers: v.storageBuffers,
        label: v.key,
      });
      if (problems.length) failed.push(`${v.name}: ${problems.slice(0, 3).join(' / ')}`);
    }
    expect(failed).toEqual([]);
    console.log(`[gemv] ${variants.length} variants compiled cleanly`);
  }, 300_000);
});
