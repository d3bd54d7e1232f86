// PEFT LoRA adapters on disk: `adapter_config.json` + `adapter_model.safetensors`, exactly as PEFT
// saves them for a LlamaForCausalLM, so adapters move both ways between finllm and HF PEFT.
// Tensor names: base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight,
// with A: [r, in] and B: [out, r]; the update is W + scaling * B @ A.
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { InputError, NonFiniteError } from '../errors.js';
import { ensureFolder, writeFileAtomic } from '../io/atomic.js';
import { describeNonFinite, type NonFiniteTensor, nonFiniteCount } from '../io/finite.js';
import { describeValue, parseWithSchema, readJsonFile } from '../io/json.js';
import { type SafetensorsEntry, SafetensorsReader, writeSafetensors } from '../io/safetensors.js';
import type { LlamaConfig } from './config.js';

export const LORA_ATTENTION_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export const LORA_MLP_MODULES = ['gate_proj', 'up_proj', 'down_proj'] as const;
/** The decoder linear layers LoRA can target, in PEFT's module naming. */
export const LORA_MODULES = [...LORA_ATTENTION_MODULES, ...LORA_MLP_MODULES] as const;
export type LoraModule = (typeof LORA_MODULES)[number];

export const ADAPTER_CONFIG_FILE = 'adapter_config.json';
export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
/** The PEFT release whose adapter_config.json layout `writeAdapter` reproduces. */
export const PEFT_FORMAT_VERSION = '0.21.0';

export interface LoraAdapterConfig {
  r: number;
  loraAlpha: number;
  useRslora: boolean;
  /** Targeted module types, applied in every decoder layer. */
  targetModules: LoraModule[];
  loraDropout: number;
  baseModelNameOrPath: string | null;
  taskType: 'CAUSAL_LM';
}

export interface LoraPair {
  /** [r, inFeatures], row-major. */
  A: Float32Array;
  /** [outFeatures, r], row-major. */
  B: Float32Array;
  r: number;
  inFeatures: number;
  outFeatures: number;
}

/** Keyed by module path without the PEFT prefix, e.g. "layers.0.self_attn.q_proj". */
export type LoraWeights = Map<string, LoraPair>;

export interface LoraAdapter {
  config: LoraAdapterConfig;
  weights: LoraWeights;
}

/** The factor on B @ A: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA. */
export function scaling(config: Pick<LoraAdapterConfig, 'r' | 'loraAlpha' | 'useRslora'>): number {
  return config.useRslora ? config.loraAlpha / Math.sqrt(config.r) : config.loraAlpha / config.r;
}

/** W (f32, [out, in]) += scale · B [out, r] · A [r, in], accumulated in f64 per element. */
export function mergeLoraInto(w: Float32Array, pair: LoraPair, scale: number): void {
  const { r, inFeatures: n, outFeatures: m, A, B } = pair;
  if (w.length !== m * n) throw new RangeError(`merge: weight has ${w.length} values, LoRA expects ${m}x${n}`);
  const row = new Float64Array(n);
  for (let o = 0; o < m; o++) {
    row.fill(0);
    for (let j = 0; j < r; j++) {
      const b = B[o * r + j]!;
      if (b === 0) continue;
      const aOff = j * n;
      for (let i = 0; i < n; i++) row[i] += b * A[aOff + i]!;
    }
    const off = o * n;
    for (let i = 0; i < n; i++) w[off + i] = w[off + i]! + Math.fround(scale * row[i]!);
  }
}

function blockOf(module: LoraModule): 'self_attn' | 'mlp' {
  return (LORA_ATTENTION_MODULES as readonly string[]).includes(module) ? 'self_attn' : 'mlp';
}

/** "layers.{layer}.{self_attn|mlp}.{module}" */
export function loraKey(layer: number, module: LoraModule): string {
  return `layers.${layer}.${blockOf(module)}.${module}`;
}

const LORA_KEY_PATTERN = /^layers\.(\d+)\.(self_attn|mlp)\.([a-z_]+)$/;

/** Inverse of loraKey; null when `key` is not a decoder linear layer. */
export function parseLoraKey(key: string): { layer: number; module: LoraModule } | null {
  const match = LORA_KEY_PATTERN.exec(key);
  if (!match) return null;
  const module = match[3] as LoraModule;
  if (!(LORA_MODULES as readonly string[]).includes(module) || blockOf(module) !== match[2]) return null;
  return { layer: Number(match[1]), module };
}

/** PEFT's tensor name for one factor of a LoRA pair. */
export function peftTensorName(key: string, factor: 'A' | 'B'): string {
  return `base_model.model.model.${key}.lora_${factor}.weight`;
}

/** [in, out] features of a decoder linear layer. */
export function linearFeatures(config: LlamaConfig, module: LoraModule): { inFeatures: number; outFeatures: number } {
  const { hiddenSize, intermediateSize, numAttentionHeads, numKeyValueHeads, headDim } = config;
  switch (module) {
    case 'q_proj':
      return { inFeatures: hiddenSize, outFeatures: numAttentionHeads * headDim };
    case 'k_proj':
    case 'v_proj':
      return { inFeatures: hiddenSize, outFeatures: numKeyValueHeads * headDim };
    case 'o_proj':
      return { inFeatures: numAttentionHeads * headDim, outFeatures: hiddenSize };
    case 'gate_proj':
    case 'up_proj':
      return { inFeatures: hiddenSize, outFeatures: intermediateSize };
    case 'down_proj':
      return { inFeatures: intermediateSize, outFeatures: hiddenSize };
  }
}

// ---------------------------------------------------------------------------------------------
// adapter_config.json

const isUnset = (v: unknown) => v === undefined || v === null;
const isEmpty = (v: unknown) =>
  isUnset(v) ||
  (Array.isArray(v) && v.length === 0) ||
  (typeof v === 'object' && v !== null && Object.keys(v).length === 0);

/** PEFT options that change what the adapter computes; we refuse them rather than ignore them. */
const UNSUPPORTED_OPTIONS: { key: string; accepts: (v: unknown) => boolean; expected: string; why: string }[] = [
  { key: 'use_dora', accepts: (v) => isUnset(v) || v === false, expected: 'false', why: 'DoRA is not supported' },
  {
    key: 'fan_in_fan_out',
    accepts: (v) => isUnset(v) || v === false,
    expected: 'false',
    why: 'Conv1D-style (fan_in_fan_out) weights are not used by Llama',
  },
  {
    key: 'bias',
    accepts: (v) => isUnset(v) || v === 'none',
    expected: '"none"',
    why: 'training biases is not supported',
  },
  {
    key: 'lora_bias',
    accepts: (v) => isUnset(v) || v === false,
    expected: 'false',
    why: 'LoRA biases are not supported',
  },
  { key: 'modules_to_save', accepts: isEmpty, expected: 'null', why: 'fully trained extra modules are not supported' },
  {
    key: 'layers_to_transform',
    accepts: isUnset,
    expected: 'null',
    why: 'LoRA on a subset of layers is not supported',
  },
  { key: 'layers_pattern', accepts: isEmpty, expected: 'null', why: 'LoRA on a subset of layers is not supported' },
  { key: 'rank_pattern', accepts: isEmpty, expected: '{}', why: 'per-module ranks are not supported' },
  { key: 'alpha_pattern', accepts: isEmpty, expected: '{}', why: 'per-module alphas are not supported' },
  { key: 'exclude_modules', accepts: isEmpty, expected: 'null', why: 'excluding modules is not supported' },
  { key: 'layer_replication', accepts: isUnset, expected: 'null', why: 'layer replication is not supported' },
  { key: 'target_parameters', accepts: isEmpty, expected: 'null', why: 'LoRA on raw parameters is not supported' },
  { key: 'trainable_token_indices', accepts: isEmpty, expected: 'null', why: 'trainable tokens are not supported' },
  { key: 'alora_invocation_tokens', accepts: isUnset, expected: 'null', why: 'activated LoRA is not supported' },
  { key: 'use_qalora', accepts: (v) => isUnset(v) || v === false, expected: 'false', why: 'QA-LoRA is not supported' },
  { key: 'use_bdlora', accepts: (v) => isUnset(v) || v === false, expected: 'null', why: 'BD-LoRA is not supported' },
  { key: 'megatron_config', accepts: isUnset, expected: 'null', why: 'Megatron layers are not supported' },
];

const adapterConfigSchema = z.looseObject({
  peft_type: z.literal('LORA', { message: 'expected "LORA"' }),
  task_type: z.literal('CAUSAL_LM', { message: 'expected "CAUSAL_LM"' }),
  r: z.number().int().positive(),
  lora_alpha: z.number().positive(),
  use_rslora: z.boolean().default(false),
  lora_dropout: z.number().min(0).lt(1).default(0),
  target_modules: z.union([z.string(), z.array(z.string()).nonempty()]),
  base_model_name_or_path: z.string().nullish(),
});

const PEFT_MODULE_PATH: Record<LoraModule, string> = Object.fromEntries(
  LORA_MODULES.map((m) => [m, `${blockOf(m)}.${m}`]),
) as Record<LoraModule, string>;

/**
 * PEFT semantics: a list entry matches a module whose name equals it or ends with "." + entry;
 * "all-linear" is every linear layer but the output head; any other string is a regex that must
 * fully match the module name. We only support targeting a module type in every layer.
 */
function resolveTargetModules(target: string | string[], file: string): LoraModule[] {
  const key = 'target_modules';
  if (target === 'all-linear') return [...LORA_MODULES];
  if (typeof target === 'string') {
    let regex: RegExp;
    try {
      regex = new RegExp(`^(?:${target})$`);
    } catch (err) {
      throw new InputError(`not a valid regular expression: ${(err as Error).message}`, { file, key });
    }
    const selectedInLayer = (layer: number) =>
      LORA_MODULES.filter((m) => regex.test(`model.layers.${layer}.${PEFT_MODULE_PATH[m]}`));
    const first = selectedInLayer(0);
    // Checking many layer indices catches patterns like "layers\.(0|1)\..*" that select some layers only.
    for (let layer = 1; layer < 256; layer++) {
      const selected = selectedInLayer(layer);
      if (selected.join() !== first.join()) {
        throw new InputError(
          `regex ${JSON.stringify(target)} selects different modules in different layers; only targeting a module type in every layer is supported`,
          { file, key },
        );
      }
    }
    if (first.length === 0)
      throw new InputError(
        `regex ${JSON.stringify(target)} matches no decoder linear layer (${LORA_MODULES.join(', ')})`,
        { file, key },
      );
    return first;
  }
  const modules = new Set<LoraModule>();
  for (const entry of target) {
    const matched = LORA_MODULES.filter(
      (m) => entry === m || PEFT_MODULE_PATH[m] === entry || PEFT_MODULE_PATH[m].endsWith(`.${entry}`),
    );
    if (matched.length === 0) {
      throw new InputError(
        `unsupported target module ${JSON.stringify(entry)}; expected some of ${LORA_MODULES.join(', ')}`,
        { file, key },
      );
    }
    for (const m of matched) modules.add(m);
  }
  return LORA_MODULES.filter((m) => modules.has(m));
}

/** Validates a parsed adapter_config.json object; `file` is used in messages. */
export function parseAdapterConfig(raw: unknown, file = ADAPTER_CONFIG_FILE): LoraAdapterConfig {
  const parsed = parseWithSchema(adapterConfigSchema, raw, file);
  for (const option of UNSUPPORTED_OPTIONS) {
    const value = (parsed as Record<string, unknown>)[option.key];
    if (!option.accepts(value)) {
      throw new InputError(`${option.why}: expected ${option.expected}, got ${describeValue(value)}`, {
        file,
        key: option.key,
      });
    }
  }
  return {
    r: parsed.r,
    loraAlpha: parsed.lora_alpha,
    useRslora: parsed.use_rslora,
    targetModules: resolveTargetModules(parsed.target_modules, file),
    loraDropout: parsed.lora_dropout,
    baseModelNameOrPath: parsed.base_model_name_or_path ?? null,
    taskType: 'CAUSAL_LM',
  };
}

/** The adapter_config.json object PEFT 0.21 writes for this config (every key, sorted like PEFT). */
export function adapterConfigToPeft(config: LoraAdapterConfig): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    auto_mapping: null,
    base_model_name_or_path: config.baseModelNameOrPath,
    bias: 'none',
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    kasa_config: null,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: config.loraAlpha,
    lora_bias: false,
    lora_dropout: config.loraDropout,
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    monteclora_config: null,
    peft_type: 'LORA',
    peft_version: PEFT_FORMAT_VERSION,
    qalora_group_size: 16,
    r: config.r,
    rank_pattern: {},
    revision: null,
    target_modules: [...config.targetModules],
    target_parameters: null,
    task_type: config.taskType,
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: config.useRslora,
    velora_config: null,
  };
  return Object.fromEntries(
    Object.keys(fields)
      .sort()
      .map((k) => [k, fields[k]]),
  );
}

export async function readAdapterConfig(dir: string): Promise<LoraAdapterConfig> {
  const file = join(dir, ADAPTER_CONFIG_FILE);
  return parseAdapterConfig(await readJsonFile(file), file);
}

// ---------------------------------------------------------------------------------------------
// adapter_model.safetensors

const PEFT_TENSOR_PATTERN = /^base_model\.model\.model\.(layers\.\d+\.(?:self_attn|mlp)\.[a-z_]+)\.lora_(A|B)\.weight$/;

/** Reads every LoRA pair from a PEFT adapter weights file (any float dtype, returned as f32). */
export async function readLoraWeights(path: string): Promise<LoraWeights> {
  const reader = await SafetensorsReader.open(path);
  try {
    const factors = new Map<string, { A?: string; B?: string }>();
    for (const name of reader.names()) {
      const match = PEFT_TENSOR_PATTERN.exec(name);
      if (!match || !parseLoraKey(match[1]!)) {
        const hint = name.includes('.default.')
          ? ' (".default" adapter names are not saved by PEFT; remove them)'
          : name.includes('magnitude')
            ? ' (DoRA is not supported)'
            : '';
        throw new InputError(
          `unexpected tensor '${name}'; expected base_model.model.model.layers.{i}.{self_attn|mlp}.{module}.lora_{A|B}.weight${hint}`,
          { file: path },
        );
      }
      const entry = factors.get(match[1]!) ?? {};
      entry[match[2] as 'A' | 'B'] = name;
      factors.set(match[1]!, entry);
    }
    const weights: LoraWeights = new Map();
    const nonFinite: NonFiniteTensor[] = [];
    for (const key of [...factors.keys()].sort(compareLoraKeys)) {
      const { A, B } = factors.get(key)!;
      if (!A || !B) {
        throw new InputError(`module ${key} has lora_${A ? 'A' : 'B'} but no lora_${A ? 'B' : 'A'}`, { file: path });
      }
      const shapeA = reader.info(A).shape;
      const shapeB = reader.info(B).shape;
      if (shapeA.length !== 2 || shapeB.length !== 2 || shapeA[0] !== shapeB[1]) {
        throw new InputError(
          `module ${key}: expected lora_A [r, in] and lora_B [out, r] with the same r, got A [${shapeA.join(', ')}] and B [${shapeB.join(', ')}]`,
          { file: path },
        );
      }
      const pair = {
        A: await reader.readF32(A),
        B: await reader.readF32(B),
        r: shapeA[0]!,
        inFeatures: shapeA[1]!,
        outFeatures: shapeB[0]!,
      };
      // Read to the CPU anyway: counted here, so eval, generate and export all refuse a damaged adapter.
      for (const [name, data] of [
        [A, pair.A],
        [B, pair.B],
      ] as const) {
        const count = nonFiniteCount(data);
        if (count > 0) nonFinite.push({ name, count });
      }
      weights.set(key, pair);
    }
    if (nonFinite.length > 0)
      throw new InputError(`${describeNonFinite(nonFinite)}; the adapter is damaged or its training diverged`, {
        file: path,
      });
    return weights;
  } finally {
    await reader.close();
  }
}

/** Orders keys by layer, then module in LORA_MODULES order. */
function compareLoraKeys(a: string, b: string): number {
  const pa = parseLoraKey(a)!;
  const pb = parseLoraKey(b)!;
  return pa.layer - pb.layer || LORA_MODULES.indexOf(pa.module) - LORA_MODULES.indexOf(pb.module);
}

/** Reads an adapter folder; the weights must be safetensors (pickled .bin files are never loaded). */
export async function readAdapter(dir: string): Promise<LoraAdapter> {
  const config = await readAdapterConfig(dir);
  const weightsPath = join(dir, ADAPTER_WEIGHTS_FILE);
  if (!(await exists(weightsPath)) && (await exists(join(dir, 'adapter_model.bin')))) {
    throw new InputError(
      'adapter weights are a pickled adapter_model.bin, which finllm never loads; re-save them with safe_serialization=True',
      { file: join(dir, 'adapter_model.bin') },
    );
  }
  const weights = await readLoraWeights(weightsPath);
  for (const [key, pair] of weights) {
    if (pair.r !== config.r) {
      throw new InputError(`module ${key} has rank ${pair.r}, but adapter_config.json says r = ${config.r}`, {
        file: weightsPath,
      });
    }
  }
  return { config, weights };
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/**
 * Checks that the adapter fits the model: every target module of every layer has weights, of shapes
 * A [r, in] and B [out, r] for this model, and there are no weights for anything else.
 * `file` (e.g. the adapter folder) is named in the error.
 */
export function validateAdapterAgainstModel(
  config: LoraAdapterConfig,
  model: LlamaConfig,
  weights: LoraWeights,
  file?: string,
): void {
  const where = file ? { file } : {};
  for (const module of config.targetModules) {
    const { inFeatures, outFeatures } = linearFeatures(model, module);
    for (let layer = 0; layer < model.numHiddenLayers; layer++) {
      const key = loraKey(layer, module);
      const pair = weights.get(key);
      if (!pair) throw new InputError(`no LoRA weights for target module ${key}`, where);
      const expected = `A [${config.r}, ${inFeatures}], B [${outFeatures}, ${config.r}]`;
      const got = `A [${pair.r}, ${pair.inFeatures}], B [${pair.outFeatures}, ${pair.r}]`;
      if (pair.r !== config.r || pair.inFeatures !== inFeatures || pair.outFeatures !== outFeatures) {
        throw new InputError(`LoRA shapes for ${key} do not fit the model: expected ${expected}, got ${got}`, where);
      }
      if (pair.A.length !== pair.r * pair.inFeatures || pair.B.length !== pair.outFeatures * pair.r) {
        throw new InputError(
          `LoRA data for ${key} has ${pair.A.length} + ${pair.B.length} values, expected ${expected}`,
          where,
        );
      }
    }
  }
  for (const key of weights.keys()) {
    const parsed = parseLoraKey(key);
    if (!parsed) throw new InputError(`LoRA weights for unknown module ${key}`, where);
    if (parsed.layer >= model.numHiddenLayers) {
      throw new InputError(`LoRA weights for ${key}, but the model has ${model.numHiddenLayers} layers`, where);
    }
    if (!config.targetModules.includes(parsed.module)) {
      throw new InputError(
        `LoRA weights for ${key}, but ${parsed.module} is not in target_modules (${config.targetModules.join(', ')})`,
        where,
      );
    }
  }
}

/**
 * Writes an adapter folder PEFT can load (`PeftModel.from_pretrained`): F32 weights with PEFT names,
 * then adapter_config.json. Each file is replaced atomically; the weights go first so a config
 * present on disk never describes weights that were not fully written. Other files in `dir` stay.
 */
export async function writeAdapter(dir: string, adapter: LoraAdapter): Promise<void> {
  const { config, weights } = adapter;
  await ensureFolder(dir);
  const entries: SafetensorsEntry[] = [];
  for (const key of [...weights.keys()].sort()) {
    if (!parseLoraKey(key)) throw new Error(`not a LoRA module key: '${key}'`);
    const pair = weights.get(key)!;
    for (const [factor, data] of [
      ['A', pair.A],
      ['B', pair.B],
    ] as const) {
      const count = nonFiniteCount(data);
      if (count > 0)
        throw new NonFiniteError(
          `refusing to write ${dir}: ${describeNonFinite([{ name: peftTensorName(key, factor), count }])}`,
        );
    }
    entries.push(
      { name: peftTensorName(key, 'A'), dtype: 'F32', shape: [pair.r, pair.inFeatures], data: pair.A },
      { name: peftTensorName(key, 'B'), dtype: 'F32', shape: [pair.outFeatures, pair.r], data: pair.B },
    );
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  await writeSafetensors(join(dir, ADAPTER_WEIGHTS_FILE), entries, { format: 'pt' });
  // PEFT writes json.dumps(indent=2, sort_keys=True) with no trailing newline; so do we.
  await writeFileAtomic(join(dir, ADAPTER_CONFIG_FILE), JSON.stringify(adapterConfigToPeft(config), null, 2));
}
