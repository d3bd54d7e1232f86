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
// point(s)).
// Kinds: 'ratio' for percentages and basis points (value = percent/100 or bps/10000), 'quantity'
// for everything else (value = number * magnitude; a currency sign does not change the kind, so
// "1,200 million" matches "$1.2B"). Signs are dropped: "down 3%" and "-3%" both carry 0.03.
// A number glued to a letter, digit or underscore on either side (Q3, FY2024, 2Q23, 3rd, 1_000,
// 10K-style tokens that are not magnitudes) is not a mention, nor is the exponent of scientific
// notation ("1e-3", "1.5E+06": neither part is). Only ASCII digits are digits: "0x10", "1e3",
// "Infinity" and "0b1" are no mentions. Number words ("twelve") are not recognized.
//
// Number-like junk (numberLikeJunk): a run of digits joined by '.' or ',' that stands free of
// letters, like a mention, but is not read as one: "1.1.1.1", "$1.1.1.1", "1,2,3", or a digit run
// too long to be a finite double ("1111…" of 400 digits). It is no amount, yet a reader sees a
// figure; the hallucinated-number rate counts it (numeric.ts).

export type NumberKind = 'quantity' | 'ratio';

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
    String.raw`[-−–+]?` +
    String.raw`(?<num>[1-9]\d{0,2}(?<sep>[,${SPACE_SEPARATORS}])\d{3}(?:\k<sep>\d{3})*(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)` +
    String.raw`(?:(?<magw>\s?(?:thousand|million|billion|trillion|mn|mm|bn|tn)s?)|(?<maga>k|m|b)(?![\p{L}]))?` +
    String.raw`(?<unit>\s?(?:%|percent\b|per\s?cent\b|percentage\s+points?\b|pp\b|bps\b|bp\b|basis\s+points?\b))?` +
    String.raw`(?![\p{L}\p{N}_]|[.,]\d)`,
  'giu',
);

/** All number mentions in `text`, in order. */
export function extractNumbers(text: string): NumberMention[] {
  const out: NumberMention[] = [];
  for (const m of text.matchAll(NUMBER_RE)) {
    const g = m.groups ?? {};
    const num = Number((g['num'] ?? '').replaceAll(g['sep'] ?? ',', ''));
    if (!Number.isFinite(num)) continue;
    const magKey = (g['magw'] ?? g['maga'] ?? '').trim().toLowerCase().replace(/s$/, '');
    const mag = magKey ? (MAGNITUDES[magKey] ?? 1) : 1;
    const unit = (g['unit'] ?? '').trim().toLowerCase();
    let kind: NumberKind = 'quantity';
    let value = num * mag;
    if (unit) {
      kind = 'ratio';
      value = unit.startsWith('b') ? value / 10000 : value / 100;
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
  const out: NumberLikeJunk[] = [];
  for (const m of text.matchAll(DIGIT_RUN_RE)) {
    const start = m.index ?? 0;
    // The run proper starts at its first digit (a currency sign belongs to the mention when there is one).
    const first = start + m[0].search(/\d/);
    const end = start + m[0].length;
    const covered = mentions.some((n) => n.index <= first && n.index + n.text.length >= end);
    if (!covered) out.push({ text: m[0], index: start });
  }
  return out;
}
