// ROUGE-1/2/L F1 computed as Google's `rouge-score` package does (RougeScorer.score(target,
// prediction) with the default tokenizer):
//   tokenize: lowercase; every run of characters outside [a-z0-9] becomes a space; split on
//   whitespace; if stemming, Porter-stem tokens longer than 3 characters; keep tokens matching
//   ^[a-z0-9]+$ (drops the empty strings the split leaves).
//   rouge-N: clipped n-gram overlap; precision = overlap / max(#prediction n-grams, 1), recall =
//   overlap / max(#reference n-grams, 1); F1 = 2PR/(P+R), 0 when P+R = 0.
//   rouge-L: LCS of the two token lists; P = LCS/|prediction|, R = LCS/|reference|; all zero when
//   either side has no tokens. (Sentence-level rougeL, not rougeLsum.)
// Corpus figures are plain means of the per-example F1 values, as rouge-score users normally report.
import { porterStem } from './porter.js';

export interface RougeScore { precision: number; recall: number; f1: number }
export interface RougeResult { rouge1: RougeScore; rouge2: RougeScore; rougeL: RougeScore }
export interface RougeOptions { useStemmer?: boolean }

/** rouge-score's DefaultTokenizer. */
export function rougeTokenize(text: string, useStemmer = false): string[] {
  const cleaned = text.toLowerCase().replace(/[^a-z0-9]+/g, ' ');
  let tokens = cleaned.split(/\s+/);
  if (useStemmer) tokens = tokens.map((t) => (t.length > 3 ? porterStem(t) : t));
  return tokens.filter((t) => /^[a-z0-9]+$/.test(t));
}

function fmeasure(precision: number, recall: number): number {
  return precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
}

function ngramCounts(tokens: string[], n: number): Map<string, number> {
  const counts = new Map<string, number>();
  for (let i = 0; i + n <= tokens.length; i++) {
    const key = tokens.slice(i, i + n).join('\u0000');
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return counts;
}

/** ROUGE-N between token lists (reference first, as rouge-score's `target`). */
export function rougeN(refTokens: string[], predTokens: string[], n: number): RougeScore {
  const ref = ngramCounts(refTokens, n);
  const pred = ngramCounts(predTokens, n);
  let overlap = 0;
  for (const [k, c] of ref) overlap += Math.min(c, pred.get(k) ?? 0);
  let refTotal = 0;
  for (const c of ref.values()) refTotal += c;
  let predTotal = 0;
  for (const c of pred.values()) predTotal += c;
  const precision = overlap / Math.max(predTotal, 1);
  const recall = overlap / Math.max(refTotal, 1);
  return { precision, recall, f1: fmeasure(precision, recall) };
}

/** Length of the longest common subsequence (O(n*m) time, O(m) memory). */
export function lcsLength(a: string[], b: string[]): number {
  const row = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    let diag = 0;
    for (let j = 1; j <= b.length; j++) {
      const up = row[j]!;
      row[j] = a[i - 1] === b[j - 1] ? diag + 1 : Math.max(up, row[j - 1]!);
      diag = up;
    }
  }
  return row[b.length]!;
}

export function rougeL(refTokens: string[], predTokens: string[]): RougeScore {
  if (refTokens.length === 0 || predTokens.length === 0) return { precision: 0, recall: 0, f1: 0 };
  const lcs = lcsLength(refTokens, predTokens);
  const precision = lcs / predTokens.length;
  const recall = lcs / refTokens.length;
  return { precision, recall, f1: fmeasure(precision, recall) };
}

/** ROUGE-1, ROUGE-2 and ROUGE-L of one prediction against one reference. */
export function rouge(prediction: string, reference: string, opts: RougeOptions = {}): RougeResult {
  const stem = opts.useStemmer ?? false;
  const ref = rougeTokenize(reference, stem);
  const pred = rougeTokenize(prediction, stem);
  return { rouge1: rougeN(ref, pred, 1), rouge2: rougeN(ref, pred, 2), rougeL: rougeL(ref, pred) };
}
