// Statistics vs scipy: inputs and expected values come from reference/eval/stats_reference.json,
// written by reference/eval/make_stats_reference.py (scipy.stats.wilcoxon defaults, ttest_rel,
// bootstrap). Bootstrap intervals can only agree up to Monte Carlo error (different RNGs).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import {
  averageRanks,
  bootstrapMeanCI,
  bootstrapStatistic,
  cohensDz,
  holm,
  pairedBootstrapCI,
  pairedPermutationTest,
  pairedTTest,
  pBetterFromTest,
  quantileSorted,
  sd,
  wilcoxon,
} from '../../../src/pipeline/eval/stats.js';

interface Case {
  name: string;
  base: number[];
  candidate: number[];
  wilcoxon: { statistic: number; pvalue: number };
  ttest_rel: { statistic: number; pvalue: number; df: number };
  dz: number;
  mean_diff: number;
  bootstrap_percentile_95: [number, number];
  n_zero: number;
  has_ties: boolean;
}
const ref = JSON.parse(
  readFileSync(new URL('../../../reference/eval/stats_reference.json', import.meta.url), 'utf8'),
) as {
  cases: Case[];
  holm: { p: number[]; adjusted: number[] }[];
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
      const expectedMethod =
        n > 50 ? 'asymptotic' : !c.has_ties && c.n_zero === 0 ? 'exact' : n <= 13 ? 'permutation' : 'asymptotic';
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
    const u = () => {
      state = (state * 1103515245 + 12345) % 2147483648;
      return (state + 0.5) / 2147483648;
    };
    for (let rep = 0; rep < 200; rep++) {
      const xs = Array.from({ length: 40 }, () => -Math.log(u()));
      const ci = bootstrapMeanCI(xs, { resamples: 1000, seed: rep });
      if (ci.low <= 1 && 1 <= ci.high) covered++;
    }
    expect(covered / 200).toBeGreaterThan(0.85);
    expect(covered / 200).toBeLessThan(0.99);
  });
});

describe('Holm and helpers', () => {
  for (const h of ref.holm) {
    it(`holm(${h.p.join(', ')})`, () => {
      holm(h.p).forEach((x, i) => {
        expect(x).toBeCloseTo(h.adjusted[i]!, 14);
      });
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

describe('P(better) and corpus-level tests', () => {
  it('pBetterFromTest is 1 - p/2 toward the favoured side, 1/2 without a direction', () => {
    expect(pBetterFromTest(0.04, 1, 30)).toBeCloseTo(0.98, 15);
    expect(pBetterFromTest(0.04, -1, 30)).toBeCloseTo(0.02, 15);
    expect(pBetterFromTest(1, 1, 30)).toBe(0.5);
    expect(pBetterFromTest(NaN, 0, 30)).toBe(0.5);
    expect(pBetterFromTest(0.3, 0, 30)).toBe(0.5);
    expect(pBetterFromTest(NaN, 0, 0)).toBeNaN();
  });
  it('wilcoxon reports the side the signed ranks favour', () => {
    expect(wilcoxon([0, 0, 0, 0], [1, 2, 3, -0.5]).direction).toBe(1);
    expect(wilcoxon([1, 2, 3, -0.5], [0, 0, 0, 0]).direction).toBe(-1);
    expect(wilcoxon([1, 2], [1, 2]).direction).toBe(0);
    // Ranks and mean can disagree: many small gains, one large loss.
    const base = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const cand = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, -5];
    expect(wilcoxon(base, cand).direction).toBe(1);
  });
  it('paired permutation test: exact answer for a tiny case, small p for a clear difference', () => {
    // n = 3 identical differences of +1 when unswapped: of the 8 swap patterns only the two with all
    // or none swapped reach |diff| = 3, so p -> (1 + 2/8 R) / (R + 1) ~ 0.25 for large R.
    const b = [0, 0, 0];
    const c = [1, 1, 1];
    const diffOf = (swap: Uint8Array) =>
      c.reduce((a, v, i) => a + (swap[i] ? b[i]! : v), 0) - b.reduce((a, v, i) => a + (swap[i] ? c[i]! : v), 0);
    const r = pairedPermutationTest(3, diffOf, { resamples: 20000, seed: 9 });
    expect(r.diff).toBe(3);
    expect(r.direction).toBe(1);
    expect(Math.abs(r.pValue - 0.25)).toBeLessThan(0.015); // binomial sd of the estimate ~0.003
    const n = 40;
    const big = pairedPermutationTest(
      n,
      (swap) => {
        let d = 0;
        for (let i = 0; i < n; i++) d += swap[i] ? -1 : 1;
        return d;
      },
      { resamples: 2000, seed: 3 },
    );
    expect(big.pValue).toBeCloseTo(1 / 2001, 12); // no resample reaches |40|
    expect(pairedPermutationTest(5, () => 0, { resamples: 100 }).pValue).toBe(1);
  });
  it('bootstrapStatistic of the mean equals bootstrapMeanCI with the same seed', () => {
    const xs = Array.from({ length: 25 }, (_, i) => ((i * 7) % 11) / 10);
    const a = bootstrapMeanCI(xs, { resamples: 500, seed: 4 });
    const b = bootstrapStatistic(
      xs.length,
      (idx) => {
        let s = 0;
        for (const i of idx) s += xs[i]!;
        return s / idx.length;
      },
      { resamples: 500, seed: 4 },
    );
    expect(b.estimate).toBeCloseTo(a.estimate, 14);
    expect(b.low).toBeCloseTo(a.low, 14);
    expect(b.high).toBeCloseTo(a.high, 14);
  });
});
