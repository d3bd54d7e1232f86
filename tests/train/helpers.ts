// Shared by the trainer test files: a slice of the bundled sample data (24 training and 8
// validation records), which keeps each run short on lavapipe.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Writes train.jsonl and val.jsonl slices into a fresh temp folder and returns it. */
export function sampleDataSlice(root: string, label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `finllm-${label}-data-`));
  const take = (file: string, n: number) => readFileSync(join(root, 'data/sample', file), 'utf8').split('\n').filter(Boolean).slice(0, n).join('\n') + '\n';
  writeFileSync(join(dir, 'train.jsonl'), take('train.jsonl', 24));
  writeFileSync(join(dir, 'val.jsonl'), take('val.jsonl', 8));
  return dir;
}
