// The server's CPU token selection (for `finllm serve`'s batch scheduler): the logits of each row are
// read back and the next token chosen here. generate/generateBatch choose on the GPU
// (kernels/sampling.ts, TokenSampler) with the same processors and order.
import type { Rng } from '../engine/random.js';
import type { SamplingOptions } from '../llama/generate.js';

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

/**
 * What one sampling step reads besides the logits: the SamplingOptions processors plus OpenAI's
 * penalties (applied to generated tokens only, as OpenAI and vLLM do) and logit bias.
 */
export interface TokenSampling extends Pick<SamplingOptions, 'greedy' | 'temperature' | 'topK' | 'topP' | 'repetitionPenalty'> {
  /** OpenAI presence_penalty: subtracted once from every token generated so far. */
  presencePenalty?: number;
  /** OpenAI frequency_penalty: subtracted per occurrence of a token generated so far. */
  frequencyPenalty?: number;
  /** OpenAI logit_bias: added to the logit of these token ids (first, before any penalty). */
  logitBias?: ReadonlyMap<number, number>;
}

/**
 * Chooses a sequence's next token from its logits (modified in place): logit bias → repetition
 * penalty over `seen` (prompt + generated) → presence/frequency penalties over the generated part
 * `seen.slice(promptLength)` → argmax when greedy, else temperature → top-k → top-p → a draw from
 * `rng`. Every decoder (generate, generateBatch, the server's batch scheduler) calls this once per
 * sequence and step, so the choice can later move to the GPU in one place.
 */
export function nextToken(logits: Float32Array, o: TokenSampling, seen: readonly number[], promptLength: number, rng: Rng): number {
  if (o.logitBias) for (const [id, bias] of o.logitBias) if (id >= 0 && id < logits.length) logits[id] = logits[id]! + bias;
  applyRepetitionPenalty(logits, seen, o.repetitionPenalty ?? 1);
  const presence = o.presencePenalty ?? 0;
  const frequency = o.frequencyPenalty ?? 0;
  if ((presence !== 0 || frequency !== 0) && seen.length > promptLength) {
    const counts = new Map<number, number>();
    for (let i = promptLength; i < seen.length; i++) counts.set(seen[i]!, (counts.get(seen[i]!) ?? 0) + 1);
    for (const [id, n] of counts) logits[id] = logits[id]! - presence - frequency * n;
  }
  if (o.greedy ?? true) return argmax(logits);
  applyWarpers(logits, o);
  return sample(logits, rng);
}

function sample(logits: Float32Array, rng: Rng): number {
  const probs = softmax(logits);
  const u = rng.uniform();
  let cum = 0;
  for (let i = 0; i < probs.length; i++) {
    cum += probs[i]!;
    if (u < cum) return i;
  }
  return argmax(probs);
}
