// The language-model head and its losses: logits = h·lm_headᵀ on the final-normed hidden states,
// cross-entropy over the positions that have a label. Losses go through the fused head
// (kernels/linear-crossentropy.ts): the logits [N, V] and their gradient are never in memory.
import { isGradEnabled } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { linear, linearCrossEntropy } from '../kernels/index.js';
import { IGNORE_INDEX } from './inputs.js';
import { gatherRows } from './ops.js';

/**
 * The positions that have a label (labels != -100) and their labels. `rows` is null when every
 * position counts; an all-ignored batch keeps one row with label -100 (loss 0, no gradient).
 */
function labelledRows(labels: Int32Array, n: number): { rows: Int32Array | null; kept: Int32Array } {
  if (labels.length !== n) throw new RangeError(`labels has ${labels.length} entries for ${n} positions`);
  const rows: number[] = [];
  for (let i = 0; i < n; i++) if (labels[i] !== IGNORE_INDEX) rows.push(i);
  if (rows.length === n) return { rows: null, kept: labels };
  if (rows.length === 0) rows.push(0);
  return { rows: Int32Array.from(rows), kept: Int32Array.from(rows, (i) => labels[i]!) };
}

function fusedLoss(
  h: Tensor,
  lmHead: Tensor,
  labels: Int32Array,
  reduction: 'mean' | 'none',
): { loss: Tensor; rows: Int32Array | null } {
  const { rows, kept } = labelledRows(labels, h.shape[0]!);
  const rowsT = rows ? Tensor.from(rows, [rows.length]) : undefined;
  const labelsT = Tensor.from(kept, [kept.length]);
  const loss = linearCrossEntropy(h, lmHead, labelsT, {
    ignoreIndex: IGNORE_INDEX,
    reduction,
    ...(rowsT ? { rows: rowsT } : {}),
  });
  rowsT?.dispose(); // backward keeps its own views
  labelsT.dispose();
  return { loss, rows };
}

/** Mean cross-entropy over labels != -100. Scalar [1]. */
export function lmLoss(h: Tensor, lmHead: Tensor, labels: Int32Array): Tensor {
  return fusedLoss(h, lmHead, labels, 'mean').loss;
}

/** NLL of each labelled position ([rows.length], or [N] when `rows` is null); see spreadTokenLosses. */
export function labelledTokenLosses(
  h: Tensor,
  lmHead: Tensor,
  labels: Int32Array,
): { losses: Tensor; rows: Int32Array | null } {
  const { loss, rows } = fusedLoss(h, lmHead, labels, 'none');
  return { losses: loss, rows };
}

/** Spreads labelledTokenLosses' values back to every position [N] (0 where the label is -100). */
export function spreadTokenLosses(values: Float32Array, rows: Int32Array | null, labels: Int32Array): Float32Array {
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
