import { describe, expect, it } from 'vitest';
import { DataLoader, type DataLoaderOptions, makeRng } from '../../../src/pipeline/data/loader.js';
import { type Batch, IGNORE_INDEX, type TokenizedExample } from '../../../src/pipeline/data/types.js';

/** Synthetic example: ids encode (example, position) so we can trace every token; prompt of 2 masked. */
function makeExamples(n: number, seed = 1, minLen = 3, maxLen = 40): TokenizedExample[] {
  const rng = makeRng(seed);
  return Array.from({ length: n }, (_, e) => {
    const len = minLen + Math.floor(rng() * (maxLen - minLen + 1));
    const ids = Int32Array.from({ length: len }, (_, t) => 1000 * (e + 1) + t);
    const labels = new Int32Array(len).fill(IGNORE_INDEX);
    let numTargets = 0;
    for (let t = 1; t + 1 < len; t++) {
      labels[t] = ids[t + 1]!;
      numTargets++;
    }
    return { file: 'x', row: e + 1, task: 'qa', inputIds: ids, labels, numTargets, fullLength: len, truncated: false };
  });
}

const exampleOf = (id: number) => Math.floor(id / 1000) - 1;
const PAD = 0;
const base = (over: Partial<DataLoaderOptions> = {}): DataLoaderOptions => ({
  batchSize: 4,
  maxSeqLen: 64,
  packing: false,
  seed: 7,
  padId: PAD,
  ...over,
});

function examplesIn(b: Batch): number[] {
  const out: number[] = [];
  for (let i = 0; i < b.inputIds.length; i++)
    if (b.positionIds[i] === 0 && b.attentionMask[i] === 1) out.push(exampleOf(b.inputIds[i]!));
  return out;
}

function checkBatchInvariants(b: Batch, examples: TokenizedExample[]): void {
  const T = b.seqLen;
  expect(b.inputIds.length).toBe(b.batchSize * T);
  let targets = 0;
  for (let r = 0; r < b.batchSize; r++) {
    for (let t = 0; t < T; t++) {
      const i = r * T + t;
      if (b.attentionMask[i] === 0) {
        expect(b.segmentIds[i]).toBe(0);
        expect(b.labels[i]).toBe(IGNORE_INDEX);
        expect(b.inputIds[i]).toBe(PAD);
        continue;
      }
      const ex = examples[exampleOf(b.inputIds[i]!)]!;
      const pos = b.positionIds[i]!;
      expect(b.inputIds[i]).toBe(ex.inputIds[pos]);
      const lastOfExample = t + 1 === T || b.segmentIds[i + 1] !== b.segmentIds[i];
      if (lastOfExample)
        expect(b.labels[i]).toBe(IGNORE_INDEX); // never predict across a boundary
      else expect(b.labels[i]).toBe(ex.labels[pos]);
      if (b.labels[i] !== IGNORE_INDEX) {
        targets++;
        expect(b.labels[i]).toBe(b.inputIds[i + 1]); // shifted labels = next token of the same example
        expect(b.segmentIds[i + 1]).toBe(b.segmentIds[i]);
      }
    }
  }
  expect(b.numTargetTokens).toBe(targets);
}

describe('DataLoader (padded, length-bucketed)', () => {
  const examples = makeExamples(103);

  it('visits every example once per epoch, padded to the batch max', () => {
    const dl = new DataLoader(examples, base());
    expect(dl.batchesInEpoch(0)).toBe(26);
    const seen: number[] = [];
    for (let s = 0; s < 26; s++) {
      const b = dl.next();
      checkBatchInvariants(b, examples);
      const lens = examplesIn(b).map((e) => examples[e]!.inputIds.length);
      expect(b.seqLen).toBe(Math.max(...lens));
      expect(b.numExamples).toBe(b.batchSize);
      seen.push(...examplesIn(b));
    }
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 103 }, (_, i) => i));
    expect(dl.epoch).toBe(1);
    expect(dl.position).toBe(0);
  });

  it('length bucketing cuts padding versus plain shuffled batches', () => {
    const pad = (mf: number) => {
      const dl = new DataLoader(examples, base({ megaBatchFactor: mf }));
      let padded = 0;
      for (const b of dl.epochBatches(0)) padded += b.batchSize * b.seqLen - b.attentionMask.reduce((a, x) => a + x, 0);
      return padded;
    };
    expect(pad(50)).toBeLessThan(pad(1) / 3);
  });

  it('order is a function of the seed and epoch', () => {
    const ids = (seed: number, epoch: number) =>
      [...new DataLoader(examples, base({ seed })).epochBatches(epoch)].map(examplesIn);
    expect(ids(7, 0)).toEqual(ids(7, 0));
    expect(ids(7, 0)).not.toEqual(ids(8, 0));
    expect(ids(7, 0)).not.toEqual(ids(7, 1));
  });

  it('evaluation order (shuffle off) is fixed and complete', () => {
    const dl = new DataLoader(examples, base({ shuffle: false }));
    const all = [...dl.epochBatches(0)].flatMap(examplesIn);
    expect(new Set(all).size).toBe(103);
    expect([...dl.epochBatches(3)].flatMap(examplesIn)).toEqual(all);
  });

  it('dropLast drops the short batch', () => {
    const dl = new DataLoader(examples, base({ dropLast: true }));
    expect(dl.batchesInEpoch(0)).toBe(25);
    for (const b of dl.epochBatches(0)) expect(b.batchSize).toBe(4);
  });
});

describe('DataLoader resume', () => {
  const examples = makeExamples(37, 3);
  for (const packing of [false, true]) {
    it(`restored state replays exactly the same batches (packing=${packing})`, () => {
      const opts = base({ packing, maxSeqLen: 48 });
      const a = new DataLoader(examples, opts);
      const per = a.batchesInEpoch(0);
      const steps = per + 3; // resume point inside epoch 1
      for (let i = 0; i < steps; i++) a.next();
      const saved = JSON.parse(JSON.stringify(a.state()));
      const expected = Array.from({ length: per * 2 }, () => a.next());
      const b = new DataLoader(examples, opts);
      b.restore(saved);
      const got = Array.from({ length: per * 2 }, () => b.next());
      expect(got.map((x) => Array.from(x.inputIds))).toEqual(expected.map((x) => Array.from(x.inputIds)));
      expect(got.map((x) => Array.from(x.labels))).toEqual(expected.map((x) => Array.from(x.labels)));
      expect(b.state()).toEqual(a.state());
    });
  }

  it('refuses a state saved for different data or settings', () => {
    const a = new DataLoader(examples, base());
    a.next();
    const s = a.state();
    expect(() => new DataLoader(makeExamples(37, 4), base()).restore(s)).toThrow(/dataset fingerprint/);
    expect(() => new DataLoader(examples, base({ batchSize: 8 })).restore(s)).toThrow(/batch size 4 vs 8/);
    expect(() => new DataLoader(examples, base({ seed: 1 })).restore(s)).toThrow(/seed 7 vs 1/);
  });
});

describe('DataLoader (packed)', () => {
  const examples = makeExamples(120, 5, 3, 30);

  it('packs examples up to maxSeqLen with restarting positions and segment ids', () => {
    const dl = new DataLoader(examples, base({ packing: true, maxSeqLen: 64, batchSize: 3 }));
    const seen: number[] = [];
    let rows = 0;
    for (const b of dl.epochBatches(0)) {
      checkBatchInvariants(b, examples);
      expect(b.seqLen).toBeLessThanOrEqual(64);
      rows += b.batchSize;
      for (let r = 0; r < b.batchSize; r++) {
        let seg = 0;
        for (let t = 0; t < b.seqLen; t++) {
          const i = r * b.seqLen + t;
          if (b.attentionMask[i] === 0) break;
          if (b.positionIds[i] === 0) {
            seg++;
            expect(b.segmentIds[i]).toBe(seg);
          } else {
            expect(b.positionIds[i]).toBe(b.positionIds[i - 1]! + 1);
            expect(b.segmentIds[i]).toBe(seg);
          }
        }
      }
      seen.push(...examplesIn(b));
    }
    expect(seen.sort((a, b) => a - b)).toEqual(Array.from({ length: 120 }, (_, i) => i));
    const tokens = examples.reduce((a, e) => a + e.inputIds.length, 0);
    expect(rows).toBeLessThan(120 / 2); // several examples per row
    expect(rows).toBeGreaterThanOrEqual(Math.ceil(tokens / 64));
  });

  it('padToMaxSeqLen gives fixed shapes', () => {
    const dl = new DataLoader(examples, base({ packing: true, maxSeqLen: 64, padToMaxSeqLen: true }));
    for (const b of dl.epochBatches(0)) expect(b.seqLen).toBe(64);
  });

  it('cuts an example longer than maxSeqLen and masks its last label', () => {
    const long = makeExamples(2, 9, 50, 50);
    const dl = new DataLoader(long, base({ maxSeqLen: 16 }));
    const b = dl.next();
    expect(b.seqLen).toBe(16);
    checkBatchInvariants(b, long);
  });
});
