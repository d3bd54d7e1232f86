// A tiny pipeline set-up in a temp folder: the bundled tiny model, a slice of the sample data, two
// small eval suites, two training steps.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '..', '..');

function head(file: string, n: number): string {
  return (
    readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.trim())
      .slice(0, n)
      .join('\n') + '\n'
  );
}

export interface TinySetup {
  dir: string;
  config: string;
  runDir: string;
  qaFile: string;
}

const made: string[] = [];

/** Removes the folders tinyPipeline made (call from afterAll). */
export function removeTinyPipelines(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
}

export function tinyPipeline(opts: { evalOverride?: string } = {}): TinySetup {
  const dir = mkdtempSync(join(tmpdir(), 'finllm-pipeline-'));
  made.push(dir);
  writeFileSync(join(dir, 'train.jsonl'), head(join(ROOT, 'data', 'sample', 'train.jsonl'), 16));
  writeFileSync(join(dir, 'val.jsonl'), head(join(ROOT, 'data', 'sample', 'val.jsonl'), 2));
  const qaFile = join(dir, 'qa.jsonl');
  writeFileSync(qaFile, head(join(ROOT, 'data', 'eval', 'fin-figures.jsonl'), 3));
  writeFileSync(join(dir, 'sentiment.jsonl'), head(join(ROOT, 'data', 'eval', 'fin-sentiment.jsonl'), 3));
  const config = join(dir, 'pipeline.yaml');
  writeFileSync(
    config,
    `model: {path: ${join(ROOT, 'models', 'tiny-fin')}, quantize: nf4}
lora: {r: 4, alpha: 8, dropout: 0.0}
data: {train: train.jsonl, val: val.jsonl, dedup: {near: false}}
training: {max_steps: 2, batch_size: 2, lr: 1.0e-3, warmup_steps: 0, eval_every: 0, save_every: 0, log_every: 1, seed: 7}
output: {dir: run}
logging: {console: false, jsonl: true}
eval:
  suites:
    - {file: qa.jsonl, task: generation}
    - {file: sentiment.jsonl, task: classification}
  max_new_tokens: 4
  embeddings: true
  resamples: 200
${opts.evalOverride ?? ''}`,
  );
  return { dir, config, runDir: join(dir, 'run'), qaFile };
}
