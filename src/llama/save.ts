// Saving the model in memory (after full training) as a complete Hugging Face checkpoint:
// model.safetensors (f32, HF tensor names; tied embeddings saved once, as transformers does),
// config.json, tokenizer and generation files copied from the folder the model was loaded from.
// transformers loads it with LlamaForCausalLM.from_pretrained; finllm with --model.
import type { SafetensorsEntry } from '../io/safetensors.js';
import { writeModelFolder } from './merge.js';
import type { LlamaModel } from './model.js';

export interface SaveModelOptions {
  /** Largest shard (bytes); default 5 GB like HF. */
  maxShardBytes?: number;
  /** Replace an existing folder (the new one is complete before the old one is removed). */
  replace?: boolean;
}

/**
 * Writes every weight of `model` (read back from the GPU one tensor at a time, f32) into `outDir`
 * with the config, tokenizer and generation config of `sourceDir` (the model's own folder).
 * Dense models only (NF4 weights are an InputError: they have no full-precision values in memory).
 */
export async function saveModel(
  model: LlamaModel,
  sourceDir: string,
  outDir: string,
  opts: SaveModelOptions = {},
): Promise<string[]> {
  const entries: SafetensorsEntry[] = [...model.namedWeights()].map(([name, t]) => ({
    name,
    dtype: 'F32',
    shape: t.shape,
    data: () => t.toFloat32(),
  }));
  return writeModelFolder(outDir, entries, sourceDir, opts);
}
