// Reading user-supplied JSON files and validating them with zod, turning every failure into an
// InputError that names the file, the key and what was expected versus found.
import { access, readFile } from 'node:fs/promises';
import type { z } from 'zod';
import { InputError, readFailure } from '../errors.js';

/** Reads and parses a JSON file; a missing file or bad JSON is an InputError naming the file. */
export async function readJsonFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw readFailure(err, path);
  }
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new InputError(`invalid JSON: ${(err as Error).message}`, { file: path });
  }
}

/** Like readJsonFile, but a file that does not exist gives `undefined` instead of an error. */
export async function readJsonFileIfExists(path: string): Promise<unknown> {
  try {
    await access(path);
  } catch {
    return undefined;
  }
  return readJsonFile(path);
}

const NON_FINITE = '\u0000non-finite:';
const NON_FINITE_QUOTED = /"\\u0000non-finite:(-?Infinity|NaN)"/g;

/** JSON text of `value`; a placeholder when it has none or cannot be shown (nested too deeply for the stack, a cycle). */
export function safeJson(value: unknown): string {
  try {
    // JSON has no Infinity or NaN (JSON.stringify writes null): show them as JavaScript does.
    const text = JSON.stringify(value, (_key, v: unknown) =>
      typeof v === 'number' && !Number.isFinite(v) ? `${NON_FINITE}${v}` : v,
    );
    return text === undefined ? String(value) : text.replace(NON_FINITE_QUOTED, '$1');
  } catch {
    return Array.isArray(value) ? '[...] (nested too deeply to show)' : '{...} (nested too deeply to show)';
  }
}

/** Short human description of a JSON value, for "expected X, got Y" messages (input data may be huge or deeply nested). */
export function describeValue(value: unknown, max = 80): string {
  if (value === undefined) return 'nothing (missing)';
  const json = safeJson(value);
  return json.length > max ? `${json.slice(0, max - 3)}...` : json;
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let node = root;
  for (const key of path) {
    if (node === null || typeof node !== 'object') return undefined;
    node = (node as Record<PropertyKey, unknown>)[key];
  }
  return node;
}

/** Validates `value` against `schema`; the first issue becomes an InputError naming file and key. */
export function parseWithSchema<S extends z.ZodType>(schema: S, value: unknown, file: string): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const key = issue.path.map(String).join('.');
  const got = describeValue(valueAt(value, issue.path));
  throw new InputError(`${issue.message} (got ${got})`, key ? { file, key } : { file });
}
