// Issue 20, "reliability, round 3": the command-line and training findings, one test per finding,
// through the `finllm` CLI as a user runs it (exit code, the one-line message, the files left
// behind). Library-level checks of the same fixes live beside their modules' tests.
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI,
  type CliResult,
  checkBuilt,
  copyModel,
  expectCleanStderr,
  expectFailure,
  expectSuccess,
  finllm,
  finllmAsync,
  MODEL,
  ROOT,
  removeTempDirs,
  sampleTexts,
  tempDir,
  trainConfig,
  writeJsonl,
} from './helpers.js';

beforeAll(checkBuilt);
afterAll(removeTempDirs);

describe('12, 22. tokenizer train: sizes and frequencies out of range are refused; a short vocabulary is said', () => {
  // Plain ASCII text: the alphabet is the 94 printable characters, "▁" and "\n", so the minimum
  // vocabulary is 3 specials + 256 byte tokens + 96 = 355.
  const corpus = () =>
    writeJsonl(join(tempDir(), 'corpus.jsonl'), [
      { text: 'Revenue rose nine percent.' },
      { text: 'Margins fell by two points.' },
    ]);

  for (const size of ['300', '0', '1', '-5']) {
    it(`--vocab-size ${size}: exit 1 with the minimum for this corpus (355), nothing written`, () => {
      const dir = tempDir();
      const r = finllm(['tokenizer', 'train', '--data', corpus(), '--vocab-size', size, join(dir, 'tok')]);
      expectFailure(
        r,
        1,
        /finllm: key 'vocab-size': expected at least 355 for this corpus \(3 special tokens, 256 byte tokens, 96 characters\), got -?\d+$/m,
      );
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
      expectFailure(
        r,
        1,
        f === '1.5' ? /--min-frequency: expected an integer, got "1\.5"/ : /--min-frequency: expected an integer >= 1/,
      );
    });
  }

  it('a corpus that supports fewer tokens than asked: the tokenizer is written, with a warning giving both sizes', () => {
    const out = join(tempDir(), 'tok');
    const r = finllm(['tokenizer', 'train', '--data', corpus(), '--vocab-size', '2048', out]);
    expectSuccess(r);
    const got = /vocabulary (\d+) \((\d+) merges\)/.exec(r.stdout)!;
    expect(Number(got[1])).toBeLessThan(2048);
    expect(r.stderr).toMatch(
      new RegExp(
        `^finllm: warning: .*corpus\\.jsonl: the vocabulary has ${got[1]} tokens \\(${got[2]} merges\\), not the 2048 of --vocab-size: no other pair of symbols occurs at least 2 times \\(--min-frequency\\)`,
        'm',
      ),
    );
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
      expectFailure(
        r,
        1,
        new RegExp(`${name.replace('.', '\\.')}: data generate writes JSON Lines: expected a \\.jsonl file name`),
      );
      expect(readdirSync(dir)).toEqual([]);
    });
  }

  it('-n 1e12: exit 1 with the upper bound, before writing anything', () => {
    const dir = tempDir();
    const r = finllm(['data', 'generate', '--kind', 'corpus', '-n', '1e12', '-o', join(dir, 'c.jsonl')], {
      timeoutMs: 30_000,
    });
    expectFailure(r, 1, /key 'count': expected at most 10000000 records, got 1000000000000/);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('--kind tasks: the bound counts every task (count × tasks)', () => {
    const r = finllm(['data', 'generate', '--kind', 'tasks', '-n', '4000000', '-o', join(tempDir(), 't.jsonl')], {
      timeoutMs: 30_000,
    });
    expectFailure(r, 1, /key 'count': expected at most 10000000 records, got 12000000 \(4000000 × 3 tasks\)/);
  });

  it('.jsonl, .ndjson and .json (the extensions the data stage reads as JSON Lines) are written', () => {
    const dir = tempDir();
    for (const name of ['a.jsonl', 'b.ndjson', 'c.json'])
      expectSuccess(finllm(['data', 'generate', '--kind', 'corpus', '-n', '2', '-o', join(dir, name)]));
    expect(readFileSync(join(dir, 'b.ndjson'), 'utf8').trim().split('\n')).toHaveLength(2);
  });
});

describe('8. --env names only environments the config file defines', () => {
  it('--env __proto__ and --env toString: exit 1 listing the defined environments', () => {
    const dir = tempDir();
    writeFileSync(
      join(dir, 'cfg.yaml'),
      'model: {path: m}\ndata: {train: t.jsonl}\nenvironments:\n  cpu: {training: {max_steps: 1}}\n',
    );
    for (const env of ['__proto__', 'toString']) {
      const r = finllm(['data', 'stats', '--config', join(dir, 'cfg.yaml'), '--env', env]);
      expectFailure(
        r,
        1,
        new RegExp(`environment "${env}" \\(from --env\\) is not defined under 'environments'; defined: cpu`),
      );
    }
  });
});

// A small or read-only file system of our own: a tmpfs mounted over `dir` in a private mount
// namespace (unshare), which needs user namespaces (or root); skipped where they are not available.
const canMount =
  spawnSync('unshare', ['-rm', 'sh', '-c', 'mount -t tmpfs -o size=4k tmpfs /mnt'], { encoding: 'utf8' }).status === 0;
function finllmOnTmpfs(dir: string, mountOptions: string, args: string[]): CliResult {
  const r = spawnSync(
    'unshare',
    [
      '-rm',
      'sh',
      '-c',
      `mount -t tmpfs -o ${mountOptions} tmpfs "$0" && exec "$@"`,
      dir,
      process.execPath,
      CLI,
      ...args,
    ],
    { cwd: ROOT, encoding: 'utf8', timeout: 120_000 },
  );
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

describe.skipIf(!canMount)(
  '21. a full or read-only file system: the message names the destination, never a temp (needs unshare -rm)',
  () => {
    const corpus = () =>
      writeJsonl(join(tempDir(), 'corpus.jsonl'), [
        { text: 'Revenue rose nine percent.' },
        { text: 'Margins fell by two points.' },
      ]);
    /** `finllm tokenizer train` into `mnt`/tok on a tmpfs mounted with `mountOptions`. */
    const tokenizerTrain = (mnt: string, mountOptions: string) =>
      finllmOnTmpfs(mnt, mountOptions, [
        'tokenizer',
        'train',
        '--data',
        corpus(),
        '--vocab-size',
        '400',
        join(mnt, 'tok'),
      ]);
    /** `path` in a regular expression (its slashes escaped). */
    const pathRe = (path: string) => path.replaceAll('/', '\\/');

    it('disk full while writing a tokenizer folder: exit 2 naming the file under the destination folder', () => {
      const mnt = tempDir();
      const r = tokenizerTrain(mnt, 'size=8k');
      expectFailure(
        r,
        2,
        new RegExp(
          `^finllm: ${pathRe(join(mnt, 'tok'))}\\/tokenizer[a-z_]*\\.json: no space left on device \\(write\\)$`,
          'm',
        ),
      );
      expect(r.stderr).not.toContain('.tmp-');
    });

    it('a read-only file system: exit 1 naming the destination folder', () => {
      const mnt = tempDir();
      const r = tokenizerTrain(mnt, 'ro');
      expectFailure(r, 1, new RegExp(`^finllm: ${pathRe(join(mnt, 'tok'))}: read-only file system \\(mkdir\\)$`, 'm'));
      const file = finllmOnTmpfs(mnt, 'ro', [
        'data',
        'generate',
        '--kind',
        'corpus',
        '-n',
        '2',
        '-o',
        join(mnt, 'c.jsonl'),
      ]);
      expectFailure(
        file,
        1,
        new RegExp(`^finllm: ${pathRe(join(mnt, 'c.jsonl'))}: read-only file system \\(open\\)$`, 'm'),
      );
    });

    it('data generate whose estimated size exceeds the free space: exit 1 before writing (23)', () => {
      const mnt = tempDir();
      const r = finllmOnTmpfs(mnt, 'size=1m', [
        'data',
        'generate',
        '--kind',
        'corpus',
        '-n',
        '100000',
        '-o',
        join(mnt, 'c.jsonl'),
      ]);
      expectFailure(
        r,
        1,
        /c\.jsonl: 100000 records need about [0-9.]+ MiB, but its file system has 1\.0 MiB free; lower -n\/--count or write elsewhere/,
      );
    });
  },
);

describe('6. a tokenizer.json finllm cannot run is refused at load, by every command that loads a model', () => {
  it('ids >= vocab_size: generate exits 1 naming tokenizer.json (was exit 2 with a stack); serve exits 1 instead of reporting ready', async () => {
    const model = await copyModel(join(tempDir(), 'model'));
    const tok = JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8')) as { added_tokens: unknown[] };
    tok.added_tokens.push({
      id: 600,
      content: '<extra>',
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: false,
      special: true,
    });
    writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(tok));
    const message =
      /tokenizer\.json: 1 token id is outside the model's vocabulary \(vocab_size 600 in .*config\.json\): "<extra>" \(600\)/;
    expectFailure(finllm(['generate', '--model', model, '--prompt', 'Revenue <extra>', '-n', '2']), 1, message);
    const serve = finllmAsync(['serve', '--model', model, '--port', '0']);
    const code = await serve.exited;
    expect(code, serve.out.stderr).toBe(1);
    expect(serve.out.stderr).toMatch(message);
    expect(serve.out.stdout + serve.out.stderr).not.toMatch(/finllm serve: ready:/);
    expectCleanStderr({ status: code, stdout: serve.out.stdout, stderr: serve.out.stderr, signal: null });
  });

  it('a WordPiece tokenizer: exit 1 naming the file and model.type', async () => {
    const model = await copyModel(join(tempDir(), 'model'));
    const tok = JSON.parse(readFileSync(join(model, 'tokenizer.json'), 'utf8')) as { model: Record<string, unknown> };
    tok.model = {
      type: 'WordPiece',
      unk_token: '<unk>',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
      vocab: { '<unk>': 0, '<s>': 1, '</s>': 2 },
    };
    writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(tok));
    expectFailure(
      finllm(['generate', '--model', model, '--prompt', 'Revenue', '-n', '2']),
      1,
      /tokenizer\.json, key 'model\.type': model type "WordPiece" is not supported/,
    );
  });
});

describe('9. tie_word_embeddings: true with a separate lm_head.weight', () => {
  it('gets the "tensors the model does not use" warning, saying which head is used', async () => {
    const model = await copyModel(
      join(tempDir(), 'model'),
      () => undefined,
      (c) => {
        c['tie_word_embeddings'] = true;
      },
    );
    const r = finllm(['generate', '--model', model, '--prompt', 'Revenue', '-n', '1']);
    expectSuccess(r);
    expect(r.stderr).toMatch(
      /^finllm: warning: .*model: 1 tensor is in the checkpoint but not used by a 2-layer Llama as config\.json describes it: lm_head\.weight \(tie_word_embeddings is true, so model\.embed_tokens\.weight is the LM head and lm_head\.weight is ignored; set it to false if lm_head\.weight is the head\); check that config\.json matches the weights$/m,
    );
  });
});

describe('3. a step-N folder that is not a complete checkpoint is never skipped or deleted', () => {
  /** A two-step run with a checkpoint per step, in a fresh folder. */
  function trainedRun(): string {
    const dir = tempDir('finllm-cli-run3-');
    writeJsonl(
      join(dir, 'train.jsonl'),
      sampleTexts(4).map((text) => ({ text })),
    );
    expectSuccess(finllm(['train', '--config', trainConfig(dir, MODEL)]));
    return dir;
  }
  const ckpt = (dir: string, n: number) => join(dir, 'run', 'checkpoints', `step-${String(n).padStart(8, '0')}`);

  it("--resume with a step-3 folder holding only the user's files: exit 1 naming it, before any step; nothing in it touched; after moving it away the run resumes at step 2", () => {
    const dir = trainedRun();
    mkdirSync(ckpt(dir, 3));
    writeFileSync(join(ckpt(dir, 3), 'notes.txt'), 'keep me');
    const before = readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8');
    const args = [
      'train',
      '--config',
      join(dir, 'cfg.yaml'),
      '--set',
      'training.max_steps=4',
      '--allow-config-change',
      '--resume',
    ];
    const r = finllm(args);
    expectFailure(
      r,
      1,
      /step-00000003: not a complete checkpoint: it holds a file finllm does not write \(notes\.txt\)\. Move it out of .*checkpoints \(or delete it\) and run again/,
    );
    expect(readdirSync(ckpt(dir, 3))).toEqual(['notes.txt']);
    expect(readFileSync(join(dir, 'run', 'metrics.jsonl'), 'utf8')).toBe(before);
    // An empty step folder (no trainer_state.json) is refused the same way, also without --resume.
    cpSync(ckpt(dir, 3), join(dir, 'notes'), { recursive: true });
    writeFileSync(join(ckpt(dir, 3), 'notes.txt'), '');
    expectFailure(
      finllm(['train', '--config', join(dir, 'cfg.yaml'), '--set', 'training.max_steps=4', '--allow-config-change']),
      1,
      /step-00000003: not a complete checkpoint/,
    );
    // Moved away: the run resumes from step 2 and writes steps 3 and 4.
    cpSync(ckpt(dir, 3), join(dir, 'moved'), { recursive: true });
    spawnSync('rm', ['-r', ckpt(dir, 3)]);
    const ok = finllm(args);
    expectSuccess(ok);
    expect(existsSync(join(ckpt(dir, 4), 'trainer_state.json'))).toBe(true);
    expect(readFileSync(join(dir, 'notes', 'notes.txt'), 'utf8')).toBe('keep me');
  });
});
