import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { register } from '../../../src/cli/data.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import { loadConfig } from '../../../src/pipeline/config.js';
import { findDuplicates } from '../../../src/pipeline/data/dedup.js';
import { createDataLoader, prepareData } from '../../../src/pipeline/data/prepare.js';
import { formatReport, saveReport } from '../../../src/pipeline/data/stats.js';
import { IGNORE_INDEX } from '../../../src/pipeline/data/types.js';
import { inputErrorFrom } from '../../helpers/input-error.js';
import { dataConfig, jsonl, ROOT, TINY_MODEL, tempDir, tinyTokenizer } from './helpers.js';

const tok = tinyTokenizer();

const PASSAGE = (i: number) =>
  `Company ${['Alpha', 'Beta', 'Gamma', 'Delta', 'Epsilon', 'Zeta', 'Eta', 'Theta', 'Iota', 'Kappa'][i % 10]} number ${i} reported revenue of $${i}.31 billion, ` +
  `with margins ${i % 2 ? 'up' : 'down'} ${i * 7} bps and EPS of €0.${i}2 in quarter ${(i % 4) + 1}; ${'management discussed outlook and costs '.repeat((i % 3) + 1)}`;

describe('prepareData', () => {
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => (t = tempDir()));
  afterEach(() => t.cleanup());

  it('fail policy lists the first problems with file and row numbers', async () => {
    const rows = [
      { task: 'qa', text: PASSAGE(1), question: 'Revenue?', answer: '$1.31 billion' },
      { task: 'qa', text: PASSAGE(2), question: 'Revenue?' },
      { task: 'summarization', text: 42, summary: 'x' },
      { task: 'summarization', text: 'Broken \uFFFD text', summary: 'x' },
      { task: 'summarization', text: '', summary: 'x' },
    ];
    const train = t.write('train.jsonl', jsonl(rows) + '{not json}\n');
    const e = await inputErrorFrom(prepareData(dataConfig(t.dir, train), tok));
    expect(e.message).toMatch(/5 invalid row\(s\)/);
    expect(e.message).toMatch(/train\.jsonl row 2: missing field 'answer'/);
    expect(e.message).toMatch(/row 3: field 'text' must be text for template summarization, got number 42/);
    expect(e.message).toMatch(/row 4: field 'text' contains U\+FFFD/);
    expect(e.message).toMatch(/row 5: field 'text' is empty/);
    expect(e.message).toMatch(/row 6: invalid JSON/);
    expect(e.message).toMatch(/on_invalid/);
  });

  it('skip policy drops bad rows, dedups exact and near duplicates, and reports', async () => {
    const good = Array.from({ length: 12 }, (_, i) => ({
      task: 'summarization',
      source: i % 2 ? 'news' : 'filing',
      text: PASSAGE(i + 1),
      summary: `Summary ${i}.`,
    }));
    const exactDup = { ...good[3]!, text: `  ${good[3]!.text.toUpperCase()}  ` }; // same after normalization
    const long = {
      task: 'summarization',
      source: 'news',
      summary: 'Long.',
      text:
        PASSAGE(13) +
        ' The board also approved a quarterly dividend of $0.25 per share and reaffirmed its full-year guidance, with no change to capital allocation plans or the share repurchase authorization.',
    };
    const nearDup = { ...long, text: long.text + ' Indeed.' };
    const rows = [...good, { task: 'qa', text: 'x' }, exactDup, long, nearDup];
    const train = t.write('train.jsonl', jsonl(rows));
    const out = await prepareData(dataConfig(t.dir, train, ['data.on_invalid=skip', 'data.val_split=0']), tok);
    const r = out.report;
    expect(r.train.rowsRead).toBe(16);
    expect(r.train.examples).toBe(13);
    expect(r.train.skipped).toEqual({ missing_field: 1 });
    expect(r.train.duplicatesDropped).toEqual({ exact: 1, near: 1 });
    expect(r.problems.find((p) => p.kind === 'duplicate')!.message).toMatch(/row 14: duplicate of row 4/);
    expect(r.problems.find((p) => p.kind === 'near_duplicate')!.message).toMatch(
      /row 16: near duplicate \(Jaccard 0\.9\d\) of row 15/,
    );
    expect(r.train.perTask).toEqual({ summarization: 13 });
    expect(r.train.perSource).toEqual({ news: 7, filing: 6 });
    expect(out.val).toHaveLength(0);
    const table = formatReport(r);
    expect(table).toMatch(/exact duplicates dropped\s+1/);
    expect(table).toMatch(/length p90/);
    const path = join(t.dir, 'rep/report.json');
    saveReport(r, path);
    expect(JSON.parse(readFileSync(path, 'utf8')).train.examples).toBe(13);
  });

  it('reports truncation and refuses a dataset whose labels are all masked', async () => {
    const rows = Array.from({ length: 4 }, (_, i) => ({
      task: 'qa',
      text: PASSAGE(i + 1),
      question: 'Revenue?',
      answer: 'A long answer with $2.31 billion. '.repeat(4).trim(),
    }));
    const train = t.write('train.jsonl', jsonl(rows));
    const full = await prepareData(dataConfig(t.dir, train, ['data.val_split=0']), tok);
    const lengths = full.train.map((e) => e.inputIds.length).sort((a, b) => a - b);
    // cut just inside the response of the shortest: all truncated, none empty
    const promptLen = (i: number) => full.train[i]!.labels.findIndex((l) => l !== IGNORE_INDEX);
    const cut = Math.max(...full.train.map((_, i) => promptLen(i))) + 3;
    expect(cut).toBeLessThan(lengths[0]!);
    const tr = await prepareData(dataConfig(t.dir, train, ['data.val_split=0', `data.max_seq_len=${cut}`]), tok);
    expect(tr.report.train.truncated).toBe(4);
    expect(tr.report.train.truncationRate).toBe(1);
    expect(tr.report.problemCounts.truncated).toBe(4);
    for (const ex of tr.train) expect(ex.inputIds.length).toBe(cut);
    // a window the prompts fill completely: every label masked
    const e = await inputErrorFrom(
      prepareData(dataConfig(t.dir, train, ['data.val_split=0', 'data.max_seq_len=16', 'data.on_invalid=skip']), tok),
    );
    expect(e.message).toMatch(/every training example has all labels masked after truncation to data\.max_seq_len 16/);
    const e2 = await inputErrorFrom(
      prepareData(dataConfig(t.dir, train, ['data.val_split=0', 'data.max_seq_len=16']), tok),
    );
    expect(e2.message).toMatch(/no tokens left to train on after truncation/);
  });

  it('holds out a seeded validation split when there is no val file; CSV with a column mapping', async () => {
    const header = 'body,abstract,kind\n';
    const lines = Array.from(
      { length: 20 },
      (_, i) => `"${PASSAGE(i + 1).replace(/"/g, '""')}","Sum ""${i}"", ok.",summary`,
    ).join('\n');
    const train = t.write('train.csv', header + lines + '\n');
    const sets = [
      'data.val_split=0.2',
      'data.columns.text=body',
      'data.columns.summary=abstract',
      'data.columns.task=kind',
    ];
    const a = await prepareData(dataConfig(t.dir, train, sets), tok);
    expect(a.train).toHaveLength(16);
    expect(a.val).toHaveLength(4);
    expect(a.report.settings.valSource).toBe('split');
    const b = await prepareData(dataConfig(t.dir, train, sets), tok);
    expect(b.val.map((e) => e.row)).toEqual(a.val.map((e) => e.row));
    expect(new Set([...a.train, ...a.val].map((e) => e.row)).size).toBe(20);
    expect(a.train.every((e) => e.row >= 2 && e.row <= 21)).toBe(true); // CSV rows: header is row 1
  });

  it('drops validation rows that also occur in train', async () => {
    const rows = Array.from({ length: 6 }, (_, i) => ({
      task: 'summarization',
      text: PASSAGE(i + 1),
      summary: `S${i}.`,
    }));
    const train = t.write('train.jsonl', jsonl(rows));
    const val = t.write('val.jsonl', jsonl([rows[2], { task: 'summarization', text: PASSAGE(40), summary: 'New.' }]));
    const out = await prepareData(dataConfig(t.dir, train, [`data.val=${val}`]), tok);
    expect(out.report.valOverlapDropped).toBe(1);
    expect(out.val).toHaveLength(1);
  });

  it('the bundled sample dataset validates cleanly and batches (padded and packed)', async () => {
    const cfg = loadConfig({ file: join(ROOT, 'configs/tiny-sample.yaml'), sets: ['data.max_seq_len=1024'] });
    const out = await prepareData(cfg, tok);
    expect(out.report.train.examples).toBeGreaterThanOrEqual(300);
    expect(out.report.val.examples).toBeGreaterThanOrEqual(40);
    expect(out.report.problemCounts).toEqual({});
    expect(Object.keys(out.report.train.perTask).sort()).toEqual([
      'chat',
      'completion',
      'financial_analysis',
      'qa',
      'summarization',
      'transcript_completion',
    ]);
    // Sentiment and figure records carry no source (data/finetune's layout); the other kinds do.
    expect(new Set(Object.keys(out.report.train.perSource))).toEqual(
      new Set(['(none)', 'earnings_call', 'filing', 'guidance', 'news']),
    );
    for (const packing of [false, true]) {
      const dl = createDataLoader(out.train, { ...cfg, data: { ...cfg.data, packing } }, tok, 'train');
      const b = dl.next();
      expect(b.numTargetTokens).toBeGreaterThan(0);
      expect(b.seqLen).toBeLessThanOrEqual(1024);
      if (packing) expect(b.numExamples).toBeGreaterThan(b.batchSize);
    }
  });

  it('the default config runs its data stage with the bundled tiny model tokenizer, nothing truncated', async () => {
    const cfg = loadConfig({ file: join(ROOT, 'configs/tiny-sample.yaml') });
    const out = await prepareData(cfg, await LlamaTokenizer.load(cfg.model.path));
    expect(out.report.train.truncated).toBe(0);
    expect(out.report.val.truncated).toBe(0);
    expect(out.report.train.tokenLengths.max).toBeLessThanOrEqual(cfg.data.max_seq_len);
  });

  it('sample data: figures survive preprocessing byte-for-byte', async () => {
    const cfg = loadConfig({ file: join(ROOT, 'configs/tiny-sample.yaml'), sets: ['data.max_seq_len=1024'] });
    const out = await prepareData(cfg, tok);
    // decode the (BOS-less) training text of an example and find its figures in the source row
    const rows = readFileSync(cfg.data.train, 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { text?: string });
    const ex = out.train.find((e) => e.task === 'qa')!;
    const src = rows[ex.row - 1]!.text!;
    const figures = src.match(/[$€£]\d[\d,.]*( billion| million)?|\(?\d+\.\d\)?%|\d+ bps/g)!;
    expect(figures.length).toBeGreaterThan(0);
    const textNoSpaces = tok.decode(Array.from(ex.inputIds)).replace(/[\s▁]/g, '');
    for (const f of figures) expect(textNoSpaces).toContain(f.replace(/\s/g, '').replace(/[€£]/g, ''));
  });
});

describe('near-duplicate detection', () => {
  it('flags Jaccard >= threshold, keeps distinct texts', () => {
    const a =
      'the company reported revenue of 2.31 billion up 12.8% year over year driven by strong demand in data center products and services';
    const b = a + ' overall';
    const c =
      'an entirely different passage about bond yields rising 60 bps after the central bank meeting in june with spreads widening';
    const m = findDuplicates([a, c, b], { exact: true, near: true, threshold: 0.9 });
    expect(m).toEqual([{ index: 2, of: 0, kind: 'near_duplicate', similarity: expect.any(Number) }]);
    expect(m[0]!.similarity).toBeGreaterThanOrEqual(0.9);
    expect(findDuplicates([a, b], { exact: true, near: false, threshold: 0.9 })).toEqual([]);
  });
});

describe('finllm data CLI', () => {
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => (t = tempDir()));
  afterEach(() => {
    t.cleanup();
    vi.restoreAllMocks();
  });

  async function run(args: string[]): Promise<string> {
    const program = new Command().exitOverride();
    register(program);
    let out = '';
    vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
      out += String(s);
      return true;
    });
    try {
      await program.parseAsync(['node', 'finllm', ...args]);
    } finally {
      vi.restoreAllMocks();
    }
    return out;
  }

  it('stats prints the table and writes the JSON report', async () => {
    const report = join(t.dir, 'r.json');
    const out = await run([
      'data',
      'stats',
      '--config',
      join(ROOT, 'configs/tiny-sample.yaml'),
      '--tokenizer',
      TINY_MODEL,
      '--set',
      'data.max_seq_len=1024',
      '-o',
      report,
    ]);
    expect(out).toMatch(/rows read\s+350\s+49/);
    expect(out).toMatch(/transcript_completion/);
    expect(JSON.parse(readFileSync(report, 'utf8')).train.rowsRead).toBe(350);
  });

  it('validate throws an InputError naming the rows on bad input', async () => {
    const train = t.write('bad.jsonl', jsonl([{ task: 'qa', text: 'x', question: 'q' }]));
    await expect(
      run([
        'data',
        'validate',
        '--config',
        join(ROOT, 'configs/tiny-sample.yaml'),
        '--tokenizer',
        TINY_MODEL,
        '--set',
        `data.train=${train}`,
        '--set',
        'data.val=null',
      ]),
    ).rejects.toThrow(/bad\.jsonl row 1: missing field 'answer'/);
  });

  it('a missing tokenizer is an InputError naming the file', async () => {
    const e = await inputErrorFrom(
      run(['data', 'validate', '--config', join(ROOT, 'configs/tiny-sample.yaml'), '--tokenizer', t.dir]),
    );
    expect(e.message).toContain(join(t.dir, 'tokenizer.json'));
  });
});
