// Seeded, resumable batching.
//
// The order of epoch e is a pure function of (seed, e, the examples): resuming from a saved
// `state()` reproduces exactly the batches an uninterrupted run would have seen.
//
// Without packing: examples are shuffled, cut into mega-batches of `batchSize × megaBatchFactor`,
// sorted by length inside each mega-batch (so batches hold similar lengths and little padding),
// cut into batches, and the batch order is shuffled. Each batch is padded to its longest example.
//
// With packing: shuffled examples are packed first-fit-decreasing (inside windows of the same
// size) into rows of at most maxSeqLen tokens; rows are shuffled and grouped into batches. Inside a
// row positions restart at 0 and segmentIds number the examples (see Batch in ./types.ts).
import { InputError } from '../../errors.js';
import { shiftLabels } from '../../llama/inputs.js';
import type { Batch, TokenizedExample } from './types.js';
import { IGNORE_INDEX } from './types.js';

export interface DataLoaderOptions {
  batchSize: number;
  maxSeqLen: number;
  packing: boolean;
  seed: number;
  /** Shuffle (default true; use false for evaluation: fixed order, still length-bucketed). */
  shuffle?: boolean;
  /** Padding token id (labels on padding are -100 whatever it is). */
  padId: number;
  /** Batches per mega-batch for length bucketing / packing windows (default 50). */
  megaBatchFactor?: number;
  /** Drop the last incomplete batch of an epoch (default false). */
  dropLast?: boolean;
  /** Pad every batch to maxSeqLen instead of its longest row (fixed shapes; default false). */
  padToMaxSeqLen?: boolean;
}

export interface DataLoaderState {
  version: 1;
  seed: number;
  /** 0-based epoch of the next batch. */
  epoch: number;
  /** Index within that epoch of the next batch. */
  position: number;
  /** Identifies the examples (count, order and token ids); restore refuses a different dataset. */
  fingerprint: string;
  numExamples: number;
  packing: boolean;
  batchSize: number;
  maxSeqLen: number;
}

/** splitmix32-style mixer. */
function mix32(x: number): number {
  x = (x + 0x9e3779b9) >>> 0;
  x = Math.imul(x ^ (x >>> 16), 0x85ebca6b);
  x = Math.imul(x ^ (x >>> 13), 0xc2b2ae35);
  return (x ^ (x >>> 16)) >>> 0;
}

/** Deterministic PRNG (mulberry32). */
export function makeRng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffleInPlace<T>(arr: T[], rng: () => number): T[] {
  for (let i = arr.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    [arr[i], arr[j]] = [arr[j]!, arr[i]!];
  }
  return arr;
}

export function fingerprintExamples(examples: readonly TokenizedExample[]): string {
  let h1 = 0x811c9dc5;
  let h2 = 0x12345678;
  const add = (v: number) => {
    h1 = Math.imul(h1 ^ v, 0x01000193) >>> 0;
    h2 = mix32(h2 ^ v);
  };
  add(examples.length);
  for (const ex of examples) {
    add(ex.inputIds.length);
    for (let i = 0; i < ex.inputIds.length; i++) add(ex.inputIds[i]!);
    add(ex.numTargets);
  }
  return h1.toString(16).padStart(8, '0') + h2.toString(16).padStart(8, '0');
}

/** A batch plan: batches → rows → example indices. */
type Plan = number[][][];

export class DataLoader {
  readonly opts: Required<DataLoaderOptions>;
  readonly fingerprint: string;
  private _epoch = 0;
  private _position = 0;
  private planCache: { epoch: number; plan: Plan } | null = null;

  constructor(
    readonly examples: readonly TokenizedExample[],
    opts: DataLoaderOptions,
  ) {
    if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1)
      throw new InputError(`batch size must be a positive integer, got ${opts.batchSize}`, {
        key: 'training.batch_size',
      });
    if (examples.length === 0) throw new InputError('no examples to load (the dataset is empty after validation)');
    this.opts = { shuffle: true, megaBatchFactor: 50, dropLast: false, padToMaxSeqLen: false, ...opts };
    this.fingerprint = fingerprintExamples(examples);
    if (this.opts.dropLast && this.batchesInEpoch(0) === 0) {
      throw new InputError(`fewer examples than one batch (${examples.length} < ${opts.batchSize}) with dropLast`, {
        key: 'training.batch_size',
      });
    }
  }

  get epoch(): number {
    return this._epoch;
  }
  get position(): number {
    return this._position;
  }

  private len(i: number): number {
    return Math.min(this.examples[i]!.inputIds.length, this.opts.maxSeqLen);
  }

  /** The deterministic batch plan of an epoch. */
  private plan(epoch: number): Plan {
    if (this.planCache?.epoch === epoch) return this.planCache.plan;
    const { batchSize, shuffle, megaBatchFactor, packing, maxSeqLen, dropLast, seed } = this.opts;
    const rng = makeRng(mix32(seed >>> 0) ^ mix32((epoch + 1) * 0x27d4eb2d));
    const order = Array.from({ length: this.examples.length }, (_, i) => i);
    if (shuffle) shuffleInPlace(order, rng);
    const window = batchSize * megaBatchFactor;
    const byLenDesc = (a: number, b: number) => this.len(b) - this.len(a) || a - b;
    const rows: number[][] = [];
    const batches: number[][][] = [];
    if (packing) {
      for (let s = 0; s < order.length; s += window) {
        const chunk = order.slice(s, s + window).sort(byLenDesc);
        const bins: { free: number; items: number[] }[] = [];
        for (const i of chunk) {
          const l = this.len(i);
          const bin = bins.find((b) => b.free >= l);
          if (bin) {
            bin.items.push(i);
            bin.free -= l;
          } else bins.push({ free: maxSeqLen - l, items: [i] });
        }
        rows.push(...bins.map((b) => b.items));
      }
      if (shuffle) shuffleInPlace(rows, rng);
      for (let s = 0; s < rows.length; s += batchSize) batches.push(rows.slice(s, s + batchSize));
    } else {
      for (let s = 0; s < order.length; s += window) {
        const chunk = order.slice(s, s + window).sort(byLenDesc);
        for (let b = 0; b < chunk.length; b += batchSize) batches.push(chunk.slice(b, b + batchSize).map((i) => [i]));
      }
      // Keep a possible short batch last, shuffle the full ones.
      const last = batches.length > 0 && batches[batches.length - 1]!.length < batchSize ? batches.pop()! : null;
      if (shuffle) shuffleInPlace(batches, rng);
      if (last) batches.push(last);
    }
    if (dropLast && batches.length > 0 && batches[batches.length - 1]!.length < batchSize) batches.pop();
    this.planCache = { epoch, plan: batches };
    return batches;
  }

  /** Number of batches in epoch `epoch` (constant without packing; may vary by a few with packing). */
  batchesInEpoch(epoch: number): number {
    return this.plan(epoch).length;
  }

  /** Total batches over `epochs` epochs starting at epoch 0. */
  totalBatches(epochs: number): number {
    let n = 0;
    for (let e = 0; e < epochs; e++) n += this.batchesInEpoch(e);
    return n;
  }

  /** The next batch, advancing (and rolling over to the next epoch at the end of one). */
  next(): Batch {
    let plan = this.plan(this._epoch);
    if (this._position >= plan.length) {
      this._epoch++;
      this._position = 0;
      plan = this.plan(this._epoch);
    }
    const batch = this.materialize(plan[this._position]!);
    this._position++;
    if (this._position >= plan.length) {
      this._epoch++;
      this._position = 0;
    }
    return batch;
  }

  /** All batches of one epoch in order, without touching the loader's position (for evaluation). */
  *epochBatches(epoch = 0): Generator<Batch> {
    const plan = this.plan(epoch);
    for (const b of plan) yield this.materialize(b);
  }

  state(): DataLoaderState {
    return {
      version: 1,
      seed: this.opts.seed,
      epoch: this._epoch,
      position: this._position,
      fingerprint: this.fingerprint,
      numExamples: this.examples.length,
      packing: this.opts.packing,
      batchSize: this.opts.batchSize,
      maxSeqLen: this.opts.maxSeqLen,
    };
  }

  /** Continue from a saved state; refuses one saved for different data or batching settings. */
  restore(s: DataLoaderState): void {
    const mismatch: string[] = [];
    if (s.version !== 1) mismatch.push(`version ${String(s.version)} (expected 1)`);
    if (s.fingerprint !== this.fingerprint)
      mismatch.push(
        `dataset fingerprint ${s.fingerprint} vs ${this.fingerprint} now (${s.numExamples} vs ${this.examples.length} examples)`,
      );
    if (s.seed !== this.opts.seed) mismatch.push(`seed ${s.seed} vs ${this.opts.seed}`);
    if (s.packing !== this.opts.packing) mismatch.push(`packing ${s.packing} vs ${this.opts.packing}`);
    if (s.batchSize !== this.opts.batchSize) mismatch.push(`batch size ${s.batchSize} vs ${this.opts.batchSize}`);
    if (s.maxSeqLen !== this.opts.maxSeqLen) mismatch.push(`max_seq_len ${s.maxSeqLen} vs ${this.opts.maxSeqLen}`);
    if (mismatch.length > 0) {
      throw new InputError(
        `cannot resume the data order: the checkpoint was saved with different data/settings: ${mismatch.join('; ')}`,
      );
    }
    if (
      !Number.isInteger(s.epoch) ||
      s.epoch < 0 ||
      !Number.isInteger(s.position) ||
      s.position < 0 ||
      s.position > this.batchesInEpoch(s.epoch)
    ) {
      throw new InputError(`cannot resume the data order: position ${s.position} of epoch ${s.epoch} is out of range`);
    }
    this._epoch = s.epoch;
    this._position = s.position;
  }

  private materialize(rows: number[][]): Batch {
    const B = rows.length;
    const rowLen = rows.map((r) => r.reduce((a, i) => a + this.len(i), 0));
    const T = this.opts.padToMaxSeqLen ? this.opts.maxSeqLen : Math.max(...rowLen);
    const inputIds = new Int32Array(B * T).fill(this.opts.padId);
    const labels = new Int32Array(B * T).fill(IGNORE_INDEX);
    const positionIds = new Int32Array(B * T);
    const segmentIds = new Int32Array(B * T);
    const attentionMask = new Uint8Array(B * T);
    let numTargetTokens = 0;
    let numExamples = 0;
    const sources: { file: string; row: number }[] = [];
    rows.forEach((row, b) => {
      let off = b * T;
      row.forEach((idx, seg) => {
        const ex = this.examples[idx]!;
        sources.push({ file: ex.file, row: ex.row });
        const l = this.len(idx);
        inputIds.set(ex.inputIds.subarray(0, l), off);
        labels.set(ex.labels.subarray(0, l), off);
        // An example cut here must not predict the token after the cut (or the next example).
        labels[off + l - 1] = IGNORE_INDEX;
        for (let t = 0; t < l; t++) {
          positionIds[off + t] = t;
          segmentIds[off + t] = seg + 1;
          attentionMask[off + t] = 1;
          if (labels[off + t]! !== IGNORE_INDEX) numTargetTokens++;
        }
        off += l;
        numExamples++;
      });
    });
    return {
      inputIds,
      labels,
      positionIds,
      segmentIds,
      attentionMask,
      batchSize: B,
      seqLen: T,
      numTargetTokens,
      numExamples,
      sources,
    };
  }
}

/**
 * A batch of `batchSize` whole rows of `seqLen` tokens (`ids`, row after row): one example per row,
 * no padding, every next token a target. The shape of a language-modelling batch without packing,
 * used where the tokens are given rather than drawn from a dataset (the memory estimate, trial
 * steps, benchmarks).
 */
export function wholeRowsBatch(ids: Int32Array, batchSize: number, seqLen: number, sources?: Batch['sources']): Batch {
  const n = batchSize * seqLen;
  if (ids.length !== n) throw new RangeError(`wholeRowsBatch: ${ids.length} ids for ${batchSize} × ${seqLen} tokens`);
  return {
    inputIds: ids,
    labels: shiftLabels(ids, batchSize, seqLen),
    positionIds: Int32Array.from({ length: n }, (_, i) => i % seqLen),
    segmentIds: new Int32Array(n).fill(1),
    attentionMask: new Uint8Array(n).fill(1),
    batchSize,
    seqLen,
    numTargetTokens: batchSize * (seqLen - 1),
    numExamples: batchSize,
    ...(sources ? { sources } : {}),
  };
}
