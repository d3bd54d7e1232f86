// File helpers for the evaluation code: atomic writes and JSON / JSONL reading with errors that
// name the file and line.
import { readFile } from 'node:fs/promises';
import { InputError, readFailure } from '../../errors.js';

export { writeFileAtomic } from '../../io/atomic.js';

export async function readTextInput(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw readFailure(err, path);
  }
}

/** Parsed JSON objects of a JSONL file, with their 1-based line numbers; blank lines skipped. */
export async function readJsonl(path: string): Promise<{ row: number; value: unknown }[]> {
  const text = await readTextInput(path);
  const out: { row: number; value: unknown }[] = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (line.trim() === '') return;
    try {
      out.push({ row: i + 1, value: JSON.parse(line) });
    } catch (err) {
      throw new InputError(`expected one JSON object per line, got invalid JSON (${(err as Error).message})`, { file: path, row: i + 1 });
    }
  });
  return out;
}

export async function readJson(path: string): Promise<unknown> {
  const text = await readTextInput(path);
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new InputError(`expected JSON, got invalid JSON (${(err as Error).message})`, { file: path });
  }
}
