// Semantic similarity given an embedding model. The model-backed provider lives elsewhere; these
// functions only need the interface below.
//  - cosineSimilarity of the mean-pooled vectors of prediction and reference;
//  - BERTScore-style greedy matching (Zhang et al. 2020, without idf weighting or baseline
//    rescaling): every token is matched to its most similar token on the other side by cosine;
//    P = mean over prediction tokens, R = mean over reference tokens, F1 = 2PR/(P+R).

/** The metric names of these two scores, as an eval suite asks for them. */
export const EMBEDDING_METRICS = ['embedding', 'bertscore'] as const;

export interface EmbeddingProvider {
  /** One vector per token of `text` (same order as `tokens`). */
  embedTokens(text: string): Promise<{ tokens: string[]; vectors: Float32Array[] }>;
  /** Mean-pooled sentence vector. */
  embedMean(text: string): Promise<Float32Array>;
}

export function cosine(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new Error(`cosine: vector lengths differ (${a.length} vs ${b.length})`);
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i]! * b[i]!;
    na += a[i]! * a[i]!;
    nb += b[i]! * b[i]!;
  }
  if (na === 0 || nb === 0) return 0;
  return dot / Math.sqrt(na * nb);
}

export async function embeddingCosine(
  provider: EmbeddingProvider,
  prediction: string,
  reference: string,
): Promise<number> {
  const [p, r] = await Promise.all([provider.embedMean(prediction), provider.embedMean(reference)]);
  return cosine(p, r);
}

export interface BertScore {
  precision: number;
  recall: number;
  f1: number;
}

/** Greedy matching over precomputed token vectors. Empty sides give all zeros. */
export function greedyMatch(pred: Float32Array[], ref: Float32Array[]): BertScore {
  if (pred.length === 0 || ref.length === 0) return { precision: 0, recall: 0, f1: 0 };
  const sim = pred.map((p) => ref.map((r) => cosine(p, r)));
  let precision = 0;
  for (const row of sim) precision += Math.max(...row);
  precision /= pred.length;
  let recall = 0;
  for (let j = 0; j < ref.length; j++) recall += Math.max(...sim.map((row) => row[j]!));
  recall /= ref.length;
  const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
  return { precision, recall, f1 };
}

export async function bertScore(
  provider: EmbeddingProvider,
  prediction: string,
  reference: string,
): Promise<BertScore> {
  const [p, r] = await Promise.all([provider.embedTokens(prediction), provider.embedTokens(reference)]);
  return greedyMatch(p.vectors, r.vectors);
}
