// Plain references for the fast text-metric paths, written from the definitions with no tricks:
// the LCS dynamic-programming table, and n-gram counting with string keys.

/** Length of the longest common subsequence by the O(n·m) table. */
export function lcsDp(a: readonly string[], b: readonly string[]): number {
  let prev = new Array<number>(b.length + 1).fill(0);
  for (let i = 1; i <= a.length; i++) {
    const cur = new Array<number>(b.length + 1).fill(0);
    for (let j = 1; j <= b.length; j++)
      cur[j] = a[i - 1] === b[j - 1] ? prev[j - 1]! + 1 : Math.max(prev[j]!, cur[j - 1]!);
    prev = cur;
  }
  return prev[b.length]!;
}

function counts<T>(items: T[], key: (x: T) => string): Map<string, number> {
  const m = new Map<string, number>();
  for (const x of items) m.set(key(x), (m.get(key(x)) ?? 0) + 1);
  return m;
}

function clippedMatches(h: Map<string, number>, r: Map<string, number>): number {
  let s = 0;
  for (const [k, c] of h) s += Math.min(c, r.get(k) ?? 0);
  return s;
}

/** chrF statistics [hyp_n, ref_n, match_n] for n = 1..6 over code points, whitespace removed. */
export function chrfStatsRef(hyp: string, ref: string): number[] {
  const cp = (s: string) => Array.from(s.replace(/\s+/g, ''));
  const h = cp(hyp);
  const r = cp(ref);
  const grams = (xs: string[], n: number) =>
    Array.from({ length: Math.max(xs.length - n + 1, 0) }, (_, i) => xs.slice(i, i + n).join('\u0001'));
  const out: number[] = [];
  for (let n = 1; n <= 6; n++) {
    const hg = grams(h, n);
    const rg = grams(r, n);
    out.push(
      hg.length,
      rg.length,
      clippedMatches(
        counts(hg, (x) => x),
        counts(rg, (x) => x),
      ),
    );
  }
  return out;
}

/** BLEU clipped matches and totals per order 1..4 for already tokenized hypothesis and one reference. */
export function bleuCountsRef(hyp: string[], ref: string[]): { correct: number[]; total: number[] } {
  const grams = (xs: string[], n: number) =>
    Array.from({ length: Math.max(xs.length - n + 1, 0) }, (_, i) => JSON.stringify(xs.slice(i, i + n)));
  const correct: number[] = [];
  const total: number[] = [];
  for (let n = 1; n <= 4; n++) {
    const hg = grams(hyp, n);
    correct.push(
      clippedMatches(
        counts(hg, (x) => x),
        counts(grams(ref, n), (x) => x),
      ),
    );
    total.push(hg.length);
  }
  return { correct, total };
}
