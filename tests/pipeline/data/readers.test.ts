import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { readCsv, readJsonl } from '../../../src/pipeline/data/readers.js';
import type { RawRow } from '../../../src/pipeline/data/types.js';
import { tempDir } from './helpers.js';

async function all(gen: AsyncIterable<RawRow>): Promise<RawRow[]> {
  const out: RawRow[] = [];
  for await (const r of gen) out.push(r);
  return out;
}

describe('readers', () => {
  let t: ReturnType<typeof tempDir>;
  beforeEach(() => (t = tempDir()));
  afterEach(() => t.cleanup());

  it('JSONL: rows carry line numbers, blank lines skipped, bad JSON and non-objects flagged', async () => {
    const f = t.write('a.jsonl', '{"text":"a"}\n\n{"text":"b"}\r\n{bad json}\n[1,2]\n{"text":"c"}');
    const rows = await all(readJsonl(f));
    expect(rows.map((r) => r.row)).toEqual([1, 3, 4, 5, 6]);
    expect(rows[0]!.fields).toEqual({ text: 'a' });
    expect(rows[1]!.fields).toEqual({ text: 'b' });
    expect(rows[2]!.readProblems[0]!.kind).toBe('parse_error');
    expect(rows[3]!.readProblems[0]!.message).toMatch(/expected a JSON object per line, got an array/);
    expect(rows[4]!.fields).toEqual({ text: 'c' });
  });

  it('JSONL: flags invalid UTF-8 on its line', async () => {
    const good = Buffer.from('{"text":"ok €"}\n');
    const bad = Buffer.concat([Buffer.from('{"text":"bad '), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]);
    const f = t.write('u.jsonl', Buffer.concat([good, bad]));
    const rows = await all(readJsonl(f));
    expect(rows[0]!.readProblems).toEqual([]);
    expect(rows[0]!.fields.text).toBe('ok €');
    expect(rows[1]!.row).toBe(2);
    expect(rows[1]!.readProblems.map((p) => p.kind)).toContain('invalid_utf8');
  });

  it('JSONL: handles lines split across read chunks and a BOM', async () => {
    const long = 'x'.repeat(200_000);
    const f = t.write(
      'big.jsonl',
      '\uFEFF' + JSON.stringify({ text: long }) + '\n' + JSON.stringify({ text: '€' }) + '\n',
    );
    const rows = await all(readJsonl(f));
    expect(rows).toHaveLength(2);
    expect((rows[0]!.fields.text as string).length).toBe(200_000);
    expect(rows[1]!.fields.text).toBe('€');
  });

  it('CSV (RFC 4180): quoted fields, escaped quotes, embedded newlines, row numbers', async () => {
    const csv =
      'text,summary\r\n"Revenue rose 12.8%, to $2.31 billion.","He said ""strong"" quarter"\r\n"line one\nline two",plain\nlast,"x,y"\n';
    const f = t.write('a.csv', csv);
    const rows = await all(readCsv(f));
    expect(rows).toHaveLength(3);
    expect(rows[0]!.row).toBe(2);
    expect(rows[0]!.fields).toEqual({
      text: 'Revenue rose 12.8%, to $2.31 billion.',
      summary: 'He said "strong" quarter',
    });
    expect(rows[1]!.fields).toEqual({ text: 'line one\nline two', summary: 'plain' });
    expect(rows[1]!.row).toBe(3);
    expect(rows[2]!.row).toBe(4);
    expect(rows[2]!.line).toBe(5); // the previous record spans two lines
    expect(rows[2]!.fields).toEqual({ text: 'last', summary: 'x,y' });
  });

  it('CSV: wrong column counts, stray quotes and unterminated quotes are row problems', async () => {
    const f = t.write('b.csv', 'a,b\n1,2,3\n"x"y,2\n"open,2\n');
    const rows = await all(readCsv(f));
    expect(rows[0]!.readProblems[0]!.message).toMatch(/expected 2 columns \(a, b\), found 3/);
    expect(rows[1]!.readProblems[0]!.message).toMatch(/after a closing quote/);
    expect(rows[2]!.readProblems[0]!.message).toMatch(/unterminated quoted field starting on line 4/);
  });

  it('CSV: header problems and missing files are InputErrors', async () => {
    await expect(all(readCsv(t.write('h.csv', 'a,a\n1,2\n')))).rejects.toThrow(/header row repeats column "a"/);
    await expect(all(readCsv(t.write('e.csv', '')))).rejects.toThrow(/CSV file is empty/);
    await expect(all(readJsonl(t.dir + '/nope.jsonl'))).rejects.toBeInstanceOf(InputError);
  });
});
