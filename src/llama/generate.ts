// Autoregressive decoding with a KV cache: one prefill pass over the prompt, then one token at a
// time. Logit processing follows transformers' `generate` order and semantics:
//   repetition penalty (divide positive / multiply negative logits of tokens already in the
//   sequence) → temperature → top-k → top-p → sample (or argmax when greedy).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Rng } from '../engine/random.js';
import { InputError, NonFiniteError, readFailure } from '../errors.js';
import { warnPastPositions } from './evaluate.js';
import { disposeKvCache } from './kv-cache.js';
import type { LlamaModel } from './model.js';

export interface SamplingOptions {
  maxNewTokens: number;
  /** Argmax decoding (HF do_sample=False). Default true. */
  greedy?: boolean;
  /** Default 1. */
  temperature?: number;
  /** Keep the k most likely tokens (0 = off). Default 0. */
  topK?: number;
  /** Nucleus sampling threshold (1 = off). Default 1. */
  topP?: number;
  /** HF repetition_penalty (1 = off). */
  repetitionPenalty?: number;
  seed?: number;
  /** Stop when any of these is generated (it is included in the output). Default: the model's EOS ids. */
  eosTokenIds?: number[];
}

export interface GenerateResult {
  /** New tokens only (the EOS token included when it stopped generation). */
  tokens: number[];
  stopReason: 'eos' | 'max_new_tokens';
}

/** A row of generateBatch: 'stopped' when its onToken callback asked it to stop. */
export interface BatchGenerateResult {
  tokens: number[];
  stopReason: GenerateResult['stopReason'] | 'stopped';
}

export function validateSampling(o: SamplingOptions): void {
  const bad = (key: string, msg: string) => {
    throw new InputError(msg, { key });
  };
  if (!(Number.isInteger(o.maxNewTokens) && o.maxNewTokens >= 0)) bad('max-new-tokens', `expected a non-negative integer, got ${o.maxNewTokens}`);
  if (o.temperature !== undefined && !(o.temperature > 0 && Number.isFinite(o.temperature))) bad('temperature', `expected a positive number, got ${o.temperature}`);
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0)) bad('top-k', `expected a non-negative integer, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) bad('top-p', `expected a number in (0, 1], got ${o.topP}`);
  if (o.repetitionPenalty !== undefined && !(o.repetitionPenalty > 0 && Number.isFinite(o.repetitionPenalty))) bad('repetition-penalty', `expected a positive number, got ${o.repetitionPenalty}`);
  if (o.seed !== undefined && !(Number.isSafeInteger(o.seed) && o.seed >= 0)) bad('seed', `expected a non-negative integer, got ${o.seed}`);
}

/** Stops generation when the forward pass overflowed: sampling from NaN logits would emit garbage silently. */
function checkLogits(logits: Float32Array, step: number): void {
  for (let i = 0; i < logits.length; i++) {
    if (Number.isNaN(logits[i]!) || logits[i] === Infinity) {
      throw new NonFiniteError(`new token ${step + 1}: the model produced non-finite logits (${logits[i]}); with 16-bit storage try --storage f32`);
    }
  }
}

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

/**
 * Generates up to `maxNewTokens` tokens after `promptIds` (one sequence). `onToken` is called with
 * each new token as soon as it is chosen (awaited, so a slow consumer applies back-pressure).
 */
export async function generate(
  model: LlamaModel,
  promptIds: readonly number[],
  opts: SamplingOptions,
  onToken?: (id: number) => void | Promise<void>,
): Promise<GenerateResult> {
  validateSampling(opts);
  if (promptIds.length === 0) throw new InputError('the prompt is empty: nothing to condition on (no BOS either)');
  const eos = new Set(opts.eosTokenIds ?? model.config.eosTokenIds);
  const rng = new Rng(opts.seed ?? 0);
  const tokens: number[] = [];
  if (opts.maxNewTokens === 0) return { tokens, stopReason: 'max_new_tokens' };
  warnPastPositions(model, [promptIds.length + opts.maxNewTokens], 'prompt');
  const cache = model.newKvCache(1, promptIds.length + opts.maxNewTokens);
  const seen = [...promptIds];
  try {
    let input = Int32Array.from(promptIds);
    for (;;) {
      const logitsT = model.step(input, cache);
      const logits = await logitsT.toFloat32();
      logitsT.dispose();
      checkLogits(logits, tokens.length);
      const next = nextToken(logits, opts, seen, promptIds.length, rng);
      tokens.push(next);
      seen.push(next);
      await onToken?.(next);
      if (eos.has(next)) return { tokens, stopReason: 'eos' };
      if (tokens.length >= opts.maxNewTokens) return { tokens, stopReason: 'max_new_tokens' };
      input = Int32Array.of(next);
    }
  } finally {
    disposeKvCache(cache);
  }
}

/**
 * The token fed to batch rows that hold no sequence (left padding, finished or free rows). Any
 * in-vocabulary id works: padded positions are masked out of attention and such rows' outputs are
 * discarded.
 */
export function batchPadToken(model: LlamaModel, eosIds: readonly number[]): number {
  const candidate = model.config.padTokenId ?? eosIds[0] ?? 0;
  return candidate >= 0 && candidate < model.config.vocabSize ? candidate : 0;
}

/**
 * Generates for several prompts of different lengths in one batch. The prompts are left-padded to
 * the longest one; the KV cache masks each row's padding (attention kvStart) and each row's RoPE
 * positions start at 0 at its first real token, so every row computes what `generate` computes for
 * it alone (up to f32 summation order: greedy outputs match token for token on the fixtures).
 * Rows stop independently: after its EOS (or maxNewTokens) a row keeps being fed a pad token so the
 * batch stays rectangular, but its output stops; generation ends when every row has stopped.
 * Sampling (greedy: false): row b draws from its own Rng seeded with `seed + b`, i.e. the stream
 * `generate(model, prompts[b], { ...opts, seed: seed + b })` would use. `onToken(row, id)` is
 * called for each new token of a row still running (awaited); returning 'stop' ends that row there
 * (stopReason 'stopped', e.g. a stop sequence), the others go on.
 */
export async function generateBatch(
  model: LlamaModel,
  prompts: readonly (readonly number[])[],
  opts: SamplingOptions,
  onToken?: (row: number, id: number) => void | 'stop' | Promise<void | 'stop'>,
): Promise<BatchGenerateResult[]> {
  validateSampling(opts);
  prompts.forEach((p, b) => {
    if (p.length === 0) throw new InputError(`prompt ${b} is empty: nothing to condition on (no BOS either)`);
  });
  const B = prompts.length;
  const results: BatchGenerateResult[] = prompts.map(() => ({ tokens: [], stopReason: 'max_new_tokens' }));
  if (B === 0 || opts.maxNewTokens === 0) return results;
  warnPastPositions(model, prompts.map((p) => p.length + opts.maxNewTokens), 'prompt');
  const eosIds = opts.eosTokenIds ?? model.config.eosTokenIds;
  const eos = new Set(eosIds);
  const seed = opts.seed ?? 0;
  const rngs = prompts.map((_, b) => new Rng(seed + b));
  const V = model.config.vocabSize;
  const pad = batchPadToken(model, eosIds);
  const maxLen = Math.max(...prompts.map((p) => p.length));
  const starts = prompts.map((p) => maxLen - p.length);
  const cache = model.newKvCache(B, maxLen + opts.maxNewTokens, starts);
  const seen = prompts.map((p) => [...p]);
  const done = prompts.map(() => false);
  let running = B;
  try {
    let input = new Int32Array(B * maxLen).fill(pad);
    prompts.forEach((p, b) => input.set(p, b * maxLen + starts[b]!));
    while (running > 0) {
      const logitsT = model.step(input, cache);
      const all = await logitsT.toFloat32();
      logitsT.dispose();
      checkLogits(all, Math.max(...results.map((r) => r.tokens.length)));
      input = new Int32Array(B).fill(pad);
      for (let b = 0; b < B; b++) {
        if (done[b]) continue;
        const next = nextToken(all.subarray(b * V, (b + 1) * V), opts, seen[b]!, prompts[b]!.length, rngs[b]!);
        const r = results[b]!;
        r.tokens.push(next);
        seen[b]!.push(next);
        input[b] = next;
        const asked = await onToken?.(b, next);
        if (asked === 'stop') r.stopReason = 'stopped';
        else if (eos.has(next)) r.stopReason = 'eos';
        if (asked === 'stop' || eos.has(next) || r.tokens.length >= opts.maxNewTokens) {
          done[b] = true;
          input[b] = pad;
          running--;
        }
      }
    }
    return results;
  } finally {
    disposeKvCache(cache);
  }
}

/**
 * Turns a stream of token ids into text pieces. Each push decodes only a short window: the ids from
 * the start of the previous piece on, minus the text of that previous piece (decoding a suffix of
 * the ids alone can differ from the tail of the whole text, e.g. SentencePiece drops a leading
 * space, so the window keeps one piece of context). It holds back while the text ends in an
 * incomplete UTF-8 sequence (U+FFFD from byte fallback). Cost per token is constant, not linear in
 * the length so far.
 */
export class TextStreamer {
  private ids: number[] = [];
  /** Window start: the first id of the last emitted piece. */
  private prefixOffset = 0;
  /** The ids before this have been emitted. */
  private readOffset = 0;
  private readonly decode: (ids: readonly number[]) => string;
  constructor(decode: (ids: readonly number[]) => string) {
    this.decode = (ids) => (ids.length ? decode(ids) : ''); // HF tokenizers refuse to decode []
  }

  push(id: number): string {
    this.ids.push(id);
    const prefix = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const text = this.decode(this.ids.slice(this.prefixOffset));
    if (text.length <= prefix.length || text.endsWith('\uFFFD')) return '';
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return text.slice(prefix.length);
  }

  /** Whatever is left (e.g. a trailing incomplete sequence) at the end. */
  flush(): string {
    const prefix = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const text = this.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset;
    this.readOffset = this.ids.length;
    return text.slice(prefix.length);
  }
}

/** Cuts `text` before the first occurrence of any stop sequence; says whether one was found. */
export function cutAtStop(text: string, stops: readonly string[]): { text: string; stopped: boolean } {
  let at = -1;
  for (const s of stops) {
    const i = s === '' ? -1 : text.indexOf(s);
    if (i >= 0 && (at < 0 || i < at)) at = i;
  }
  return at >= 0 ? { text: text.slice(0, at), stopped: true } : { text, stopped: false };
}

/** The parts of a model's generation_config.json that decoding uses (absent file: {}). */
export interface GenerationConfig {
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  eosTokenIds?: number[];
  maxNewTokens?: number;
}

/**
 * The token ids that end generation: generation_config.json's eos_token_id when it has one, else
 * the model config's EOS ids and the tokenizer's EOS token.
 */
export function generationEosIds(gen: GenerationConfig, modelEosIds: readonly number[], tokenizerEosId: number): number[] {
  return gen.eosTokenIds ? [...gen.eosTokenIds] : [...new Set([...modelEosIds, tokenizerEosId])];
}

export async function readGenerationConfig(dir: string): Promise<GenerationConfig> {
  const file = join(dir, 'generation_config.json');
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw readFailure(err, file, 'generation config');
  }
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new InputError(`invalid JSON: ${(err as Error).message}`, { file });
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new InputError('expected a JSON object', { file });
  const num = (k: string) => (typeof raw[k] === 'number' ? (raw[k] as number) : undefined);
  const eos = raw['eos_token_id'];
  const out: GenerationConfig = {};
  if (typeof raw['do_sample'] === 'boolean') out.doSample = raw['do_sample'];
  if (num('temperature') !== undefined) out.temperature = num('temperature');
  if (num('top_k') !== undefined) out.topK = num('top_k');
  if (num('top_p') !== undefined) out.topP = num('top_p');
  if (num('repetition_penalty') !== undefined) out.repetitionPenalty = num('repetition_penalty');
  if (num('max_new_tokens') !== undefined) out.maxNewTokens = num('max_new_tokens');
  if (typeof eos === 'number') out.eosTokenIds = [eos];
  else if (Array.isArray(eos) && eos.every((e) => typeof e === 'number')) out.eosTokenIds = eos as number[];
  return out;
}
