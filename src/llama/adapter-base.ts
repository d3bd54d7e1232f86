// Is an adapter applied to the base it was trained on? adapter_config.json names the base
// (base_model_name_or_path: a folder, as finllm writes it, or a hub id such as
// "TinyLlama/TinyLlama-1.1B-Chat-v1.0"); the run folder beside a finllm adapter says whether that
// base was NF4-quantized. A mismatch is a warning (the command goes on): the shapes may fit while
// the weights are another model's, and an update learnt against NF4 weights is not the one the
// full-precision weights need.
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import YAML from 'yaml';
import { warn } from '../warnings.js';
import type { LoraAdapterConfig } from './peft.js';

const RUN_CONFIG = 'resolved-config.yaml';

function real(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return resolve(p);
  }
}

/** Whether `modelDir` plausibly is the base `base` names (same folder, or a hub id whose name it carries). */
export function sameBase(base: string, modelDir: string): boolean {
  if (existsSync(base)) return real(base) === real(modelDir);
  const model = real(modelDir).toLowerCase();
  const id = base.toLowerCase().replace(/\/+$/, '');
  const name = id.split('/').pop()!;
  // A hub id: the folder is named after the model, or is its HF cache snapshot (models--org--name/snapshots/<rev>).
  return basename(model) === name || model.includes(`models--${id.replace(/\//g, '--')}`);
}

/** model.quantize of the run that trained the adapter in `adapterDir`, when its resolved-config.yaml is beside it. */
export function trainedQuantize(adapterDir: string): string | null {
  const file = join(dirname(real(adapterDir)), RUN_CONFIG);
  if (!existsSync(file)) return null;
  try {
    const cfg = YAML.parse(readFileSync(file, 'utf8')) as { model?: { quantize?: unknown } } | null;
    return typeof cfg?.model?.quantize === 'string' ? cfg.model.quantize : null;
  } catch {
    return null;
  }
}

/**
 * Warns when the adapter in `adapterDir` names another base than `modelDir`, and, when it is
 * merged (`mergeInto`: the weights it is merged into), when it was trained over an NF4 base but is
 * merged into full-precision weights.
 */
export function checkAdapterBase(
  config: LoraAdapterConfig,
  adapterDir: string,
  modelDir: string,
  mergeInto?: 'nf4' | 'full',
): void {
  const base = config.baseModelNameOrPath;
  if (base && !sameBase(base, modelDir)) {
    warn(
      `adapter ${adapterDir} was trained on base ${base} (adapter_config.json base_model_name_or_path), but is applied to ${modelDir}: ` +
        'the outputs are those of another model unless the weights are the same',
      `adapter-base:${adapterDir}:${modelDir}`,
    );
  }
  if (mergeInto === 'full' && trainedQuantize(adapterDir) === 'nf4') {
    warn(
      `adapter ${adapterDir} was trained on an NF4-quantized base (its run's ${RUN_CONFIG}: model.quantize nf4) and is merged into full-precision weights of ${modelDir}: ` +
        'the update was learnt against the NF4 weights, so the merged model differs from the one trained (merge with --quantize nf4 to keep the trained base)',
      `adapter-nf4:${adapterDir}:${modelDir}`,
    );
  }
}
