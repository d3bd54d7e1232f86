// The generation / classification eval runner: prompts from eval records through the training
// templates, greedy predictions on the gqa-f32 fixture model checked against generate() directly,
// stop sequences, scores and results files, the classification report, and the eval verb's new
// tasks (the perplexity path is tested in tests/llama/export.test.ts).
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { evalAction } from '../../../src/cli/eval.js';
import { generateAction } from '../../../src/cli/generate.js';
import { setComputePrecision } from '../../../src/engine/precision.js';
import { InputError } from '../../../src/errors.js';
import { generate } from '../../../src/llama/generate.js';
import { LlamaModel } from '../../../src/llama/model.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import { normalizeGeneratedLabel, parseGoldLabel } from '../../../src/pipeline/eval/classification.js';
import { ModelEmbeddingProvider } from '../../../src/pipeline/eval/embeddings.js';
import {
  buildEvalItems,
  cutAtStop,
  type EvalRow,
  metricsFor,
  parseEvalMetrics,
  predict,
  runGenerationEval,
} from '../../../src/pipeline/eval/generation.js';
import { parseResults, readResults } from '../../../src/pipeline/eval/results.js';
import { requireFeature, useEngine } from '../../helpers/index.js';

useEngine();

const ROOT = join(import.meta.dirname, '..', '..', '..');
const MODEL = join(ROOT, 'tests', 'fixtures', 'reference', 'gqa-f32', 'model');
const EVAL = join(ROOT, 'data', 'eval');

function rowsOf(file: string, n?: number): EvalRow[] {
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .slice(0, n)
    .map((l, i) => ({ row: i + 1, value: JSON.parse(l) as Record<string, unknown> }));
}

const rows = (values: Record<string, unknown>[]): EvalRow[] => values.map((value, i) => ({ row: i + 1, value }));

describe('eval records → prompts', () => {
  it('qa, summarization and sentiment records use the training templates (instruction layout, response slot last)', () => {
    const qa = rowsOf(join(EVAL, 'fin-figures.jsonl'), 2);
    const [q] = buildEvalItems(qa, 'generation', 'fin-figures.jsonl');
    const r = qa[0]!.value as { id: string; context: string; question: string; answer: string };
    expect(q).toEqual({
      id: r.id,
      row: 1,
      kind: 'qa',
      prompt: `### Instruction:\nAnswer the question from the passage, quoting figures exactly.\n\n### Input:\n${r.context}\n\nQuestion: ${r.question}\n\n### Response:\n`,
      reference: r.answer,
      source: r.context,
    });
    const [s] = buildEvalItems(rowsOf(join(EVAL, 'fin-summary.jsonl'), 1), 'generation', 'fin-summary.jsonl');
    expect(s!.kind).toBe('summarization');
    // The bundled sources are earnings calls: the noun the training data uses for them.
    expect(
      s!.prompt.startsWith(
        '### Instruction:\nSummarize this earnings call excerpt in one sentence, keeping figures exact.\n\n### Input:\n',
      ),
    ).toBe(true);
    expect(s!.prompt.endsWith('\n\n### Response:\n')).toBe(true);
    const [c] = buildEvalItems(rowsOf(join(EVAL, 'fin-sentiment.jsonl'), 1), 'classification', 'fin-sentiment.jsonl');
    expect(c!.prompt).toBe(
      '### Instruction:\nAnalyze this financial passage: give its sentiment (positive, negative or neutral) and the key figures.\n\n' +
        `### Input:\n${(rowsOf(join(EVAL, 'fin-sentiment.jsonl'), 1)[0]!.value as { text: string }).text}\n\n### Response:\n`,
    );
    expect(c!.reference).toBe('positive');
    // {prompt, reference} records pass through verbatim; limit keeps the first N.
    const p = buildEvalItems(
      rows([
        { prompt: 'Q: 2+2?\nA:', reference: '4' },
        { prompt: 'x', reference: 'y' },
      ]),
      'generation',
      'p.jsonl',
      { limit: 1 },
    );
    expect(p).toEqual([{ id: 'row-1', row: 1, kind: 'prompt', prompt: 'Q: 2+2?\nA:', reference: '4' }]);
  });

  it('bad records are InputErrors naming file, row and field', () => {
    const bad = (values: Record<string, unknown>[], task: 'generation' | 'classification', re: RegExp) => {
      let err: unknown;
      try {
        buildEvalItems(rows(values), task, 'eval.jsonl');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InputError);
      expect((err as Error).message).toMatch(re);
    };
    bad([{ id: 'a', foo: 1 }], 'generation', /eval\.jsonl, row 1: cannot tell what this record is.*got fields id, foo/);
    bad(
      [{ text: 'Sales fell.', label: 'bearish' }],
      'classification',
      /row 1, key 'label'.*negative, neutral or positive.*"bearish"/,
    );
    bad(
      [
        { id: 'x', question: 'q?', context: 'c', answer: 'a' },
        { id: 'x', question: 'q?', context: 'c', answer: 'a' },
      ],
      'generation',
      /row 2, key 'id'.*duplicate id "x"/,
    );
    bad([{ question: 'q?', context: 'c', answer: '' }], 'generation', /key 'answer'.*non-empty string/);
    bad([{ text: 'Sales fell.', label: 'negative' }], 'generation', /--task classification/);
    bad([{ question: 'q?', context: 'c', answer: 'a' }], 'classification', /needs a gold label/);
    bad(
      [{ summary: 's', source: 'text', source_kind: 'blog' }],
      'generation',
      /key 'source_kind'.*earnings_call, filing, news/,
    );
    expect(() => buildEvalItems([], 'generation', 'eval.jsonl')).toThrow(/no eval records/);
  });

  it('metrics: task defaults per record kind, parsing with errors', () => {
    const items = buildEvalItems(rowsOf(join(EVAL, 'fin-figures.jsonl'), 1), 'generation', 'fin-figures.jsonl');
    expect(metricsFor(items, 'generation')).toEqual(['exact', 'numeric', 'rouge']);
    expect(metricsFor(items, 'generation', ['bleu'])).toEqual(['bleu']);
    expect(parseEvalMetrics('rouge, bertscore,rouge')).toEqual(['rouge', 'bertscore']);
    expect(() => parseEvalMetrics('rouge,meteor')).toThrow(/unknown metric "meteor"/);
  });

  it('cutAtStop cuts before the earliest stop sequence', () => {
    expect(cutAtStop('ok\n### Instruction:', ['\n###'])).toEqual({ text: 'ok', stopped: true });
    expect(cutAtStop('a STOP b END', ['END', 'STOP'])).toEqual({ text: 'a ', stopped: true });
    expect(cutAtStop('nothing', ['\n###', ''])).toEqual({ text: 'nothing', stopped: false });
  });
});

describe('runner on the gqa-f32 fixture model', () => {
  let model: LlamaModel;
  let tokenizer: LlamaTokenizer;
  beforeAll(async () => {
    tokenizer = await LlamaTokenizer.load(MODEL);
    model = await LlamaModel.load(MODEL);
  });
  afterAll(() => model?.dispose());

  it('greedy predictions are generate() + decode, reproducible, scored into a valid results file', async () => {
    const items = buildEvalItems(rowsOf(join(EVAL, 'fin-figures.jsonl'), 3), 'generation', 'fin-figures.jsonl');
    const opts = { task: 'generation' as const, maxNewTokens: 6, model: MODEL, stopSequences: [] };
    const seen: number[] = [];
    const r = await runGenerationEval(model, tokenizer, items, { ...opts, onProgress: (done) => void seen.push(done) });
    expect(seen).toEqual([1, 2, 3]);
    for (const [i, item] of items.entries()) {
      const direct = await generate(model, tokenizer.encode(item.prompt), { maxNewTokens: 6 });
      expect(r.predictions[i]!.text).toBe(tokenizer.decode(direct.tokens, { skipSpecialTokens: true }).trim());
      expect(r.predictions[i]!.tokens).toBe(direct.tokens.length);
    }
    const parsed = parseResults(JSON.parse(JSON.stringify(r.results)), 'results.json');
    expect(parsed.task).toBe('qa');
    expect(parsed.adapter).toBeNull();
    expect(parsed.per_example.map((e) => e.id)).toEqual(items.map((i) => i.id));
    expect(parsed.per_example[0]!.source).toBe(items[0]!.source);
    for (const e of parsed.per_example) {
      for (const k of ['rouge1', 'rouge2', 'rougeL', 'exact_match', 'numeric_fidelity', 'hallucinated_number_rate'])
        expect(e.scores).toHaveProperty(k);
    }
    const mean = parsed.per_example.reduce((s, e) => s + e.scores['rougeL']!, 0) / 3;
    expect(parsed.metrics['rougeL']).toBeCloseTo(mean, 12);
    expect(r.results.generation).toMatchObject({
      task: 'generation',
      max_new_tokens: 6,
      greedy: true,
      metrics: ['exact', 'numeric', 'rouge'],
    });
    const again = await runGenerationEval(model, tokenizer, items, opts);
    expect(again.predictions).toEqual(r.predictions);
  });

  it('batched decoding (left-padded, per-row EOS / stop sequence) gives exactly the one-at-a-time results under greedy', async () => {
    // 5 qa prompts of different lengths in batches of 3 (a full batch and a remainder of 2, sorted
    // by length), and the default batch size (one batch of 5). A stop sequence taken from item 1's
    // free output ends that row early while the others continue.
    const items = buildEvalItems(rowsOf(join(EVAL, 'fin-figures.jsonl'), 5), 'generation', 'fin-figures.jsonl');
    const lengths = items.map((it) => tokenizer.encode(it.prompt).length);
    expect(new Set(lengths).size).toBeGreaterThan(1);
    const raw = tokenizer.decode(
      (await generate(model, tokenizer.encode(items[1]!.prompt), { maxNewTokens: 6 })).tokens,
      { skipSpecialTokens: true },
    );
    const opts = {
      task: 'generation' as const,
      maxNewTokens: 6,
      model: MODEL,
      stopSequences: [raw.slice(2, 4), '\n###'],
    };
    const one = await runGenerationEval(model, tokenizer, items, { ...opts, batchSize: 1 });
    expect(one.predictions[1]!.stopReason).toBe('stop_sequence');
    for (const batchSize of [3, undefined]) {
      const seen: string[] = [];
      const r = await runGenerationEval(model, tokenizer, items, {
        ...opts,
        ...(batchSize ? { batchSize } : {}),
        onProgress: (done, _t, item) => void seen.push(`${done}:${item.id}`),
      });
      expect(r.predictions).toEqual(one.predictions);
      expect(r.results.per_example).toEqual(one.results.per_example);
      expect(r.results.metrics).toEqual(one.results.metrics);
      // Batches run shortest prompts first: progress comes in that order, each item once.
      const byLength = items.map((it, i) => ({ it, i })).sort((a, b) => lengths[a.i]! - lengths[b.i]! || a.i - b.i);
      expect(seen).toEqual(byLength.map(({ it }, k) => `${k + 1}:${it.id}`));
    }
    // Sampling: item i draws with seed + i whatever the batch size and order.
    const sampled = { ...opts, sampling: { greedy: false, temperature: 1.2, seed: 9 } };
    const s3 = await runGenerationEval(model, tokenizer, items, { ...sampled, batchSize: 3 });
    const s8 = await runGenerationEval(model, tokenizer, items, { ...sampled, batchSize: 8 });
    expect(s3.predictions).toEqual(s8.predictions);
    const cls = buildEvalItems(rowsOf(join(EVAL, 'fin-sentiment.jsonl'), 5), 'classification', 'fin-sentiment.jsonl');
    const c1 = await runGenerationEval(model, tokenizer, cls, {
      task: 'classification',
      maxNewTokens: 3,
      model: MODEL,
      batchSize: 1,
    });
    const c4 = await runGenerationEval(model, tokenizer, cls, {
      task: 'classification',
      maxNewTokens: 3,
      model: MODEL,
      batchSize: 4,
    });
    expect(c4.predictions).toEqual(c1.predictions);
    expect(c4.classification).toEqual(c1.classification);
    await expect(
      runGenerationEval(model, tokenizer, cls, { task: 'classification', maxNewTokens: 3, model: MODEL, batchSize: 0 }),
    ).rejects.toThrow(/batch-size/);
  });

  it('a stop sequence ends decoding and is cut from the prediction', async () => {
    const [item] = buildEvalItems(rowsOf(join(EVAL, 'fin-figures.jsonl'), 1), 'generation', 'fin-figures.jsonl');
    const free = await predict(model, tokenizer, item!.prompt, { maxNewTokens: 8, stopSequences: [] });
    expect(free.stopReason).toBe('max_new_tokens');
    const raw = tokenizer.decode((await generate(model, tokenizer.encode(item!.prompt), { maxNewTokens: 8 })).tokens, {
      skipSpecialTokens: true,
    });
    const stop = raw.slice(2, 4);
    const cut = await predict(model, tokenizer, item!.prompt, { maxNewTokens: 8, stopSequences: [stop] });
    expect(cut.stopReason).toBe('stop_sequence');
    expect(cut.text).toBe(raw.slice(0, raw.indexOf(stop)).trim());
    expect(cut.tokens).toBeLessThan(8);
  });

  it('classification: label from the generated text (FinGPT rule), accuracy, F1 and confusion matrix', async () => {
    const items = buildEvalItems(rowsOf(join(EVAL, 'fin-sentiment.jsonl'), 6), 'classification', 'fin-sentiment.jsonl');
    const r = await runGenerationEval(model, tokenizer, items, {
      task: 'classification',
      maxNewTokens: 4,
      model: MODEL,
      adapter: 'some/adapter',
    });
    const c = r.classification!;
    expect(c.n).toBe(6);
    expect(c.confusion.flat().reduce((a, b) => a + b, 0)).toBe(6);
    let correct = 0;
    r.results.per_example.forEach((e, i) => {
      const gold = parseGoldLabel(items[i]!.reference)!;
      const pred = normalizeGeneratedLabel(e.prediction);
      const ok = gold === pred ? 1 : 0;
      correct += ok;
      expect(e.scores['label_correct']).toBe(ok);
    });
    expect(c.accuracy).toBeCloseTo(correct / 6, 12);
    expect(r.results.metrics['label_correct']).toBeCloseTo(correct / 6, 12);
    expect(r.results.metrics['label_macro_f1']).toBe(c.macroF1);
    expect(r.results.task).toBe('sentiment');
    expect(r.results.adapter).toBe('some/adapter');
    expect(r.results.classification).toEqual(c);
    parseResults(JSON.parse(JSON.stringify(r.results)), 'results.json');
  });

  it('embedding metrics: cosine and BERTScore per example with a provider, an InputError without one', async () => {
    const items = buildEvalItems(rowsOf(join(EVAL, 'fin-summary.jsonl'), 2), 'generation', 'fin-summary.jsonl');
    const provider = new ModelEmbeddingProvider(model, tokenizer);
    try {
      const r = await runGenerationEval(model, tokenizer, items, {
        task: 'generation',
        maxNewTokens: 4,
        model: MODEL,
        metrics: ['rouge', 'embedding', 'bertscore'],
        embeddings: provider,
      });
      for (const e of r.results.per_example) {
        expect(e.scores['embedding_cosine']).toBeGreaterThanOrEqual(-1);
        expect(e.scores['embedding_cosine']).toBeLessThanOrEqual(1);
        expect(e.scores['bertscore_f1']).toBeGreaterThanOrEqual(-1);
        expect(e.scores['bertscore_f1']).toBeLessThanOrEqual(1);
      }
      expect(r.results.metrics['embedding_cosine']).toBeCloseTo(
        (r.results.per_example[0]!.scores['embedding_cosine']! +
          r.results.per_example[1]!.scores['embedding_cosine']!) /
          2,
        12,
      );
    } finally {
      provider.dispose();
    }
    await expect(
      runGenerationEval(model, tokenizer, items, {
        task: 'generation',
        maxNewTokens: 2,
        model: MODEL,
        metrics: ['bertscore'],
      }),
    ).rejects.toBeInstanceOf(InputError);
  });
});

describe('finllm eval --task generation|classification', () => {
  const dir = mkdtempSync(join(tmpdir(), 'finllm-eval-gen-'));

  it('--json prints the results object that --out writes; classification prints the report', async () => {
    const out = join(dir, 'qa.results.json');
    /** What `finllm eval --json` prints for the first two figure questions, with `more` options. */
    const qaJson = async (more: { out?: string; batchSize?: string }) => {
      let printed = '';
      await evalAction(
        {
          model: MODEL,
          data: join(EVAL, 'fin-figures.jsonl'),
          task: 'generation',
          limit: '2',
          maxNewTokens: '3',
          json: true,
          quiet: true,
          ...more,
        },
        (s) => (printed += s),
      );
      return printed;
    };
    const printed = await qaJson({ out });
    const batched = await qaJson({ batchSize: '1' });
    expect((JSON.parse(batched) as Record<string, unknown>)['per_example']).toEqual(
      (JSON.parse(printed) as Record<string, unknown>)['per_example'],
    );
    const fromStdout = JSON.parse(printed) as Record<string, unknown>;
    const fromFile = await readResults(out);
    expect(fromFile.per_example).toHaveLength(2);
    expect(fromStdout['per_example']).toEqual(fromFile.per_example);
    expect(fromStdout['format']).toBe('finllm.results.v1');
    let table = '';
    await evalAction(
      {
        model: MODEL,
        data: join(EVAL, 'fin-sentiment.jsonl'),
        task: 'classification',
        limit: '3',
        maxNewTokens: '2',
        quiet: true,
      },
      (s) => (table += s),
    );
    expect(table).toMatch(/task: sentiment \(3 examples, greedy, max 2 new tokens\)/);
    expect(table).toMatch(/accuracy .* macro F1 .* weighted F1/);
    expect(table).toMatch(/confusion/);
  });

  it('--kv-cache reaches the decoder: eval decodes over the cache it names (auto: f32 under fp32)', async () => {
    const spy = vi.spyOn(LlamaModel.prototype, 'newKvCache');
    const dtypes = () => [...new Set(spy.mock.calls.map((c) => c[3]))];
    const qa = {
      model: MODEL,
      data: join(EVAL, 'fin-figures.jsonl'),
      task: 'generation',
      limit: '2',
      maxNewTokens: '2',
      quiet: true,
    };
    try {
      await evalAction({ ...qa, kvCache: 'f16' }, () => undefined);
      expect(dtypes()).toEqual(['f16']);
      spy.mockClear();
      await evalAction(qa, () => undefined); // auto under fp32
      expect(dtypes()).toEqual(['f32']);
    } finally {
      spy.mockRestore();
    }
  });

  it('--kv-cache reaches the decoder: generate --precision fp16-mixed decodes over an f16 cache by default, f32 when named', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const spy = vi.spyOn(LlamaModel.prototype, 'newKvCache');
    const dtypes = () => [...new Set(spy.mock.calls.map((c) => c[3]))];
    try {
      for (const [kvCache, want] of [
        [undefined, 'f16'],
        ['f32', 'f32'],
      ] as const) {
        spy.mockClear();
        try {
          await generateAction(
            {
              model: MODEL,
              prompt: 'Revenue rose',
              maxNewTokens: '2',
              greedy: true,
              precision: 'fp16-mixed',
              ...(kvCache ? { kvCache } : {}),
            },
            () => undefined,
          );
        } finally {
          setComputePrecision('fp32'); // the verb sets the process-wide precision
        }
        expect(dtypes(), `generate --precision fp16-mixed --kv-cache ${kvCache ?? '(auto)'}`).toEqual([want]);
      }
    } finally {
      spy.mockRestore();
    }
  });

  it('perplexity keeps its JSON; --out writes it; flag errors name the flag', async () => {
    const data = join(dir, 'texts.jsonl');
    writeFileSync(data, '{"text": "Revenue rose 12% to $1.2 billion."}\n{"text": "Margins fell."}\n');
    let printed = '';
    const out = join(dir, 'ppl.json');
    await evalAction({ model: MODEL, data, json: true, out }, (s) => (printed += s));
    const j = JSON.parse(printed) as Record<string, unknown>;
    expect(Object.keys(j)).toEqual(['examples', 'tokens', 'loss', 'perplexity', 'per_example']);
    expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual(j);
    await expect(evalAction({ model: MODEL, data, limit: '1' })).rejects.toThrow(
      /^--limit applies to the generation and classification tasks$/,
    );
    await expect(evalAction({ model: MODEL, data, kvCache: 'f16' })).rejects.toThrow(
      /^--kv-cache applies to the generation and classification tasks/,
    );
    const qa = join(EVAL, 'fin-figures.jsonl');
    await expect(evalAction({ model: MODEL, data: qa, task: 'generation', metrics: 'rouge,meteor' })).rejects.toThrow(
      /unknown metric "meteor"/,
    );
    await expect(evalAction({ model: MODEL, data: qa, task: 'generation', maxNewTokens: 'lots' })).rejects.toThrow(
      /--max-new-tokens: expected an integer/,
    );
    await expect(evalAction({ model: MODEL, data: qa, task: 'generation', batchSize: '0' })).rejects.toThrow(
      /--batch-size: expected an integer/,
    );
    await expect(evalAction({ model: MODEL, data: qa, task: 'generation', kvCache: 'fp8' })).rejects.toThrow(
      /--kv-cache: expected f32, f16, auto, got "fp8"/,
    );
    await expect(evalAction({ model: MODEL, data: qa, task: 'classification' })).rejects.toThrow(
      /fin-figures\.jsonl, row 1.*gold label/,
    );
    await expect(evalAction({ model: MODEL, data: qa, task: 'summarize' })).rejects.toThrow(
      /unknown task.*perplexity, generation, classification/,
    );
  });
});
