// Classification metrics (FinGPT label extraction, sklearn-style F1) and the embedding hooks with a
// deterministic fake provider.
import { describe, expect, it } from 'vitest';
import {
  classificationReport,
  normalizeGeneratedLabel,
  parseGoldLabel,
} from '../../../src/pipeline/eval/classification.js';
import type { SentimentLabel } from '../../../src/pipeline/eval/lexicon.js';
import {
  bertScore,
  cosine,
  type EmbeddingProvider,
  embeddingCosine,
  greedyMatch,
} from '../../../src/pipeline/eval/semantic.js';

describe('label extraction (FinGPT rule)', () => {
  it('finds the label word in generated text, positive first', () => {
    expect(normalizeGeneratedLabel('Answer: Positive.')).toBe('positive');
    expect(normalizeGeneratedLabel('The sentiment is negative')).toBe('negative');
    expect(normalizeGeneratedLabel('not positive but negative')).toBe('positive');
    expect(normalizeGeneratedLabel('I am unsure')).toBe('neutral');
    expect(parseGoldLabel(' Neutral ')).toBe('neutral');
    expect(parseGoldLabel('bullish')).toBeUndefined();
  });
});

describe('classificationReport', () => {
  it('by hand (values as sklearn.metrics would give)', () => {
    const gold: SentimentLabel[] = [
      'positive',
      'positive',
      'positive',
      'negative',
      'negative',
      'neutral',
      'neutral',
      'neutral',
      'neutral',
      'neutral',
    ];
    const pred: SentimentLabel[] = [
      'positive',
      'positive',
      'neutral',
      'negative',
      'positive',
      'neutral',
      'neutral',
      'neutral',
      'negative',
      'neutral',
    ];
    const r = classificationReport(gold, pred);
    // confusion rows gold (neg, neu, pos), columns predicted
    expect(r.confusion).toEqual([
      [1, 0, 1],
      [1, 4, 0],
      [0, 1, 2],
    ]);
    expect(r.accuracy).toBeCloseTo(0.7, 15);
    // neg: P 1/2 R 1/2 F 1/2; neu: P 4/5 R 4/5 F 4/5; pos: P 2/3 R 2/3 F 2/3
    expect(r.perLabel.negative.f1).toBeCloseTo(0.5, 15);
    expect(r.perLabel.neutral.f1).toBeCloseTo(0.8, 15);
    expect(r.perLabel.positive.f1).toBeCloseTo(2 / 3, 15);
    expect(r.macroF1).toBeCloseTo((0.5 + 0.8 + 2 / 3) / 3, 15);
    expect(r.weightedF1).toBeCloseTo((2 * 0.5 + 5 * 0.8 + 3 * (2 / 3)) / 10, 15);
  });
  it('macro average uses only labels present in gold or predictions (sklearn default)', () => {
    const r = classificationReport(['positive', 'negative'], ['positive', 'positive']);
    expect(r.labels).toEqual(['negative', 'positive']);
    // pos: P 1/2, R 1 -> F 2/3; neg: 0.
    expect(r.macroF1).toBeCloseTo(1 / 3, 15);
    expect(r.weightedF1).toBeCloseTo(1 / 3, 15);
  });
});

/** Deterministic fake: each token maps to a pseudo-random unit-ish vector from a string hash. */
class FakeProvider implements EmbeddingProvider {
  constructor(private readonly dim = 16) {}
  vec(token: string): Float32Array {
    let h = 2166136261;
    for (const ch of token) h = Math.imul(h ^ ch.charCodeAt(0), 16777619) >>> 0;
    const v = new Float32Array(this.dim);
    for (let i = 0; i < this.dim; i++) {
      h = Math.imul(h ^ (h >>> 15), 2246822519) >>> 0;
      v[i] = (h / 4294967296) * 2 - 1;
    }
    return v;
  }
  async embedTokens(text: string) {
    const tokens = text.toLowerCase().split(/\s+/).filter(Boolean);
    return { tokens, vectors: tokens.map((t) => this.vec(t)) };
  }
  async embedMean(text: string) {
    const { vectors } = await this.embedTokens(text);
    const m = new Float32Array(this.dim);
    for (const v of vectors) for (let i = 0; i < this.dim; i++) m[i]! += v[i]! / vectors.length;
    return m;
  }
}

describe('semantic similarity hooks', () => {
  const p = new FakeProvider();
  it('cosine basics', () => {
    expect(cosine(new Float32Array([1, 0]), new Float32Array([0, 2]))).toBe(0);
    expect(cosine(new Float32Array([1, 2]), new Float32Array([2, 4]))).toBeCloseTo(1, 6);
    expect(cosine(new Float32Array([0, 0]), new Float32Array([1, 1]))).toBe(0);
    expect(() => cosine(new Float32Array(2), new Float32Array(3))).toThrow(/lengths differ/);
  });
  it('mean-pooled cosine: 1 for the same bag of tokens, lower otherwise', async () => {
    expect(await embeddingCosine(p, 'revenue rose sharply', 'sharply rose revenue')).toBeCloseTo(1, 6);
    expect(await embeddingCosine(p, 'revenue rose sharply', 'the weather is cold')).toBeLessThan(0.9);
  });
  it('BERTScore greedy matching: identical text gives 1, a subset has recall < precision', async () => {
    const same = await bertScore(p, 'net income rose', 'net income rose');
    expect(same.f1).toBeCloseTo(1, 6);
    const subset = await bertScore(p, 'net income', 'net income rose sharply');
    expect(subset.precision).toBeCloseTo(1, 6);
    expect(subset.recall).toBeLessThan(subset.precision);
    expect(subset.f1).toBeCloseTo((2 * subset.precision * subset.recall) / (subset.precision + subset.recall), 12);
  });
  it('greedy matching by hand on orthogonal vectors', () => {
    const e = (i: number) => {
      const v = new Float32Array(3);
      v[i] = 1;
      return v;
    };
    // pred {e0, e1}, ref {e0, e2}: P = (1 + 0)/2, R = (1 + 0)/2.
    expect(greedyMatch([e(0), e(1)], [e(0), e(2)])).toEqual({ precision: 0.5, recall: 0.5, f1: 0.5 });
    // pred {e0}, ref {e0, e0, e1}: P = 1, R = 2/3.
    const r = greedyMatch([e(0)], [e(0), e(0), e(1)]);
    expect(r.precision).toBe(1);
    expect(r.recall).toBeCloseTo(2 / 3, 12);
    expect(greedyMatch([], [e(0)]).f1).toBe(0);
  });
});
