// The subgroup-matrix (tensor-core) core of the GEMM generator (src/kernels/gemm.ts):
// - every native variant of the table (tiles × matrix shapes × loader/epilogue cases) compiles on
//   Dawn's Null backend with zero errors and zero warnings;
// - every emulated variant (each loader and epilogue case under the 16×16×16, 16×8×16 and 8×16×16
//   shapes, plus 8×8×8) runs through gemm() on this adapter and matches the float64 reference within
//   its rigorous bound (reference/gemm.ts with f16 operands: each operand rounded to f16 — one
//   f16 ulp —, exact f32 products, f32 accumulation in any order: γₙ·Σ|terms|), outputs poisoned;
// - the three seeded bugs (B loaded with the wrong majorness, B's stride without the padding, the
//   barrier between staging and multiplying removed) make that check fail;
// - the chooser, on adapter descriptions like real ones.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkEmulatedGemm } from '../../bench/check/gemm.js';
import type { FeatureName, SubgroupMatrixConfig } from '../../src/engine/device.js';
import { withPrecision } from '../../src/engine/precision.js';
import { Rng } from '../../src/engine/random.js';
import { engine, Tensor } from '../../src/engine/tensor.js';
import {
  type ChoiceContext,
  chooseGemm,
  forceEmulatedMatrixCore,
  GEMM_SG_CASES,
  type GemmMutation,
  type GemmVariantCase,
  gemmPlan,
  gemmVariants,
  nativeMatrixCore,
  SG_TILES,
  sgTileBytes,
} from '../../src/kernels/gemm.js';
import { MATRIX_SHAPES } from '../../src/kernels/sgmatrix.js';
import { type NullCompiler, nullCompiler } from '../../src/kernels/variants.js';
import { requireFeature, testRng, useEngine } from '../helpers/index.js';

useEngine();

const variants = gemmVariants();

describe('gemm sgmatrix: native variants on Dawn Null', () => {
  let nul: NullCompiler;
  beforeAll(async () => {
    nul = await nullCompiler();
  });
  afterAll(() => nul?.destroy());

  it('every tile × shape × loader/epilogue case compiles with zero errors and zero warnings', async () => {
    const native = variants.filter((v) => v.mode === 'native');
    expect(native.length).toBe(Object.keys(SG_TILES).length * Object.keys(MATRIX_SHAPES).length * GEMM_SG_CASES.length);
    const failed: string[] = [];
    for (const v of native) {
      const problems = await nul.check(v.code(), { workgroupBytes: v.workgroupBytes, label: v.key });
      if (problems.length) failed.push(`${v.name}: ${problems.slice(0, 3).join(' / ')}`);
    }
    expect(failed).toEqual([]);
    console.log(`[gemm sgmatrix] ${native.length} native variants compiled cleanly`);
  }, 300_000);

  it('the H100 tile needs 44 KiB (requested where the device allows; 48 KiB on an H100), the 64² tile fits 32 KiB', () => {
    expect(sgTileBytes(SG_TILES.s128, MATRIX_SHAPES.m16n16k16)).toBe(45056);
    expect(sgTileBytes(SG_TILES.s64, MATRIX_SHAPES.m16n16k16)).toBeLessThanOrEqual(32768);
  });
});

describe('gemm sgmatrix: emulated variants against float64', () => {
  const emulated = variants.filter((v) => v.mode === 'emulated');

  it('the emulated table covers every case and the three main shapes', () => {
    const cases = new Set(emulated.map((v) => (v.spec as GemmVariantCase).what));
    // every case but the NF4 forward one, whose loader (NF4ᵀ, code words) the fused LoRA forward case runs
    expect(cases.size).toBe(GEMM_SG_CASES.length - 1);
    const nf4T = emulated
      .map((v) => v.spec as GemmVariantCase)
      .filter((c) => c.b.kind === 'nf4' && c.b.trans && c.K % 8 === 0);
    expect(nf4T.length).toBeGreaterThan(0);
    const shapes = new Set(emulated.map((v) => (v.spec as GemmVariantCase).shape));
    for (const s of ['m16n16k16', 'm16n8k16', 'm8n16k16']) expect(shapes.has(s as never), s).toBe(true);
  });

  for (const v of emulated) {
    it(v.name, async (ctx) => {
      requireFeature(ctx, 'shader-f16');
      const r = await checkEmulatedGemm(v.spec as GemmVariantCase, testRng(v.name));
      expect(r.failure).toBeNull();
      expect(r.key).toBe(v.key);
    }, 300_000);
  }

  it('the three seeded bugs fail the check (wrong B majorness, unpadded B stride, missing barrier)', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const c: GemmVariantCase = { ...GEMM_SG_CASES[0]!, tile: 's64', shape: 'm16n8k16' };
    for (const mutation of ['major', 'stride', 'nobarrier'] as GemmMutation[]) {
      const r = await checkEmulatedGemm(c, new Rng(11), mutation);
      console.log(`[gemm sgmatrix] mutation ${mutation}: ${r.failure?.split('\n')[0] ?? 'NOT CAUGHT'}`);
      expect(r.failure, `mutation ${mutation} must be caught`).toMatch(/outside the error bound/);
    }
  }, 600_000);
});

describe('gemm sgmatrix: the choice of core', () => {
  const f16cfg = (M: number, N: number, K: number, result = 'f32'): SubgroupMatrixConfig => ({
    componentType: 'f16',
    resultComponentType: result,
    M,
    N,
    K,
  });
  const all: FeatureName[] = [
    'shader-f16',
    'subgroups',
    'chromium-experimental-subgroup-matrix',
    'subgroup-size-control',
  ];
  const adapters: Record<
    string,
    Pick<ChoiceContext, 'features' | 'subgroupMatrixConfigs' | 'subgroupSize' | 'maxWorkgroupBytes'>
  > = {
    // NVIDIA (Vulkan, f16 toggle on): 16×16×16, 16×8×16, 16×8×8 f16, int8 ones; subgroups of 32
    nvidia: {
      features: new Set(all),
      subgroupMatrixConfigs: [
        f16cfg(16, 8, 8),
        f16cfg(16, 8, 16),
        f16cfg(16, 16, 16),
        f16cfg(16, 16, 16, 'f16'),
        { componentType: 'i8', resultComponentType: 'i32', M: 16, N: 16, K: 32 },
      ],
      subgroupSize: { min: 32, max: 32 },
      maxWorkgroupBytes: 49152,
    },
    // Intel Xe2: 8×16×16, subgroups of 16 to 32 (size control declares 32)
    intel: {
      features: new Set(all),
      subgroupMatrixConfigs: [f16cfg(8, 16, 16)],
      subgroupSize: { min: 16, max: 32 },
      maxWorkgroupBytes: 65536,
    },
    // Apple: 8×8×8 f16 and f32, subgroups of 32, no size control
    apple: {
      features: new Set(all.filter((f) => f !== 'subgroup-size-control')),
      subgroupMatrixConfigs: [
        f16cfg(8, 8, 8),
        f16cfg(8, 8, 8, 'f16'),
        { componentType: 'f32', resultComponentType: 'f32', M: 8, N: 8, K: 8 },
      ],
      subgroupSize: { min: 32, max: 32 },
      maxWorkgroupBytes: 32768,
    },
    // no subgroup matrices (lavapipe; or FINLLM_DISABLE_FEATURES=chromium-experimental-subgroup-matrix, which empties the list)
    none: {
      features: new Set(['shader-f16', 'subgroups', 'subgroup-size-control'] as FeatureName[]),
      subgroupMatrixConfigs: [],
      subgroupSize: { min: 8, max: 8 },
      maxWorkgroupBytes: 32768,
    },
  };
  const ctx = (name: string, over: Partial<ChoiceContext> = {}): ChoiceContext => ({
    precision: 'fp16-mixed',
    maxInvocations: 256,
    isSoftware: false,
    ...adapters[name]!,
    ...over,
  });
  const big = { M: 4096, N: 4096, K: 4096, batch: 1 };

  it('NVIDIA: 16×16×16 f16→f32 (first of the known shapes offered), the 128² tile; Intel 8×16×16; Apple 8×8×8; none: the SIMT f16 core', () => {
    expect(chooseGemm(big, ctx('nvidia'))).toEqual({
      compute: 'f16',
      tile: 's128',
      splitK: 1,
      matrix: { shape: 'm16n16k16', emulated: false },
    });
    expect(nativeMatrixCore(ctx('nvidia'))).toEqual({ shape: 'm16n16k16', sizeControl: true });
    expect(chooseGemm(big, ctx('intel')).matrix).toEqual({ shape: 'm8n16k16', emulated: false });
    expect(nativeMatrixCore(ctx('apple')), 'Apple: fixed 32-wide subgroups, no size control needed').toEqual({
      shape: 'm8n8k8',
      sizeControl: false,
    });
    expect(chooseGemm(big, ctx('apple')).tile, '44 KiB does not fit 32 KiB').toBe('s64');
    const none = chooseGemm(big, ctx('none'));
    expect(none.compute).toBe('f16');
    expect(none.matrix).toBeUndefined();
  });

  it('only in fp16-mixed, only with the feature on, only for f16-safe weights, only with 32-wide subgroups', () => {
    expect(chooseGemm(big, ctx('nvidia', { precision: 'fp32' }))).toMatchObject({ compute: 'f32' });
    expect(chooseGemm(big, ctx('nvidia', { precision: 'fp32' })).matrix).toBeUndefined();
    const off = new Set(adapters.nvidia!.features);
    off.delete('chromium-experimental-subgroup-matrix');
    expect(
      chooseGemm(big, ctx('nvidia', { features: off, subgroupMatrixConfigs: [] })).matrix,
      'FINLLM_DISABLE_FEATURES',
    ).toBeUndefined();
    expect(chooseGemm(big, ctx('nvidia'), false).compute, 'a weight beyond the f16 range').toBe('f32');
    const noSize = new Set(adapters.intel!.features);
    noSize.delete('subgroup-size-control');
    expect(
      nativeMatrixCore(ctx('intel', { features: noSize })),
      'Intel without size control: subgroups may be 16 wide',
    ).toBeNull();
    expect(
      nativeMatrixCore(ctx('nvidia', { subgroupMatrixConfigs: [f16cfg(16, 16, 16, 'f16')] })),
      'f16 accumulators only: not for training',
    ).toBeNull();
  });

  it('skinny LoRA shapes get the skinny tiles; a split-K target on a GPU', () => {
    expect(chooseGemm({ M: 4096, N: 16, K: 2048, batch: 1 }, ctx('nvidia')).tile).toBe('s64x32');
    const dA = chooseGemm({ M: 16, N: 2048, K: 4096, batch: 1 }, ctx('nvidia'));
    expect(dA.tile).toBe('s32x64');
    expect(dA.splitK).toBeGreaterThan(1);
  });

  it('on this adapter: the native core is never planned without an offered configuration; the test switch forces the emulated one', (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const x = Tensor.empty([40, 64]);
    const w = Tensor.empty([48, 64], 'f16');
    const plan = () => withPrecision('fp16-mixed', () => gemmPlan({ a: { t: x }, b: { t: w, trans: true } }));
    if (engine().dev.subgroupMatrixConfigs.length === 0) {
      expect(plan().choice.matrix).toBeUndefined();
      expect(() =>
        gemmPlan({
          a: { t: x },
          b: { t: w, trans: true },
          choice: { compute: 'f16', tile: 's64', matrix: { shape: 'm16n16k16', emulated: false } },
        }),
      ).toThrow(/not offered by this adapter/);
    }
    forceEmulatedMatrixCore('m16n8k16');
    try {
      expect(plan().choice.matrix).toEqual({ shape: 'm16n8k16', emulated: true });
      expect(
        withPrecision('fp32', () => gemmPlan({ a: { t: x }, b: { t: w, trans: true } })).choice.matrix,
        'fp32 stays SIMT f32',
      ).toBeUndefined();
    } finally {
      forceEmulatedMatrixCore(null);
    }
    x.dispose();
    w.dispose();
  });
});
