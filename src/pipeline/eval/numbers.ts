// Numbers in financial text, normalized so that different spellings of the same amount compare
// equal: "$1.2B" = "1,200 million" = "USD 1.2 billion" = 1.2e9, and "180 bps" = "1.8%" =
// "1.8 percentage points" = 0.018.
//
// A mention is: optional currency ($, US$, €, £, ¥, USD/EUR/GBP/JPY), a decimal number ("1,234.5",
// "12", ".5"; thousands grouped by ',' or by a no-break or thin space, one kind per number, as in
// "1 234 567"; the first group does not start with 0, so "0,123" is no number), then optionally
// a magnitude (thousand/million/billion/trillion and the abbreviations k, m, mm, mn, b, bn, tn,
// attached or after one space; a lone one-letter abbreviation must be attached: "$5m", not
// "5 m"), then optionally a unit (%, percent, per cent, percentage point(s), pp, bps, bp, basis
// point(s)), or a multiple ("3x", "2.5×" attached, "15 times").
// Kinds: 'ratio' for percentages and basis points (value = percent/100 or bps/10000), 'multiple'
// for "3x" and "3 times" (value = 3: a leverage or valuation multiple is no amount, so "3x" does
// not match "$3"), 'quantity' for everything else (value = number * magnitude; a currency sign does
// not change the kind, so "1,200 million" matches "$1.2B"). Signs are dropped: "down 3%" and "-3%"
// both carry 0.03.
// A number glued to a letter, digit or underscore on either side (Q3, FY2024, FY24, 2Q23, 3Q24,
// 3rd, 1_000, B2B, 4G, H1N1, A320, Win10, ISINs such as US0378331005) is not a mention, nor is the
// exponent of scientific notation ("1e-3", "1.5E+06": neither part is). Only ASCII digits are
// digits: "0x10", "1e3", "Infinity" and "0b1" are no mentions. Number words ("twelve") are not
// recognized. A company named like a multiple ("10x Genomics") reads as one.
//
// Names (nameSpans): digits that are part of an identifier or a name are no figure, as a reader of
// financial text expects: a summary that cites "the 10-K" or "COVID-19" states no amount of 10 or
// 19, and must neither be charged with a hallucinated number nor credited with a match for it.
// A name covers a digit run that is
//   - joined by a hyphen to a word before it, in any case: "COVID-19", "covid-19", "S-1",
//     "Nasdaq-100", "SARS-CoV-2", the "-1" of "10b5-1", "A320-200". Not when that word is one that
//     joins figures (mid-2024, pre-2020, 10-for-1, 2-to-1, top-10; see JOINING_WORDS), a month
//     (Dec-2024), a fiscal period (Q3-2024, FY-2024, H1-2025) or a figure with its magnitude
//     ("$5m-6m", "3x-4x"): those numbers stay figures.
//     Two digit runs joined by a hyphen are a range ("2023-24", "1-2").
//   - joined by a hyphen to a short upper-case form code after it: "10-K", "10-Q", "8-K", "20-F",
//     "10-KSB", "10-K/A", "10-Ks", "3-D"; not "5-year", "30-day", "10-for-1" (lower-case words make
//     the number a measure: a 5-year note has a 5-year term) nor "2023-Q4" (a period).
//   - a paragraph reference: "401(k)", "16(b)", "13(d)(1)".
//   - the number of a document, rule or regulatory class after its capitalized name: "Form 4",
//     "Form 20-F", "Rule 144", "Rule 10b5-1", "Section 16(b)", "Item 2.02", "Exhibit 99.1",
//     "Chapter 11", "Note 12", "Schedule 13D", "Tier 1", "Level 3", "Phase 3", and the code after
//     "CUSIP", "ISIN", "SEDOL", "CIK", "LEI" (so an all-digit CUSIP such as 037833100 is a name
//     there; on its own it reads as a number).
//   - the constituent count of a stock index: "S&P 500", "Russell 2000", "FTSE 100", "Nikkei 225",
//     "Euro Stoxx 50" (INDEX_NAMES lists each index's counts; "Dow 30,000" is a level, a figure).
//   - the model number after a lower-camel-case product name: "iPhone 15", "iOS 17" (one to three
//     digits). A name written as a plain word and a number ("Boeing 737", "Windows 11") cannot be
//     told from a count ("Boeing 737 orders" is no different in form from "Boeing 12 orders") and
//     stays a figure.
//   - a ticker with digits: "0700.HK", "7203.T", "005930.KS", "HKEX: 700", "TYO: 7203". ("3M" is
//     read as 3 million, as "3M subscribers" would be: the form alone cannot tell them apart.)
// A name never carries a currency sign, a unit or a magnitude word: "Q3-5%", "Section 5 million"
// and "$10-K" keep their figure. Only a lone attached k/m/b yields, since "10K" alone is 10,000 but
// "Form 10K" is the form.
// Years and days are figures, as before ("2024" in "the second quarter of 2024", "2024-03-31" gives
// 2024, 3 and 31, "2021-2023" gives 2021 and 2023); fiscal periods glued to letters are not ("Q3",
// "FY2024", "3Q24"), and neither is the quarter of "Q3 revenue of 2.3 billion" (2.3e9 only).
//
// Number-like junk (numberLikeJunk): a run of digits joined by '.' or ',' that stands free of
// letters, like a mention, but is not read as one: "1.1.1.1", "$1.1.1.1", "1,2,3", or a digit run
// too long to be a finite double ("1111…" of 400 digits). It is no amount, yet a reader sees a
// figure; the hallucinated-number rate counts it (numeric.ts). Digits inside a name are no junk
// either ("Exhibit 99.1.2", the "19" of "COVID-19").

export type NumberKind = 'quantity' | 'ratio' | 'multiple';

export interface NumberMention {
  /** The text matched, e.g. "$1.2B". */
  text: string;
  /** Offset in the input. */
  index: number;
  kind: NumberKind;
  /** Normalized absolute value. */
  value: number;
}

const MAGNITUDES: Record<string, number> = {
  thousand: 1e3,
  k: 1e3,
  million: 1e6,
  mn: 1e6,
  mm: 1e6,
  m: 1e6,
  billion: 1e9,
  bn: 1e9,
  b: 1e9,
  trillion: 1e12,
  tn: 1e12,
};

/** The thousands separators besides ',': no-break space, thin space, narrow no-break space. */
const SPACE_SEPARATORS = '\u00a0\u2009\u202f';

const NUMBER_RE = new RegExp(
  String.raw`(?<![\p{L}\p{N}_.,]|\d[eE][-+−])` +
    String.raw`(?<cur>(?:US\$|[$€£¥]|USD|EUR|GBP|JPY)\s?)?` +
    '[-−–+]?' +
    String.raw`(?<num>[1-9]\d{0,2}(?<sep>[,${SPACE_SEPARATORS}])\d{3}(?:\k<sep>\d{3})*(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)` +
    String.raw`(?:(?<magw>\s?(?:thousand|million|billion|trillion|mn|mm|bn|tn)s?)|(?<maga>k|m|b)(?![\p{L}]))?` +
    String.raw`(?:(?<unit>\s?(?:%|percent\b|per\s?cent\b|percentage\s+points?\b|pp\b|bps\b|bp\b|basis\s+points?\b))` +
    String.raw`|(?<mult>[x×](?![\p{L}\p{N}_])|\stimes\b))?` +
    String.raw`(?![\p{L}\p{N}_]|[.,]\d)`,
  'giu',
);

/** Hyphens that join the parts of a name: hyphen-minus, hyphen, non-breaking hyphen. */
const HYPHENS = '-\u2010\u2011';

/**
 * Words that join a number without making it a name: "mid-2024", "pre-2020", "10-for-1", "2-to-1",
 * "top-10", "sub-1%". Compared in lower case.
 */
const JOINING_WORDS = new Set([
  ...['mid', 'pre', 'post', 'early', 'late', 'end', 'year', 'fiscal', 'calendar', 'since', 'until', 'through'],
  ...['for', 'to', 'by', 'per', 'of', 'and', 'or', 'vs', 'than', 'from', 'over', 'under', 'sub', 'top'],
  ...['about', 'around', 'circa', 'some', 'nearly', 'almost', 'up', 'down'],
  // Months: "Dec-2024", "Mar-24" (a date, as "March 24" is).
  ...['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'sept', 'oct', 'nov', 'dec'],
  ...['january', 'february', 'march', 'april', 'june', 'july', 'august', 'september', 'october', 'november'],
  'december',
]);

/** A figure glued to its magnitude or multiple before a hyphen makes a range: "$5m-6m", "$2.1bn-2.3", "3x-4x". */
const FIGURE_WORD_RE = /^\d+(?:k|m|mm|mn|b|bn|tn|x|×)$/i;

/** A fiscal period before a hyphen keeps the year after it a figure: "Q3-2024", "FY-2024", "1H-2025". */
const PERIOD_RE = /^(?:FY|CY|[QH][1-4]|[1-4][QH])$/i;

/** The constituent counts that name each stock index ("S&P 500"); any other number after it is a figure. */
const INDEX_NAMES: Record<string, readonly number[]> = {
  'S&P': [100, 400, 500, 600, 1000, 1500],
  RUSSELL: [1000, 2000, 2500, 3000],
  FTSE: [100, 250, 350],
  NASDAQ: [100],
  NIKKEI: [225],
  STOXX: [50, 600],
  CAC: [40],
  DAX: [30, 40],
  IBEX: [35],
  AEX: [25],
  ASX: [200, 300],
  TSX: [60],
  KOSPI: [200],
  NIFTY: [50],
  TOPIX: [100, 500],
};

const NOT_BEFORE = String.raw`(?<![\p{L}\p{N}_])`;
/** The number of a document or rule: "4", "20-F", "10b5-1", "16(b)", "2.02", "S-1", "13D". */
const DOC_NUMBER =
  String.raw`(?:[A-Z]{1,2}[${HYPHENS}]?)?\d[\p{L}\p{N}]*` +
  String.raw`(?:[${HYPHENS}.][\p{L}\p{N}]+)*(?:\([a-z0-9]{1,4}\))*`;
/** Capitalized names of documents, rules and regulatory classes whose number follows them. */
const DOC_WORDS = [
  ...['Forms?', 'Rules?', 'Sections?', 'Items?', 'Chapters?', 'Schedules?', 'Regulation', 'Exhibits?', 'Notes?'],
  ...['Article', 'Tier', 'Level', 'Phase', 'Pillar', '§'],
].join('|');
/** Stock indexes named with their constituent count (INDEX_NAMES). */
const INDEX_WORDS =
  'S&P|Russell|FTSE|Nasdaq|NASDAQ|Nikkei|NIKKEI|Stoxx|STOXX|CAC|DAX|IBEX|AEX|ASX|TSX|KOSPI|Nifty|NIFTY|Topix|TOPIX';
/** Exchanges whose tickers are digits, as written before one: "HKEX: 700". */
const EXCHANGES = 'HKEX|SEHK|HKG|TYO|TSE|KRX|KOSDAQ|SHA|SSE|SHE|SZSE|TWSE|TPEX|BSE|NSE|SGX|KLSE';

/** One regular expression per kind of name (see the header); `word` and `count` are checked in nameSpans. */
const NAME_RES: readonly RegExp[] = [
  // A word, then a hyphen, then digits: "COVID-19", "S-1" (JOINING_WORDS and periods excepted).
  new RegExp(String.raw`${NOT_BEFORE}(?<word>[\p{L}\p{N}]*\p{L}[\p{L}\p{N}]*)[${HYPHENS}]\d+`, 'gu'),
  // Digits, then a hyphen, then an upper-case form code: "10-K", "20-F", "10-KSB", "10-Qs".
  new RegExp(String.raw`(?<![\p{L}\p{N}_.,])\d+[${HYPHENS}][A-Z]{1,3}(?:s|'s|’s)?(?![\p{L}\p{N}_])`, 'gu'),
  // A paragraph reference: "401(k)", "16(b)", "13(d)(1)".
  /(?<![\p{L}\p{N}_.,])\d+\([a-z]{1,4}\)(?:\([a-z0-9]{1,4}\))*/gu,
  // The number of a document, rule or regulatory class: "Form 10-K", "Rule 144", "Tier 1", "§ 16(b)".
  new RegExp(String.raw`${NOT_BEFORE}(?:${DOC_WORDS})\s?(?:No\.\s?)?${DOC_NUMBER}`, 'gu'),
  // A security identifier after its name: "CUSIP 037833100", "CIK: 0000320193".
  new RegExp(String.raw`${NOT_BEFORE}(?:CUSIP|ISIN|SEDOL|CIK|LEI|FIGI)(?:\s?(?:No\.|#|:))?\s?[A-Z0-9]+`, 'gu'),
  // A stock index and its constituent count: "S&P 500", "S&P/ASX 200", "Russell 2000".
  new RegExp(String.raw`${NOT_BEFORE}(?:S&P\/)?(?<index>${INDEX_WORDS})\s(?<count>\d+)(?![\p{N}_]|[.,]\d)`, 'gu'),
  // A model number after a lower-camel-case product name: "iPhone 15", "iOS 17".
  new RegExp(String.raw`${NOT_BEFORE}[a-z]+[A-Z]\p{L}*\s\d{1,3}(?![\p{L}\p{N}_]|[.,]\d)`, 'gu'),
  // A ticker with digits: "0700.HK", "7203.T"; "HKEX: 700".
  /(?<![\p{L}\p{N}_.,])\d{1,6}\.(?:HK|T|KS|KQ|TW|TWO|SS|SZ|SH|BO|NS|SI|KL|BK|JK)(?![\p{L}\p{N}_])/gu,
  new RegExp(String.raw`${NOT_BEFORE}(?:${EXCHANGES})\s?:\s?\d{1,6}(?![\p{L}\p{N}_]|[.,]\d)`, 'gu'),
];

/** A span of `text`, [start, end). */
export type Span = readonly [start: number, end: number];

/**
 * The spans of `text` that are names or identifiers (see the header), in order, overlapping ones
 * merged: the digits in them are no figures.
 */
export function nameSpans(text: string): Span[] {
  const found: Span[] = [];
  for (const re of NAME_RES) {
    for (const m of text.matchAll(re)) {
      const g = m.groups ?? {};
      const start = m.index ?? 0;
      const end = start + m[0].length;
      const word = g['word'];
      if (word !== undefined) {
        if (JOINING_WORDS.has(word.toLowerCase()) || PERIOD_RE.test(word) || FIGURE_WORD_RE.test(word)) continue;
        // Only the digits after the hyphen: the word's own digits are glued to its letters.
        found.push([end - /\d+$/.exec(m[0])![0].length, end]);
        continue;
      }
      if (g['index'] !== undefined && !INDEX_NAMES[g['index'].toUpperCase()]!.includes(Number(g['count']))) continue;
      found.push([start, end]);
    }
  }
  found.sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [a, b] of found) {
    const last = out.at(-1);
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

function overlaps(spans: readonly Span[], start: number, end: number): boolean {
  return spans.some(([a, b]) => a < end && start < b);
}

/** All number mentions in `text`, in order (digits inside a name are none: see the header). */
export function extractNumbers(text: string): NumberMention[] {
  const names = nameSpans(text);
  const out: NumberMention[] = [];
  for (const m of text.matchAll(NUMBER_RE)) {
    const g = m.groups ?? {};
    const num = Number((g['num'] ?? '').replaceAll(g['sep'] ?? ',', ''));
    if (!Number.isFinite(num)) continue;
    if (!g['cur'] && !g['magw'] && !g['unit'] && !g['mult']) {
      const start = (m.index ?? 0) + m[0].indexOf(g['num']!);
      if (overlaps(names, start, start + g['num']!.length)) continue;
    }
    const magKey = (g['magw'] ?? g['maga'] ?? '').trim().toLowerCase().replace(/s$/, '');
    const mag = magKey ? (MAGNITUDES[magKey] ?? 1) : 1;
    const unit = (g['unit'] ?? '').trim().toLowerCase();
    let kind: NumberKind = 'quantity';
    let value = num * mag;
    if (unit) {
      kind = 'ratio';
      value = unit.startsWith('b') ? value / 10000 : value / 100;
    } else if (g['mult']) {
      kind = 'multiple';
    }
    out.push({ text: m[0], index: m.index ?? 0, kind, value: Math.abs(value) });
  }
  return out;
}

/** Same kind and equal up to floating-point noise (relative 1e-9). */
export function sameNumber(a: NumberMention, b: NumberMention): boolean {
  if (a.kind !== b.kind) return false;
  const scale = Math.max(Math.abs(a.value), Math.abs(b.value));
  return Math.abs(a.value - b.value) <= 1e-9 * scale;
}

/** Mentions with equal (kind, value) collapsed to the first one. */
export function distinctNumbers(mentions: NumberMention[]): NumberMention[] {
  const out: NumberMention[] = [];
  for (const m of mentions) if (!out.some((o) => sameNumber(o, m))) out.push(m);
  return out;
}

/** A number-like run that extractNumbers does not read as a mention (see the header). */
export interface NumberLikeJunk {
  text: string;
  index: number;
}

// Digits joined by single '.' or ',' separators, optionally after a currency sign, not glued to a
// letter, digit or underscore on either side (nor continuing one through a separator: the "5.5"
// of "Q3.5.5" is no run of its own, and a run is never cut short before ".5"; nor an exponent).
const DIGIT_RUN_RE =
  /(?<![\p{L}\p{N}_]|[\p{L}\p{N}_][.,]|\d[eE][-+−])(?:(?:US\$|[$€£¥])\s?)?\d+(?:[.,]\d+)*(?![\p{L}\p{N}_]|[.,]\d)/gu;

/** Number-like runs of `text` that no mention of extractNumbers covers, in order. */
export function numberLikeJunk(text: string): NumberLikeJunk[] {
  const mentions = extractNumbers(text);
  const names = nameSpans(text);
  const out: NumberLikeJunk[] = [];
  for (const m of text.matchAll(DIGIT_RUN_RE)) {
    const start = m.index ?? 0;
    // The run proper starts at its first digit (a currency sign belongs to the mention when there is one).
    const first = start + m[0].search(/\d/);
    const end = start + m[0].length;
    const covered = mentions.some((n) => n.index <= first && n.index + n.text.length >= end);
    if (!covered && !overlaps(names, first, end)) out.push({ text: m[0], index: start });
  }
  return out;
}
