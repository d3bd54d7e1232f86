// The figure parser of the numeric metrics (src/pipeline/eval/numbers.ts), table-driven: what is a
// mention (decimal figures with thousands separators, sign, currency, magnitude, unit) and what is
// not (JavaScript number syntax, exponents, European decimals, glued tokens), with the normalized
// value of each, and what is left over as number-like junk.
import { describe, expect, it } from 'vitest';
import { extractNumbers, numberLikeJunk } from '../../../src/pipeline/eval/numbers.js';

/** [text of the mention, kind, value] for each mention of the input. */
type Row = [input: string, mentions: [string, 'quantity' | 'ratio', number][], junk?: string[]];

const mentions = (s: string) => extractNumbers(s).map((m) => [m.text, m.kind, m.value]);

/** Checks every row: the mentions (values to 12 significant digits) and the junk (none unless given). */
function check(rows: Row[]): void {
  for (const [input, want, junk = []] of rows) {
    const got = mentions(input);
    expect(
      got.map(([t, k]) => [t, k]),
      JSON.stringify(input),
    ).toEqual(want.map(([t, k]) => [t, k]));
    got.forEach(([, , v], i) => {
      const w = want[i]![2];
      expect(Math.abs((v as number) - w), `${JSON.stringify(input)}: ${v} vs ${w}`).toBeLessThanOrEqual(1e-12 * w);
    });
    expect(
      numberLikeJunk(input).map((j) => j.text),
      `junk of ${JSON.stringify(input)}`,
    ).toEqual(junk);
  }
}

describe('extractNumbers: what is a figure', () => {
  it('JavaScript number syntax is no figure: only the decimal digits of a well-formed figure count (before: "1_000" gave 1)', () => {
    check([
      ['0x10', []],
      ['0X1F', []],
      ['0b1', []],
      ['0o7', []],
      ['1e3', []],
      ['2.5E6', []],
      ['Infinity', []],
      ['-Infinity', []],
      ['NaN', []],
      ['1_000', []],
      ['1_000_000 shares', []],
      ['a 12 b', [['12', 'quantity', 12]]],
      [' 12 ', [['12', 'quantity', 12]]],
      ['\t12\n', [['12', 'quantity', 12]]],
    ]);
  });

  it('the exponent of scientific notation is no figure of its own (before: "1e-3" gave 3)', () => {
    check([
      ['1e-3', []],
      ['1E+3', []],
      ['a rate of 1.5E+06 per', []],
      ['1e−3', []],
      // A hyphen after a letter that is no exponent of a number still separates.
      ['Q3-5%', [['5%', 'ratio', 0.05]]],
    ]);
  });

  it('decimals, thousands separators and signs', () => {
    check([
      ['12', [['12', 'quantity', 12]]],
      ['0.5', [['0.5', 'quantity', 0.5]]],
      ['.5', [['.5', 'quantity', 0.5]]],
      ['rose 5.', [['5', 'quantity', 5]]],
      ['1,234', [['1,234', 'quantity', 1234]]],
      ['1,234,567.89', [['1,234,567.89', 'quantity', 1234567.89]]],
      ['-3%', [['-3%', 'ratio', 0.03]]],
      ['+5', [['+5', 'quantity', 5]]],
      ['−5', [['−5', 'quantity', 5]]],
      ['(1,234)', [['1,234', 'quantity', 1234]]],
      [
        '1-2',
        [
          ['1', 'quantity', 1],
          ['2', 'quantity', 2],
        ],
      ],
      // Not thousands groups: junk, no figure.
      ['12,34', [], ['12,34']],
      ['1,2345', [], ['1,2345']],
      ['1234,567', [], ['1234,567']],
      ['1.000,5', [], ['1.000,5']],
      ['1,234,56', [], ['1,234,56']],
    ]);
  });

  it('a first group starting with 0 is no thousands grouping (before: "0,123" gave 123)', () => {
    check([
      ['0,123', [], ['0,123']],
      ['0,123,456', [], ['0,123,456']],
      ['a yield of 0,5', [], ['0,5']],
    ]);
  });

  it('no-break and thin spaces group thousands, one separator per number (before: "1 000" gave 1 and 0)', () => {
    check([
      ['1\u00a0000', [['1\u00a0000', 'quantity', 1000]]],
      ['€1\u202f234\u202f567', [['€1\u202f234\u202f567', 'quantity', 1234567]]],
      ['1\u2009234.5 million', [['1\u2009234.5 million', 'quantity', 1234.5e6]]],
      ['12\u00a0345\u00a0678%', [['12\u00a0345\u00a0678%', 'ratio', 123456.78]]],
      // Mixed separators are two figures; a plain space is no thousands separator (it is ambiguous).
      [
        '1,234\u00a0567',
        [
          ['1,234', 'quantity', 1234],
          ['567', 'quantity', 567],
        ],
      ],
      [
        '1 000',
        [
          ['1', 'quantity', 1],
          ['000', 'quantity', 0],
        ],
      ],
    ]);
  });

  it('currency, magnitude and unit', () => {
    check([
      ['$1.2B', [['$1.2B', 'quantity', 1.2e9]]],
      ['US$ 1,200mm', [['US$ 1,200mm', 'quantity', 1.2e9]]],
      ['USD1.2bn', [['USD1.2bn', 'quantity', 1.2e9]]],
      ['£5m', [['£5m', 'quantity', 5e6]]],
      ['12 billions', [['12 billions', 'quantity', 12e9]]],
      ['5 m', [['5', 'quantity', 5]]],
      ['10K', [['10K', 'quantity', 1e4]]],
      ['180 bps', [['180 bps', 'ratio', 0.018]]],
      ['1.8 pp', [['1.8 pp', 'ratio', 0.018]]],
      ['12.5 per cent', [['12.5 per cent', 'ratio', 0.125]]],
      ['5 basis points', [['5 basis points', 'ratio', 0.0005]]],
    ]);
  });

  it('tokens glued to letters, digits or underscores are no figures', () => {
    check([
      ['Q3', []],
      ['FY2024', []],
      ['3rd', []],
      ['2Q23', []],
      ['5kg', []],
      ['x_5', []],
      ['5_x', []],
      ['１２', []],
      ['٣', []],
    ]);
  });
});
