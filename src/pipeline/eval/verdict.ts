// The verdict of a suite: which metrics decide it (primary), where a metric's floor is, and the rule
// that turns the primary metrics' tests into one word. Used by compare.ts (which computes it), the
// report (its first line) and the CLI and pipeline (their last lines).
//
// Primary metrics follow from the suite's task:
//   classification (label_correct scored)         accuracy (label_correct), macro-F1 (label_macro_f1)
//   figure extraction (exact_match scored)         exact_match, numeric_fidelity
//   summaries and other generation                 numeric_fidelity, hallucinated_number_rate
// A primary metric the files do not score is left out; when none is scored, the first of rougeL,
// chrf, bleu (else the first metric) decides, and the verdict says so. Every other metric is
// secondary: shown, tested, Holm-corrected within its own family, and never deciding.
//
// Floor: the score of an output that does not do the task. 0 for exact match, numeric fidelity and
// the other higher-is-better scores, 1 for the hallucinated-number rate, and for classification
// what answering the most frequent gold label for every item scores (its share as accuracy, its
// macro-F1). "At or near the floor": the fine-tuned model's value, over all its scored examples,
// lies within NEAR_FLOOR (5% of the metric's 0-1 range; 5 points on 0-100 scales) of the floor.
//
// Rule, in order:
//   1. any primary metric of the fine-tuned model at or near its floor   -> does not do the task
//   2. any primary metric significantly worse (Holm p < alpha)           -> regressed
//      (also when another primary metric improved: worse on one requirement is not an improvement)
//   3. any primary metric significantly better                           -> improved
//   4. otherwise (no significant difference, or nothing testable)       -> no significant change
import { metricInfo } from './metrics.js';

export type SuiteVerdict = 'improved' | 'no significant change' | 'regressed' | 'does not do the task';
export type MetricVerdict = 'improved' | 'regressed' | 'no significant change' | 'not testable';
export type SuiteKind = 'classification' | 'figure extraction' | 'generation';

/** Distance from the floor, as a share of the metric's range, that still counts as "near" it. */
export const NEAR_FLOOR = 0.05;

export const PRIMARY_BY_KIND: Readonly<Record<SuiteKind, readonly string[]>> = {
  classification: ['label_correct', 'label_macro_f1'],
  'figure extraction': ['exact_match', 'numeric_fidelity'],
  generation: ['numeric_fidelity', 'hallucinated_number_rate'],
};

const FALLBACK_PRIMARY = ['rougeL', 'chrf', 'bleu'];

/** The suite's task, from the metrics both files score. */
export function suiteKind(metricNames: readonly string[]): SuiteKind {
  if (metricNames.includes('label_correct')) return 'classification';
  if (metricNames.includes('exact_match')) return 'figure extraction';
  return 'generation';
}

/** The primary metrics among `available` (in their order of importance) and a note when the task's own are missing. */
export function primaryMetrics(
  kind: SuiteKind,
  available: readonly string[],
): { primary: string[]; note: string | null } {
  const wanted = PRIMARY_BY_KIND[kind];
  const primary = wanted.filter((m) => available.includes(m));
  if (primary.length) return { primary, note: null };
  const fallback = FALLBACK_PRIMARY.find((m) => available.includes(m)) ?? available[0];
  return {
    primary: fallback !== undefined ? [fallback] : [],
    note: `the task's primary metrics (${wanted.join(', ')}) are not scored in both files; ${fallback ?? 'nothing'} decides instead`,
  };
}

export interface Floor {
  /** The value of an output that does not do the task. */
  floor: number;
  /** At or beyond this (towards the floor) the metric is "at or near its floor". */
  threshold: number;
  /** How the floor is defined, for the report. */
  what: string;
}

/** Context for the classification floors: the gold labels' majority. */
export interface ClassFloorContext {
  majorityLabel: string;
  majorityCount: number;
  n: number;
  majorityShare: number;
  majorityMacroF1: number;
}

/** The floor of a metric (undefined: none is defined, e.g. an unknown score). */
export function floorOf(metric: string, ctx?: ClassFloorContext): Floor | undefined {
  if (metric === 'label_correct' && ctx) {
    return {
      floor: ctx.majorityShare,
      threshold: ctx.majorityShare + NEAR_FLOOR,
      what: `accuracy of answering '${ctx.majorityLabel}' for every item (${ctx.majorityCount} of ${ctx.n} gold labels, no label has more)`,
    };
  }
  if (metric === 'label_macro_f1' && ctx) {
    return {
      floor: ctx.majorityMacroF1,
      threshold: ctx.majorityMacroF1 + NEAR_FLOOR,
      what: `macro-F1 of answering '${ctx.majorityLabel}' for every item`,
    };
  }
  const info = metricInfo(metric);
  if (!info) return undefined;
  const range = info.scale === '0-100' ? 100 : 1;
  if (info.higherIsBetter) return { floor: 0, threshold: NEAR_FLOOR * range, what: 'no example right' };
  return { floor: range, threshold: range * (1 - NEAR_FLOOR), what: 'every number invented' };
}

/** Whether `value` is at or near the floor (towards the floor from the threshold). */
export function atFloor(value: number, floor: Floor, higherIsBetter: boolean): boolean {
  if (!Number.isFinite(value)) return false;
  return higherIsBetter ? value <= floor.threshold + 1e-12 : value >= floor.threshold - 1e-12;
}

/** What decideVerdict needs of one primary metric. */
export interface PrimaryEvidence {
  metric: string;
  higherIsBetter: boolean;
  /** Test verdict, Holm-corrected within the primary family. */
  verdict: MetricVerdict;
  baseMean: number;
  candidateMean: number;
  pHolm: number;
  /** The fine-tuned model's value over all its scored examples, and how many. */
  candidateValue: number;
  candidateN: number;
  floor?: Floor;
}

export interface SuiteVerdictResult {
  kind: SuiteKind;
  verdict: SuiteVerdict;
  /** The primary metrics, in order. */
  primary: string[];
  /** Why, one clause per fact (floors hit, significant changes, notes). */
  reasons: string[];
}

const f3 = (x: number) => (Number.isFinite(x) ? Number(x.toPrecision(3)).toString() : 'n/a');
const fp = (p: number) =>
  !Number.isFinite(p) ? 'n/a' : p < 1e-4 ? p.toExponential(1) : Number(p.toPrecision(2)).toString();

function change(e: PrimaryEvidence): string {
  return `${e.metric} ${f3(e.baseMean)} → ${f3(e.candidateMean)} (Holm p ${fp(e.pHolm)})`;
}

/** The rule of the header, applied. `extra` reasons (e.g. "one label for every item") are appended to a floor verdict. */
export function decideVerdict(
  kind: SuiteKind,
  evidence: readonly PrimaryEvidence[],
  notes: readonly string[] = [],
  floorDetails: readonly string[] = [],
): SuiteVerdictResult {
  const primary = evidence.map((e) => e.metric);
  const floored = evidence.filter(
    (e) => e.floor && e.candidateN > 0 && atFloor(e.candidateValue, e.floor, e.higherIsBetter),
  );
  const worse = evidence.filter((e) => e.verdict === 'regressed');
  const better = evidence.filter((e) => e.verdict === 'improved');
  const reasons: string[] = [];
  let verdict: SuiteVerdict;
  if (floored.length) {
    verdict = 'does not do the task';
    for (const e of floored) {
      const fl = e.floor!;
      const side = e.higherIsBetter ? '≤' : '≥';
      reasons.push(
        `fine-tuned ${e.metric} ${f3(e.candidateValue)} is at or near its floor ${f3(fl.floor)} (${fl.what}; near: ${side} ${f3(fl.threshold)})`,
      );
    }
    reasons.push(...floorDetails);
    for (const e of [...worse, ...better]) reasons.push(`${e.verdict}: ${change(e)}`);
  } else if (worse.length) {
    verdict = 'regressed';
    for (const e of worse) reasons.push(change(e));
    if (better.length)
      reasons.push(`although ${better.map(change).join(', ')} improved: a regression on any primary metric decides`);
  } else if (better.length) {
    verdict = 'improved';
    for (const e of better) reasons.push(change(e));
    const rest = evidence.filter((e) => e.verdict !== 'improved');
    if (rest.length) reasons.push(`${rest.map((e) => `${e.metric} ${e.verdict}`).join(', ')}`);
  } else {
    verdict = 'no significant change';
    for (const e of evidence) reasons.push(e.verdict === 'not testable' ? `${e.metric} not testable` : change(e));
    if (!evidence.length) reasons.push('no primary metric is scored');
  }
  reasons.push(...notes);
  return { kind, verdict, primary, reasons };
}

/** The one line per suite that the report opens with and `finllm compare` / `finllm pipeline` end with. */
export function verdictLine(name: string, v: SuiteVerdictResult): string {
  return `${name}: ${v.verdict}${v.reasons.length ? ` — ${v.reasons.join('; ')}` : ''}`;
}
