// Options shared by the verbs that load a model (eval, generate): --model, --adapter, --quantize,
// --storage, --precision, --kv-cache, and their validation into LoadModelOptions, the engine
// precision and the KV cache setting (serve validates its own through modelLoadOptions too).
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  PRECISION_SETTINGS,
  type Precision,
  type PrecisionSetting,
  precisionUnsupported,
  resolvePrecision,
  setComputePrecision,
} from '../engine/precision.js';
import { initEngine } from '../engine/tensor.js';
import { InputError } from '../errors.js';
import { resolveModelPath } from '../io/hub.js';
import { modelFolderFor } from '../llama/gguf.js';
import { KV_CACHE_SETTINGS, type KvCacheSetting, type LoadModelOptions } from '../llama/model.js';

export interface ModelCliOptions {
  model?: string;
  adapter?: string;
  quantize?: string;
  storage?: string;
  mergeAdapter?: boolean;
  precision?: string;
  kvCache?: string;
}

/** The --precision flag (eval, generate, serve). */
export const PRECISION_HELP =
  'GEMM precision: fp32, fp16-mixed (f16 operands, f32 accumulation) or auto (fp16-mixed where the GPU has f16 tensor cores)';
/** The --kv-cache flag (generate, eval, serve). */
export const KV_CACHE_HELP =
  'KV cache storage for decoding: f32, f16 (half the memory) or auto (f16 under fp16-mixed, else f32; the default)';

/** The --model flag of the verbs that load a model. */
export const MODEL_HELP =
  'HF model folder (config.json, model.safetensors, tokenizer.json), a GGUF file finllm exported, or a Hugging Face Hub id ORG/NAME[@REVISION] (downloaded into the HF cache when no such folder exists)';

export function addModelOptions(cmd: Command): Command {
  return cmd
    .requiredOption('-m, --model <dir>', MODEL_HELP)
    .option('-a, --adapter <dir>', 'PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors)')
    .option('--quantize <kind>', 'quantize the decoder linear layers at load time: nf4')
    .option('--storage <dtype>', 'GPU storage of the other weights: f32, bf16 or f16', 'f32')
    .option(
      '--merge-adapter',
      'merge the adapter into the base weights at load (W + s·B·A, then --storage / --quantize): faster decoding, no LoRA kernels; with nf4 the merged weight is quantized',
    )
    .option('--precision <mode>', PRECISION_HELP, 'fp32')
    .option('--kv-cache <dtype>', KV_CACHE_HELP);
}

/** InputError unless `dir` is an existing folder (`what` names it in the message). */
export async function checkDir(dir: string, what: string): Promise<void> {
  let isDir = false;
  try {
    isDir = (await stat(dir)).isDirectory();
  } catch {
    throw new InputError(`${what} folder not found`, { file: dir });
  }
  if (!isDir) throw new InputError(`${what} must be a folder`, { file: dir });
}

/** Validates the shared options; returns the model folder, the loader options, the precision and KV cache settings. */
export async function modelLoadOptions(
  o: ModelCliOptions,
): Promise<{ dir: string; load: LoadModelOptions; precision: PrecisionSetting; kvCache: KvCacheSetting }> {
  if (!o.model) throw new InputError('--model is required', { flag: 'model' });
  // A Hub id (org/name[@revision]) with no local folder of that name resolves to its HF cache snapshot.
  const model = await resolveModelPath(o.model);
  // A GGUF file is read into a temp HF folder (weights dequantized to f32), then loads as any folder.
  const isGguf = model.toLowerCase().endsWith('.gguf');
  if (!isGguf) await checkDir(model, 'model');
  const dir = isGguf ? await modelFolderFor(model) : model;
  if (o.adapter) await checkDir(o.adapter, 'adapter');
  if (o.mergeAdapter && !o.adapter) throw new InputError('--merge-adapter needs --adapter', { flag: 'merge-adapter' });
  if (o.quantize !== undefined && o.quantize !== 'nf4')
    throw new InputError(`expected nf4, got ${JSON.stringify(o.quantize)}`, { flag: 'quantize' });
  const storage = o.storage ?? 'f32';
  if (storage !== 'f32' && storage !== 'bf16' && storage !== 'f16')
    throw new InputError(`expected f32, bf16 or f16, got ${JSON.stringify(storage)}`, { flag: 'storage' });
  const precision = (o.precision ?? 'fp32') as PrecisionSetting;
  if (!PRECISION_SETTINGS.includes(precision))
    throw new InputError(`expected ${PRECISION_SETTINGS.join(', ')}, got ${JSON.stringify(o.precision)}`, {
      flag: 'precision',
    });
  const kvCache = kvCacheOption(o.kvCache);
  return {
    dir,
    precision,
    kvCache,
    load: {
      storage,
      ...(o.quantize === 'nf4' ? { quantize: 'nf4' as const } : {}),
      ...(o.adapter ? { adapter: o.adapter } : {}),
      ...(o.mergeAdapter ? { mergeAdapter: true } : {}),
    },
  };
}

/** The --kv-cache value (default auto); InputError naming --kv-cache otherwise. */
export function kvCacheOption(value: string | undefined): KvCacheSetting {
  const v = (value ?? 'auto') as KvCacheSetting;
  if (!KV_CACHE_SETTINGS.includes(v))
    throw new InputError(`expected ${KV_CACHE_SETTINGS.join(', ')}, got ${JSON.stringify(value)}`, {
      flag: 'kv-cache',
    });
  return v;
}

/**
 * Starts the engine and sets its precision (`auto` resolved on this adapter); an unsupported choice
 * (fp16-mixed without shader-f16) is an InputError naming --precision.
 */
export async function applyPrecision(setting: PrecisionSetting): Promise<Precision> {
  const { dev } = await initEngine();
  const p = resolvePrecision(setting, dev);
  const why = precisionUnsupported(p, dev);
  if (why) throw new InputError(`${why}; use --precision fp32`, { flag: 'precision' });
  setComputePrecision(p);
  return p;
}

/** Parses an integer flag that must be at least `min`; InputError naming the flag otherwise. */
export function intOption(value: string | undefined, flag: string, min: number): number | undefined {
  const n = numberOption(value, flag, true);
  if (n !== undefined && n < min)
    throw new InputError(`expected an integer >= ${min}, got ${JSON.stringify(value)}`, { flag });
  return n;
}

/** Parses a numeric flag; InputError naming the flag when it is not a number. */
export function numberOption(value: string | undefined, flag: string, integer = false): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new InputError(`expected ${integer ? 'an integer' : 'a number'}, got ${JSON.stringify(value)}`, { flag });
  }
  return n;
}
