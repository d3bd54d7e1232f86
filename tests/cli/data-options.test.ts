// eval, generate (and the pipeline's evaluation) read data and lay out prompts as training does:
// the same readers (JSONL, JSON, CSV), the same column mapping and template, taken from the run
// folder's resolved-config.yaml or flags; the bundled model's chat template is the training layout
// of chat records; errors about an eval record name the field its task needs.
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { dataSettings } from '../../src/cli/data-options.js';
import { promptIds } from '../../src/cli/generate.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { DEFAULT_COLUMNS, loadConfig, saveResolvedConfig } from '../../src/pipeline/config.js';
import { DEFAULT_PREPROCESS } from '../../src/pipeline/data/preprocess.js';
import { applyTemplate } from '../../src/pipeline/data/templates.js';
import { tokenizeExample } from '../../src/pipeline/data/tokenize.js';
import { buildEvalItems } from '../../src/pipeline/eval/generation.js';
import { readDataRows, textsOf } from '../../src/pipeline/eval/run.js';
import { inputErrorOf } from '../helpers/input-error.js';

const ROOT = join(import.meta.dirname, '..', '..');
const FIN_BASE = join(ROOT, 'models', 'fin-base');
const tmp = () => mkdtempSync(join(tmpdir(), 'finllm-data-options-'));
const rows = (values: Record<string, unknown>[]) => values.map((value, i) => ({ row: i + 1, value }));

describe('the bundled model ships a chat template that is the training layout of chat records', () => {
  it('a chat record tokenizes identically with the template and with the documented fallback (no template)', async () => {
    const withTemplate = await LlamaTokenizer.load(FIN_BASE);
    expect(withTemplate.hasChatTemplate).toBe(true);
    const bare = LlamaTokenizer.fromObjects(
      JSON.parse((await import('node:fs')).readFileSync(join(FIN_BASE, 'tokenizer.json'), 'utf8')) as object,
      {
        ...(JSON.parse(
          (await import('node:fs')).readFileSync(join(FIN_BASE, 'tokenizer_config.json'), 'utf8'),
        ) as Record<string, unknown>),
        chat_template: undefined,
      },
    );
    expect(bare.hasChatTemplate).toBe(false);
    const ctx = { columns: DEFAULT_COLUMNS, template: 'auto' as const, preprocess: DEFAULT_PREPROCESS };
    for (const messages of [
      [
        { role: 'user', content: 'What was revenue in Q3?' },
        { role: 'assistant', content: '$2.1 billion.' },
      ],
      [
        { role: 'system', content: 'Answer from the filing.' },
        { role: 'user', content: 'Net income?' },
        { role: 'assistant', content: '$40 million.' },
        { role: 'user', content: 'And margin?' },
        { role: 'assistant', content: '12%.' },
      ],
    ]) {
      const a = applyTemplate({ messages }, { ...ctx, tokenizer: withTemplate }, 'x', 1);
      const b = applyTemplate({ messages }, { ...ctx, tokenizer: bare }, 'x', 1);
      expect(a.rendered).toBe(true);
      expect(b.rendered).toBe(false);
      const ta = tokenizeExample(a, withTemplate, { maxSeqLen: 512, responseOnlyLoss: true });
      const tb = tokenizeExample(b, bare, { maxSeqLen: 512, responseOnlyLoss: true });
      expect(Array.from(ta.inputIds)).toEqual(Array.from(tb.inputIds));
      expect(Array.from(ta.labels)).toEqual(Array.from(tb.labels));
    }
  });
});

describe('generate lays out the prompt as training did', () => {
  it('--template qa / alpaca / chat give the ids of the training prompt; no template leaves the prompt as given', async () => {
    const tok = await LlamaTokenizer.load(FIN_BASE);
    const ctx = { columns: DEFAULT_COLUMNS, template: 'auto' as const, preprocess: DEFAULT_PREPROCESS, tokenizer: tok };
    const training = (fields: Record<string, unknown>) => {
      const ex = applyTemplate(fields, ctx, 'x', 1);
      return ex.rendered ? tok.encode(ex.prompt, { addSpecialTokens: false }) : tok.encode(ex.prompt);
    };
    const settings = (template: string) => dataSettings({ template }, []);
    const passage = 'Revenue rose 8% to $2.1 billion.';
    expect(promptIds({ prompt: passage, field: ['question=What was revenue?'] }, tok, settings('qa'))).toEqual(
      training({ task: 'qa', text: passage, question: 'What was revenue?', answer: 'x' }),
    );
    expect(promptIds({ prompt: 'Give the revenue.', field: [`input=${passage}`] }, tok, settings('alpaca'))).toEqual(
      training({ instruction: 'Give the revenue.', input: passage, output: 'x' }),
    );
    expect(promptIds({ prompt: 'What was revenue?', chat: true }, tok, settings('auto'))).toEqual(
      training({
        messages: [
          { role: 'user', content: 'What was revenue?' },
          { role: 'assistant', content: 'x' },
        ],
      }),
    );
    expect(promptIds({ prompt: passage }, tok, settings('auto'))).toEqual(tok.encode(passage));
    expect(inputErrorOf(() => promptIds({ prompt: passage }, tok, settings('qa'))).message).toMatch(
      /--field: missing field 'question' required by template qa \(give it with --field\)/,
    );
    expect(inputErrorOf(() => promptIds({ prompt: passage, field: ['x=1'] }, tok, settings('auto'))).message).toMatch(
      /^--field needs a template/,
    );
  });

  it('--chat-template FILE replaces the tokenizer template', async () => {
    const dir = tmp();
    const file = join(dir, 'chat.jinja');
    writeFileSync(
      file,
      '{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}',
    );
    const tok = await LlamaTokenizer.load(FIN_BASE, { chatTemplateFile: file });
    const ids = promptIds({ prompt: 'Hi', chatTemplate: file }, tok, dataSettings({}, []));
    expect(ids).toEqual(tok.encode('<s><user>Hi<assistant>', { addSpecialTokens: false }));
    expect(ids[0]).toBe(tok.bosId);
    expect(ids.filter((i) => i === tok.bosId)).toHaveLength(1);
  });
});

describe('data settings come from the run folder, then flags', () => {
  it('a resolved-config.yaml beside the model folder gives its columns and template; --template and --column override', () => {
    const run = tmp();
    const cfg = loadConfig({
      file: join(ROOT, 'configs/default.yaml'),
      sets: ['data.template=qa', 'data.columns.text=passage', 'data.columns.question=query'],
      cwd: run,
    });
    saveResolvedConfig(cfg, run);
    mkdirSync(join(run, 'model'));
    const s = dataSettings({}, [undefined, join(run, 'model')]);
    expect(s.from).toBe(join(run, 'resolved-config.yaml'));
    expect(s.template).toBe('qa');
    expect(s.columns).toMatchObject({ text: 'passage', question: 'query', answer: 'answer' });
    const o = dataSettings({ run, template: 'summarization', column: ['summary=abstract'] }, []);
    expect(o.template).toBe('summarization');
    expect(o.columns).toMatchObject({ text: 'passage', summary: 'abstract' });
    expect(dataSettings({}, [join(ROOT, 'models/fin-base')]).from).toBeNull();
    expect(inputErrorOf(() => dataSettings({ run: tmp() }, [])).message).toMatch(
      /--run: no resolved-config\.yaml in the run folder/,
    );
    expect(inputErrorOf(() => dataSettings({ template: 'alpacca' }, [])).message).toMatch(
      /^--template: expected one of auto, .*alpaca/,
    );
    expect(inputErrorOf(() => dataSettings({ column: ['txt=body'] }, [])).message).toMatch(
      /^--column: unknown field "txt"/,
    );
    for (const field of ['constructor', 'toString', '__proto__'])
      expect(inputErrorOf(() => dataSettings({ column: [`${field}=body`] }, [])).message).toMatch(
        new RegExp(`^--column: unknown field "${field}"`),
      );
  });
});

describe('eval reads what training reads', () => {
  it('CSV and JSON eval files read through the data readers; perplexity reads the mapped text column', async () => {
    const dir = tmp();
    const csv = join(dir, 'e.csv');
    writeFileSync(csv, 'id,body\n1,"Revenue rose, again."\n2,Costs fell.\n');
    const r = await readDataRows(csv);
    // CSV rows are numbered as a spreadsheet shows them (the header is row 1).
    expect(r).toEqual([
      { row: 2, value: { id: '1', body: 'Revenue rose, again.' } },
      { row: 3, value: { id: '2', body: 'Costs fell.' } },
    ]);
    expect(textsOf(r, csv, 'body')).toEqual(['Revenue rose, again.', 'Costs fell.']);
    expect(() => textsOf(r, csv)).toThrow(
      /e\.csv, row 2, key 'text': expected a "text" string, got no "text" field \(fields found: id, body; map another with --column text=COLUMN\)/,
    );
    const json = join(dir, 'e.json');
    writeFileSync(json, JSON.stringify([{ text: 'a' }, { text: 'b' }]));
    expect(textsOf(await readDataRows(json), json)).toEqual(['a', 'b']);
    const other = join(dir, 'e.txt');
    writeFileSync(other, '{"text": "a"}\n');
    expect(await readDataRows(other)).toEqual([{ row: 1, value: { text: 'a' } }]);
  });

  it('training records (Alpaca, mapped columns) get the training prompt and their response as the reference', () => {
    const ctx = {
      columns: DEFAULT_COLUMNS,
      template: 'auto' as const,
      preprocess: DEFAULT_PREPROCESS,
      tokenizer: null,
    };
    const [a] = buildEvalItems(
      rows([{ instruction: 'Give the revenue.', input: 'Revenue was $5 million.', output: '$5 million' }]),
      'generation',
      'a.csv',
    );
    expect(a).toMatchObject({ kind: 'template', reference: '$5 million', source: 'Revenue was $5 million.' });
    expect(a!.prompt).toBe(
      applyTemplate(
        { instruction: 'Give the revenue.', input: 'Revenue was $5 million.', output: '$5 million' },
        ctx,
        'a',
        1,
      ).prompt,
    );
    const columns = { ...DEFAULT_COLUMNS, text: 'passage', question: 'query', answer: 'reply' };
    const rec = { passage: 'Revenue was $5 million.', query: 'Revenue?', reply: '$5 million' };
    const [m] = buildEvalItems(rows([rec]), 'generation', 'm.csv', { columns, template: 'qa' });
    expect(m!.prompt).toBe(applyTemplate(rec, { ...ctx, columns, template: 'qa' }, 'm', 1).prompt);
    expect(m!.reference).toBe('$5 million');
    // A mapped record missing its field: the message names the columns found and the mapping.
    expect(
      inputErrorOf(() =>
        buildEvalItems(rows([{ passage: 'x', query: 'q' }]), 'generation', 'm.csv', { columns, template: 'qa' }),
      ).message,
    ).toMatch(
      /m\.csv, row 1: missing field 'reply' \(mapped from 'answer'\) required by template qa; columns found: passage, query; template qa needs text \(column 'passage'\), question \(column 'query'\), answer \(column 'reply'\)/,
    );
  });

  it('a misspelt field names the field the task needs, not another one (contxt → context)', () => {
    const e = inputErrorOf(() =>
      buildEvalItems(
        rows([{ id: 'a', contxt: 'Revenue was $5m.', question: 'Revenue?', answer: '$5m' }]),
        'generation',
        'qa.jsonl',
      ),
    );
    expect(e.message).toBe(
      "qa.jsonl, row 1, key 'context': a qa record needs its passage in 'context' (or 'text'), found fields id, contxt, question, answer; did you mean 'context' for 'contxt'?",
    );
    const s = inputErrorOf(() =>
      buildEvalItems(rows([{ id: 'a', sorce: 'Revenue was $5m.', summary: 'Up.' }]), 'generation', 'sum.jsonl'),
    );
    expect(s.message).toMatch(
      /sum\.jsonl, row 1, key 'text': a summarization record needs its passage in 'text' \(or 'source'\), found fields id, sorce, summary; did you mean 'source' for 'sorce'\?/,
    );
  });
});
