// CPU reference of next-token selection (the sampler decoding used on the CPU before it moved to
// the GPU, src/kernels/sampling.ts), with transformers' processor order and semantics, in f64:
//   logit bias → repetition penalty (divide positive / multiply negative logits of tokens already in
//   the sequence) → presence/frequency penalties (generated tokens only) → argmax when greedy, else
//   temperature → top-k → top-p → a draw u: the first token whose cumulative probability exceeds u.
import type { RowSampling } from '../src/kernels/sampling.js';

/** HF RepetitionPenaltyLogitsProcessor, in place: every token id in `seen` once. */
export function applyRepetitionPenalty(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return;
  for (const id of new Set(seen)) {
    const v = logits[id]!;
    logits[id] = v < 0 ? v * penalty : v / penalty;
  }
}

/** Temperature, top-k, top-p as HF's warpers (filtered logits become -Infinity), in place. */
export function applyWarpers(logits: Float32Array, o: { temperature?: number; topK?: number; topP?: number }): void {
  const temperature = o.temperature ?? 1;
  if (temperature !== 1) for (let i = 0; i < logits.length; i++) logits[i] = logits[i]! / temperature;
  const k = Math.min(o.topK ?? 0, logits.length);
  if (k > 0 && k < logits.length) {
    // Remove every logit below the k-th largest (ties with it stay, as in HF).
    const kth = Float32Array.from(logits).sort().reverse()[k - 1]!;
    for (let i = 0; i < logits.length; i++) if (logits[i]! < kth) logits[i] = -Infinity;
  }
  const p = o.topP ?? 1;
  if (p < 1) {
    // HF: sort ascending, cumulative softmax, drop tokens whose cumulative probability is <= 1 - p,
    // always keeping the most likely token.
    const order = Array.from(logits.keys()).sort((a, b) => logits[a]! - logits[b]!);
    const probs = softmax(logits);
    let cum = 0;
    for (let j = 0; j < order.length - 1; j++) {
      cum += probs[order[j]!]!;
      if (cum <= 1 - p) logits[order[j]!] = -Infinity;
      else break;
    }
  }
}

export function softmax(logits: Float32Array): Float64Array {
  let m = -Infinity;
  for (const v of logits) if (v > m) m = v;
  const out = new Float64Array(logits.length);
  let z = 0;
  for (let i = 0; i < logits.length; i++) z += out[i] = Math.exp(logits[i]! - m);
  for (let i = 0; i < out.length; i++) out[i] = out[i]! / z;
  return out;
}

/** First index of the largest value (torch.argmax picks the first maximum). */
export function argmax(a: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[best]!) best = i;
  return best;
}

/** The first token whose cumulative probability (index order) exceeds u. */
export function sampleWithDraw(logits: Float32Array, u: number): number {
  const probs = softmax(logits);
  let cum = 0;
  for (let i = 0; i < probs.length; i++) {
    cum += probs[i]!;
    if (u < cum) return i;
  }
  return argmax(probs);
}

/** One row's parameters (the sampler's; the draw u comes separately). */
export type ReferenceSampling = Omit<RowSampling, 'seed'>;

/**
 * The processed logits before the argmax / warpers: bias, repetition penalty over `seen` (prompt +
 * generated), presence/frequency over `seen.slice(promptLength)`. In place.
 */
export function applyPenalties(
  logits: Float32Array,
  o: ReferenceSampling,
  seen: readonly number[],
  promptLength: number,
): void {
  if (o.logitBias)
    for (const [id, bias] of o.logitBias) if (id >= 0 && id < logits.length) logits[id] = logits[id]! + bias;
  applyRepetitionPenalty(logits, seen, o.repetitionPenalty ?? 1);
  const presence = o.presencePenalty ?? 0;
  const frequency = o.frequencyPenalty ?? 0;
  if ((presence !== 0 || frequency !== 0) && seen.length > promptLength) {
    const counts = new Map<number, number>();
    for (let i = promptLength; i < seen.length; i++) counts.set(seen[i]!, (counts.get(seen[i]!) ?? 0) + 1);
    for (const [id, n] of counts) logits[id] = logits[id]! - presence - frequency * n;
  }
}

/**
 * The reference choice for one row and draw u, and how far the choice is from a rounding tie:
 * `margin` is the smallest distance of u to the chosen token's cumulative interval and of the top-p
 * cut to 1 − p (f64). A GPU sampler in f32 may only disagree when margin is within its rounding.
 */
export function referenceNextToken(
  logits: Float32Array,
  o: ReferenceSampling,
  seen: readonly number[],
  promptLength: number,
  u: number,
): { token: number; margin: number } {
  const l = Float32Array.from(logits);
  applyPenalties(l, o, seen, promptLength);
  if (o.greedy ?? true) return { token: argmax(l), margin: Infinity };
  let margin = Infinity;
  const p = o.topP ?? 1;
  if (p < 1) {
    // The cut's distance to 1 − p, on the distribution the top-p warper sees.
    const w = Float32Array.from(l);
    applyWarpers(w, {
      ...(o.temperature !== undefined ? { temperature: o.temperature } : {}),
      ...(o.topK !== undefined ? { topK: o.topK } : {}),
    });
    const order = Array.from(w.keys()).sort((a, b) => w[a]! - w[b]!);
    const probs = softmax(w);
    let cum = 0;
    for (let j = 0; j < order.length - 1; j++) {
      cum += probs[order[j]!]!;
      margin = Math.min(margin, Math.abs(cum - (1 - p)));
      if (cum > 1 - p) break;
    }
  }
  applyWarpers(l, o);
  const token = sampleWithDraw(l, u);
  const probs = softmax(l);
  let before = 0;
  for (let i = 0; i < token; i++) before += probs[i]!;
  margin = Math.min(margin, Math.abs(u - before), Math.abs(before + probs[token]! - u));
  return { token, margin };
}
