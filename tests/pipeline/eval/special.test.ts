// Special functions vs scipy.stats.norm.sf / scipy.stats.t.sf (values in
// reference/eval/stats_reference.json, from make_stats_reference.py).
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { betaInc, logGamma, makeRng, normalSf, studentTSf } from '../../../src/pipeline/eval/special.js';

const ref = JSON.parse(
  readFileSync(new URL('../../../reference/eval/stats_reference.json', import.meta.url), 'utf8'),
) as {
  special: { norm_sf: [number, number][]; t_sf: [number, number, number][] };
};

describe('special functions', () => {
  for (const [z, p] of ref.special.norm_sf) {
    it(`normalSf(${z})`, () => {
      expect(Math.abs(normalSf(z) - p)).toBeLessThanOrEqual(1e-12 * p);
    });
  }
  for (const [t, df, p] of ref.special.t_sf) {
    it(`studentTSf(${t}, ${df})`, () => {
      expect(Math.abs(studentTSf(t, df) - p)).toBeLessThanOrEqual(1e-10 * p);
    });
  }
  it('logGamma at known points', () => {
    expect(logGamma(1)).toBeCloseTo(0, 13);
    expect(logGamma(0.5)).toBeCloseTo(Math.log(Math.sqrt(Math.PI)), 13);
    expect(logGamma(10)).toBeCloseTo(Math.log(362880), 11);
  });
  it('betaInc limits and symmetry', () => {
    expect(betaInc(2, 3, 0)).toBe(0);
    expect(betaInc(2, 3, 1)).toBe(1);
    expect(betaInc(2.5, 1.5, 0.3) + betaInc(1.5, 2.5, 0.7)).toBeCloseTo(1, 13);
    // I_x(1, 1) = x
    expect(betaInc(1, 1, 0.37)).toBeCloseTo(0.37, 13);
  });
  it('seeded RNG is deterministic and roughly uniform', () => {
    const a = makeRng(42);
    const b = makeRng(42);
    const xs = Array.from({ length: 20000 }, () => a());
    expect(Array.from({ length: 5 }, () => b())).toEqual(xs.slice(0, 5));
    const m = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(m).toBeGreaterThan(0.49);
    expect(m).toBeLessThan(0.51);
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(makeRng(43)()).not.toBe(makeRng(42)());
  });
});
