// Issue 13, "a hostile first hour with the CLI": one test per finding, through the `finllm` CLI as a
// user runs it (exit code, the one-line message, the files left behind). Item 2 (Ctrl-C exits 130
// after checkpointing, and --resume completes) is the SIGINT test in tests/pipeline/train/trainer.test.ts.
import { spawnSync } from 'node:child_process';
import {
  closeSync,
  cpSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSafetensorsF32 } from '../../src/io/safetensors.js';
import { loraKey, peftTensorName } from '../../src/llama/peft.js';
import {
  checkBuilt,
  copyModel,
  deadPid,
  expectFailure,
  expectSuccess,
  finllm,
  MODEL,
  makeAdapter,
  poisonedModel,
  poke,
  ROOT,
  removeTempDirs,
  sampleTexts,
  tempDir,
  tempsUnder,
  trainConfig,
  writeJsonl,
} from './helpers.js';

afterAll(removeTempDirs);

// One short finished training run, shared by the resume and finished-run tests (each works on a copy).
let trained = '';
beforeAll(() => {
  checkBuilt();
  trained = tempDir('finllm-cli-run-');
  writeJsonl(
    join(trained, 'train.jsonl'),
    sampleTexts(4).map((text) => ({ text })),
  );
  const r = finllm(['train', '--config', trainConfig(trained, MODEL)]);
  expectSuccess(r);
});

/** A copy of the shared run folder (config, data, run) to tamper with. */
function copyOfTrainedRun(): string {
  const dir = tempDir('finllm-cli-copy-');
  cpSync(trained, dir, { recursive: true });
  // The config's paths are relative to its folder (the model's is absolute): the copy is self-contained.
  return dir;
}

const CKPT = (run: string, step: number) => join(run, 'checkpoints', `step-${String(step).padStart(8, '0')}`);
const A0 = peftTensorName(loraKey(0, 'q_proj'), 'A');
const B1 = peftTensorName(loraKey(1, 'v_proj'), 'B');

describe('1. non-finite values are refused, never computed with or written', () => {
  it('export --merged of an adapter with one NaN in a lora_A: exit 1 naming the tensor; no output folder, no temp', async () => {
    const dir = tempDir();
    const adapter = await makeAdapter(join(dir, 'adapter'));
    poke(join(adapter, 'adapter_model.safetensors'), A0, 5, NaN);
    const r = finllm(['export', '--model', MODEL, '--adapter', adapter, '--merged', join(dir, 'merged')]);
    expectFailure(
      r,
      1,
      new RegExp(`adapter_model\\.safetensors: tensor '${A0.replaceAll('.', '\\.')}' has 1 non-finite value`),
    );
    expect(readdirSync(dir)).toEqual(['adapter']);
  });

  it('eval with an Inf in a lora_B: exit 1 naming the tensor, and no --out file', async () => {
    const dir = tempDir();
    const adapter = await makeAdapter(join(dir, 'adapter'));
    poke(join(adapter, 'adapter_model.safetensors'), B1, 0, Infinity);
    const data = writeJsonl(join(dir, 'texts.jsonl'), [{ text: 'Revenue rose nine percent.' }]);
    const r = finllm([
      'eval',
      '--model',
      MODEL,
      '--adapter',
      adapter,
      '--data',
      data,
      '--json',
      '--out',
      join(dir, 'ppl.json'),
    ]);
    expectFailure(r, 1, new RegExp(`tensor '${B1.replaceAll('.', '\\.')}' has 1 non-finite value`));
    expect(r.stdout).toBe('');
    expect(existsSync(join(dir, 'ppl.json'))).toBe(false);
  });

  it('a model checkpoint with NaN weights: eval and generate exit 1 naming the tensors and the file (counted on the GPU)', async () => {
    const dir = tempDir();
    const model = await copyModel(join(dir, 'model'), (t) => {
      t.get('model.layers.1.mlp.down_proj.weight')![7] = NaN;
      t.get('model.norm.weight')![3] = -Infinity;
    });
    const data = writeJsonl(join(dir, 'texts.jsonl'), [{ text: 'Revenue rose nine percent.' }]);
    for (const quantize of [[], ['--quantize', 'nf4']]) {
      const r = finllm(['eval', '--model', model, '--data', data, ...quantize]);
      expectFailure(
        r,
        1,
        /model\.safetensors: tensor 'model\.layers\.1\.mlp\.down_proj\.weight' has 1 non-finite value \(NaN or ±Inf\); tensor 'model\.norm\.weight' has 1 non-finite value/,
      );
    }
    expectFailure(
      finllm(['generate', '--model', model, '--prompt', 'Revenue', '-n', '2', '--storage', 'bf16']),
      1,
      /non-finite value.*after rounding to model storage bf16/,
    );
  });

  it('--resume from a checkpoint whose adapter holds a NaN: exit 1 naming the tensor; nothing rewritten', () => {
    const run = copyOfTrainedRun();
    const ckpt = CKPT(join(run, 'run'), 2);
    // A resumable state (not finished): the step-2 checkpoint of a 3-step run.
    const r0 = finllm([
      'train',
      '--config',
      join(run, 'cfg.yaml'),
      '--set',
      'training.max_steps=3',
      '--allow-config-change',
      '--resume',
    ]);
    expectSuccess(r0);
    poke(join(CKPT(join(run, 'run'), 3), 'adapter', 'adapter_model.safetensors'), A0, 0, NaN);
    const before = readFileSync(join(run, 'run', 'train-summary.json'));
    const r = finllm([
      'train',
      '--config',
      join(run, 'cfg.yaml'),
      '--set',
      'training.max_steps=4',
      '--allow-config-change',
      '--resume',
    ]);
    expectFailure(
      r,
      1,
      new RegExp(
        `step-00000003/adapter/adapter_model\\.safetensors: tensor '${A0.replaceAll('.', '\\.')}' has 1 non-finite value.*checkpoint is damaged`,
      ),
    );
    expect(readFileSync(join(run, 'run', 'train-summary.json'))).toEqual(before);
    expect(existsSync(ckpt)).toBe(true);
  });

  it('a training run whose data produce a non-finite loss stops with exit 2 naming the step and the data row; nothing of that step is saved', async () => {
    // Finite weights that overflow to Inf logits only at '#' (see poisonedModel): only data with '#' break it.
    const dir = tempDir();
    const model = await poisonedModel(join(dir, 'model'));
    // With seed 3 and batch size 1 the data order puts row 3 at step 3: two good steps come first.
    writeJsonl(join(dir, 'train.jsonl'), [
      { text: 'Revenue rose nine percent to two billion dollars in the quarter.' },
      { text: 'Operating margin expanded by one hundred basis points year over year.' },
      { text: 'The board approved a dividend of forty cents # per share today.' },
      { text: 'Free cash flow was strong and the company reduced its net debt.' },
    ]);
    const cfg = trainConfig(dir, model, '');
    const r = finllm(['train', '--config', cfg, '--set', 'training.batch_size=1', '--set', 'training.max_steps=4']);
    expectFailure(
      r,
      2,
      /^finllm: training stopped at step (\d): the loss is (NaN|Infinity|-Infinity) \(examples: .*train\.jsonl row 3\)\. Nothing of this step was applied or saved; /m,
    );
    const failed = Number(/training stopped at step (\d)/.exec(r.stderr)![1]);
    const run = join(dir, 'run');
    // Only the checkpoints before the failing step exist, every value in them finite; no adapter, no summary.
    expect(failed).toBe(3);
    const steps = readdirSync(join(run, 'checkpoints'))
      .filter((n) => n.startsWith('step-'))
      .map((n) => Number(n.slice(5)))
      .sort();
    expect(steps).toEqual([1, 2]);
    for (const step of steps) {
      for (const file of ['adapter/adapter_model.safetensors', 'optimizer.safetensors']) {
        for (const [name, values] of await readSafetensorsF32(join(CKPT(run, step), file)))
          expect(values.every(Number.isFinite), `${step} ${name}`).toBe(true);
      }
    }
    expect(existsSync(join(run, 'adapter'))).toBe(false);
    expect(existsSync(join(run, 'train-summary.json'))).toBe(false);
    expect(tempsUnder(run)).toEqual([]);
  });
});

describe('3. temp files of killed writers are removed by the next write to the same destination', () => {
  it('export --merged, data stats --report and train remove the temps a SIGKILL left; other files stay', async () => {
    const dir = tempDir();
    const pid = deadPid();
    const adapter = await makeAdapter(join(dir, 'adapter'));
    // What kill -9 during `export --merged` leaves: a hidden half-written folder.
    mkdirSync(join(dir, `.merged.tmp-${pid}-0a1b2c3d`));
    writeFileSync(join(dir, `.merged.tmp-${pid}-0a1b2c3d`, 'model.safetensors'), 'half a model');
    writeFileSync(join(dir, 'keep.txt'), 'unrelated');
    expectSuccess(finllm(['export', '--model', MODEL, '--adapter', adapter, '--merged', join(dir, 'merged')]));
    expect(readdirSync(dir).sort()).toEqual(['adapter', 'keep.txt', 'merged']);

    writeFileSync(join(dir, `.report.json.tmp-${pid}-00000001`), '{"half');
    expectSuccess(
      finllm([
        'data',
        'stats',
        '--set',
        `output.dir=${dir}`,
        '--set',
        'data.val=null',
        '--report',
        join(dir, 'report.json'),
      ]),
    );
    expect(existsSync(join(dir, 'report.json'))).toBe(true);
    expect(tempsUnder(dir)).toEqual([]);

    // kill -9 while the run's data-report.json was written, then the run is continued (or re-run).
    const run = copyOfTrainedRun();
    writeFileSync(join(run, 'run', `.data-report.json.tmp-${pid}-00000002`), '{"half');
    writeFileSync(join(run, 'run', 'adapter', `.adapter_model.safetensors.tmp-${pid}-00000003`), 'half');
    expectSuccess(finllm(['train', '--config', join(run, 'cfg.yaml'), '--resume']));
    expect(tempsUnder(run)).toEqual([]);
  });
});

describe('4. the bundled default never writes into the installation; a finished run is left as it is', () => {
  it('data stats with no config, outside the repository, writes runs/default under the current directory', () => {
    const cwd = tempDir();
    const r = finllm(['data', 'stats', '--set', 'data.val=null'], { cwd });
    expectSuccess(r);
    expect(r.stdout).toContain(join(cwd, 'runs', 'default', 'data-report.json'));
    expect(existsSync(join(cwd, 'runs', 'default', 'data-report.json'))).toBe(true);
  });

  it('train with no config, outside the repository: the run folder is ./runs/default, the package is untouched', () => {
    const cwd = tempDir();
    const pkgRuns = join(ROOT, 'runs', 'default');
    const before = existsSync(pkgRuns) ? statSync(pkgRuns).mtimeMs : null;
    const r = finllm(
      [
        'train',
        '-q',
        '--set',
        'training.max_steps=1',
        '--set',
        'training.batch_size=1',
        '--set',
        'data.val=null',
        '--set',
        'data.val_split=0',
      ],
      { cwd },
    );
    expectSuccess(r);
    expect(r.stdout).toContain(`run folder: ${join(cwd, 'runs', 'default')}`);
    // The bundled default trains every weight of models/fin-base (training.method: full): model/ is its output.
    expect(existsSync(join(cwd, 'runs', 'default', 'model', 'model.safetensors'))).toBe(true);
    expect(existsSync(join(cwd, 'runs', 'default', 'train-summary.json'))).toBe(true);
    expect(existsSync(pkgRuns) ? statSync(pkgRuns).mtimeMs : null).toBe(before);
  });

  it('re-running a finished run changes no file and says so', () => {
    const run = copyOfTrainedRun();
    const files = [
      'train-summary.json',
      'resolved-config.yaml',
      'data-report.json',
      'metrics.jsonl',
      'adapter/adapter_model.safetensors',
    ];
    const snapshot = () =>
      files.map((f) => [readFileSync(join(run, 'run', f)).toString('base64'), statSync(join(run, 'run', f)).mtimeMs]);
    const before = snapshot();
    const r = finllm(['train', '--config', join(run, 'cfg.yaml')]);
    expectSuccess(r);
    expect(r.stdout).toMatch(/already complete at step 2: nothing to do/);
    expect(r.stdout).not.toMatch(/throughput/);
    expect(snapshot()).toEqual(before);
    expect(JSON.parse(readFileSync(join(run, 'run', 'train-summary.json'), 'utf8')).tokensPerSecond).toBeGreaterThan(0);
  });
});

describe('5. long texts do not hang scoring', () => {
  it('score of one ~300 KB record finishes, ROUGE-L exact up to the stated cap, with a warning when it cuts', () => {
    const dir = tempDir();
    const words = readFileSync(join(ROOT, 'data', 'sample', 'train.jsonl'), 'utf8')
      .split(/\s+/)
      .filter(Boolean);
    const text = (k: number) => Array.from({ length: 24_000 }, (_, i) => words[(i * k) % words.length]).join(' ');
    const file = writeJsonl(join(dir, 'long.jsonl'), [{ prediction: text(7), reference: text(13) }]);
    const r = finllm(['score', '--input', file, '--json', '--rouge-max-tokens', '60000'], { timeoutMs: 120_000 });
    expectSuccess(r);
    expect(r.stderr).toBe('');
    const capped = finllm(['score', '--input', file, '--json', '--metrics', 'rouge', '--rouge-max-tokens', '5000'], {
      timeoutMs: 120_000,
    });
    expectSuccess(capped);
    expect(capped.stderr).toMatch(
      /^finllm: warning: ROUGE-L of 1 example \(line-1\) used only the first 5000 tokens of each side .*--rouge-max-tokens\)$/m,
    );
    const full = JSON.parse(r.stdout) as { rougeL: number; rouge1: number };
    const cut = JSON.parse(capped.stdout) as { rougeL: number; rouge1: number };
    expect(cut.rouge1).toBe(full.rouge1);
    expect(cut.rougeL).not.toBe(full.rougeL);
  });
});

describe('6. user errors exit 1 with one line, never a stack trace', () => {
  it('generate -n 0 generates nothing and exits 0', () => {
    const r = finllm(['generate', '--model', MODEL, '--prompt', 'Revenue', '-n', '0']);
    expectSuccess(r);
    expect(r.stdout).toBe('\n');
  });

  it('a model folder whose model.safetensors is a folder', async () => {
    const dir = tempDir();
    const model = await copyModel(join(dir, 'model'));
    rmSync(join(model, 'model.safetensors'));
    mkdirSync(join(model, 'model.safetensors'));
    expectFailure(
      finllm(['generate', '--model', model, '--prompt', 'x']),
      1,
      /model\.safetensors: cannot read safetensors file: is a folder, expected a file$/m,
    );
  });

  it('compare --out naming an existing file; eval --out naming a folder (refused before the model loads)', async () => {
    const dir = tempDir();
    writeFileSync(join(dir, 'afile'), 'x');
    const results = JSON.stringify({
      format: 'finllm.results.v1',
      model: 'm',
      adapter: null,
      task: 'generation',
      metrics: { rougeL: 0.5 },
      per_example: [
        { id: 'a', prediction: 'x', reference: 'y', scores: { rougeL: 0.5 } },
        { id: 'b', prediction: 'x', reference: 'y', scores: { rougeL: 0.4 } },
      ],
    });
    writeFileSync(join(dir, 'r.json'), results);
    expectFailure(
      finllm([
        'compare',
        '--base',
        join(dir, 'r.json'),
        '--candidate',
        join(dir, 'r.json'),
        '--out',
        join(dir, 'afile'),
      ]),
      1,
      /afile: cannot create this folder: a file is in the way/,
    );
    const data = writeJsonl(join(dir, 't.jsonl'), [{ text: 'Revenue rose.' }]);
    mkdirSync(join(dir, 'out'));
    expectFailure(
      finllm(['eval', '--model', MODEL, '--data', data, '--out', join(dir, 'out')]),
      1,
      /out: is a folder; expected the path of a file to write$/m,
    );
  });

  it('--task names one of the eval tasks, not a name every object inherits', () => {
    const dir = tempDir();
    const data = writeJsonl(join(dir, 't.jsonl'), [{ text: 'Revenue rose.' }]);
    for (const task of ['constructor', 'toString', '__proto__', 'nonsense'])
      expectFailure(
        finllm(['eval', '--model', MODEL, '--data', data, '--task', task]),
        1,
        new RegExp(`--task: unknown task "${task}"; expected one of perplexity, generation, classification$`, 'm'),
      );
  });

  it('--kv-cache other than f32, f16 or auto: generate, eval and serve exit 1 naming it, before a model loads', () => {
    const dir = tempDir();
    const data = writeJsonl(join(dir, 't.jsonl'), [{ text: 'Revenue rose.' }]);
    const bad = /--kv-cache: expected f32, f16, auto, got "fp8"$/m;
    expectFailure(finllm(['generate', '--model', MODEL, '--prompt', 'x', '--kv-cache', 'fp8']), 1, bad);
    expectFailure(
      finllm(['eval', '--model', MODEL, '--data', data, '--task', 'generation', '--kv-cache', 'fp8']),
      1,
      bad,
    );
    expectFailure(finllm(['serve', '--model', MODEL, '--port', '0', '--kv-cache', 'fp8']), 1, bad);
    expectFailure(
      finllm(['eval', '--model', MODEL, '--data', data, '--kv-cache', 'f16']),
      1,
      /--kv-cache applies to the generation and classification tasks/,
    );
  });

  it('a YAML alias bomb in a config', () => {
    const dir = tempDir();
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 9; i++)
      levels.push(
        `${'abcdefghi'[i]}: &${'abcdefghi'[i]} [${Array(9)
          .fill(`*${'abcdefghi'[i - 1]}`)
          .join(',')}]`,
      );
    writeFileSync(join(dir, 'bomb.yaml'), levels.join('\n') + '\n');
    expectFailure(
      finllm(['train', '--config', join(dir, 'bomb.yaml')], { timeoutMs: 60_000 }),
      1,
      /bomb\.yaml: invalid YAML: Excessive alias count/,
    );
  });

  it('an export destination that cannot be created: under a file, or where the file system refuses (no hang)', async () => {
    const dir = tempDir();
    const adapter = await makeAdapter(join(dir, 'adapter'));
    writeFileSync(join(dir, 'afile'), 'x');
    expectFailure(
      finllm(['export', '--model', MODEL, '--adapter', adapter, '--merged', join(dir, 'afile', 'merged')]),
      1,
      /afile: cannot create this folder: a file is in the way/,
    );
    expectFailure(
      finllm(['export', '--model', MODEL, '--adapter', adapter, '--merged', '/proc/finllm-nope/merged'], {
        timeoutMs: 60_000,
      }),
      1,
      /\/proc\/finllm-nope: cannot create this folder/,
    );
  });
});

describe('7. no silent nonsense', () => {
  it('compare of two files with no metric in common', () => {
    const dir = tempDir();
    const results = (metric: string) =>
      JSON.stringify({
        format: 'finllm.results.v1',
        model: 'm',
        adapter: null,
        task: 'generation',
        metrics: { [metric]: 0.5 },
        per_example: [{ id: 'a', prediction: 'x', reference: 'y', scores: { [metric]: 0.5 } }],
      });
    writeFileSync(join(dir, 'a.json'), results('rougeL'));
    writeFileSync(join(dir, 'b.json'), results('bleu'));
    expectFailure(
      finllm([
        'compare',
        '--base',
        join(dir, 'a.json'),
        '--candidate',
        join(dir, 'b.json'),
        '--out',
        join(dir, 'report'),
      ]),
      1,
      /no metric in common: .*a\.json scores rougeL; .*b\.json scores bleu/,
    );
    expect(existsSync(join(dir, 'report'))).toBe(false);
  });

  it('eval --tokens-per-pass 0 or negative', () => {
    const dir = tempDir();
    const data = writeJsonl(join(dir, 't.jsonl'), [{ text: 'Revenue rose.' }]);
    for (const v of ['0', '-5'])
      expectFailure(
        finllm(['eval', '--model', MODEL, '--data', data, '--tokens-per-pass', v]),
        1,
        new RegExp(`--tokens-per-pass: expected an integer >= 1, got "${v}"`),
      );
  });

  it('data.max_seq_len beyond max_position_embeddings is refused; eval texts past it and unused checkpoint tensors warn', async () => {
    const dir = tempDir();
    // The tiny model with 64 positions and two tensors it does not use (an extra layer, a stray name).
    const model = await copyModel(
      join(dir, 'model'),
      () => [
        { name: 'model.layers.2.mlp.up_proj.weight', shape: [160, 64], data: new Float32Array(160 * 64) },
        { name: 'model.stray.weight', shape: [3], data: new Float32Array(3) },
      ],
      (c) => {
        c['max_position_embeddings'] = 64;
      },
    );
    writeJsonl(
      join(dir, 'train.jsonl'),
      sampleTexts(2).map((text) => ({ text })),
    );
    expectFailure(
      finllm(['train', '--config', trainConfig(dir, model), '--set', 'data.max_seq_len=128']),
      1,
      /key 'data\.max_seq_len': 128 is more than the model's max_position_embeddings \(64/,
    );
    expect(existsSync(join(dir, 'run'))).toBe(false);
    const data = writeJsonl(join(dir, 't.jsonl'), [{ text: 'Revenue rose.' }, { text: sampleTexts(1)[0]! }]);
    const r = finllm(['eval', '--model', model, '--data', data, '--json']);
    expectSuccess(r);
    expect(r.stderr).toMatch(
      /^finllm: warning: .*model: 2 tensors are in the checkpoint but not used by a 2-layer Llama as config\.json describes it: model\.layers\.2\.mlp\.up_proj\.weight, model\.stray\.weight; check that config\.json matches the weights$/m,
    );
    expect(r.stderr).toMatch(
      /^finllm: warning: 1 text is longer than the model's max_position_embeddings \(64 tokens\) \(text 2: \d+\); .*extrapolation$/m,
    );
  });

  it('--resume with a tampered trainer_state.json or a changed learning rate is refused, naming the key; --allow-config-change lists and accepts', () => {
    const run = copyOfTrainedRun();
    const state = join(CKPT(join(run, 'run'), 2), 'trainer_state.json');
    const good = readFileSync(state, 'utf8');
    writeFileSync(state, good.replace(/"step": 2,/, '"step": -3,'));
    const resume = (...args: string[]) => finllm(['train', '--config', join(run, 'cfg.yaml'), '--resume', ...args]);
    expectFailure(resume(), 1, /trainer_state\.json, key 'step': .*\(got -3\)/);
    writeFileSync(state, good);
    const changed = resume('--set', 'training.lr=0.01', '--set', 'lora.dropout=0.1');
    expectFailure(
      changed,
      1,
      /the configuration differs from the one the checkpoint was made with .*: lora\.dropout: 0 -> 0\.1; training\.lr: 0\.001 -> 0\.01\. Resume with the same settings, pass --allow-config-change/,
    );
    const allowed = resume('--set', 'training.lr=0.01', '--set', 'training.max_steps=3', '--allow-config-change');
    expectSuccess(allowed);
    expect(allowed.stdout).toMatch(/^steps: 3$/m);
  });
});

describe('8. control characters from input files never reach the terminal raw', () => {
  it('data validate and score quote hostile file names and rows escaped', () => {
    const dir = tempDir();
    const hostile = join(dir, 'ev\u001b]0;owned\u0007il.jsonl');
    writeJsonl(hostile, [
      { text: 'A fine row about revenue growth in the quarter.' },
      { task: 'qa\u009b31m', question: 'q\u001b[2J?', context: 'c', answer: 'a' },
      { text: 7 },
    ]);
    const v = finllm([
      'data',
      'validate',
      '--set',
      `data.train=${hostile}`,
      '--set',
      'data.val=null',
      '--set',
      'data.on_invalid=skip',
    ]);
    expectSuccess(v);
    expect(v.stdout).toContain('ev\\x1b]0;owned\\x07il.jsonl row 2');
    expect(v.stdout).toContain('\\x9b');
    const s = finllm(['score', '--input', hostile]);
    expectFailure(s, 1, /ev\\x1b\]0;owned\\x07il\.jsonl, row 1, key 'prediction'/);
  });
});

describe("9. Dawn's two known limit notices are dropped from stderr, and only those", () => {
  it('a GPU verb prints nothing on stderr; other native stderr output passes the filter', () => {
    const r = finllm(['generate', '--model', MODEL, '--prompt', 'Revenue', '-n', '1']);
    expectSuccess(r);
    expect(r.stderr).toBe('');
    const script = `
      import { writeSync } from 'node:fs';
      import { withNativeStderrFiltered } from ${JSON.stringify(join(ROOT, 'dist/src/engine/native-stderr.js'))};
      withNativeStderrFiltered(() => writeSync(2, 'before\\nWarning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.\\nWarning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.\\nWarning: something else\\n'));
      process.stderr.write('after\\n');`;
    // In-process filtering needs a stderr it can reopen: a file opened for appending here.
    const log = join(tempDir(), 'stderr.log');
    const fd = openSync(log, 'a');
    const child = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'ignore', fd],
    });
    closeSync(fd);
    expect(child.status).toBe(0);
    expect(readFileSync(log, 'utf8')).toBe('before\nWarning: something else\nafter\n');
  });
});
