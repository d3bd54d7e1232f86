import { describe, expect, it } from 'vitest';
import {
  normalizeSpeakerTurns,
  normalizeUnicode,
  normalizeWhitespace,
  preprocessText,
} from '../../../src/pipeline/data/preprocess.js';

describe('financial text preprocessing', () => {
  const FIGURES = [
    '$2.31 billion',
    '12.8%',
    '(3.2)%',
    '€0.52',
    '60 bps',
    '1,234.5',
    '£1.2bn',
    '¥150',
    '-4.5%',
    '+0.3 pts',
    'Q3 FY2024',
  ];

  it('keeps numbers, currencies, percentages and bps byte-for-byte', () => {
    const text = `Revenue was $2.31 billion, up 12.8%; margin moved (3.2)% and EPS was €0.52.\nSpread widened 60 bps to 1,234.5 — the widest since 2019. Others: ${FIGURES.join(', ')}.`;
    const out = preprocessText(text);
    for (const f of FIGURES) expect(out).toContain(f);
    expect(out).toContain('1,234.5 — the widest');
    expect(Buffer.from(out).equals(Buffer.from(text))).toBe(true); // nothing to change here at all
  });

  it('NFKC folds only safe compatibility characters', () => {
    expect(normalizeUnicode('Ｒｅｖｅｎｕｅ ＄５')).toBe('Revenue $5'); // full-width → ASCII
    expect(normalizeUnicode('proﬁt')).toBe('profit'); // ligature
    expect(normalizeUnicode('2\u00A0000')).toBe('2 000'); // no-break space → space
    expect(normalizeUnicode('m² ½ Brand™ note¹')).toBe('m² ½ Brand™ note¹'); // meaning-bearing: kept
    expect(normalizeUnicode('€ £ ¥ $ — – −')).toBe('€ £ ¥ $ — – −');
    expect(normalizeUnicode('e\u0301')).toBe('é'); // NFC
    expect(normalizeUnicode('zero\u200Bwidth\uFEFF soft\u00ADhyphen')).toBe('zerowidth softhyphen');
  });

  it('normalizes whitespace but keeps paragraph breaks', () => {
    expect(normalizeWhitespace('  a \t b  \r\nc\n\n\n\nd   \n')).toBe('a b\nc\n\nd');
  });

  it('normalizes speaker turns in transcripts', () => {
    const raw = [
      'Operator: Good morning and welcome.',
      'John Smith -- CFO: Thanks. Revenue was $2.31 billion,',
      'up 12.8% year over year.',
      'CFO: Margins were (3.2)% lower.',
      'Jane Roe - Chief Financial Officer',
      'We expect 60 bps of expansion.',
      'Priya Raman — Analyst: What about €0.52 dividend?',
      'Operator',
      'Next question, please.',
      'Mark Lee, Head of Investor Relations: Thank you.',
    ].join('\n');
    expect(normalizeSpeakerTurns(raw)).toBe(
      [
        'Operator: Good morning and welcome.',
        'John Smith (CFO): Thanks. Revenue was $2.31 billion, up 12.8% year over year.',
        'CFO: Margins were (3.2)% lower.',
        'Jane Roe (Chief Financial Officer): We expect 60 bps of expansion.',
        'Priya Raman (Analyst): What about €0.52 dividend?',
        'Operator: Next question, please.',
        'Mark Lee (Head of Investor Relations): Thank you.',
      ].join('\n'),
    );
  });

  it('auto mode leaves ordinary prose with label-like lines alone', () => {
    const filing = 'Note: amounts in millions.\nRevenue: $1,234.5 for the year.\n\nSecond paragraph stays.';
    expect(preprocessText(filing)).toBe(filing);
    // but a transcript with several speakers is normalized
    expect(preprocessText('Operator: Hi.\nJohn Smith -- CFO: Hello,\nall.')).toBe(
      'Operator: Hi.\nJohn Smith (CFO): Hello, all.',
    );
  });
});
