// `finllm pipeline`: the whole recipe in one run folder, resumable stage by stage.
//
//   data → baseline_eval → train → finetuned_eval → compare → export
//
// Each stage writes into <output.dir>/stages/<stage>/ and is recorded in
// <output.dir>/pipeline-state.json with a fingerprint of its inputs (config values, input files,
// the fingerprints of the stages it reads from). A stage's fingerprint covers every config value its
// work reads because both come from one description of the stage: dataSpec, evalSpec (evaluate()'s
// options, the prompt layout data.columns/template/preprocess included) and trainConfig. On a
// re-run a stage whose record says done, whose fingerprint is unchanged and whose outputs still exist
// is skipped; a changed input re-runs that stage and, through the fingerprints, everything downstream
// of it. A failed stage stops the run with an error naming it; what the earlier stages wrote stays,
// so fixing the input and re-running continues from there. An interrupted training stage resumes
// from its latest checkpoint.
//
// Settings that resolve per device are fingerprinted as what they resolve to where the run happens:
// training.precision `auto` is fp16-mixed on an adapter with f16 subgroup matrices and fp32 elsewhere,
// so a run trained on one machine is trained again on a machine where auto means the other precision.
// The trainer is given the resolved precision, so what it runs with and what is fingerprinted are one
// value. The evaluations run in the engine's precision when the pipeline starts (fp32 unless the
// caller set another; the config has no eval precision), with the KV cache dtype it implies, both
// fingerprinted. training.batch_size `auto` stays `auto` in the fingerprint: the micro-batch is chosen
// for memory from the effective batch (batch_size × grad_accum, or effective_batch_size), which is
// fingerprinted and fixes what each optimizer step averages; choosing the split needs a trial step.
//
// <output.dir>/resolved-config.yaml is the run's configuration, written at the start of every run
// with every section (eval included) and device-resolved settings in place: what `finllm eval --run`
// reads. stages/train/resolved-config.yaml is the trainer's and holds what training used (no eval
// section): an eval-only change re-runs the evaluations, not training, and leaves it as it was.
//
// Stage outputs:
//   data/            data-report.json, data-report.txt (the data stage's validation and statistics)
//   baseline_eval/   <suite>.results.json (finllm.results.v1) or <suite>.perplexity.json, base model
//   train/           the trainer's run folder: adapter/ (LoRA) or model/ (full), checkpoints/, metrics.jsonl, ...
//   finetuned_eval/  as baseline_eval, base model + the trained adapter, or the fully trained model
//   compare/         <suite>/report.html, summary.md, report.json (finllm compare), summary.md/json
//   export/          adapter/ (PEFT) and merged/ when output.export_merged; model/ under full training;
//                    the trainer's resolved-config.yaml (the prompt layout eval/generate/serve read)
//   resolved-config.yaml  (in <output.dir>) the run's configuration, see above
//
// Both evaluations load the base model as the config says (model.quantize, model.storage), so the
// comparison isolates the adapter (or, under full training, the trained weights). Without an `eval`
// section the evaluation and compare stages are recorded as skipped.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { cp, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { basename, extname, join, relative } from 'node:path';
import {
  autoPrecisionReason,
  computePrecision,
  type Precision,
  type PrecisionSetting,
  resolvePrecision,
  withPrecision,
  withPrecisionAsync,
} from '../engine/precision.js';
import { initEngine } from '../engine/tensor.js';
import { InputError, Interrupted, RuntimeFailure } from '../errors.js';
import { ensureFolder, writeFileAtomic } from '../io/atomic.js';
import { loadLlamaConfig } from '../llama/config.js';
import { resolveKvCacheDtype } from '../llama/kv-cache.js';
import { exportMerged } from '../llama/merge.js';
import type { LoadModelOptions } from '../llama/model.js';
import { LlamaTokenizer } from '../llama/tokenizer.js';
import {
  type EvalConfig,
  type EvalSuiteConfig,
  RESOLVED_CONFIG_NAME,
  type ResolvedConfig,
  saveResolvedConfig,
  withLocalModel,
} from './config.js';
import { type DataStageConfig, formatReport, prepareData, saveReport } from './data/index.js';
import { type Comparison, compareResults } from './eval/compare.js';
import type { EvalMetric } from './eval/generation.js';
import { readPerplexity } from './eval/perplexity.js';
import { REPORT_FORMAT, readReportVerdict, writeReport } from './eval/report.js';
import { readResults, readTrainingLog } from './eval/results.js';
import { type EvalDataSettings, type EvalSuite, type EvaluateOptions, evaluate } from './eval/run.js';
import { verdictLine } from './eval/verdict.js';
import { checkSeqLenFitsModel } from './train/checks.js';
import { CHECKPOINTING_KEYS } from './train/resume.js';
import { runTraining } from './train/trainer.js';

export const STAGES = ['data', 'baseline_eval', 'train', 'finetuned_eval', 'compare', 'export'] as const;
export type StageName = (typeof STAGES)[number];

export const PIPELINE_STATE_FILE = 'pipeline-state.json';
export const PIPELINE_STATE_FORMAT = 'finllm.pipeline-state.v1';

export interface StageRecord {
  status: 'running' | 'done' | 'failed' | 'skipped';
  /** sha256 over `inputs`. */
  fingerprint: string;
  /** What the fingerprint covers: input name → its own sha256 (files: content, or size+mtime above 64 MiB). */
  inputs: Record<string, string>;
  /** Files and folders written, relative to the run folder. */
  outputs: string[];
  started_at: string;
  finished_at?: string;
  seconds?: number;
  error?: string;
  note?: string;
}

export interface PipelineState {
  format: typeof PIPELINE_STATE_FORMAT;
  stages: Partial<Record<StageName, StageRecord>>;
}

export interface PipelineOptions {
  /** No progress output (stage lines, progress bars, the trainer's console). */
  quiet?: boolean;
  /** Stage lines (default: stderr unless quiet). */
  log?: (line: string) => void;
  /** Run this stage and everything after it even when recorded as done. */
  rerunFrom?: StageName;
}

export interface SuiteReport {
  suite: string;
  dir: string;
  html: string;
  markdown: string;
  json: string;
  /** The suite's verdict line (verdict.ts), as `finllm compare` prints it; null for a report without one. */
  verdict: string | null;
}

export interface PipelineResult {
  runDir: string;
  stateFile: string;
  /** What happened to each stage in this run. */
  stages: { name: StageName; outcome: 'ran' | 'skipped (done)' | 'skipped (no eval section)'; seconds: number }[];
  reports: SuiteReport[];
  adapterDir: string | null;
  /** The fully trained model (training.method full). */
  modelDir: string | null;
  mergedDir: string | null;
}

/** A stage failed for a reason that is not bad input (bad input stays an InputError). */
export class PipelineStageError extends RuntimeFailure {
  override name = 'PipelineStageError';
  constructor(
    readonly stage: StageName,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

// ---------------------------------------------------------------------------------------------
// Fingerprints

const sha256 = (s: string | Buffer) => createHash('sha256').update(s).digest('hex');

/** Files up to this size are hashed by content; larger ones (model weights) by size and mtime. */
const HASH_CONTENT_LIMIT = 64 << 20;

export async function fileFingerprint(path: string): Promise<string> {
  let s: Awaited<ReturnType<typeof stat>>;
  try {
    s = await stat(path);
  } catch {
    return 'missing';
  }
  if (s.isDirectory()) {
    // A model or adapter folder: its files, not recursing (HF folders are flat). A file may be a
    // symlink (an HF cache snapshot links every file to its blob): what it points at is hashed.
    const parts: string[] = [];
    for (const d of (await readdir(path, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const file = join(path, d.name);
      if (d.isFile() || (d.isSymbolicLink() && (await stat(file).catch(() => null))?.isFile()))
        parts.push(`${d.name}:${await fileFingerprint(file)}`);
    }
    return sha256(parts.join('\n'));
  }
  if (s.size > HASH_CONTENT_LIMIT) return sha256(`size:${s.size};mtime:${s.mtimeMs}`);
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

const valueFingerprint = (v: unknown) => sha256(JSON.stringify(v ?? null));

function combine(inputs: Record<string, string>): string {
  return sha256(
    Object.keys(inputs)
      .sort()
      .map((k) => `${k}=${inputs[k]}`)
      .join('\n'),
  );
}

// ---------------------------------------------------------------------------------------------
// State

export async function readPipelineState(runDir: string): Promise<PipelineState> {
  const file = join(runDir, PIPELINE_STATE_FILE);
  if (!existsSync(file)) return { format: PIPELINE_STATE_FORMAT, stages: {} };
  let parsed: unknown;
  try {
    parsed = JSON.parse(await readFile(file, 'utf8'));
  } catch (err) {
    throw new InputError(`pipeline state is not valid JSON (${(err as Error).message}); delete it to start over`, {
      file,
    });
  }
  const st = parsed as Partial<PipelineState>;
  if (st.format !== PIPELINE_STATE_FORMAT || typeof st.stages !== 'object' || st.stages === null) {
    throw new InputError(
      `expected a ${PIPELINE_STATE_FORMAT} file, got ${JSON.stringify(st.format)}; delete it to start over`,
      { file },
    );
  }
  return st as PipelineState;
}

async function saveState(runDir: string, state: PipelineState): Promise<void> {
  await writeFileAtomic(join(runDir, PIPELINE_STATE_FILE), JSON.stringify(state, null, 2) + '\n');
}

// ---------------------------------------------------------------------------------------------
// Stages

interface Suite {
  name: string;
  cfg: EvalSuiteConfig;
}

/** Suite names (default: file name without extension), checked to be unique. */
export function evalSuites(ev: EvalConfig): Suite[] {
  const seen = new Set<string>();
  return ev.suites.map((s, i) => {
    const name = s.name ?? basename(s.file, extname(s.file));
    if (!/^[A-Za-z0-9_.-]+$/.test(name))
      throw new InputError(
        `suite name ${JSON.stringify(name)} (from its file name) may hold letters, digits, _ . - only; set eval.suites[${i}].name`,
        { key: `eval.suites.${i}.name` },
      );
    if (seen.has(name))
      throw new InputError(`two eval suites are named ${JSON.stringify(name)}; set eval.suites[${i}].name`, {
        key: `eval.suites.${i}.name`,
      });
    seen.add(name);
    return { name, cfg: s };
  });
}

const resultsFile = (dir: string, suite: { name: string; task: EvalSuite['task'] }) =>
  join(dir, suite.task === 'perplexity' ? `${suite.name}.perplexity.json` : `${suite.name}.results.json`);

/**
 * What an evaluation stage runs: evaluate()'s options as the config sets them, less where the results
 * go and what the progress bars say. The one description of what an evaluation depends on: the stages
 * run it (evalOptions) and fingerprint it (evalInputs).
 */
interface EvalSpec {
  /** The base model: weights (unless a fully trained model is evaluated), tokenizer and embedding model. */
  model: string;
  load: LoadModelOptions;
  suites: (EvalSuite & { name: string })[];
  data: EvalDataSettings;
  maxNewTokens: number;
  /** kvCache: the dtype `auto` resolves to under `precision`, so the fingerprint names what decoding stores. */
  sampling: NonNullable<EvaluateOptions['sampling']>;
  /** The engine precision evaluate() runs in. */
  precision: Precision;
}

function evalSpec(cfg: ResolvedConfig, ev: EvalConfig, precision: Precision): EvalSpec {
  return {
    model: cfg.model.path,
    load: { storage: cfg.model.storage, ...(cfg.model.quantize === 'nf4' ? { quantize: 'nf4' as const } : {}) },
    suites: evalSuites(ev).map((suite) => ({
      file: suite.cfg.file,
      task: suite.cfg.task,
      name: suite.name,
      limit: suite.cfg.limit ?? ev.limit,
      // Perplexity suites are {"text"} records whatever the training data's columns.
      ...(suite.cfg.task === 'perplexity'
        ? { textColumn: 'text' }
        : { metrics: suite.cfg.metrics as EvalMetric[] | null, addEmbeddingMetrics: ev.embeddings }),
    })),
    // The suites' records are prompted as the training data was (data.columns, data.template).
    data: {
      columns: cfg.data.columns,
      template: cfg.data.template,
      preprocess: {
        unicode: cfg.data.preprocess.unicode,
        whitespace: cfg.data.preprocess.whitespace,
        speakerTurns: cfg.data.preprocess.speaker_turns,
      },
    },
    maxNewTokens: ev.max_new_tokens,
    sampling: {
      greedy: ev.sampling.greedy,
      temperature: ev.sampling.temperature,
      topK: ev.sampling.top_k,
      topP: ev.sampling.top_p,
      repetitionPenalty: ev.sampling.repetition_penalty,
      seed: ev.sampling.seed,
      kvCache: withPrecision(precision, () => resolveKvCacheDtype('auto')),
    },
    precision,
  };
}

/** What an evaluation stage evaluates: the base model, base + adapter, or a fully trained model folder. */
interface EvaluatedModel {
  adapter?: string;
  model?: string;
}

/** evaluate()'s options for one evaluation stage: `spec`, writing every suite's results into `outDir`. */
function evalOptions(
  spec: EvalSpec,
  outDir: string,
  label: string,
  evaluated: EvaluatedModel,
  quiet: boolean,
): EvaluateOptions {
  return {
    modelDir: evaluated.model ?? spec.model,
    load: { ...spec.load, ...(evaluated.adapter ? { adapter: evaluated.adapter } : {}) },
    tokenizerDir: spec.model,
    embeddingModelDir: spec.model,
    suites: spec.suites.map((s) => ({ ...s, out: resultsFile(outDir, s), label: `${label} ${s.name}` })),
    data: spec.data,
    maxNewTokens: spec.maxNewTokens,
    sampling: spec.sampling,
    quiet,
  };
}

function metricsLine(c: Comparison): string {
  return c.metrics
    .map((m) =>
      m.n === 0
        ? `${m.metric} n/a (no example has a value)`
        : `${m.metric} ${m.baseMean.toFixed(4)} → ${m.candidateMean.toFixed(4)} (${m.role}, ${m.verdict})`,
    )
    .join('; ');
}

async function runCompareStage(
  ev: EvalConfig,
  baseDir: string,
  candDir: string,
  trainDir: string,
  outDir: string,
): Promise<{ written: string[]; reports: SuiteReport[] }> {
  const suites = evalSuites(ev);
  const logFile = join(trainDir, 'metrics.jsonl');
  const trainingLog = existsSync(logFile) ? await readTrainingLog(logFile) : undefined;
  const reports: SuiteReport[] = [];
  const summary: Record<string, unknown>[] = [];
  const md: string[] = ['# Fine-tuned vs base', ''];
  for (const suite of suites) {
    const baseFile = resultsFile(baseDir, { name: suite.name, task: suite.cfg.task });
    const candFile = resultsFile(candDir, { name: suite.name, task: suite.cfg.task });
    if (suite.cfg.task === 'perplexity') {
      const b = await readPerplexity(baseFile);
      const c = await readPerplexity(candFile);
      summary.push({
        suite: suite.name,
        task: 'perplexity',
        base: { loss: b.loss, perplexity: b.perplexity },
        candidate: { loss: c.loss, perplexity: c.perplexity },
      });
      md.push(
        `- **${suite.name}** (perplexity, lower is better): base ${b.perplexity.toFixed(3)} → fine-tuned ${c.perplexity.toFixed(3)}`,
      );
      continue;
    }
    const cmp = compareResults(await readResults(baseFile), await readResults(candFile), {
      alpha: ev.alpha,
      resamples: ev.resamples,
      baseFile,
      candidateFile: candFile,
    });
    if (trainingLog) cmp.trainingLog = trainingLog;
    const dir = join(outDir, suite.name);
    const paths = await writeReport(dir, cmp);
    const line = verdictLine(suite.name, cmp.suite);
    reports.push({ suite: suite.name, dir, ...paths, verdict: line });
    summary.push({
      suite: suite.name,
      task: suite.cfg.task,
      examples: cmp.nExamples,
      report: relative(outDir, paths.html),
      verdict: cmp.suite.verdict,
      verdict_line: line,
      primary: cmp.suite.primary,
      metrics: cmp.metrics.map((m) => ({
        metric: m.metric,
        role: m.role,
        base: m.baseMean,
        candidate: m.candidateMean,
        diff: m.meanDiff,
        p_holm: m.pHolm,
        p_better: m.pBetter,
        verdict: m.verdict,
      })),
    });
    md.push(
      `- **${suite.name}** (${suite.cfg.task}, ${cmp.nExamples} examples, [report](${relative(outDir, paths.html)})): **${cmp.suite.verdict}** — ${cmp.suite.reasons.join('; ')}. Metrics: ${metricsLine(cmp) || 'no metric to compare'}`,
    );
  }
  const summaryJson = join(outDir, 'summary.json');
  const summaryMd = join(outDir, 'summary.md');
  await writeFileAtomic(summaryJson, JSON.stringify({ suites: summary }, null, 2) + '\n');
  await writeFileAtomic(summaryMd, md.join('\n') + '\n');
  return { written: [...reports.map((r) => r.dir), summaryJson, summaryMd], reports };
}

// ---------------------------------------------------------------------------------------------
// The stage table

interface StageSpec {
  name: StageName;
  /** Null: the stage does not apply (recorded as skipped). */
  inputs: () => Promise<Record<string, string> | null>;
  run: (dir: string) => Promise<string[]>;
  /** Keep the stage folder when re-running the same fingerprint (training resumes from checkpoints). */
  resumable?: boolean;
  /** Called instead of `run` when the stage is skipped as done (the compare stage reads its reports back). */
  reuse?: (dir: string) => Promise<void>;
}

/** What the stages share within one run. */
interface PipelineRun {
  cfg: ResolvedConfig;
  ev: EvalConfig | null;
  quiet: boolean;
  runDir: string;
  /** The fingerprint of cfg.model.path's folder. */
  modelFp: string;
  /** training.precision resolved on this process's adapter: what the trainer runs with. */
  trainingPrecision: Precision;
  /** The engine precision the evaluations run in. */
  evalPrecision: Precision;
  /** Each stage's fingerprint once decided: later stages include those of the stages they read from. */
  fp: Partial<Record<StageName, string>>;
  /** The comparison reports, written by the compare stage or read back when it is skipped. */
  reports: SuiteReport[];
}

const stageDir = (run: PipelineRun, stage: StageName) => join(run.runDir, 'stages', stage);
const trainedAdapterDir = (run: PipelineRun) => join(stageDir(run, 'train'), 'adapter');
const trainedModelDir = (run: PipelineRun) => join(stageDir(run, 'train'), 'model');

/** The six stages in order, each with its inputs and its work. */
function stageTable(run: PipelineRun): StageSpec[] {
  return [
    dataStage(run),
    evalStage(run, 'baseline_eval'),
    trainStage(run),
    evalStage(run, 'finetuned_eval'),
    compareStage(run),
    exportStage(run),
  ];
}

/** One fingerprint input per field of what a stage reads, named `<prefix>.<field>`. */
function specInputs(prefix: string, spec: object): Record<string, string> {
  return Object.fromEntries(Object.entries(spec).map(([k, v]) => [`${prefix}.${k}`, valueFingerprint(v)]));
}

/** What the data stage reads from the config (besides the model folder and the data files). */
function dataSpec(cfg: ResolvedConfig): DataStageConfig {
  return { data: cfg.data, training: { seed: cfg.training.seed } };
}

function dataStage(run: PipelineRun): StageSpec {
  const { cfg } = run;
  const spec = dataSpec(cfg);
  return {
    name: 'data',
    inputs: async () => ({
      model: run.modelFp,
      'config.data': valueFingerprint(spec.data),
      'config.training.seed': valueFingerprint(spec.training.seed),
      'data.train': await fileFingerprint(spec.data.train),
      ...(spec.data.val ? { 'data.val': await fileFingerprint(spec.data.val) } : {}),
    }),
    run: async (dir) => {
      checkSeqLenFitsModel(cfg, await loadLlamaConfig(cfg.model.path));
      const tokenizer = await LlamaTokenizer.load(cfg.model.path);
      const prepared = await prepareData(spec, tokenizer);
      saveReport(prepared.report, join(dir, 'data-report.json'));
      await writeFileAtomic(join(dir, 'data-report.txt'), formatReport(prepared.report) + '\n');
      if (prepared.train.length === 0)
        throw new InputError('the data stage left no training examples', { file: cfg.data.train });
      return [join(dir, 'data-report.json'), join(dir, 'data-report.txt')];
    },
  };
}

/** What an evaluation stage reads: the model folder, every evaluate() option of `spec`, the suites' files. */
async function evalInputs(run: PipelineRun, spec: EvalSpec): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  for (const s of spec.suites) files[`eval.${s.name}`] = await fileFingerprint(s.file);
  return { model: run.modelFp, ...specInputs('evaluate', spec), ...files };
}

/**
 * baseline_eval: the base model; finetuned_eval: base + the trained adapter, or the fully trained
 * model. Neither applies without an eval section.
 */
function evalStage(run: PipelineRun, name: 'baseline_eval' | 'finetuned_eval'): StageSpec {
  const { cfg, ev, quiet } = run;
  const spec = ev ? evalSpec(cfg, ev, run.evalPrecision) : null;
  const baseline = name === 'baseline_eval';
  const evaluated: EvaluatedModel = baseline
    ? {}
    : cfg.training.method === 'full'
      ? { model: trainedModelDir(run) }
      : { adapter: trainedAdapterDir(run) };
  return {
    name,
    inputs: async () => {
      if (!spec) return null;
      const inputs = await evalInputs(run, spec);
      return baseline ? inputs : { ...inputs, train: run.fp.train! };
    },
    run: async (dir) => {
      const options = evalOptions(spec!, dir, baseline ? 'baseline' : 'fine-tuned', evaluated, quiet);
      const outcomes = await withPrecisionAsync(spec!.precision, () => evaluate(options));
      return outcomes.map((o) => o.out!);
    },
  };
}

/**
 * The run's config with the settings that resolve per device in place (training.precision): what
 * the stages run with and what <output.dir>/resolved-config.yaml records.
 */
function runConfig(cfg: ResolvedConfig, trainingPrecision: Precision): ResolvedConfig {
  return { ...cfg, training: { ...cfg.training, precision: trainingPrecision } };
}

/**
 * The config the trainer runs with: the run's (precision resolved), writing into the stage folder
 * (merging is the export stage's job), without the eval section it does not read, so the
 * resolved-config.yaml it writes beside the trained model holds only what training used.
 */
function trainConfig(cfg: ResolvedConfig, trainingPrecision: Precision, dir: string): ResolvedConfig {
  const run = runConfig(cfg, trainingPrecision);
  return { ...run, eval: null, output: { ...run.output, dir, export_merged: false } };
}

/**
 * The train stage's config inputs: every section of the trainer's config, less its provenance
 * (`source`), the eval section (null there), the folder it writes into, the console switch and
 * when it checkpoints (CHECKPOINTING_KEYS: a finished stage is not re-trained for those).
 */
function trainConfigInputs(trainCfg: ResolvedConfig): Record<string, string> {
  const { source: _source, eval: _eval, output, logging, training, ...sections } = trainCfg;
  const { dir: _dir, ...exported } = output;
  const { console: _console, ...written } = logging;
  const computed = Object.fromEntries(
    Object.entries(training).filter(([k]) => !(CHECKPOINTING_KEYS as readonly string[]).includes(k)),
  );
  return specInputs('config', { ...sections, training: computed, output: exported, logging: written });
}

function trainStage(run: PipelineRun): StageSpec {
  const { cfg, quiet } = run;
  const trainCfg = trainConfig(cfg, run.trainingPrecision, stageDir(run, 'train'));
  return {
    name: 'train',
    resumable: true,
    inputs: async () => ({ data: run.fp.data!, model: run.modelFp, ...trainConfigInputs(trainCfg) }),
    run: async (dir) => {
      const r = await runTraining(trainCfg, { resume: true, quiet });
      if (r.interrupted)
        throw new Interrupted(
          r.signal ?? 'SIGINT',
          'training was interrupted (its checkpoint is kept): re-run the pipeline to resume',
        );
      return [r.adapterDir ?? r.modelDir!, join(dir, 'metrics.jsonl'), join(dir, 'tensorboard')].filter((p) =>
        existsSync(p),
      );
    },
  };
}

function compareStage(run: PipelineRun): StageSpec {
  const { ev } = run;
  return {
    name: 'compare',
    inputs: async () =>
      ev
        ? {
            baseline_eval: run.fp.baseline_eval!,
            finetuned_eval: run.fp.finetuned_eval!,
            train: run.fp.train!,
            'config.eval.stats': valueFingerprint({ alpha: ev.alpha, resamples: ev.resamples }),
            report: valueFingerprint(REPORT_FORMAT),
          }
        : null,
    run: async (dir) => {
      const r = await runCompareStage(
        ev!,
        stageDir(run, 'baseline_eval'),
        stageDir(run, 'finetuned_eval'),
        stageDir(run, 'train'),
        dir,
      );
      run.reports.push(...r.reports);
      return r.written;
    },
    reuse: async (dir) => {
      run.reports.push(...(await existingReports(ev!, dir)));
    },
  };
}

function exportStage(run: PipelineRun): StageSpec {
  const { cfg } = run;
  return {
    name: 'export',
    inputs: async () => ({
      train: run.fp.train!,
      model: run.modelFp,
      'config.output.export_merged': valueFingerprint(cfg.output.export_merged),
    }),
    run: async (dir) => {
      // The training settings beside the exported folders, as beside the trained ones: eval, generate
      // and serve read the prompt layout (and merging, the NF4 base) from the resolved-config.yaml there.
      const settings = join(stageDir(run, 'train'), RESOLVED_CONFIG_NAME);
      const copied = existsSync(settings) ? [join(dir, RESOLVED_CONFIG_NAME)] : [];
      if (copied.length) await cp(settings, copied[0]!);
      if (cfg.training.method === 'full') {
        // The fully trained model is already a complete HF checkpoint: nothing to merge.
        await cp(trainedModelDir(run), join(dir, 'model'), { recursive: true });
        return [join(dir, 'model'), ...copied];
      }
      const adapterDir = trainedAdapterDir(run);
      const out = [join(dir, 'adapter'), ...copied];
      await cp(adapterDir, join(dir, 'adapter'), { recursive: true });
      if (cfg.output.export_merged) {
        await exportMerged(adapterDir, cfg.model.path, join(dir, 'merged'), { dtype: 'source' });
        out.push(join(dir, 'merged'));
      }
      return out;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// The runner

/** Runs (or resumes) the pipeline of `cfg` in cfg.output.dir. */
export async function runPipeline(configured: ResolvedConfig, opts: PipelineOptions = {}): Promise<PipelineResult> {
  // A Hub id in model.path becomes its HF cache snapshot folder before any stage runs.
  const cfg = await withLocalModel(configured, { quiet: opts.quiet ?? false });
  const quiet = opts.quiet ?? false;
  const log = opts.log ?? ((line: string) => (quiet ? undefined : void process.stderr.write(line + '\n')));
  const ev = cfg.eval ?? null;
  // Names and files checked before any work: a typo should not cost a data stage first.
  if (ev) checkEvalFiles(ev);
  const runDir = cfg.output.dir;
  await ensureFolder(join(runDir, 'stages'));
  const state = await readPipelineState(runDir);
  const { run, notes } = await startRun(cfg, quiet);
  for (const note of notes) log(`[pipeline] ${note}`);
  saveResolvedConfig(runConfig(cfg, run.trainingPrecision), runDir, notes);
  const outcomes = await runStages(stageTable(run), run, state, opts.rerunFrom, log);
  const exported = join(stageDir(run, 'export'), 'adapter');
  const merged = join(stageDir(run, 'export'), 'merged');
  const exportedModel = join(stageDir(run, 'export'), 'model');
  return {
    runDir,
    stateFile: join(runDir, PIPELINE_STATE_FILE),
    stages: outcomes,
    reports: run.reports,
    adapterDir: existsSync(exported) ? exported : null,
    modelDir: existsSync(exportedModel) ? exportedModel : null,
    mergedDir: existsSync(merged) ? merged : null,
  };
}

/**
 * What the stages of `cfg` (model.path a local folder) share: the model's fingerprint and the
 * device-resolved precisions; `notes` say how an `auto` was resolved.
 */
async function startRun(cfg: ResolvedConfig, quiet: boolean): Promise<{ run: PipelineRun; notes: string[] }> {
  const training = await resolveTrainingPrecision(cfg.training.precision);
  const run: PipelineRun = {
    cfg,
    ev: cfg.eval ?? null,
    quiet,
    runDir: cfg.output.dir,
    modelFp: await fileFingerprint(cfg.model.path),
    trainingPrecision: training.precision,
    evalPrecision: computePrecision(),
    fp: {},
    reports: [],
  };
  return { run, notes: training.note ? [training.note] : [] };
}

/** training.precision as the trainer runs it: `auto` resolved on this process's adapter (the engine starts for it). */
async function resolveTrainingPrecision(
  setting: PrecisionSetting,
): Promise<{ precision: Precision; note: string | null }> {
  if (setting !== 'auto') return { precision: setting, note: null };
  const { dev } = await initEngine();
  const precision = resolvePrecision(setting, dev);
  return { precision, note: `training.precision: auto -> ${precision} (${autoPrecisionReason(dev)}: ${dev.name})` };
}

/** A stage's fingerprint inputs and fingerprint; inputs null where the stage does not apply. */
export interface StageFingerprint {
  name: StageName;
  inputs: Record<string, string> | null;
  fingerprint: string;
}

/**
 * Every stage's fingerprint for `cfg` (model.path a local folder) as a run here would record it,
 * without running a stage: what a re-run compares with pipeline-state.json.
 */
export async function stageFingerprints(cfg: ResolvedConfig): Promise<StageFingerprint[]> {
  const { run } = await startRun(cfg, true);
  const out: StageFingerprint[] = [];
  for (const spec of stageTable(run)) {
    const inputs = await spec.inputs();
    out.push({ name: spec.name, inputs, fingerprint: decideFingerprint(run, spec.name, inputs) });
  }
  return out;
}

/** A stage's fingerprint from its inputs ('skipped' where it does not apply), kept for the stages that read it. */
function decideFingerprint(run: PipelineRun, name: StageName, inputs: Record<string, string> | null): string {
  const fingerprint = inputs === null ? 'skipped' : combine(inputs);
  run.fp[name] = fingerprint;
  return fingerprint;
}

function checkEvalFiles(ev: EvalConfig): void {
  for (const [i, s] of evalSuites(ev).entries()) {
    if (!existsSync(s.cfg.file))
      throw new InputError(`eval file not found: ${s.cfg.file}`, { key: `eval.suites.${i}.file` });
  }
}

type StageOutcome = PipelineResult['stages'][number];

/**
 * Each stage in order: recorded as skipped when it does not apply; skipped when its record says done
 * with the same fingerprint and its outputs exist (unless `rerunFrom` reached it); run otherwise.
 */
async function runStages(
  specs: readonly StageSpec[],
  run: PipelineRun,
  state: PipelineState,
  rerunFrom: StageName | undefined,
  log: (line: string) => void,
): Promise<StageOutcome[]> {
  const outcomes: StageOutcome[] = [];
  let forced = false;
  for (const spec of specs) {
    if (rerunFrom === spec.name) forced = true;
    const inputs = await spec.inputs();
    const prev = state.stages[spec.name];
    const fingerprint = decideFingerprint(run, spec.name, inputs);
    if (inputs === null) {
      state.stages[spec.name] = {
        status: 'skipped',
        fingerprint: 'skipped',
        inputs: {},
        outputs: [],
        started_at: new Date().toISOString(),
        note: 'no eval section in the config',
      };
      await saveState(run.runDir, state);
      outcomes.push({ name: spec.name, outcome: 'skipped (no eval section)', seconds: 0 });
      log(`[pipeline] ${spec.name}: skipped (no eval section in the config)`);
      continue;
    }
    const outputsExist = prev?.outputs.every((p) => existsSync(join(run.runDir, p))) ?? false;
    if (!forced && prev?.status === 'done' && prev.fingerprint === fingerprint && outputsExist) {
      outcomes.push({ name: spec.name, outcome: 'skipped (done)', seconds: 0 });
      log(`[pipeline] ${spec.name}: already done (inputs unchanged), skipped`);
      await spec.reuse?.(stageDir(run, spec.name));
      continue;
    }
    // Start clean, except a resumable stage re-run on the same inputs (training picks up its checkpoints).
    const resume =
      spec.resumable === true &&
      !forced &&
      prev !== undefined &&
      prev.fingerprint === fingerprint &&
      prev.status !== 'done';
    const seconds = await runStage(spec, { inputs, fingerprint, resume }, run.runDir, state, outcomes, log);
    outcomes.push({ name: spec.name, outcome: 'ran', seconds });
  }
  return outcomes;
}

/** Runs one stage in a fresh (or, resuming, its kept) folder and records it; returns its seconds. */
async function runStage(
  spec: StageSpec,
  how: { inputs: Record<string, string>; fingerprint: string; resume: boolean },
  runDir: string,
  state: PipelineState,
  done: readonly StageOutcome[],
  log: (line: string) => void,
): Promise<number> {
  const dir = join(runDir, 'stages', spec.name);
  if (!how.resume) await rm(dir, { recursive: true, force: true });
  await mkdir(dir, { recursive: true });
  const started = Date.now();
  const record: StageRecord = {
    status: 'running',
    fingerprint: how.fingerprint,
    inputs: how.inputs,
    outputs: [],
    started_at: new Date(started).toISOString(),
  };
  state.stages[spec.name] = record;
  // Later stages' records describe outputs of the old inputs: they re-run through their fingerprints.
  await saveState(runDir, state);
  log(`[pipeline] ${spec.name}: running${how.resume ? ' (resuming)' : ''}`);
  try {
    const written = await spec.run(dir);
    record.outputs = written.map((p) => relative(runDir, p));
    record.status = 'done';
  } catch (err) {
    record.status = 'failed';
    record.error = err instanceof Error ? err.message : String(err);
    throw stageFailure(spec.name, err, runDir, done);
  } finally {
    record.finished_at = new Date().toISOString();
    record.seconds = (Date.now() - started) / 1000;
    await saveState(runDir, state);
  }
  log(`[pipeline] ${spec.name}: done in ${record.seconds.toFixed(1)}s`);
  return record.seconds;
}

async function existingReports(ev: EvalConfig, dir: string): Promise<SuiteReport[]> {
  const out: SuiteReport[] = [];
  for (const s of evalSuites(ev).filter((x) => x.cfg.task !== 'perplexity')) {
    const json = join(dir, s.name, 'report.json');
    out.push({
      suite: s.name,
      dir: join(dir, s.name),
      html: join(dir, s.name, 'report.html'),
      markdown: join(dir, s.name, 'summary.md'),
      json,
      verdict: await readReportVerdict(json),
    });
  }
  return out;
}

function stageFailure(stage: StageName, err: unknown, runDir: string, done: readonly StageOutcome[]): Error {
  const msg = err instanceof Error ? err.message : String(err);
  const kept = done.length
    ? `the completed stages (${done.map((d) => d.name).join(', ')}) are kept in ${runDir}; `
    : '';
  const text = `pipeline stage '${stage}' failed: ${msg}\n  ${kept}fix the problem and re-run to continue from '${stage}'`;
  // Bad input stays an InputError (exit code 1), an interruption an Interrupted (130); anything else is a runtime failure of the stage.
  if (err instanceof Interrupted)
    return new Interrupted(
      err.signal,
      `pipeline stage '${stage}' interrupted: ${msg}\n  ${kept}re-run to continue from '${stage}'`,
    );
  return err instanceof InputError ? new InputError(text) : new PipelineStageError(stage, text, { cause: err });
}
