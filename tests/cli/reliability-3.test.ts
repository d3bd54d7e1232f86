// Issue 20, "reliability, round 3": the command-line and training findings, one test per finding,
// through the `finllm` CLI as a user runs it (exit code, the one-line message, the files left
// behind). Library-level checks of the same fixes live beside their modules' tests.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, checkBuilt, expectFailure, expectSuccess, finllm, removeTempDirs, ROOT, tempDir, writeJsonl, type CliResult } from './helpers.js';

beforeAll(checkBuilt);
afterAll(removeTempDirs);

describe('12, 22. tokenizer train: sizes and frequencies out of range are refused; a short vocabulary is said', () => {
  // Plain ASCII text: the alphabet is the 94 printable characters, "▁" and "\n", so the minimum
  // vocabulary is 3 specials + 256 byte tokens + 96 = 355.
  const corpus = () => writeJsonl(join(tempDir(), 'corpus.jsonl'), [{ text: 'Revenue rose nine percent.' }, { text: 'Margins fell by two points.' }]);

  for (const size of ['300', '0', '1', '-5']) {
    it(`--vocab-size ${size}: exit 1 with the minimum for this corpus (355), nothing written`, () => {
      const dir = tempDir();
      const r = finllm(['tokenizer', 'train', '--data', corpus(), '--vocab-size', size, join(dir, 'tok')]);
      expectFailure(r, 1, /finllm: key 'vocab-size': expected at least 355 for this corpus \(3 special tokens, 256 byte tokens, 96 characters\), got -?\d+$/m);
      expect(readdirSync(dir)).toEqual([]);
    });
  }

  it('--vocab-size beyond the largest the trainer supports (1e9): exit 1 naming the maximum', () => {
    const r = finllm(['tokenizer', 'train', '--data', corpus(), '--vocab-size', '1e9', join(tempDir(), 'tok')]);
    expectFailure(r, 1, /key 'vocab-size': expected at most 1048576, got 1000000000/);
  });

  for (const f of ['0', '-3', '1.5']) {
    it(`--min-frequency ${f}: exit 1, expected an integer >= 1`, () => {
      const r = finllm(['tokenizer', 'train', '--data', corpus(), '--min-frequency', f, join(tempDir(), 'tok')]);
      expectFailure(r, 1, f === '1.5' ? /key 'min-frequency': expected an integer, got "1\.5"/ : /key 'min-frequency': expected an integer >= 1/);
    });
  }

  it('a corpus that supports fewer tokens than asked: the tokenizer is written, with a warning giving both sizes', () => {
    const out = join(tempDir(), 'tok');
    const r = finllm(['tokenizer', 'train', '--data', corpus(), '--vocab-size', '2048', out]);
    expectSuccess(r);
    const got = /vocabulary (\d+) \((\d+) merges\)/.exec(r.stdout)!;
    expect(Number(got[1])).toBeLessThan(2048);
    expect(r.stderr).toMatch(new RegExp(`^finllm: warning: .*corpus\\.jsonl: the vocabulary has ${got[1]} tokens \\(${got[2]} merges\\), not the 2048 of --vocab-size: no other pair of symbols occurs at least 2 times \\(--min-frequency\\)`, 'm'));
    expect(existsSync(join(out, 'tokenizer.json'))).toBe(true);
  });

  it('a corpus whose texts are all empty: exit 1 naming the file and field, nothing written', () => {
    const dir = tempDir();
    const data = writeJsonl(join(dir, 'empty.jsonl'), [{ text: '' }, { text: '' }]);
    const r = finllm(['tokenizer', 'train', '--data', data, join(dir, 'tok')]);
    expectFailure(r, 1, /empty\.jsonl: every "text" is empty: there is nothing to learn a vocabulary from/);
    expect(readdirSync(dir)).toEqual(['empty.jsonl']);
  });
});

describe('23. data generate: only JSONL destinations; a count that would fill the disk is refused before writing', () => {
  for (const name of ['x.csv', 'x.txt', 'x']) {
    it(`-o ${name}: exit 1 naming the file and the extensions it writes; nothing written`, () => {
      const dir = tempDir();
      const r = finllm(['data', 'generate', '--kind', 'corpus', '-n', '3', '-o', join(dir, name)]);
      expectFailure(r, 1, new RegExp(`${name.replace('.', '\\.')}: data generate writes JSON Lines: expected a \\.jsonl file name`));
      expect(readdirSync(dir)).toEqual([]);
    });
  }

  it('-n 1e12: exit 1 with the upper bound, before writing anything', () => {
    const dir = tempDir();
    const r = finllm(['data', 'generate', '--kind', 'corpus', '-n', '1e12', '-o', join(dir, 'c.jsonl')], { timeoutMs: 30_000 });
    expectFailure(r, 1, /key 'count': expected at most 10000000 records, got 1000000000000/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('--kind tasks: the bound counts every task (count × tasks)', () => {
    const r = finllm(['data', 'generate', '--kind', 'tasks', '-n', '4000000', '-o', join(tempDir(), 't.jsonl')], { timeoutMs: 30_000 });
    expectFailure(r, 1, /key 'count': expected at most 10000000 records, got 12000000 \(4000000 × 3 tasks\)/);
  });

  it('.jsonl, .ndjson and .json (the extensions the data stage reads as JSON Lines) are written', () => {
    const dir = tempDir();
    for (const name of ['a.jsonl', 'b.ndjson', 'c.json']) expectSuccess(finllm(['data', 'generate', '--kind', 'corpus', '-n', '2', '-o', join(dir, name)]));
    expect(readFileSync(join(dir, 'b.ndjson'), 'utf8').trim().split('\n')).toHaveLength(2);
  });
});

describe('8. --env names only environments the config file defines', () => {
  it('--env __proto__ and --env toString: exit 1 listing the defined environments', () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'cfg.yaml'), 'model: {path: m}\ndata: {train: t.jsonl}\nenvironments:\n  cpu: {training: {max_steps: 1}}\n');
    for (const env of ['__proto__', 'toString']) {
      const r = finllm(['data', 'stats', '--config', join(dir, 'cfg.yaml'), '--env', env]);
      expectFailure(r, 1, new RegExp(`environment "${env}" \\(from --env\\) is not defined under 'environments'; defined: cpu`));
    }
  });
});

// A small or read-only file system of our own: a tmpfs mounted over `dir` in a private mount
// namespace (unshare), which needs user namespaces (or root); skipped where they are not available.
const canMount = spawnSync('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o size=4k tmpfs /mnt'], { encoding: 'utf8' }).status === 0;
function finllmOnTmpfs(dir: string, mountOptions: string, args: string[]): CliResult {
  const r = spawnSync('unshare', ['-rm', 'sh', '-c', `mount -t tmpfs -o ${mountOptions} tmpfs "$0" && exec "$@"`, dir, process.execPath, CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

describe.skipIf(!canMount)('21. a full or read-only file system: the message names the destination, never a temp (needs unshare -rm)', () => {
  const corpus = () => writeJsonl(join(tempDir(), 'corpus.jsonl'), [{ text: 'Revenue rose nine percent.' }, { text: 'Margins fell by two points.' }]);

  it('disk full while writing a tokenizer folder: exit 2 naming the file under the destination folder', () => {
    const mnt = tempDir();
    const r = finllmOnTmpfs(mnt, 'size=8k', ['tokenizer', 'train', '--data', corpus(), '--vocab-size', '400', join(mnt, 'tok')]);
    expectFailure(r, 2, new RegExp(`^finllm: ${join(mnt, 'tok').replaceAll('/', '\\/')}\\/tokenizer[a-z_]*\\.json: no space left on device \\(write\\)$`, 'm'));
    expect(r.stderr).not.toContain('.tmp-');
  });

  it('a read-only file system: exit 1 naming the destination folder', () => {
    const mnt = tempDir();
    const r = finllmOnTmpfs(mnt, 'ro', ['tokenizer', 'train', '--data', corpus(), '--vocab-size', '400', join(mnt, 'tok')]);
    expectFailure(r, 1, new RegExp(`^finllm: ${join(mnt, 'tok').replaceAll('/', '\\/')}: read-only file system \\(mkdir\\)$`, 'm'));
    const file = finllmOnTmpfs(mnt, 'ro', ['data', 'generate', '--kind', 'corpus', '-n', '2', '-o', join(mnt, 'c.jsonl')]);
    expectFailure(file, 1, new RegExp(`^finllm: ${join(mnt, 'c.jsonl').replaceAll('/', '\\/')}: read-only file system \\(open\\)$`, 'm'));
  });

  it('data generate whose estimated size exceeds the free space: exit 1 before writing (23)', () => {
    const mnt = tempDir();
    const r = finllmOnTmpfs(mnt, 'size=1m', ['data', 'generate', '--kind', 'corpus', '-n', '100000', '-o', join(mnt, 'c.jsonl')]);
    expectFailure(r, 1, /c\.jsonl: 100000 records need about [0-9.]+ MiB, but its file system has 1\.0 MiB free; lower -n\/--count or write elsewhere/);
  });
});
