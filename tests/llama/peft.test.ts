import { copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { SafetensorsReader, writeSafetensors } from '../../src/io/safetensors.js';
import { llamaConfigToHf, loadLlamaConfig, parseLlamaConfig } from '../../src/llama/config.js';
import {
  LORA_MODULES,
  type LoraAdapter,
  linearFeatures,
  loraKey,
  parseAdapterConfig,
  peftTensorName,
  readAdapter,
  scaling,
  validateAdapterAgainstModel,
  writeAdapter,
} from '../../src/llama/peft.js';
import { FIXTURE_MODELS, FIXTURES, seededFloats, useTempDirs } from '../io/helpers.js';

const tempDir = useTempDirs();
const golden = JSON.parse(await readFile(join(FIXTURES, 'golden.json'), 'utf8')) as {
  models: Record<string, { lora: { r: number; lora_alpha: number; use_rslora: boolean } }>;
};

async function fixtureConfigJson(name: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(FIXTURES, name, 'adapter', 'adapter_config.json'), 'utf8'));
}
const fixtureGqaConfig = await fixtureConfigJson('gqa-f32');

function thrownBy(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw');
}

describe('reading the reference PEFT adapters', () => {
  for (const name of FIXTURE_MODELS) {
    it(`${name}: config, scaling, shapes and values`, async () => {
      const adapterDir = join(FIXTURES, name, 'adapter');
      const model = await loadLlamaConfig(join(FIXTURES, name, 'model'));
      const expected = golden.models[name]!.lora;
      const { config, weights } = await readAdapter(adapterDir);
      expect(config.r).toBe(expected.r);
      expect(config.loraAlpha).toBe(expected.lora_alpha);
      expect(config.useRslora).toBe(expected.use_rslora);
      expect(config.targetModules).toEqual([...LORA_MODULES]);
      expect(scaling(config)).toBeCloseTo(
        expected.use_rslora ? expected.lora_alpha / Math.sqrt(expected.r) : expected.lora_alpha / expected.r,
        12,
      );
      expect(weights.size).toBe(model.numHiddenLayers * LORA_MODULES.length);
      validateAdapterAgainstModel(config, model, weights);

      const reader = await SafetensorsReader.open(join(adapterDir, 'adapter_model.safetensors'));
      try {
        for (let layer = 0; layer < model.numHiddenLayers; layer++) {
          for (const module of LORA_MODULES) {
            const key = loraKey(layer, module);
            const pair = weights.get(key)!;
            const { inFeatures, outFeatures } = linearFeatures(model, module);
            expect([pair.r, pair.inFeatures, pair.outFeatures], key).toEqual([expected.r, inFeatures, outFeatures]);
            expect(pair.A).toEqual(await reader.readF32(peftTensorName(key, 'A')));
            expect(pair.B).toEqual(await reader.readF32(peftTensorName(key, 'B')));
            expect(
              pair.B.some((v) => v !== 0),
              `${key} B is non-zero in the fixture`,
            ).toBe(true);
          }
        }
      } finally {
        await reader.close();
      }
    });
  }

  it('scaling is alpha/r, or alpha/sqrt(r) for rsLoRA', () => {
    expect(scaling({ r: 16, loraAlpha: 32, useRslora: false })).toBe(2);
    expect(scaling({ r: 16, loraAlpha: 32, useRslora: true })).toBe(8);
  });
});

describe('writing adapters', () => {
  for (const name of FIXTURE_MODELS) {
    it(`${name}: a re-written fixture adapter matches PEFT's files`, async () => {
      const fixtureDir = join(FIXTURES, name, 'adapter');
      const adapter = await readAdapter(fixtureDir);
      const dir = join(await tempDir(), 'out');
      await writeAdapter(dir, adapter);
      expect((await readdir(dir)).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);

      // Weights: byte-identical to what PEFT + safetensors wrote.
      const ours = await readFile(join(dir, 'adapter_model.safetensors'));
      const theirs = await readFile(join(fixtureDir, 'adapter_model.safetensors'));
      expect(ours.equals(theirs)).toBe(true);

      // Config: the same keys and values; target_modules is a set in PEFT, so compare it sorted.
      const written = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
      const original = await fixtureConfigJson(name);
      const sortTargets = (c: Record<string, unknown>) => ({
        ...c,
        target_modules: [...(c['target_modules'] as string[])].sort(),
      });
      expect(Object.keys(written)).toEqual(Object.keys(original));
      expect(sortTargets(written)).toEqual(sortTargets(original));

      const reread = await readAdapter(dir);
      expect(reread.config).toEqual(adapter.config);
      expect(reread.weights).toEqual(adapter.weights);
    });
  }

  it('round-trips fresh weights and replaces an existing adapter, keeping other files', async () => {
    const model = parseLlamaConfig(
      llamaConfigToHf({
        ...(await loadLlamaConfig(join(FIXTURES, 'gqa-f32', 'model'))),
        numHiddenLayers: 1,
      }),
    );
    const config = {
      r: 2,
      loraAlpha: 4,
      useRslora: false,
      targetModules: ['q_proj', 'down_proj'] as ('q_proj' | 'down_proj')[],
      loraDropout: 0.05,
      baseModelNameOrPath: 'TinyLlama/TinyLlama-1.1B-Chat-v1.0',
      taskType: 'CAUSAL_LM' as const,
    };
    const weights = new Map(
      config.targetModules.map((module, i) => {
        const { inFeatures, outFeatures } = linearFeatures(model, module);
        return [
          loraKey(0, module),
          {
            r: 2,
            inFeatures,
            outFeatures,
            A: seededFloats(2 * inFeatures, 1 + i),
            B: seededFloats(outFeatures * 2, 7 + i),
          },
        ];
      }),
    );
    const adapter: LoraAdapter = { config, weights };
    validateAdapterAgainstModel(config, model, weights);
    const dir = await tempDir();
    await writeFile(join(dir, 'README.md'), 'mine');
    await writeAdapter(dir, { config: { ...config, r: 3 }, weights: new Map() });
    await writeAdapter(dir, adapter);
    const back = await readAdapter(dir);
    expect(back.config).toEqual(config);
    expect(back.weights).toEqual(weights);
    expect((await readdir(dir)).sort()).toEqual(['README.md', 'adapter_config.json', 'adapter_model.safetensors']);
    const json = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
    expect(json).toMatchObject({
      r: 2,
      lora_alpha: 4,
      lora_dropout: 0.05,
      target_modules: ['q_proj', 'down_proj'],
      base_model_name_or_path: 'TinyLlama/TinyLlama-1.1B-Chat-v1.0',
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
    });
  });
});

describe('adapter_config.json options', () => {
  it('resolves target_modules as PEFT does: suffixes, "all-linear" and full-match regexes', () => {
    const raw = structuredClone(fixtureGqaConfig);
    const targets = (t: unknown) => parseAdapterConfig({ ...raw, target_modules: t }).targetModules;
    expect(targets(['v_proj', 'self_attn.q_proj'])).toEqual(['q_proj', 'v_proj']);
    expect(targets('all-linear')).toEqual([...LORA_MODULES]);
    expect(targets('.*\\.(q_proj|v_proj)')).toEqual(['q_proj', 'v_proj']);
    expect(targets('.*mlp.*')).toEqual(['gate_proj', 'up_proj', 'down_proj']);
  });

  const refused: [string, (raw: Record<string, unknown>) => Record<string, unknown>, RegExp][] = [
    ['DoRA', (r) => ({ ...r, use_dora: true }), /key 'use_dora'.*DoRA is not supported: expected false, got true/],
    [
      'modules_to_save',
      (r) => ({ ...r, modules_to_save: ['lm_head'] }),
      /key 'modules_to_save'.*expected null, got \["lm_head"\]/,
    ],
    ['layers_to_transform', (r) => ({ ...r, layers_to_transform: [0] }), /key 'layers_to_transform'.*subset of layers/],
    ['a trained bias', (r) => ({ ...r, bias: 'lora_only' }), /key 'bias'.*expected "none", got "lora_only"/],
    ['fan_in_fan_out', (r) => ({ ...r, fan_in_fan_out: true }), /key 'fan_in_fan_out'/],
    ['rank_pattern', (r) => ({ ...r, rank_pattern: { q_proj: 8 } }), /key 'rank_pattern'.*per-module ranks/],
    ['another PEFT method', (r) => ({ ...r, peft_type: 'IA3' }), /key 'peft_type'.*expected "LORA".*got "IA3"/],
    ['another task type', (r) => ({ ...r, task_type: 'SEQ_CLS' }), /key 'task_type'.*expected "CAUSAL_LM"/],
    ['a zero rank', (r) => ({ ...r, r: 0 }), /key 'r'.*got 0/],
    ['a missing alpha', ({ lora_alpha: _a, ...r }) => r, /key 'lora_alpha'.*missing/],
    [
      'lm_head as a target',
      (r) => ({ ...r, target_modules: ['q_proj', 'lm_head'] }),
      /key 'target_modules'.*unsupported target module "lm_head"/,
    ],
    [
      'a regex selecting some layers only',
      (r) => ({ ...r, target_modules: 'model\\.layers\\.[0-3]\\..*q_proj' }),
      /key 'target_modules'.*different modules in different layers/,
    ],
    [
      'a regex matching nothing',
      (r) => ({ ...r, target_modules: '.*attn' }),
      /key 'target_modules'.*matches no decoder linear layer/,
    ],
  ];
  for (const [what, edit, message] of refused) {
    it(`refuses ${what}`, () => {
      const file = '/adapters/a/adapter_config.json';
      const error = thrownBy(() => parseAdapterConfig(edit(structuredClone(fixtureGqaConfig)), file));
      expect(error).toBeInstanceOf(InputError);
      expect(error.message).toContain(file);
      expect(error.message).toMatch(message);
    });
  }
});

describe('bad adapter folders and adapters that do not fit the model', () => {
  async function adapterCopy(): Promise<string> {
    const dir = join(await tempDir(), 'adapter');
    await mkdir(dir);
    for (const f of ['adapter_config.json', 'adapter_model.safetensors'])
      await copyFile(join(FIXTURES, 'gqa-f32', 'adapter', f), join(dir, f));
    return dir;
  }

  it('refuses pickled weights and names missing files', async () => {
    const dir = await adapterCopy();
    await writeFile(join(dir, 'adapter_model.bin'), 'not loaded');
    await copyFile(join(dir, 'adapter_model.safetensors'), join(dir, 'keep.safetensors'));
    const { rm } = await import('node:fs/promises');
    await rm(join(dir, 'adapter_model.safetensors'));
    await expect(readAdapter(dir)).rejects.toThrow(/adapter_model\.bin.*pickled.*never loads/);
    await rm(join(dir, 'adapter_model.bin'));
    await expect(readAdapter(dir)).rejects.toThrow(/adapter_model\.safetensors.*file not found/);
    await expect(readAdapter(join(dir, 'nowhere'))).rejects.toThrow(/adapter_config\.json.*file not found/);
  });

  it('refuses weights with foreign names, a missing factor, or a rank that disagrees with the config', async () => {
    const dir = await adapterCopy();
    const path = join(dir, 'adapter_model.safetensors');
    const A = new Float32Array(4 * 48);
    const B = new Float32Array(48 * 4);
    await writeSafetensors(path, [
      {
        name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight',
        dtype: 'F32',
        shape: [4, 48],
        data: A,
      },
    ]);
    await expect(readAdapter(dir)).rejects.toThrow(
      /adapter_model\.safetensors.*unexpected tensor.*"\.default" adapter names/,
    );
    await writeSafetensors(path, [
      { name: 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight', dtype: 'F32', shape: [4, 48], data: A },
    ]);
    await expect(readAdapter(dir)).rejects.toThrow(/layers\.0\.self_attn\.q_proj has lora_A but no lora_B/);
    await writeSafetensors(path, [
      { name: peftTensorName('layers.0.self_attn.q_proj', 'A'), dtype: 'F32', shape: [2, 96], data: A },
      { name: peftTensorName('layers.0.self_attn.q_proj', 'B'), dtype: 'F32', shape: [96, 2], data: B },
    ]);
    await expect(readAdapter(dir)).rejects.toThrow(
      /layers\.0\.self_attn\.q_proj has rank 2, but adapter_config\.json says r = 4/,
    );
  });

  it('names module, expected and actual shapes when the adapter is for another model', async () => {
    const { config, weights } = await readAdapter(join(FIXTURES, 'gqa-f32', 'adapter'));
    const model = await loadLlamaConfig(join(FIXTURES, 'gqa-f32', 'model'));
    const wider = { ...model, intermediateSize: 256 };
    const error = thrownBy(() => validateAdapterAgainstModel(config, wider, weights, '/x/adapter'));
    expect(error).toBeInstanceOf(InputError);
    expect(error.message).toMatch(
      /\/x\/adapter: LoRA shapes for layers\.0\.mlp\.gate_proj do not fit the model: expected A \[4, 48\], B \[256, 4\], got A \[4, 48\], B \[128, 4\]/,
    );

    const fewerLayers = { ...model, numHiddenLayers: 1 };
    expect(() => validateAdapterAgainstModel(config, fewerLayers, weights)).toThrow(
      /layers\.1\.self_attn\.q_proj, but the model has 1 layers/,
    );

    const missing = new Map(weights);
    missing.delete('layers.1.mlp.up_proj');
    expect(() => validateAdapterAgainstModel(config, model, missing)).toThrow(
      /no LoRA weights for target module layers\.1\.mlp\.up_proj/,
    );

    const narrower = { ...config, targetModules: config.targetModules.filter((m) => m !== 'o_proj') };
    expect(() => validateAdapterAgainstModel(narrower, model, weights)).toThrow(/o_proj is not in target_modules/);
  });
});
