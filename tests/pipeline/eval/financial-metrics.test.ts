// Numeric fidelity, hallucinated numbers, lexicon sentiment, term coverage.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import type { SentimentLabel } from '../../../src/pipeline/eval/lexicon.js';
import { extractNumbers, numberLikeJunk } from '../../../src/pipeline/eval/numbers.js';
import {
  hallucinatedNumberRate,
  hallucinatedNumbersDetail,
  numericFidelity,
  numericFidelityDetail,
} from '../../../src/pipeline/eval/numeric.js';
import { lexiconLabelAccuracy, lexiconSentiment, sentimentAgreement } from '../../../src/pipeline/eval/sentiment.js';
import { FINANCIAL_TERMS, financialTermsIn, termCoverage } from '../../../src/pipeline/eval/terms.js';

const values = (s: string) => extractNumbers(s).map((m) => [m.kind, m.value]);

describe('number extraction and normalization', () => {
  it('currency amounts with magnitudes normalize to the same value', () => {
    for (const s of ['$1.2B', '$1.2 billion', '1,200 million', 'USD 1.2bn', 'US$ 1,200mm', '1.2 billions']) {
      const v = values(s);
      expect(v, s).toHaveLength(1);
      expect(v[0]![0], s).toBe('quantity');
      expect(v[0]![1], s).toBeCloseTo(1.2e9, 0);
    }
  });
  it('percentages, percentage points and basis points are ratios', () => {
    for (const s of [
      '180 bps',
      '1.8%',
      '1.8 percent',
      '1.8 per cent',
      '1.8 percentage points',
      '180 basis points',
      '180bp',
    ]) {
      const v = values(s);
      expect(v, s).toHaveLength(1);
      expect(v[0]![0], s).toBe('ratio');
      expect(v[0]![1], s).toBeCloseTo(0.018, 12);
    }
  });
  it('skips numbers glued to letters (Q3, FY2024, 3rd) and keeps sentence-final numbers', () => {
    expect(values('In Q3 of FY2024, the 3rd straight beat, EPS was 1.98.')).toEqual([['quantity', 1.98]]);
    expect(values('50k units and $300M, not 5 m')).toEqual([
      ['quantity', 50000],
      ['quantity', 3e8],
      ['quantity', 5],
    ]);
  });
  it('drops the sign', () => {
    expect(values('-3% and down 3%')).toEqual([
      ['ratio', 0.03],
      ['ratio', 0.03],
    ]);
  });
});

describe('numeric fidelity', () => {
  it('recovers differently written amounts', () => {
    const ref = 'Revenue rose 12% to $1.2 billion and margin expanded 180 bps.';
    expect(
      numericFidelity('Sales hit 1,200 million dollars (+12 percent); margins up 1.8 percentage points.', ref),
    ).toBe(1);
    const d = numericFidelityDetail('Revenue reached $1.2B, up 11%.', ref);
    expect(d.score).toBeCloseTo(1 / 3, 15);
    expect(d.missing.map((m) => m.text)).toEqual(['12%', '180 bps']);
  });
  it('is null when the reference has no numbers, and counts repeated numbers once', () => {
    expect(numericFidelity('anything 5', 'Guidance was reaffirmed.')).toBeNull();
    expect(numericFidelity('5%', '5% and again 5 percent')).toBe(1);
  });
  it('does not confuse 1.8 with 1.8%', () => {
    expect(numericFidelity('ratio of 1.8', 'margin of 1.8%')).toBe(0);
  });
});

describe('hallucinated-number rate', () => {
  const source = 'Revenue was $6.53 billion, up 13% from $5.78 billion; EPS $0.27.';
  it('counts prediction numbers found in neither source nor reference', () => {
    const d = hallucinatedNumbersDetail(
      'Revenue of $6.53B (+13%) and EPS of $0.31 on 4% volume growth.',
      'Revenue rose 13%.',
      source,
    );
    expect(d.rate).toBeCloseTo(2 / 4, 15);
    expect(d.hallucinated.map((m) => m.text)).toEqual(['$0.31', '4%']);
  });
  it('uses the reference when there is no source, and is null without predicted numbers', () => {
    expect(hallucinatedNumberRate('up 13%', 'rose 13 percent')).toBe(0);
    expect(hallucinatedNumberRate('up 14%', 'rose 13 percent')).toBe(1);
    expect(hallucinatedNumberRate('Revenue grew.', 'Revenue grew 13%.')).toBeNull();
  });
});

describe('number-like junk', () => {
  const junk = (s: string) => numberLikeJunk(s).map((j) => j.text);
  it('finds digit runs that are no well-formed number', () => {
    expect(junk('$1.1.1.1')).toEqual(['$1.1.1.1']);
    expect(junk('US$1.1.1.1 and 1.1.1.1.')).toEqual(['US$1.1.1.1', '1.1.1.1']);
    expect(junk('codes 1,2,3')).toEqual(['1,2,3']);
    // Too long for a finite double: extractNumbers skips it, so it is junk.
    const long = '1'.repeat(400);
    expect(extractNumbers(long)).toEqual([]);
    expect(junk(long)).toEqual([long]);
  });
  it('leaves numbers, numbers glued to letters and separators between numbers alone', () => {
    for (const s of [
      '$1.2B and 1,234.5 in 2023, rev',
      'EPS $2.24, missing the $2.98 consensus.',
      '$1.1 million',
      'rose 12%.',
      'Q3.5.5',
      'v1.2.3',
      'FY2024',
      '10:30 on 2024-03-31',
      '1111111111111111111111111111111111111111',
    ]) {
      expect(junk(s), s).toEqual([]);
    }
  });
  it('counts as hallucinated unless the same text is in the source or reference', () => {
    expect(hallucinatedNumberRate('$1.1.1.1', '$1.69', 'Revenue was $1.69 billion.')).toBe(1);
    expect(hallucinatedNumberRate('$1.69 billion and 1.1.1.1', '$1.69 billion', 'Revenue was $1.69 billion.')).toBe(
      0.5,
    );
    expect(hallucinatedNumberRate('see 1.2.3', 'x', 'as section 1.2.3 says')).toBe(0);
    expect(hallucinatedNumberRate('1.1.1.1 then 1.1.1.1', 'x')).toBe(1);
    const d = hallucinatedNumbersDetail('$1.1.1.1, 7%', 'up 7%');
    expect(d.junk.map((j) => j.text)).toEqual(['$1.1.1.1']);
    expect(d.rate).toBe(0.5);
    // Numeric fidelity reads only well-formed numbers: junk recovers nothing.
    expect(numericFidelity('1.69.1', '$1.69')).toBe(0);
  });
});

describe('lexicon sentiment', () => {
  it('labels clear cases and handles negation', () => {
    expect(lexiconSentiment('Revenue grew strongly and margins improved.').label).toBe('positive');
    expect(lexiconSentiment('The company reported a wider loss and cut its dividend amid weak demand.').label).toBe(
      'negative',
    );
    expect(lexiconSentiment('The meeting is scheduled for May 15.').label).toBe('neutral');
    expect(lexiconSentiment('Results were not strong.').label).toBe('negative');
    expect(lexiconSentiment('The firm reported no losses.').label).toBe('positive');
  });
  it('matches multi-word entries before their parts', () => {
    const s = lexiconSentiment('Management lowered guidance.');
    expect(s.hits).toEqual([{ phrase: 'lower guidanc', polarity: -1 }]);
  });
  it('agreement compares the labels of prediction and reference', () => {
    expect(sentimentAgreement('Sales declined sharply.', 'Revenue fell on weak demand.')).toBe(1);
    expect(sentimentAgreement('Sales surged.', 'Revenue fell on weak demand.')).toBe(0);
  });
  it('is reasonably accurate on the bundled labelled passages (data/eval/fin-sentiment.jsonl)', () => {
    const rows = readFileSync(new URL('../../../data/eval/fin-sentiment.jsonl', import.meta.url), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { text: string; label: SentimentLabel });
    const acc = lexiconLabelAccuracy(
      rows.map((r) => r.text),
      rows.map((r) => r.label),
    );
    // A 3-way majority guess would get 1/3; the lexicon should do far better, but it is a lexicon.
    expect(acc).toBeGreaterThanOrEqual(0.7);
  });
});

describe('financial term coverage', () => {
  it('matches synonyms and inflections', () => {
    const ref = 'EPS beat consensus while free cash flow and operating margins improved.';
    const pred = 'Earnings per share topped the consensus; operating margin rose.';
    // reference terms: eps, free cash flow, consensus, operating margin, margin -> 5; pred has 4.
    expect(financialTermsIn(ref).map((i) => FINANCIAL_TERMS[i]![0])).toEqual([
      'operating margin',
      'eps',
      'free cash flow',
      'consensus',
      'margin',
    ]);
    expect(termCoverage(pred, ref)).toBeCloseTo(4 / 5, 15);
  });
  it('is null without financial terms in the reference', () => {
    expect(termCoverage('revenue', 'The weather was nice.')).toBeNull();
  });
});
