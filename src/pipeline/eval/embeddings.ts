// A model-backed EmbeddingProvider (semantic.ts) over a Llama model's hidden states, so that
// embeddingCosine and bertScore can run without a separate sentence-encoder.
//
// What it is: each token's vector is the decoder's hidden state at that token after `layer`
// decoder layers, passed through the model's final RMSNorm (layer = all layers, the default, is
// exactly HF's last_hidden_state). The text is encoded with the tokenizer's defaults (BOS added,
// as the model expects) but the BOS position is left out of the vectors: under causal attention
// it sees only itself, so it is the same vector for every text and would pull every cosine
// towards 1. The sentence vector is the mean of the token vectors.
//
// What it is not: a trained sentence encoder. A causal LM's hidden states are anisotropic (cosines
// of unrelated texts are far above 0) and each token only sees what precedes it, so absolute values
// mean little: use the scores to compare two models' outputs against the same references with the
// same provider (the pipeline always embeds with the base model), never as an absolute similarity
// or across providers. BERTScore here is the greedy-matching F1 of Zhang et al. without idf
// weighting or baseline rescaling.
import { noGrad } from '../../engine/autograd.js';
import { Tensor, tidy } from '../../engine/tensor.js';
import { InputError } from '../../errors.js';
import { LlamaModel, type LoadModelOptions } from '../../llama/model.js';
import { LlamaTokenizer } from '../../llama/tokenizer.js';
import type { LlamaWeights } from '../../llama/weights.js';
import type { EmbeddingProvider } from './semantic.js';

export interface EmbeddingTokenizer {
  encode(text: string): number[];
  idToToken(id: number): string | undefined;
  readonly bosId: number | null;
}

export interface ModelEmbeddingOptions {
  /**
   * Decoder layers to run before the final norm: 0 (token embeddings) to the number of layers; a
   * negative value counts from the end (-1 = all layers). Default: all layers.
   */
  layer?: number;
  /** Texts longer than this many tokens are cut (from the right). Default 512. */
  maxTokens?: number;
  /** How many texts' token vectors to keep (predictions and references repeat). Default 256. */
  cacheSize?: number;
}

/** Views over every tensor of a weight tree: shares storage, holds a reference of its own. */
function retainViews<T>(value: T): T {
  if (value instanceof Tensor) return value.reshape(value.shape).keep() as T;
  if (Array.isArray(value)) return value.map((v: unknown) => retainViews(v)) as T;
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = retainViews(v);
    return out as T;
  }
  return value;
}

export class ModelEmbeddingProvider implements EmbeddingProvider {
  /** The model whose hidden() runs: the model itself, or a view of its first `layer` layers. */
  private readonly runner: LlamaModel;
  readonly layer: number;
  readonly maxTokens: number;
  private readonly cache = new Map<string, { tokens: string[]; vectors: Float32Array[] }>();
  private readonly cacheSize: number;
  private disposed = false;

  /**
   * Embeds with `model` (no adapter is expected: a LoRA installed on it is applied). `owned`
   * models are disposed with the provider.
   */
  constructor(
    readonly model: LlamaModel,
    readonly tokenizer: EmbeddingTokenizer,
    opts: ModelEmbeddingOptions = {},
    private readonly owned = false,
  ) {
    const n = model.config.numHiddenLayers;
    const layer = opts.layer === undefined ? n : opts.layer < 0 ? n + 1 + opts.layer : opts.layer;
    if (!(Number.isInteger(layer) && layer >= 0 && layer <= n)) {
      throw new InputError(
        `embedding layer must be an integer in [${-(n + 1)}, ${n}] for this ${n}-layer model, got ${opts.layer}`,
        { key: 'embedding_layer' },
      );
    }
    this.layer = layer;
    this.maxTokens = opts.maxTokens ?? 512;
    this.cacheSize = opts.cacheSize ?? 256;
    if (layer === n) {
      this.runner = model;
    } else {
      // A model over the first `layer` layers (same final norm), sharing the weights' storage.
      const weights: LlamaWeights = retainViews({ ...model.weights, layers: model.weights.layers.slice(0, layer) });
      this.runner = new LlamaModel({ ...model.config, numHiddenLayers: layer }, weights);
      if (model.lora) this.runner.lora = model.lora.firstLayers(layer);
    }
  }

  /** Loads a model folder (no adapter) and its tokenizer; the provider owns the model. */
  static async load(
    dir: string,
    load: Omit<LoadModelOptions, 'adapter'> = {},
    opts: ModelEmbeddingOptions = {},
  ): Promise<ModelEmbeddingProvider> {
    const tokenizer = await LlamaTokenizer.load(dir);
    const model = await LlamaModel.load(dir, load);
    try {
      return new ModelEmbeddingProvider(model, tokenizer, opts, true);
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  /** The ids whose vectors are returned (BOS dropped, cut to maxTokens) and the ids fed to the model. */
  private ids(text: string): { input: number[]; skip: number } {
    const all = this.tokenizer.encode(text).slice(0, this.maxTokens + 1);
    const skip = all.length > 0 && all[0] === this.tokenizer.bosId ? 1 : 0;
    return { input: all.slice(0, skip + this.maxTokens), skip };
  }

  async embedTokens(text: string): Promise<{ tokens: string[]; vectors: Float32Array[] }> {
    if (this.disposed) throw new Error('ModelEmbeddingProvider: used after dispose()');
    const hit = this.cache.get(text);
    if (hit) return hit;
    const { input, skip } = this.ids(text);
    let out: { tokens: string[]; vectors: Float32Array[] } = { tokens: [], vectors: [] };
    if (input.length > skip) {
      const T = input.length;
      const h = noGrad(() =>
        tidy(() => this.runner.hidden({ inputIds: Int32Array.from(input), batchSize: 1, seqLen: T })),
      );
      let flat: Float32Array;
      try {
        flat = await h.toFloat32();
      } finally {
        h.dispose();
      }
      const D = this.model.config.hiddenSize;
      const vectors: Float32Array[] = [];
      const tokens: string[] = [];
      for (let t = skip; t < T; t++) {
        vectors.push(flat.slice(t * D, (t + 1) * D));
        tokens.push(this.tokenizer.idToToken(input[t]!) ?? `<${input[t]}>`);
      }
      out = { tokens, vectors };
    }
    if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(text, out);
    return out;
  }

  /** Mean of the token vectors (in f64); all zeros for a text without tokens (cosine 0). */
  async embedMean(text: string): Promise<Float32Array> {
    const { vectors } = await this.embedTokens(text);
    const D = this.model.config.hiddenSize;
    const acc = new Float64Array(D);
    for (const v of vectors) for (let i = 0; i < D; i++) acc[i] = acc[i]! + v[i]!;
    const out = new Float32Array(D);
    if (vectors.length) for (let i = 0; i < D; i++) out[i] = acc[i]! / vectors.length;
    return out;
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.cache.clear();
    if (this.runner !== this.model) {
      this.runner.lora = null; // the LoRA tensors belong to the full model
      this.runner.dispose();
    }
    if (this.owned) this.model.dispose();
  }
}
