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

export interface RougeScore {
  precision: number;
  recall: number;
  f1: number;
}
export interface RougeResult {
  rouge1: RougeScore;
  rouge2: RougeScore;
  rougeL: RougeScore;
  /** ROUGE-L used only the first lcsMaxTokens tokens of a side. */
  lcsTruncated: boolean;
}
export interface RougeOptions {
  useStemmer?: boolean;
  /** ROUGE-L uses at most this many tokens of each side (default DEFAULT_LCS_MAX_TOKENS); see rougeL. */
  lcsMaxTokens?: number;
}

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

/** Positions of b per block of bit-vector words: bounds the masks' memory to (distinct tokens) × 8 KiB. */
const LCS_BLOCK_WORDS = 2048;

/**
 * Length of the longest common subsequence, exactly, by the bit-parallel algorithm (Hyyrö 2004,
 * "Bit-parallel LCS-length computation revisited"): one bit per position of `b`, all ones at the
 * start; for each token x of `a`, with M the positions of x in b and U = V & M,
 * V ← (V + U) | (V & ~M), the addition carrying across 32-bit words; the LCS is the number of
 * zero bits. O(|a|·|b|/32) word operations instead of the |a|·|b| cells of the DP table (16,000
 * words each: ~8M operations). `b` is processed in blocks of LCS_BLOCK_WORDS words, the carry out
 * of each block kept per token of `a`, so only one block's masks are held.
 */
export function lcsLength(a: readonly string[], b: readonly string[], blockWords: number = LCS_BLOCK_WORDS): number {
  if (a.length === 0 || b.length === 0) return 0;
  const ids = new Map<string, number>();
  const idOf = (t: string) => {
    let id = ids.get(t);
    if (id === undefined) ids.set(t, (id = ids.size));
    return id;
  };
  const bIds = Int32Array.from(b, idOf);
  // Tokens of a that never occur in b cannot match: id -1.
  const aIds = Int32Array.from(a, (t) => ids.get(t) ?? -1);
  const carries = new Uint8Array(a.length);
  const words = Math.ceil(b.length / 32);
  let zeros = 0;
  for (let start = 0; start < words; start += blockWords) {
    const bw = Math.min(blockWords, words - start);
    const masks = new Map<number, Uint32Array>();
    for (let p = start * 32; p < Math.min(b.length, (start + bw) * 32); p++) {
      const id = bIds[p]!;
      let m = masks.get(id);
      if (!m) masks.set(id, (m = new Uint32Array(bw)));
      const bit = p - start * 32;
      m[bit >>> 5] = (m[bit >>> 5]! | (1 << (bit & 31))) >>> 0;
    }
    const v = new Uint32Array(bw).fill(0xffffffff);
    for (let i = 0; i < a.length; i++) {
      const m = aIds[i]! >= 0 ? masks.get(aIds[i]!) : undefined;
      let carry = carries[i]!;
      if (!m) {
        // M = 0: V ← (V + carry) | V (a carry in from the previous block ripples through the ones).
        for (let j = 0; carry && j < bw; j++) {
          const vj = v[j]!;
          const sum = vj + 1;
          carry = sum > 0xffffffff ? 1 : 0;
          v[j] = ((sum >>> 0) | vj) >>> 0;
        }
      } else {
        for (let j = 0; j < bw; j++) {
          const vj = v[j]!;
          const mj = m[j]!;
          const sum = vj + ((vj & mj) >>> 0) + carry;
          carry = sum > 0xffffffff ? 1 : 0;
          v[j] = ((sum >>> 0) | (vj & ~mj)) >>> 0;
        }
      }
      carries[i] = carry;
    }
    const bits = Math.min(32 * bw, b.length - start * 32);
    for (let bit = 0; bit < bits; bit++) if (((v[bit >>> 5]! >>> (bit & 31)) & 1) === 0) zeros++;
  }
  return zeros;
}

/** Tokens per side beyond which ROUGE-L uses only the first ones (time ∝ the product of the lengths). */
export const DEFAULT_LCS_MAX_TOKENS = 50_000;

export function rougeL(
  refTokens: string[],
  predTokens: string[],
  maxTokens: number = DEFAULT_LCS_MAX_TOKENS,
): RougeScore {
  if (refTokens.length === 0 || predTokens.length === 0) return { precision: 0, recall: 0, f1: 0 };
  // Past the cap both sides are cut to their first maxTokens tokens (the caller warns).
  const ref = refTokens.length > maxTokens ? refTokens.slice(0, maxTokens) : refTokens;
  const pred = predTokens.length > maxTokens ? predTokens.slice(0, maxTokens) : predTokens;
  const lcs = lcsLength(ref, pred);
  const precision = lcs / pred.length;
  const recall = lcs / ref.length;
  return { precision, recall, f1: fmeasure(precision, recall) };
}

/** ROUGE-1, ROUGE-2 and ROUGE-L of one prediction against one reference. */
export function rouge(prediction: string, reference: string, opts: RougeOptions = {}): RougeResult {
  const stem = opts.useStemmer ?? false;
  const ref = rougeTokenize(reference, stem);
  const pred = rougeTokenize(prediction, stem);
  const max = opts.lcsMaxTokens ?? DEFAULT_LCS_MAX_TOKENS;
  return {
    rouge1: rougeN(ref, pred, 1),
    rouge2: rougeN(ref, pred, 2),
    rougeL: rougeL(ref, pred, max),
    lcsTruncated: ref.length > max || pred.length > max,
  };
}
