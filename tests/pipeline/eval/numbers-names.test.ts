// Names and identifiers in the figure parser (src/pipeline/eval/numbers.ts, header "Names"): digits
// that are part of a name ("COVID-19", "Form 10-K", "S&P 500") are no figures, the figures next to
// them still are, multiples ("3x") are figures of their own kind, and the bundled evaluation suites
// read exactly as before (they contain no names).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generateCorpus, generateTasks } from '../../../src/pipeline/data/synthetic.js';
import {
  extractNumbers,
  type NumberKind,
  nameSpans,
  numberLikeJunk,
  sameNumber,
} from '../../../src/pipeline/eval/numbers.js';
import { hallucinatedNumbersDetail, numericFidelity } from '../../../src/pipeline/eval/numeric.js';

/** [input, its mentions as [text, kind, value], its number-like junk (none unless given)]. */
type Row = [input: string, mentions: [string, NumberKind, number][], junk?: string[]];

/** Checks every row: the mentions (values to 12 significant digits) and the junk. */
function check(rows: Row[]): void {
  for (const [input, want, junk = []] of rows) {
    const got = extractNumbers(input);
    expect(
      got.map((m) => [m.text, m.kind]),
      JSON.stringify(input),
    ).toEqual(want.map(([t, k]) => [t, k]));
    got.forEach((m, i) => {
      const w = want[i]![2];
      expect(Math.abs(m.value - w), `${JSON.stringify(input)}: ${m.value} vs ${w}`).toBeLessThanOrEqual(1e-12 * w);
    });
    expect(
      numberLikeJunk(input).map((j) => j.text),
      `junk of ${JSON.stringify(input)}`,
    ).toEqual(junk);
  }
}

/** Rows whose input holds no figure at all. */
const none = (...inputs: string[]): Row[] => inputs.map((s) => [s, []]);

describe('extractNumbers: digits in names are no figures', () => {
  it('a word joined to digits by a hyphen (before: "COVID-19" gave 19, "S-1" gave 1)', () => {
    check([
      ...none('COVID-19', 'Covid-19', 'covid-19', 'COVID-19-related', 'SARS-CoV-2', 'GPT-4', 'Nasdaq-100'),
      ...none('Form S-1', 'S-4', 'an A-1+ rating', 'Rule 10b5-1', '10b5-1 plan', 'COVID\u201119', 'A320-200'),
      // Only the name: the figures beside it stay.
      ['COVID-19 cut revenue by 12%', [['12%', 'ratio', 0.12]]],
      ['S-1 filed for a $500 million IPO', [['$500 million', 'quantity', 5e8]]],
    ]);
  });

  it('digits joined to an upper-case form code (before: "10-K" gave 10)', () => {
    check([
      ...none('10-K', 'Form 10-K', 'the 10-K', '10-Q', '8-K', '6-K', 'Form 20-F', '40-F', '10-KSB', '10-K/A'),
      ...none('two 10-Ks', 'the 10-Q\u2019s notes', '3-D printing', '10\u2011K'),
      [
        'Per its 10-K, revenue was $2.3bn, up 10%.',
        [
          ['$2.3bn', 'quantity', 2.3e9],
          ['10%', 'ratio', 0.1],
        ],
      ],
    ]);
  });

  it('paragraph references and the numbers of documents, rules and classes (before: "Chapter 11" gave 11)', () => {
    check([
      ...none('Section 16(b)', '16(b)', 'Section 13(d)(1)', '401(k)', 'a 401(k) plan', '§ 16(b)', 'Rule 144'),
      ...none('Rule 144A', 'Rule 14a-8', 'Form 4', 'Forms 3', 'Item 7', 'Item 2.02', 'Exhibit 99.1', 'Note 12'),
      ...none('Chapter 11', 'Schedule 13D', 'Regulation S-K', 'Article 9', 'Tier 1', 'Level 3', 'Phase 3'),
      ...none('Form 10K', 'CUSIP 037833100', 'CUSIP: 037833100', 'CIK 0000320193', 'Note 3.'),
      [
        'Tier 1 capital ratio of 13.2% and Level 3 assets of $1.2 billion',
        [
          ['13.2%', 'ratio', 0.132],
          ['$1.2 billion', 'quantity', 1.2e9],
        ],
      ],
      ['Item 7, revenue of 5 billion', [['5 billion', 'quantity', 5e9]]],
      // A lower-case keyword is no name: "section 1.2.3" stays junk (the hallucinated-number tests rely on it).
      ['as section 1.2.3 says', [], ['1.2.3']],
      ['in chapter 11', [['11', 'quantity', 11]]],
    ]);
  });

  it('stock indexes by their constituent count, not by their level (before: "S&P 500" gave 500)', () => {
    check([
      ...none('S&P 500', 'the S&P 500\u2019s', 'S&P 400', 'Russell 2000', 'Russell 1000', 'FTSE 100', 'FTSE 250'),
      ...none('Nasdaq 100', 'Nikkei 225', 'Euro Stoxx 50', 'STOXX 600', 'CAC 40', 'DAX 40', 'S&P/ASX 200'),
      [
        'The S&P 500 rose 1.2% to 5,000',
        [
          ['1.2%', 'ratio', 0.012],
          ['5,000', 'quantity', 5000],
        ],
      ],
      ['Russell 2000 fell 2%', [['2%', 'ratio', 0.02]]],
      // Not a constituent count, or an index named by its level: figures.
      ['Nasdaq 15,000', [['15,000', 'quantity', 15000]]],
      ['S&P 4500', [['4500', 'quantity', 4500]]],
      ['Dow 30,000', [['30,000', 'quantity', 30000]]],
    ]);
  });

  it('model numbers after a lower-camel-case product name, and tickers with digits', () => {
    check([
      ...none('iPhone 15', 'iPhone 15 Pro', 'iOS 17', 'iPad 10'),
      ...none('0700.HK', 'Tencent (0700.HK)', '7203.T', '005930.KS', 'HKEX: 700', 'TYO: 7203'),
      ['iPhone 15 sales rose 10%', [['10%', 'ratio', 0.1]]],
      // "iPhone 2024" is no model number (four digits): a year.
      ['iPhone 2024 lineup', [['2024', 'quantity', 2024]]],
    ]);
  });

  it('tokens glued to letters stay no figures (fiscal periods, technologies, models, ISINs)', () => {
    check(none('H1N1', '4G', '5G', '4G/5G', 'B2B', 'A320', 'A320neo', 'Win10', 'US0378331005', 'Q3', '3Q24', 'FY2024'));
    check(none('FY24', '1H25', 'CO2', 'PM2.5', 'CET1'));
  });

  it('a name never carries a currency, a unit or a magnitude word', () => {
    check([
      ['Q3-5%', [['5%', 'ratio', 0.05]]],
      ['COVID-19%', [['19%', 'ratio', 0.19]]],
      ['Section 5 million', [['5 million', 'quantity', 5e6]]],
      ['$10-K', [['$10', 'quantity', 10]]],
      ['Level 3 times', [['3 times', 'multiple', 3]]],
    ]);
  });

  it('digits in a name are no number-like junk either', () => {
    check([...none('Exhibit 99.1.2', 'Item 1.01.2'), ['COVID-19 and 1.1.1.1', [], ['1.1.1.1']]]);
    // The span of a name: the whole name, keyword and all.
    expect(nameSpans('See Form 10-K.')).toEqual([[4, 13]]);
    // A word joined by a hyphen: only the digits after it (the word's own are glued to its letters).
    expect(nameSpans('COVID-19, S&P 500')).toEqual([
      [6, 8],
      [10, 17],
    ]);
    expect(nameSpans('mid-2024, 10-for-1, 2023-24, 5-year')).toEqual([]);
  });
});

describe('extractNumbers: figures next to names', () => {
  it('hyphenated figures that are no names: measures, ranges, splits, dates and periods', () => {
    check([
      ['a 5-year note', [['5', 'quantity', 5]]],
      [
        'the 10-year yield rose 20 bps',
        [
          ['10', 'quantity', 10],
          ['20 bps', 'ratio', 0.002],
        ],
      ],
      ['30-day', [['30', 'quantity', 30]]],
      ['52-week high', [['52', 'quantity', 52]]],
      [
        'a 10-for-1 split',
        [
          ['10', 'quantity', 10],
          ['1', 'quantity', 1],
        ],
      ],
      [
        'a 1-for-10 reverse split',
        [
          ['1', 'quantity', 1],
          ['10', 'quantity', 10],
        ],
      ],
      [
        '2-to-1',
        [
          ['2', 'quantity', 2],
          ['1', 'quantity', 1],
        ],
      ],
      ['top-10 holdings', [['10', 'quantity', 10]]],
      ['sub-1% growth', [['1%', 'ratio', 0.01]]],
      ['since mid-2024', [['2024', 'quantity', 2024]]],
      ['Mid-2024', [['2024', 'quantity', 2024]]],
      ['pre-2020 levels', [['2020', 'quantity', 2020]]],
      ['post-2008', [['2008', 'quantity', 2008]]],
      [
        'fiscal 2023-24',
        [
          ['2023', 'quantity', 2023],
          ['24', 'quantity', 24],
        ],
      ],
      [
        '2021-2023',
        [
          ['2021', 'quantity', 2021],
          ['2023', 'quantity', 2023],
        ],
      ],
      [
        '2021\u20132023',
        [
          ['2021', 'quantity', 2021],
          ['2023', 'quantity', 2023],
        ],
      ],
      [
        '$1-2 billion',
        [
          ['$1', 'quantity', 1],
          ['2 billion', 'quantity', 2e9],
        ],
      ],
      // A figure with its magnitude or multiple before the hyphen: a range, not a name.
      [
        '$5m-6m',
        [
          ['$5m', 'quantity', 5e6],
          ['6m', 'quantity', 6e6],
        ],
      ],
      [
        '5k-10k',
        [
          ['5k', 'quantity', 5e3],
          ['10k', 'quantity', 1e4],
        ],
      ],
      [
        '$2.1bn-2.3',
        [
          ['$2.1bn', 'quantity', 2.1e9],
          ['2.3', 'quantity', 2.3],
        ],
      ],
      [
        '3x-4x',
        [
          ['3x', 'multiple', 3],
          ['4x', 'multiple', 4],
        ],
      ],
      // A month before the hyphen: a date, as "March 24" is.
      ['Dec-2024', [['2024', 'quantity', 2024]]],
      ['Mar-24', [['24', 'quantity', 24]]],
      [
        '2024-03-31',
        [
          ['2024', 'quantity', 2024],
          ['03', 'quantity', 3],
          ['31', 'quantity', 31],
        ],
      ],
      [
        'March 31, 2024',
        [
          ['31', 'quantity', 31],
          ['2024', 'quantity', 2024],
        ],
      ],
      // A fiscal period before or after a hyphen keeps the year a figure, as "Q3 2024" does.
      ['Q3-2024', [['2024', 'quantity', 2024]]],
      ['Q3 2024', [['2024', 'quantity', 2024]]],
      ['FY-2024', [['2024', 'quantity', 2024]]],
      ['FY 2024', [['2024', 'quantity', 2024]]],
      ['H1-2025', [['2025', 'quantity', 2025]]],
      ['2023-Q4', [['2023', 'quantity', 2023]]],
      ['Q3 revenue of 2.3 billion', [['2.3 billion', 'quantity', 2.3e9]]],
      ['the second quarter of 2024', [['2024', 'quantity', 2024]]],
      ['-19%', [['-19%', 'ratio', 0.19]]],
      ['fell -19% in Q3', [['-19%', 'ratio', 0.19]]],
      ['$2.3bn', [['$2.3bn', 'quantity', 2.3e9]]],
      ['10%', [['10%', 'ratio', 0.1]]],
    ]);
  });

  it('what the form alone cannot tell from a count stays a figure (documented in the header)', () => {
    check([
      ['Boeing 737 orders', [['737', 'quantity', 737]]],
      ['Windows 11', [['11', 'quantity', 11]]],
      ['3M', [['3M', 'quantity', 3e6]]],
      ['10K', [['10K', 'quantity', 1e4]]],
      ['037833100', [['037833100', 'quantity', 37833100]]],
    ]);
  });
});

describe('extractNumbers: multiples', () => {
  it('"3x", "2.5×" and "15 times" are figures of kind multiple (before: "3x" was no figure)', () => {
    check([
      ['3x', [['3x', 'multiple', 3]]],
      ['3X', [['3X', 'multiple', 3]]],
      ['net leverage of 2.5x.', [['2.5x', 'multiple', 2.5]]],
      ['2.5× leverage', [['2.5×', 'multiple', 2.5]]],
      ['trades at 15 times earnings', [['15 times', 'multiple', 15]]],
      ['1,200x', [['1,200x', 'multiple', 1200]]],
      // Not a multiple: glued on both sides, hexadecimal, or apart.
      ...none('3x3', '0x10', '2x4', '3xl'),
      ['3 x', [['3', 'quantity', 3]]],
    ]);
  });

  it('a multiple matches a multiple only', () => {
    const [x] = extractNumbers('3x');
    const [times] = extractNumbers('3 times');
    const [plain] = extractNumbers('$3');
    const [pct] = extractNumbers('300%');
    expect(sameNumber(x!, times!)).toBe(true);
    expect(sameNumber(x!, plain!)).toBe(false);
    expect(sameNumber(x!, pct!)).toBe(false);
  });
});

describe('numeric metrics on names', () => {
  it('a name in the prediction is no hallucinated number (before: rate 0.5 for the 10-K)', () => {
    const d = hallucinatedNumbersDetail('Per the 10-K and amid COVID-19, revenue rose 5%.', 'Revenue rose 5%.');
    expect(d.rate).toBe(0);
    expect(d.hallucinated).toEqual([]);
    expect(d.junk).toEqual([]);
    expect(hallucinatedNumbersDetail('The S&P 500 rose 7%.', 'Shares rose 5%.').rate).toBe(1);
  });

  it('a name matches no figure by accident (before: the 10-K matched "10 stores")', () => {
    expect(numericFidelity('It filed its 10-K.', 'It filed its 10-K and opened 10 stores.')).toBe(0);
    expect(numericFidelity('It opened 10 stores.', 'It filed its 10-K and opened 10 stores.')).toBe(1);
    // A reference whose only digits are names has no figures.
    expect(numericFidelity('anything', 'It filed its Form 10-Q.')).toBeNull();
  });
});

describe('the bundled evaluation suites read as before', () => {
  const SCORED = ['context', 'question', 'answer', 'text', 'source', 'summary'];
  const records = (suite: string): Record<string, string>[] =>
    readFileSync(new URL(`../../../data/eval/${suite}.jsonl`, import.meta.url), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, string>);

  // [suite, scored texts, mentions, SHA-256 (first 16 hex digits) of the JSON of every text's
  // [text, kind, value] list, in file and field order], measured with the parser before it knew
  // names and multiples. The suites hold no name and no multiple, so not one figure list may move.
  const BEFORE: [string, number, number, string][] = [
    ['fin-figures', 180, 614, 'c58bf92e418213be'],
    ['fin-sentiment', 60, 192, 'd18cf6adc70784a2'],
    ['fin-summary', 120, 614, 'f4ce297a918d2bbe'],
  ];

  it.each(BEFORE)('%s: no names, and the same figures', (suite, texts, mentions, digest) => {
    const fields = records(suite).flatMap((r) => SCORED.filter((k) => typeof r[k] === 'string').map((k) => r[k]!));
    const named = fields.flatMap((t) => nameSpans(t).map(([a, b]) => t.slice(a, b)));
    expect(named, 'names in the suite').toEqual([]);
    const lists = fields.map((t) => extractNumbers(t).map((m) => [m.text, m.kind, m.value]));
    expect(lists.flat().filter(([, k]) => k === 'multiple')).toEqual([]);
    expect([lists.length, lists.flat().length]).toEqual([texts, mentions]);
    expect(createHash('sha256').update(JSON.stringify(lists)).digest('hex').slice(0, 16)).toBe(digest);
  });

  it('the generator writes "Form 10-K"/"Form 10-Q" only in filing documents, where it is a name', () => {
    const docs = [...generateCorpus({ seed: 7, documents: 40, kinds: ['filing'] })];
    const forms = new Set<string>();
    for (const { text } of docs) {
      const form = /Form 10-[KQ]/.exec(text)?.[0];
      expect(form, text).toBeDefined();
      forms.add(form!);
      // The figures of the document are those of the same document without the form's name.
      const plain = (s: string) => extractNumbers(s).map((m) => [m.kind, m.value]);
      expect(plain(text), text).toEqual(plain(text.replace(form!, 'Form')));
    }
    expect(forms).toEqual(new Set(['Form 10-K', 'Form 10-Q']));
    // Task records (the evaluation suites' layout included) carry no form names and no other names.
    const tasks = [...generateTasks({ seed: 7, perTask: 100, tasks: ['figures', 'summary', 'sentiment'] })];
    const texts = tasks.map((r) => JSON.stringify(r));
    expect(texts.filter((t) => /\d-[A-Z]\b/.test(t))).toEqual([]);
    expect(
      tasks.flatMap((r) =>
        Object.values(r)
          .filter((v): v is string => typeof v === 'string')
          .flatMap((t) => nameSpans(t).map(([a, b]) => t.slice(a, b))),
      ),
    ).toEqual([]);
  });
});
