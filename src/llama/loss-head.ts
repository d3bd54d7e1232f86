// The language-model head and its losses: logits = h·lm_headᵀ on the final-normed hidden states,
// cross-entropy over the positions that have a label.
import { isGradEnabled } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { crossEntropy, crossEntropyPerRow, linear } from '../kernels/index.js';
import { IGNORE_INDEX } from './inputs.js';
import { gatherRows } from './ops.js';

/**
 * Logits only for the positions that have a label (labels != -100): the hidden rows are gathered
 * first, so the [N, V] lm_head product and its gradient shrink to the counted rows (prompt tokens
 * under response-only loss, the last token of each example, padding). `rows` is null when every
 * position counts; an all-ignored batch keeps one row with label -100 (loss 0, no gradient).
 */
export function labelledLogits(h: Tensor, lmHead: Tensor, labels: Int32Array): { logits: Tensor; labels: Int32Array; rows: number[] | null } {
  const n = h.shape[0]!;
  if (labels.length !== n) throw new RangeError(`labels has ${labels.length} entries for ${n} positions`);
  const rows: number[] = [];
  for (let i = 0; i < n; i++) if (labels[i] !== IGNORE_INDEX) rows.push(i);
  if (rows.length === n) return { logits: linear(h, lmHead), labels, rows: null };
  if (rows.length === 0) rows.push(0);
  const picked = gatherRows(h, rows);
  return { logits: linear(picked, lmHead), labels: Int32Array.from(rows, (i) => labels[i]!), rows };
}

/** Mean cross-entropy over labels != -100. Scalar [1]. */
export function lmLoss(h: Tensor, lmHead: Tensor, labels: Int32Array): Tensor {
  const { logits, labels: kept } = labelledLogits(h, lmHead, labels);
  return crossEntropy(logits, Tensor.from(kept, [kept.length]), { ignoreIndex: IGNORE_INDEX });
}

/** NLL of each labelled row ([rows.length], or [N] when `rows` is null); see labelledLogits. */
export function labelledTokenLosses(h: Tensor, lmHead: Tensor, labels: Int32Array): { losses: Tensor; rows: number[] | null } {
  const { logits, labels: kept, rows } = labelledLogits(h, lmHead, labels);
  return { losses: crossEntropyPerRow(logits, Tensor.from(kept, [kept.length])), rows };
}

/** Spreads labelledTokenLosses' values back to every position [N] (0 where the label is -100). */
export function spreadTokenLosses(values: Float32Array, rows: number[] | null, labels: Int32Array): Float32Array {
  if (!rows) return values;
  const out = new Float32Array(labels.length);
  rows.forEach((r, j) => {
    if (labels[r] !== IGNORE_INDEX) out[r] = values[j]!;
  });
  return out;
}

/** Logits [B, V] of the last position of each of B rows of T positions (the head runs on B rows, not N). */
export function lastPositionLogits(h: Tensor, lmHead: Tensor, batchSize: number, seqLen: number): Tensor {
  const rows = Array.from({ length: batchSize }, (_, b) => b * seqLen + seqLen - 1);
  const last = gatherRows(h, rows);
  const out = linear(last, lmHead);
  if (!isGradEnabled()) last.dispose();
  return out;
}
