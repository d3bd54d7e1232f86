// FlashAttention-2 on subgroup matrices (src/kernels/attention-sgmatrix.ts):
//  - every native kernel compiles on Dawn's Null backend with zero errors and zero warnings (Null
//    type-checks subgroup-matrix WGSL but executes nothing; its 16 KiB workgroup-memory cap is below
//    the kernels' tiles, so the check is at shader-module level);
//  - the emulated twins (same template, plain-WGSL fragments, smaller tiles) run here against the
//    float64 reference, forward and backward, in all three matrix shapes, with per-element bounds
//    derived from f16 operands and f32 accumulation (bench/check/attention.ts, shared with
//    check:kernels);
//  - the chooser takes the native kernels only where an adapter like a real one offers them.
import { describe, expect, it } from 'vitest';
import { checkEmulatedAttention } from '../../bench/check/attention.js';
import { GpuDevice, type SubgroupMatrixConfig } from '../../src/engine/device.js';
import { engine, Tensor } from '../../src/engine/tensor.js';
import {
  type AttentionCaps,
  type AttentionShape,
  chooseAttentionVariant,
  flashAttentionForward,
  nativeFragmentShape,
} from '../../src/kernels/attention.js';
import { ATTENTION_SG_CASES, casePasses, shapeName } from '../../src/kernels/attention-sgmatrix.js';
import { MATRIX_SHAPES } from '../../src/kernels/sgmatrix.js';
import { kernelVariants, nullCompiler } from '../../src/kernels/variants.js';
import { testRng, useEngine } from '../helpers/index.js';

useEngine();

// Emulated kernels are plain WGSL loops: a cold lavapipe compile takes tens of seconds each.
const TIMEOUT = 900_000;
const S16 = MATRIX_SHAPES.m16n16k16;
const S16x8 = MATRIX_SHAPES.m16n8k16;
const S8x16 = MATRIX_SHAPES.m8n16k16;

describe('attention on emulated subgroup matrices vs float64 (forward and backward)', () => {
  // The cases and the bounds (f16 operands, f32 accumulation: per element, derived in
  // bench/check/attention.ts) are the ones check:kernels runs.
  it('the cases cover every matrix shape and head size, forward and backward', () => {
    const bwd = ATTENTION_SG_CASES.filter((c) => !c.kvStart);
    expect(new Set(bwd.map((c) => shapeName(c.shape)))).toEqual(new Set(['16x16x16', '16x8x16', '8x16x16']));
    expect(new Set(ATTENTION_SG_CASES.map((c) => c.Dh))).toEqual(new Set([64, 80, 96, 128]));
  });
  for (const c of ATTENTION_SG_CASES) {
    it(
      `${c.label} [emulated ${shapeName(c.shape)}]`,
      async () => {
        const r = await checkEmulatedAttention(c, testRng(`attention sgmatrix ${c.label}`));
        console.log(
          `${c.label}: max |err|/bound ${Object.entries(r.ratios)
            .map(([k, x]) => `${k} ${x.toFixed(3)}`)
            .join(', ')}`,
        );
        expect(r.failure).toBeNull();
        expect(Object.keys(r.ratios)).toEqual(c.kvStart ? ['out', 'lse'] : ['out', 'lse', 'dQ', 'dK', 'dV']);
      },
      TIMEOUT,
    );
  }
});

describe('native subgroup-matrix attention kernels compile on Dawn Null', () => {
  it(
    'every native variant in the registry: zero errors, zero warnings',
    async () => {
      const family = kernelVariants().filter((v) => v.family === 'attn.sgm');
      const natives = family.filter((v) => v.mode === 'native');
      expect(natives.length).toBe(3 * 3 * 4 * 4); // passes × shapes × head dims × (q, kv) storage dtypes
      expect(new Set(natives.map((v) => v.key)).size).toBe(natives.length);
      // Beside them, the emulated twins check:kernels runs: one per case and pass, and nothing else.
      const emulated = family.filter((v) => v.mode === 'emulated');
      expect(emulated.length).toBe(ATTENTION_SG_CASES.reduce((n, c) => n + casePasses(c).length, 0));
      expect(natives.length + emulated.length).toBe(family.length);
      const nc = await nullCompiler();
      const failed: string[] = [];
      try {
        for (const v of natives) {
          const problems = await nc.check(v.code(), { workgroupBytes: v.workgroupBytes, label: v.key });
          if (problems.length) failed.push(`${v.key}: ${problems.join('; ')}`);
        }
      } finally {
        nc.destroy();
      }
      expect(failed).toEqual([]);
    },
    TIMEOUT,
  );
});

describe('attention chooser and subgroup matrices', () => {
  const f16 = (M: number, N: number, K: number, res = 'f32'): SubgroupMatrixConfig => ({
    componentType: 'f16',
    resultComponentType: res,
    M,
    N,
    K,
  });
  const base: AttentionCaps = {
    features: new Set(['subgroups', 'shader-f16', 'timestamp-query', 'chromium-experimental-subgroup-matrix']),
    subgroupMinSize: 32,
    subgroupMaxSize: 32,
    maxWorkgroupStorage: 48 * 1024,
    maxInvocations: 1024,
    software: false,
    precision: 'fp16-mixed',
  };
  // Adapter descriptions like real ones (Dawn's subgroupMatrixConfigs; f16 and int8 entries).
  const nvidia: AttentionCaps = {
    ...base,
    subgroupMatrixConfigs: [
      f16(16, 8, 8),
      f16(16, 8, 16),
      f16(16, 16, 16),
      f16(16, 16, 16, 'f16'),
      { componentType: 'i8', resultComponentType: 'i32', M: 16, N: 8, K: 32 },
    ],
  };
  const intel: AttentionCaps = {
    ...base,
    subgroupMinSize: 16,
    subgroupMaxSize: 32,
    subgroupMatrixConfigs: [f16(8, 16, 16), f16(8, 16, 16, 'f16')],
  };
  const apple: AttentionCaps = {
    ...base,
    subgroupMatrixConfigs: [
      f16(8, 8, 8),
      f16(8, 8, 8, 'f16'),
      { componentType: 'f32', resultComponentType: 'f32', M: 8, N: 8, K: 8 },
    ],
  };
  const none: AttentionCaps = { ...base, features: new Set(['subgroups', 'shader-f16']), subgroupMatrixConfigs: [] };
  const train = (Dh: number): AttentionShape => ({
    B: 2,
    T: 512,
    S: 512,
    Hq: 32,
    Hkv: 8,
    Dh,
    qType: 'f16',
    kvType: 'f16',
  });

  it('NVIDIA-like: native kernels in fp16-mixed at Llama head sizes, 16x16x16 first', () => {
    for (const Dh of [64, 80, 96, 128]) {
      expect(chooseAttentionVariant('forward', train(Dh), nvidia).name).toBe('forward.tiled.sgmatrix');
      expect(chooseAttentionVariant('backward', train(Dh), nvidia).name).toBe('backward.sgmatrix');
      expect(nativeFragmentShape('forward', train(Dh), nvidia)).toEqual(S16);
    }
    // Only 16x8x16 (a list without 16x16x16) is taken too; 16x8x8 alone is not a shape the kernels have.
    expect(
      nativeFragmentShape('backward', train(64), { ...nvidia, subgroupMatrixConfigs: [f16(16, 8, 8), f16(16, 8, 16)] }),
    ).toEqual(S16x8);
    expect(
      nativeFragmentShape('backward', train(64), { ...nvidia, subgroupMatrixConfigs: [f16(16, 8, 8)] }),
    ).toBeNull();
    // Other head sizes, decoding (few query rows: the split layout), fp32, f16 results only: portable.
    expect(chooseAttentionVariant('forward', train(112), nvidia).name).toBe('forward.tiled.subgroup');
    expect(chooseAttentionVariant('forward', { ...train(128), T: 1 }, nvidia).name).toBe('forward.split.subgroup');
    expect(chooseAttentionVariant('forward', train(128), { ...nvidia, precision: 'fp32' }).name).toBe(
      'forward.tiled.subgroup',
    );
    expect(
      chooseAttentionVariant('backward', train(128), { ...nvidia, subgroupMatrixConfigs: [f16(16, 16, 16, 'f16')] })
        .name,
    ).toBe('backward.subgroup');
    // 48 KiB is what the tiles need; a 32 KiB device keeps the portable kernels.
    expect(chooseAttentionVariant('backward', train(128), { ...nvidia, maxWorkgroupStorage: 32 * 1024 }).name).toBe(
      'backward.subgroup',
    );
  });

  it('Intel-like (8x16x16, subgroups of 16 to 32), Apple-like (8x8x8), none: portable kernels', () => {
    // The kernels deal tiles to workgroup/32 subgroups: hardware subgroups must be exactly 32 lanes.
    expect(chooseAttentionVariant('forward', train(128), intel).name).toBe('forward.tiled.subgroup');
    expect(nativeFragmentShape('forward', train(128), { ...intel, subgroupMinSize: 32 })).toEqual(S8x16);
    expect(chooseAttentionVariant('forward', train(128), apple).name).toBe('forward.tiled.subgroup');
    expect(chooseAttentionVariant('backward', train(128), apple).name).toBe('backward.subgroup');
    expect(chooseAttentionVariant('forward', train(128), none).name).toBe('forward.tiled.subgroup');
    expect(chooseAttentionVariant('backward', train(128), none).name).toBe('backward.subgroup');
  });

  it('native kernels where the adapter does not offer their shape, and the split layout, are refused with the reason', () => {
    const q = Tensor.empty([1, 4, 2, 64]);
    const k = Tensor.empty([1, 4, 1, 64]);
    const native = () =>
      flashAttentionForward(q, k, k, { causal: true }, 'tiled', { fragments: { mode: 'native', shape: S16 } });
    const offered = engine().dev.subgroupMatrixConfigs.some(
      (c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16,
    );
    if (offered) expect(native).not.toThrow();
    else expect(native).toThrow(/16×16×16 is not offered by this adapter/);
    expect(() =>
      flashAttentionForward(q, k, k, { causal: true }, 'split', { fragments: { mode: 'emulated', shape: S16 } }),
    ).toThrow(/tiled layout only/);
    const x48 = Tensor.empty([1, 4, 1, 48]);
    expect(() =>
      flashAttentionForward(x48, x48, x48, { causal: true }, 'tiled', { fragments: { mode: 'emulated', shape: S16 } }),
    ).toThrow(/head dim 48 not supported/);
  });

  it('FINLLM_DISABLE_FEATURES=chromium-experimental-subgroup-matrix removes the feature the native variants require', async () => {
    // Dawn's Null adapter offers the feature (and no configurations), so a device made there shows the switch.
    const prev = process.env.FINLLM_DISABLE_FEATURES;
    const devices: GpuDevice[] = [];
    try {
      delete process.env.FINLLM_DISABLE_FEATURES;
      devices.push(await GpuDevice.create({ backend: 'null' }));
      process.env.FINLLM_DISABLE_FEATURES = 'chromium-experimental-subgroup-matrix';
      devices.push(await GpuDevice.create({ backend: 'null' }));
    } finally {
      if (prev === undefined) delete process.env.FINLLM_DISABLE_FEATURES;
      else process.env.FINLLM_DISABLE_FEATURES = prev;
    }
    const [on, off] = devices as [GpuDevice, GpuDevice];
    expect(on.features.has('chromium-experimental-subgroup-matrix')).toBe(true);
    expect(off.features.has('chromium-experimental-subgroup-matrix')).toBe(false);
    const caps = (d: GpuDevice): AttentionCaps => ({ ...nvidia, features: d.features });
    expect(chooseAttentionVariant('forward', train(128), caps(on)).name).toBe('forward.tiled.sgmatrix');
    expect(chooseAttentionVariant('forward', train(128), caps(off)).name).not.toMatch(/sgmatrix/);
    for (const d of devices) d.destroy();
  });
});
