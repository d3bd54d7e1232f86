// The hidden-state EmbeddingProvider on the gqa-f32 fixture model: vectors equal the float64
// reference forward (final norm after L layers), BOS is left out, identical texts have cosine 1,
// BERTScore stays in its bounds, and results are deterministic.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type RefWeights, readRefWeights, refLogits } from '../../../reference/llama.js';
import { InputError } from '../../../src/errors.js';
import { LlamaModel } from '../../../src/llama/model.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import { ModelEmbeddingProvider } from '../../../src/pipeline/eval/embeddings.js';
import { bertScore, cosine, embeddingCosine } from '../../../src/pipeline/eval/semantic.js';
import { expectClose, useEngine } from '../../helpers/index.js';

useEngine();

const MODEL = join(import.meta.dirname, '..', '..', 'fixtures', 'reference', 'gqa-f32', 'model');
const TEXT = 'Revenue rose 12% to $1.2 billion, ahead of guidance.';

let model: LlamaModel;
let tokenizer: LlamaTokenizer;
let ref: RefWeights;
beforeAll(async () => {
  tokenizer = await LlamaTokenizer.load(MODEL);
  model = await LlamaModel.load(MODEL);
  ref = await readRefWeights(MODEL);
});
afterAll(() => model?.dispose());

/** Final-normed hidden states after `layers` layers, from the f64 reference (lm_head = identity). */
function refHidden(ids: number[], layers: number): Float64Array {
  const D = model.config.hiddenSize;
  const eye = new Float64Array(D * D);
  for (let i = 0; i < D; i++) eye[i * D + i] = 1;
  const W: RefWeights = { get: (n) => (n === 'lm_head.weight' ? eye : ref.get(n)) };
  return refLogits({ ...model.config, numHiddenLayers: layers, vocabSize: D, tieWordEmbeddings: false }, W, ids);
}

describe('ModelEmbeddingProvider', () => {
  it('token vectors are the final-norm hidden states of every token after BOS (all layers and a truncated stack)', async () => {
    const ids = tokenizer.encode(TEXT);
    expect(ids[0]).toBe(tokenizer.bosId);
    const D = model.config.hiddenSize;
    for (const layer of [model.config.numHiddenLayers, 1, 0]) {
      const p = new ModelEmbeddingProvider(model, tokenizer, { layer });
      try {
        const { tokens, vectors } = await p.embedTokens(TEXT);
        expect(tokens).toHaveLength(ids.length - 1);
        expect(tokens).toEqual(ids.slice(1).map((id) => tokenizer.idToToken(id)));
        const expected = refHidden(ids, layer).slice(D); // drop the BOS row
        const got = new Float32Array(vectors.length * D);
        vectors.forEach((v, t) => {
          got.set(v, t * D);
        });
        expectClose(got, expected, { atol: 2e-4, rtol: 2e-4 }, `layer ${layer}`);
      } finally {
        p.dispose();
      }
    }
    // The truncated view shares the weights: the full model still works after it is disposed.
    const again = new ModelEmbeddingProvider(model, tokenizer);
    expect((await again.embedTokens(TEXT)).vectors).toHaveLength(ids.length - 1);
    again.dispose();
  });

  it('negative layers count from the end; out-of-range layers are an InputError', () => {
    const n = model.config.numHiddenLayers;
    const a = new ModelEmbeddingProvider(model, tokenizer, { layer: -1 });
    expect(a.layer).toBe(n);
    a.dispose();
    const b = new ModelEmbeddingProvider(model, tokenizer, { layer: -2 });
    expect(b.layer).toBe(n - 1);
    b.dispose();
    expect(() => new ModelEmbeddingProvider(model, tokenizer, { layer: n + 1 })).toThrow(InputError);
    expect(() => new ModelEmbeddingProvider(model, tokenizer, { layer: 0.5 })).toThrow(InputError);
  });

  it('identical texts: cosine 1 and BERTScore 1; different texts: bounds hold and the mean is the token mean', async () => {
    const p = new ModelEmbeddingProvider(model, tokenizer);
    try {
      expect(await embeddingCosine(p, TEXT, TEXT)).toBeCloseTo(1, 6);
      const same = await bertScore(p, TEXT, TEXT);
      expect(same.precision).toBeCloseTo(1, 6);
      expect(same.recall).toBeCloseTo(1, 6);
      expect(same.f1).toBeCloseTo(1, 6);
      const other = 'The board appointed a new chief financial officer effective March 1.';
      const c = await embeddingCosine(p, TEXT, other);
      expect(c).toBeGreaterThanOrEqual(-1);
      expect(c).toBeLessThan(1 - 1e-4);
      const b = await bertScore(p, TEXT, other);
      for (const v of [b.precision, b.recall, b.f1]) {
        expect(v).toBeGreaterThanOrEqual(-1);
        expect(v).toBeLessThanOrEqual(1 + 1e-9);
      }
      expect(b.f1).toBeLessThan(1 - 1e-4);
      // Mean pooling: the mean of the token vectors, computed independently here.
      const { vectors } = await p.embedTokens(other);
      const D = model.config.hiddenSize;
      const mean = new Float32Array(D);
      for (let i = 0; i < D; i++) mean[i] = vectors.reduce((s, v) => s + v[i]!, 0) / vectors.length;
      expectClose(await p.embedMean(other), mean, { atol: 1e-6, rtol: 1e-6 }, 'mean pooling');
      // A text without tokens embeds to zeros: cosine 0, BERTScore 0.
      expect(await embeddingCosine(p, '', TEXT)).toBe(0);
      expect(await bertScore(p, '', TEXT)).toEqual({ precision: 0, recall: 0, f1: 0 });
    } finally {
      p.dispose();
    }
  });

  it('is deterministic: two providers give bit-identical vectors, uncached', async () => {
    const a = new ModelEmbeddingProvider(model, tokenizer, { cacheSize: 1 });
    const b = new ModelEmbeddingProvider(model, tokenizer, { cacheSize: 1 });
    try {
      const va = await a.embedMean(TEXT);
      await a.embedMean('evict the cache');
      const va2 = await a.embedMean(TEXT);
      const vb = await b.embedMean(TEXT);
      expect(Array.from(va2)).toEqual(Array.from(va));
      expect(Array.from(vb)).toEqual(Array.from(va));
      expect(cosine(va, vb)).toBeCloseTo(1, 6);
    } finally {
      a.dispose();
      b.dispose();
    }
  });

  it('cuts long texts at maxTokens and refuses use after dispose', async () => {
    const p = new ModelEmbeddingProvider(model, tokenizer, { maxTokens: 5 });
    expect((await p.embedTokens(TEXT.repeat(4))).vectors).toHaveLength(5);
    p.dispose();
    await expect(p.embedTokens(TEXT)).rejects.toThrow(/after dispose/);
  });

  it('load() owns its model', async () => {
    const p = await ModelEmbeddingProvider.load(MODEL, {}, { layer: 1 });
    const direct = new ModelEmbeddingProvider(model, tokenizer, { layer: 1 });
    try {
      expect(Array.from(await p.embedMean(TEXT))).toEqual(Array.from(await direct.embedMean(TEXT)));
    } finally {
      p.dispose();
      direct.dispose();
    }
    expect(p.model.weights.embedTokens.disposed).toBe(true);
  });
});
