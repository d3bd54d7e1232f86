// A randomly initialised HF-format Llama checkpoint from a preset, initialised as transformers'
// LlamaPreTrainedModel._init_weights does: every Linear and the embedding ~ normal(0,
// initializer_range), RMSNorm weights = 1. Seeded, so the same seed gives the same bytes.
// The vocabulary (size, BOS, EOS, PAD) comes from the tokenizer folder, whose files are copied.
import { join } from 'node:path';
import { Rng } from '../engine/random.js';
import { writeFileAtomic, writeFolderAtomic } from '../io/atomic.js';
import { type SafetensorsEntry, type WritableDtype, writeShardedSafetensors } from '../io/safetensors.js';
import { type LlamaConfig, llamaConfigToHf, llamaPreset } from './config.js';
import { copyModelSideFiles, TOKENIZER_FILES } from './merge.js';
import { LlamaTokenizer } from './tokenizer.js';
import { expectedTensors } from './weights.js';

export interface InitModelOptions {
  preset: string;
  /** Folder with tokenizer.json + tokenizer_config.json. */
  tokenizerDir: string;
  seed?: number;
  /** Override preset fields (tests). */
  overrides?: Partial<LlamaConfig>;
}

export function generationConfigJson(config: LlamaConfig): Record<string, unknown> {
  const eos = config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds;
  return {
    _from_model_config: true,
    bos_token_id: config.bosTokenId,
    eos_token_id: eos,
    ...(config.padTokenId !== null ? { pad_token_id: config.padTokenId } : {}),
  };
}

/** Writes the random checkpoint into `outDir` (atomically; it must not exist or be empty). */
export async function initModel(outDir: string, opts: InitModelOptions): Promise<LlamaConfig> {
  const tok = await LlamaTokenizer.load(opts.tokenizerDir);
  const config = llamaPreset(opts.preset, {
    vocabSize: tok.vocabSize,
    bosTokenId: tok.bosId,
    eosTokenIds: [tok.eosId],
    padTokenId: tok.padId,
    ...opts.overrides,
  });
  const rng = new Rng(opts.seed ?? 0);
  const dtype: WritableDtype =
    config.torchDtype === 'bfloat16' ? 'BF16' : config.torchDtype === 'float16' ? 'F16' : 'F32';
  const entries: SafetensorsEntry[] = [];
  // Values are drawn in this (HF module) order when each tensor is written, one tensor in memory.
  for (const [name, shape] of expectedTensors(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    const isNorm = name.endsWith('norm.weight');
    entries.push({
      name,
      dtype,
      shape,
      data: () => (isNorm ? new Float32Array(n).fill(1) : rng.normalArray(n, 0, config.initializerRange)),
    });
  }
  await writeFolderAtomic(outDir, async (tmp) => {
    await writeShardedSafetensors(tmp, entries, { maxShardBytes: 5e9, metadata: { format: 'pt' } });
    await writeFileAtomic(join(tmp, 'config.json'), `${JSON.stringify(llamaConfigToHf(config), null, 2)}\n`);
    await writeFileAtomic(
      join(tmp, 'generation_config.json'),
      `${JSON.stringify(generationConfigJson(config), null, 2)}\n`,
    );
    await copyModelSideFiles(opts.tokenizerDir, tmp, TOKENIZER_FILES);
  });
  return config;
}
