// Numeric fidelity and hallucinated-number rate, on the normalized mentions of numbers.ts.
import { distinctNumbers, extractNumbers, sameNumber, type NumberMention } from './numbers.js';

export interface NumericFidelity {
  /** Fraction of the reference's distinct numbers found in the prediction; null if it has none. */
  score: number | null;
  missing: NumberMention[];
}

export function numericFidelityDetail(prediction: string, reference: string): NumericFidelity {
  const ref = distinctNumbers(extractNumbers(reference));
  if (ref.length === 0) return { score: null, missing: [] };
  const pred = extractNumbers(prediction);
  const missing = ref.filter((r) => !pred.some((p) => sameNumber(p, r)));
  return { score: (ref.length - missing.length) / ref.length, missing };
}

export function numericFidelity(prediction: string, reference: string): number | null {
  return numericFidelityDetail(prediction, reference).score;
}

export interface Hallucination {
  /** Fraction of the prediction's distinct numbers found in neither source nor reference; null if it has none. */
  rate: number | null;
  hallucinated: NumberMention[];
}

export function hallucinatedNumbersDetail(prediction: string, reference: string, source?: string): Hallucination {
  const pred = distinctNumbers(extractNumbers(prediction));
  if (pred.length === 0) return { rate: null, hallucinated: [] };
  const known = [...extractNumbers(reference), ...(source ? extractNumbers(source) : [])];
  const hallucinated = pred.filter((p) => !known.some((k) => sameNumber(p, k)));
  return { rate: hallucinated.length / pred.length, hallucinated };
}

export function hallucinatedNumberRate(prediction: string, reference: string, source?: string): number | null {
  return hallucinatedNumbersDetail(prediction, reference, source).rate;
}
