// The suite verdict (verdict.ts) and how compareResults reaches it: every verdict, the floors and
// their "near" margin, primary metrics that disagree, and P(better) never contradicting the test.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { compareResults } from '../../../src/pipeline/eval/compare.js';
import { type MetricGroup, scoreExamples } from '../../../src/pipeline/eval/metrics.js';
import type { Results } from '../../../src/pipeline/eval/results.js';
import { wilcoxon } from '../../../src/pipeline/eval/stats.js';
import {
  atFloor,
  decideVerdict,
  floorOf,
  NEAR_FLOOR,
  type PrimaryEvidence,
  primaryMetrics,
  suiteKind,
  verdictLine,
} from '../../../src/pipeline/eval/verdict.js';
import { testRng } from '../../helpers/index.js';

function evidence(metric: string, o: Partial<PrimaryEvidence> = {}): PrimaryEvidence {
  return {
    metric,
    higherIsBetter: true,
    verdict: 'no significant change',
    baseMean: 0.3,
    candidateMean: 0.3,
    pHolm: 0.5,
    candidateValue: 0.3,
    candidateN: 30,
    floor: floorOf(metric),
    ...o,
  };
}

describe('verdict rules', () => {
  it('reaches each of the four verdicts', () => {
    expect(
      decideVerdict('figure extraction', [
        evidence('exact_match', { verdict: 'improved', candidateMean: 0.6, candidateValue: 0.6, pHolm: 0.001 }),
        evidence('numeric_fidelity'),
      ]).verdict,
    ).toBe('improved');
    expect(
      decideVerdict('figure extraction', [
        evidence('exact_match', { verdict: 'regressed', pHolm: 0.01 }),
        evidence('numeric_fidelity'),
      ]).verdict,
    ).toBe('regressed');
    expect(
      decideVerdict('figure extraction', [
        evidence('exact_match'),
        evidence('numeric_fidelity', { verdict: 'not testable' }),
      ]).verdict,
    ).toBe('no significant change');
    expect(
      decideVerdict('figure extraction', [evidence('exact_match', { candidateValue: 0 }), evidence('numeric_fidelity')])
        .verdict,
    ).toBe('does not do the task');
  });
  it('a floor decides before any improvement, and the line says which metric and why', () => {
    const v = decideVerdict(
      'figure extraction',
      [
        evidence('exact_match', { candidateValue: 0, candidateMean: 0, baseMean: 0 }),
        evidence('numeric_fidelity', {
          verdict: 'improved',
          baseMean: 0,
          candidateMean: 0.4,
          candidateValue: 0.4,
          pHolm: 0.002,
        }),
      ],
      [],
      ['25 of 30 fine-tuned outputs are the same text "$1.1 million"'],
    );
    expect(v.verdict).toBe('does not do the task');
    const line = verdictLine('fin-figures', v);
    expect(line).toMatch(
      /^fin-figures: does not do the task — fine-tuned exact_match 0 is at or near its floor 0 \(no example right; near: ≤ 0\.05\)/,
    );
    expect(line).toContain('25 of 30 fine-tuned outputs');
    expect(line).toContain('improved: numeric_fidelity 0 → 0.4');
  });
  it('"near the floor" is within NEAR_FLOOR of the range, on the floor side, for both directions', () => {
    expect(NEAR_FLOOR).toBe(0.05);
    const em = floorOf('exact_match')!;
    expect(em).toMatchObject({ floor: 0, threshold: 0.05 });
    expect(atFloor(0.05, em, true)).toBe(true);
    expect(atFloor(0.0501, em, true)).toBe(false);
    const hr = floorOf('hallucinated_number_rate')!;
    expect(hr).toMatchObject({ floor: 1, threshold: 0.95 });
    expect(atFloor(0.95, hr, false)).toBe(true);
    expect(atFloor(0.9499, hr, false)).toBe(false);
    expect(floorOf('bleu')).toMatchObject({ floor: 0, threshold: 5 });
    expect(
      floorOf('label_correct', {
        majorityLabel: 'neutral',
        majorityCount: 12,
        n: 30,
        majorityShare: 0.4,
        majorityMacroF1: 0.19,
      }),
    ).toMatchObject({ floor: 0.4, threshold: 0.45 });
    expect(
      floorOf('label_macro_f1', {
        majorityLabel: 'neutral',
        majorityCount: 12,
        n: 30,
        majorityShare: 0.4,
        majorityMacroF1: 0.19,
      })!.threshold,
    ).toBeCloseTo(0.24, 12);
    expect(floorOf('embedding_cosine')).toBeUndefined();
    // No fine-tuned value (e.g. no output holds a number): the floor cannot apply.
    expect(
      decideVerdict('generation', [
        evidence('hallucinated_number_rate', {
          higherIsBetter: false,
          candidateValue: NaN,
          candidateN: 0,
          verdict: 'not testable',
        }),
      ]).verdict,
    ).toBe('no significant change');
  });
  it('primary metrics that disagree: a regression decides, and the improvement is named', () => {
    const v = decideVerdict('generation', [
      evidence('numeric_fidelity', {
        verdict: 'improved',
        baseMean: 0.2,
        candidateMean: 0.6,
        candidateValue: 0.6,
        pHolm: 0.001,
      }),
      evidence('hallucinated_number_rate', {
        higherIsBetter: false,
        verdict: 'regressed',
        baseMean: 0.2,
        candidateMean: 0.5,
        candidateValue: 0.5,
        pHolm: 0.01,
      }),
    ]);
    expect(v.verdict).toBe('regressed');
    expect(v.reasons.join('; ')).toMatch(
      /hallucinated_number_rate 0\.2 → 0\.5 .*although numeric_fidelity 0\.2 → 0\.6 .* improved: a regression on any primary metric decides/,
    );
  });
  it('primary metrics follow the task, with a stated fallback', () => {
    expect(suiteKind(['label_correct'])).toBe('classification');
    expect(suiteKind(['rougeL', 'exact_match', 'numeric_fidelity'])).toBe('figure extraction');
    expect(suiteKind(['rougeL', 'bleu', 'numeric_fidelity'])).toBe('generation');
    expect(primaryMetrics('figure extraction', ['rougeL', 'numeric_fidelity', 'exact_match'])).toEqual({
      primary: ['exact_match', 'numeric_fidelity'],
      note: null,
    });
    expect(primaryMetrics('generation', ['rouge1', 'hallucinated_number_rate', 'numeric_fidelity']).primary).toEqual([
      'numeric_fidelity',
      'hallucinated_number_rate',
    ]);
    const fb = primaryMetrics('generation', ['bleu', 'chrf']);
    expect(fb.primary).toEqual(['chrf']);
    expect(fb.note).toMatch(
      /primary metrics \(numeric_fidelity, hallucinated_number_rate\) are not scored in both files; chrf decides instead/,
    );
  });
});

// ---------------------------------------------------------------------------------------------
// End to end through compareResults, on the bundled eval suites.

interface Rec {
  id: string;
  context?: string;
  question?: string;
  answer?: string;
  text?: string;
  label?: string;
  source?: string;
  summary?: string;
}
const load = (name: string): Rec[] =>
  readFileSync(new URL(`../../../data/eval/${name}.jsonl`, import.meta.url), 'utf8')
    .trim()
    .split('\n')
    .slice(0, 30)
    .map((l) => JSON.parse(l) as Rec);

function results(
  adapter: string | null,
  task: string,
  inputs: { id: string; prediction: string; reference: string; source?: string }[],
  groups: MetricGroup[],
): Results {
  const scored = scoreExamples(inputs, { groups });
  return {
    model: 'fin-base',
    adapter,
    task,
    metrics: scored.metrics,
    per_example: inputs.map((x, i) => ({ ...x, scores: scored.per_example[i]!.scores })),
  };
}

describe('compareResults verdicts on the bundled suites', () => {
  const figures = load('fin-figures');
  const figs = (preds: (r: Rec, i: number) => string, adapter: string | null) =>
    results(
      adapter,
      'fin-figures',
      figures.map((r, i) => ({ id: r.id, prediction: preds(r, i), reference: r.answer!, source: r.context! })),
      ['exact', 'numeric', 'rouge'],
    );
  const base1111 = figs(() => '1'.repeat(40), null);

  it('fin-figures answering "$1.1 million" to 25 of 30: does not do the task, although ROUGE improved', () => {
    const cand = figs((_r, i) => (i < 25 ? '$1.1 million' : `$${i}.5 billion`), 'ft');
    const cmp = compareResults(base1111, cand, { resamples: 500 });
    expect(cmp.suite.kind).toBe('figure extraction');
    expect(cmp.suite.primary).toEqual(['exact_match', 'numeric_fidelity']);
    expect(cmp.metrics.slice(0, 2).map((m) => [m.metric, m.role])).toEqual([
      ['exact_match', 'primary'],
      ['numeric_fidelity', 'primary'],
    ]);
    expect(cmp.metrics.find((m) => m.metric === 'rougeL')).toMatchObject({ role: 'secondary', verdict: 'improved' });
    expect(cmp.suite.verdict).toBe('does not do the task');
    expect(verdictLine('fin-figures', cmp.suite)).toContain(
      '25 of 30 fine-tuned outputs are the same text "$1.1 million"',
    );
    expect(cmp.outputs.candidate).toMatchObject({ top: '$1.1 million', topCount: 25, n: 30 });
  });
  it('fin-figures right on 24 of 30: improved; right on 10 after 25: regressed', () => {
    const good = figs((r, i) => (i < 24 ? r.answer! : '$1.1 million'), 'ft');
    const up = compareResults(base1111, good, { resamples: 500 });
    expect(up.suite.verdict).toBe('improved');
    expect(up.primaryMetric).toBe('exact_match');
    const em = up.metrics.find((m) => m.metric === 'exact_match')!;
    expect(em.verdict).toBe('improved');
    expect(em.pBetter).toBeGreaterThan(1 - up.alpha / 2);
    const worse = figs((r, i) => (i < 10 ? r.answer! : 'not stated'), 'ft2');
    const down = compareResults(
      figs((r, i) => (i < 25 ? r.answer! : 'n/a'), null),
      worse,
      { resamples: 500 },
    );
    expect(down.suite.verdict).toBe('regressed');
  });
  it('fin-sentiment answering neutral to all: does not do the task, with the confusion matrix and label distribution', () => {
    const sent = load('fin-sentiment');
    const mk = (preds: (r: Rec, i: number) => string, adapter: string | null) =>
      results(
        adapter,
        'fin-sentiment',
        sent.map((r, i) => ({ id: r.id, prediction: preds(r, i), reference: r.label!, source: r.text! })),
        ['label'],
      );
    const gold = sent.map((r) => r.label!);
    const goldCounts = ['negative', 'neutral', 'positive'].map((l) => gold.filter((g) => g === l).length);
    const cmp = compareResults(
      mk(() => '1'.repeat(40), null),
      mk(() => 'Sentiment: neutral.', 'ft'),
      { resamples: 500, topK: 3 },
    );
    expect(cmp.suite.kind).toBe('classification');
    expect(cmp.suite.primary).toEqual(['label_correct', 'label_macro_f1']);
    expect(cmp.suite.verdict).toBe('does not do the task');
    expect(cmp.suite.reasons.join('; ')).toContain(`one label for every item: 'neutral' 30/30`);
    const cc = cmp.classification!;
    expect(cc.goldCounts).toEqual(goldCounts);
    expect(cc.candidateCounts).toEqual([0, 30, 0]);
    expect(cc.candidateConfusion).toEqual(goldCounts.map((g) => [0, g, 0]));
    expect(cc.totals).toEqual({ right: goldCounts[1], wrong: 30 - goldCounts[1]!, changed: 0 });
    expect(cc.right).toHaveLength(3);
    for (const e of cc.wrong) expect(e.gold).not.toBe('neutral');
    // Right on 27 of 30 against a base that answers neutral to all: both primary metrics improve.
    const good = compareResults(
      mk(() => 'Sentiment: neutral.', null),
      mk((r, i) => (i < 27 ? `Sentiment: ${r.label}.` : 'Sentiment: positive.'), 'ft'),
      { resamples: 2000 },
    );
    expect(good.suite.verdict).toBe('improved');
    const f1 = good.metrics.find((m) => m.metric === 'label_macro_f1')!;
    expect(f1).toMatchObject({ role: 'primary', perExample: false, test: 'paired permutation', verdict: 'improved' });
    expect(f1.pValue).toBeLessThan(0.01);
    expect(f1.diffCI.low).toBeGreaterThan(0);
    expect(good.classification!.totals.changed).toBeGreaterThan(0);
  });
  it('fin-summary where the fine-tuned figures are right but more numbers are invented: primary metrics disagree -> regressed', () => {
    const sums = load('fin-summary');
    const n = sums.length;
    // Per-example scores given directly: numeric fidelity up on every example, hallucination up on every example.
    const mk = (adapter: string | null, nf: (i: number) => number, hr: (i: number) => number): Results => ({
      model: 'fin-base',
      adapter,
      task: 'fin-summary',
      metrics: {},
      per_example: sums.map((r, i) => ({
        id: r.id,
        prediction: `p${i}`,
        reference: r.summary!,
        source: r.source!,
        scores: { numeric_fidelity: nf(i), hallucinated_number_rate: hr(i), rougeL: 0.3 },
      })),
    });
    const cmp = compareResults(
      mk(
        null,
        (i) => 0.2 + 0.01 * (i % 5),
        () => 0.1,
      ),
      mk(
        'ft',
        (i) => 0.7 + 0.01 * (i % 7),
        (i) => 0.4 + 0.01 * (i % 3),
      ),
      { resamples: 500 },
    );
    expect(n).toBe(30);
    expect(cmp.metrics.find((m) => m.metric === 'numeric_fidelity')!.verdict).toBe('improved');
    expect(cmp.metrics.find((m) => m.metric === 'hallucinated_number_rate')!.verdict).toBe('regressed');
    expect(cmp.suite.verdict).toBe('regressed');
  });
});

// ---------------------------------------------------------------------------------------------

describe('P(better) cannot contradict the test', () => {
  it('one nonzero difference among 30: p = 0.32, P(better) = 0.84 (a Bayesian bootstrap says 1)', () => {
    const base = new Array<number>(30).fill(0);
    const cand = base.map((_, i) => (i === 7 ? 0.4 : 0));
    // A Bayesian bootstrap gives 1.0 beside p = 0.32: every Dirichlet weight is positive, so each draw's weighted mean is > 0.
    const w = wilcoxon(base, cand);
    expect(w.pValue).toBeCloseTo(0.3173, 4);
    const r = (cand_: number[]): Results => ({
      model: 'm',
      adapter: null,
      task: 't',
      metrics: {},
      per_example: cand_.map((v, i) => ({ id: `e${i}`, prediction: '', reference: '', scores: { score: v } })),
    });
    const m = compareResults(r(base), r(cand), { resamples: 200 }).metrics[0]!;
    expect(m.verdict).toBe('no significant change');
    expect(m.pBetter).toBeCloseTo(1 - 0.3173 / 2, 4);
  });
  it('property over random paired samples: p = 2 min(P, 1 - P); improved <=> P > 1 - alpha/2; regressed <=> P < alpha/2', () => {
    const rng = testRng('P(better) vs p');
    const alpha = 0.05;
    const seen = { improved: 0, regressed: 0, same: 0 };
    for (let trial = 0; trial < 150; trial++) {
      const n = 3 + rng.int(58);
      const shift = (rng.uniform() - 0.5) * 0.8;
      const shape = trial % 3; // 0: continuous, 1: rounded (ties and zeros), 2: 0/1 scores
      const base: number[] = [];
      const cand: number[] = [];
      for (let i = 0; i < n; i++) {
        if (shape === 2) {
          base.push(rng.uniform() < 0.4 ? 1 : 0);
          cand.push(rng.uniform() < 0.4 + shift ? 1 : 0);
        } else {
          const b = rng.uniform();
          const c = b + shift + 0.3 * rng.normal();
          base.push(shape === 1 ? Math.round(b * 4) / 4 : b);
          cand.push(shape === 1 ? Math.round(c * 4) / 4 : c);
        }
      }
      const hib = trial % 4 !== 3;
      const metric = hib ? 'score' : 'hallucinated_number_rate';
      const r = (xs: number[]): Results => ({
        model: 'm',
        adapter: null,
        task: 't',
        metrics: {},
        per_example: xs.map((v, i) => ({ id: `e${i}`, prediction: '', reference: '', scores: { [metric]: v } })),
      });
      const m = compareResults(r(base), r(cand), { resamples: 100, alpha }).metrics[0]!;
      const label = `trial ${trial}: n ${n}, shape ${shape}, p ${m.pValue}, P ${m.pBetter}, ${m.verdict}`;
      expect(m.role, label).toBe('primary');
      expect(m.pHolm, label).toBe(Number.isNaN(m.pValue) ? 1 : m.pValue); // a family of one
      if (Number.isNaN(m.pValue)) {
        expect(m.pBetter, label).toBe(0.5);
        continue;
      }
      expect(Math.abs(m.pValue - 2 * Math.min(m.pBetter, 1 - m.pBetter)), label).toBeLessThan(1e-12);
      expect(m.verdict === 'improved', label).toBe(m.pBetter > 1 - alpha / 2);
      expect(m.verdict === 'regressed', label).toBe(m.pBetter < alpha / 2);
      // The direction is the test's: the signed ranks favour the better side.
      const w = wilcoxon(base, cand);
      if (m.verdict !== 'no significant change') expect(m.verdict === 'improved', label).toBe(w.direction > 0 === hib);
      seen[m.verdict === 'improved' ? 'improved' : m.verdict === 'regressed' ? 'regressed' : 'same']++;
    }
    // The random draws cover all three outcomes (otherwise the property above says little).
    expect(seen.improved).toBeGreaterThan(0);
    expect(seen.regressed).toBeGreaterThan(0);
    expect(seen.same).toBeGreaterThan(0);
  });
});
