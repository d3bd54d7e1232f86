import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import YAML from 'yaml';
import { loadConfig, RESOLVED_CONFIG_NAME, saveResolvedConfig, suggest } from '../../src/pipeline/config.js';
import { inputErrorOf } from '../helpers/input-error.js';
import { ROOT, tempDir } from './data/helpers.js';

const MINIMAL = `
model:
  path: ./models/m
data:
  train: data/train.jsonl
`;

describe('loadConfig', () => {
  let t: ReturnType<typeof tempDir>;
  const savedEnv = process.env.FINLLM_ENV;
  beforeEach(() => {
    t = tempDir();
    delete process.env.FINLLM_ENV;
  });
  afterEach(() => {
    t.cleanup();
    if (savedEnv === undefined) delete process.env.FINLLM_ENV;
    else process.env.FINLLM_ENV = savedEnv;
  });

  it('fills defaults and resolves paths relative to the config folder', () => {
    const file = t.write('sub/cfg.yaml', MINIMAL);
    const cfg = loadConfig({ file });
    expect(cfg.model.path).toBe(join(t.dir, 'sub/models/m'));
    expect(cfg.data.train).toBe(join(t.dir, 'sub/data/train.jsonl'));
    expect(cfg.data.val).toBeNull();
    expect(cfg.output.dir).toBe(join(t.dir, 'sub/runs/finllm'));
    expect(cfg.model.quantize).toBe('nf4');
    expect(cfg.lora).toEqual({
      r: 8,
      alpha: 16,
      dropout: 0.05,
      target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj'],
      rslora: false,
    });
    expect(cfg.data.columns.text).toBe('text');
    expect(cfg.data.dedup).toEqual({ exact: true, near: true, near_threshold: 0.9 });
    expect(cfg.training.schedule).toBe('cosine');
    expect(cfg.training.max_steps).toBeNull();
    expect(cfg.training.early_stopping).toBeNull();
    expect(cfg.logging).toEqual({ console: true, jsonl: true, tensorboard: false });
    expect(cfg.source).toEqual({ file, env: null, sets: [] });
  });

  it('grad_checkpointing: none | selective | full, with true/false of older configs read as full/none', () => {
    const mode = (v: string) =>
      loadConfig({ file: t.write('g.yaml', MINIMAL), sets: [`training.grad_checkpointing=${v}`] }).training
        .grad_checkpointing;
    expect(loadConfig({ file: t.write('d.yaml', MINIMAL) }).training.grad_checkpointing).toBe('none');
    expect([mode('none'), mode('selective'), mode('full'), mode('true'), mode('false')]).toEqual([
      'none',
      'selective',
      'full',
      'full',
      'none',
    ]);
    const e = inputErrorOf(() => mode('partial'));
    expect(e.message).toMatch(
      /key 'training\.grad_checkpointing'.*got "partial", expected one of "none", "selective", "full"/,
    );
  });

  it('batch_size: a positive integer or auto; effective_batch_size only with auto', () => {
    const load = (...sets: string[]) => loadConfig({ file: t.write('b.yaml', MINIMAL), sets });
    expect(load('training.batch_size=auto', 'training.effective_batch_size=16').training).toMatchObject({
      batch_size: 'auto',
      effective_batch_size: 16,
    });
    expect(load().training.effective_batch_size).toBeNull();
    expect(inputErrorOf(() => load('training.batch_size=big')).message).toMatch(
      /key 'training\.batch_size'.*got "big", expected a positive integer or "auto"/,
    );
    expect(inputErrorOf(() => load('training.effective_batch_size=16')).message).toMatch(
      /effective_batch_size \(16\) only applies with batch_size: auto/,
    );
  });

  it('expands all-linear target modules', () => {
    const file = t.write('c.yaml', MINIMAL + 'lora:\n  target_modules: all-linear\n');
    expect(loadConfig({ file }).lora.target_modules).toEqual([
      'q_proj',
      'k_proj',
      'v_proj',
      'o_proj',
      'gate_proj',
      'up_proj',
      'down_proj',
    ]);
  });

  it('applies base < environment < --set precedence', () => {
    const file = t.write(
      'c.yaml',
      MINIMAL +
        `training:\n  batch_size: 2\n  lr: 0.001\n  max_steps: 5\nenvironments:\n  gpu:\n    training:\n      batch_size: 8\n      max_steps: 100\n    model:\n      storage: bf16\n  cpu:\n    training:\n      batch_size: 1\n`,
    );
    const base = loadConfig({ file });
    expect(base.training.batch_size).toBe(2);
    const gpu = loadConfig({ file, env: 'gpu' });
    expect(gpu.training.batch_size).toBe(8);
    expect(gpu.training.max_steps).toBe(100);
    expect(gpu.training.lr).toBe(0.001); // untouched by the env: deep merge
    expect(gpu.model.storage).toBe('bf16');
    expect(gpu.model.path).toBe(join(t.dir, 'models/m'));
    const set = loadConfig({
      file,
      env: 'gpu',
      sets: ['training.max_steps=10', 'training.lr=1e-4', 'data.packing=true', 'data.val=null'],
    });
    expect(set.training.max_steps).toBe(10);
    expect(set.training.lr).toBe(1e-4);
    expect(set.training.batch_size).toBe(8);
    expect(set.data.packing).toBe(true);
    expect(set.source).toEqual({
      file,
      env: 'gpu',
      sets: ['training.max_steps=10', 'training.lr=1e-4', 'data.packing=true', 'data.val=null'],
    });
  });

  it('takes the environment from FINLLM_ENV when --env is absent', () => {
    const file = t.write('c.yaml', MINIMAL + 'environments:\n  cpu:\n    data:\n      max_seq_len: 64\n');
    process.env.FINLLM_ENV = 'cpu';
    const cfg = loadConfig({ file });
    expect(cfg.data.max_seq_len).toBe(64);
    expect(cfg.source.env).toBe('cpu');
    // --env wins over FINLLM_ENV
    process.env.FINLLM_ENV = 'nope';
    expect(() => loadConfig({ file })).toThrow(/environment "nope" \(from FINLLM_ENV\) is not defined.*defined: cpu/);
  });

  it('resolves --set paths against the working directory, file paths against the file folder', () => {
    const file = t.write('conf/c.yaml', MINIMAL);
    const cfg = loadConfig({ file, sets: ['data.val=other/val.jsonl'], cwd: join(t.dir, 'work') });
    expect(cfg.data.val).toBe(join(t.dir, 'work/other/val.jsonl'));
    expect(cfg.data.train).toBe(join(t.dir, 'conf/data/train.jsonl'));
  });

  it('names key path, value, expectation and origin for wrong values', () => {
    const file = t.write('c.yaml', MINIMAL + 'training:\n  lr: fast\n');
    const e = inputErrorOf(() => loadConfig({ file }));
    expect(e.message).toContain(file);
    expect(e.message).toMatch(/key 'training\.lr' \(from .*c\.yaml\): got "fast", expected number/);

    const e2 = inputErrorOf(() => loadConfig({ file: t.write('d.yaml', MINIMAL), sets: ['training.schedule=cosin'] }));
    expect(e2.message).toMatch(
      /key 'training\.schedule' \(from --set training\.schedule=cosin\): got "cosin", expected one of "linear", "cosine", "constant"/,
    );

    const e3 = inputErrorOf(() => loadConfig({ file: t.write('e.yaml', MINIMAL), sets: ['training.batch_size=0'] }));
    expect(e3.message).toMatch(/key 'training\.batch_size'.*got 0, expected > 0/);

    const e4 = inputErrorOf(() => loadConfig({ file: t.write('f.yaml', 'data:\n  train: x.jsonl\n') }));
    expect(e4.message).toMatch(/key 'model'.*missing, expected object/);
  });

  it('reports errors coming from an environment with the environment as origin', () => {
    const file = t.write('c.yaml', MINIMAL + 'environments:\n  gpu:\n    model:\n      quantize: nf8\n');
    const e = inputErrorOf(() => loadConfig({ file, env: 'gpu' }));
    expect(e.message).toMatch(
      /key 'model\.quantize' \(from environment 'gpu' in .*\): got "nf8", expected one of "nf4", "none"/,
    );
  });

  it('rejects unknown keys with a did-you-mean suggestion', () => {
    const file = t.write('c.yaml', MINIMAL + 'training:\n  learning_rate: 0.1\n  epoch: 2\n');
    const e = inputErrorOf(() => loadConfig({ file }));
    expect(e.message).toMatch(/key 'training\.epoch'.*unknown key; did you mean 'training\.epochs'\?/);
    expect(e.message).toMatch(/key 'training\.learning_rate'.*unknown key/);
    expect(e.message).toMatch(/2 problems/);
    const e2 = inputErrorOf(() => loadConfig({ file: t.write('d.yaml', MINIMAL), sets: ['lora.rank=4'] }));
    expect(e2.message).toMatch(
      /key 'lora\.rank' \(from --set lora\.rank=4\): unknown key; did you mean 'lora\.r'\?|key 'lora\.rank'.*unknown key/,
    );
    const e3 = inputErrorOf(() => loadConfig({ file: t.write('g.yaml', MINIMAL + 'trainig:\n  lr: 1\n') }));
    expect(e3.message).toMatch(/key 'trainig'.*did you mean 'training'\?/);
  });

  it('rejects warmup_steps together with warmup_ratio', () => {
    const file = t.write('c.yaml', MINIMAL + 'training:\n  warmup_steps: 10\n  warmup_ratio: 0.1\n');
    expect(() => loadConfig({ file })).toThrow(/warmup_steps \(10\) or training\.warmup_ratio \(0\.1\), not both/);
  });

  it('reports malformed --set and YAML syntax errors', () => {
    const file = t.write('c.yaml', MINIMAL);
    expect(() => loadConfig({ file, sets: ['training.lr'] })).toThrow(/expected key\.path=value/);
    const bad = t.write('bad.yaml', 'model:\n  path: [unclosed\n');
    expect(() => loadConfig({ file: bad })).toThrow(/invalid YAML/);
    expect(() => loadConfig({ file: join(t.dir, 'missing.yaml') })).toThrow(/missing\.yaml: config file not found/);
  });

  it('saves the resolved config atomically; reloading it gives the same config', () => {
    const file = t.write('c.yaml', MINIMAL + 'environments:\n  gpu:\n    training:\n      batch_size: 8\n');
    const cfg = loadConfig({ file, env: 'gpu', sets: ['training.max_steps=7'] });
    const out = join(t.dir, 'run');
    const path = saveResolvedConfig(cfg, out);
    expect(path).toBe(join(out, RESOLVED_CONFIG_NAME));
    const text = readFileSync(path, 'utf8');
    expect(text).toContain('# environment: gpu');
    expect(YAML.parse(text).training.batch_size).toBe(8);
    const again = loadConfig({ file: path });
    const { source: _a, ...x } = cfg;
    const { source: _b, ...y } = again;
    expect(y).toEqual(x);
  });

  it('suggest() finds close names only', () => {
    expect(suggest('batchsize', ['batch_size', 'lr'])).toBe('batch_size');
    expect(suggest('zzzzzz', ['batch_size', 'lr'])).toBeUndefined();
  });
});

describe('bundled configs', () => {
  it('configs/tiny-sample.yaml validates, is CPU-sized and points at the tiny model and the sample data', () => {
    const cfg = loadConfig({ file: join(ROOT, 'configs/tiny-sample.yaml') });
    expect(cfg.model.path).toBe(join(ROOT, 'models/tiny-fin'));
    expect(cfg.data.train).toBe(join(ROOT, 'data/sample/train.jsonl'));
    expect(cfg.data.val).toBe(join(ROOT, 'data/sample/val.jsonl'));
    expect(cfg.data.max_seq_len).toBeLessThanOrEqual(512);
    expect(cfg.training.max_steps).not.toBeNull();
    expect(cfg.training.max_steps!).toBeLessThanOrEqual(200);
    const text = readFileSync(join(ROOT, 'configs/tiny-sample.yaml'), 'utf8');
    expect(text).toContain('finllm train --config configs/tiny-sample.yaml --set training.max_steps=10');
  });

  it('configs/default.yaml fine-tunes the bundled base model on the generated task set, evaluated on the held-out suites', () => {
    const cfg = loadConfig({ file: join(ROOT, 'configs/default.yaml') });
    expect(cfg.model.path).toBe(join(ROOT, 'models/fin-base'));
    expect(cfg.data.train).toBe(join(ROOT, 'data/finetune/train.jsonl'));
    expect(cfg.data.val).toBe(join(ROOT, 'data/finetune/val.jsonl'));
    expect(cfg.training.max_steps!).toBeLessThanOrEqual(200);
    expect(cfg.eval!.suites.map((s) => s.file)).toEqual(
      ['fin-sentiment', 'fin-figures', 'fin-summary'].map((n) => join(ROOT, 'data/eval', `${n}.jsonl`)),
    );
  });

  it('bundled config environments validate', () => {
    for (const file of ['configs/default.yaml', 'configs/tiny-sample.yaml']) {
      for (const env of ['cpu', 'gpu']) expect(() => loadConfig({ file: join(ROOT, file), env })).not.toThrow();
    }
  });

  it('is the default file when none is given', () => {
    const cfg = loadConfig({ cwd: ROOT });
    expect(cfg.source.file).toBe(join(ROOT, 'configs/default.yaml'));
  });

  it('configs/llama-1b-qlora-gpu.yaml validates as a realistic GPU QLoRA run', () => {
    const cfg = loadConfig({ file: join(ROOT, 'configs/llama-1b-qlora-gpu.yaml') });
    expect(cfg.model.quantize).toBe('nf4');
    expect(cfg.training.batch_size).toBe(8);
    expect(cfg.data.max_seq_len).toBe(512);
    expect(cfg.lora.r).toBe(16);
    expect(cfg.lora.target_modules).toHaveLength(7);
  });
});

describe('config values and their sources (issue 20, items 8, 16, 17)', () => {
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => {
    t = tempDir();
    delete process.env.FINLLM_ENV;
  });
  afterEach(() => t.cleanup());
  const ENVS =
    MINIMAL + 'environments:\n  cpu:\n    data:\n      max_seq_len: 64\n  gpu:\n    data:\n      max_seq_len: 512\n';

  it('--env accepts only environments the file defines: names of Object.prototype are refused, listing the defined ones', () => {
    const file = t.write('c.yaml', ENVS);
    for (const env of ['__proto__', 'toString', 'constructor', 'hasOwnProperty', 'valueOf']) {
      const e = inputErrorOf(() => loadConfig({ file, env }));
      expect(e.message, env).toContain(
        `environment ${JSON.stringify(env)} (from --env) is not defined under 'environments'; defined: cpu, gpu`,
      );
    }
    // A file with no environments at all says so.
    expect(inputErrorOf(() => loadConfig({ file: t.write('d.yaml', MINIMAL), env: 'toString' })).message).toContain(
      'the file defines none',
    );
    expect(loadConfig({ file, env: 'cpu' }).data.max_seq_len).toBe(64);
  });

  it('an infinite value says "got Infinity" (YAML .inf, -.inf, a number past the double range), not "got null"', () => {
    const file = t.write('c.yaml', MINIMAL);
    for (const [raw, shown] of [
      ['.inf', 'Infinity'],
      ['-.inf', '-Infinity'],
      ['1e400', 'Infinity'],
      ['.nan', 'NaN'],
    ] as const) {
      const e = inputErrorOf(() => loadConfig({ file, sets: [`training.lr=${raw}`] }));
      expect(e.message, raw).toContain(
        `key 'training.lr' (from --set training.lr=${raw}): got ${shown}, expected a finite number`,
      );
    }
    const inFile = inputErrorOf(() => loadConfig({ file: t.write('d.yaml', MINIMAL + 'training:\n  lr: 1e400\n') }));
    expect(inFile.message).toMatch(/key 'training\.lr' \(from .*d\.yaml\): got Infinity, expected a finite number/);
  });

  it('an error in a value given with --set names --set as its source, not the YAML file', () => {
    const file = t.write('c.yaml', MINIMAL);
    const e = inputErrorOf(() => loadConfig({ file, sets: ['training.lr=-5'] }));
    expect(e.message).toBe("key 'training.lr' (from --set training.lr=-5): got -5, expected > 0");
    expect(e.location.file).toBeUndefined();
    // Problems from the file and from --set together: the file is named, each line keeps its source.
    const both = inputErrorOf(() =>
      loadConfig({ file: t.write('d.yaml', MINIMAL + 'training:\n  warmup_steps: -1\n'), sets: ['training.lr=-5'] }),
    );
    expect(both.message).toMatch(/d\.yaml: 2 problems in the configuration:/);
    expect(both.message).toContain("key 'training.lr' (from --set training.lr=-5): got -5, expected > 0");
    // A value from an environment is the file's: the file stays named.
    const env = inputErrorOf(() =>
      loadConfig({
        file: t.write('e.yaml', MINIMAL + 'environments:\n  gpu:\n    training:\n      lr: -1\n'),
        env: 'gpu',
      }),
    );
    expect(env.location.file).toBe(join(t.dir, 'e.yaml'));
  });
});
