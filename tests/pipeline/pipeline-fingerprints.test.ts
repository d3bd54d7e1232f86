// What `finllm pipeline` fingerprints: settings that resolve per device (training.precision auto,
// the evaluations' precision and KV cache) as what they resolve to, every config setting in the
// fingerprints of exactly the stages that read it (and those downstream of them), and the
// resolved-config.yaml files: the run's (every section) and the trainer's (what training used).
// The device capability auto reads (f16 subgroup matrices) is forced on the engine's device.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { withPrecisionAsync } from '../../src/engine/precision.js';
import { engine } from '../../src/engine/tensor.js';
import { loadConfig, RESOLVED_CONFIG_NAME, type ResolvedConfig } from '../../src/pipeline/config.js';
import {
  fileFingerprint,
  type PipelineState,
  runPipeline,
  STAGES,
  type StageFingerprint,
  type StageName,
  stageFingerprints,
} from '../../src/pipeline/pipeline.js';
import { runDataSettings } from '../../src/pipeline/run-config.js';
import { useEngine } from '../helpers/index.js';
import { removeTinyPipelines, type TinySetup, tinyPipeline } from './tiny-pipeline.js';

useEngine();
afterAll(removeTinyPipelines);
afterEach(() => vi.restoreAllMocks());

/** Makes the engine's adapter report f16 subgroup matrices (tensor cores), or not: what `auto` resolves by. */
const forceTensorCores = (has: boolean) => vi.spyOn(engine().dev, 'hasF16SubgroupMatrix').mockReturnValue(has);

const byStage = (fps: StageFingerprint[]) => Object.fromEntries(fps.map((f) => [f.name, f.fingerprint]));

/** The stages whose fingerprint differs between two plans. */
const changedStages = (a: StageFingerprint[], b: StageFingerprint[]) =>
  STAGES.filter((s) => byStage(a)[s] !== byStage(b)[s]);

const outcomes = (r: Awaited<ReturnType<typeof runPipeline>>) =>
  Object.fromEntries(r.stages.map((s) => [s.name, s.outcome]));

describe('device-resolved settings in the fingerprints (no stage runs)', () => {
  let t: TinySetup;
  beforeAll(() => {
    t = tinyPipeline();
  });
  const cfg = (sets: string[] = []) => loadConfig({ file: t.config, sets });

  it('training.precision auto is fingerprinted as the precision it resolves to on the adapter', async () => {
    forceTensorCores(false);
    const autoHere = await stageFingerprints(cfg());
    expect(byStage(autoHere), 'auto without tensor cores is fp32').toEqual(
      byStage(await stageFingerprints(cfg(['training.precision=fp32']))),
    );
    forceTensorCores(true);
    const autoGpu = await stageFingerprints(cfg());
    expect(byStage(autoGpu), 'auto with tensor cores is fp16-mixed').toEqual(
      byStage(await stageFingerprints(cfg(['training.precision=fp16-mixed']))),
    );
    // Training and what reads it differ; the data and the base model's evaluation do not.
    expect(changedStages(autoHere, autoGpu)).toEqual(['train', 'finetuned_eval', 'compare', 'export']);
    const train = (fps: StageFingerprint[]) => fps.find((f) => f.name === 'train')!.inputs!;
    const a = train(autoHere);
    const b = train(autoGpu);
    expect(Object.keys(a).filter((k) => a[k] !== b[k])).toEqual(['config.training']);
  });

  it('the evaluations are fingerprinted with the engine precision they run in and the KV cache dtype it implies', async () => {
    const fp32 = await stageFingerprints(cfg());
    const fp16 = await withPrecisionAsync('fp16-mixed', () => stageFingerprints(cfg()));
    expect(changedStages(fp32, fp16)).toEqual(['baseline_eval', 'finetuned_eval', 'compare']);
    const base = (fps: StageFingerprint[]) => fps.find((f) => f.name === 'baseline_eval')!.inputs!;
    const a = base(fp32);
    const b = base(fp16);
    // evaluate.sampling carries kvCache: auto resolves to f16 under fp16-mixed, f32 under fp32.
    expect(
      Object.keys(a)
        .filter((k) => a[k] !== b[k])
        .sort(),
    ).toEqual(['evaluate.precision', 'evaluate.sampling']);
  });
});

describe('the model folder fingerprint', () => {
  it('follows symlinks (an HF cache snapshot links each file to its blob): the same files give the same fingerprint', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-fingerprint-'));
    try {
      const files = { 'config.json': '{"hidden_size": 8}', 'model.safetensors': 'weights v1' };
      for (const sub of ['blobs', 'snapshot', 'copy']) mkdirSync(join(dir, sub));
      for (const [name, text] of Object.entries(files)) {
        writeFileSync(join(dir, 'blobs', `${name}.blob`), text);
        symlinkSync(join('..', 'blobs', `${name}.blob`), join(dir, 'snapshot', name));
        writeFileSync(join(dir, 'copy', name), text);
      }
      const snapshot = await fileFingerprint(join(dir, 'snapshot'));
      expect(snapshot).toBe(await fileFingerprint(join(dir, 'copy')));
      expect(snapshot).not.toBe(await fileFingerprint(join(dir, 'blobs')));
      // Other weights behind the same link: another fingerprint.
      writeFileSync(join(dir, 'blobs', 'model.safetensors.blob'), 'weights v2');
      expect(await fileFingerprint(join(dir, 'snapshot'))).not.toBe(snapshot);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Which stages read each config setting (longest matching key wins). A setting added to the config
// must be placed here: the test below then checks that the stages reading it are re-run when it
// changes, and no others.
const READERS: [string, StageName[]][] = [
  // The model folder: the tokenizer (data), the weights (training, both evaluations), merging (export).
  ['model.path', ['data', 'baseline_eval', 'train', 'finetuned_eval', 'export']],
  // quantize, storage: how the base model is loaded to train and to evaluate.
  ['model', ['baseline_eval', 'train', 'finetuned_eval']],
  ['lora', ['train']],
  // The prompt layout: the training data's, and the evaluation records' too.
  ['data.columns', ['data', 'baseline_eval', 'train']],
  ['data.template', ['data', 'baseline_eval', 'train']],
  ['data.preprocess', ['data', 'baseline_eval', 'train']],
  ['data', ['data', 'train']],
  ['training.seed', ['data', 'train']],
  // When training checkpoints, not what it computes: a finished training stage stays done.
  ['training.resume', []],
  ['training.save_every', []],
  ['training.keep_last_checkpoints', []],
  ['training', ['train']],
  // The run folder itself, and whether progress is printed: no stage's output depends on them.
  ['output.dir', []],
  ['output.export_merged', ['export']],
  ['logging.console', []],
  ['logging', ['train']],
  ['eval.alpha', ['compare']],
  ['eval.resamples', ['compare']],
  ['eval', ['baseline_eval', 'finetuned_eval']],
];

/** The stages each stage reads outputs of. */
const READS_FROM: Record<StageName, StageName[]> = {
  data: [],
  baseline_eval: [],
  train: ['data'],
  finetuned_eval: ['train'],
  compare: ['baseline_eval', 'finetuned_eval', 'train'],
  export: ['train'],
};

/** `direct` and every stage downstream of one of them, in stage order. */
function withDownstream(direct: readonly StageName[]): StageName[] {
  const out = new Set(direct);
  for (const s of STAGES) if (READS_FROM[s].some((d) => out.has(d))) out.add(s);
  return STAGES.filter((s) => out.has(s));
}

/** Every leaf of the config's sections as [dotted key, value] (list items by index, a list of strings whole). */
function leaves(value: unknown, key: string, out: [string, unknown][] = []): [string, unknown][] {
  const isObject = value !== null && typeof value === 'object' && !Array.isArray(value);
  const isRecordList = Array.isArray(value) && value.some((v) => v !== null && typeof v === 'object');
  if (isObject || isRecordList) {
    for (const [k, v] of Object.entries(value as object)) leaves(v, key ? `${key}.${k}` : k, out);
  } else {
    out.push([key, value]);
  }
  return out;
}

/** Another value of the same kind (fingerprints hash values; no stage runs, so validity does not matter). */
function otherValue(v: unknown): unknown {
  if (typeof v === 'number') return v + 1;
  if (typeof v === 'boolean') return !v;
  if (typeof v === 'string') return `${v}-changed`;
  if (Array.isArray(v)) return [...v, 'changed'];
  if (v === null) return 3;
  throw new Error(`no other value for ${JSON.stringify(v)}`);
}

function withLeaf(cfg: ResolvedConfig, key: string, value: unknown): ResolvedConfig {
  const copy = structuredClone(cfg);
  const path = key.split('.');
  let at = copy as unknown as Record<string, unknown>;
  for (const p of path.slice(0, -1)) at = at[p] as Record<string, unknown>;
  at[path.at(-1)!] = value;
  return copy;
}

describe('every config setting is in the fingerprint of the stages that read it', () => {
  it('changing one setting changes the fingerprints of its readers and their downstream stages, and no others', async () => {
    const t = tinyPipeline({ evalOverride: '  limit: 2\n' });
    // data.val set and eval.limit set: the settings that are null by default are covered by the others.
    const cfg = loadConfig({ file: t.config, sets: ['training.early_stopping.patience=2'] });
    const { source: _source, ...sections } = cfg;
    const all = leaves(sections, '');
    expect(all.length).toBeGreaterThan(60);
    const base = await stageFingerprints(cfg);
    const unplaced: string[] = [];
    const wrong: string[] = [];
    for (const [key, value] of all) {
      const readers = READERS.filter(([k]) => key === k || key.startsWith(`${k}.`)).sort(
        (a, b) => b[0].length - a[0].length,
      )[0];
      if (!readers) {
        unplaced.push(key);
        continue;
      }
      const expected = withDownstream(readers[1]);
      const changed = changedStages(base, await stageFingerprints(withLeaf(cfg, key, otherValue(value))));
      if (JSON.stringify(changed) !== JSON.stringify(expected))
        wrong.push(`${key}: re-runs [${changed.join(', ')}], its readers need [${expected.join(', ')}]`);
    }
    expect(unplaced, 'settings no entry of READERS places').toEqual([]);
    expect(wrong).toEqual([]);
  });
});

const readState = (runDir: string) =>
  JSON.parse(readFileSync(join(runDir, 'pipeline-state.json'), 'utf8')) as PipelineState;
const readYaml = (file: string) => readFileSync(file, 'utf8');
const trainSummary = (runDir: string) =>
  JSON.parse(readFileSync(join(runDir, 'stages', 'train', 'train-summary.json'), 'utf8')) as { precision: string };

describe('a run folder re-run where training.precision auto resolves otherwise (tiny model)', () => {
  let t: TinySetup;
  const run = (sets: string[] = []) => runPipeline(loadConfig({ file: t.config, sets }), { quiet: true });
  beforeAll(async () => {
    t = tinyPipeline({ evalOverride: '  limit: 2\n' });
  });

  it('trains again when auto means another precision, skips when it means the same', async () => {
    forceTensorCores(false);
    expect(Object.values(outcomes(await run()))).toEqual(STAGES.map(() => 'ran'));
    expect(trainSummary(t.runDir).precision).toBe('fp32');

    // The same folder where auto means fp16-mixed (shader-f16 is what fp16-mixed needs to run here).
    forceTensorCores(true);
    const gpu = await run();
    expect(outcomes(gpu)).toEqual({
      data: 'skipped (done)',
      baseline_eval: 'skipped (done)',
      train: 'ran',
      finetuned_eval: 'ran',
      compare: 'ran',
      export: 'ran',
    });
    expect(trainSummary(t.runDir).precision).toBe('fp16-mixed');
    expect(Object.values(outcomes(await run()))).toEqual(STAGES.map(() => 'skipped (done)'));

    // And back: a folder trained where auto meant fp16-mixed is not taken as done where it means fp32.
    forceTensorCores(false);
    expect(outcomes(await run()).train).toBe('ran');
    expect(trainSummary(t.runDir).precision).toBe('fp32');
  });

  it('the resolved configs: the run one has every section and the resolved precision; the trainer one what training used', async () => {
    forceTensorCores(false);
    const trainYaml = join(t.runDir, 'stages', 'train', RESOLVED_CONFIG_NAME);
    const trainBefore = readYaml(trainYaml);
    const trainState = readState(t.runDir).stages.train;
    // An eval-only change: training is skipped, and its resolved config (no eval section) stays as it was.
    const r = await run(['eval.max_new_tokens=3']);
    expect(outcomes(r).train).toBe('skipped (done)');
    expect(readState(t.runDir).stages.train).toEqual(trainState);
    expect(readYaml(trainYaml)).toBe(trainBefore);
    const trained = loadConfig({ file: trainYaml, env: '' });
    expect(trained.eval).toBeNull();
    expect(trained.training.precision).toBe('fp32');

    // The run's resolved config shows what the evaluations just used, and how auto was resolved.
    const runYaml = join(t.runDir, RESOLVED_CONFIG_NAME);
    expect(readYaml(runYaml)).toMatch(/^# training\.precision: auto -> fp32 \(no f16 subgroup matrices: .+\)$/m);
    const ran = loadConfig({ file: runYaml, env: '' });
    expect(ran.eval?.max_new_tokens).toBe(3);
    expect(ran.eval?.limit).toBe(2);
    expect(ran.training.precision).toBe('fp32');
    const { source: _a, output: runOutput, eval: _e, ...runSections } = ran;
    const { source: _b, output: trainOutput, eval: _f, ...trainSections } = trained;
    expect(runSections, 'the sections training reads agree').toEqual(trainSections);
    expect(runOutput.dir).toBe(t.runDir);
    expect(trainOutput.dir).toBe(join(t.runDir, 'stages', 'train'));

    // `finllm eval --run <output.dir>` and `--adapter <stages/train/adapter>` both find the data settings.
    const fromRun = runDataSettings(t.runDir, []);
    expect(fromRun.from).toBe(runYaml);
    const fromAdapter = runDataSettings(undefined, [join(t.runDir, 'stages', 'train', 'adapter')]);
    expect(fromAdapter.from).toBe(trainYaml);
    expect(fromAdapter.template).toBe(fromRun.template);
    expect(fromAdapter.columns).toEqual(fromRun.columns);
    // The exported adapter carries the training settings too (export copies the trainer's file).
    const fromExport = runDataSettings(undefined, [join(t.runDir, 'stages', 'export', 'adapter')]);
    expect(fromExport.from).toBe(join(t.runDir, 'stages', 'export', RESOLVED_CONFIG_NAME));
    expect(readYaml(fromExport.from!)).toBe(trainBefore);
  });
});
