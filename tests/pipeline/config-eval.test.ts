// The optional `eval` section of the config (read by `finllm pipeline` only): defaults, path
// resolution, errors that name the key, and configs without it staying valid.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { loadConfig, saveResolvedConfig } from '../../src/pipeline/config.js';
import { evalSuites } from '../../src/pipeline/pipeline.js';

const ROOT = join(import.meta.dirname, '..', '..');
const DEFAULT = join(ROOT, 'configs', 'tiny-sample.yaml');

function tmpConfig(yaml: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'finllm-cfg-eval-'));
  const file = join(dir, 'c.yaml');
  writeFileSync(file, yaml);
  return file;
}

const BASE = 'model: {path: m}\ndata: {train: t.jsonl}\n';

describe('config eval section', () => {
  it('configs/tiny-sample.yaml: three bundled suites with absolute paths, small limits', () => {
    const cfg = loadConfig({ file: DEFAULT });
    const ev = cfg.eval!;
    expect(ev.suites.map((s) => [s.file, s.task])).toEqual([
      [join(ROOT, 'data', 'eval', 'fin-sentiment.jsonl'), 'classification'],
      [join(ROOT, 'data', 'eval', 'fin-figures.jsonl'), 'generation'],
      [join(ROOT, 'data', 'eval', 'fin-summary.jsonl'), 'generation'],
    ]);
    expect(ev.limit).toBe(10);
    expect(ev.max_new_tokens).toBe(24);
    expect(ev.sampling).toEqual({ greedy: true, temperature: 1, top_k: 0, top_p: 1, repetition_penalty: 1, seed: 0 });
    expect(evalSuites(ev).map((s) => s.name)).toEqual(['fin-sentiment', 'fin-figures', 'fin-summary']);
  });

  it('is optional: configs without it validate and get eval = null; the GPU config too', () => {
    expect(loadConfig({ file: tmpConfig(BASE) }).eval).toBeNull();
    expect(loadConfig({ file: join(ROOT, 'configs', 'llama-1b-qlora-gpu.yaml') }).eval).toBeNull();
  });

  it('fills defaults per suite and resolves files against the config folder (--set against the cwd)', () => {
    const file = tmpConfig(
      `${BASE}eval:\n  suites:\n    - {file: e/qa.jsonl}\n    - {file: /abs/s.jsonl, task: classification, name: sent, metrics: [label], limit: 3}\n`,
    );
    const ev = loadConfig({ file }).eval!;
    expect(ev.suites[0]).toEqual({
      name: null,
      file: join(file, '..', 'e', 'qa.jsonl'),
      task: 'generation',
      metrics: null,
      limit: null,
    });
    expect(ev.suites[1]).toEqual({
      name: 'sent',
      file: '/abs/s.jsonl',
      task: 'classification',
      metrics: ['label'],
      limit: 3,
    });
    expect(ev).toMatchObject({ limit: null, max_new_tokens: 64, embeddings: false, alpha: 0.05, resamples: 10000 });
    const cwd = mkdtempSync(join(tmpdir(), 'finllm-cwd-'));
    const viaSet = loadConfig({ file, cwd, sets: ['eval.suites=[{file: x.jsonl}]', 'eval.limit=2'] }).eval!;
    expect(viaSet.suites).toHaveLength(1);
    expect(viaSet.suites[0]!.file).toBe(join(cwd, 'x.jsonl'));
    expect(viaSet.limit).toBe(2);
  });

  it('errors name the key, the value and what was expected', () => {
    const err = (yaml: string, sets: string[] = []): string => {
      try {
        loadConfig({ file: tmpConfig(yaml), sets });
      } catch (e) {
        expect(e).toBeInstanceOf(InputError);
        return (e as Error).message;
      }
      throw new Error('expected an InputError');
    };
    const withSuite = `${BASE}eval:\n  suites: [{file: a.jsonl}]\n`;
    expect(err(withSuite, ['eval.max_new_token=5'])).toMatch(
      /key 'eval.max_new_token'.*did you mean 'eval.max_new_tokens'/,
    );
    expect(err(`${BASE}eval:\n  suites: [{file: a.jsonl, task: qa}]\n`)).toMatch(
      /key 'eval.suites.0.task'.*"qa".*"generation", "classification", "perplexity"/,
    );
    expect(err(`${BASE}eval:\n  suites: [{file: a.jsonl, metrics: [rouge, meteor]}]\n`)).toMatch(
      /key 'eval.suites.0.metrics.1'/,
    );
    expect(err(`${BASE}eval:\n  suites: []\n`)).toMatch(/key 'eval.suites'.*at least 1/);
    expect(err(withSuite, ['eval.sampling.top_p=0'])).toMatch(/key 'eval.sampling.top_p'/);
    expect(err(withSuite, ['eval.limit=0'])).toMatch(/key 'eval.limit'/);
  });

  it('suite names are unique and file-safe', () => {
    const ev = loadConfig({ file: tmpConfig(`${BASE}eval:\n  suites: [{file: a/qa.jsonl}, {file: b/qa.jsonl}]\n`) })
      .eval!;
    expect(() => evalSuites(ev)).toThrow(/two eval suites are named "qa"; set eval.suites\[1\].name/);
    const spaced = loadConfig({ file: tmpConfig(`${BASE}eval:\n  suites: [{file: my set.jsonl}]\n`) }).eval!;
    expect(() => evalSuites(spaced)).toThrow(/letters, digits/);
  });

  it('the resolved config written by the trainer keeps the eval section and reloads to the same', () => {
    const cfg = loadConfig({ file: DEFAULT, sets: ['eval.limit=4'] });
    const dir = mkdtempSync(join(tmpdir(), 'finllm-resolved-'));
    const again = loadConfig({ file: saveResolvedConfig(cfg, dir) });
    expect(again.eval).toEqual(cfg.eval);
  });
});

describe('pipeline pre-flight', () => {
  it('a missing eval file is reported with its config key before any stage runs', async () => {
    const { runPipeline } = await import('../../src/pipeline/pipeline.js');
    const out = mkdtempSync(join(tmpdir(), 'finllm-preflight-'));
    const cfg = loadConfig({
      file: DEFAULT,
      sets: [`output.dir=${out}`, 'eval.suites=[{file: /nonexistent/qa.jsonl}]'],
    });
    await expect(runPipeline(cfg, { quiet: true })).rejects.toThrow(
      /key 'eval.suites.0.file': eval file not found: \/nonexistent\/qa\.jsonl/,
    );
    const { existsSync } = await import('node:fs');
    expect(existsSync(join(out, 'stages'))).toBe(false);
  });
});
