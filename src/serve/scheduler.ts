// Continuous batching: requests join a running decode batch and leave it when done.
//
// Each model variant (the base, or one LoRA adapter over the same base weights) has a batch of
// `maxBatchSize` slots over one KV cache [slots, S, Hkv, Dh] per layer, S = C + slack (C = the
// context length). Every row writes its next key at the same cache position L; row b's keys live
// in [starts[b], L), attention ignores the keys before starts[b] (kvStart) and its RoPE positions
// count from 0 at starts[b], so a row computes exactly what it would alone.
//
//   join     a waiting request is prefilled alone (a [1, P] step into its own cache, so its first
//            token is the one `generate` would choose) and its K/V copied into a free slot, right-
//            aligned to end at L (starts = L - P). L never drops below C, and P < C, so it fits.
//   decode   one [slots, 1] step for the whole batch; free slots are fed a pad token with
//            starts = L (they attend only to themselves) and their outputs are ignored.
//   leave    a row that hit EOS, max_tokens, a stop sequence, or whose client went away is freed
//            at once; its keys stay behind, masked, until compaction.
//   compact  when L reaches S, every live row is copied into a fresh cache right-aligned at C
//            (WebGPU cannot copy within a buffer); this happens at most every `slack` steps.
//
// Token choice runs on the GPU (kernels/sampling.ts): each variant's batch has a TokenSampler with a
// row per slot, set when a sequence joins (its parameters, seed, prompt and first token), so a decode
// step reads back one token id per row, not the logits. A prefill chooses the first token with a
// one-row sampler. Row b's t-th draw is rand_uniform(seed, t), the draw `finllm generate` makes, so
// seeded sampling gives the same tokens however requests are batched.
//
// Variants take turns: one decode step per variant with live rows per round, so an adapter with a
// long queue cannot starve the base. The bounded queue holds requests waiting for a slot; a full
// queue is refused (QueueFullError → 429). All GPU work happens on this one loop; HTTP handlers
// only submit, and read tokens through callbacks.
import { storageBindingLimit } from '../engine/device.js';
import { formatBytes } from '../engine/device-memory.js';
import { bytesPerElement, engine, Tensor } from '../engine/tensor.js';
import { type RowSampling, TokenSampler } from '../kernels/sampling.js';
import { NonFiniteLogitsError } from '../llama/generate.js';
import {
  copyKvRows,
  disposeKvCache,
  frontKvRows,
  type KvCache,
  type KvCacheDtype,
  type LlamaModel,
  type LoraLayers,
  setKvStarts,
} from '../llama/model.js';

/** A request's token choice: the sampler's per-row parameters (the seed is the request's). */
export type TokenSampling = Omit<RowSampling, 'seed'>;

export interface SchedulerOptions {
  /** Decode slots per model variant. */
  maxBatchSize: number;
  /** Context length C: prompt + generated tokens of one request never exceed it. */
  contextLength: number;
  /** Requests waiting for a slot beyond this are refused. */
  maxQueue: number;
  /** Token fed to free slots. */
  padToken: number;
  /** Extra cache positions beyond C (S = C + slack): compaction runs once per `slack` steps. Default max(16, C/4). */
  slack?: number;
  /** Runtime failures of a step (logged; the requests involved fail). */
  onError?: (err: unknown) => void;
  /** Storage of the KV caches (default f32; f16 takes half the memory). */
  kvCacheDtype?: KvCacheDtype;
}

export interface GenerationRequest {
  /** LoRA state of the variant (null = the base model), and its name (batches are per variant). */
  variant: { name: string; lora: LoraLayers | null };
  promptIds: readonly number[];
  maxTokens: number;
  sampling: TokenSampling;
  seed: number;
  eosIds: ReadonlySet<number>;
  /** Aborting (client gone) frees the request's slot or queue place before the next step. */
  signal?: AbortSignal;
  /** Each new token, in order (EOS included); returning 'stop' ends the request here (stop sequence). */
  onToken: (id: number) => void | 'stop';
}

export type FinishReason = 'stop' | 'length';

export interface GenerationResult {
  tokens: number[];
  finishReason: FinishReason;
}

export class QueueFullError extends Error {
  override name = 'QueueFullError';
}
export class SchedulerClosedError extends Error {
  override name = 'SchedulerClosedError';
}
export class RequestCancelledError extends Error {
  override name = 'RequestCancelledError';
}

interface Sequence {
  req: GenerationRequest;
  tokens: number[];
  state: 'waiting' | 'running' | 'done';
  resolve: (r: GenerationResult) => void;
  reject: (e: unknown) => void;
}

interface Batch {
  name: string;
  lora: LoraLayers | null;
  cache: KvCache | null;
  /** One row per slot; a row is (re)set when a sequence joins its slot. Freed with the cache. */
  sampler: TokenSampler | null;
  slots: (Sequence | null)[];
  starts: Int32Array;
  /** The next write position. */
  L: number;
}

/** Counters for /metrics. */
export interface SchedulerStats {
  decodeSteps: number;
  /** Sum over decode steps of the rows that held a request (mean batch occupancy = rows / steps). */
  decodeRows: number;
  prefills: number;
  compactions: number;
}

/** Positions per row of a batch's KV cache: S = C + slack (default max(16, C/4)). */
function cachePositions(contextLength: number, slack?: number): number {
  return contextLength + Math.max(1, slack ?? Math.max(16, Math.ceil(contextLength / 4)));
}

/** Share of the free device memory the decode slots may plan on (activations and the prefill take the rest). */
const SLOT_MEMORY_SHARE = 0.9;

/**
 * The most decode slots per variant (--max-batch-size) this GPU holds, and why not more. Per slot:
 * each variant's batch KV cache [slots, S, Hkv, Dh] per layer, one more such cache while a batch
 * compacts, and its rows of the token sampler ([slots, V] f32 scratch and u32 counts) and of the
 * step's logits. Two limits: one buffer (a layer's cache, the sampler's scratch) must fit the
 * largest buffer the device binds; all of them must fit the free device memory, when it is known.
 */
export function maxDecodeSlots(
  model: LlamaModel,
  o: { contextLength: number; slack?: number; kvCacheDtype?: KvCacheDtype; variants: number },
): { slots: number; why: string } {
  const c = model.config;
  const S = cachePositions(o.contextLength, o.slack);
  const layerBytes = S * c.numKeyValueHeads * c.headDim * bytesPerElement(o.kvCacheDtype ?? 'f32');
  const rowBytes = c.vocabSize * 4;
  const { dev, pool } = engine();
  const bind = Math.min(dev.limits.maxBufferSize, storageBindingLimit(dev.limits));
  const byBinding = Math.floor(bind / Math.max(layerBytes, rowBytes));
  let slots = byBinding;
  let why = `one layer's KV cache takes ${formatBytes(layerBytes)} per slot (${S} positions) and this GPU binds buffers of up to ${formatBytes(bind)}`;
  if (pool.capacityBytes !== null) {
    const perSlot = (o.variants + 1) * 2 * c.numHiddenLayers * layerBytes + o.variants * 2 * rowBytes + rowBytes;
    const free = Math.max(0, SLOT_MEMORY_SHARE * pool.capacityBytes - pool.liveBytes);
    const byMemory = Math.floor(free / perSlot);
    if (byMemory < slots) {
      slots = byMemory;
      why = `a slot takes ${formatBytes(perSlot)} (the KV caches of ${o.variants} model(s) of ${S} positions, one more while compacting, sampler rows), and ${formatBytes(free)} of the ${formatBytes(pool.capacityBytes)} device memory (from ${pool.capacitySource}) is free for them`;
    }
  }
  return { slots, why };
}

export class BatchScheduler {
  readonly stats: SchedulerStats = { decodeSteps: 0, decodeRows: 0, prefills: 0, compactions: 0 };
  private readonly C: number;
  private readonly S: number;
  private readonly waiting: Sequence[] = [];
  private readonly batches = new Map<string, Batch>();
  private accepting = true;
  private closed = false;
  private wake: (() => void) | null = null;
  private idleWaiters: (() => void)[] = [];
  private loop: Promise<void> | null = null;
  private nextBatch = 0;
  private prefillSampler: TokenSampler | null = null;

  constructor(
    private readonly model: LlamaModel,
    private readonly opts: SchedulerOptions,
  ) {
    if (!(Number.isInteger(opts.maxBatchSize) && opts.maxBatchSize >= 1))
      throw new RangeError(`maxBatchSize must be a positive integer, got ${opts.maxBatchSize}`);
    if (!(Number.isInteger(opts.contextLength) && opts.contextLength >= 2))
      throw new RangeError(`contextLength must be an integer >= 2, got ${opts.contextLength}`);
    this.C = opts.contextLength;
    this.S = cachePositions(this.C, opts.slack);
  }

  /** Requests waiting for a slot. */
  get queueDepth(): number {
    return this.waiting.length;
  }

  /** Requests holding a decode slot. */
  get running(): number {
    let n = 0;
    for (const b of this.batches.values()) for (const s of b.slots) if (s?.state === 'running') n++;
    return n;
  }

  /** Cache positions per row (S), the cache's dtype and the bytes one variant's KV cache takes. */
  cacheGeometry(): { positions: number; dtype: KvCacheDtype; bytesPerVariant: number } {
    const c = this.model.config;
    const elements = 2 * c.numHiddenLayers * this.opts.maxBatchSize * this.S * c.numKeyValueHeads * c.headDim;
    return { positions: this.S, dtype: this.kvDtype, bytesPerVariant: elements * bytesPerElement(this.kvDtype) };
  }

  private get kvDtype(): KvCacheDtype {
    return this.opts.kvCacheDtype ?? 'f32';
  }

  /**
   * Queues a request. Throws QueueFullError (queue at its bound) or SchedulerClosedError (draining)
   * synchronously, so the caller can answer before it starts a response. The promise rejects with
   * RequestCancelledError when the signal aborts first.
   */
  submit(req: GenerationRequest): Promise<GenerationResult> {
    if (!this.accepting) throw new SchedulerClosedError('the server is shutting down');
    if (this.waiting.length >= this.opts.maxQueue)
      throw new QueueFullError(`the queue is full (${this.opts.maxQueue} requests waiting)`);
    if (req.promptIds.length < 1 || req.promptIds.length >= this.C)
      throw new RangeError(`prompt of ${req.promptIds.length} tokens: must be in [1, ${this.C})`);
    if (!(Number.isInteger(req.maxTokens) && req.maxTokens >= 1 && req.promptIds.length + req.maxTokens <= this.C)) {
      throw new RangeError(
        `maxTokens ${req.maxTokens} with a ${req.promptIds.length}-token prompt exceeds the context of ${this.C}`,
      );
    }
    return new Promise<GenerationResult>((resolve, reject) => {
      const seq: Sequence = { req, tokens: [], state: 'waiting', resolve, reject };
      if (req.signal?.aborted) {
        reject(new RequestCancelledError('cancelled'));
        return;
      }
      req.signal?.addEventListener('abort', () => this.cancel(seq), { once: true });
      this.waiting.push(seq);
      this.loop ??= this.run().catch((err: unknown) => {
        // A bug outside a step: fail what is queued or running rather than hang; the next submit
        // starts a fresh loop.
        this.opts.onError?.(err);
        const e = err instanceof Error ? err : new Error(String(err));
        for (const s of [...this.waiting, ...[...this.batches.values()].flatMap((b) => b.slots)])
          if (s) this.finish(s, e);
        for (const b of this.batches.values()) {
          b.slots.fill(null);
          this.releaseCache(b);
        }
        this.loop = null;
        for (const w of this.idleWaiters.splice(0)) w();
      });
      this.poke();
    });
  }

  /** Stops taking requests (submit throws SchedulerClosedError); queued and running ones go on. */
  stopAccepting(): void {
    this.accepting = false;
  }

  /** Resolves once no request is waiting or running. */
  whenIdle(): Promise<void> {
    if (this.waiting.length === 0 && this.running === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Cancels every waiting and running request (their promises reject with `reason`). */
  cancelAll(reason = 'the server is shutting down'): void {
    for (const seq of [...this.waiting, ...[...this.batches.values()].flatMap((b) => b.slots)]) {
      if (seq) this.finish(seq, new RequestCancelledError(reason));
    }
    this.poke();
  }

  /** Cancels everything, stops the loop, and frees the KV caches. */
  async close(): Promise<void> {
    this.accepting = false;
    this.cancelAll();
    this.closed = true;
    this.poke();
    await this.loop;
    for (const b of this.batches.values()) this.releaseCache(b);
    this.batches.clear();
    this.prefillSampler?.dispose();
    this.prefillSampler = null;
  }

  // ---- the loop ---------------------------------------------------------------------------

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private cancel(seq: Sequence): void {
    if (seq.state === 'done') return;
    this.finish(seq, new RequestCancelledError('the client went away'));
    this.poke();
  }

  /** Settles a sequence and takes it out of the queue; a slot holding it is freed by the loop. */
  private finish(seq: Sequence, outcome: GenerationResult | Error): void {
    if (seq.state === 'done') return;
    const wasWaiting = seq.state === 'waiting';
    seq.state = 'done';
    if (wasWaiting) {
      const i = this.waiting.indexOf(seq);
      if (i >= 0) this.waiting.splice(i, 1);
    }
    if (outcome instanceof Error) seq.reject(outcome);
    else seq.resolve(outcome);
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      this.freeFinishedSlots();
      if (this.waiting.length === 0 && this.running === 0) {
        for (const b of this.batches.values()) this.releaseCache(b);
        for (const w of this.idleWaiters.splice(0)) w();
        await new Promise<void>((resolve) => (this.wake = resolve));
        continue;
      }
      await this.admit();
      await this.decodeRound();
    }
  }

  private batchFor(variant: GenerationRequest['variant']): Batch {
    let b = this.batches.get(variant.name);
    if (!b) {
      const B = this.opts.maxBatchSize;
      b = {
        name: variant.name,
        lora: variant.lora,
        cache: null,
        sampler: null,
        slots: new Array<Sequence | null>(B).fill(null),
        starts: new Int32Array(B),
        L: this.C,
      };
      this.batches.set(variant.name, b);
    }
    return b;
  }

  private freeFinishedSlots(): void {
    for (const b of this.batches.values())
      b.slots.forEach((s, i) => {
        if (s && s.state === 'done') b.slots[i] = null;
      });
  }

  private releaseCache(b: Batch): void {
    if (b.cache) disposeKvCache(b.cache);
    b.cache = null;
    b.sampler?.dispose();
    b.sampler = null;
    b.L = this.C;
  }

  /** Prefills waiting requests (in arrival order) whose variant has a free slot. */
  private async admit(): Promise<void> {
    for (const seq of [...this.waiting]) {
      if (seq.state !== 'waiting') continue;
      const b = this.batchFor(seq.req.variant);
      const slot = b.slots.indexOf(null);
      if (slot < 0) continue;
      this.waiting.splice(this.waiting.indexOf(seq), 1);
      seq.state = 'running';
      try {
        await this.prefill(b, slot, seq);
      } catch (err) {
        this.opts.onError?.(err);
        this.finish(seq, err instanceof Error ? err : new Error(String(err)));
      }
    }
  }

  private async prefill(b: Batch, slot: number, seq: Sequence): Promise<void> {
    const P = seq.req.promptIds.length;
    const own = this.model.newKvCache(1, P, undefined, this.kvDtype);
    const row = { ...seq.req.sampling, seed: seq.req.seed };
    try {
      this.model.lora = b.lora;
      const logits = this.model.step(Int32Array.from(seq.req.promptIds), own);
      this.prefillSampler ??= new TokenSampler(1, this.model.config.vocabSize);
      this.prefillSampler.setRow(0, row, seq.req.promptIds, [], this.opts.padToken);
      const first = await this.choose(this.prefillSampler, logits, 1);
      this.stats.prefills++;
      if (seq.state === 'done') return; // cancelled meanwhile
      if (!this.emit(seq, first[0]!)) return;
      b.cache ??= this.model.newKvCache(this.opts.maxBatchSize, this.S, undefined, this.kvDtype);
      b.sampler ??= new TokenSampler(this.opts.maxBatchSize, this.model.config.vocabSize);
      // The row continues where the prefill's left off: seen = prompt + first token, draw 1 next.
      b.sampler.setRow(slot, row, seq.req.promptIds, [first[0]!], this.opts.padToken);
      copyKvRows(own, 0, 0, b.cache, slot, b.L - P, P);
      b.starts[slot] = b.L - P;
      b.slots[slot] = seq;
    } finally {
      disposeKvCache(own);
    }
  }

  /** One decode step for each variant with live rows, starting from a rotating one. */
  private async decodeRound(): Promise<void> {
    const list = [...this.batches.values()];
    for (let k = 0; k < list.length; k++) {
      const b = list[(this.nextBatch + k) % list.length]!;
      for (let i = 0; i < b.slots.length; i++) if (b.slots[i]?.state === 'done') b.slots[i] = null;
      if (!b.slots.some((s) => s)) {
        this.releaseCache(b);
        continue;
      }
      try {
        await this.decodeStep(b);
      } catch (err) {
        this.opts.onError?.(err);
        for (const s of b.slots) if (s) this.finish(s, err instanceof Error ? err : new Error(String(err)));
        b.slots.fill(null);
        this.releaseCache(b);
      }
    }
    this.nextBatch = list.length ? (this.nextBatch + 1) % list.length : 0;
  }

  private async decodeStep(b: Batch): Promise<void> {
    if (b.L >= this.S) this.compact(b);
    // Only the rows up to the last occupied slot are computed (slots fill from the lowest free one).
    let B = 0;
    b.slots.forEach((s, i) => {
      if (s) B = i + 1;
    });
    const ids = new Int32Array(B).fill(this.opts.padToken);
    const starts = b.starts.slice(0, B);
    const rows: Sequence[] = [];
    for (let s = 0; s < B; s++) {
      const seq = b.slots[s];
      if (seq) {
        ids[s] = seq.tokens[seq.tokens.length - 1]!;
        rows[s] = seq;
      } else {
        starts[s] = b.L; // a free slot attends only to its own (pad) key
      }
    }
    const cache = frontKvRows(b.cache!, B);
    let logits: Tensor;
    try {
      setKvStarts(cache, starts);
      cache.length = b.L;
      this.model.lora = b.lora;
      logits = this.model.step(ids, cache);
      b.L = cache.length;
    } finally {
      disposeKvCache(cache);
    }
    // Rows of free slots choose too (their sampler rows may be stale); their ids are ignored.
    const next = await this.choose(b.sampler!, logits, B);
    this.stats.decodeSteps++;
    for (let s = 0; s < B; s++) {
      const seq = rows[s];
      if (!seq) continue;
      this.stats.decodeRows++;
      if (seq.state === 'done') {
        b.slots[s] = null; // cancelled while the step ran
        continue;
      }
      if (!this.emit(seq, next[s]!)) b.slots[s] = null;
    }
  }

  /** The next token of the first `rows` rows of `sampler` from `logits` [rows, V] (disposed), read back. */
  private async choose(sampler: TokenSampler, logits: Tensor, rows: number): Promise<Int32Array> {
    const out = Tensor.empty([rows], 'i32');
    try {
      sampler.sample(logits, out);
    } finally {
      logits.dispose();
    }
    try {
      return (await out.read()) as Int32Array;
    } finally {
      out.dispose();
    }
  }

  /** Moves every live row into a fresh cache, right-aligned at C. */
  private compact(b: Batch): void {
    const fresh = this.model.newKvCache(this.opts.maxBatchSize, this.S, undefined, this.kvDtype);
    b.slots.forEach((seq, s) => {
      if (!seq) return;
      const live = b.L - b.starts[s]!;
      copyKvRows(b.cache!, s, b.starts[s]!, fresh, s, this.C - live, live);
      b.starts[s] = this.C - live;
    });
    disposeKvCache(b.cache!);
    b.cache = fresh;
    b.L = this.C;
    this.stats.compactions++;
  }

  /** Records a new token; false when the sequence is finished (its slot is to be freed). */
  private emit(seq: Sequence, id: number): boolean {
    if (id < 0) {
      // The sampler's mark for NaN / +inf logits: the forward overflowed for this row.
      this.finish(
        seq,
        new NonFiniteLogitsError(
          `new token ${seq.tokens.length + 1}: the model produced non-finite logits (NaN or +inf); with 16-bit storage try --storage f32`,
        ),
      );
      return false;
    }
    seq.tokens.push(id);
    let asked: void | 'stop';
    try {
      asked = seq.req.onToken(id);
    } catch (err) {
      this.finish(seq, err instanceof Error ? err : new Error(String(err)));
      return false;
    }
    if (this.isDone(seq)) return false; // the callback cancelled it
    if (asked === 'stop' || seq.req.eosIds.has(id)) this.finish(seq, { tokens: seq.tokens, finishReason: 'stop' });
    else if (seq.tokens.length >= seq.req.maxTokens) this.finish(seq, { tokens: seq.tokens, finishReason: 'length' });
    return !this.isDone(seq);
  }

  /** Re-reads the state (callbacks may have finished the sequence; TypeScript's narrowing cannot know). */
  private isDone(seq: Sequence): boolean {
    return seq.state === 'done';
  }
}
