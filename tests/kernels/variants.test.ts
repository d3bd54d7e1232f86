// The variant registry (src/kernels/variants.ts): keys are unique and derived from the spec, and
// every pipeline that training, validation and generation compile on this adapter is a registered
// variant (with the kernels this adapter chooses; variants-gpu-shapes.test.ts runs the same
// workload with the GPU-shaped kernels forced).
import { describe, expect, it } from 'vitest';
import { engine } from '../../src/engine/tensor.js';
import { specKey } from '../../src/kernels/common.js';
import { forceEmulatedMatrixCore } from '../../src/kernels/gemm.js';
import '../../src/kernels/index.js';
import { kernelFamily, kernelVariants } from '../../src/kernels/variants.js';
import { requireFeature, useEngine } from '../helpers/index.js';
import { runCase, unregisteredNativeTwins, unregisteredPipelines, workloadCases } from './variants-workload.js';

useEngine();

describe('variant registry', () => {
  it('gives every compiled variant its own key', () => {
    // Emulated variants are verification cases: two cases may run one kernel on different inputs.
    const variants = kernelVariants().filter((v) => v.mode !== 'emulated');
    const keys = new Map<string, string>();
    const clashes: string[] = [];
    for (const v of variants) {
      const other = keys.get(v.key);
      if (other !== undefined) clashes.push(`${v.key}: ${other} and ${v.family} ${v.name}`);
      keys.set(v.key, `${v.family} ${v.name}`);
    }
    expect(clashes).toEqual([]);
    // Every family registers something, and the names within a family are distinct.
    const byFamily = new Map<string, Set<string>>();
    for (const v of variants) {
      const names = byFamily.get(v.family) ?? new Set<string>();
      expect(names.has(v.name), `${v.family}: name '${v.name}' twice`).toBe(false);
      names.add(v.name);
      byFamily.set(v.family, names);
    }
    expect(byFamily.size).toBeGreaterThan(10);
  });

  it('derives a declared family’s key, code and variants from one spec', () => {
    const fam = kernelFamily<{ n: number; t: 'f32' | 'f16' }>({
      family: 'test.registry-family',
      specs: () => [
        { n: 1, t: 'f32' },
        { t: 'f16', n: 2 },
      ],
      code: ({ n, t }) => `// ${t} ${n}`,
    });
    expect(fam.key({ t: 'f16', n: 2 })).toBe(specKey('test.registry-family', { n: 2, t: 'f16' }));
    const mine = kernelVariants().filter((v) => v.family === 'test.registry-family');
    expect(mine.map((v) => v.key)).toEqual([fam.key({ n: 1, t: 'f32' }), fam.key({ n: 2, t: 'f16' })]);
    expect(mine.map((v) => v.code())).toEqual(['// f32 1', '// f16 2']);
    expect(mine.every((v) => v.mode === 'portable')).toBe(true);
    expect(() => kernelFamily({ family: 'test.registry-family', specs: () => [], code: () => '' })).toThrow(
      /declared twice/,
    );
  });

  it('takes a family’s table as rows: each spec gives its mode and module-level flag, each row its name and verifier input', () => {
    type Spec = { core: 'simt' | 'native' | 'emulated'; sized: boolean };
    const fam = kernelFamily<Spec>({
      family: 'test.registry-rows',
      rows: () => [
        { spec: { core: 'simt', sized: true }, name: 'plain' },
        { spec: { core: 'native', sized: true }, name: 'native sized' },
        { spec: { core: 'native', sized: false }, name: 'native fixed' },
        { spec: { core: 'emulated', sized: false }, name: 'emulated', check: { inputs: 7 } },
      ],
      code: ({ core, sized }) => `// ${core} ${sized}`,
      mode: ({ core }) => (core === 'simt' ? 'portable' : core),
      moduleOnly: ({ core, sized }) => core === 'native' && !sized,
      workgroupBytes: ({ core }) => (core === 'simt' ? 0 : 4096),
    });
    const mine = kernelVariants().filter((v) => v.family === 'test.registry-rows');
    expect(fam.variants()).toEqual(mine);
    expect(mine.map((v) => [v.name, v.mode, v.moduleOnly ?? false, v.workgroupBytes])).toEqual([
      ['plain', 'portable', false, 0],
      ['native sized', 'native', false, 4096],
      ['native fixed', 'native', true, 4096],
      ['emulated', 'emulated', false, 4096],
    ]);
    expect(mine[2]!.key).toBe(specKey('test.registry-rows', { core: 'native', sized: false }));
    expect(mine[2]!.code()).toBe('// native false');
    // A row without a verifier input hands its spec to the verifier.
    expect(mine.map((v) => v.spec)).toEqual([
      { core: 'simt', sized: true },
      { core: 'native', sized: true },
      { core: 'native', sized: false },
      { inputs: 7 },
    ]);
  });
});

describe('every compiled pipeline is a registered variant (this adapter’s kernel choices)', () => {
  const cases = workloadCases();
  it.for(cases)('$what', async (c, ctx) => {
    if (c.precision === 'fp16-mixed') requireFeature(ctx, 'shader-f16');
    await runCase(c);
    expect(unregisteredPipelines()).toEqual([]);
  });
});

describe('the native subgroup-matrix GEMMs callers launch are registered variants', () => {
  // With the emulated core forced, fp16-mixed training and generation make the choices a device with
  // the native core makes; each emulated kernel's native twin must be in the table.
  it.for(workloadCases().filter((c) => c.precision === 'fp16-mixed'))('$what', async (c, ctx) => {
    requireFeature(ctx, 'shader-f16');
    forceEmulatedMatrixCore('m16n8k16');
    try {
      await runCase(c);
    } finally {
      forceEmulatedMatrixCore(null);
    }
    const emulated = engine()
      .dev.pipelineKeys()
      .filter((k) => k.includes('"mode":"emulated"'));
    expect(emulated.length).toBeGreaterThan(0);
    expect(unregisteredNativeTwins()).toEqual([]);
  });
});
