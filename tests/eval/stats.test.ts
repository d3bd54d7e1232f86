// Statistics vs scipy: inputs and expected values come from tests/reference/eval/stats_reference.json,
// written by tests/reference/eval/make_stats_reference.py (scipy.stats.wilcoxon defaults, ttest_rel,
// bootstrap). Bootstrap intervals can only agree up to Monte Carlo error (different RNGs).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  averageRanks, bayesianBootstrap, bootstrapMeanCI, cohensDz, holm, pairedBootstrapCI, pairedTTest,
  quantileSorted, sd, wilcoxon,
} from '../../src/pipeline/eval/stats.js';

interface Case {
  name: string; base: number[]; candidate: number[];
  wilcoxon: { statistic: number; pvalue: number };
  ttest_rel: { statistic: number; pvalue: number; df: number };
  dz: number; mean_diff: number; bootstrap_percentile_95: [number, number]; n_zero: number; has_ties: boolean;
}
const ref = JSON.parse(readFileSync(new URL('../reference/eval/stats_reference.json', import.meta.url), 'utf8')) as {
  cases: Case[]; holm: { p: number[]; adjusted: number[] }[];
};

function relClose(actual: number, expected: number, rel: number): void {
  expect(Math.abs(actual - expected)).toBeLessThanOrEqual(rel * Math.max(Math.abs(expected), 1e-300));
}

describe('wilcoxon matches scipy.stats.wilcoxon defaults', () => {
  for (const c of ref.cases) {
    it(c.name, () => {
      const r = wilcoxon(c.base, c.candidate);
      expect(r.statistic).toBeCloseTo(c.wilcoxon.statistic, 9);
      relClose(r.pValue, c.wilcoxon.pvalue, 1e-9);
      const n = c.base.length;
      const expectedMethod = n > 50 ? 'asymptotic' : !c.has_ties && c.n_zero === 0 ? 'exact' : n <= 13 ? 'permutation' : 'asymptotic';
      expect(r.method).toBe(expectedMethod);
    });
  }
  it('covers every method branch', () => {
    const methods = new Set(ref.cases.map((c) => wilcoxon(c.base, c.candidate).method));
    expect([...methods].sort()).toEqual(['asymptotic', 'exact', 'permutation']);
  });
  it('is symmetric in the order of the samples', () => {
    const c = ref.cases[1]!;
    const a = wilcoxon(c.base, c.candidate);
    const b = wilcoxon(c.candidate, c.base);
    expect(b.pValue).toBeCloseTo(a.pValue, 12);
    expect(b.statistic).toBe(a.statistic);
  });
  it('gives NaN when every difference is zero', () => {
    expect(wilcoxon([1, 2, 3], [1, 2, 3]).pValue).toBeNaN();
  });
});

describe('paired t-test and effect size match scipy', () => {
  for (const c of ref.cases) {
    it(c.name, () => {
      const t = pairedTTest(c.base, c.candidate);
      relClose(t.t, c.ttest_rel.statistic, 1e-10);
      expect(t.df).toBe(c.ttest_rel.df);
      relClose(t.pValue, c.ttest_rel.pvalue, 1e-8);
      relClose(cohensDz(c.base, c.candidate), c.dz, 1e-10);
    });
  }
  it('rejects unequal lengths', () => {
    expect(() => pairedTTest([1, 2], [1])).toThrow(/2 base scores but 1 candidate/);
  });
});

describe('bootstrap', () => {
  for (const name of ['exact_n50', 'asymptotic_n120', 'asymptotic_ties_zeros_n40']) {
    it(`percentile CI agrees with scipy.stats.bootstrap up to Monte Carlo error (${name})`, () => {
      const c = ref.cases.find((x) => x.name === name)!;
      const ci = pairedBootstrapCI(c.base, c.candidate, { resamples: 20000, seed: 3 });
      const d = c.candidate.map((x, i) => x - c.base[i]!);
      const se = sd(d) / Math.sqrt(d.length);
      expect(ci.estimate).toBeCloseTo(c.mean_diff, 12);
      expect(Math.abs(ci.low - c.bootstrap_percentile_95[0])).toBeLessThan(0.1 * se);
      expect(Math.abs(ci.high - c.bootstrap_percentile_95[1])).toBeLessThan(0.1 * se);
      expect(ci.low).toBeLessThan(ci.estimate);
      expect(ci.high).toBeGreaterThan(ci.estimate);
    });
  }
  it('is reproducible for a seed and changes with the seed', () => {
    const c = ref.cases[2]!;
    const a = pairedBootstrapCI(c.base, c.candidate, { seed: 11, resamples: 2000 });
    const b = pairedBootstrapCI(c.base, c.candidate, { seed: 11, resamples: 2000 });
    const other = pairedBootstrapCI(c.base, c.candidate, { seed: 12, resamples: 2000 });
    expect(b).toEqual(a);
    expect(other.low).not.toBe(a.low);
  });
  it('has close to nominal coverage on simulated data', () => {
    // 200 samples of n = 40 from a skewed distribution with known mean 1 (Exp(1)).
    let covered = 0;
    let state = 99;
    const u = () => { state = (state * 1103515245 + 12345) % 2147483648; return (state + 0.5) / 2147483648; };
    for (let rep = 0; rep < 200; rep++) {
      const xs = Array.from({ length: 40 }, () => -Math.log(u()));
      const ci = bootstrapMeanCI(xs, { resamples: 1000, seed: rep });
      if (ci.low <= 1 && 1 <= ci.high) covered++;
    }
    expect(covered / 200).toBeGreaterThan(0.85);
    expect(covered / 200).toBeLessThan(0.99);
  });
});

describe('Bayesian bootstrap', () => {
  it('is near 1 when the candidate is clearly better, near 0 when clearly worse', () => {
    const worse = ref.cases.find((x) => x.name === 'worse_n30')!;
    expect(bayesianBootstrap(worse.base, worse.candidate).pBetter).toBeLessThan(0.001);
    expect(bayesianBootstrap(worse.candidate, worse.base).pBetter).toBeGreaterThan(0.999);
    expect(bayesianBootstrap(worse.base, worse.candidate, { higherIsBetter: false }).pBetter).toBeGreaterThan(0.999);
  });
  it('is about one half with no difference, and its mean tracks the mean difference', () => {
    const base = Array.from({ length: 50 }, (_, i) => (i * 37) % 11);
    const cand = base.map((x, i) => x + (i % 2 === 0 ? 1 : -1));
    const r = bayesianBootstrap(base, cand, { draws: 4000, seed: 5 });
    expect(r.pBetter).toBeGreaterThan(0.35);
    expect(r.pBetter).toBeLessThan(0.65);
    const c = ref.cases.find((x) => x.name === 'asymptotic_n120')!;
    const r2 = bayesianBootstrap(c.base, c.candidate, { draws: 4000, seed: 5 });
    expect(Math.abs(r2.posteriorMean - c.mean_diff)).toBeLessThan(0.002);
    expect(r2.low).toBeLessThan(c.mean_diff);
    expect(r2.high).toBeGreaterThan(c.mean_diff);
    // Wilcoxon p ~ 0.004 for this case: the posterior should favour the candidate strongly.
    expect(r2.pBetter).toBeGreaterThan(0.99);
  });
  it('counts all-zero differences as a tie', () => {
    expect(bayesianBootstrap([1, 2, 3], [1, 2, 3]).pBetter).toBe(0.5);
  });
});

describe('Holm and helpers', () => {
  for (const h of ref.holm) {
    it(`holm(${h.p.join(', ')})`, () => {
      holm(h.p).forEach((x, i) => expect(x).toBeCloseTo(h.adjusted[i]!, 14));
    });
  }
  it('treats NaN as 1', () => {
    expect(holm([NaN, 0.01])).toEqual([1, 0.02]);
  });
  it('average ranks with ties', () => {
    expect(averageRanks([3, 1, 3, 2])).toEqual({ ranks: [3.5, 1, 3.5, 2], tieSizes: [1, 1, 2] });
  });
  it('linear-interpolation quantile as numpy.percentile', () => {
    expect(quantileSorted([1, 2, 3, 4], 0.25)).toBeCloseTo(1.75, 15);
    expect(quantileSorted([10], 0.975)).toBe(10);
  });
});
