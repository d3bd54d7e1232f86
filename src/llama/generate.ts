// Autoregressive decoding with a KV cache: one prefill pass over the prompt, then one token at a
// time, each step recorded and submitted without waiting for the previous token on the CPU.
//
// Token choice runs on the GPU (kernels/sampling.ts), with transformers' logit processing order and
// semantics: repetition penalty (divide positive / multiply negative logits of tokens already in the
// sequence) → temperature → top-k → top-p → sample (or argmax when greedy). The sampler writes each
// row's token straight into the next step's input ids, so a step needs nothing from the CPU; the CPU
// reads back B token ids per step, one step behind the GPU (step t+1 is already queued while step t's
// ids are read, checked for EOS / stop requests and handed to `onToken`), or all of them at the end
// when nothing needs to see them early (no EOS ids and no callback). The draw of a row's t-th token
// is u = rand_uniform(seed, t) (engine/random.ts), so samples are reproducible from the seed alone.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { engine, Tensor } from '../engine/tensor.js';
import { InputError, NonFiniteError, readFailure } from '../errors.js';
import { TokenSampler } from '../kernels/sampling.js';
import { warn } from '../warnings.js';
import { disposeKvCache, KV_CACHE_SETTINGS, type KvCacheSetting, resolveKvCacheDtype } from './kv-cache.js';
import type { LlamaModel } from './model.js';

/**
 * Warns (once per process) when sequences run past the model's max_position_embeddings: positions
 * there were never trained, so their numbers are extrapolation (transformers warns likewise).
 */
export function warnPastPositions(model: LlamaModel, lengths: readonly number[], what: 'text' | 'prompt'): void {
  const max = model.config.maxPositionEmbeddings;
  const long = lengths.map((n, i) => ({ n, i })).filter((x) => x.n > max);
  if (long.length === 0) return;
  const shown =
    long
      .slice(0, 3)
      .map((x) => `${what} ${x.i + 1}: ${x.n}`)
      .join(', ') + (long.length > 3 ? ', ...' : '');
  const runs =
    what === 'text' ? `${long.length === 1 ? 'is' : 'are'} longer than` : 'with the new tokens would run past';
  warn(
    `${long.length} ${what}${long.length === 1 ? '' : 's'} ${runs} the model's max_position_embeddings (${max} tokens) (${shown}); positions past it were never trained, so those results are extrapolation`,
    `past-positions:${what}`,
  );
}

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
  /** A row's draws are rand_uniform(seed, t) for its t-th new token. Default 0. */
  seed?: number;
  /** Stop when any of these is generated (it is included in the output). Default: the model's EOS ids. */
  eosTokenIds?: number[];
  /** KV cache storage: f32, f16 (half the memory) or auto (the default: f16 under fp16-mixed, else f32). */
  kvCache?: KvCacheSetting;
}

/** generateBatch's options: SamplingOptions plus per-row seeds. */
export interface BatchSamplingOptions extends SamplingOptions {
  /** Row b's seed (default seed + b), e.g. to keep an item's draws when batches are reordered. */
  seeds?: readonly number[];
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

/**
 * The smallest temperature and repetition penalty decoding accepts (`generate` exits 1, `serve`
 * answers 400, naming the field). The sampler divides by both in f32 on the GPU, where a smaller
 * value is a subnormal that the GPU flushes to zero (or is 0 already), and every prompt then decodes
 * to the same garbage. Greedy decoding is temperature 0 for `serve`, --greedy for `generate`.
 */
export const MIN_TEMPERATURE = 1e-5;
export const MIN_REPETITION_PENALTY = 1e-5;
/** Seeds are u32 on the GPU: a larger one would repeat a smaller one's draws. */
export const MAX_SEED = 2 ** 32 - 1;

export function validateSampling(o: SamplingOptions): void {
  const bad = (key: string, msg: string) => {
    throw new InputError(msg, { key });
  };
  if (!(Number.isInteger(o.maxNewTokens) && o.maxNewTokens >= 0))
    bad('max-new-tokens', `expected a non-negative integer, got ${o.maxNewTokens}`);
  if (o.temperature !== undefined && !(o.temperature >= MIN_TEMPERATURE && Number.isFinite(o.temperature))) {
    bad(
      'temperature',
      `expected a number >= ${MIN_TEMPERATURE} (smaller ones underflow on the GPU; --greedy decodes greedily), got ${o.temperature}`,
    );
  }
  if (o.topK !== undefined && !(Number.isInteger(o.topK) && o.topK >= 0))
    bad('top-k', `expected a non-negative integer, got ${o.topK}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) bad('top-p', `expected a number in (0, 1], got ${o.topP}`);
  if (
    o.repetitionPenalty !== undefined &&
    !(o.repetitionPenalty >= MIN_REPETITION_PENALTY && Number.isFinite(o.repetitionPenalty))
  ) {
    bad(
      'repetition-penalty',
      `expected a number >= ${MIN_REPETITION_PENALTY} (1 = off; smaller ones underflow on the GPU), got ${o.repetitionPenalty}`,
    );
  }
  if (o.seed !== undefined && !(Number.isInteger(o.seed) && o.seed >= 0 && o.seed <= MAX_SEED))
    bad('seed', `expected an integer in [0, ${MAX_SEED}], got ${o.seed}`);
  if (o.kvCache !== undefined && !KV_CACHE_SETTINGS.includes(o.kvCache))
    bad('kv-cache', `expected ${KV_CACHE_SETTINGS.join(', ')}, got ${JSON.stringify(o.kvCache)}`);
}

/**
 * Generates up to `maxNewTokens` tokens after `promptIds` (one sequence). `onToken` is called with
 * each new token (awaited, so a slow consumer applies back-pressure; the GPU works one step ahead).
 */
export async function generate(
  model: LlamaModel,
  promptIds: readonly number[],
  opts: SamplingOptions,
  onToken?: (id: number) => void | Promise<void>,
): Promise<GenerateResult> {
  if (promptIds.length === 0) throw new InputError('the prompt is empty: nothing to condition on (no BOS either)');
  const [r] = await decodeRows(
    model,
    [promptIds],
    { ...opts, seeds: [opts.seed ?? 0] },
    onToken ? async (_, id) => void (await onToken(id)) : undefined,
  );
  return { tokens: r!.tokens, stopReason: r!.stopReason === 'eos' ? 'eos' : 'max_new_tokens' };
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
 * Rows stop independently: after its EOS (or maxNewTokens) a row's output ends (the batch stays
 * rectangular; what the stopped row computes is discarded); generation ends when every row has
 * stopped. Sampling (greedy: false): row b draws with seed `seeds[b]` (default seed + b), the draws
 * `generate(model, prompts[b], { ...opts, seed: seed + b })` makes. `onToken(row, id)` is called
 * for each new token of a row still running, in step order (awaited); returning 'stop' ends that
 * row there (stopReason 'stopped', e.g. a stop sequence), the others go on.
 */
export async function generateBatch(
  model: LlamaModel,
  prompts: readonly (readonly number[])[],
  opts: BatchSamplingOptions,
  onToken?: (row: number, id: number) => void | 'stop' | Promise<void | 'stop'>,
): Promise<BatchGenerateResult[]> {
  return decodeRows(model, prompts, opts, onToken);
}

/** The forward pass overflowed: the sampler found NaN or +inf logits (it returns the id −1 then). */
export class NonFiniteLogitsError extends NonFiniteError {
  override name = 'NonFiniteLogitsError';
}

/** Steps recorded ahead of the one whose tokens the CPU is waiting for, when tokens are checked per step. */
const LOOKAHEAD = 1;

async function decodeRows(
  model: LlamaModel,
  prompts: readonly (readonly number[])[],
  opts: BatchSamplingOptions,
  onToken?: (row: number, id: number) => void | 'stop' | Promise<void | 'stop'>,
): Promise<BatchGenerateResult[]> {
  validateSampling(opts);
  prompts.forEach((p, b) => {
    if (p.length === 0) throw new InputError(`prompt ${b} is empty: nothing to condition on (no BOS either)`);
  });
  const B = prompts.length;
  if (opts.seeds && opts.seeds.length !== B)
    throw new RangeError(`generateBatch: ${opts.seeds.length} seeds for ${B} prompts`);
  const results: BatchGenerateResult[] = prompts.map(() => ({ tokens: [], stopReason: 'max_new_tokens' }));
  const steps = opts.maxNewTokens;
  if (B === 0 || steps === 0) return results;
  warnPastPositions(
    model,
    prompts.map((p) => p.length + steps),
    'prompt',
  );
  const eosIds = opts.eosTokenIds ?? model.config.eosTokenIds;
  const eos = new Set(eosIds);
  const V = model.config.vocabSize;
  const pad = batchPadToken(model, eosIds);
  const maxLen = Math.max(...prompts.map((p) => p.length));
  const starts = prompts.map((p) => maxLen - p.length);
  const dev = engine().dev;
  const cache = model.newKvCache(B, maxLen + steps, starts, resolveKvCacheDtype(opts.kvCache));
  const sampler = new TokenSampler(B, V);
  const ids = Tensor.empty([B], 'i32').keep();
  const history = Tensor.empty([steps * B], 'i32').keep();
  const pending: { from: number; to: number; staging: GPUBuffer; data: Promise<ArrayBuffer> }[] = [];
  try {
    prompts.forEach((p, b) => {
      sampler.setRow(b, { ...opts, seed: opts.seeds?.[b] ?? (opts.seed ?? 0) + b }, p);
    });
    const prefill = new Int32Array(B * maxLen).fill(pad);
    prompts.forEach((p, b) => {
      prefill.set(p, b * maxLen + starts[b]!);
    });
    // Tokens are looked at per step only when something must react to them.
    const perStep = eos.size > 0 || onToken !== undefined;
    let recorded = 0;
    let readFrom = 0;
    const record = () => {
      const logits = model.step(recorded === 0 ? prefill : ids, cache);
      sampler.sample(logits, ids);
      logits.dispose();
      const enc = dev.commandEncoder();
      enc.copyBufferToBuffer(ids.buffer, 0, history.buffer, recorded * B * 4, B * 4);
      recorded++;
      if (recorded === steps || (perStep && recorded - readFrom >= 1)) {
        const bytes = (recorded - readFrom) * B * 4;
        const staging = dev.stagingBuffer(bytes);
        enc.copyBufferToBuffer(history.buffer, readFrom * B * 4, staging, 0, bytes);
        dev.flush();
        pending.push({ from: readFrom, to: recorded, staging, data: dev.mapRead(staging, bytes) });
        readFrom = recorded;
      } else {
        dev.flush();
      }
    };
    const done = prompts.map(() => false);
    let running = B;
    let consumed = 0;
    while (running > 0) {
      while (recorded < steps && (!perStep || recorded - consumed <= LOOKAHEAD)) record();
      const chunk = pending.shift();
      if (!chunk) break;
      const tokens = new Int32Array(await chunk.data);
      dev.releaseStaging(chunk.staging);
      for (let t = chunk.from; t < chunk.to && running > 0; t++) {
        for (let b = 0; b < B; b++) {
          if (done[b]) continue;
          const next = tokens[(t - chunk.from) * B + b]!;
          const r = results[b]!;
          if (next < 0)
            throw new NonFiniteLogitsError(
              `new token ${r.tokens.length + 1}: the model produced non-finite logits (NaN or +inf); with 16-bit storage try --storage f32`,
            );
          r.tokens.push(next);
          const asked = await onToken?.(b, next);
          if (asked === 'stop') r.stopReason = 'stopped';
          else if (eos.has(next)) r.stopReason = 'eos';
          if (asked === 'stop' || eos.has(next) || r.tokens.length >= steps) {
            done[b] = true;
            running--;
          }
        }
      }
      consumed = chunk.to;
    }
    return results;
  } finally {
    // Reads still in flight (rows stopped early, or an exception from onToken): let them land.
    for (const p of pending) {
      await p.data.catch(() => undefined);
      dev.releaseStaging(p.staging);
    }
    sampler.dispose();
    ids.dispose();
    history.dispose();
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
export function generationEosIds(
  gen: GenerationConfig,
  modelEosIds: readonly number[],
  tokenizerEosId: number,
): number[] {
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
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw))
    throw new InputError('expected a JSON object', { file });
  const num = (k: string) => (typeof raw[k] === 'number' ? (raw[k] as number) : undefined);
  const eos = raw['eos_token_id'];
  const out: GenerationConfig = {};
  if (typeof raw['do_sample'] === 'boolean') out.doSample = raw['do_sample'];
  if (num('temperature') !== undefined) out.temperature = num('temperature');
  if (num('top_k') !== undefined) out.topK = num('top_k');
  if (num('top_p') !== undefined) out.topP = num('top_p');
  if (num('repetition_penalty') !== undefined) out.repetitionPenalty = num('repetition_penalty');
  if (num('max_new_tokens') !== undefined) out.maxNewTokens = num('max_new_tokens');
  // Values the GPU sampler cannot honour are refused here, where the file can be named.
  if (out.temperature !== undefined && !(out.temperature === 0 || out.temperature >= MIN_TEMPERATURE)) {
    throw new InputError(`expected 0 or a number >= ${MIN_TEMPERATURE}, got ${out.temperature}`, {
      file,
      key: 'temperature',
    });
  }
  if (out.repetitionPenalty !== undefined && !(out.repetitionPenalty >= MIN_REPETITION_PENALTY)) {
    throw new InputError(`expected a number >= ${MIN_REPETITION_PENALTY} (1 = off), got ${out.repetitionPenalty}`, {
      file,
      key: 'repetition_penalty',
    });
  }
  if (typeof eos === 'number') out.eosTokenIds = [eos];
  else if (Array.isArray(eos) && eos.every((e) => typeof e === 'number')) out.eosTokenIds = eos as number[];
  return out;
}
