// chrF as sacrebleu (2.x) computes it with its defaults: char_order=6, word_order=0, beta=2,
// lowercase=False, whitespace=False, eps_smoothing=False. Scores are 0-100.
// Algorithm (Popovic 2015; sacrebleu's chrF++.py-compatible averaging):
//  remove all whitespace from hypothesis and reference; for n = 1..6 count character n-grams
//  (code points) of each, and the clipped matches. Sum the [hyp, ref, match] counts over the
//  corpus. Average precision (match/hyp) and recall (match/ref) over the orders where both hyp
//  and ref have n-grams (0 if none); score = 100 * (1+b^2) P R / (b^2 P + R), 0 if P + R = 0.
const CHAR_ORDER = 6;
const BETA = 2;

export type ChrfStats = number[]; // [hyp_1, ref_1, match_1, ..., hyp_6, ref_6, match_6]

/** A whitespace-free string and the UTF-16 offset of each code point (plus the end). */
interface CodePoints {
  text: string;
  offsets: Uint32Array;
  length: number;
}

function codePoints(s: string): CodePoints {
  const text = s.split(/\s+/).join('');
  const offsets = new Uint32Array(text.length + 1);
  let n = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    offsets[n++] = i;
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) i++;
    }
  }
  offsets[n] = text.length;
  return { text, offsets, length: n };
}

/** Counts of the n-grams of code points (keys are substrings: no per-n-gram arrays, so long texts stay fast). */
function charNgrams(cp: CodePoints, n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i + n <= cp.length; i++) {
    const k = cp.text.slice(cp.offsets[i], cp.offsets[i + n]);
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

/** Σ over keys of min(count in a, count in b), for two sorted key arrays. */
function sortedMinCountSum(a: Float64Array, b: Float64Array): number {
  let i = 0;
  let j = 0;
  let sum = 0;
  while (i < a.length && j < b.length) {
    if (a[i]! < b[j]!) i++;
    else if (a[i]! > b[j]!) j++;
    else {
      const k = a[i]!;
      let ca = 0;
      let cb = 0;
      while (i < a.length && a[i] === k) {
        i++;
        ca++;
      }
      while (j < b.length && b[j] === k) {
        j++;
        cb++;
      }
      sum += Math.min(ca, cb);
    }
  }
  return sum;
}

/**
 * Clipped n-gram matches for n = 1..CHAR_ORDER with each n-gram encoded as a number (code point ids
 * in base = alphabet size, exact while base^6 is a safe integer) and counted by sorting: long texts
 * take a few sorts of typed arrays instead of millions of string-keyed map entries. Null when the
 * alphabet is too large for exact keys.
 */
function numericMatches(hyp: CodePoints, ref: CodePoints): number[] | null {
  const alphabet = new Map<number, number>();
  const ids = (cp: CodePoints) =>
    Float64Array.from({ length: cp.length }, (_, i) => {
      const c = cp.text.codePointAt(cp.offsets[i]!)!;
      let id = alphabet.get(c);
      if (id === undefined) alphabet.set(c, (id = alphabet.size));
      return id;
    });
  const hIds = ids(hyp);
  const rIds = ids(ref);
  const base = Math.max(alphabet.size, 2);
  if (base ** CHAR_ORDER > Number.MAX_SAFE_INTEGER) return null;
  const matches: number[] = [];
  let hKeys = hIds.slice();
  let rKeys = rIds.slice();
  for (let n = 1; n <= CHAR_ORDER; n++) {
    if (n > 1) {
      hKeys = hKeys.subarray(0, Math.max(hKeys.length - 1, 0)).map((k, i) => k * base + hIds[i + n - 1]!);
      rKeys = rKeys.subarray(0, Math.max(rKeys.length - 1, 0)).map((k, i) => k * base + rIds[i + n - 1]!);
    }
    matches.push(sortedMinCountSum(hKeys.slice().sort(), rKeys.slice().sort()));
  }
  return matches;
}

export function chrfStats(hypothesis: string, reference: string): ChrfStats {
  const hyp = codePoints(hypothesis);
  const ref = codePoints(reference);
  const numeric = numericMatches(hyp, ref);
  const stats: number[] = [];
  for (let n = 1; n <= CHAR_ORDER; n++) {
    let match = numeric?.[n - 1] ?? 0;
    if (!numeric) {
      const h = charNgrams(hyp, n);
      const r = charNgrams(ref, n);
      for (const [k, c] of h) match += Math.min(c, r.get(k) ?? 0);
    }
    stats.push(Math.max(hyp.length - n + 1, 0), Math.max(ref.length - n + 1, 0), match);
  }
  return stats;
}

export function chrfFromStats(stats: ChrfStats): number {
  let p = 0;
  let r = 0;
  let order = 0;
  for (let i = 0; i < CHAR_ORDER; i++) {
    const nHyp = stats[3 * i]!;
    const nRef = stats[3 * i + 1]!;
    const nMatch = stats[3 * i + 2]!;
    if (nHyp > 0 && nRef > 0) {
      p += nMatch / nHyp;
      r += nMatch / nRef;
      order++;
    }
  }
  if (order === 0) return 0;
  p /= order;
  r /= order;
  if (p + r === 0) return 0;
  const b2 = BETA * BETA;
  return (100 * (1 + b2) * p * r) / (b2 * p + r);
}

export function sentenceChrf(hypothesis: string, reference: string): number {
  return chrfFromStats(chrfStats(hypothesis, reference));
}

export function corpusChrf(hypotheses: string[], references: string[]): number {
  if (hypotheses.length !== references.length) {
    throw new Error(`corpusChrf: ${hypotheses.length} hypotheses but ${references.length} references`);
  }
  return chrfFromStats(sumChrfStats(hypotheses.map((h, i) => chrfStats(h, references[i]!))));
}

/** Corpus statistics: the per-example statistics summed (so sentence and corpus chrF share one pass). */
export function sumChrfStats(all: readonly ChrfStats[]): ChrfStats {
  const sum = new Array<number>(CHAR_ORDER * 3).fill(0);
  for (const s of all) for (let k = 0; k < s.length; k++) sum[k]! += s[k]!;
  return sum;
}
