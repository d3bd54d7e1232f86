// `finllm export --model DIR --adapter DIR --merged OUT_DIR [--dtype source|f32|bf16|f16]`: merges a
// LoRA adapter into its base model (W + scale·B·A) and writes a plain HF model folder.
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import { exportMerged, type ExportDtype } from '../llama/merge.js';

export interface ExportCliOptions {
  model?: string;
  adapter?: string;
  merged?: string;
  dtype?: string;
}

async function checkDir(dir: string, what: string): Promise<void> {
  const s = await stat(dir).catch(() => null);
  if (!s) throw new InputError(`${what} folder not found`, { file: dir });
  if (!s.isDirectory()) throw new InputError(`${what} must be a folder`, { file: dir });
}

export async function exportAction(o: ExportCliOptions, out: (s: string) => void = (s) => void process.stdout.write(s)): Promise<void> {
  if (!o.model) throw new InputError('--model is required', { flag: 'model' });
  if (!o.adapter) throw new InputError('--adapter is required', { flag: 'adapter' });
  if (!o.merged) throw new InputError('--merged is required', { flag: 'merged' });
  await checkDir(o.model, 'model');
  await checkDir(o.adapter, 'adapter');
  const dtype = o.dtype ?? 'source';
  if (!['source', 'f32', 'bf16', 'f16'].includes(dtype)) throw new InputError(`expected source, f32, bf16 or f16, got ${JSON.stringify(dtype)}`, { flag: 'dtype' });
  const { files } = await exportMerged(o.adapter, o.model, o.merged, { dtype: dtype as ExportDtype });
  out(`merged model written to ${o.merged} (${files.join(', ')})\n`);
}

export function register(program: Command): void {
  program
    .command('export')
    .description('merge a LoRA adapter into its base model and write a HF safetensors model folder')
    .requiredOption('-m, --model <dir>', 'base HF model folder')
    .requiredOption('-a, --adapter <dir>', 'PEFT LoRA adapter folder')
    .requiredOption('-o, --merged <dir>', 'output folder (must not exist or be empty; written atomically)')
    .option('--dtype <dtype>', 'weight dtype: source (as the base checkpoint), f32, bf16 or f16', 'source')
    .addHelpText('after', `
Each adapted weight becomes W + scale·B·A (scale = lora_alpha/r, or lora_alpha/sqrt(r) with rsLoRA),
computed in f32 from the base checkpoint as PEFT's merge_and_unload does. config.json, tokenizer
and generation files are copied. Use --dtype f32 to keep the merged weights unrounded.

Exit codes: 0 done, 1 bad input (missing folder, adapter not fitting the model), 2 runtime failure.`)
    .action(async (o: ExportCliOptions) => exportAction(o));
}
