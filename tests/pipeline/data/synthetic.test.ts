// The synthetic financial corpus and task generator: reproducible from its seed, figures that agree
// inside a document, answers quoted from their passage, balanced sentiment labels, and company name
// spaces that keep evaluation companies out of training data.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import {
  ALL_TASK_KINDS,
  DOCUMENT_KINDS,
  generateCorpus,
  generateTasks,
  syntheticRecords,
  type TaskRecord,
  writeSyntheticJsonl,
} from '../../../src/pipeline/data/synthetic.js';

const MONEY = String.raw`\$(\d+(?:\.\d+)?) (million|billion)`;
const millions = (v: string, unit: string) => Number(v) * (unit === 'billion' ? 1000 : 1);

/** Every "revenue ... <growth>% to $A from $B" / "$A ..., up|down G% from $B" statement in a text. */
function revenueClaims(text: string): { growth: number; now: number; before: number }[] {
  const out: { growth: number; now: number; before: number }[] = [];
  const a = new RegExp(
    String.raw`revenue for [^.]*? (rose|increased|grew|climbed|fell|declined|decreased|dropped) (\d+)% to ${MONEY} from ${MONEY}`,
    'g',
  );
  for (const m of text.matchAll(a)) {
    const sign = ['rose', 'increased', 'grew', 'climbed'].includes(m[1]!) ? 1 : -1;
    out.push({ growth: sign * Number(m[2]), now: millions(m[3]!, m[4]!), before: millions(m[5]!, m[6]!) });
  }
  const b = new RegExp(String.raw`revenue was ${MONEY} in [^,]*, (up|down) (\d+)% from ${MONEY}`, 'g');
  for (const m of text.matchAll(b))
    out.push({
      growth: (m[3] === 'up' ? 1 : -1) * Number(m[4]),
      now: millions(m[1]!, m[2]!),
      before: millions(m[5]!, m[6]!),
    });
  return out;
}

describe('synthetic financial corpus', () => {
  it('the same seed gives the same documents; another seed other documents', () => {
    const a = [...generateCorpus({ seed: 7, documents: 50 })];
    const b = [...generateCorpus({ seed: 7, documents: 50 })];
    const c = [...generateCorpus({ seed: 8, documents: 50 })];
    expect(b).toEqual(a);
    expect(c.map((d) => d.text)).not.toEqual(a.map((d) => d.text));
    const t1 = [...generateTasks({ seed: 3, perTask: 20 })];
    expect([...generateTasks({ seed: 3, perTask: 20 })]).toEqual(t1);
  });

  it('draws every document kind, with varied wording, and figures that agree inside each document', () => {
    const docs = [...generateCorpus({ seed: 1, documents: 600 })];
    expect(new Set(docs.map((d) => d.kind))).toEqual(new Set(DOCUMENT_KINDS));
    expect(new Set(docs.map((d) => d.text)).size).toBe(docs.length);
    let checked = 0;
    for (const d of docs) {
      for (const c of revenueClaims(d.text)) {
        // Revenue is prior × (1 + growth), each rounded to the digits shown: a few tenths of a
        // percent at three significant digits, plus the growth's own rounding to a whole percent.
        const implied = (c.now / c.before - 1) * 100;
        expect(Math.abs(implied - c.growth), `${d.kind}: ${d.text}`).toBeLessThan(1.2);
        checked++;
      }
      if (d.kind === 'news') {
        // The headline's growth figure is the body's.
        const head = /revenue (rises|falls) (\d+)%/.exec(d.text.split('\n')[0]!);
        if (head) expect(d.text.split('\n')[1]!).toMatch(new RegExp(`\\b${head[2]}%`));
      }
    }
    expect(checked).toBeGreaterThan(150);
  });

  it('tasks: answers quoted from their passage, summaries restating its figures, balanced sentiment labels', () => {
    const recs = [...generateTasks({ seed: 5, perTask: 90 })];
    const by = (k: TaskRecord['kind']) => recs.filter((r) => r.kind === k);
    expect(by('sentiment')).toHaveLength(90);
    expect(by('figures')).toHaveLength(90);
    expect(by('summary')).toHaveLength(90);
    const labels = by('sentiment').map((r) => (r.kind === 'sentiment' ? r.sentiment : ''));
    for (const l of ['positive', 'negative', 'neutral']) expect(labels.filter((x) => x === l)).toHaveLength(30);
    for (const r of by('figures')) {
      if (r.kind !== 'figures') continue;
      expect(r.text, r.question).toContain(r.answer);
      expect(r.answer).toMatch(/^\$\d|^\d+(\.\d+)?%$/);
    }
    for (const r of by('summary')) {
      if (r.kind !== 'summary') continue;
      for (const num of r.summary.match(/\$?\d+(\.\d+)?%?/g) ?? [])
        expect(r.text, `${num} of "${r.summary}"`).toContain(num);
      expect(r.text, 'the company the summary names').toContain(/^(.*?)'s? /.exec(r.summary)![1]!);
    }
    // Positive and negative passages say which way revenue or guidance went.
    for (const r of by('sentiment')) {
      if (r.kind !== 'sentiment') continue;
      if (r.sentiment === 'positive')
        expect(r.text).toMatch(/rose|increased|grew|climbed|up \d|raised|beating|ahead of|above/);
      if (r.sentiment === 'negative')
        expect(r.text).toMatch(/fell|declined|decreased|dropped|down \d|lowered|cut|below|short of|missing/);
    }
  });

  it('the other template kinds: worded analysis, transcript turns, chat and raw documents, figures taken from their passage', () => {
    const recs = [...generateTasks({ seed: 6, perTask: 60, tasks: ALL_TASK_KINDS })];
    // Interleaved in the order given, one of each kind per round.
    expect(recs.slice(0, ALL_TASK_KINDS.length).map((r) => r.kind)).toEqual(ALL_TASK_KINDS);
    const numbers = (t: string) => t.match(/\$?\d[\d,]*(\.\d+)?%?/g) ?? [];
    const fields = new Map<string, string>();
    for (const r of recs) {
      const { kind, ...rest } = r;
      fields.set(kind, Object.keys(rest).sort().join(','));
      if (r.kind === 'analysis') {
        expect(
          r.analysis.startsWith(`Sentiment: ${r.sentiment[0]!.toUpperCase()}${r.sentiment.slice(1)}. Key figures: `),
          r.analysis,
        ).toBe(true);
        for (const n of numbers(r.analysis)) expect(r.text, `${n} of "${r.analysis}"`).toContain(n);
      } else if (r.kind === 'transcript') {
        // `Speaker: text` turns (speaker_turns preprocessing keeps them), ending with an analyst's question.
        for (const line of r.text.split('\n')) expect(line).toMatch(/^[A-Z][^:\n]*: \S/);
        expect(r.text).toMatch(/\?$/);
        expect(r.continuation).toMatch(/^[A-Z][a-z]+ [A-Z][a-z]+: \S/);
      } else if (r.kind === 'chat') {
        expect(r.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
        const [, user, assistant] = r.messages;
        expect(assistant!.content).toMatch(/^(Positive|Negative|Neutral)\. /);
        for (const n of numbers(assistant!.content))
          expect(user!.content, `${n} of "${assistant!.content}"`).toContain(n);
      } else if (r.kind === 'completion') {
        expect(['news', 'guidance']).toContain(r.source);
        expect(r.text.length).toBeGreaterThan(80);
      }
    }
    expect(Object.fromEntries(fields)).toEqual({
      sentiment: 'sentiment,task,text',
      figures: 'answer,question,task,text',
      summary: 'source,summary,task,text',
      analysis: 'analysis,sentiment,source,task,text',
      transcript: 'continuation,source,task,text',
      chat: 'messages,source,task',
      completion: 'source,task,text',
    });
    const labels = recs.flatMap((r) => (r.kind === 'analysis' ? [r.sentiment] : []));
    for (const l of ['positive', 'negative', 'neutral']) expect(labels.filter((x) => x === l)).toHaveLength(20);
  });

  it('the evaluation layout exists for sentiment, figures and summary only: refused before anything is written', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-synth-'));
    const out = join(dir, 'chat.jsonl');
    await expect(
      writeSyntheticJsonl(out, { kind: 'tasks', seed: 1, count: 3, evalLayout: true, tasks: ['sentiment', 'chat'] }),
    ).rejects.toThrow(InputError);
    await expect(
      writeSyntheticJsonl(out, { kind: 'tasks', seed: 1, count: 3, evalLayout: true, tasks: ['chat'] }),
    ).rejects.toThrow(/--eval writes the evaluation layout of sentiment, figures, summary; chat has none/);
    expect(existsSync(out)).toBe(false);
  });

  it('train, validation and evaluation splits use disjoint companies', () => {
    const names = (split: 'train' | 'val' | 'eval') => {
      const out = new Set<string>();
      for (const r of generateTasks({ seed: 11, perTask: 150, split })) {
        const m = /^([A-Z][a-z]+ [A-Z][a-z]+)/.exec(
          r.kind === 'summary' || r.kind === 'figures' || r.kind === 'sentiment'
            ? r.text.replace(/^(In [^,]*, |[^:]*: )/, '')
            : '',
        );
        if (m) out.add(m[1]!.split(' ')[0]!);
      }
      return out;
    };
    const train = names('train');
    const evalSet = names('eval');
    const val = names('val');
    expect(train.size).toBeGreaterThan(20);
    expect(evalSet.size).toBeGreaterThan(10);
    for (const n of evalSet) expect(train.has(n), n).toBe(false);
    for (const n of val) expect(train.has(n), n).toBe(false);
  });

  it('writes JSONL atomically in the training and the evaluation layouts; `finllm data generate` checks its flags', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-synth-'));
    const n = await writeSyntheticJsonl(join(dir, 'c.jsonl'), { kind: 'corpus', seed: 1, count: 30 });
    const lines = readFileSync(join(dir, 'c.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, string>);
    expect(n).toBe(30);
    expect(lines[0]).toMatchObject({ id: 'train-00001', task: 'completion' });
    const ev = [...syntheticRecords({ kind: 'tasks', seed: 2, count: 2, split: 'eval', evalLayout: true })];
    expect(Object.keys(ev[0]!).sort()).toEqual(['id', 'label', 'text']);
    expect(Object.keys(ev[1]!).sort()).toEqual(['answer', 'context', 'id', 'question']);
    expect(Object.keys(ev[2]!).sort()).toEqual(['id', 'source', 'source_kind', 'summary']);
    const cli = join(process.cwd(), 'dist/src/cli/main.js');
    const bad = spawnSync(
      process.execPath,
      [cli, 'data', 'generate', '--kind', 'tasks', '--tasks', 'sentiment,poems', '-o', join(dir, 'x.jsonl')],
      { encoding: 'utf8' },
    );
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/--tasks: unknown task "poems"/);
    expect(existsSync(join(dir, 'x.jsonl'))).toBe(false);
  });
});

describe('committed generated data', () => {
  // scripts/generate-data.sh is the one list of the commands that wrote data/: run each of its
  // `finllm data generate` lines through the CLI into a temp folder and compare the bytes.
  const script = readFileSync(join(process.cwd(), 'scripts/generate-data.sh'), 'utf8');
  const commands = script
    .split('\n')
    .filter((l) => l.startsWith('finllm data generate '))
    .map((l) => l.split(/\s+/).slice(1));
  const outOf = (args: string[]) => args[args.indexOf('-o') + 1]!;

  it('scripts/generate-data.sh writes every committed JSONL file under data/, once', () => {
    const committed = execFileSync('git', ['ls-files', 'data'], { encoding: 'utf8' })
      .split('\n')
      .filter((f) => /\.jsonl$/.test(f))
      .sort();
    expect(committed.length).toBeGreaterThanOrEqual(7);
    expect(commands.map(outOf).sort()).toEqual(committed);
  });

  it('regenerating with its commands reproduces the committed files byte for byte', () => {
    const cli = join(process.cwd(), 'dist/src/cli/main.js');
    const dir = mkdtempSync(join(tmpdir(), 'finllm-regen-'));
    for (const args of commands) {
      const file = outOf(args);
      const out = join(dir, file.replaceAll('/', '_'));
      const run = spawnSync(process.execPath, [cli, ...args.map((a) => (a === file ? out : a))], { encoding: 'utf8' });
      expect(run.status, `${args.join(' ')}: ${run.stderr}`).toBe(0);
      expect(
        readFileSync(out).equals(readFileSync(join(process.cwd(), file))),
        `${file} regenerates byte for byte`,
      ).toBe(true);
    }
  });
});
