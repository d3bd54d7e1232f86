// The Llama architecture hyper-parameters, read from (and written back to) a HF `config.json`.
// Both config generations are accepted: transformers 5 writes `rope_parameters`, older versions a
// top-level `rope_theta` plus `rope_scaling`; both normalise to one `rope` object.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { InputError } from '../errors.js';
import { describeValue, parseWithSchema, readJsonFile } from '../io/json.js';

export interface Llama3RopeScaling {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export interface RopeConfig {
  theta: number;
  /** null: plain RoPE (HF rope_type "default"). */
  scaling: Llama3RopeScaling | null;
}

export type TorchDtype = 'float32' | 'bfloat16' | 'float16';

export interface LlamaConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  rmsNormEps: number;
  rope: RopeConfig;
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | null;
  /** HF allows one id or a list; always a list here (possibly empty). */
  eosTokenIds: number[];
  padTokenId: number | null;
  /** Dtype the checkpoint's weights were saved in, if the config says. */
  torchDtype: TorchDtype | null;
  initializerRange: number;
}

const positiveInt = z.number().int().positive();
const tokenId = z.number().int().nonnegative();
const torchDtype = z.enum(['float32', 'bfloat16', 'float16']);
const looseObject = z.record(z.string(), z.unknown());

// HF names and defaults (LlamaConfig's own defaults where a saved config may omit a key).
const hfLlamaConfigSchema = z.looseObject({
  architectures: z.array(z.string()).nullish(),
  model_type: z.string().nullish(),
  vocab_size: positiveInt,
  hidden_size: positiveInt,
  intermediate_size: positiveInt,
  num_hidden_layers: positiveInt,
  num_attention_heads: positiveInt,
  num_key_value_heads: positiveInt.nullish(),
  head_dim: positiveInt.nullish(),
  rms_norm_eps: z.number().positive().default(1e-6),
  rope_theta: z.number().positive().nullish(),
  rope_scaling: looseObject.nullish(),
  rope_parameters: looseObject.nullish(),
  max_position_embeddings: positiveInt.default(2048),
  tie_word_embeddings: z.boolean().default(false),
  bos_token_id: tokenId.nullish(),
  eos_token_id: z.union([tokenId, z.array(tokenId)]).nullish(),
  pad_token_id: tokenId.nullish(),
  dtype: torchDtype.nullish(),
  torch_dtype: torchDtype.nullish(),
  attention_bias: z.boolean().default(false),
  mlp_bias: z.boolean().default(false),
  hidden_act: z.string().default('silu'),
  initializer_range: z.number().positive().default(0.02),
});
type HfLlamaConfig = z.output<typeof hfLlamaConfigSchema>;

const SUPPORTED_ROPE_TYPES = ['default', 'llama3'];

function positiveNumberAt(source: Record<string, unknown>, field: string, key: string, file: string): number {
  const value = source[field];
  if (typeof value !== 'number' || !(value > 0) || !Number.isFinite(value)) {
    throw new InputError(`expected a positive number, got ${describeValue(value)}`, { file, key: `${key}.${field}` });
  }
  return value;
}

function normaliseRope(config: HfLlamaConfig, file: string): RopeConfig {
  // transformers 5 keeps everything in rope_parameters; older configs split theta and scaling.
  const key = config.rope_parameters ? 'rope_parameters' : 'rope_scaling';
  const source = config.rope_parameters ?? config.rope_scaling ?? null;
  const theta =
    source && source['rope_theta'] !== undefined
      ? positiveNumberAt(source, 'rope_theta', key, file)
      : (config.rope_theta ?? 10000);
  if (!source) return { theta, scaling: null };
  const typeField = source['rope_type'] !== undefined ? 'rope_type' : 'type';
  const type = source[typeField] ?? 'default';
  if (type === 'default') return { theta, scaling: null };
  if (type !== 'llama3') {
    throw new InputError(
      `unsupported RoPE type ${describeValue(type)}; supported: ${SUPPORTED_ROPE_TYPES.join(', ')}`,
      { file, key: `${key}.${typeField}` },
    );
  }
  const scaling: Llama3RopeScaling = {
    type: 'llama3',
    factor: positiveNumberAt(source, 'factor', key, file),
    lowFreqFactor: positiveNumberAt(source, 'low_freq_factor', key, file),
    highFreqFactor: positiveNumberAt(source, 'high_freq_factor', key, file),
    originalMaxPositionEmbeddings: positiveNumberAt(source, 'original_max_position_embeddings', key, file),
  };
  if (scaling.highFreqFactor <= scaling.lowFreqFactor) {
    // The llama3 frequency ramp divides by (high - low).
    throw new InputError(
      `high_freq_factor (${scaling.highFreqFactor}) must be greater than low_freq_factor (${scaling.lowFreqFactor})`,
      { file, key: `${key}.high_freq_factor` },
    );
  }
  return { theta, scaling };
}

/** Cross-field rules; `file` is where the values came from (a path or e.g. "preset 1.1b"). */
export function checkLlamaConfig(config: LlamaConfig, file: string): void {
  const integers: [keyof LlamaConfig, string][] = [
    ['vocabSize', 'vocab_size'],
    ['hiddenSize', 'hidden_size'],
    ['intermediateSize', 'intermediate_size'],
    ['numHiddenLayers', 'num_hidden_layers'],
    ['numAttentionHeads', 'num_attention_heads'],
    ['numKeyValueHeads', 'num_key_value_heads'],
    ['headDim', 'head_dim'],
    ['maxPositionEmbeddings', 'max_position_embeddings'],
  ];
  for (const [field, key] of integers) {
    const value = config[field];
    if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
      throw new InputError(`expected a positive integer, got ${describeValue(value)}`, { file, key });
    }
  }
  if (config.numAttentionHeads % config.numKeyValueHeads !== 0) {
    throw new InputError(
      `num_key_value_heads (${config.numKeyValueHeads}) must divide num_attention_heads (${config.numAttentionHeads})`,
      { file, key: 'num_key_value_heads' },
    );
  }
  if (config.headDim % 2 !== 0) {
    throw new InputError(`head_dim must be even for rotary embeddings, got ${config.headDim}`, {
      file,
      key: 'head_dim',
    });
  }
  if (config.headDim % 4 !== 0 || config.headDim > 256) {
    throw new InputError(
      `head_dim must be a multiple of 4 and at most 256 (the attention kernels' range), got ${config.headDim}`,
      { file, key: 'head_dim' },
    );
  }
  if (!(config.rmsNormEps > 0))
    throw new InputError(`expected a positive number, got ${config.rmsNormEps}`, { file, key: 'rms_norm_eps' });
  if (!(config.rope.theta > 0))
    throw new InputError(`expected a positive number, got ${config.rope.theta}`, { file, key: 'rope_theta' });
  for (const [id, key] of [
    [config.bosTokenId, 'bos_token_id'],
    [config.padTokenId, 'pad_token_id'],
    ...config.eosTokenIds.map((e) => [e, 'eos_token_id'] as const),
  ] as const) {
    if (id !== null && id >= config.vocabSize) {
      throw new InputError(`token id ${id} is outside the vocabulary (vocab_size ${config.vocabSize})`, { file, key });
    }
  }
}

/** Validates a parsed `config.json` object; `file` is used in error messages. */
export function parseLlamaConfig(raw: unknown, file = 'config.json'): LlamaConfig {
  const hf = parseWithSchema(hfLlamaConfigSchema, raw, file);
  const isLlama = (hf.architectures ?? []).includes('LlamaForCausalLM') || hf.model_type === 'llama';
  if (!isLlama) {
    const key = hf.architectures ? 'architectures' : 'model_type';
    const got = hf.architectures ?? hf.model_type;
    throw new InputError(
      `only Llama models are supported: expected architectures containing "LlamaForCausalLM" or model_type "llama", got ${describeValue(got)}`,
      { file, key },
    );
  }
  for (const key of ['attention_bias', 'mlp_bias'] as const) {
    if (hf[key])
      throw new InputError('biases in attention/MLP projections are not supported: expected false, got true', {
        file,
        key,
      });
  }
  if (hf.hidden_act !== 'silu') {
    throw new InputError(
      `only the SiLU (SwiGLU) MLP is supported: expected "silu", got ${describeValue(hf.hidden_act)}`,
      { file, key: 'hidden_act' },
    );
  }
  const eos = hf.eos_token_id;
  const config: LlamaConfig = {
    vocabSize: hf.vocab_size,
    hiddenSize: hf.hidden_size,
    intermediateSize: hf.intermediate_size,
    numHiddenLayers: hf.num_hidden_layers,
    numAttentionHeads: hf.num_attention_heads,
    numKeyValueHeads: hf.num_key_value_heads ?? hf.num_attention_heads,
    headDim: hf.head_dim ?? hf.hidden_size / hf.num_attention_heads,
    rmsNormEps: hf.rms_norm_eps,
    rope: normaliseRope(hf, file),
    maxPositionEmbeddings: hf.max_position_embeddings,
    tieWordEmbeddings: hf.tie_word_embeddings,
    bosTokenId: hf.bos_token_id ?? null,
    eosTokenIds: eos === null || eos === undefined ? [] : Array.isArray(eos) ? eos : [eos],
    padTokenId: hf.pad_token_id ?? null,
    torchDtype: hf.dtype ?? hf.torch_dtype ?? null,
    initializerRange: hf.initializer_range,
  };
  if (!Number.isInteger(config.headDim)) {
    throw new InputError(
      `head_dim missing and hidden_size (${hf.hidden_size}) is not divisible by num_attention_heads (${hf.num_attention_heads})`,
      { file, key: 'head_dim' },
    );
  }
  checkLlamaConfig(config, file);
  return config;
}

/** Loads `config.json` from a model folder (or the file itself when given a path to it). */
export async function loadLlamaConfig(dirOrFile: string): Promise<LlamaConfig> {
  let file = dirOrFile;
  try {
    if ((await stat(dirOrFile)).isDirectory()) file = join(dirOrFile, 'config.json');
  } catch {
    // Not there at all: readJsonFile reports it with the path.
  }
  return parseLlamaConfig(await readJsonFile(file), file);
}

/**
 * The HF `config.json` object for `config`. RoPE is written both ways (transformers 5's
 * `rope_parameters` and the older `rope_theta` + `rope_scaling`, which 5 still accepts) so the
 * export loads with either generation; same for `dtype` / `torch_dtype`.
 */
export function llamaConfigToHf(config: LlamaConfig): Record<string, unknown> {
  const scaling = config.rope.scaling;
  const scalingFields = scaling
    ? {
        factor: scaling.factor,
        high_freq_factor: scaling.highFreqFactor,
        low_freq_factor: scaling.lowFreqFactor,
        original_max_position_embeddings: scaling.originalMaxPositionEmbeddings,
      }
    : {};
  const ropeType = scaling ? scaling.type : 'default';
  const eos =
    config.eosTokenIds.length === 0
      ? null
      : config.eosTokenIds.length === 1
        ? config.eosTokenIds[0]
        : [...config.eosTokenIds];
  return {
    architectures: ['LlamaForCausalLM'],
    attention_bias: false,
    attention_dropout: 0.0,
    bos_token_id: config.bosTokenId,
    ...(config.torchDtype ? { dtype: config.torchDtype, torch_dtype: config.torchDtype } : {}),
    eos_token_id: eos,
    head_dim: config.headDim,
    hidden_act: 'silu',
    hidden_size: config.hiddenSize,
    initializer_range: config.initializerRange,
    intermediate_size: config.intermediateSize,
    max_position_embeddings: config.maxPositionEmbeddings,
    mlp_bias: false,
    model_type: 'llama',
    num_attention_heads: config.numAttentionHeads,
    num_hidden_layers: config.numHiddenLayers,
    num_key_value_heads: config.numKeyValueHeads,
    pad_token_id: config.padTokenId,
    pretraining_tp: 1,
    rms_norm_eps: config.rmsNormEps,
    rope_parameters: { ...scalingFields, rope_theta: config.rope.theta, rope_type: ropeType },
    rope_scaling: scaling ? { ...scalingFields, rope_type: ropeType } : null,
    rope_theta: config.rope.theta,
    tie_word_embeddings: config.tieWordEmbeddings,
    use_cache: true,
    vocab_size: config.vocabSize,
  };
}

// ---------------------------------------------------------------------------------------------
// Presets for `init-model` (vocab 32000 = the Llama 2 / TinyLlama SentencePiece tokenizer).

const presetBase = {
  vocabSize: 32000,
  maxPositionEmbeddings: 2048,
  rmsNormEps: 1e-5,
  rope: { theta: 10000, scaling: null },
  tieWordEmbeddings: false,
  bosTokenId: 1,
  eosTokenIds: [2],
  padTokenId: null,
  initializerRange: 0.02,
} satisfies Partial<LlamaConfig>;

export const LLAMA_PRESETS = {
  /** Test scale, like the reference fixtures. */
  tiny: {
    ...presetBase,
    hiddenSize: 64,
    intermediateSize: 160,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 16,
    torchDtype: 'float32',
  },
  /** ~160M parameters (GPT-2-small shape with a Llama block). */
  '160m': {
    ...presetBase,
    hiddenSize: 768,
    intermediateSize: 3072,
    numHiddenLayers: 12,
    numAttentionHeads: 12,
    numKeyValueHeads: 12,
    headDim: 64,
    torchDtype: 'float32',
  },
  /** TinyLlama 1.1B. */
  '1.1b': {
    ...presetBase,
    hiddenSize: 2048,
    intermediateSize: 5632,
    numHiddenLayers: 22,
    numAttentionHeads: 32,
    numKeyValueHeads: 4,
    headDim: 64,
    torchDtype: 'bfloat16',
  },
  /**
   * Small models for pretraining from scratch on a CPU or one GPU (configs/pretrain-fin.yaml): 4
   * layers, grouped-query attention, tied embeddings; the vocabulary comes from the tokenizer
   * (`finllm tokenizer train`, ~2k entries).
   */
  'fin-s': {
    ...presetBase,
    vocabSize: 2048,
    maxPositionEmbeddings: 1024,
    tieWordEmbeddings: true,
    hiddenSize: 128,
    intermediateSize: 352,
    numHiddenLayers: 4,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    headDim: 32,
    torchDtype: 'float32',
  },
  'fin-m': {
    ...presetBase,
    vocabSize: 2048,
    maxPositionEmbeddings: 1024,
    tieWordEmbeddings: true,
    hiddenSize: 192,
    intermediateSize: 512,
    numHiddenLayers: 4,
    numAttentionHeads: 6,
    numKeyValueHeads: 2,
    headDim: 32,
    torchDtype: 'float32',
  },
  'fin-l': {
    ...presetBase,
    vocabSize: 4096,
    maxPositionEmbeddings: 1024,
    tieWordEmbeddings: true,
    hiddenSize: 256,
    intermediateSize: 688,
    numHiddenLayers: 6,
    numAttentionHeads: 8,
    numKeyValueHeads: 4,
    headDim: 32,
    torchDtype: 'float32',
  },
} as const satisfies Record<string, LlamaConfig>;

export type LlamaPresetName = keyof typeof LLAMA_PRESETS;

/** A preset with optional overrides (e.g. vocabSize to match a tokenizer), checked for consistency. */
export function llamaPreset(name: string, overrides: Partial<LlamaConfig> = {}): LlamaConfig {
  if (!Object.hasOwn(LLAMA_PRESETS, name)) {
    throw new InputError(`unknown model preset "${name}"; expected one of ${Object.keys(LLAMA_PRESETS).join(', ')}`, {
      key: 'preset',
    });
  }
  const preset = LLAMA_PRESETS[name as LlamaPresetName];
  const config: LlamaConfig = {
    ...preset,
    rope: { ...preset.rope },
    eosTokenIds: [...preset.eosTokenIds],
    ...overrides,
  };
  if (overrides.hiddenSize !== undefined || overrides.numAttentionHeads !== undefined) {
    config.headDim = overrides.headDim ?? config.hiddenSize / config.numAttentionHeads;
  }
  checkLlamaConfig(config, `preset ${name}`);
  return config;
}
