// Merging a LoRA adapter into its base model and exporting a plain HF checkpoint:
// W' = W + scale · B·A for every adapted module (PEFT's merge_and_unload, in f32), every other
// tensor copied. Streams one tensor at a time (read → merge → write), on the CPU, so no GPU is
// needed and host memory stays near one tensor. The output folder appears atomically: everything is
// written into a temp folder beside it, which is renamed into place at the end.
import { copyFile, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { InputError } from '../errors.js';
import { writeFileAtomic, writeFolderAtomic } from '../io/atomic.js';
import { describeNonFinite, nonFiniteCount, nonFiniteCountBits16, overflowCount } from '../io/finite.js';
import { readJsonFile } from '../io/json.js';
import { Checkpoint, type SafetensorsEntry, type WritableDtype, writeShardedSafetensors } from '../io/safetensors.js';
import { checkAdapterBase } from './adapter-base.js';
import { loadLlamaConfig } from './config.js';
import {
  type LoraAdapter,
  type LoraPair,
  loraKey,
  mergeLoraInto,
  readAdapter,
  scaling,
  validateAdapterAgainstModel,
} from './peft.js';
import { checkCheckpoint, LINEAR_MODULES, linearWeightName } from './weights.js';

export type ExportDtype = 'source' | 'f32' | 'bf16' | 'f16';

/** The tokenizer's files of a model folder: copied verbatim when present. */
export const TOKENIZER_FILES = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'tokenizer.model',
  'added_tokens.json',
  'chat_template.jinja',
];

/** Files copied verbatim from the base model folder when present. */
export const COPIED_FILES = [...TOKENIZER_FILES, 'generation_config.json'];

const TORCH_DTYPE: Record<'F32' | 'BF16' | 'F16', string> = { F32: 'float32', BF16: 'bfloat16', F16: 'float16' };

export interface ExportOptions {
  dtype?: ExportDtype;
  /** Largest shard (bytes); default 5 GB like HF. */
  maxShardBytes?: number;
  /** Replace an existing output folder (the new one is complete before the old one is removed). */
  replace?: boolean;
}

async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    () => false,
  );
}

/** Copies tokenizer and generation files present in `from` into `to`. */
export async function copyModelSideFiles(
  from: string,
  to: string,
  files: readonly string[] = COPIED_FILES,
): Promise<string[]> {
  const copied: string[] = [];
  for (const f of files) {
    if (await exists(join(from, f))) {
      await copyFile(join(from, f), join(to, f));
      copied.push(f);
    }
  }
  return copied;
}

/**
 * Writes a complete HF model folder at `outDir`, atomically: the tensors `entries` as (sharded)
 * safetensors, config.json from `sourceDir` with its dtype set to the tensors' dtype, and the
 * tokenizer and generation files of `sourceDir`. With `replace`, an existing folder is replaced
 * (the new one is complete before the old one goes); otherwise it must not exist or be empty.
 * Returns the file names written.
 */
export async function writeModelFolder(
  outDir: string,
  entries: SafetensorsEntry[],
  sourceDir: string,
  opts: { maxShardBytes?: number; replace?: boolean } = {},
): Promise<string[]> {
  const rawConfig = (await readJsonFile(join(sourceDir, 'config.json'))) as Record<string, unknown>;
  const outDtypes = new Set(entries.map((e) => e.dtype));
  const written: string[] = [];
  await writeFolderAtomic(
    outDir,
    async (tmp) => {
      const files = await writeShardedSafetensors(tmp, entries, {
        maxShardBytes: opts.maxShardBytes ?? 5e9,
        metadata: { format: 'pt' },
      });
      written.push(...files.map((f) => basename(f)));
      const outConfig = { ...rawConfig };
      if (outDtypes.size === 1) {
        const only = [...outDtypes][0] as 'F32' | 'BF16' | 'F16';
        if ('dtype' in outConfig || !('torch_dtype' in outConfig)) outConfig['dtype'] = TORCH_DTYPE[only];
        if ('torch_dtype' in outConfig) outConfig['torch_dtype'] = TORCH_DTYPE[only];
      }
      await writeFileAtomic(join(tmp, 'config.json'), `${JSON.stringify(outConfig, null, 2)}\n`);
      written.push('config.json', ...(await copyModelSideFiles(sourceDir, tmp)));
    },
    { replace: opts.replace ?? false },
  );
  return written;
}

/**
 * Merges an adapter into the base model in `modelDir` and writes the merged model to `outDir`
 * (safetensors, config.json, tokenizer and generation files). The adapter is a PEFT adapter folder,
 * an adapter in memory, or a model whose installed LoRA is used (the base weights are always read
 * from `modelDir`, in full precision, even when the model runs NF4).
 */
export async function exportMerged(
  adapterSource: string | LoraAdapter | { adapter(): Promise<LoraAdapter> },
  modelDir: string,
  outDir: string,
  opts: ExportOptions = {},
): Promise<{ files: string[] }> {
  const config = await loadLlamaConfig(modelDir);
  // A model (it has an adapter() method) is told apart from an adapter by that method: LlamaModel
  // also has a `weights` field (its base weights), so testing for `weights` took the model for an
  // adapter.
  const adapter =
    typeof adapterSource === 'string'
      ? await readAdapter(adapterSource)
      : 'adapter' in adapterSource && typeof adapterSource.adapter === 'function'
        ? await adapterSource.adapter()
        : (adapterSource as LoraAdapter);
  validateAdapterAgainstModel(
    adapter.config,
    config,
    adapter.weights,
    typeof adapterSource === 'string' ? adapterSource : undefined,
  );
  if (typeof adapterSource === 'string') checkAdapterBase(adapter.config, adapterSource, modelDir, 'full');
  const scale = scaling(adapter.config);
  const adapterFile = typeof adapterSource === 'string' ? adapterSource : 'the adapter';
  const dtypeOpt = opts.dtype ?? 'source';
  const ckpt = await Checkpoint.open(modelDir);
  const written: string[] = [];
  try {
    checkCheckpoint(ckpt, config);
    const adapted = new Map<string, LoraPair>();
    for (let l = 0; l < config.numHiddenLayers; l++) {
      for (const mod of LINEAR_MODULES) {
        const pair = adapter.weights.get(loraKey(l, mod));
        if (pair) adapted.set(linearWeightName(l, mod), pair);
      }
    }
    const entries: SafetensorsEntry[] = [];
    for (const name of ckpt.names()) {
      if (config.tieWordEmbeddings && name === 'lm_head.weight') continue; // tied: HF does not save it
      const src = ckpt.dtype(name);
      if (src !== 'F32' && src !== 'BF16' && src !== 'F16') {
        throw new InputError(`tensor '${name}' has dtype ${src}; only F32, BF16 and F16 checkpoints can be exported`, {
          file: ckpt.fileOf(name),
        });
      }
      const dtype: WritableDtype =
        dtypeOpt === 'source' ? src : dtypeOpt === 'f32' ? 'F32' : dtypeOpt === 'bf16' ? 'BF16' : 'F16';
      const pair = adapted.get(name);
      entries.push({
        name,
        dtype,
        shape: ckpt.shape(name),
        data: async () => {
          // Every tensor passes through the CPU here, so it is checked here: a NaN or an overflow
          // aborts the export (the temp folder is removed) instead of landing in the merged model.
          const file = ckpt.fileOf(name);
          if (!pair && dtype === src && src !== 'F32') {
            const bits = await ckpt.readU16(name); // untouched bits
            const bad = nonFiniteCountBits16(bits, src);
            if (bad > 0)
              throw new InputError(`${describeNonFinite([{ name, count: bad }])}; the base checkpoint is damaged`, {
                file,
              });
            return bits;
          }
          const w = await ckpt.readF32(name);
          const bad = nonFiniteCount(w);
          if (bad > 0)
            throw new InputError(`${describeNonFinite([{ name, count: bad }])}; the base checkpoint is damaged`, {
              file,
            });
          if (pair) {
            mergeLoraInto(w, pair, scale);
            const merged = nonFiniteCount(w);
            if (merged > 0)
              throw new InputError(
                `merging the adapter overflows: ${describeNonFinite([{ name, count: merged }])} after W + scale·B·A; the adapter's values are too large`,
                { file: adapterFile },
              );
          }
          if (dtype === 'F16' || dtype === 'BF16') {
            const over = overflowCount(w, dtype);
            if (over > 0)
              throw new InputError(
                `tensor '${name}' has ${over} value(s) beyond the ${dtype} range (they would be written as ±Inf); export with --dtype f32${dtype === 'F16' ? ' or bf16' : ''}`,
                { key: 'dtype' },
              );
          }
          return w;
        },
      });
    }
    written.push(
      ...(await writeModelFolder(outDir, entries, modelDir, {
        ...(opts.maxShardBytes !== undefined ? { maxShardBytes: opts.maxShardBytes } : {}),
        replace: opts.replace ?? false,
      })),
    );
  } finally {
    await ckpt.close();
  }
  return { files: written };
}
