// The metric registry: which per-example scores each metric group produces, which direction is
// better, and how corpus-level figures are aggregated. Used by `finllm score`, by `finllm eval`
// (to fill results files) and by `finllm compare`.

import { warn } from '../../warnings.js';
import { type BleuStats, bleuFromStats, bleuStats, sumBleuStats } from './bleu.js';
import { type ChrfStats, chrfFromStats, chrfStats, sumChrfStats } from './chrf.js';
import {
  type ClassificationReport,
  classificationReport,
  normalizeGeneratedLabel,
  parseGoldLabel,
} from './classification.js';
import { exactMatch } from './exact.js';
import type { SentimentLabel } from './lexicon.js';
import { hallucinatedNumberRate, numericFidelity } from './numeric.js';
import { DEFAULT_LCS_MAX_TOKENS, rouge } from './rouge.js';
import { sentimentAgreement } from './sentiment.js';
import { termCoverage } from './terms.js';

export const METRIC_GROUPS = ['rouge', 'bleu', 'chrf', 'exact', 'numeric', 'sentiment', 'terms', 'label'] as const;
export type MetricGroup = (typeof METRIC_GROUPS)[number];
export const DEFAULT_GROUPS: readonly MetricGroup[] = [
  'rouge',
  'bleu',
  'chrf',
  'exact',
  'numeric',
  'sentiment',
  'terms',
];

export interface MetricInfo {
  group: MetricGroup;
  description: string;
  higherIsBetter: boolean;
  /** Scale of the per-example score. */
  scale: '0-1' | '0-100';
  /** How the corpus figure in `metrics` is formed. */
  aggregate: 'mean' | 'corpus';
}

/** Every per-example score name, in display order. */
export const METRICS: Readonly<Record<string, MetricInfo>> = {
  rouge1: {
    group: 'rouge',
    description: 'ROUGE-1 F1 (rouge-score)',
    higherIsBetter: true,
    scale: '0-1',
    aggregate: 'mean',
  },
  rouge2: {
    group: 'rouge',
    description: 'ROUGE-2 F1 (rouge-score)',
    higherIsBetter: true,
    scale: '0-1',
    aggregate: 'mean',
  },
  rougeL: {
    group: 'rouge',
    description: 'ROUGE-L F1 (rouge-score)',
    higherIsBetter: true,
    scale: '0-1',
    aggregate: 'mean',
  },
  bleu: {
    group: 'bleu',
    description: 'BLEU (sacrebleu; corpus figure = corpus_bleu, per example = sentence_bleu)',
    higherIsBetter: true,
    scale: '0-100',
    aggregate: 'corpus',
  },
  chrf: {
    group: 'chrf',
    description: 'chrF2 (sacrebleu; corpus figure = corpus chrF, per example = sentence chrF)',
    higherIsBetter: true,
    scale: '0-100',
    aggregate: 'corpus',
  },
  exact_match: {
    group: 'exact',
    description: 'Exact match after normalization',
    higherIsBetter: true,
    scale: '0-1',
    aggregate: 'mean',
  },
  numeric_fidelity: {
    group: 'numeric',
    description: "Share of the reference's numbers recovered in the prediction",
    higherIsBetter: true,
    scale: '0-1',
    aggregate: 'mean',
  },
  hallucinated_number_rate: {
    group: 'numeric',
    description:
      "Share of the prediction's numbers (and number-like junk such as 1.1.1.1) found in neither source nor reference",
    higherIsBetter: false,
    scale: '0-1',
    aggregate: 'mean',
  },
  sentiment_agreement: {
    group: 'sentiment',
    description: 'Lexicon sentiment label of prediction equals that of reference',
    higherIsBetter: true,
    scale: '0-1',
    aggregate: 'mean',
  },
  term_coverage: {
    group: 'terms',
    description: "Share of the reference's financial terms present in the prediction",
    higherIsBetter: true,
    scale: '0-1',
    aggregate: 'mean',
  },
  label_correct: {
    group: 'label',
    description: 'Sentiment label found in the generated text (FinGPT rule) equals the gold label',
    higherIsBetter: true,
    scale: '0-1',
    aggregate: 'mean',
  },
};

export function metricInfo(name: string): MetricInfo | undefined {
  return Object.hasOwn(METRICS, name) ? METRICS[name] : undefined;
}

/** Whether larger values of a metric are better (unknown metrics are assumed higher-is-better). */
export function higherIsBetter(name: string): boolean {
  return metricInfo(name)?.higherIsBetter ?? true;
}

export interface ScoreInput {
  id?: string;
  prediction: string;
  reference: string;
  source?: string;
}

export interface ScoreOptions {
  groups?: readonly MetricGroup[];
  /** Porter-stem tokens for ROUGE (rouge-score's use_stemmer). Default false, as rouge-score. */
  rougeStemmer?: boolean;
  /** ROUGE-L uses at most this many tokens per side (default DEFAULT_LCS_MAX_TOKENS), with a warning when it cuts. */
  rougeLcsMaxTokens?: number;
}

export interface ScoredExample {
  scores: Record<string, number | null>;
}

export interface ScoreResult {
  n: number;
  /** Corpus-level figure per metric; null when no example had a value. */
  metrics: Record<string, number | null>;
  per_example: ScoredExample[];
  /** Present when the 'label' group ran. */
  classification?: ClassificationReport;
}

export function parseGroups(spec: string): MetricGroup[] {
  const out: MetricGroup[] = [];
  for (const raw of spec
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)) {
    if (!(METRIC_GROUPS as readonly string[]).includes(raw)) {
      throw new Error(`unknown metric '${raw}' (expected some of ${METRIC_GROUPS.join(', ')})`);
    }
    if (!out.includes(raw as MetricGroup)) out.push(raw as MetricGroup);
  }
  return out;
}

/** Mean of the non-null values; null when there are none. */
export function meanOfPresent(values: readonly (number | null | undefined)[]): number | null {
  let s = 0;
  let n = 0;
  for (const v of values)
    if (typeof v === 'number' && Number.isFinite(v)) {
      s += v;
      n++;
    }
  return n ? s / n : null;
}

export function scoreExamples(inputs: readonly ScoreInput[], opts: ScoreOptions = {}): ScoreResult {
  const groups = new Set(opts.groups ?? DEFAULT_GROUPS);
  const per: ScoredExample[] = inputs.map(() => ({ scores: {} }));
  const metrics: Record<string, number | null> = {};
  let classification: ClassificationReport | undefined;

  const bleu: BleuStats[] = [];
  const chrf: ChrfStats[] = [];
  const lcsMax = opts.rougeLcsMaxTokens ?? DEFAULT_LCS_MAX_TOKENS;
  const cut: string[] = [];
  inputs.forEach((ex, i) => {
    const s = per[i]!.scores;
    if (groups.has('rouge')) {
      const r = rouge(ex.prediction, ex.reference, { useStemmer: opts.rougeStemmer ?? false, lcsMaxTokens: lcsMax });
      s['rouge1'] = r.rouge1.f1;
      s['rouge2'] = r.rouge2.f1;
      s['rougeL'] = r.rougeL.f1;
      if (r.lcsTruncated) cut.push(ex.id ?? `example ${i + 1}`);
    }
    if (groups.has('bleu')) {
      bleu.push(bleuStats(ex.prediction, [ex.reference]));
      s['bleu'] = bleuFromStats(bleu[bleu.length - 1]!, true).score;
    }
    if (groups.has('chrf')) {
      chrf.push(chrfStats(ex.prediction, ex.reference));
      s['chrf'] = chrfFromStats(chrf[chrf.length - 1]!);
    }
    if (groups.has('exact')) s['exact_match'] = exactMatch(ex.prediction, ex.reference);
    if (groups.has('numeric')) {
      s['numeric_fidelity'] = numericFidelity(ex.prediction, ex.reference);
      s['hallucinated_number_rate'] = hallucinatedNumberRate(ex.prediction, ex.reference, ex.source);
    }
    if (groups.has('sentiment')) s['sentiment_agreement'] = sentimentAgreement(ex.prediction, ex.reference);
    if (groups.has('terms')) s['term_coverage'] = termCoverage(ex.prediction, ex.reference);
  });

  if (groups.has('label')) {
    const gold: SentimentLabel[] = [];
    const pred: SentimentLabel[] = [];
    inputs.forEach((ex, i) => {
      const g = parseGoldLabel(ex.reference);
      if (g === undefined) {
        per[i]!.scores['label_correct'] = null;
        return;
      }
      const p = normalizeGeneratedLabel(ex.prediction);
      gold.push(g);
      pred.push(p);
      per[i]!.scores['label_correct'] = p === g ? 1 : 0;
    });
    if (gold.length) {
      classification = classificationReport(gold, pred);
      metrics['label_macro_f1'] = classification.macroF1;
      metrics['label_weighted_f1'] = classification.weightedF1;
    }
  }

  for (const [name, info] of Object.entries(METRICS)) {
    if (!groups.has(info.group)) continue;
    if (info.aggregate === 'corpus' && inputs.length > 0) {
      metrics[name] =
        name === 'bleu' ? bleuFromStats(sumBleuStats(bleu), false).score : chrfFromStats(sumChrfStats(chrf));
    } else {
      metrics[name] = meanOfPresent(per.map((p) => p.scores[name]));
    }
  }
  if (cut.length > 0) {
    warn(
      `ROUGE-L of ${cut.length} example${cut.length === 1 ? '' : 's'} (${cut.slice(0, 3).join(', ')}${cut.length > 3 ? ', ...' : ''}) used only the first ${lcsMax} tokens of each side (its time grows with the product of the lengths; raise the limit with --rouge-max-tokens)`,
      'rouge-lcs-cap',
    );
  }
  const result: ScoreResult = { n: inputs.length, metrics, per_example: per };
  if (classification) result.classification = classification;
  return result;
}
