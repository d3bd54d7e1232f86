// The one home of record-file reading: JSON Lines, a JSON array of objects, and CSV (RFC 4180).
// Rows come out one at a time with their row/line numbers; problems in a row (bad JSON, invalid
// UTF-8, wrong column count) are attached to it rather than thrown, so validation can apply the
// fail/skip policy with row numbers. `readRecords` reads a whole file for callers that stop at the
// first bad row (eval files, results, tokenizer corpora).
import { createReadStream, type Stats, statSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import { extname } from 'node:path';
import { InputError, readFailure } from '../../errors.js';
import { describeValue } from '../../io/json.js';
import type { RawRow } from './types.js';

/** jsonl: one object per line; json: an array of objects (or JSON Lines in a .json file); csv: header + rows. */
export const DATA_FORMATS = ['jsonl', 'json', 'csv'] as const;
export type DataFormat = (typeof DATA_FORMATS)[number];
/** File name extensions whose records the data stage reads as JSON (JSON Lines, or an array in .json). */
export const JSONL_EXTENSIONS: readonly string[] = ['.jsonl', '.ndjson', '.json'];

interface PhysicalLine {
  text: string;
  /** 1-based line number. */
  line: number;
  invalidUtf8: boolean;
}

const fatalDecoder = new TextDecoder('utf-8', { fatal: true });
const lenientDecoder = new TextDecoder('utf-8');

function decodeLine(bytes: Uint8Array, line: number): PhysicalLine {
  let end = bytes.length;
  if (end > 0 && bytes[end - 1] === 0x0d) end--; // CRLF
  const b = bytes.subarray(0, end);
  try {
    return { text: fatalDecoder.decode(b), line, invalidUtf8: false };
  } catch {
    return { text: lenientDecoder.decode(b), line, invalidUtf8: true };
  }
}

/** Split a file into lines on '\n' bytes, decoding each as UTF-8 (and flagging invalid bytes). */
export async function* readLines(file: string): AsyncGenerator<PhysicalLine> {
  let pending: Uint8Array = new Uint8Array(0);
  let lineNo = 0;
  let first = true;
  const stream = createReadStream(file, { highWaterMark: 1 << 16 });
  for await (const chunkAny of stream) {
    const chunk = chunkAny as Buffer;
    let buf: Uint8Array = pending.length ? Buffer.concat([pending, chunk]) : chunk;
    if (first) {
      if (buf.length >= 3 && buf[0] === 0xef && buf[1] === 0xbb && buf[2] === 0xbf) buf = buf.subarray(3);
      first = false;
    }
    let start = 0;
    for (let i = 0; i < buf.length; i++) {
      if (buf[i] === 0x0a) {
        yield decodeLine(buf.subarray(start, i), ++lineNo);
        start = i + 1;
      }
    }
    pending = Uint8Array.from(buf.subarray(start));
  }
  if (pending.length > 0) yield decodeLine(pending, ++lineNo);
}

/** Infer the format from the file extension (unless given). */
export function inferFormat(file: string, format: DataFormat | null): DataFormat {
  if (format) return format;
  const ext = extname(file).toLowerCase();
  if (ext === '.jsonl' || ext === '.ndjson') return 'jsonl';
  if (ext === '.json') return 'json';
  if (ext === '.csv') return 'csv';
  throw new InputError(
    `cannot infer the data format from extension ${JSON.stringify(ext)}; expected .jsonl, .json or .csv, or set data.format`,
    {
      file,
      key: 'data.format',
    },
  );
}

function checkReadable(file: string): void {
  let st: Stats;
  try {
    st = statSync(file);
  } catch (e) {
    throw new InputError(`data file not found (${(e as NodeJS.ErrnoException).code ?? 'error'})`, { file });
  }
  if (!st.isFile()) throw new InputError('expected a data file, found a directory or special file', { file });
}

/** JSON Lines: one object per non-blank line; row = line number. */
export async function* readJsonl(file: string): AsyncGenerator<RawRow> {
  checkReadable(file);
  for await (const l of readLines(file)) {
    if (l.text.trim() === '') continue;
    const row: RawRow = { row: l.line, line: l.line, fields: {}, readProblems: [] };
    if (l.invalidUtf8)
      row.readProblems.push({ kind: 'invalid_utf8', message: 'line is not valid UTF-8 (bytes replaced by U+FFFD)' });
    let value: unknown;
    try {
      value = JSON.parse(l.text);
    } catch (e) {
      row.readProblems.push({
        kind: 'parse_error',
        message: `invalid JSON (expected one JSON object per line): ${(e as Error).message}`,
      });
      yield row;
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      row.readProblems.push({
        kind: 'parse_error',
        message: `expected a JSON object per line, got ${Array.isArray(value) ? 'an array' : describeValue(value, 40)}`,
      });
    } else {
      row.fields = value as Record<string, unknown>;
    }
    yield row;
  }
}

/**
 * Parse CSV records (RFC 4180: comma separator, `"` quoting, `""` escapes, newlines inside quoted
 * fields) from lines. Yields each record's fields with its record number (1 = first record) and
 * starting line, or an error message for a malformed record.
 */
export async function* parseCsvRecords(
  lines: AsyncIterable<PhysicalLine>,
): AsyncGenerator<{ record: number; line: number; fields: string[]; error?: string; invalidUtf8: boolean }> {
  let record = 0;
  let fields: string[] = [];
  let field = '';
  let inQuotes = false;
  let startLine = 0;
  let invalid = false;
  let error: string | undefined;
  for await (const l of lines) {
    if (!inQuotes) {
      if (l.text === '') continue; // blank line between records
      fields = [];
      field = '';
      startLine = l.line;
      invalid = false;
      error = undefined;
    } else {
      field += '\n';
    }
    invalid ||= l.invalidUtf8;
    const s = l.text;
    let i = 0;
    let fieldStart = !inQuotes && field === '';
    while (i < s.length) {
      const c = s[i]!;
      if (inQuotes) {
        if (c === '"') {
          if (s[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          inQuotes = false;
          i++;
          if (i < s.length && s[i] !== ',') {
            error ??= `unexpected character ${JSON.stringify(s[i])} after a closing quote (line ${l.line}, column ${i + 1}); quotes inside a quoted field must be doubled ("")`;
          }
          continue;
        }
        field += c;
        i++;
      } else if (c === ',') {
        fields.push(field);
        field = '';
        fieldStart = true;
        i++;
      } else if (c === '"' && fieldStart && field === '') {
        inQuotes = true;
        fieldStart = false;
        i++;
      } else {
        field += c;
        fieldStart = false;
        i++;
      }
    }
    if (!inQuotes) {
      fields.push(field);
      record++;
      yield { record, line: startLine, fields, ...(error ? { error } : {}), invalidUtf8: invalid };
    }
  }
  if (inQuotes) {
    record++;
    fields.push(field);
    yield {
      record,
      line: startLine,
      fields,
      error: `unterminated quoted field starting on line ${startLine} (runs to the end of the file)`,
      invalidUtf8: invalid,
    };
  }
}

/** CSV with a header row; row = spreadsheet row number (header is row 1, first data row is 2). */
export async function* readCsv(file: string): AsyncGenerator<RawRow> {
  checkReadable(file);
  let header: string[] | undefined;
  for await (const rec of parseCsvRecords(readLines(file))) {
    if (!header) {
      if (rec.error) throw new InputError(`malformed header row: ${rec.error}`, { file, row: 1 });
      header = rec.fields.map((h) => h.trim());
      const seen = new Set<string>();
      for (const h of header) {
        if (h === '')
          throw new InputError(`header row has an empty column name (columns: ${JSON.stringify(header)})`, {
            file,
            row: 1,
          });
        if (seen.has(h)) throw new InputError(`header row repeats column ${JSON.stringify(h)}`, { file, row: 1 });
        seen.add(h);
      }
      continue;
    }
    const row: RawRow = { row: rec.record, line: rec.line, fields: {}, readProblems: [] };
    if (rec.invalidUtf8)
      row.readProblems.push({ kind: 'invalid_utf8', message: 'row is not valid UTF-8 (bytes replaced by U+FFFD)' });
    if (rec.error) row.readProblems.push({ kind: 'parse_error', message: rec.error });
    else if (rec.fields.length !== header.length) {
      row.readProblems.push({
        kind: 'parse_error',
        message: `expected ${header.length} columns (${header.join(', ')}), found ${rec.fields.length}`,
      });
    }
    header.forEach((h, i) => {
      if (i < rec.fields.length) row.fields[h] = rec.fields[i];
    });
    yield row;
  }
  if (!header) throw new InputError('CSV file is empty; expected a header row followed by data rows', { file });
}

/** 1-based line of character offset `pos` in `text`. */
function lineAt(text: string, pos: number): number {
  let line = 1;
  for (let i = 0; i < pos && i < text.length; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

/**
 * A .json file: a top-level array of objects (row = element number, 1-based), or, when the text
 * does not start with `[`, JSON Lines (what `datasets.Dataset.to_json` writes by default).
 */
export async function* readJsonArray(file: string): AsyncGenerator<RawRow> {
  checkReadable(file);
  const bytes = await readFile(file);
  let text: string;
  let invalidUtf8 = false;
  try {
    text = fatalDecoder.decode(bytes);
  } catch {
    text = lenientDecoder.decode(bytes);
    invalidUtf8 = true;
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
  if (!text.trimStart().startsWith('[')) {
    yield* readJsonl(file);
    return;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    const msg = (e as Error).message;
    const pos = /position (\d+)/.exec(msg);
    const line = pos ? lineAt(text, Number(pos[1])) : undefined;
    throw new InputError(
      `invalid JSON${line !== undefined ? ` at line ${line}` : ''} (expected an array of objects): ${msg}`,
      { file },
    );
  }
  const records = value as unknown[];
  for (let i = 0; i < records.length; i++) {
    const v = records[i];
    const row: RawRow = { row: i + 1, line: i + 1, fields: {}, readProblems: [] };
    if (invalidUtf8)
      row.readProblems.push({
        kind: 'invalid_utf8',
        message: 'the file is not valid UTF-8 (bytes replaced by U+FFFD)',
      });
    if (typeof v !== 'object' || v === null || Array.isArray(v)) {
      row.readProblems.push({
        kind: 'parse_error',
        message: `expected an object for each array element, got ${Array.isArray(v) ? 'an array' : describeValue(v, 40)}`,
      });
    } else {
      row.fields = v as Record<string, unknown>;
    }
    yield row;
  }
}

export function readRows(file: string, format: DataFormat | null): AsyncGenerator<RawRow> {
  const f = inferFormat(file, format);
  return f === 'csv' ? readCsv(file) : f === 'json' ? readJsonArray(file) : readJsonl(file);
}

/** A record read whole: 1-based row (JSONL line, CSV record, JSON array element) and its fields. */
export interface DataRecord {
  row: number;
  value: Record<string, unknown>;
}

/**
 * Every record of a file (format from `format`, else the extension; `.txt`-like names fall back
 * to JSON Lines when `fallback` is given). The first row with a read problem is an InputError
 * naming the file and row; a missing file is one naming `what` (default "data file").
 */
export async function readRecords(
  file: string,
  opts: { format?: DataFormat | null; what?: string; fallback?: DataFormat } = {},
): Promise<DataRecord[]> {
  try {
    const st = await stat(file);
    if (!st.isFile())
      throw new InputError(`expected a ${opts.what ?? 'data file'}, found a directory or special file`, { file });
  } catch (err) {
    if (err instanceof InputError) throw err;
    throw readFailure(err, file, opts.what ?? 'data file');
  }
  let format: DataFormat;
  try {
    format = inferFormat(file, opts.format ?? null);
  } catch (err) {
    if (!opts.fallback) throw err;
    format = opts.fallback;
  }
  const out: DataRecord[] = [];
  for await (const r of readRows(file, format)) {
    const p = r.readProblems[0];
    if (p) throw new InputError(p.message, { file, row: r.row });
    out.push({ row: r.row, value: r.fields });
  }
  return out;
}
