// Base vs candidate comparison: pairs the examples of two results files by id and runs the paired
// statistics of stats.ts on every metric both files score per example.
import { InputError } from '../../errors.js';
import { higherIsBetter, metricInfo } from './metrics.js';
import type { Results, TrainingLogPoint } from './results.js';
import {
  bayesianBootstrap, bootstrapMeanCI, cohensDz, holm, mean, pairedBootstrapCI, pairedTTest, wilcoxon,
  type BayesianBootstrapResult, type BootstrapCI, type TTestResult, type WilcoxonResult,
} from './stats.js';

export interface CompareOptions {
  /** Family-wise significance level for the Holm-corrected Wilcoxon p-values. Default 0.05. */
  alpha?: number;
  resamples?: number;
  seed?: number;
  /** Metric used to rank improved/regressed examples; default the first of rougeL, chrf, bleu, ... present. */
  primaryMetric?: string;
  /** How many improved and regressed examples to list. Default 5. */
  topK?: number;
  baseFile?: string;
  candidateFile?: string;
}

export type Verdict = 'improved' | 'regressed' | 'no significant difference' | 'not testable';

export interface MetricComparison {
  metric: string;
  description: string;
  higherIsBetter: boolean;
  /** Pairs where both models have a value. */
  n: number;
  baseMean: number;
  candidateMean: number;
  /** candidate - base */
  meanDiff: number;
  baseCI: BootstrapCI;
  candidateCI: BootstrapCI;
  diffCI: BootstrapCI;
  wilcoxon: WilcoxonResult;
  tTest: TTestResult;
  cohensDz: number;
  bayes: BayesianBootstrapResult;
  /** Holm-adjusted Wilcoxon p-value across all compared metrics. */
  pHolm: number;
  verdict: Verdict;
  /** Paired per-example values (same order as `ids`). */
  ids: string[];
  base: number[];
  candidate: number[];
}

export interface ExampleDelta {
  id: string;
  source?: string;
  reference: string;
  basePrediction: string;
  candidatePrediction: string;
  base: number;
  candidate: number;
  /** Improvement in the metric's better direction (positive = candidate better). */
  gain: number;
}

export interface Comparison {
  base: { model: string; adapter: string | null; task: string; file?: string; metrics: Record<string, number | null> };
  candidate: { model: string; adapter: string | null; task: string; file?: string; metrics: Record<string, number | null> };
  nExamples: number;
  alpha: number;
  resamples: number;
  seed: number;
  metrics: MetricComparison[];
  primaryMetric: string | null;
  improved: ExampleDelta[];
  regressed: ExampleDelta[];
  trainingLog?: TrainingLogPoint[];
}

const PRIMARY_ORDER = ['rougeL', 'chrf', 'bleu', 'rouge1', 'exact_match', 'label_correct', 'numeric_fidelity'];

export function compareResults(base: Results, cand: Results, opts: CompareOptions = {}): Comparison {
  const alpha = opts.alpha ?? 0.05;
  const resamples = opts.resamples ?? 10000;
  const seed = opts.seed ?? 20240611;
  const topK = opts.topK ?? 5;
  const baseFile = opts.baseFile ?? 'base results';
  const candFile = opts.candidateFile ?? 'candidate results';

  const candById = new Map(cand.per_example.map((e) => [e.id, e]));
  const baseIds = new Set(base.per_example.map((e) => e.id));
  const missingInCand = base.per_example.filter((e) => !candById.has(e.id)).map((e) => e.id);
  const missingInBase = cand.per_example.filter((e) => !baseIds.has(e.id)).map((e) => e.id);
  if (missingInCand.length) {
    throw new InputError(`expected the same example ids as ${baseFile}, got ${missingInCand.length} missing (first: ${missingInCand.slice(0, 3).join(', ')})`, { file: candFile, key: 'per_example' });
  }
  if (missingInBase.length) {
    throw new InputError(`expected the same example ids as ${candFile}, got ${missingInBase.length} missing (first: ${missingInBase.slice(0, 3).join(', ')})`, { file: baseFile, key: 'per_example' });
  }
  const pairs = base.per_example.map((b) => ({ b, c: candById.get(b.id)! }));

  const names: string[] = [];
  const seen = new Set<string>();
  for (const { b, c } of pairs) {
    for (const k of Object.keys(b.scores)) {
      if (!seen.has(k) && Object.hasOwn(c.scores, k)) { seen.add(k); names.push(k); }
    }
  }
  if (names.length === 0) {
    const list = (r: Results) => [...new Set(r.per_example.flatMap((e) => Object.keys(e.scores)))].join(', ') || 'none';
    throw new InputError(
      `the two files have no metric in common: ${baseFile} scores ${list(base)}; ${candFile} scores ${list(cand)} (evaluate both with the same --metrics)`,
    );
  }
  const known = Object.keys(metricOrder());
  names.sort((x, y) => rank(x, known) - rank(y, known));

  const partial = names.map((metric, mi) => {
    const ids: string[] = [];
    const bv: number[] = [];
    const cv: number[] = [];
    for (const { b, c } of pairs) {
      const x = b.scores[metric];
      const y = c.scores[metric];
      if (typeof x === 'number' && typeof y === 'number' && Number.isFinite(x) && Number.isFinite(y)) {
        ids.push(b.id); bv.push(x); cv.push(y);
      }
    }
    const hib = higherIsBetter(metric);
    const s = seed + 7919 * mi;
    return {
      metric,
      description: metricInfo(metric)?.description ?? metric,
      higherIsBetter: hib,
      n: ids.length,
      baseMean: mean(bv),
      candidateMean: mean(cv),
      meanDiff: mean(cv) - mean(bv),
      baseCI: bootstrapMeanCI(bv, { resamples, seed: s + 1 }),
      candidateCI: bootstrapMeanCI(cv, { resamples, seed: s + 2 }),
      diffCI: pairedBootstrapCI(bv, cv, { resamples, seed: s + 3 }),
      wilcoxon: ids.length ? wilcoxon(bv, cv) : { statistic: NaN, pValue: NaN, method: 'asymptotic' as const, z: NaN, nNonZero: 0 },
      tTest: pairedTTest(bv, cv),
      cohensDz: ids.length >= 2 ? cohensDz(bv, cv) : NaN,
      bayes: bayesianBootstrap(bv, cv, { draws: resamples, seed: s + 4, higherIsBetter: hib }),
      ids, base: bv, candidate: cv,
    };
  });
  if (partial.every((m) => m.n === 0)) {
    throw new InputError(`no example has a finite value in both files for any of the common metrics (${names.join(', ')}): nothing to compare`, { file: candFile });
  }
  const adjusted = holm(partial.map((m) => m.wilcoxon.pValue));
  const metrics: MetricComparison[] = partial.map((m, i) => {
    const pHolm = adjusted[i]!;
    let verdict: Verdict;
    if (m.n < 2 || Number.isNaN(m.wilcoxon.pValue)) verdict = m.n >= 2 && m.meanDiff === 0 ? 'no significant difference' : 'not testable';
    else if (pHolm < alpha) verdict = (m.meanDiff > 0) === m.higherIsBetter ? 'improved' : 'regressed';
    else verdict = 'no significant difference';
    return { ...m, pHolm, verdict };
  });

  const primary = opts.primaryMetric ?? PRIMARY_ORDER.find((p) => metrics.some((m) => m.metric === p && m.n > 0)) ?? metrics.find((m) => m.n > 0)?.metric ?? null;
  if (opts.primaryMetric && !metrics.some((m) => m.metric === opts.primaryMetric)) {
    throw new InputError(`expected a metric scored in both files, got '${opts.primaryMetric}' (available: ${metrics.map((m) => m.metric).join(', ') || 'none'})`, { key: 'primary-metric' });
  }
  let improved: ExampleDelta[] = [];
  let regressed: ExampleDelta[] = [];
  if (primary) {
    const sign = higherIsBetter(primary) ? 1 : -1;
    const deltas: ExampleDelta[] = [];
    for (const { b, c } of pairs) {
      const x = b.scores[primary];
      const y = c.scores[primary];
      if (typeof x !== 'number' || typeof y !== 'number') continue;
      const d: ExampleDelta = {
        id: b.id, reference: b.reference, basePrediction: b.prediction, candidatePrediction: c.prediction,
        base: x, candidate: y, gain: sign * (y - x),
      };
      const src = b.source ?? c.source;
      if (src !== undefined) d.source = src;
      deltas.push(d);
    }
    improved = deltas.filter((d) => d.gain > 0).sort((a, b) => b.gain - a.gain).slice(0, topK);
    regressed = deltas.filter((d) => d.gain < 0).sort((a, b) => a.gain - b.gain).slice(0, topK);
  }

  const side = (r: Results, file: string | undefined) => {
    const o: Comparison['base'] = { model: r.model, adapter: r.adapter ?? null, task: r.task, metrics: r.metrics };
    if (file !== undefined) o.file = file;
    return o;
  };
  return {
    base: side(base, opts.baseFile), candidate: side(cand, opts.candidateFile), nExamples: pairs.length,
    alpha, resamples, seed, metrics, primaryMetric: primary, improved, regressed,
  };
}

function metricOrder(): Record<string, true> {
  return Object.fromEntries(['rouge1', 'rouge2', 'rougeL', 'bleu', 'chrf', 'exact_match', 'numeric_fidelity', 'hallucinated_number_rate', 'sentiment_agreement', 'term_coverage', 'label_correct'].map((k) => [k, true]));
}

function rank(name: string, known: string[]): number {
  const i = known.indexOf(name);
  return i === -1 ? known.length : i;
}
