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

function charNgrams(chars: string[], n: number): Map<string, number> {
  const m = new Map<string, number>();
  for (let i = 0; i + n <= chars.length; i++) {
    const k = chars.slice(i, i + n).join('');
    m.set(k, (m.get(k) ?? 0) + 1);
  }
  return m;
}

export function chrfStats(hypothesis: string, reference: string): ChrfStats {
  const hyp = Array.from(hypothesis.split(/\s+/).join(''));
  const ref = Array.from(reference.split(/\s+/).join(''));
  const stats: number[] = [];
  for (let n = 1; n <= CHAR_ORDER; n++) {
    const h = charNgrams(hyp, n);
    const r = charNgrams(ref, n);
    let match = 0;
    for (const [k, c] of h) match += Math.min(c, r.get(k) ?? 0);
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
    if (nHyp > 0 && nRef > 0) { p += nMatch / nHyp; r += nMatch / nRef; order++; }
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
  const sum = new Array<number>(CHAR_ORDER * 3).fill(0);
  hypotheses.forEach((h, i) => {
    const s = chrfStats(h, references[i]!);
    for (let k = 0; k < s.length; k++) sum[k]! += s[k]!;
  });
  return chrfFromStats(sum);
}
