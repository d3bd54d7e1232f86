// Shared set-up of the trainer tests: the CLI entry point, a slice of the bundled sample data, the
// config of a short run on it (in process or as `finllm train` arguments) and what a run logs.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { engine } from '../../../src/engine/tensor.js';
import { loadConfig, type ResolvedConfig } from '../../../src/pipeline/config.js';
import type { Batch } from '../../../src/pipeline/data/index.js';
import { wholeRowsBatch } from '../../../src/pipeline/data/loader.js';

export const ROOT = process.cwd();
export const CLI = join(ROOT, 'dist/src/cli/main.js');
/** The bundled tiny model the runs train. */
export const MODEL = join(ROOT, 'models/tiny-fin');
/** The config file of the runs on the bundled tiny model. */
export const SAMPLE_CONFIG = join(ROOT, 'configs/tiny-sample.yaml');

/**
 * A temp folder with the first `trainRows` / `valRows` records of the bundled sample
 * (train.jsonl, val.jsonl): short runs on lavapipe. Checks the CLI is built.
 */
export function sampleSlice(trainRows: number, valRows: number): string {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` (npm test does it first)`);
  const dir = mkdtempSync(join(tmpdir(), 'finllm-train-data-'));
  const take = (file: string, n: number) =>
    readFileSync(join(ROOT, 'data/sample', file), 'utf8')
      .split('\n')
      .filter(Boolean)
      .slice(0, n)
      .join('\n') + '\n';
  writeFileSync(join(dir, 'train.jsonl'), take('train.jsonl', trainRows));
  writeFileSync(join(dir, 'val.jsonl'), take('val.jsonl', valRows));
  return dir;
}

/**
 * The `--set` values of a short quiet run of SAMPLE_CONFIG on the slice in `dataDir` (sampleSlice)
 * into `outDir`: batches of 2, no warm-up, no evaluation, a metrics row every step; `extra` adds
 * keys or overrides these.
 */
export function sampleRunSets(outDir: string, dataDir: string, extra: readonly string[] = []): string[] {
  return [
    `output.dir=${outDir}`,
    `data.train=${join(dataDir, 'train.jsonl')}`,
    `data.val=${join(dataDir, 'val.jsonl')}`,
    'training.batch_size=2',
    'training.warmup_steps=0',
    'training.eval_every=0',
    'training.log_every=1',
    'logging.console=false',
    ...extra,
  ];
}

/**
 * SAMPLE_CONFIG for one quiet step on the slice in `dataDir` (sampleSlice), texts of `seqLen`
 * tokens, into a fresh temp folder: no warm-up, evaluation or checkpoint; `extra` adds keys or
 * overrides these.
 */
export function oneStepConfig(dataDir: string, seqLen: number, extra: readonly string[] = []): ResolvedConfig {
  return sampleConfig([
    `output.dir=${mkdtempSync(join(tmpdir(), 'finllm-one-step-'))}`,
    `data.train=${join(dataDir, 'train.jsonl')}`,
    `data.val=${join(dataDir, 'val.jsonl')}`,
    `data.max_seq_len=${seqLen}`,
    'data.response_only_loss=false',
    'training.max_steps=1',
    'training.warmup_steps=0',
    'training.eval_every=0',
    'training.save_every=0',
    'logging.console=false',
    ...extra,
  ]);
}

/**
 * Runs `fn` with the engine's GPU device reporting `limits` in place of its own and its pool
 * allowed 1 GiB (so that only those limits can refuse), restoring both after.
 */
export async function withDeviceLimits<T>(limits: Partial<GPUSupportedLimits>, fn: () => Promise<T>): Promise<T> {
  const { dev, pool } = engine();
  const own = dev.limits;
  const [cap, source] = [pool.capacityBytes, pool.capacitySource];
  Object.defineProperty(dev, 'limits', { value: Object.freeze({ ...own, ...limits }), configurable: true });
  pool.capacityBytes = 1 << 30;
  pool.capacitySource = 'the test';
  try {
    return await fn();
  } finally {
    Object.defineProperty(dev, 'limits', { value: own, configurable: true });
    pool.capacityBytes = cap;
    pool.capacitySource = source;
  }
}

/** SAMPLE_CONFIG with the `--set` values `sets`, as `finllm train` resolves it. */
export function sampleConfig(sets: readonly string[]): ResolvedConfig {
  return loadConfig({ file: SAMPLE_CONFIG, sets: [...sets] });
}

/** `finllm train` arguments (after the node executable) of SAMPLE_CONFIG with the `--set` values `sets`. */
export function trainArgs(sets: readonly string[]): string[] {
  return [CLI, 'train', '--config', SAMPLE_CONFIG, ...sets.flatMap((s) => ['--set', s])];
}

/** A metrics.jsonl row that carries a training loss. */
export interface LossRecord {
  step: number;
  loss: number;
  loss_scale?: number;
  skipped_steps?: number;
  grad_norm?: number;
}

/** The training-loss rows of a run's metrics.jsonl, in order. */
export function lossRecords(runDir: string): LossRecord[] {
  return readFileSync(join(runDir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Partial<LossRecord>)
    .filter((r): r is LossRecord => r.loss !== undefined);
}

/** The training losses a run logged, in order. */
export function losses(runDir: string): number[] {
  return lossRecords(runDir).map((r) => r.loss);
}

/**
 * Runs `finllm train` with `args` (trainArgs) in a child process and kills it with SIGKILL as soon
 * as the checkpoint of `step` is complete in `runDir`; fails when none appears within `timeoutMs`.
 */
export async function killAfterCheckpoint(args: string[], runDir: string, step: number, timeoutMs: number) {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += String(d)));
  const ckpt = join(runDir, 'checkpoints', `step-${String(step).padStart(8, '0')}`, 'trainer_state.json');
  const exited = new Promise<void>((res) => child.on('exit', () => res()));
  const deadline = Date.now() + timeoutMs;
  while (!existsSync(ckpt) && Date.now() < deadline && child.exitCode === null)
    await new Promise((r) => setTimeout(r, 50));
  expect(existsSync(ckpt), `no checkpoint appeared; stderr:\n${stderr}`).toBe(true);
  child.kill('SIGKILL');
  await exited;
  expect(child.signalCode).toBe('SIGKILL');
}

/** The `text` of the first `n` records of the slice's val.jsonl. */
export function valTexts(dataDir: string, n: number): string[] {
  return readFileSync(join(dataDir, 'val.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .slice(0, n)
    .map((l) => (JSON.parse(l) as { text: string }).text);
}

/** Writes `texts` as a perplexity file ({"text"} per line) into `dir` and returns its path. */
export function writeTexts(dir: string, texts: readonly string[]): string {
  const file = join(dir, 'texts.jsonl');
  writeFileSync(file, texts.map((t) => JSON.stringify({ text: t })).join('\n') + '\n');
  return file;
}

/** `finllm eval --json` of the perplexity file `file` with the model arguments `modelArgs`; it must exit 0. */
export function cliPerplexity(modelArgs: string[], file: string): { loss: number; per_example: { loss: number }[] } {
  const r = spawnSync(process.execPath, [CLI, 'eval', ...modelArgs, '--data', file, '--json'], {
    encoding: 'utf8',
    timeout: 240_000,
  });
  expect(r.status, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as { loss: number; per_example: { loss: number }[] };
}

/** A batch of one unpadded sequence `ids` (one segment, every next token a target); `sources` names its record. */
export function oneTextBatch(ids: ArrayLike<number>, sources?: Batch['sources']): Batch {
  const inputIds = Int32Array.from(ids);
  return wholeRowsBatch(inputIds, 1, inputIds.length, sources);
}
