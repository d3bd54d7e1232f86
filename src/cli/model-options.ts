// Options shared by the verbs that load a model (eval, generate): --model, --adapter, --quantize,
// --storage, and their validation into LoadModelOptions.
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import type { LoadModelOptions } from '../llama/model.js';

export interface ModelCliOptions {
  model?: string;
  adapter?: string;
  quantize?: string;
  storage?: string;
}

export function addModelOptions(cmd: Command): Command {
  return cmd
    .requiredOption('-m, --model <dir>', 'HF model folder (config.json, model.safetensors, tokenizer.json)')
    .option('-a, --adapter <dir>', 'PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors)')
    .option('--quantize <kind>', 'quantize the decoder linear layers at load time: nf4')
    .option('--storage <dtype>', 'GPU storage of the other weights: f32, bf16 or f16', 'f32');
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

/** Validates the shared options; returns the model folder and the loader options. */
export async function modelLoadOptions(o: ModelCliOptions): Promise<{ dir: string; load: LoadModelOptions }> {
  if (!o.model) throw new InputError('--model is required', { key: 'model' });
  await checkDir(o.model, 'model');
  if (o.adapter) await checkDir(o.adapter, 'adapter');
  if (o.quantize !== undefined && o.quantize !== 'nf4') throw new InputError(`expected nf4, got ${JSON.stringify(o.quantize)}`, { key: 'quantize' });
  const storage = o.storage ?? 'f32';
  if (storage !== 'f32' && storage !== 'bf16' && storage !== 'f16') throw new InputError(`expected f32, bf16 or f16, got ${JSON.stringify(storage)}`, { key: 'storage' });
  return {
    dir: o.model,
    load: {
      storage,
      ...(o.quantize === 'nf4' ? { quantize: 'nf4' as const } : {}),
      ...(o.adapter ? { adapter: o.adapter } : {}),
    },
  };
}

/** Parses an integer flag that must be at least `min`; InputError naming the flag otherwise. */
export function intOption(value: string | undefined, flag: string, min: number): number | undefined {
  const n = numberOption(value, flag, true);
  if (n !== undefined && n < min) throw new InputError(`expected an integer >= ${min}, got ${JSON.stringify(value)}`, { key: flag });
  return n;
}

/** Parses a numeric flag; InputError naming the flag when it is not a number. */
export function numberOption(value: string | undefined, flag: string, integer = false): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n) || (integer && !Number.isInteger(n))) {
    throw new InputError(`expected ${integer ? 'an integer' : 'a number'}, got ${JSON.stringify(value)}`, { key: flag });
  }
  return n;
}
