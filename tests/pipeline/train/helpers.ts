// Shared set-up of the trainer tests: the CLI entry point and a slice of the bundled sample data.
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ROOT = process.cwd();
export const CLI = join(ROOT, 'dist/src/cli/main.js');

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
