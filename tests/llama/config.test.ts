import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import {
  LLAMA_PRESETS,
  llamaConfigToHf,
  llamaPreset,
  loadLlamaConfig,
  parseLlamaConfig,
} from '../../src/llama/config.js';
import { FIXTURES } from '../io/helpers.js';

const gqaDir = join(FIXTURES, 'gqa-f32', 'model');
const mqaDir = join(FIXTURES, 'mqa-bf16-tied-llama3rope', 'model');

async function rawConfig(dir: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
}

function expectInputError(fn: () => unknown, fragments: RegExp[]): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(InputError);
  for (const f of fragments) expect((error as Error).message).toMatch(f);
}

describe('Llama config.json', () => {
  it('reads the GQA fixture (transformers 5, default RoPE)', async () => {
    const config = await loadLlamaConfig(gqaDir);
    expect(config).toEqual({
      vocabSize: 600,
      hiddenSize: 48,
      intermediateSize: 128,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 12,
      rmsNormEps: 1e-6,
      rope: { theta: 10000, scaling: null },
      maxPositionEmbeddings: 128,
      tieWordEmbeddings: false,
      bosTokenId: 1,
      eosTokenIds: [2],
      padTokenId: null,
      torchDtype: 'float32',
      initializerRange: 0.02,
    });
  });

  it('reads the MQA fixture (tied, bf16, llama3 RoPE)', async () => {
    const config = await loadLlamaConfig(join(mqaDir, 'config.json'));
    expect(config.numKeyValueHeads).toBe(1);
    expect(config.headDim).toBe(16);
    expect(config.tieWordEmbeddings).toBe(true);
    expect(config.torchDtype).toBe('bfloat16');
    expect(config.rmsNormEps).toBe(1e-5);
    expect(config.rope).toEqual({
      theta: 500000,
      scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 32 },
    });
  });

  it('reads the older layout (top-level rope_theta + rope_scaling with "type", torch_dtype) the same way', async () => {
    const modern = await rawConfig(mqaDir);
    const {
      rope_parameters: rope,
      dtype,
      ...rest
    } = modern as { rope_parameters: Record<string, unknown>; dtype: unknown; [key: string]: unknown };
    const legacy = {
      ...rest,
      torch_dtype: dtype,
      rope_theta: rope.rope_theta,
      rope_scaling: {
        type: 'llama3',
        factor: rope.factor,
        low_freq_factor: rope.low_freq_factor,
        high_freq_factor: rope.high_freq_factor,
        original_max_position_embeddings: rope.original_max_position_embeddings,
      },
    };
    expect(parseLlamaConfig(legacy)).toEqual(parseLlamaConfig(modern));
    const noScaling = { ...rest, rope_theta: 250000, rope_scaling: null };
    expect(parseLlamaConfig(noScaling).rope).toEqual({ theta: 250000, scaling: null });
  });

  it('fills HF defaults: KV heads = heads, head_dim = hidden / heads, eos list', () => {
    const config = parseLlamaConfig({
      model_type: 'llama',
      vocab_size: 100,
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 1,
      num_attention_heads: 4,
      eos_token_id: [2, 3],
    });
    expect(config.numKeyValueHeads).toBe(4);
    expect(config.headDim).toBe(8);
    expect(config.eosTokenIds).toEqual([2, 3]);
    expect(config.rope).toEqual({ theta: 10000, scaling: null });
    expect(config.tieWordEmbeddings).toBe(false);
  });

  it('round-trips through the HF config object, which keeps both RoPE layouts consistent', async () => {
    for (const dir of [gqaDir, mqaDir]) {
      const config = await loadLlamaConfig(dir);
      const hf = llamaConfigToHf(config);
      expect(parseLlamaConfig(hf)).toEqual(config);
      const original = await rawConfig(dir);
      for (const key of [
        'architectures',
        'hidden_size',
        'num_key_value_heads',
        'head_dim',
        'rope_parameters',
        'tie_word_embeddings',
        'dtype',
        'vocab_size',
      ]) {
        expect(hf[key], key).toEqual(original[key]);
      }
      // The legacy keys alone (as transformers 4 reads them) describe the same model.
      const { rope_parameters: _ignored, ...legacyOnly } = hf;
      expect(parseLlamaConfig(legacyOnly)).toEqual(config);
    }
  });

  const base = () => ({
    architectures: ['LlamaForCausalLM'],
    vocab_size: 100,
    hidden_size: 32,
    intermediate_size: 64,
    num_hidden_layers: 1,
    num_attention_heads: 4,
    num_key_value_heads: 2,
  });
  const file = '/models/x/config.json';
  const refused: [string, Record<string, unknown>, RegExp[]][] = [
    [
      'another architecture',
      { ...base(), architectures: ['MistralForCausalLM'], model_type: 'mistral' },
      [/key 'architectures'/, /LlamaForCausalLM/, /MistralForCausalLM/],
    ],
    ['no architecture at all', (({ architectures: _a, ...r }) => r)(base()), [/key 'model_type'/, /only Llama models/]],
    [
      'KV heads that do not divide heads',
      { ...base(), num_key_value_heads: 3 },
      [/key 'num_key_value_heads'/, /\(3\) must divide num_attention_heads \(4\)/],
    ],
    ['a missing size', (({ hidden_size: _h, ...r }) => r)(base()), [/key 'hidden_size'/, /got nothing \(missing\)/]],
    [
      'a string where a number belongs',
      { ...base(), vocab_size: '100' },
      [/key 'vocab_size'/, /expected number/, /got "100"/],
    ],
    ['attention bias', { ...base(), attention_bias: true }, [/key 'attention_bias'/, /expected false, got true/]],
    ['MLP bias', { ...base(), mlp_bias: true }, [/key 'mlp_bias'/]],
    ['a non-SiLU activation', { ...base(), hidden_act: 'gelu' }, [/key 'hidden_act'/, /"gelu"/]],
    [
      'yarn RoPE (new layout)',
      { ...base(), rope_parameters: { rope_type: 'yarn', rope_theta: 1e4, factor: 4 } },
      [/key 'rope_parameters\.rope_type'/, /"yarn"/, /default, llama3/],
    ],
    [
      'linear RoPE (old layout)',
      { ...base(), rope_scaling: { type: 'linear', factor: 2 } },
      [/key 'rope_scaling\.type'/, /"linear"/],
    ],
    [
      'llama3 RoPE without a factor',
      {
        ...base(),
        rope_scaling: {
          rope_type: 'llama3',
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 8192,
        },
      },
      [/key 'rope_scaling\.factor'/, /positive number/],
    ],
    [
      'an eos id outside the vocabulary',
      { ...base(), eos_token_id: 100 },
      [/key 'eos_token_id'/, /outside the vocabulary/],
    ],
    ['an unknown dtype', { ...base(), dtype: 'int4' }, [/key 'dtype'/]],
    [
      'a head dim the attention kernels do not run',
      { ...base(), head_dim: 6 },
      [/key 'head_dim'/, /multiple of 4 and at most 256/, /got 6/],
    ],
    ['a head dim over 256', { ...base(), head_dim: 288 }, [/key 'head_dim'/, /got 288/]],
  ];
  for (const [what, raw, fragments] of refused) {
    it(`refuses ${what}, naming the file and key`, () => {
      expectInputError(() => parseLlamaConfig(raw, file), [new RegExp(file.replace(/[/.]/g, '\\$&')), ...fragments]);
    });
  }

  it('refuses rope_theta: 1e400 (JSON parses it to Infinity) saying "got Infinity", not "got null"', () => {
    const raw = JSON.parse(JSON.stringify(base()).replace(/\}$/, ',"rope_theta":1e400}')) as Record<string, unknown>;
    expect(raw.rope_theta).toBe(Infinity);
    expectInputError(() => parseLlamaConfig(raw, file), [/key 'rope_theta'/, /got Infinity/]);
  });

  it('refuses a missing or non-JSON config file with the path', async () => {
    await expect(loadLlamaConfig(join(FIXTURES, 'nowhere'))).rejects.toThrow(/nowhere.*file not found/);
    await expect(loadLlamaConfig(join(FIXTURES, 'README.md'))).rejects.toThrow(/README\.md.*invalid JSON/);
  });
});

describe('init-model presets', () => {
  it('have the documented shapes', () => {
    const p160 = llamaPreset('160m');
    expect([
      p160.hiddenSize,
      p160.numHiddenLayers,
      p160.numAttentionHeads,
      p160.intermediateSize,
      p160.vocabSize,
    ]).toEqual([768, 12, 12, 3072, 32000]);
    const tinyLlama = llamaPreset('1.1b');
    expect([
      tinyLlama.hiddenSize,
      tinyLlama.numHiddenLayers,
      tinyLlama.numAttentionHeads,
      tinyLlama.numKeyValueHeads,
      tinyLlama.intermediateSize,
      tinyLlama.vocabSize,
      tinyLlama.rope.theta,
      tinyLlama.rmsNormEps,
    ]).toEqual([2048, 22, 32, 4, 5632, 32000, 10000, 1e-5]);
    expect(tinyLlama.headDim).toBe(64);
  });

  it('produce valid HF configs and accept overrides, re-deriving head_dim', () => {
    for (const name of Object.keys(LLAMA_PRESETS)) {
      const preset = llamaPreset(name);
      expect(parseLlamaConfig(llamaConfigToHf(preset))).toEqual(preset);
    }
    const custom = llamaPreset('tiny', { vocabSize: 600, hiddenSize: 96 });
    expect(custom.vocabSize).toBe(600);
    expect(custom.headDim).toBe(24);
    // Overrides do not leak into the shared preset objects.
    expect(LLAMA_PRESETS.tiny.vocabSize).toBe(32000);
    expectInputError(() => llamaPreset('7b'), [/unknown model preset "7b"/, /tiny, 160m, 1\.1b/]);
    expectInputError(() => llamaPreset('tiny', { numKeyValueHeads: 3 }), [/preset tiny/, /num_key_value_heads/]);
  });
});
