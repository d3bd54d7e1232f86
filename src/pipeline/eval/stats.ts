// Paired statistics for comparing a candidate (fine-tuned) model with a base model on the same
// examples. All take two equal-length arrays of per-example scores, base first; differences are
// d = candidate - base. Reference behaviour is scipy's (reference/eval/make_stats_reference.py).
import { makeRng, normalSf, studentTSf } from './special.js';

function checkPaired(base: readonly number[], cand: readonly number[], what: string): number[] {
  if (base.length !== cand.length)
    throw new Error(`${what}: ${base.length} base scores but ${cand.length} candidate scores`);
  const d = cand.map((c, i) => c - base[i]!);
  if (d.some((x) => !Number.isFinite(x))) throw new Error(`${what}: scores must be finite numbers`);
  return d;
}

export function mean(xs: readonly number[]): number {
  let s = 0;
  for (const x of xs) s += x;
  return xs.length ? s / xs.length : NaN;
}

/** Sample standard deviation (ddof = 1). */
export function sd(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = mean(xs);
  let s = 0;
  for (const x of xs) s += (x - m) * (x - m);
  return Math.sqrt(s / (xs.length - 1));
}

/** numpy.percentile's default (linear interpolation, "type 7") on sorted data; q in [0, 1]. */
export function quantileSorted(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return NaN;
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (pos - lo) * (sorted[hi]! - sorted[lo]!);
}

// ---------------------------------------------------------------------------------------------
// Wilcoxon signed-rank test, matching scipy.stats.wilcoxon(x=candidate, y=base) with its defaults
// (zero_method='wilcox', correction=False, alternative='two-sided', method='auto'), scipy >= 1.15:
//  zeros are dropped; |d| ranked with average ranks for ties; r+ = sum of ranks of positive d;
//  statistic = min(r+, r-). With n (all pairs, zeros included) > 50 -> normal approximation.
//  Otherwise no ties and no zeros -> exact null distribution of r+; ties or zeros and n <= 13 ->
//  exact permutation test over all sign flips; else normal approximation with
//  se = sqrt((m(m+1)(2m+1) - sum(t^3 - t)/2) / 24), m = nonzero count, z = (r+ - m(m+1)/4)/se,
//  p = 2 * P(Z > |z|).

export type WilcoxonMethod = 'exact' | 'permutation' | 'asymptotic';

export interface WilcoxonResult {
  statistic: number;
  pValue: number;
  method: WilcoxonMethod;
  /** z of the normal approximation (NaN unless method is 'asymptotic'). */
  z: number;
  /** Pairs left after dropping zero differences. */
  nNonZero: number;
  /** Which side the signed ranks favour: sign(r+ - r-), with d = candidate - base (0: balanced or no nonzero d). */
  direction: -1 | 0 | 1;
}

/** Average ranks (1-based) of values; also the sizes of each tie group. */
export function averageRanks(values: readonly number[]): { ranks: number[]; tieSizes: number[] } {
  const idx = values.map((_, i) => i).sort((a, b) => values[a]! - values[b]!);
  const ranks = new Array<number>(values.length);
  const tieSizes: number[] = [];
  let i = 0;
  while (i < idx.length) {
    let j = i;
    while (j + 1 < idx.length && values[idx[j + 1]!] === values[idx[i]!]) j++;
    const r = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) ranks[idx[k]!] = r;
    tieSizes.push(j - i + 1);
    i = j + 1;
  }
  return { ranks, tieSizes };
}

/** Exact null distribution of r+ for n untied ranks: counts[k] = #subsets of {1..n} summing to k. */
function signedRankCounts(n: number): number[] {
  const max = (n * (n + 1)) / 2;
  const counts = new Array<number>(max + 1).fill(0);
  counts[0] = 1;
  for (let r = 1; r <= n; r++) {
    for (let k = max; k >= r; k--) counts[k]! += counts[k - r]!;
  }
  return counts;
}

export function wilcoxon(base: readonly number[], candidate: readonly number[]): WilcoxonResult {
  const dAll = checkPaired(base, candidate, 'wilcoxon');
  const nAll = dAll.length;
  const d = dAll.filter((x) => x !== 0);
  const m = d.length;
  const { ranks, tieSizes } = averageRanks(d.map(Math.abs));
  let rPlus = 0;
  let rMinus = 0;
  d.forEach((x, i) => {
    if (x > 0) rPlus += ranks[i]!;
    else rMinus += ranks[i]!;
  });
  const statistic = Math.min(rPlus, rMinus);
  const hasTies = tieSizes.some((t) => t > 1);
  const hasZeros = m < nAll;
  const direction = rPlus > rMinus ? 1 : rPlus < rMinus ? -1 : 0;
  if (nAll === 0 || m === 0) return { statistic, pValue: NaN, method: 'asymptotic', z: NaN, nNonZero: m, direction };

  let method: WilcoxonMethod;
  if (nAll > 50) method = 'asymptotic';
  else if (!hasTies && !hasZeros) method = 'exact';
  else if (nAll <= 13) method = 'permutation';
  else method = 'asymptotic';

  if (method === 'exact') {
    const counts = signedRankCounts(m);
    const total = 2 ** m;
    const k = Math.round(rPlus);
    let cdf = 0;
    for (let i = 0; i <= k; i++) cdf += counts[i]!;
    let sf = 0;
    for (let i = k; i < counts.length; i++) sf += counts[i]!;
    const p = Math.min(1, (2 * Math.min(cdf, sf)) / total);
    return { statistic, pValue: p, method, z: NaN, nNonZero: m, direction };
  }
  if (method === 'permutation') {
    // Every assignment of signs to the nonzero |d| (flipping a zero changes nothing, so the
    // proportions equal those over all 2^n flips scipy enumerates).
    const total = 2 ** m;
    const gamma = Math.abs(rPlus) * 2.220446049250313e-14;
    let le = 0;
    let ge = 0;
    for (let mask = 0; mask < total; mask++) {
      let s = 0;
      for (let i = 0; i < m; i++) if (mask & (1 << i)) s += ranks[i]!;
      if (s <= rPlus + gamma) le++;
      if (s >= rPlus - gamma) ge++;
    }
    const p = Math.min(1, (2 * Math.min(le, ge)) / total);
    return { statistic, pValue: p, method, z: NaN, nNonZero: m, direction };
  }
  const mn = (m * (m + 1)) / 4;
  const tieCorrection = tieSizes.reduce((a, t) => a + t * t * t - t, 0);
  const se = Math.sqrt((m * (m + 1) * (2 * m + 1) - tieCorrection / 2) / 24);
  const z = (rPlus - mn) / se;
  const p = Math.min(1, 2 * normalSf(Math.abs(z)));
  return { statistic, pValue: p, method, z: -Math.abs(z), nNonZero: m, direction };
}

// ---------------------------------------------------------------------------------------------

export interface TTestResult {
  t: number;
  df: number;
  pValue: number;
}

/** Two-sided paired t-test, as scipy.stats.ttest_rel(candidate, base). */
export function pairedTTest(base: readonly number[], candidate: readonly number[]): TTestResult {
  const d = checkPaired(base, candidate, 'pairedTTest');
  const n = d.length;
  const df = n - 1;
  if (n < 2) return { t: NaN, df, pValue: NaN };
  const m = mean(d);
  const s = sd(d);
  const t = m / (s / Math.sqrt(n));
  if (Number.isNaN(t)) return { t, df, pValue: NaN };
  return { t, df, pValue: Math.min(1, 2 * studentTSf(Math.abs(t), df)) };
}

/** Cohen's d_z: mean of the paired differences over their sample standard deviation. */
export function cohensDz(base: readonly number[], candidate: readonly number[]): number {
  const d = checkPaired(base, candidate, 'cohensDz');
  return mean(d) / sd(d);
}

// ---------------------------------------------------------------------------------------------

export interface BootstrapOptions {
  resamples?: number;
  confidence?: number;
  seed?: number;
}
export interface BootstrapCI {
  estimate: number;
  low: number;
  high: number;
  confidence: number;
  resamples: number;
  seed: number;
}

/** Percentile bootstrap CI of mean(candidate - base), resampling pairs with replacement. */
export function pairedBootstrapCI(
  base: readonly number[],
  candidate: readonly number[],
  opts: BootstrapOptions = {},
): BootstrapCI {
  const d = checkPaired(base, candidate, 'pairedBootstrapCI');
  return bootstrapMeanCI(d, opts);
}

/** Percentile bootstrap CI of the mean of one sample. */
export function bootstrapMeanCI(xs: readonly number[], opts: BootstrapOptions = {}): BootstrapCI {
  const n = xs.length;
  return bootstrapStatistic(
    n,
    (idx) => {
      let s = 0;
      for (let i = 0; i < n; i++) s += xs[idx[i]!]!;
      return s / n;
    },
    opts,
  );
}

// ---------------------------------------------------------------------------------------------
// P(better), and tests of corpus-level statistics.

/**
 * P(better) of a two-sided paired test: 1 - p/2 when the test's statistic points to the candidate
 * being better, p/2 when it points to worse, 1/2 when it points nowhere (every difference zero, or
 * balanced). It is the test's one-sided confidence that the candidate is better; under the normal
 * approximation, the posterior probability of a shift in the candidate's favour given a flat prior
 * on the shift. By construction p = 2 min(P, 1 - P): P(better) > 1 - alpha/2 exactly when p < alpha
 * and the statistic favours the candidate, so it cannot contradict the test. (A Bayesian bootstrap
 * of the mean difference can: every Dirichlet weight is positive, so when all nonzero differences
 * share one sign every draw does too, and one nonzero difference among 30 gives 1 beside a
 * Wilcoxon p of 0.32.) NaN when n is 0.
 * `better` is the statistic's direction in the metric's better sense (+1 better, -1 worse).
 */
export function pBetterFromTest(pTwoSided: number, better: -1 | 0 | 1, n: number): number {
  if (n === 0) return NaN;
  if (Number.isNaN(pTwoSided) || better === 0) return 0.5;
  const half = Math.min(1, pTwoSided) / 2;
  return better > 0 ? 1 - half : half;
}

export interface PermutationTestResult {
  /** statistic(candidate) - statistic(base) on the data as observed. */
  diff: number;
  /** Two-sided: (1 + #{resamples with |diff*| >= |diff|}) / (resamples + 1). */
  pValue: number;
  direction: -1 | 0 | 1;
  resamples: number;
  seed: number;
}

/**
 * Paired approximate randomization test of a corpus-level statistic (e.g. macro-F1): under the null
 * the two systems' outputs of each example are exchangeable, so each resample swaps them with
 * probability 1/2. `diffOf(swap)` returns statistic(candidate) - statistic(base) with the outputs
 * of example i swapped where swap[i] is 1. Differences within 1e-12 of |diff| count as extreme.
 */
export function pairedPermutationTest(
  n: number,
  diffOf: (swap: Uint8Array) => number,
  opts: { resamples?: number; seed?: number } = {},
): PermutationTestResult {
  const resamples = opts.resamples ?? 10000;
  const seed = opts.seed ?? 24680;
  const swap = new Uint8Array(n);
  const diff = diffOf(swap);
  const direction = diff > 1e-12 ? 1 : diff < -1e-12 ? -1 : 0;
  const rng = makeRng(seed);
  let extreme = 0;
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < n; i++) swap[i] = rng() < 0.5 ? 1 : 0;
    if (Math.abs(diffOf(swap)) >= Math.abs(diff) - 1e-12) extreme++;
  }
  return { diff, pValue: (1 + extreme) / (resamples + 1), direction, resamples, seed };
}

/**
 * Percentile bootstrap CI of a statistic of n examples: `statOf(idx)` computes it on the examples
 * idx[0..n) (drawn with replacement). A paired difference resamples both systems with the same idx.
 */
export function bootstrapStatistic(
  n: number,
  statOf: (idx: Int32Array) => number,
  opts: BootstrapOptions = {},
): BootstrapCI {
  const resamples = opts.resamples ?? 10000;
  const confidence = opts.confidence ?? 0.95;
  const seed = opts.seed ?? 12345;
  if (n === 0) return { estimate: NaN, low: NaN, high: NaN, confidence, resamples, seed };
  const rng = makeRng(seed);
  const idx = new Int32Array(n);
  const stats = new Float64Array(resamples);
  for (let b = 0; b < resamples; b++) {
    for (let i = 0; i < n; i++) idx[i] = Math.floor(rng() * n);
    stats[b] = statOf(idx);
  }
  stats.sort();
  const sorted = Array.from(stats);
  const alpha = 1 - confidence;
  const all = Int32Array.from({ length: n }, (_, i) => i);
  return {
    estimate: statOf(all),
    low: quantileSorted(sorted, alpha / 2),
    high: quantileSorted(sorted, 1 - alpha / 2),
    confidence,
    resamples,
    seed,
  };
}

/** Holm-Bonferroni adjusted p-values (same order as the input; NaN is treated as 1). */
export function holm(pValues: readonly number[]): number[] {
  const m = pValues.length;
  const p = pValues.map((x) => (Number.isNaN(x) ? 1 : x));
  const order = p.map((_, i) => i).sort((a, b) => p[a]! - p[b]!);
  const adjusted = new Array<number>(m);
  let running = 0;
  order.forEach((idx, rank) => {
    running = Math.max(running, Math.min(1, (m - rank) * p[idx]!));
    adjusted[idx] = running;
  });
  return adjusted;
}
