// Numeric fidelity and hallucinated-number rate, on the normalized mentions of numbers.ts.
// The hallucinated-number rate also counts number-like junk ("$1.1.1.1", a 400-digit run): it is
// no figure of the passage, yet it reads as one. Junk is known only where the same text stands in
// the source or the reference.
import {
  distinctNumbers,
  extractNumbers,
  type NumberLikeJunk,
  type NumberMention,
  numberLikeJunk,
  sameNumber,
} from './numbers.js';

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
  /**
   * Fraction of the prediction's distinct numbers and distinct number-like junk found in neither
   * source nor reference; null if it has neither.
   */
  rate: number | null;
  hallucinated: NumberMention[];
  /** Number-like junk of the prediction that is in neither source nor reference (counted in `rate`). */
  junk: NumberLikeJunk[];
}

export function hallucinatedNumbersDetail(prediction: string, reference: string, source?: string): Hallucination {
  const pred = distinctNumbers(extractNumbers(prediction));
  const predJunk = [...new Map(numberLikeJunk(prediction).map((j) => [j.text, j] as const)).values()];
  const total = pred.length + predJunk.length;
  if (total === 0) return { rate: null, hallucinated: [], junk: [] };
  const known = [...extractNumbers(reference), ...(source ? extractNumbers(source) : [])];
  const knownJunk = new Set(
    [...numberLikeJunk(reference), ...(source ? numberLikeJunk(source) : [])].map((j) => j.text),
  );
  const hallucinated = pred.filter((p) => !known.some((k) => sameNumber(p, k)));
  const junk = predJunk.filter((j) => !knownJunk.has(j.text));
  return { rate: (hallucinated.length + junk.length) / total, hallucinated, junk };
}

export function hallucinatedNumberRate(prediction: string, reference: string, source?: string): number | null {
  return hallucinatedNumbersDetail(prediction, reference, source).rate;
}
