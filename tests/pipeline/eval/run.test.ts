// The evaluation flow (src/pipeline/eval/run.ts): several suites on one loaded model, each checked
// against the pieces it is built from, called directly (perplexity per text, generation through
// buildEvalItems + runGenerationEval); the files it writes; every suite read and checked before
// the model loads.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { LlamaModel } from '../../../src/llama/model.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import { readRecords } from '../../../src/pipeline/data/readers.js';
import { buildEvalItems, runGenerationEval } from '../../../src/pipeline/eval/generation.js';
import { evaluatePerplexity, perplexityJson } from '../../../src/pipeline/eval/perplexity.js';
import { readResults } from '../../../src/pipeline/eval/results.js';
import { evaluate } from '../../../src/pipeline/eval/run.js';
import { useEngine } from '../../helpers/index.js';

useEngine();

const ROOT = join(import.meta.dirname, '..', '..', '..');
const MODEL = join(ROOT, 'tests', 'fixtures', 'reference', 'gqa-f32', 'model');
const QA = join(ROOT, 'data', 'eval', 'fin-figures.jsonl');

const tmp = () => mkdtempSync(join(tmpdir(), 'finllm-evaluate-'));
const TEXTS = [
  'Revenue rose 8% to $2.1 billion.',
  'Net income fell, and the company cut its outlook for the year.',
  'Margins held.',
];

afterEach(() => {
  vi.restoreAllMocks();
});

describe('evaluate(): one flow for finllm eval, the pipeline stages and the tests', () => {
  it('a perplexity and a generation suite on one loaded model: the same numbers as the pieces called directly, files written', async () => {
    const dir = tmp();
    const texts = join(dir, 'texts.jsonl');
    writeFileSync(texts, TEXTS.map((text) => JSON.stringify({ body: text })).join('\n') + '\n');
    const pplOut = join(dir, 'ppl.json');
    const genOut = join(dir, 'qa.results.json');
    const loads = vi.spyOn(LlamaModel, 'load');
    const outcomes = await evaluate({
      modelDir: MODEL,
      load: {},
      suites: [
        { file: texts, task: 'perplexity', textColumn: 'body', limit: 2, out: pplOut },
        { file: QA, task: 'generation', name: 'qa-suite', limit: 2, out: genOut },
      ],
      maxNewTokens: 3,
      quiet: true,
    });
    expect(loads).toHaveBeenCalledTimes(1);
    loads.mockRestore();
    expect(outcomes.map((o) => [o.suite.task, o.out])).toEqual([
      ['perplexity', pplOut],
      ['generation', genOut],
    ]);

    // Reference: the model loaded again, the pieces called one by one.
    const tokenizer = await LlamaTokenizer.load(MODEL);
    const model = await LlamaModel.load(MODEL);
    try {
      const ref = await evaluatePerplexity(model, tokenizer, TEXTS.slice(0, 2));
      const got = outcomes[0]!.perplexity!;
      expect(got.examples).toBe(2);
      expect(got.perExample).toEqual(ref.perExample); // same packing, same passes: identical
      expect([got.tokens, got.loss]).toEqual([ref.tokens, ref.loss]);
      expect(readFileSync(pplOut, 'utf8')).toBe(`${JSON.stringify(perplexityJson(got), null, 2)}\n`);

      const items = buildEvalItems(await readRecords(QA), 'generation', QA, { limit: 2, tokenizer });
      const direct = await runGenerationEval(model, tokenizer, items, {
        task: 'generation',
        maxNewTokens: 3,
        model: MODEL,
        name: 'qa-suite',
      });
      const written = await readResults(genOut);
      expect(written.task).toBe('qa-suite');
      expect(written.model).toBe(MODEL);
      expect(written.adapter).toBeNull();
      expect(written.per_example).toEqual(direct.results.per_example);
      expect(written.metrics).toEqual(direct.results.metrics);
    } finally {
      model.dispose();
    }
  });

  it('every suite is read and checked before the model loads: a bad record in the second suite stops the run first', async () => {
    const dir = tmp();
    const bad = join(dir, 'bad.jsonl');
    writeFileSync(bad, '{"text": "fine"}\n{"text": 3}\n');
    const out = join(dir, 'never.json');
    const loads = vi.spyOn(LlamaModel, 'load');
    const err = await evaluate({
      modelDir: MODEL,
      load: {},
      suites: [
        { file: QA, task: 'generation', limit: 1, out },
        { file: bad, task: 'perplexity' },
      ],
      quiet: true,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/bad\.jsonl, row 2, key 'text': expected a "text" string, got 3/);
    expect(loads).not.toHaveBeenCalled();
    expect(() => readFileSync(out)).toThrow();
  });

  it('an empty file is refused per task with the messages of finllm eval', async () => {
    const dir = tmp();
    const empty = join(dir, 'empty.jsonl');
    writeFileSync(empty, '');
    await expect(
      evaluate({ modelDir: MODEL, load: {}, suites: [{ file: empty, task: 'perplexity' }] }),
    ).rejects.toThrow(/empty\.jsonl: no rows: the data file is empty/);
    await expect(
      evaluate({ modelDir: MODEL, load: {}, suites: [{ file: empty, task: 'generation' }] }),
    ).rejects.toThrow(/empty\.jsonl: no eval records: the file is empty/);
  });
});
