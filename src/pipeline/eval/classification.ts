// Sentiment classification metrics over the labels negative / neutral / positive.
// Generated answers are mapped to a label the way FinGPT's benchmark scripts do: lowercase the
// text; "positive" anywhere -> positive, else "negative" anywhere -> negative, else neutral.
// F1 follows scikit-learn's f1_score: per-label F1 with 0 where precision+recall is 0; macro =
// unweighted mean and weighted = support-weighted mean, over the labels that occur in the gold or
// predicted labels (sklearn's default label set).
import { SENTIMENT_LABELS, type SentimentLabel } from './lexicon.js';

export function normalizeGeneratedLabel(text: string): SentimentLabel {
  const t = text.toLowerCase();
  if (t.includes('positive')) return 'positive';
  if (t.includes('negative')) return 'negative';
  return 'neutral';
}

/** A gold label, case and surrounding space ignored; undefined when it is not one of the three. */
export function parseGoldLabel(text: string): SentimentLabel | undefined {
  const t = text.trim().toLowerCase();
  return (SENTIMENT_LABELS as readonly string[]).includes(t) ? (t as SentimentLabel) : undefined;
}

export interface PerLabel {
  precision: number;
  recall: number;
  f1: number;
  support: number;
}

export interface ClassificationReport {
  n: number;
  accuracy: number;
  macroF1: number;
  weightedF1: number;
  labels: SentimentLabel[];
  perLabel: Record<SentimentLabel, PerLabel>;
  /** confusion[gold][predicted] counts, rows and columns in SENTIMENT_LABELS order. */
  confusion: number[][];
}

export function classificationReport(gold: SentimentLabel[], predicted: SentimentLabel[]): ClassificationReport {
  if (gold.length !== predicted.length) {
    throw new Error(`classificationReport: ${gold.length} gold labels but ${predicted.length} predictions`);
  }
  const L = SENTIMENT_LABELS;
  const confusion = L.map(() => L.map(() => 0));
  gold.forEach((g, i) => {
    confusion[L.indexOf(g)]![L.indexOf(predicted[i]!)]!++;
  });
  const n = gold.length;
  let correct = 0;
  for (let i = 0; i < L.length; i++) correct += confusion[i]![i]!;
  const perLabel = {} as Record<SentimentLabel, PerLabel>;
  const present: SentimentLabel[] = [];
  L.forEach((label, i) => {
    const tp = confusion[i]![i]!;
    const support = confusion[i]!.reduce((a, b) => a + b, 0);
    const predCount = confusion.reduce((a, row) => a + row[i]!, 0);
    const precision = predCount > 0 ? tp / predCount : 0;
    const recall = support > 0 ? tp / support : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    perLabel[label] = { precision, recall, f1, support };
    if (support > 0 || predCount > 0) present.push(label);
  });
  const macroF1 = present.length ? present.reduce((a, l) => a + perLabel[l].f1, 0) / present.length : 0;
  const weightedF1 = n ? present.reduce((a, l) => a + perLabel[l].f1 * perLabel[l].support, 0) / n : 0;
  return { n, accuracy: n ? correct / n : 0, macroF1, weightedF1, labels: present, perLabel, confusion };
}
