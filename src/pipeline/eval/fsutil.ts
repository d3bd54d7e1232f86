// File helpers for the evaluation code: atomic writes and JSON / JSONL reading with errors that
// name the file and line.
import { readFile } from 'node:fs/promises';
import { InputError, readFailure } from '../../errors.js';
import { readRecords } from '../data/readers.js';

export { writeFileAtomic } from '../../io/atomic.js';

export async function readTextInput(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw readFailure(err, path);
  }
}

/** Parsed JSON objects of a JSONL file, with their 1-based line numbers; blank lines skipped (the data readers do the reading). */
export async function readJsonl(path: string): Promise<{ row: number; value: Record<string, unknown> }[]> {
  return readRecords(path, { format: 'jsonl', what: 'file' });
}

export async function readJson(path: string): Promise<unknown> {
  const text = await readTextInput(path);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InputError(`expected JSON, got invalid JSON (${(err as Error).message})`, { file: path });
  }
}
