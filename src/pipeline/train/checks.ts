// Checks the trainer makes that are not training: the config against the model before anything is
// written, and each step's loss and gradient norm before the step is applied.
import { join } from 'node:path';
import { InputError } from '../../errors.js';
import type { LlamaConfig } from '../../llama/config.js';
import type { ResolvedConfig } from '../config.js';
import type { Batch } from '../data/index.js';

/**
 * data.max_seq_len must fit the model's positions: transformers computes nothing meaningful past
 * max_position_embeddings (RoPE was never trained there), so a longer setting is refused up front.
 */
export function checkSeqLenFitsModel(cfg: ResolvedConfig, model: LlamaConfig): void {
  if (cfg.data.max_seq_len > model.maxPositionEmbeddings) {
    throw new InputError(
      `${cfg.data.max_seq_len} is more than the model's max_position_embeddings (${model.maxPositionEmbeddings}, ${join(cfg.model.path, 'config.json')}); lower data.max_seq_len`,
      { key: 'data.max_seq_len' },
    );
  }
}

/**
 * A micro-batch (or, with batch_size: auto, an effective batch) larger than the training set is
 * refused: every step would silently use the whole set, and memory would be planned for sequences
 * that never come.
 */
export function checkBatchFitsData(cfg: ResolvedConfig, trainExamples: number): void {
  const t = cfg.training;
  const [key, size] =
    t.batch_size === 'auto'
      ? ['training.effective_batch_size', t.effective_batch_size]
      : ['training.batch_size', t.batch_size];
  if (size !== null && size > trainExamples) {
    throw new InputError(
      `${size} is more than the ${trainExamples} training example${trainExamples === 1 ? '' : 's'}; set it to at most ${trainExamples} (or add data)`,
      { key },
    );
  }
}

/**
 * Why a step must not be applied, or null: its loss or global gradient norm is NaN or ±Inf (a NaN
 * or Inf anywhere in the gradients makes the norm non-finite). The trainer stops on it; dynamic
 * loss scaling would instead skip the step and lower the scale.
 */
export function nonFiniteStep(loss: number, gradNorm: number): string | null {
  if (!Number.isFinite(loss)) return `the loss is ${loss}`;
  if (!Number.isFinite(gradNorm)) return `the loss is ${loss.toFixed(4)} but the gradient norm is ${gradNorm}`;
  return null;
}

/** Where the examples of a step came from, for error messages: "train.jsonl rows 3, 17". */
export function describeSources(batches: Batch[]): string {
  const byFile = new Map<string, number[]>();
  for (const b of batches) for (const s of b.sources ?? []) byFile.set(s.file, [...(byFile.get(s.file) ?? []), s.row]);
  return [...byFile]
    .map(
      ([file, rows]) =>
        `${file} row${rows.length === 1 ? '' : 's'} ${[...new Set(rows)].sort((a, b) => a - b).join(', ')}`,
    )
    .join('; ');
}
