// The GEMM generator against the float64 reference (reference/gemm.ts, whose header derives the
// error bound for f32 and f16 compute): every tile shape, both compute variants, every operand loader
// (f32 / bf16 / f16 / NF4 / NF4 double-quant; vec and scalar global loads; both storage layouts),
// every epilogue (store, alpha, accumulate, split-K), the fused prologue (LoRA up-projection, with
// and without the dropout mask) and operand dropout, on shapes that are not tile multiples.
// The SIMT / CPU-shaped variant table: every product a caller launches plans a registered variant
// at every load width, reachable tile and split, and a covering set of it compiles on Dawn Null.
//
// CI runs a covering set: each stage-loader path (contiguity × vector width) on each side for the
// 64² tile, the forward and transposed layouts for the other tiles, each loader and epilogue once
// per compute variant. FINLLM_TEST_TIER=gpu (npm run test:gpu) runs the full cross product, where
// compiling hundreds of pipelines costs seconds instead of lavapipe's minutes.
import { describe, expect, it, type TestContext } from 'vitest';
import { makeOperand } from '../../bench/check/gemm.js';
import { expectWithinGemmBound, gemmReference } from '../../reference/gemm.js';
import { withPrecision } from '../../src/engine/precision.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { bf16ToF32, f32ToBf16, f32ToF16 } from '../../src/io/dtype.js';
import {
  type ChoiceContext,
  type Compute,
  chooseGemm,
  directTileFor,
  GEMM_CALLER_PRODUCTS,
  type GemmArgs,
  type GemmChoice,
  type GemmKernelSpec,
  type GemmOperand,
  gemm,
  gemmPlan,
  noteWeightRange,
  type OperandKind,
  reachableGemmTiles,
  shapeClass,
  TILE_NAMES,
  TILES,
  type TileName,
} from '../../src/kernels/gemm.js';
import { disposeNf4, type Nf4Weight, quantizeNf4 } from '../../src/kernels/nf4.js';
import { kernelVariants, nullCompiler } from '../../src/kernels/variants.js';
import { maxAbs16, maxAbsF32 } from '../../src/llama/weights.js';
import { requireFeature, testRng, useEngine } from '../helpers/index.js';

useEngine();

const FULL = process.env.FINLLM_TEST_TIER === 'gpu';

interface OpCase {
  kind: OperandKind;
  trans?: boolean;
  drop?: boolean;
}

interface Case {
  M: number;
  N: number;
  K: number;
  a: OpCase;
  b: OpCase;
  alpha?: number;
  accumulate?: boolean;
  /** Fused prologue: rank R, u/w kinds and layout, dropout mask on its output. */
  pro?: { R: number; u: OpCase; w: OpCase; mask?: boolean };
  choice: Partial<GemmChoice>;
  /** Expected vector widths of the main loads (checked in the pipeline key). */
  vec?: [number, number];
}

const storedShape = (rows: number, cols: number, trans?: boolean): [number, number] =>
  trans ? [cols, rows] : [rows, cols];

async function runCase(rng: Rng, c: Case): Promise<void> {
  const { M, N, K } = c;
  const a = await makeOperand(rng, c.a, storedShape(M, K, c.a.trans), rng.nextU32());
  const b = await makeOperand(rng, c.b, storedShape(K, N, c.b.trans), rng.nextU32());
  const u = c.pro ? await makeOperand(rng, c.pro.u, storedShape(M, c.pro.R, c.pro.u.trans), 0) : null;
  const w = c.pro ? await makeOperand(rng, c.pro.w, storedShape(c.pro.R, N, c.pro.w.trans), 0) : null;
  const proDrop = c.pro?.mask ? { p: 0.25, seed: rng.nextU32() } : undefined;
  const acc0 = c.accumulate ? rng.normalArray(M * N) : null;
  const accT = acc0 ? Tensor.from(acc0, [M, N]) : undefined;
  const args = {
    a: a.op,
    b: b.op,
    alpha: c.alpha,
    ...(accT ? { accumulate: accT } : {}),
    ...(c.pro ? { prologue: { u: u!.op, w: w!.op, scale: 1.7, ...(proDrop ? { dropout: proDrop } : {}) } } : {}),
    choice: c.choice,
  };
  const { key, choice, spec } = gemmPlan(args);
  const label = `${key} [${M}×${N}×${K}]${c.alpha ? ` α=${c.alpha}` : ''} split ${choice.splitK}`;
  if (c.vec) expect([spec.a.kind, spec.a.trans, spec.a.vec], label).toEqual([c.a.kind, !!c.a.trans, c.vec[0]]);
  if (c.vec) expect([spec.b.kind, spec.b.trans, spec.b.vec], label).toEqual([c.b.kind, !!c.b.trans, c.vec[1]]);
  if (c.choice.splitK && c.choice.splitK > 1)
    expect(choice.splitK, `${label}: split-K must really split`).toBeGreaterThan(1);
  const out = gemm(args);
  expect(out.shape).toEqual([M, N]);
  const got = await out.toFloat32();
  const ref = gemmReference({
    a: a.ref,
    b: b.ref,
    alpha: c.alpha,
    ...(acc0 ? { accumulate: acc0 } : {}),
    ...(c.pro ? { prologue: { u: u!.ref, w: w!.ref, scale: 1.7, ...(proDrop ? { dropout: proDrop } : {}) } } : {}),
    f16: choice.compute === 'f16',
  });
  expectWithinGemmBound(got, ref, label);
  out.dispose();
  for (const m of [a, b, u, w]) m?.dispose();
}

/** Both compute variants: each test that takes them runs once per variant, and the f16 one is skipped
 *  (with its reason) where the adapter lacks shader-f16. */
const COMPUTES: Compute[] = ['f32', 'f16'];
function requireCompute(compute: Compute, ctx: TestContext): void {
  if (compute === 'f16') requireFeature(ctx, 'shader-f16');
}

const f32 = (trans?: boolean): OpCase => ({ kind: 'f32', trans });
const isDirect = (t: TileName): boolean => 'direct' in TILES[t];

/**
 * The four stage-loader paths of each side for f32 operands: (contiguous along k | along the outer
 * dimension) × (vec4 | scalar). [transA, transB, M, N, K, vecA, vecB].
 */
const LAYOUTS: [boolean, boolean, number, number, number, number, number][] = [
  [false, true, 72, 80, 40, 4, 4], // forward layout (x · Wᵀ): both contiguous along k, vec4
  [true, true, 68, 70, 37, 4, 1], // A contiguous along M (vec4), B along k (scalar)
  [false, false, 67, 76, 37, 1, 4], // A along k (scalar), B along N (vec4)
  [true, false, 67, 70, 33, 1, 1], // both along the outer dimension, scalar
];

describe('gemm: tiles × compute variants (f32 operands, every layout)', () => {
  it.for(COMPUTES)(
    'each tile on odd shapes, vec4 and scalar loads, both storage layouts (%s compute)',
    async (only, ctx) => {
      requireCompute(only, ctx);
      const rng = testRng(`gemm-tiles-${only}`);
      // CI: t64 (the tile of small problems) runs every layout in f32, the others the forward layout
      // (or, for t64d, the transposed scalar one); f16 compute runs t64 and the double-buffered t128d.
      // Both compute variants share the stage and epilogue code, which the loader tests below cover
      // in f16 too. FULL: every tile × layout × compute.
      const plan: [Compute, TileName, number[]][] = FULL
        ? [only].flatMap((c) =>
            TILE_NAMES.filter((t) => c === 'f32' || !isDirect(t)).map(
              (t) => [c, t, [0, 1, 2, 3]] as [Compute, TileName, number[]],
            ),
          )
        : [
            ['f32', 't64', [0, 1, 2, 3]],
            ['f32', 't128', [0]],
            ['f32', 't128d', [0]],
            ['f32', 't64d', [3]],
            ['f32', 't64x32', [0]],
            ['f32', 't32x64', [0]],
            // The CPU-shaped kernels are generated per layout and vector width: every layout.
            ['f32', 'r8x8', [0, 1, 2, 3]],
            ['f32', 'r4x8', [0, 1, 2, 3]],
            ['f32', 'r4x4', [0, 1, 2, 3]],
            ['f16', 't64', [0, 3]],
            ['f16', 't128d', [0]],
          ];
      for (const [compute, tile, layouts] of plan.filter(([c]) => c === only)) {
        for (const l of layouts) {
          const [tA, tB, M, N, K, vA, vB] = LAYOUTS[l]!;
          await runCase(rng, {
            M,
            N,
            K,
            a: f32(tA),
            b: f32(tB),
            choice: { compute, tile, splitK: 1 },
            vec: [vA, vB],
            alpha: l === 1 ? 0.75 : undefined,
          });
        }
        // a shape past one tile in both dimensions, and size 1 (scalar loads: K = 1)
        const [tA, tB] = LAYOUTS[layouts[0]!]!;
        await runCase(rng, { M: 131, N: 133, K: 40, a: f32(tA), b: f32(tB), choice: { compute, tile, splitK: 1 } });
        if (layouts.includes(3))
          await runCase(rng, { M: 1, N: 1, K: 1, a: f32(true), b: f32(false), choice: { compute, tile, splitK: 1 } });
      }
    },
  );
});

describe('gemm: operand loaders', () => {
  it.for(COMPUTES)(
    'bf16 / f16 / NF4 / NF4 double-quant operands, vector and scalar loads, both layouts (%s compute)',
    async (only, ctx) => {
      requireCompute(only, ctx);
      const rng = testRng(`gemm-loaders-${only}`);
      // [a, b, M, N, K, vecA, vecB, compute variants (CI)]; 16-bit operands on both sides at once.
      const cases: [OpCase, OpCase, number, number, number, number, number, Compute[]][] = [
        [{ kind: 'f16' }, { kind: 'bf16', trans: true }, 65, 70, 40, 8, 8, ['f32', 'f16']], // f16 activation · bf16 weightᵀ, 8 halves per load
        [{ kind: 'bf16', trans: true }, { kind: 'f16' }, 67, 70, 37, 1, 1, ['f32']], // both 16-bit, scalar, outer-contiguous
        [f32(), { kind: 'f16' }, 66, 72, 36, 4, 8, ['f16']], // f16 weight along N: no conversion in the f16 variant
        [f32(true), { kind: 'nf4', trans: true }, 68, 70, 64, 4, 8, ['f32', 'f16']], // NF4 forward x·Wᵀ, whole code words
        [{ kind: 'f16', trans: true }, { kind: 'nf4' }, 72, 72, 37, 8, 8, ['f32']], // NF4 input gradient g·W, words along N
        [f32(), { kind: 'nf4', trans: true }, 9, 70, 37, 1, 1, ['f32']], // NF4 forward, in % 8 != 0: per element
        [f32(), { kind: 'nf4dq' }, 66, 69, 40, 4, 1, ['f32', 'f16']], // double-quantized absmax, per element
        [f32(true), { kind: 'nf4dq', trans: true }, 67, 70, 72, 1, 8, ['f32']],
      ];
      for (const [a, b, M, N, K, vA, vB, variants] of cases) {
        if (FULL || variants.includes(only))
          await runCase(rng, { M, N, K, a, b, choice: { compute: only, tile: 't64', splitK: 1 }, vec: [vA, vB] });
      }
    },
  );

  it.for(COMPUTES)(
    'operand dropout (LoRA input): on A, and on an f16-saved B with split-K (%s compute)',
    async (compute, ctx) => {
      requireCompute(compute, ctx);
      const rng = testRng(`gemm-dropout-${compute}`);
      if (compute === 'f32')
        await runCase(rng, {
          M: 67,
          N: 16,
          K: 40,
          a: { kind: 'f32', drop: true },
          b: f32(true),
          choice: { compute: 'f32', tile: 't64x32', splitK: 1 },
        });
      await runCase(rng, {
        M: 16,
        N: 70,
        K: 301,
        a: f32(true),
        b: { kind: 'f16', drop: true },
        choice: { compute, tile: 't32x64', splitK: 4 },
      });
    },
  );
});

describe('gemm: epilogues and the fused prologue', () => {
  it('alpha, accumulate into C, split-K (store and accumulate)', async () => {
    const rng = testRng('gemm-epilogue');
    await runCase(rng, {
      M: 67,
      N: 70,
      K: 37,
      a: f32(),
      b: f32(true),
      alpha: -1.5,
      accumulate: true,
      choice: { compute: 'f32', tile: 't64', splitK: 1 },
    });
    // split-K: K = 301 in 5 slices (the last partial), a skinny output like dB = s·gᵀ·u
    await runCase(rng, {
      M: 70,
      N: 13,
      K: 301,
      a: f32(true),
      b: f32(),
      alpha: 2,
      choice: { compute: 'f32', tile: 't64x32', splitK: 5 },
    });
    await runCase(rng, {
      M: 13,
      N: 70,
      K: 301,
      a: f32(true),
      b: f32(),
      accumulate: true,
      choice: { compute: 'f32', tile: 't32x64', splitK: 3 },
    });
    // the CPU-shaped kernels: accumulate, and split-K (slices of 64 = 16 k-steps of 4, a scalar tail in the last)
    await runCase(rng, {
      M: 67,
      N: 70,
      K: 37,
      a: f32(),
      b: f32(true),
      alpha: -1.5,
      accumulate: true,
      choice: { compute: 'f32', tile: 'r8x8', splitK: 1 },
    });
    await runCase(rng, {
      M: 70,
      N: 13,
      K: 301,
      a: f32(true),
      b: f32(),
      alpha: 2,
      choice: { compute: 'f32', tile: 'r4x4', splitK: 5 },
    });
  });

  it('prologue: LoRA up-projection fused into the base product (forward), masked LoRA term (dX)', async () => {
    const rng = testRng('gemm-prologue');
    // y = x·Wᵀ + s·(u·Bᵀ): W NF4 [N, K], B [N, R]
    await runCase(rng, {
      M: 67,
      N: 70,
      K: 64,
      a: f32(),
      b: { kind: 'nf4', trans: true },
      pro: { R: 12, u: f32(), w: f32(true) },
      choice: { compute: 'f32', tile: 't64', splitK: 1 },
    });
    // dX = g·W + mask ⊙ (gu·A)/(1−p): W bf16 [K, N] read untransposed, A [R, N]
    await runCase(rng, {
      M: 67,
      N: 70,
      K: 37,
      a: f32(),
      b: { kind: 'bf16' },
      pro: { R: 5, u: f32(), w: f32(), mask: true },
      choice: { compute: 'f32', tile: 't128d', splitK: 1 },
    });
  });

  it('f16 compute: split-K accumulate into C, and the masked LoRA prologue of dX', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const rng = testRng('gemm-epilogue-f16');
    await runCase(rng, {
      M: 13,
      N: 70,
      K: 301,
      a: f32(true),
      b: f32(),
      accumulate: true,
      choice: { compute: 'f16', tile: 't32x64', splitK: 3 },
    });
    await runCase(rng, {
      M: 67,
      N: 70,
      K: 37,
      a: f32(),
      b: { kind: 'bf16' },
      pro: { R: 5, u: f32(), w: f32(), mask: true },
      choice: { compute: 'f16', tile: 't64', splitK: 1 },
    });
  });
});

describe('gemm: the variant choice', () => {
  const ctx = (over: Partial<ChoiceContext> = {}): ChoiceContext => ({
    features: new Set(['shader-f16']),
    precision: 'fp32',
    maxWorkgroupBytes: 32768,
    maxInvocations: 256,
    isSoftware: false,
    ...over,
  });

  it('compute follows the precision and the shader-f16 feature, never the vendor', () => {
    const g = { M: 512, N: 512, K: 512, batch: 1 };
    expect(chooseGemm(g, ctx()).compute).toBe('f32');
    expect(chooseGemm(g, ctx({ precision: 'fp16-mixed' })).compute).toBe('f16');
    expect(chooseGemm(g, ctx({ precision: 'fp16-mixed', features: new Set() })).compute).toBe('f32');
    expect(
      chooseGemm(g, ctx({ precision: 'fp16-mixed' }), false).compute,
      'a weight beyond the f16 range stays f32',
    ).toBe('f32');
  });

  it('tiles and split-K by heuristics, a tuned entry overrides them, tiles that do not fit are never chosen', () => {
    expect(shapeClass(4096, 16, 2048)).toBe('skinny-n');
    expect(shapeClass(16, 2048, 4096)).toBe('skinny-m');
    expect(shapeClass(4096, 5632, 2048)).toBe('large');
    expect(shapeClass(64, 64, 64)).toBe('small');
    const big = { M: 4096, N: 4096, K: 4096, batch: 1 };
    expect(chooseGemm(big, ctx()).tile).toBe('t128d');
    expect(
      chooseGemm(big, ctx({ maxWorkgroupBytes: 16384 })).tile,
      't128d needs 16.5 KiB, t128 too: 16 KiB leaves t64',
    ).toBe('t64');
    expect(chooseGemm({ M: 4096, N: 16, K: 2048, batch: 1 }, ctx()).tile).toBe('t64x32');
    const dA = chooseGemm({ M: 16, N: 2048, K: 4096, batch: 1 }, ctx());
    expect(dA.tile).toBe('t32x64');
    expect(dA.splitK, 'a skinny product with a long K is split on a GPU').toBeGreaterThan(1);
    expect(chooseGemm({ M: 16, N: 2048, K: 4096, batch: 1 }, ctx({ isSoftware: true })).splitK).toBe(1);
    const tuned = ctx({ tuning: { description: 'test', date: '', f32: { large: { tile: 't64d', splitTarget: 0 } } } });
    expect(chooseGemm(big, tuned)).toEqual({ compute: 'f32', tile: 't64d', splitK: 1 });
    const tooBig = ctx({
      maxWorkgroupBytes: 8192,
      tuning: { description: 'test', date: '', f32: { large: { tile: 't128d', splitTarget: 0 } } },
    });
    expect(chooseGemm(big, tooBig).tile).toBe('t64');
  });

  it('in fp16-mixed a weight beyond the f16 range keeps the f32 variant (dense and NF4); the load measures max |w|', (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const x = Tensor.empty([70, 64]);
    const w = Tensor.empty([96, 64], 'bf16');
    const q = quantizeNf4(Tensor.empty([96, 64]));
    const compute = (b: Tensor | Nf4Weight) =>
      withPrecision('fp16-mixed', () => gemmPlan({ a: { t: x }, b: { t: b, trans: true } }).choice.compute);
    expect(compute(w)).toBe('f16');
    noteWeightRange(w, 1e5);
    noteWeightRange(q, 7e4);
    expect(compute(w)).toBe('f32');
    expect(compute(q)).toBe('f32');
    noteWeightRange(w, 65504);
    expect(compute(w)).toBe('f16');
    // max |w| as the loader computes it: f32 values, and 16-bit bit patterns (sign ignored, NaN sorts highest)
    expect(maxAbsF32(Float32Array.of(1, -70000, 3))).toBe(70000);
    expect(maxAbsF32(Float32Array.of(1, NaN))).toBeNaN();
    expect(
      maxAbs16(
        Uint16Array.from([1, -2, 0.5], (v) => f32ToBf16(v)),
        'BF16',
      ),
    ).toBe(2);
    expect(maxAbs16(Uint16Array.of(f32ToBf16(-1e6), f32ToBf16(3)), 'BF16')).toBe(bf16ToF32(f32ToBf16(1e6)));
    expect(maxAbs16(Uint16Array.of(f32ToF16(-65504), f32ToF16(2)), 'F16')).toBe(65504);
    expect(maxAbs16(Uint16Array.of(f32ToF16(2 ** -20)), 'F16')).toBe(2 ** -20);
    expect(maxAbs16(Uint16Array.of(0x7e00), 'F16')).toBeNaN();
    disposeNf4(q);
  });

  it('software adapters get the CPU-shaped tiles for f32 (tuned GPU-shaped entries apply only to GPU shapes); f16 compute keeps the GPU-shaped ones', () => {
    const sw = (over: Partial<ChoiceContext> = {}) => ctx({ isSoftware: true, ...over });
    const fwd = { M: 2048, N: 352, K: 128, batch: 1 };
    expect(chooseGemm(fwd, sw())).toEqual({ compute: 'f32', tile: 'r4x8', splitK: 1 });
    expect(directTileFor({ M: 64, N: 128, batch: 1 })).toBe('r4x8');
    expect(directTileFor({ M: 16, N: 64, batch: 1 }), '32 invocations of 4×8: too few').toBe('r4x4');
    expect(directTileFor({ M: 16, N: 64, batch: 8 }), 'the batch counts').toBe('r4x8');
    const tuned = {
      description: 'test',
      date: '',
      f32: { medium: { tile: 't64d' as TileName, splitTarget: 0 } },
      f16: { medium: { tile: 't128' as TileName, splitTarget: 0 } },
    };
    expect(chooseGemm(fwd, sw({ tuning: tuned })).tile, 'the CPU shape over a GPU-shaped tuned entry').toBe('r4x8');
    expect(
      chooseGemm(fwd, ctx({ tuning: tuned })).tile,
      'FINLLM_FORCE_GPU_SHAPES (isSoftware false): the tuned entry',
    ).toBe('t64d');
    expect(
      chooseGemm(fwd, sw({ tuning: { ...tuned, f32: { medium: { tile: 'r8x8', splitTarget: 0 } } } })).tile,
      'a CPU-shaped tuned entry',
    ).toBe('r8x8');
    expect(
      chooseGemm(fwd, ctx({ tuning: { ...tuned, f32: { medium: { tile: 'r4x8', splitTarget: 0 } } } })).tile,
      'never on GPU shapes',
    ).toBe('t64');
    expect(chooseGemm(fwd, sw({ precision: 'fp16-mixed', tuning: tuned })), 'f16 compute').toEqual({
      compute: 'f16',
      tile: 't128',
      splitK: 1,
    });
    expect(chooseGemm({ M: 16, N: 2048, K: 4096, batch: 1 }, sw()).splitK, 'no split-K on a CPU').toBe(1);
  });

  it('a CPU-shaped tile takes f32 operands only: the chosen one falls back to t64, a forced one is refused', () => {
    const x = Tensor.empty([70, 64]);
    const w = Tensor.empty([96, 64], 'bf16');
    const w32 = Tensor.empty([96, 64]);
    expect(
      gemmPlan({ a: { t: x }, b: { t: w32, trans: true }, choice: { tile: 'r8x8', compute: 'f32' } }).choice.tile,
    ).toBe('r8x8');
    expect(
      gemmPlan({ a: { t: x }, b: { t: w, trans: true }, choice: { compute: 'f32', splitK: 1 } }).key,
    ).not.toContain('.r');
    expect(() => gemmPlan({ a: { t: x }, b: { t: w, trans: true }, choice: { tile: 'r8x8' } })).toThrow(
      /CPU-shaped tile 'r8x8' takes f32 operands/,
    );
    expect(() =>
      gemmPlan({ a: { t: x, dropout: { p: 0.1, seed: 1 } }, b: { t: w32, trans: true }, choice: { tile: 'r4x4' } }),
    ).toThrow(/without dropout/);
    for (const t of [x, w, w32]) t.dispose();
  });

  it('the tiles exercised here are all the tiles there are', () => {
    expect([...TILE_NAMES].sort()).toEqual(
      (['t128', 't128d', 't64', 't64d', 't64x32', 't32x64', 'r8x8', 'r4x8', 'r4x4'] as TileName[]).sort(),
    );
  });
});

describe('gemm: the variant table of the SIMT and CPU-shaped cores (what callers launch)', () => {
  // The kinds each operand role holds (gemm.ts GEMM_CALLER_PRODUCTS): activations and LoRA matrices
  // f32, saved activations in the precision's storage, base weights in every weight format.
  const kindsOf = (role: string, precision: 'fp32' | 'fp16-mixed'): OperandKind[] =>
    role === 'weight'
      ? ['f32', 'bf16', 'f16', 'nf4', 'nf4dq']
      : role === 'saved' && precision === 'fp16-mixed'
        ? ['f16']
        : ['f32'];

  it('every caller product, at every load width, reachable tile and split, plans a registered variant', (ctx) => {
    requireFeature(ctx, 'shader-f16'); // plans with f16 compute forced
    const registered = new Set(kernelVariants().map((v) => v.key));
    const reachable = reachableGemmTiles();
    const ROWS = 70;
    // in, out and r through each residue that decides a load width (multiple of 8, 4 mod 8, odd)
    const DIMS = [
      { in: 64, out: 96, r: 8 },
      { in: 36, out: 37, r: 4 },
      { in: 37, out: 44, r: 5 },
    ];
    const missing: string[] = [];
    let plans = 0;
    for (const product of GEMM_CALLER_PRODUCTS) {
      for (const d of DIMS) {
        // M, N, K (and the prologue's R) from the stored layouts: an operand's rows run along its dim.
        const set: Partial<Record<'M' | 'N' | 'K' | 'R', number>> = {};
        const put = (k: 'M' | 'N' | 'K' | 'R', v: number, what: string) => {
          if (set[k] !== undefined) expect(v, `${product.what}: ${what} gives ${k}`).toBe(set[k]);
          set[k] = v;
        };
        put(product.a.trans ? 'M' : 'K', d[product.a.dim], 'A');
        put(product.b.trans ? 'K' : 'N', d[product.b.dim], 'B');
        if (product.pro) {
          put(product.pro.u.trans ? 'M' : 'R', d[product.pro.u.dim], 'u');
          put(product.pro.w.trans ? 'R' : 'N', d[product.pro.w.dim], 'w');
        }
        const { M = ROWS, N = ROWS, K = ROWS, R = 1 } = set;
        for (const precision of ['fp32', 'fp16-mixed'] as const) {
          const withWeight = [product.a, product.b].some((o) => o.role === 'weight');
          const computes: Compute[] = precision === 'fp32' ? ['f32'] : withWeight ? ['f16', 'f32'] : ['f16'];
          for (const ka of kindsOf(product.a.role, precision))
            for (const kb of kindsOf(product.b.role, precision))
              for (const drop of product.a.drop || product.b.drop || product.pro?.mask ? [false, true] : [false]) {
                const dense = (kind: OperandKind, shape: [number, number]): Tensor | Nf4Weight => {
                  if (kind !== 'nf4' && kind !== 'nf4dq') return Tensor.empty(shape, kind);
                  const w = Tensor.from(new Float32Array(shape[0] * shape[1]), shape);
                  const q = quantizeNf4(w, { doubleQuant: kind === 'nf4dq' });
                  w.dispose();
                  return q;
                };
                const a = dense(ka, storedShape(M, K, product.a.trans));
                const b = dense(kb, storedShape(K, N, product.b.trans));
                const p = { p: 0.1, seed: 3 };
                const u = product.pro ? Tensor.empty(storedShape(M, R, product.pro.u.trans)) : null;
                const w = product.pro ? Tensor.empty(storedShape(R, N, product.pro.w.trans)) : null;
                const acc = product.accumulate ? Tensor.empty([M, N]) : null;
                const args = (choice: Partial<GemmChoice>): GemmArgs => ({
                  a: { t: a as Tensor, trans: product.a.trans, ...(drop && product.a.drop ? { dropout: p } : {}) },
                  b: { t: b, trans: product.b.trans, ...(drop && product.b.drop ? { dropout: p } : {}) },
                  ...(acc ? { accumulate: acc } : {}),
                  ...(product.pro
                    ? {
                        prologue: {
                          u: { t: u!, trans: product.pro.u.trans } as GemmOperand,
                          w: { t: w!, trans: product.pro.w.trans } as GemmOperand,
                          scale: 2,
                          ...(drop && product.pro.mask ? { dropout: p } : {}),
                        },
                      }
                    : {}),
                  choice,
                });
                for (const r of reachable) {
                  if (!computes.includes(r.compute)) continue;
                  for (const splitK of r.splitK ? [1, 3] : [1]) {
                    let plan: { key: string; spec: GemmKernelSpec };
                    try {
                      plan = gemmPlan(args({ compute: r.compute, tile: r.tile, splitK }));
                    } catch (e) {
                      // a CPU-shaped tile refuses the product when forced; chosen, it falls back to t64
                      expect((e as Error).message).toMatch(/CPU-shaped tile/);
                      plan = gemmPlan(args({ compute: r.compute, tile: 't64', splitK }));
                    }
                    plans++;
                    if (!registered.has(plan.key)) missing.push(`${product.what} [${M}×${N}×${K}]: ${plan.key}`);
                  }
                }
                for (const t of [a, b, u, w, acc])
                  if (t instanceof Tensor) t.dispose();
                  else if (t) disposeNf4(t);
              }
        }
      }
    }
    expect(missing.slice(0, 5)).toEqual([]);
    console.log(`[gemm] ${plans} caller plans, every key registered`);
  }, 300_000);

  it('compiles on Dawn Null with zero errors and zero warnings (one variant per tile × compute × loaders × epilogue; check:kernels compiles all)', async () => {
    const mine = kernelVariants().filter((v) => v.family === 'gemm' && v.mode === 'portable');
    const byClass = new Map<string, (typeof mine)[number]>();
    for (const v of mine) {
      const s = v.spec as GemmKernelSpec;
      const op = (o: GemmKernelSpec['a']) => `${o.kind}${o.trans ? 'ᵀ' : ''}${o.drop ? ' dropout' : ''}`;
      const cls = `${s.compute} ${s.tileName} ${op(s.a)} ${op(s.b)} ${s.pro ? (s.pro.mask ? 'masked' : 'prologue') : ''} ${s.out}`;
      if (!byClass.has(cls)) byClass.set(cls, v);
    }
    const tiles = new Set(mine.map((v) => (v.spec as GemmKernelSpec).tileName));
    expect([...tiles].sort(), 'the tiles chooseGemm picks').toEqual(
      [...new Set(reachableGemmTiles().map((r) => r.tile))].sort(),
    );
    const nul = await nullCompiler();
    const failed: string[] = [];
    try {
      for (const v of byClass.values()) {
        const problems = await nul.check(v.code(), { workgroupBytes: v.workgroupBytes, label: v.key });
        if (problems.length) failed.push(`${v.name}: ${problems.slice(0, 3).join(' / ')}`);
      }
    } finally {
      nul.destroy();
    }
    expect(failed).toEqual([]);
    console.log(`[gemm] ${byClass.size} of ${mine.length} SIMT / CPU-shaped variants compiled cleanly on Null`);
  }, 300_000);
});
