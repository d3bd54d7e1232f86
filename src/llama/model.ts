// The Llama model: transformers' LlamaForCausalLM (+ PEFT LoRA) on the engine's kernels, in f32.
//
//   x = embed_tokens[ids] ; x = decoderLayer(x) per layer ; h = rmsnorm(x) ; logits = h·lm_headᵀ
//
// The parts live in files named for them: decoder-layer.ts (attention and MLP blocks),
// lora-layers.ts (the LoRA wrapper: init, load, save, the projection), kv-cache.ts, loss-head.ts
// (logits and cross-entropy), inputs.ts (batches, label shift), ops.ts (view, gather, checkpointing).
// This class owns the config, the base weights, the LoRA leaves and the RoPE tables, and runs the
// stack. Two ways to train: LoRA (the base weights are frozen; LoRA A/B are the only leaves with
// requiresGrad) or full training (enableFullTraining: every weight is an f32 leaf with requiresGrad;
// tied embeddings are one leaf used by the embedding gather and the LM head, so the gradients of
// both uses sum into its .grad).
import { isGradEnabled, noGrad } from '../engine/autograd.js';
import { Rng } from '../engine/random.js';
import { Tensor, tidy } from '../engine/tensor.js';
import { InputError } from '../errors.js';
import { embedding, linear, type RopeTables, rmsnorm, ropeTables } from '../kernels/index.js';
import { checkAdapterBase } from './adapter-base.js';
import { type LlamaConfig, loadLlamaConfig } from './config.js';
import { decodeStepLogits, fusedDecodeApplies } from './decode.js';
import { decoderLayer } from './decoder-layer.js';
import { checkForwardInput, type ForwardInput, type LossInput } from './inputs.js';
import { cachePositions, type KvCache, type KvCacheDtype, newKvCache, syncCacheLength } from './kv-cache.js';
import { LoraLayers, type NewLoraOptions } from './lora-layers.js';
import { labelledTokenLosses, lastPositionLogits, lmLoss, spreadTokenLosses } from './loss-head.js';
import { type CheckpointMode, checkpoint } from './ops.js';
import { type LoraAdapter, readAdapter, validateAdapterAgainstModel, writeAdapter } from './peft.js';
import {
  disposeWeights,
  LINEAR_MODULES,
  type LlamaWeights,
  type LoadWeightsOptions,
  layerDenseWeights,
  loadLlamaWeights,
  namedWeights,
} from './weights.js';

export { type ForwardInput, IGNORE_INDEX, type LossInput, shiftLabels } from './inputs.js';
export {
  copyKvRows,
  disposeKvCache,
  frontKvRows,
  KV_CACHE_SETTINGS,
  type KvCache,
  type KvCacheDtype,
  type KvCacheSetting,
  resolveKvCacheDtype,
  setKvStarts,
} from './kv-cache.js';
export { LoraLayers, type LoraPair, type NewLoraOptions } from './lora-layers.js';
export { CHECKPOINT_MODES, type CheckpointMode, checkpoint, gatherRows, view } from './ops.js';

export interface LoadModelOptions extends Omit<LoadWeightsOptions, 'merge'> {
  /** A PEFT adapter folder to load (LoRA on top of the frozen base). */
  adapter?: string;
  /**
   * Merge the adapter into the base weights while loading (W + s·B·A in f32, then the chosen
   * storage or NF4 quantization) instead of installing LoRA leaves: inference only, no LoRA
   * dispatches at all. With NF4 the merged weight is quantized (the update too), as PEFT's merge
   * into a 4-bit base is; bf16/f16 round the merged weight once.
   */
  mergeAdapter?: boolean;
}

export interface ForwardOptions {
  /** What a recorded forward keeps for backward (see CheckpointMode); default the model's setting. */
  gradientCheckpointing?: CheckpointMode;
}

export class LlamaModel {
  lora: LoraLayers | null = null;
  /** Training mode enables LoRA dropout (with a fresh seed per forward). */
  training = false;
  gradientCheckpointing: CheckpointMode = 'none';
  /** Every weight is trainable (enableFullTraining). */
  fullTraining = false;
  private dropoutRng = new Rng(0x5eed);
  private ropeCache: RopeTables | null = null;

  constructor(
    readonly config: LlamaConfig,
    readonly weights: LlamaWeights,
  ) {}

  /** Loads config.json + weights from a HF folder, and optionally a PEFT adapter. */
  static async load(dir: string, opts: LoadModelOptions = {}): Promise<LlamaModel> {
    const config = await loadLlamaConfig(dir);
    let merge: LoraAdapter | undefined;
    if (opts.mergeAdapter) {
      if (!opts.adapter)
        throw new InputError('mergeAdapter needs an adapter folder to merge', { key: 'merge-adapter' });
      merge = await readAdapter(opts.adapter);
      validateAdapterAgainstModel(merge.config, config, merge.weights, opts.adapter);
      checkAdapterBase(merge.config, opts.adapter, dir, opts.quantize === 'nf4' ? 'nf4' : 'full');
    }
    const weights = await loadLlamaWeights(dir, config, { ...opts, ...(merge ? { merge } : {}) });
    const model = new LlamaModel(config, weights);
    if (opts.adapter && !merge) {
      try {
        const adapter = await readAdapter(opts.adapter);
        checkAdapterBase(adapter.config, opts.adapter, dir);
        model.setAdapter(adapter, opts.adapter);
      } catch (err) {
        model.dispose();
        throw err;
      }
    }
    return model;
  }

  // ---- LoRA ---------------------------------------------------------------------------------

  /**
   * Installs fresh PEFT-initialised LoRA leaves (see LoraLayers.init), or with seed null value-less
   * ones (LoraLayers.empty: for counting on a MetaDevice). Replaces any adapter.
   */
  initLora(opts: NewLoraOptions, seed: number | null): LoraLayers {
    return this.installLora(
      seed === null ? LoraLayers.empty(this.config, opts) : LoraLayers.init(this.config, opts, seed),
    );
  }

  /** Installs an adapter (validated against the model) as trainable f32 leaves. Replaces any adapter. */
  setAdapter(adapter: LoraAdapter, file?: string): LoraLayers {
    return this.installLora(this.createLoraState(adapter, file));
  }

  /**
   * An adapter's LoRA leaves on the GPU (validated against the model) without installing them.
   * Several over one base are swapped in by assigning `model.lora` (the server keeps one per
   * adapter); free one that is not installed with its dispose().
   */
  createLoraState(adapter: LoraAdapter, file?: string): LoraLayers {
    return LoraLayers.fromAdapter(this.config, adapter, file);
  }

  private installLora(lora: LoraLayers): LoraLayers {
    if (this.fullTraining)
      throw new Error('the model is set up for full training: LoRA adapters cannot be installed as well');
    this.disposeLora();
    this.lora = lora;
    return lora;
  }

  /** Reads a PEFT adapter folder and installs it; an adapter that does not fit is an InputError. */
  async loadAdapter(dir: string): Promise<LoraLayers> {
    return this.setAdapter(await readAdapter(dir), dir);
  }

  /**
   * Overwrites the values of the installed LoRA leaves (same tensor objects, so an optimizer that
   * holds them stays valid) from an adapter folder whose config matches the installed one (resume).
   */
  async loadAdapterWeightsInto(dir: string): Promise<void> {
    if (!this.lora)
      throw new Error('loadAdapterWeightsInto: the model has no LoRA adapter installed (call initLora first)');
    this.lora.overwriteFrom(this.config, await readAdapter(dir), dir);
  }

  /** Reseeds LoRA dropout (the trainer sets it per micro-batch so a resumed run draws the same masks). */
  setDropoutSeed(seed: number): void {
    this.dropoutRng = new Rng(seed);
  }

  /** The current LoRA weights, read back to the CPU (for saving or merging). */
  async adapter(): Promise<LoraAdapter> {
    if (!this.lora) throw new Error('the model has no LoRA adapter');
    return this.lora.toAdapter();
  }

  /** Writes the adapter as PEFT does (adapter_config.json + adapter_model.safetensors). */
  async saveAdapter(dir: string): Promise<void> {
    await writeAdapter(dir, await this.adapter());
  }

  /** LoRA parameters in a fixed order (layer, module in LINEAR_MODULES order, A then B). */
  loraParameters(): Tensor[] {
    return this.lora?.parameters() ?? [];
  }

  /** LoRA parameters by PEFT tensor name (`base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`). */
  namedLoraParameters(): Map<string, Tensor> {
    return this.lora?.named() ?? new Map();
  }

  disposeLora(): void {
    this.lora?.dispose();
    this.lora = null;
  }

  // ---- full training ------------------------------------------------------------------------

  /**
   * Makes every weight a trainable leaf (requiresGrad) and returns them by HF name. The weights must
   * be dense f32 (they are the master weights AdamW updates): NF4 or 16-bit storage is an
   * InputError. Exclusive with LoRA.
   */
  enableFullTraining(): Map<string, Tensor> {
    if (this.lora)
      throw new Error('the model has a LoRA adapter installed: full training trains the base weights instead');
    const named = namedWeights(this.config, this.weights);
    for (const [name, t] of named) {
      if (t.dtype !== 'f32')
        throw new InputError(
          `weight '${name}' is stored as ${t.dtype}; full training keeps f32 master weights (load the model with storage f32)`,
          { key: 'model.storage' },
        );
    }
    for (const t of named.values()) t.requiresGrad = true;
    this.fullTraining = true;
    return named;
  }

  /** Every weight by HF name (tied embeddings once, as model.embed_tokens.weight); dense models only. */
  namedWeights(): Map<string, Tensor> {
    return namedWeights(this.config, this.weights);
  }

  /** What training updates: every weight under full training (HF names), else the LoRA leaves (PEFT names). */
  namedTrainableParameters(): Map<string, Tensor> {
    return this.fullTraining ? this.namedWeights() : this.namedLoraParameters();
  }

  trainableParameters(): Tensor[] {
    return [...this.namedTrainableParameters().values()];
  }

  /** The trainable leaves used inside decoder layer `l` (gradient checkpointing re-runs it). */
  private layerTrainables(l: number): Tensor[] {
    const lora = this.lora?.layerParameters(l) ?? [];
    return this.fullTraining ? [...layerDenseWeights(this.weights.layers[l]!), ...lora] : lora;
  }

  // ---- forward ------------------------------------------------------------------------------

  /** RoPE tables covering positions 0..maxPosition (at least max_position_embeddings; grown on demand). */
  ropeFor(maxPosition: number): RopeTables {
    if (!this.ropeCache || this.ropeCache.maxPositions <= maxPosition) {
      const maxPositions = Math.max(
        this.config.maxPositionEmbeddings,
        this.ropeCache ? 2 * this.ropeCache.maxPositions : 0,
        maxPosition + 1,
      );
      const t = ropeTables({
        headDim: this.config.headDim,
        theta: this.config.rope.theta,
        scaling: this.config.rope.scaling,
        maxPositions,
      });
      this.ropeCache?.cos.dispose();
      this.ropeCache?.sin.dispose();
      this.ropeCache = t;
    }
    return this.ropeCache;
  }

  /**
   * The decoder stack: final-normed hidden states [N, D] for a batch. With `cache`, the batch's K/V
   * are written into the cache at `cache.length` and attention runs over the cache (decode). Each
   * layer runs in its own scope: what no backward rule saved is freed when the layer is done, and
   * each layer's input once the next layer has used it (under noGrad nothing outlives its layer).
   */
  hidden(inp: ForwardInput, opts: ForwardOptions = {}, cache?: KvCache): Tensor {
    checkForwardInput(inp, this.config.vocabSize);
    const { batchSize: B, seqLen: T } = inp;
    const positions = inp.positionIds ?? cachePositions(B, T, cache?.length ?? 0, cache?.starts);
    let maxPos = 0;
    for (const p of positions) {
      if (p < 0) throw new RangeError(`negative position id ${p}`);
      if (p > maxPos) maxPos = p;
    }
    const rope = this.ropeFor(maxPos);
    if (cache && isGradEnabled())
      throw new Error('a forward over a KV cache is inference-only: run it under noGrad (model.step does)');
    const mode = cache ? 'none' : (opts.gradientCheckpointing ?? this.gradientCheckpointing);
    const ids = Tensor.from(inp.inputIds, [B * T]);
    // With a cache the append kernel derives positions from the cache length (no upload).
    const pos = cache ? null : Tensor.from(positions, [B * T]);
    const cacheLength = cache ? syncCacheLength(cache) : undefined;
    const seg = inp.segmentIds ? Tensor.from(inp.segmentIds, [B * T]) : undefined;
    let x = embedding(ids, this.weights.embedTokens);
    const recording = isGradEnabled();
    const loraDropout = this.training && this.lora ? this.lora.config.loraDropout : 0;
    for (let l = 0; l < this.config.numHiddenLayers; l++) {
      const dropoutSeeds = LINEAR_MODULES.map(() => this.dropoutRng.nextU32());
      const ctx = {
        config: this.config,
        weights: this.weights.layers[l]!,
        index: l,
        lora: this.lora,
        loraDropout,
        dropoutSeeds,
        B,
        T,
        positions: pos,
        rope,
        segments: seg,
        cache,
        cacheLength,
        recompute: recording && mode === 'selective',
      };
      const run = (xin: Tensor) => decoderLayer(xin, ctx);
      const xin = x;
      x = recording && mode === 'full' ? checkpoint(xin, this.layerTrainables(l), run) : tidy(() => run(xin));
      xin.dispose(); // the layer's backward rules hold their own views of it
    }
    const out = rmsnorm(x, this.weights.norm, this.config.rmsNormEps);
    x.dispose();
    if (!recording) {
      ids.dispose();
      pos?.dispose();
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
    const out = lastPositionLogits(h, this.weights.lmHead, inp.batchSize, inp.seqLen);
    if (!isGradEnabled()) h.dispose();
    return out;
  }

  /** Mean cross-entropy over labels != -100 (labels already shifted; see LossInput). Scalar [1]. */
  loss(batch: LossInput, opts: ForwardOptions = {}): Tensor {
    checkLabels(batch);
    const h = this.hidden(batch, opts);
    const loss = lmLoss(h, this.weights.lmHead, batch.labels);
    h.dispose(); // the head's backward keeps its own view; nothing else needs h during backward
    return loss;
  }

  /**
   * Per-position NLL [N] (0 where the label is -100), no gradient. Sum ranges of it for
   * per-example losses.
   */
  async tokenLosses(batch: LossInput): Promise<Float32Array> {
    checkLabels(batch);
    const { losses, rows } = noGrad(() =>
      tidy(() => labelledTokenLosses(this.hidden(batch, {}), this.weights.lmHead, batch.labels)),
    );
    const values = await losses.toFloat32();
    losses.dispose();
    return spreadTokenLosses(values, rows, batch.labels);
  }

  // ---- KV cache -----------------------------------------------------------------------------

  /** An empty KV cache for this model (see kv-cache.ts newKvCache). */
  newKvCache(batchSize: number, maxSeqLen: number, starts?: readonly number[], dtype: KvCacheDtype = 'f32'): KvCache {
    return newKvCache(this.config, batchSize, maxSeqLen, starts, dtype);
  }

  /**
   * Runs `ids` [B, T] through the model at cache positions [length, length+T), appends their K/V to
   * the cache, and returns the last position's logits [B, V]. Prefill is T = prompt length; decode
   * is T = 1, which runs the fused decode kernels (decode.ts). `ids` may be a GPU tensor (i32
   * [B·T], e.g. the sampler's output, T = 1): then nothing is uploaded. Ids outside the vocabulary
   * give NaN logits for that row when they come from a tensor (they are checked when from the CPU).
   */
  step(ids: Int32Array | Tensor, cache: KvCache): Tensor {
    const B = cache.batchSize;
    const n = ids instanceof Tensor ? ids.numel : ids.length;
    const T = n / B;
    if (!Number.isInteger(T) || T < 1) throw new RangeError(`step: ${n} ids for batch ${B}`);
    if (cache.length + T > cache.maxSeqLen)
      throw new RangeError(`KV cache full: ${cache.length} + ${T} > ${cache.maxSeqLen}`);
    let out: Tensor;
    if (T === 1 && fusedDecodeApplies(this)) {
      if (!(ids instanceof Tensor))
        checkForwardInput({ inputIds: ids, batchSize: B, seqLen: 1 }, this.config.vocabSize);
      out = noGrad(() =>
        tidy(() => {
          const idsT = ids instanceof Tensor ? ids : Tensor.from(ids, [B]);
          if (idsT.dtype !== 'i32') throw new TypeError(`step: ids must be i32, got ${idsT.dtype}`);
          return decodeStepLogits(this, idsT, cache);
        }),
      );
    } else {
      if (ids instanceof Tensor)
        throw new RangeError(
          'step: ids on the GPU are taken for one token per row (T = 1); pass a prefill as an Int32Array',
        );
      out = noGrad(() => tidy(() => this.lastLogits({ inputIds: ids, batchSize: B, seqLen: T }, cache)));
    }
    cache.length += T;
    return out;
  }

  dispose(): void {
    this.disposeLora();
    if (this.fullTraining) {
      for (const t of this.namedWeights().values()) {
        t.grad?.dispose();
        t.grad = null;
      }
    }
    disposeWeights(this.weights);
    this.ropeCache?.cos.dispose();
    this.ropeCache?.sin.dispose();
    this.ropeCache = null;
  }
}

function checkLabels(batch: LossInput): void {
  const n = batch.batchSize * batch.seqLen;
  if (batch.labels.length !== n)
    throw new RangeError(`labels has ${batch.labels.length} entries, batch is ${batch.batchSize}x${batch.seqLen}`);
}

/** Loads a model folder (+ optional adapter) and returns it; see LlamaModel.load. */
export async function loadModel(dir: string, opts: LoadModelOptions = {}): Promise<LlamaModel> {
  return LlamaModel.load(dir, opts);
}
