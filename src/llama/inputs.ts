// What the model takes: token batches for forward passes and, for losses, already-shifted labels.
import { InputError } from '../errors.js';

export const IGNORE_INDEX = -100;

/** A forward batch, row-major [batchSize, seqLen]. */
export interface ForwardInput {
  inputIds: Int32Array;
  batchSize: number;
  seqLen: number;
  /** RoPE positions; default 0..T-1 in every row. Packing restarts them per example. */
  positionIds?: Int32Array;
  /** Packing: tokens attend only to earlier tokens with the same segment id. */
  segmentIds?: Int32Array;
}

/** A loss batch: `labels` are ALREADY SHIFTED (labels[i] = target of position i, or -100). */
export interface LossInput extends ForwardInput {
  labels: Int32Array;
}

/** HF's in-model shift: target of position t is ids[t+1] of the same row; the last is ignored. */
export function shiftLabels(ids: Int32Array, batchSize: number, seqLen: number): Int32Array {
  const out = new Int32Array(batchSize * seqLen).fill(IGNORE_INDEX);
  for (let b = 0; b < batchSize; b++)
    for (let t = 0; t + 1 < seqLen; t++) out[b * seqLen + t] = ids[b * seqLen + t + 1]!;
  return out;
}

/** Shapes agree with the batch and every id is inside the vocabulary. */
export function checkForwardInput(inp: ForwardInput, vocabSize: number): void {
  const n = inp.batchSize * inp.seqLen;
  if (!(inp.batchSize > 0 && inp.seqLen > 0))
    throw new RangeError(`batch [${inp.batchSize}, ${inp.seqLen}] must be non-empty`);
  if (inp.inputIds.length !== n)
    throw new RangeError(`inputIds has ${inp.inputIds.length} ids, batch is ${inp.batchSize}x${inp.seqLen}`);
  for (const [name, a] of [
    ['positionIds', inp.positionIds],
    ['segmentIds', inp.segmentIds],
  ] as const) {
    if (a && a.length !== n)
      throw new RangeError(`${name} has ${a.length} entries, batch is ${inp.batchSize}x${inp.seqLen}`);
  }
  for (let i = 0; i < n; i++) {
    const id = inp.inputIds[i]!;
    if (id < 0 || id >= vocabSize)
      throw new InputError(`token id ${id} at position ${i} is outside the vocabulary (size ${vocabSize})`);
  }
}
