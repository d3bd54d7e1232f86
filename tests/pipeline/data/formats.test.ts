// Own data in the formats people have it in: Alpaca and ShareGPT records beside OpenAI messages,
// in JSONL, JSON and CSV; the one line saying what was detected; errors that name the columns
// found, what the template needs and the setting that fits; the validation file that belongs to
// the training file; a warning for a tiny validation set.
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_COLUMNS, loadConfig, type ResolvedConfig } from '../../../src/pipeline/config.js';
import { columnHint, suggestColumns } from '../../../src/pipeline/data/columns.js';
import { prepareData } from '../../../src/pipeline/data/prepare.js';
import { readRecords, readRows } from '../../../src/pipeline/data/readers.js';
import { formatReport } from '../../../src/pipeline/data/stats.js';
import { setWarningSink } from '../../../src/warnings.js';
import { inputErrorFrom } from '../../helpers/input-error.js';
import { dataConfig, jsonl, ROOT, tempDir, tinyTokenizer } from './helpers.js';

const tok = tinyTokenizer();

const cfgFor = (dir: string, train: string, extra: string[] = []): ResolvedConfig =>
  dataConfig(dir, train, ['data.dedup.near=false', ...extra]);

const N = 30;
const alpaca = Array.from({ length: N }, (_, i) => ({
  instruction: `Give the revenue of company ${i}.`,
  input: i % 3 === 0 ? '' : `Company ${i} reported revenue of $${i}.5 million in quarter ${(i % 4) + 1}.`,
  output: `$${i}.5 million`,
}));
const csvCell = (s: string) => (/[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s);
const toCsv = (cols: string[], rows: Record<string, string>[]) =>
  [cols.join(','), ...rows.map((r) => cols.map((c) => csvCell(r[c] ?? '')).join(','))].join('\n') + '\n';

const chats = Array.from({ length: N }, (_, i) => [
  { role: 'system', content: 'You answer questions about filings.' },
  { role: 'user', content: `What did company ${i} earn in quarter ${(i % 4) + 1}?` },
  { role: 'assistant', content: `It earned $${i}.2 million.` },
]);
const SHAREGPT_FROM: Record<string, string> = { system: 'system', user: 'human', assistant: 'gpt' };
const sharegpt = chats.map((m) => ({
  conversations: m.map((x) => ({ from: SHAREGPT_FROM[x.role]!, value: x.content })),
}));

describe('record formats', () => {
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => (t = tempDir()));
  afterEach(() => t.cleanup());

  it('Alpaca records read alike from JSONL, a JSON array and CSV, with one line saying what was detected', async () => {
    const files = {
      jsonl: t.write('a.jsonl', jsonl(alpaca)),
      json: t.write('a.json', JSON.stringify(alpaca, null, 2)),
      csv: t.write('a.csv', toCsv(['instruction', 'input', 'output'], alpaca)),
    };
    const prepared = await Promise.all(
      Object.values(files).map((f) => prepareData(cfgFor(t.dir, f, ['data.val_split=0']), tok)),
    );
    for (const p of prepared) {
      expect(p.train).toHaveLength(N);
      expect(p.train.map((e) => e.task)).toEqual(Array(N).fill('alpaca'));
    }
    // Same token ids and labels whatever the file format.
    for (const p of prepared.slice(1)) {
      expect(p.train.map((e) => Array.from(e.inputIds))).toEqual(prepared[0]!.train.map((e) => Array.from(e.inputIds)));
      expect(p.train.map((e) => Array.from(e.labels))).toEqual(prepared[0]!.train.map((e) => Array.from(e.labels)));
    }
    // The prompt is the instruction layout, with the Input section only when input is non-empty.
    const first = tok.decode(Array.from(prepared[0]!.train[1]!.inputIds));
    expect(first).toContain('### Instruction:\nGive the revenue of company 1.\n\n### Input:\nCompany 1 reported');
    expect(first).toContain('### Response:\n$1.5 million');
    expect(tok.decode(Array.from(prepared[0]!.train[0]!.inputIds))).not.toContain('### Input:');
    const csvReport = formatReport(prepared[2]!.report);
    expect(csvReport.split('\n').filter((l) => l.startsWith('read '))).toEqual([
      `read ${files.csv} (csv, ${N} rows): Alpaca records (instruction, input, output)`,
    ]);
    expect(formatReport(prepared[1]!.report)).toMatch(/read .*a\.json \(json, 30 rows\): Alpaca records/);
  });

  it('ShareGPT conversations train exactly like the same OpenAI messages, in JSONL and JSON', async () => {
    const m = await prepareData(
      cfgFor(t.dir, t.write('m.jsonl', jsonl(chats.map((messages) => ({ messages })))), ['data.val_split=0']),
      tok,
    );
    const s1 = await prepareData(cfgFor(t.dir, t.write('s.jsonl', jsonl(sharegpt)), ['data.val_split=0']), tok);
    const s2 = await prepareData(cfgFor(t.dir, t.write('s.json', JSON.stringify(sharegpt)), ['data.val_split=0']), tok);
    expect(m.train).toHaveLength(N);
    for (const s of [s1, s2]) {
      expect(s.train.map((e) => Array.from(e.inputIds))).toEqual(m.train.map((e) => Array.from(e.inputIds)));
      expect(s.train.map((e) => Array.from(e.labels))).toEqual(m.train.map((e) => Array.from(e.labels)));
    }
    expect(formatReport(m.report)).toMatch(/OpenAI chat records \(messages: role\/content\)/);
    expect(formatReport(s1.report)).toMatch(/ShareGPT records \(conversations: from\/value\)/);
  });

  it('ShareGPT in CSV (the JSON array in a cell) and an unknown speaker named with its row', async () => {
    const f = t.write(
      's.csv',
      toCsv(
        ['conversations'],
        sharegpt.map((r) => ({ conversations: JSON.stringify(r.conversations) })),
      ),
    );
    const p = await prepareData(cfgFor(t.dir, f, ['data.val_split=0']), tok);
    expect(p.train).toHaveLength(N);
    const bad = t.write(
      'bad.jsonl',
      jsonl([
        {
          conversations: [
            { from: 'human', value: 'hi' },
            { from: 'robot', value: 'yo' },
          ],
        },
      ]),
    );
    const e = await inputErrorFrom(prepareData(cfgFor(t.dir, bad), tok));
    expect(e.message).toMatch(
      /bad\.jsonl row 1: field 'conversations\[1\]\.from' is "robot"; expected one of system, human, gpt/,
    );
  });

  it('a JSON array: a non-object element is flagged on its row; broken JSON names the line; .json with JSON Lines still reads', async () => {
    const rows = [];
    for await (const r of readRows(t.write('x.json', '[{"text": "a"}, 3, {"text": "b"}]'), null)) rows.push(r);
    expect(rows.map((r) => r.row)).toEqual([1, 2, 3]);
    expect(rows[1]!.readProblems[0]!.message).toMatch(/expected an object for each array element, got 3/);
    await expect(readRecords(t.write('y.json', '[\n{"text": "a"},\n{"text": }\n]'))).rejects.toThrow(
      /y\.json: invalid JSON (at line 3 )?\(expected an array of objects\)/,
    );
    expect(await readRecords(t.write('z.json', '{"text": "a"}\n{"text": "b"}\n'))).toEqual([
      { row: 1, value: { text: 'a' } },
      { row: 2, value: { text: 'b' } },
    ]);
  });
});

describe('errors about a record name the columns found, what the template needs and the setting that fits', () => {
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => (t = tempDir()));
  afterEach(() => t.cleanup());

  const rows = Array.from({ length: N }, (_, i) => ({
    passage: `Company ${i} had revenue of $${i}.1 million.`,
    query: `Revenue of company ${i}?`,
    reply: `$${i}.1 million`,
  }));

  it('a CSV whose columns fit no template: the message lists them and the exact data.template / data.columns setting; that setting then works', async () => {
    const f = t.write('own.csv', toCsv(['passage', 'query', 'reply'], rows));
    const e = await inputErrorFrom(prepareData(cfgFor(t.dir, f), tok));
    expect(e.message).toMatch(/own\.csv row 2: missing field 'text' required by template completion/);
    expect(e.message).toContain("no row is usable as configured, so 'skip' would leave nothing");
    expect(e.message).not.toContain("set it to 'skip'");
    expect(e.message).toContain(
      'own.csv: columns found: passage, query, reply; template completion needs prompt, response',
    );
    expect(e.message).toContain(
      'to read these columns set data.template: qa, data.columns: {text: passage, question: query, answer: reply} ' +
        '(--set data.template=qa --set data.columns.text=passage --set data.columns.question=query --set data.columns.answer=reply)',
    );
    const fixed = await prepareData(
      cfgFor(t.dir, f, [
        'data.template=qa',
        'data.columns.text=passage',
        'data.columns.question=query',
        'data.columns.answer=reply',
        'data.val_split=0',
      ]),
      tok,
    );
    expect(fixed.train).toHaveLength(N);
    expect(tok.decode(Array.from(fixed.train[3]!.inputIds))).toContain(
      'Company 3 had revenue of $3.1 million.\n\nQuestion: Revenue of company 3?',
    );
  });

  it('a mapped column that is missing is named with its mapping; with no fitting template the hint shows how to map', () => {
    const cols = { ...DEFAULT_COLUMNS, text: 'body' };
    expect(columnHint(['body', 'headline_x'], cols, 'summarization')).toMatch(
      /^columns found: body, headline_x; template summarization needs text \(column 'body'\), summary; /,
    );
    const generic = columnHint(['foo', 'bar'], DEFAULT_COLUMNS, 'auto');
    expect(generic).toMatch(
      /^columns found: foo, bar; map your columns .* data\.template: completion, data\.columns: \{prompt: <prompt column>, response: <answer column>\}/,
    );
    expect(suggestColumns(['instruction', 'context', 'response'])).toEqual({
      template: 'alpaca',
      columns: { output: 'response', input: 'context' },
    });
    expect(suggestColumns(['doc', 'x'])).toBeNull();
  });
});

describe('validation data', () => {
  let t: ReturnType<typeof tempDir>;
  let warnings: string[];
  beforeEach(() => {
    t = tempDir();
    warnings = [];
    setWarningSink((m) => warnings.push(m));
  });
  afterEach(() => {
    setWarningSink(null);
    t.cleanup();
  });

  it("setting data.train with --set drops the config file's data.val, with a notice; setting both keeps it", () => {
    const own = t.write('own.csv', toCsv(['instruction', 'input', 'output'], alpaca));
    const cfg = loadConfig({ file: join(ROOT, 'configs/default.yaml'), sets: [`data.train=${own}`], cwd: t.dir });
    expect(cfg.data.val).toBeNull();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /^data\.val \(.*data\/finetune\/val\.jsonl, from .*default\.yaml\) is not used because data\.train was set by --set data\.train=.*own\.csv: validation is held out from data\.train instead \(data\.val_split 0\.05\)/,
    );
    setWarningSink((m) => warnings.push(m));
    warnings.length = 0;
    const both = loadConfig({
      file: join(ROOT, 'configs/default.yaml'),
      sets: [`data.train=${own}`, `data.val=${own}`],
      cwd: t.dir,
    });
    expect(both.data.val).toBe(own);
    const plain = loadConfig({ file: join(ROOT, 'configs/default.yaml'), cwd: t.dir });
    expect(plain.data.val).toBe(join(ROOT, 'data/finetune/val.jsonl'));
    expect(warnings).toEqual([]);
  });

  it('a validation set under 20 examples is warned about in the report; 20 or more is not', async () => {
    const forty = Array.from({ length: 40 }, (_, i) => ({
      ...alpaca[i % N]!,
      instruction: `Give the revenue of company ${i}.`,
    }));
    const small = await prepareData(cfgFor(t.dir, t.write('a.jsonl', jsonl(forty)), ['data.val_split=0.05']), tok);
    expect(small.val).toHaveLength(2);
    expect(small.report.warnings).toHaveLength(1);
    expect(small.report.warnings![0]).toMatch(
      /^only 2 validation example\(s\) \(\d+ target tokens\) from data\.val_split 0\.05 of 40: the validation loss will be noisy; use at least 20/,
    );
    expect(formatReport(small.report)).toContain('warning: only 2 validation example(s)');
    const big = Array.from({ length: 400 }, (_, i) => ({
      ...alpaca[i % N]!,
      instruction: `Give the revenue of company ${i}.`,
    }));
    const ok = await prepareData(cfgFor(t.dir, t.write('b.jsonl', jsonl(big)), ['data.val_split=0.05']), tok);
    expect(ok.val).toHaveLength(20);
    expect(ok.report.warnings).toEqual([]);
  });
});
