// Base vs candidate comparison: pairs the examples of two results files by id, runs the paired
// statistics of stats.ts on every metric both files score, and decides the suite's verdict from its
// primary metrics (verdict.ts).
//
// Per metric: Δ = candidate − base with a paired percentile bootstrap CI; the test is the Wilcoxon
// signed-rank test on per-example scores (scipy defaults), or for macro-F1, a corpus-level figure,
// a paired permutation test; Holm correction within the primary family and, separately, within the
// secondary one; P(better) = pBetterFromTest of that same test (1 − p/2 towards the side the test
// favours), so it cannot contradict the verdict.
//
// Classification suites (label_correct scored) also get the confusion matrices, the predicted
// label distributions against the gold one, and right / wrong / changed examples; the labels are
// read from the predictions with the rule of classification.ts.
import { InputError } from '../../errors.js';
import { classificationReport, normalizeGeneratedLabel, parseGoldLabel } from './classification.js';
import { SENTIMENT_LABELS, type SentimentLabel } from './lexicon.js';
import { higherIsBetter, metricInfo } from './metrics.js';
import type { ResultExample, Results, TrainingLogPoint } from './results.js';
import {
  type BootstrapCI,
  bootstrapMeanCI,
  bootstrapStatistic,
  cohensDz,
  holm,
  mean,
  pairedBootstrapCI,
  pairedPermutationTest,
  pairedTTest,
  pBetterFromTest,
  type TTestResult,
  type WilcoxonResult,
  wilcoxon,
} from './stats.js';
import {
  type ClassFloorContext,
  decideVerdict,
  type Floor,
  floorOf,
  type MetricVerdict,
  type PrimaryEvidence,
  primaryMetrics,
  type SuiteKind,
  type SuiteVerdictResult,
  suiteKind,
} from './verdict.js';

export interface CompareOptions {
  /** Family-wise significance level of the Holm-corrected p-values (per family). Default 0.05. */
  alpha?: number;
  resamples?: number;
  seed?: number;
  /** Metric used to rank improved/regressed examples; default the first primary metric that changed. */
  primaryMetric?: string;
  /** How many examples to list per kind. Default 5. */
  topK?: number;
  baseFile?: string;
  candidateFile?: string;
}

export type Verdict = MetricVerdict;

export interface MetricComparison {
  metric: string;
  description: string;
  higherIsBetter: boolean;
  /** primary: decides the suite's verdict; secondary: shown only. */
  role: 'primary' | 'secondary';
  /** false for corpus-level figures (macro-F1): no per-example scores, no scatter or histogram. */
  perExample: boolean;
  /** Pairs where both models have a value. */
  n: number;
  baseMean: number;
  candidateMean: number;
  /** candidate - base */
  meanDiff: number;
  baseCI: BootstrapCI;
  candidateCI: BootstrapCI;
  diffCI: BootstrapCI;
  /** The test whose p-value decides: Wilcoxon signed-rank, or a paired permutation test for corpus figures. */
  test: 'Wilcoxon signed-rank' | 'paired permutation';
  /** Two-sided p of `test`, before Holm. */
  pValue: number;
  wilcoxon: WilcoxonResult;
  tTest: TTestResult;
  cohensDz: number;
  /** 1 − pValue/2 when the test favours the fine-tuned model, pValue/2 when it favours the base, 1/2 when neither. */
  pBetter: number;
  /** Holm-adjusted p within the metric's family (primary or secondary). */
  pHolm: number;
  verdict: Verdict;
  /** The fine-tuned model's value over all its examples with a value (not only the paired ones), and their count. */
  candidateAll: { value: number; n: number };
  /** Primary metrics with a defined floor (verdict.ts). */
  floor?: Floor;
  /** Paired per-example values (same order as `ids`); empty for corpus-level figures. */
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

export interface LabelledExample {
  id: string;
  source?: string;
  gold: SentimentLabel;
  basePrediction: string;
  candidatePrediction: string;
  baseLabel: SentimentLabel;
  candidateLabel: SentimentLabel;
}

export interface ClassificationComparison {
  labels: readonly SentimentLabel[];
  /** Items with a gold label. */
  n: number;
  /** Count per label (in `labels` order). */
  goldCounts: number[];
  baseCounts: number[];
  candidateCounts: number[];
  /** confusion[gold][predicted], rows and columns in `labels` order. */
  baseConfusion: number[][];
  candidateConfusion: number[][];
  /** Up to topK each, in file order. */
  right: LabelledExample[];
  wrong: LabelledExample[];
  changed: LabelledExample[];
  /** Totals behind the lists. */
  totals: { right: number; wrong: number; changed: number };
}

/** How varied each side's outputs are: distinct predictions and the most frequent one. */
export interface OutputSpread {
  distinct: number;
  n: number;
  top: string;
  topCount: number;
}

export interface Comparison {
  base: { model: string; adapter: string | null; task: string; file?: string; metrics: Record<string, number | null> };
  candidate: {
    model: string;
    adapter: string | null;
    task: string;
    file?: string;
    metrics: Record<string, number | null>;
  };
  nExamples: number;
  alpha: number;
  resamples: number;
  seed: number;
  /** Primary metrics first (in their order), then the secondary ones. */
  metrics: MetricComparison[];
  /** The suite's verdict (verdict.ts). */
  suite: SuiteVerdictResult;
  /** The metric the improved/regressed examples are ranked by. */
  primaryMetric: string | null;
  improved: ExampleDelta[];
  regressed: ExampleDelta[];
  outputs: { base: OutputSpread; candidate: OutputSpread };
  classification?: ClassificationComparison;
  trainingLog?: TrainingLogPoint[];
}

const RANK_FALLBACK = ['rougeL', 'chrf', 'bleu', 'rouge1', 'exact_match', 'label_correct', 'numeric_fidelity'];
const DISPLAY_ORDER = [
  'label_correct',
  'label_macro_f1',
  'rouge1',
  'rouge2',
  'rougeL',
  'bleu',
  'chrf',
  'exact_match',
  'numeric_fidelity',
  'hallucinated_number_rate',
  'sentiment_agreement',
  'term_coverage',
];
const MACRO_F1 = 'label_macro_f1';

function spread(predictions: readonly string[]): OutputSpread {
  const counts = new Map<string, number>();
  for (const p of predictions) counts.set(p, (counts.get(p) ?? 0) + 1);
  let top = '';
  let topCount = 0;
  for (const [p, c] of counts)
    if (c > topCount) {
      top = p;
      topCount = c;
    }
  return { distinct: counts.size, n: predictions.length, top, topCount };
}

const NAN_WILCOXON: WilcoxonResult = {
  statistic: NaN,
  pValue: NaN,
  method: 'asymptotic',
  z: NaN,
  nNonZero: 0,
  direction: 0,
};

/** One example of each file, paired by id (in the base file's order). */
interface ExamplePair {
  b: ResultExample;
  c: ResultExample;
}

/** A classification pair with a gold label, and the labels read from both predictions. */
interface LabelledPair extends ExamplePair {
  gold: SentimentLabel;
  bl: SentimentLabel;
  cl: SentimentLabel;
}

/** A metric's comparison before the Holm correction and its verdict. */
type TestedMetric = Omit<MetricComparison, 'pHolm' | 'verdict'>;

/** What one metric's test is run with. */
interface MetricTestSettings {
  metric: string;
  role: 'primary' | 'secondary';
  floor: Floor | undefined;
  /** The metric's own bootstrap/permutation seed (the comparison's seed offset by its position). */
  seed: number;
  resamples: number;
}

export function compareResults(base: Results, cand: Results, opts: CompareOptions = {}): Comparison {
  const alpha = opts.alpha ?? 0.05;
  const resamples = opts.resamples ?? 10000;
  const seed = opts.seed ?? 20240611;
  const topK = opts.topK ?? 5;
  const files = { base: opts.baseFile ?? 'base results', candidate: opts.candidateFile ?? 'candidate results' };

  const pairs = pairExamples(base, cand, files);
  const names = commonMetrics(pairs, base, cand, files);
  // Classification: gold and predicted labels, read from the files with classification.ts's rule.
  const kind = suiteKind(names);
  const labelled = kind === 'classification' ? labelledPairs(pairs) : [];
  if (labelled.length > 0) names.push(MACRO_F1);
  const { primary, note } = primaryMetrics(kind, names);
  sortMetrics(names, primary);

  const floorCtx = labelled.length > 0 ? classFloorContext(labelled) : undefined;
  const tested = names.map((metric, mi): TestedMetric => {
    const role = primary.includes(metric) ? ('primary' as const) : ('secondary' as const);
    const floor = role === 'primary' ? floorOf(metric, floorCtx) : undefined;
    const settings = { metric, role, floor, seed: seed + 7919 * mi, resamples };
    return metric === MACRO_F1 ? testMacroF1(labelled, settings) : testPerExample(pairs, cand, settings);
  });
  if (tested.every((m) => m.n === 0)) {
    throw new InputError(
      `no example has a finite value in both files for any of the common metrics (${names.join(', ')}): nothing to compare`,
      { file: files.candidate },
    );
  }
  const pHolm = holmWithinFamilies(tested);
  const metrics: MetricComparison[] = tested.map((m, i) => ({
    ...m,
    pHolm: pHolm[i]!,
    verdict: metricVerdict(m, pHolm[i]!, alpha),
  }));

  const candSpread = spread(cand.per_example.map((e) => e.prediction));
  const suite = suiteVerdict(kind, metrics, note, labelled, candSpread);
  const rankBy = rankingMetric(metrics, opts.primaryMetric);
  const { improved, regressed } = rankedExamples(pairs, rankBy, topK);
  const out: Comparison = {
    base: sideOf(base, opts.baseFile),
    candidate: sideOf(cand, opts.candidateFile),
    nExamples: pairs.length,
    alpha,
    resamples,
    seed,
    metrics,
    suite,
    primaryMetric: rankBy,
    improved,
    regressed,
    outputs: { base: spread(base.per_example.map((e) => e.prediction)), candidate: candSpread },
  };
  if (labelled.length > 0) out.classification = classificationComparison(labelled, topK);
  return out;
}

/** The examples of both files paired by id; every id must be in both. */
function pairExamples(base: Results, cand: Results, files: { base: string; candidate: string }): ExamplePair[] {
  const candById = new Map(cand.per_example.map((e) => [e.id, e]));
  const baseIds = new Set(base.per_example.map((e) => e.id));
  const missingInCand = base.per_example.filter((e) => !candById.has(e.id)).map((e) => e.id);
  const missingInBase = cand.per_example.filter((e) => !baseIds.has(e.id)).map((e) => e.id);
  if (missingInCand.length) {
    throw new InputError(
      `expected the same example ids as ${files.base}, got ${missingInCand.length} missing (first: ${missingInCand.slice(0, 3).join(', ')})`,
      { file: files.candidate, key: 'per_example' },
    );
  }
  if (missingInBase.length) {
    throw new InputError(
      `expected the same example ids as ${files.candidate}, got ${missingInBase.length} missing (first: ${missingInBase.slice(0, 3).join(', ')})`,
      { file: files.base, key: 'per_example' },
    );
  }
  return base.per_example.map((b) => ({ b, c: candById.get(b.id)! }));
}

/** The metrics both files score, in the order they first appear in the base file. */
function commonMetrics(
  pairs: readonly ExamplePair[],
  base: Results,
  cand: Results,
  files: { base: string; candidate: string },
): string[] {
  const names: string[] = [];
  const seen = new Set<string>();
  for (const { b, c } of pairs) {
    for (const k of Object.keys(b.scores)) {
      if (!seen.has(k) && Object.hasOwn(c.scores, k)) {
        seen.add(k);
        names.push(k);
      }
    }
  }
  if (names.length === 0) {
    const list = (r: Results) => [...new Set(r.per_example.flatMap((e) => Object.keys(e.scores)))].join(', ') || 'none';
    throw new InputError(
      `the two files have no metric in common: ${files.base} scores ${list(base)}; ${files.candidate} scores ${list(cand)} (evaluate both with the same --metrics)`,
    );
  }
  return names;
}

/** The pairs whose reference is a gold label, with the label each prediction gives. */
function labelledPairs(pairs: readonly ExamplePair[]): LabelledPair[] {
  return pairs.flatMap(({ b, c }) => {
    const gold = parseGoldLabel(b.reference);
    return gold === undefined
      ? []
      : [{ b, c, gold, bl: normalizeGeneratedLabel(b.prediction), cl: normalizeGeneratedLabel(c.prediction) }];
  });
}

/** Primary metrics first, in their order; then the others in display order. Sorts in place. */
function sortMetrics(names: string[], primary: readonly string[]): void {
  names.sort((x, y) => {
    const px = primary.indexOf(x);
    const py = primary.indexOf(y);
    if (px !== -1 || py !== -1) return (px === -1 ? Infinity : px) - (py === -1 ? Infinity : py);
    return rank(x) - rank(y);
  });
}

/** The majority-label baseline the classification floors are set from (verdict.ts). */
function classFloorContext(labelled: readonly LabelledPair[]): ClassFloorContext {
  const gold = labelled.map((x) => x.gold);
  const counts = SENTIMENT_LABELS.map((l) => gold.filter((g) => g === l).length);
  const mi = counts.indexOf(Math.max(...counts));
  const majority = SENTIMENT_LABELS[mi]!;
  return {
    majorityLabel: majority,
    majorityCount: counts[mi]!,
    n: gold.length,
    majorityShare: counts[mi]! / gold.length,
    majorityMacroF1: classificationReport(
      gold,
      gold.map(() => majority),
    ).macroF1,
  };
}

/** Macro-F1, a corpus-level figure: bootstrap CIs over items and a paired permutation test. */
function testMacroF1(labelled: readonly LabelledPair[], t: MetricTestSettings): TestedMetric {
  const { resamples, seed: s, floor } = t;
  const n = labelled.length;
  const gold = labelled.map((x) => x.gold);
  const bl = labelled.map((x) => x.bl);
  const cl = labelled.map((x) => x.cl);
  const f1At = (labels: SentimentLabel[], idx: Int32Array) =>
    classificationReport(
      Array.from(idx, (i) => gold[i]!),
      Array.from(idx, (i) => labels[i]!),
    ).macroF1;
  const bF1 = classificationReport(gold, bl).macroF1;
  const cF1 = classificationReport(gold, cl).macroF1;
  const perm = pairedPermutationTest(
    n,
    (swap) => {
      const x = bl.map((v, i) => (swap[i] ? cl[i]! : v));
      const y = cl.map((v, i) => (swap[i] ? bl[i]! : v));
      return classificationReport(gold, y).macroF1 - classificationReport(gold, x).macroF1;
    },
    { resamples, seed: s + 5 },
  );
  const better = perm.direction;
  return {
    metric: t.metric,
    description: 'Macro-F1 over the labels present (scikit-learn f1_score average="macro")',
    higherIsBetter: true,
    role: t.role,
    perExample: false,
    n,
    baseMean: bF1,
    candidateMean: cF1,
    meanDiff: cF1 - bF1,
    baseCI: bootstrapStatistic(n, (idx) => f1At(bl, idx), { resamples, seed: s + 1 }),
    candidateCI: bootstrapStatistic(n, (idx) => f1At(cl, idx), { resamples, seed: s + 2 }),
    diffCI: bootstrapStatistic(n, (idx) => f1At(cl, idx) - f1At(bl, idx), { resamples, seed: s + 3 }),
    test: 'paired permutation' as const,
    pValue: perm.pValue,
    wilcoxon: NAN_WILCOXON,
    tTest: { t: NaN, df: n - 1, pValue: NaN },
    cohensDz: NaN,
    pBetter: pBetterFromTest(perm.pValue, better, n),
    candidateAll: { value: cF1, n },
    ...(floor ? { floor } : {}),
    ids: [] as string[],
    base: [] as number[],
    candidate: [] as number[],
  };
}

/** A per-example metric over the pairs where both values are finite: bootstrap CIs, Wilcoxon, t-test, d_z. */
function testPerExample(pairs: readonly ExamplePair[], cand: Results, t: MetricTestSettings): TestedMetric {
  const { metric, resamples, seed: s, floor } = t;
  const hib = higherIsBetter(metric);
  const ids: string[] = [];
  const bv: number[] = [];
  const cv: number[] = [];
  for (const { b, c } of pairs) {
    const x = b.scores[metric];
    const y = c.scores[metric];
    if (typeof x === 'number' && typeof y === 'number' && Number.isFinite(x) && Number.isFinite(y)) {
      ids.push(b.id);
      bv.push(x);
      cv.push(y);
    }
  }
  const candAll = cand.per_example
    .map((e) => e.scores[metric])
    .filter((v): v is number => typeof v === 'number' && Number.isFinite(v));
  const w = ids.length ? wilcoxon(bv, cv) : NAN_WILCOXON;
  const better = (hib ? w.direction : -w.direction) as -1 | 0 | 1;
  return {
    metric,
    description: metricInfo(metric)?.description ?? metric,
    higherIsBetter: hib,
    role: t.role,
    perExample: true,
    n: ids.length,
    baseMean: mean(bv),
    candidateMean: mean(cv),
    meanDiff: mean(cv) - mean(bv),
    baseCI: bootstrapMeanCI(bv, { resamples, seed: s + 1 }),
    candidateCI: bootstrapMeanCI(cv, { resamples, seed: s + 2 }),
    diffCI: pairedBootstrapCI(bv, cv, { resamples, seed: s + 3 }),
    test: 'Wilcoxon signed-rank' as const,
    pValue: w.pValue,
    wilcoxon: w,
    tTest: pairedTTest(bv, cv),
    cohensDz: ids.length >= 2 ? cohensDz(bv, cv) : NaN,
    pBetter: pBetterFromTest(w.pValue, better, ids.length),
    candidateAll: { value: mean(candAll), n: candAll.length },
    ...(floor ? { floor } : {}),
    ids,
    base: bv,
    candidate: cv,
  };
}

/** Holm-adjusted p-values within each family: the primary metrics (confirmatory) and the secondary ones. */
function holmWithinFamilies(tested: readonly TestedMetric[]): number[] {
  const pHolm = new Array<number>(tested.length);
  for (const role of ['primary', 'secondary'] as const) {
    const idx = tested.map((m, i) => (m.role === role ? i : -1)).filter((i) => i >= 0);
    const adj = holm(idx.map((i) => tested[i]!.pValue));
    idx.forEach((i, k) => {
      pHolm[i] = adj[k]!;
    });
  }
  return pHolm;
}

/** A metric's verdict from its Holm-adjusted p and the side its test favours. */
function metricVerdict(m: TestedMetric, pHolm: number, alpha: number): Verdict {
  const favours = m.pBetter > 0.5 ? 1 : m.pBetter < 0.5 ? -1 : 0;
  if (m.n < 2 || Number.isNaN(m.pValue)) return m.n >= 2 && m.meanDiff === 0 ? 'no significant change' : 'not testable';
  if (pHolm < alpha && favours !== 0) return favours > 0 ? 'improved' : 'regressed';
  return 'no significant change';
}

/** The suite's verdict (verdict.ts) from its primary metrics and the signs of a collapsed fine-tuned model. */
function suiteVerdict(
  kind: SuiteKind,
  metrics: readonly MetricComparison[],
  note: string | null,
  labelled: readonly LabelledPair[],
  candSpread: OutputSpread,
): SuiteVerdictResult {
  const candLabels = labelled.map((x) => x.cl);
  const floorDetails: string[] = [];
  if (labelled.length > 0) {
    const used = SENTIMENT_LABELS.filter((l) => candLabels.includes(l));
    if (used.length === 1)
      floorDetails.push(`one label for every item: '${used[0]}' ${candLabels.length}/${candLabels.length}`);
  }
  if (candSpread.n >= 4 && candSpread.topCount * 2 >= candSpread.n) {
    floorDetails.push(
      `${candSpread.topCount} of ${candSpread.n} fine-tuned outputs are the same text ${JSON.stringify(clip(candSpread.top, 80))}`,
    );
  }
  const evidence: PrimaryEvidence[] = metrics
    .filter((m) => m.role === 'primary')
    .map((m) => ({
      metric: m.metric,
      higherIsBetter: m.higherIsBetter,
      verdict: m.verdict,
      baseMean: m.baseMean,
      candidateMean: m.candidateMean,
      pHolm: m.pHolm,
      candidateValue: m.candidateAll.value,
      candidateN: m.candidateAll.n,
      ...(m.floor ? { floor: m.floor } : {}),
    }));
  return decideVerdict(kind, evidence, note ? [note] : [], floorDetails);
}

/**
 * The metric the improved/regressed examples are ranked by: the one asked for, else the first primary
 * one that changed on some example, else a fallback.
 */
function rankingMetric(metrics: readonly MetricComparison[], requested: string | undefined): string | null {
  if (requested && !metrics.some((m) => m.metric === requested && m.perExample)) {
    throw new InputError(
      `expected a metric scored per example in both files, got '${requested}' (available: ${
        metrics
          .filter((m) => m.perExample)
          .map((m) => m.metric)
          .join(', ') || 'none'
      })`,
      { key: 'primary-metric' },
    );
  }
  const perEx = metrics.filter((m) => m.perExample && m.n > 0);
  const changed = (m: MetricComparison) => m.base.some((b, i) => b !== m.candidate[i]);
  return (
    requested ??
    perEx.find((m) => m.role === 'primary' && changed(m))?.metric ??
    perEx.find((m) => m.role === 'primary')?.metric ??
    RANK_FALLBACK.find((p) => perEx.some((m) => m.metric === p)) ??
    perEx[0]?.metric ??
    null
  );
}

/** The topK examples that gained most and lost most on `rankBy`, in its better direction. */
function rankedExamples(
  pairs: readonly ExamplePair[],
  rankBy: string | null,
  topK: number,
): { improved: ExampleDelta[]; regressed: ExampleDelta[] } {
  if (!rankBy) return { improved: [], regressed: [] };
  const sign = higherIsBetter(rankBy) ? 1 : -1;
  const deltas: ExampleDelta[] = [];
  for (const { b, c } of pairs) {
    const x = b.scores[rankBy];
    const y = c.scores[rankBy];
    if (typeof x !== 'number' || typeof y !== 'number') continue;
    const d: ExampleDelta = {
      id: b.id,
      reference: b.reference,
      basePrediction: b.prediction,
      candidatePrediction: c.prediction,
      base: x,
      candidate: y,
      gain: sign * (y - x),
    };
    const src = b.source ?? c.source;
    if (src !== undefined) d.source = src;
    deltas.push(d);
  }
  return {
    improved: deltas
      .filter((d) => d.gain > 0)
      .sort((a, b) => b.gain - a.gain)
      .slice(0, topK),
    regressed: deltas
      .filter((d) => d.gain < 0)
      .sort((a, b) => a.gain - b.gain)
      .slice(0, topK),
  };
}

/** One side's model, adapter, task, file and corpus metrics. */
function sideOf(r: Results, file: string | undefined): Comparison['base'] {
  const o: Comparison['base'] = { model: r.model, adapter: r.adapter ?? null, task: r.task, metrics: r.metrics };
  if (file !== undefined) o.file = file;
  return o;
}

function classificationComparison(labelled: readonly LabelledPair[], topK: number): ClassificationComparison {
  const L = SENTIMENT_LABELS;
  const count = (xs: SentimentLabel[]) => L.map((l) => xs.filter((x) => x === l).length);
  const gold = labelled.map((x) => x.gold);
  const ex = (x: (typeof labelled)[number]): LabelledExample => {
    const e: LabelledExample = {
      id: x.b.id,
      gold: x.gold,
      basePrediction: x.b.prediction,
      candidatePrediction: x.c.prediction,
      baseLabel: x.bl,
      candidateLabel: x.cl,
    };
    const src = x.b.source ?? x.c.source;
    if (src !== undefined) e.source = src;
    return e;
  };
  const right = labelled.filter((x) => x.cl === x.gold);
  const wrong = labelled.filter((x) => x.cl !== x.gold);
  const changed = labelled.filter((x) => x.cl !== x.bl);
  return {
    labels: L,
    n: labelled.length,
    goldCounts: count(gold),
    baseCounts: count(labelled.map((x) => x.bl)),
    candidateCounts: count(labelled.map((x) => x.cl)),
    baseConfusion: classificationReport(
      gold,
      labelled.map((x) => x.bl),
    ).confusion,
    candidateConfusion: classificationReport(
      gold,
      labelled.map((x) => x.cl),
    ).confusion,
    right: right.slice(0, topK).map(ex),
    wrong: wrong.slice(0, topK).map(ex),
    changed: changed.slice(0, topK).map(ex),
    totals: { right: right.length, wrong: wrong.length, changed: changed.length },
  };
}

function clip(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}

function rank(name: string): number {
  const i = DISPLAY_ORDER.indexOf(name);
  return i === -1 ? DISPLAY_ORDER.length : i;
}
