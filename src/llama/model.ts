// The Llama decoder on the engine's kernels, computing what transformers' LlamaForCausalLM (+ PEFT
// LoRA) computes, in f32:
//
//   x = embed_tokens[ids]
//   per layer:  h = rmsnorm(x) ; q,k,v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ (+ LoRA) ; q,k = rope(q,k)
//               x = x + o_proj(flashAttention(q, k, v, causal, GQA))
//               x = x + down_proj(silu(gate_proj(rmsnorm(x))) * up_proj(rmsnorm(x)))
//   logits = rmsnorm(x)·lm_headᵀ
//
// Shapes: B batch rows, T tokens per row, N = B·T, D hidden, Hq/Hkv heads, Dh head dim, V vocab.
// Activations stay [N, D] between layers; q/k/v are views [B, T, H, Dh] of the projections.
// The base weights are frozen; LoRA A/B are the only leaves with requiresGrad.
import { backward, isGradEnabled, needsGrad, noGrad, recordOp } from '../engine/autograd.js';
import { Rng } from '../engine/random.js';
import { Tensor, bytesPerElement, copyInto, engine, tidy } from '../engine/tensor.js';
import {
  add,
  cast,
  crossEntropy,
  crossEntropyPerRow,
  embedding,
  flashAttention,
  linear,
  loraLinear,
  nf4Linear,
  rmsnorm,
  rope,
  ropeTables,
  swiglu,
  type RopeTables,
} from '../kernels/index.js';
import { InputError } from '../errors.js';
import { loadLlamaConfig, type LlamaConfig } from './config.js';
import {
  loraKey,
  peftTensorName,
  readAdapter,
  scaling,
  validateAdapterAgainstModel,
  writeAdapter,
  type LoraAdapter,
  type LoraAdapterConfig,
  type LoraWeights,
} from './peft.js';
import {
  LINEAR_MODULES,
  disposeWeights,
  isNf4,
  linearShape,
  loadLlamaWeights,
  type LayerWeights,
  type LinearModule,
  type LinearWeight,
  type LlamaWeights,
  type LoadWeightsOptions,
} from './weights.js';

export const IGNORE_INDEX = -100;

// ---------------------------------------------------------------------------------------------
// LoRA state (the adapter's format and config live in peft.ts)

export interface LoraPair {
  /** [r, in] f32 leaf with requiresGrad. */
  A: Tensor;
  /** [out, r] f32 leaf with requiresGrad. */
  B: Tensor;
}

export interface LoraState {
  config: LoraAdapterConfig;
  /** alpha / r (alpha / sqrt(r) with rsLoRA). */
  scale: number;
  /** Per decoder layer, the adapted modules. */
  layers: Partial<Record<LinearModule, LoraPair>>[];
}

/** Options for a fresh adapter (PEFT LoraConfig names in camelCase). */
export interface NewLoraOptions {
  r: number;
  loraAlpha: number;
  useRslora?: boolean;
  targetModules?: LinearModule[];
  loraDropout?: number;
  baseModelNameOrPath?: string | null;
}

// ---------------------------------------------------------------------------------------------
// Small differentiable glue

/** A reshape that autograd sees (Tensor.reshape itself is an unrecorded view). */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  const y = x.reshape(shape);
  recordOp('view', [x], y, () => ([g]) => [g!.reshape(x.shape)]);
  return y;
}

/**
 * Rows `rows` of a 2-D tensor [R, C] → [rows.length, C] (a gather through the embedding kernel,
 * whose backward scatter-adds into the source when it needs a gradient).
 */
export function gatherRows(x: Tensor, rows: readonly number[]): Tensor {
  const idx = Tensor.from(Int32Array.from(rows), [rows.length]);
  const y = embedding(idx, x);
  idx.dispose();
  return y;
}

/**
 * Gradient checkpointing: runs `run(x)` without recording, keeping only its input; backward
 * re-runs it under a fresh tape and backpropagates through that. Gradients of the parameters used
 * inside (`params`, LoRA leaves) accumulate directly into their `.grad` during the re-run; the
 * input gradient is returned to the outer graph. `run` must be deterministic (dropout by seed).
 */
export function checkpoint(x: Tensor, params: readonly Tensor[], run: (x: Tensor) => Tensor): Tensor {
  if (!needsGrad([x, ...params])) return run(x);
  const xNeedsGrad = x.requiresGrad || x.gradFn !== null;
  const y = tidy(() => noGrad(() => run(x)));
  recordOp('checkpoint', [x, ...params], y, (node) => {
    const xs = node.save(x);
    return ([g]) => {
      if (!isGradEnabled()) throw new Error('gradient checkpointing: backward() must not run inside noGrad()');
      const dx = tidy(() => {
        const leaf = xs.reshape(xs.shape);
        leaf.requiresGrad = xNeedsGrad;
        const y2 = run(leaf);
        backward(y2, g!);
        if (!xNeedsGrad) return null;
        const kept = leaf.grad!;
        leaf.grad = null;
        const out = Tensor.empty(kept.shape);
        copyInto(out, kept);
        kept.dispose();
        return out;
      });
      return [dx, ...params.map(() => null)];
    };
  });
  return y;
}

// ---------------------------------------------------------------------------------------------
// Inputs

/** A forward batch, row-major [batchSize, seqLen]. */
export interface ForwardInput {
  inputIds: Int32Array;
  batchSize: number;
  seqLen: number;
  /** RoPE positions; default 0..T-1 in every row. Packing restarts them per example. */
  positionIds?: Int32Array;
  /** Packing: tokens attend only to earlier tokens with the same segment id. */
  segmentIds?: Int32Array;
}

/** A loss batch: `labels` are ALREADY SHIFTED (labels[i] = target of position i, or -100). */
export interface LossInput extends ForwardInput {
  labels: Int32Array;
}

/** HF's in-model shift: target of position t is ids[t+1] of the same row; the last is ignored. */
export function shiftLabels(ids: Int32Array, batchSize: number, seqLen: number): Int32Array {
  const out = new Int32Array(batchSize * seqLen).fill(IGNORE_INDEX);
  for (let b = 0; b < batchSize; b++) for (let t = 0; t + 1 < seqLen; t++) out[b * seqLen + t] = ids[b * seqLen + t + 1]!;
  return out;
}

function checkInput(inp: ForwardInput, vocabSize: number): void {
  const n = inp.batchSize * inp.seqLen;
  if (!(inp.batchSize > 0 && inp.seqLen > 0)) throw new RangeError(`batch [${inp.batchSize}, ${inp.seqLen}] must be non-empty`);
  if (inp.inputIds.length !== n) throw new RangeError(`inputIds has ${inp.inputIds.length} ids, batch is ${inp.batchSize}x${inp.seqLen}`);
  for (const [name, a] of [['positionIds', inp.positionIds], ['segmentIds', inp.segmentIds]] as const) {
    if (a && a.length !== n) throw new RangeError(`${name} has ${a.length} entries, batch is ${inp.batchSize}x${inp.seqLen}`);
  }
  for (let i = 0; i < n; i++) {
    const id = inp.inputIds[i]!;
    if (id < 0 || id >= vocabSize) throw new InputError(`token id ${id} at position ${i} is outside the vocabulary (size ${vocabSize})`);
  }
}

/** Positions offset..offset+T-1 per row; with left-padding `starts`, row b counts from starts[b] (pads get 0). */
function defaultPositions(batchSize: number, seqLen: number, offset = 0, starts?: Int32Array): Int32Array {
  const p = new Int32Array(batchSize * seqLen);
  for (let b = 0; b < batchSize; b++) {
    const s = starts?.[b] ?? 0;
    for (let t = 0; t < seqLen; t++) p[b * seqLen + t] = Math.max(0, offset + t - s);
  }
  return p;
}

// ---------------------------------------------------------------------------------------------
// KV cache

/**
 * Per layer K and V, [B, maxSeqLen, Hkv, Dh] in `dtype` (f32, or f16: half the memory, unpacked by the
 * attention kernels); `length` positions are filled. With `starts`
 * (left-padded batch), row b's real tokens begin at cache position starts[b]: attention never sees
 * the keys before it, and that row's RoPE positions count from 0 at starts[b].
 */
export interface KvCache {
  batchSize: number;
  maxSeqLen: number;
  length: number;
  k: Tensor[];
  v: Tensor[];
  dtype: 'f32' | 'f16';
  starts?: Int32Array;
  /** starts on the GPU (i32 [B]), the attention kernels' kvStart. */
  startsTensor?: Tensor;
}

export interface LoadModelOptions extends LoadWeightsOptions {
  /** A PEFT adapter folder to load (LoRA on top of the frozen base). */
  adapter?: string;
}

export interface ForwardOptions {
  /** Recompute each decoder layer in backward instead of keeping its activations. */
  gradientCheckpointing?: boolean;
}

// ---------------------------------------------------------------------------------------------
// The model

export class LlamaModel {
  lora: LoraState | null = null;
  /** Training mode enables LoRA dropout (with a fresh seed per forward). */
  training = false;
  gradientCheckpointing = false;
  private dropoutRng = new Rng(0x5eed);
  private ropeCache: RopeTables | null = null;

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
  ) {}

  /** Loads config.json + weights from a HF folder, and optionally a PEFT adapter. */
  static async load(dir: string, opts: LoadModelOptions = {}): Promise<LlamaModel> {
    const config = await loadLlamaConfig(dir);
    const weights = await loadLlamaWeights(dir, config, opts);
    const model = new LlamaModel(config, weights);
    if (opts.adapter) {
      try {
        await model.loadAdapter(opts.adapter);
      } catch (err) {
        model.dispose();
        throw err;
      }
    }
    return model;
  }

  // ---- LoRA ---------------------------------------------------------------------------------

  /**
   * Adds fresh LoRA matrices the way PEFT initialises them: A ~ kaiming_uniform(a=√5) on [r, in]
   * (= U(-1/√in, 1/√in)), B = 0; both f32 leaves with requiresGrad. Replaces any adapter.
   */
  initLora(opts: NewLoraOptions, seed: number): LoraState {
    const config: LoraAdapterConfig = {
      r: opts.r,
      loraAlpha: opts.loraAlpha,
      useRslora: opts.useRslora ?? false,
      targetModules: [...(opts.targetModules ?? LINEAR_MODULES)],
      loraDropout: opts.loraDropout ?? 0,
      baseModelNameOrPath: opts.baseModelNameOrPath ?? null,
      taskType: 'CAUSAL_LM',
    };
    if (!(Number.isInteger(config.r) && config.r > 0)) throw new InputError(`LoRA rank r must be a positive integer, got ${config.r}`, { key: 'r' });
    if (!(config.loraAlpha > 0)) throw new InputError(`lora_alpha must be positive, got ${config.loraAlpha}`, { key: 'lora_alpha' });
    if (!(config.loraDropout >= 0 && config.loraDropout < 1)) throw new InputError(`lora_dropout must be in [0, 1), got ${config.loraDropout}`, { key: 'lora_dropout' });
    const rng = new Rng(seed);
    const weights: LoraWeights = new Map();
    for (let l = 0; l < this.config.numHiddenLayers; l++) {
      for (const mod of config.targetModules) {
        const [out, inp] = linearShape(this.config, mod);
        const bound = 1 / Math.sqrt(inp);
        weights.set(loraKey(l, mod), { A: rng.uniformArray(config.r * inp, -bound, bound), B: new Float32Array(out * config.r), r: config.r, inFeatures: inp, outFeatures: out });
      }
    }
    return this.setAdapter({ config, weights });
  }

  /** Installs an adapter (validated against the model) as trainable f32 leaves. Replaces any adapter. */
  setAdapter(adapter: LoraAdapter, file?: string): LoraState {
    validateAdapterAgainstModel(adapter.config, this.config, adapter.weights, file);
    const layers: Partial<Record<LinearModule, LoraPair>>[] = [];
    const created: Tensor[] = [];
    try {
      for (let l = 0; l < this.config.numHiddenLayers; l++) {
        const entry: Partial<Record<LinearModule, LoraPair>> = {};
        for (const mod of adapter.config.targetModules) {
          const key = loraKey(l, mod);
          const w = adapter.weights.get(key)!;
          const a = Tensor.from(w.A, [w.r, w.inFeatures]).keep();
          created.push(a);
          const b = Tensor.from(w.B, [w.outFeatures, w.r]).keep();
          created.push(b);
          a.requiresGrad = true;
          b.requiresGrad = true;
          a.name = peftTensorName(key, 'A');
          b.name = peftTensorName(key, 'B');
          entry[mod] = { A: a, B: b };
        }
        layers.push(entry);
      }
    } catch (err) {
      for (const t of created) t.dispose();
      throw err;
    }
    this.disposeLora();
    this.lora = { config: { ...adapter.config, targetModules: [...adapter.config.targetModules] }, scale: scaling(adapter.config), layers };
    return this.lora;
  }

  /**
   * Overwrites the values of the installed LoRA leaves (same tensor objects, so an optimizer that
   * holds them stays valid) from an adapter folder whose config matches the installed one (resume).
   */
  async loadAdapterWeightsInto(dir: string): Promise<void> {
    if (!this.lora) throw new Error('loadAdapterWeightsInto: the model has no LoRA adapter installed (call initLora first)');
    const adapter = await readAdapter(dir);
    validateAdapterAgainstModel(adapter.config, this.config, adapter.weights, dir);
    const mine = this.lora.config;
    const same = adapter.config.r === mine.r && adapter.config.targetModules.join() === mine.targetModules.join();
    if (!same) {
      throw new InputError(
        `adapter has r=${adapter.config.r} on ${adapter.config.targetModules.join(', ')}; the model's LoRA has r=${mine.r} on ${mine.targetModules.join(', ')}`,
        { file: dir },
      );
    }
    const dev = engine().dev;
    this.lora.layers.forEach((entry, l) => {
      for (const mod of LINEAR_MODULES) {
        const pair = entry[mod];
        if (!pair) continue;
        const w = adapter.weights.get(loraKey(l, mod))!;
        dev.write(pair.A.buffer, 0, w.A);
        dev.write(pair.B.buffer, 0, w.B);
      }
    });
  }

  /** Reseeds LoRA dropout (the trainer sets it per micro-batch so a resumed run draws the same masks). */
  setDropoutSeed(seed: number): void {
    this.dropoutRng = new Rng(seed);
  }

  /** Reads a PEFT adapter folder and installs it; an adapter that does not fit is an InputError. */
  async loadAdapter(dir: string): Promise<LoraState> {
    const adapter = await readAdapter(dir);
    return this.setAdapter(adapter, dir);
  }

  /** The current LoRA weights, read back to the CPU (for saving or merging). */
  async adapter(): Promise<LoraAdapter> {
    if (!this.lora) throw new Error('the model has no LoRA adapter');
    const weights: LoraWeights = new Map();
    for (let l = 0; l < this.lora.layers.length; l++) {
      for (const mod of LINEAR_MODULES) {
        const p = this.lora.layers[l]![mod];
        if (!p) continue;
        weights.set(loraKey(l, mod), {
          A: await p.A.toFloat32(),
          B: await p.B.toFloat32(),
          r: p.A.shape[0]!,
          inFeatures: p.A.shape[1]!,
          outFeatures: p.B.shape[0]!,
        });
      }
    }
    return { config: { ...this.lora.config }, weights };
  }

  /** Writes the adapter as PEFT does (adapter_config.json + adapter_model.safetensors). */
  async saveAdapter(dir: string): Promise<void> {
    await writeAdapter(dir, await this.adapter());
  }

  /** LoRA parameters in a fixed order (layer, module in LINEAR_MODULES order, A then B). */
  loraParameters(): Tensor[] {
    return [...this.namedLoraParameters().values()];
  }

  /** LoRA parameters by PEFT tensor name (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`). */
  namedLoraParameters(): Map<string, Tensor> {
    const out = new Map<string, Tensor>();
    if (!this.lora) return out;
    this.lora.layers.forEach((entry, l) => {
      for (const mod of LINEAR_MODULES) {
        const p = entry[mod];
        if (!p) continue;
        out.set(peftTensorName(loraKey(l, mod), 'A'), p.A);
        out.set(peftTensorName(loraKey(l, mod), 'B'), p.B);
      }
    });
    return out;
  }

  disposeLora(): void {
    if (!this.lora) return;
    for (const t of this.loraParameters()) {
      t.grad?.dispose();
      t.grad = null;
      t.dispose();
    }
    this.lora = null;
  }

  // ---- forward ------------------------------------------------------------------------------

  /** RoPE tables covering positions 0..maxPosition (at least max_position_embeddings; grown on demand). */
  private ropeFor(maxPosition: number): RopeTables {
    if (!this.ropeCache || this.ropeCache.maxPositions <= maxPosition) {
      const maxPositions = Math.max(this.config.maxPositionEmbeddings, this.ropeCache ? 2 * this.ropeCache.maxPositions : 0, maxPosition + 1);
      const t = ropeTables({ headDim: this.config.headDim, theta: this.config.rope.theta, scaling: this.config.rope.scaling, maxPositions });
      this.ropeCache?.cos.dispose();
      this.ropeCache?.sin.dispose();
      this.ropeCache = t;
    }
    return this.ropeCache;
  }

  private project(x: Tensor, layer: number, mod: LinearModule, base: LinearWeight, dropoutSeed: number): Tensor {
    const pair = this.lora?.layers[layer]?.[mod];
    if (pair) {
      const dropout = this.training ? this.lora!.config.loraDropout : 0;
      return loraLinear(x, base, pair.A, pair.B, this.lora!.scale, dropout > 0 ? { dropout, seed: dropoutSeed } : {});
    }
    return isNf4(base) ? nf4Linear(x, base) : linear(x, base);
  }

  /**
   * One decoder layer on x [N, D]. With `cache`, K/V of these tokens are written into the cache at
   * `cache.length` and attention runs over the cache (decode); positions must match.
   */
  private layer(
    x: Tensor,
    l: number,
    shape: { B: number; T: number },
    pos: Tensor,
    seg: Tensor | undefined,
    seeds: number[],
    cache?: KvCache,
  ): Tensor {
    const { numAttentionHeads: hq, numKeyValueHeads: hkv, headDim: dh, rmsNormEps: eps } = this.config;
    const w: LayerWeights = this.weights.layers[l]!;
    const { B, T } = shape;
    const rt = this.ropeCache!;
    const h = rmsnorm(x, w.inputNorm, eps);
    const q = rope(view(this.project(h, l, 'q_proj', w.linear.q_proj, seeds[0]!), [B, T, hq, dh]), pos, rt);
    const k = rope(view(this.project(h, l, 'k_proj', w.linear.k_proj, seeds[1]!), [B, T, hkv, dh]), pos, rt);
    const v = view(this.project(h, l, 'v_proj', w.linear.v_proj, seeds[2]!), [B, T, hkv, dh]);
    let attn: Tensor;
    if (cache) {
      writeCache(cache.k[l]!, k, cache);
      writeCache(cache.v[l]!, v, cache);
      attn = flashAttention(q, cache.k[l]!, cache.v[l]!, {
        causal: true,
        scale: 1 / Math.sqrt(dh),
        qOffset: cache.length,
        kvLength: cache.length + T,
        ...(cache.startsTensor ? { kvStart: cache.startsTensor } : {}),
      });
    } else {
      attn = flashAttention(q, k, v, { causal: true, scale: 1 / Math.sqrt(dh), ...(seg ? { segmentIds: seg } : {}) });
    }
    const o = this.project(view(attn, [B * T, hq * dh]), l, 'o_proj', w.linear.o_proj, seeds[3]!);
    const x1 = add(x, o);
    const h2 = rmsnorm(x1, w.postAttentionNorm, eps);
    const gate = this.project(h2, l, 'gate_proj', w.linear.gate_proj, seeds[4]!);
    const up = this.project(h2, l, 'up_proj', w.linear.up_proj, seeds[5]!);
    const down = this.project(swiglu(gate, up), l, 'down_proj', w.linear.down_proj, seeds[6]!);
    return add(x1, down);
  }

  /**
   * The decoder stack: final-normed hidden states [N, D] for a batch. Under noGrad each layer's
   * intermediates are freed as soon as the layer is done.
   */
  hidden(inp: ForwardInput, opts: ForwardOptions = {}, cache?: KvCache): Tensor {
    checkInput(inp, this.config.vocabSize);
    const { batchSize: B, seqLen: T } = inp;
    const positions = inp.positionIds ?? defaultPositions(B, T, cache?.length ?? 0, cache?.starts);
    let maxPos = 0;
    for (const p of positions) {
      if (p < 0) throw new RangeError(`negative position id ${p}`);
      if (p > maxPos) maxPos = p;
    }
    this.ropeFor(maxPos);
    const ckpt = (opts.gradientCheckpointing ?? this.gradientCheckpointing) && !cache;
    const ids = Tensor.from(inp.inputIds, [B * T]);
    const pos = Tensor.from(positions, [B * T]);
    const seg = inp.segmentIds ? Tensor.from(inp.segmentIds, [B * T]) : undefined;
    let x = embedding(ids, this.weights.embedTokens);
    const recording = isGradEnabled();
    for (let l = 0; l < this.config.numHiddenLayers; l++) {
      const seeds = LINEAR_MODULES.map(() => this.dropoutRng.nextU32());
      const run = (xin: Tensor) => this.layer(xin, l, { B, T }, pos, seg, seeds, cache);
      if (!recording) {
        const xin = x;
        x = tidy(() => run(xin));
        xin.dispose();
      } else if (ckpt) {
        const params = Object.values(this.lora?.layers[l] ?? {}).flatMap((p) => [p.A, p.B]);
        x = checkpoint(x, params, run);
      } else {
        x = run(x);
      }
    }
    const out = rmsnorm(x, this.weights.norm, this.config.rmsNormEps);
    if (!recording) {
      x.dispose();
      ids.dispose();
      pos.dispose();
      seg?.dispose();
    }
    return out;
  }

  /** Logits [N, V] for every position (training / evaluation). */
  logits(inp: ForwardInput, opts: ForwardOptions = {}): Tensor {
    return linear(this.hidden(inp, opts), this.weights.lmHead);
  }

  /** Logits [B, V] of the last position of each row only (the lm_head runs on B rows, not N). */
  lastLogits(inp: ForwardInput, cache?: KvCache): Tensor {
    const h = this.hidden(inp, {}, cache);
    const rows = Array.from({ length: inp.batchSize }, (_, b) => b * inp.seqLen + inp.seqLen - 1);
    const last = gatherRows(h, rows);
    const out = linear(last, this.weights.lmHead);
    if (!isGradEnabled()) {
      h.dispose();
      last.dispose();
    }
    return out;
  }

  /**
   * Logits only for the positions that have a label (labels != -100): the hidden rows are gathered
   * first, so the [N, V] lm_head product and its gradient shrink to the counted rows (prompt tokens
   * under response-only loss, the last token of each example, padding). `rows` is null when every
   * position counts; an all-ignored batch keeps one row with label -100 (loss 0, no gradient).
   */
  private labelledLogits(batch: LossInput, opts: ForwardOptions): { logits: Tensor; labels: Int32Array; rows: number[] | null } {
    const n = batch.batchSize * batch.seqLen;
    if (batch.labels.length !== n) throw new RangeError(`labels has ${batch.labels.length} entries, batch is ${batch.batchSize}x${batch.seqLen}`);
    const rows: number[] = [];
    for (let i = 0; i < n; i++) if (batch.labels[i] !== IGNORE_INDEX) rows.push(i);
    const h = this.hidden(batch, opts);
    if (rows.length === n) return { logits: linear(h, this.weights.lmHead), labels: batch.labels, rows: null };
    if (rows.length === 0) rows.push(0);
    const picked = gatherRows(h, rows);
    const labels = Int32Array.from(rows, (i) => batch.labels[i]!);
    return { logits: linear(picked, this.weights.lmHead), labels, rows };
  }

  /** Mean cross-entropy over labels != -100 (labels already shifted; see LossInput). Scalar [1]. */
  loss(batch: LossInput, opts: ForwardOptions = {}): Tensor {
    const { logits, labels } = this.labelledLogits(batch, opts);
    return crossEntropy(logits, Tensor.from(labels, [labels.length]), { ignoreIndex: IGNORE_INDEX });
  }

  /**
   * Per-position NLL [N] (0 where the label is -100), no gradient. Sum ranges of it for
   * per-example losses.
   */
  async tokenLosses(batch: LossInput): Promise<Float32Array> {
    const { t, rows } = noGrad(() =>
      tidy(() => {
        const { logits, labels, rows } = this.labelledLogits(batch, {});
        return { t: crossEntropyPerRow(logits, Tensor.from(labels, [labels.length])), rows };
      }),
    );
    const values = await t.toFloat32();
    t.dispose();
    if (!rows) return values;
    const out = new Float32Array(batch.labels.length);
    rows.forEach((r, j) => {
      if (batch.labels[r] !== IGNORE_INDEX) out[r] = values[j]!;
    });
    return out;
  }

  // ---- KV cache -----------------------------------------------------------------------------

  /**
   * An empty cache for `batchSize` rows of up to `maxSeqLen` positions. `starts` (left-padded
   * batches): the position of each row's first real token; earlier positions hold pad tokens that
   * attention masks out, and RoPE positions of row b start at 0 at starts[b].
   */
  newKvCache(batchSize: number, maxSeqLen: number, starts?: readonly number[], dtype: 'f32' | 'f16' = 'f32'): KvCache {
    if (starts && (starts.length !== batchSize || starts.some((s) => !Number.isInteger(s) || s < 0 || s >= maxSeqLen))) {
      throw new RangeError(`newKvCache: starts [${starts.join(', ')}] must be ${batchSize} integers in [0, ${maxSeqLen})`);
    }
    const { numKeyValueHeads: hkv, headDim: dh } = this.config;
    const make = () => {
      // Left unwritten: attention reads only the first kvLength rows (tests poison pooled buffers
      // with NaN, so a read past the filled part would show).
      return Tensor.empty([batchSize, maxSeqLen, hkv, dh], dtype).keep();
    };
    const k: Tensor[] = [];
    const v: Tensor[] = [];
    for (let l = 0; l < this.config.numHiddenLayers; l++) {
      k.push(make());
      v.push(make());
    }
    if (!starts || starts.every((s) => s === 0)) return { batchSize, maxSeqLen, length: 0, k, v, dtype };
    const st = Int32Array.from(starts);
    return { batchSize, maxSeqLen, length: 0, k, v, dtype, starts: st, startsTensor: Tensor.from(st, [batchSize]).keep() };
  }

  /**
   * Runs `ids` [B, T] through the model at cache positions [length, length+T), appends their K/V to
   * the cache, and returns the last position's logits [B, V]. Prefill is T = prompt length; decode
   * is T = 1.
   */
  step(ids: Int32Array, cache: KvCache): Tensor {
    const B = cache.batchSize;
    const T = ids.length / B;
    if (!Number.isInteger(T) || T < 1) throw new RangeError(`step: ${ids.length} ids for batch ${B}`);
    if (cache.length + T > cache.maxSeqLen) throw new RangeError(`KV cache full: ${cache.length} + ${T} > ${cache.maxSeqLen}`);
    const out = noGrad(() => tidy(() => this.lastLogits({ inputIds: ids, batchSize: B, seqLen: T }, cache)));
    cache.length += T;
    return out;
  }

  dispose(): void {
    this.disposeLora();
    disposeWeights(this.weights);
    this.ropeCache?.cos.dispose();
    this.ropeCache?.sin.dispose();
    this.ropeCache = null;
  }
}

export function disposeKvCache(cache: KvCache): void {
  for (const t of [...cache.k, ...cache.v]) t.dispose();
  cache.startsTensor?.dispose();
}

/** Copies rows [B, T, Hkv, Dh] (f32) into the cache [B, Smax, Hkv, Dh] at position cache.length, in the cache's dtype. */
function writeCache(dst: Tensor, rows: Tensor, cache: KvCache): void {
  const src = cache.dtype === 'f32' ? rows : cast(rows, cache.dtype);
  const [B, T, H, Dh] = src.shape as [number, number, number, number];
  const rowBytes = H * Dh * bytesPerElement(cache.dtype);
  const enc = engine().dev.commandEncoder();
  for (let b = 0; b < B; b++) {
    enc.copyBufferToBuffer(src.buffer, b * T * rowBytes, dst.buffer, (b * cache.maxSeqLen + cache.length) * rowBytes, T * rowBytes);
  }
}

/** Loads a model folder (+ optional adapter) and returns it; see LlamaModel.load. */
export async function loadModel(dir: string, opts: LoadModelOptions = {}): Promise<LlamaModel> {
  return LlamaModel.load(dir, opts);
}
