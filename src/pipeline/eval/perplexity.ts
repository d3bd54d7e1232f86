// Perplexity evaluation: for each text, the loss transformers reports for
// `model(input_ids=ids, labels=ids).loss` with ids = tokenizer(text).input_ids (BOS from the
// post-processor): the mean NLL of ids[t+1] given ids[..t], over the len(ids) − 1 predicted tokens.
// The corpus loss is the token-weighted mean, perplexity = exp(loss). perplexityJson is the one
// JSON form of a result (what `eval --json` prints and what `eval --out` and the pipeline write);
// readPerplexity reads such a file back (the pipeline's compare stage).
//
// Several texts share one forward pass by packing: each text is its own segment (attention stays
// inside it) with positions restarting at 0, which computes exactly the per-text forward.
import { z } from 'zod';
import { InputError, NonFiniteError } from '../../errors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { parseWithSchema, readJsonFile } from '../../io/json.js';
import { warnPastPositions } from '../../llama/generate.js';
import { IGNORE_INDEX, type LlamaModel } from '../../llama/model.js';

export interface TextLoss {
  loss: number;
  /** Predicted tokens: len(ids) − 1. */
  tokens: number;
}

export interface PerplexityResult {
  examples: number;
  tokens: number;
  loss: number;
  perplexity: number;
  perExample: TextLoss[];
}

export interface PerplexityOptions {
  /** Tokens per packed forward pass (texts longer than this run alone). Default 2048. */
  maxTokensPerPass?: number;
  /** Called after each forward pass with the number of texts done. */
  onProgress?: (done: number, total: number) => void;
}

/** Per-sequence losses for already tokenized sequences (each needs at least 2 tokens). */
export async function sequenceLosses(
  model: LlamaModel,
  sequences: readonly (readonly number[])[],
  opts: PerplexityOptions = {},
): Promise<TextLoss[]> {
  const budget = opts.maxTokensPerPass ?? 2048;
  sequences.forEach((ids, i) => {
    if (ids.length < 2)
      throw new InputError(`text ${i + 1} has ${ids.length} token(s): at least 2 are needed to predict anything`, {
        row: i + 1,
      });
  });
  warnPastPositions(
    model,
    sequences.map((s) => s.length),
    'text',
  );
  const out: TextLoss[] = new Array(sequences.length);
  let i = 0;
  while (i < sequences.length) {
    // Greedy packing in order: one row holds consecutive texts up to the token budget.
    const group: number[] = [i];
    let total = sequences[i]!.length;
    while (i + group.length < sequences.length && total + sequences[i + group.length]!.length <= budget) {
      total += sequences[i + group.length]!.length;
      group.push(i + group.length);
    }
    const inputIds = new Int32Array(total);
    const labels = new Int32Array(total).fill(IGNORE_INDEX);
    const positionIds = new Int32Array(total);
    const segmentIds = new Int32Array(total);
    let off = 0;
    group.forEach((idx, s) => {
      const ids = sequences[idx]!;
      for (let t = 0; t < ids.length; t++) {
        inputIds[off + t] = ids[t]!;
        positionIds[off + t] = t;
        segmentIds[off + t] = s + 1;
        if (t + 1 < ids.length) labels[off + t] = ids[t + 1]!;
      }
      off += ids.length;
    });
    const packed = group.length > 1;
    const nll = await model.tokenLosses({
      inputIds,
      labels,
      batchSize: 1,
      seqLen: total,
      ...(packed ? { positionIds, segmentIds } : {}),
    });
    off = 0;
    for (const idx of group) {
      const n = sequences[idx]!.length;
      let s = 0;
      for (let t = 0; t + 1 < n; t++) s += nll[off + t]!;
      if (!Number.isFinite(s)) {
        // The weights were checked when loaded: this is an overflow in the forward pass.
        throw new NonFiniteError(
          `text ${idx + 1}: the loss is ${s} (the forward pass produced non-finite logits; with 16-bit storage try --storage f32)`,
        );
      }
      out[idx] = { loss: s / (n - 1), tokens: n - 1 };
      off += n;
    }
    i += group.length;
    opts.onProgress?.(i, sequences.length);
  }
  return out;
}

export function aggregate(perExample: TextLoss[]): PerplexityResult {
  let tokens = 0;
  let sum = 0;
  for (const e of perExample) {
    tokens += e.tokens;
    sum += e.loss * e.tokens;
  }
  const loss = tokens > 0 ? sum / tokens : NaN;
  return { examples: perExample.length, tokens, loss, perplexity: Math.exp(loss), perExample };
}

/** Perplexity of `texts` under the model, tokenized with the model tokenizer's defaults. */
export async function evaluatePerplexity(
  model: LlamaModel,
  tokenizer: { encode(text: string): number[] },
  texts: readonly string[],
  opts: PerplexityOptions = {},
): Promise<PerplexityResult> {
  const sequences = texts.map((t) => tokenizer.encode(t));
  return aggregate(await sequenceLosses(model, sequences, opts));
}

/** The JSON object of a perplexity result: {examples, tokens, loss, perplexity, per_example: [{loss, tokens}]}. */
export function perplexityJson(r: PerplexityResult): Record<string, unknown> {
  return {
    examples: r.examples,
    tokens: r.tokens,
    loss: r.loss,
    perplexity: r.perplexity,
    per_example: r.perExample.map((e) => ({ loss: e.loss, tokens: e.tokens })),
  };
}

/** Writes perplexityJson(r), pretty-printed, atomically. */
export async function writePerplexity(file: string, r: PerplexityResult): Promise<void> {
  await writeFileAtomic(file, `${JSON.stringify(perplexityJson(r), null, 2)}\n`);
}

const tokenCount = z.number().int().nonnegative();

const PerplexityJsonSchema = z.object({
  examples: tokenCount,
  tokens: tokenCount,
  loss: z.number(),
  perplexity: z.number(),
  per_example: z.array(z.object({ loss: z.number(), tokens: tokenCount })),
});

/** Reads a file written by writePerplexity; a malformed one is an InputError naming the file and the key. */
export async function readPerplexity(file: string): Promise<PerplexityResult> {
  const j = parseWithSchema(PerplexityJsonSchema, await readJsonFile(file), file);
  if (j.per_example.length !== j.examples)
    throw new InputError(`expected ${j.examples} entries (one per example), got ${j.per_example.length}`, {
      file,
      key: 'per_example',
    });
  return {
    examples: j.examples,
    tokens: j.tokens,
    loss: j.loss,
    perplexity: j.perplexity,
    perExample: j.per_example.map((e) => ({ loss: e.loss, tokens: e.tokens })),
  };
}
