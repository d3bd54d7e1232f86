// The perplexity JSON file (src/pipeline/eval/perplexity.ts): what writePerplexity writes,
// readPerplexity reads back unchanged; a malformed file is one InputError line naming the file and
// the key. The per-text losses themselves are checked against transformers in tests/llama.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { aggregate, perplexityJson, readPerplexity, writePerplexity } from '../../../src/pipeline/eval/perplexity.js';

const dir = mkdtempSync(join(tmpdir(), 'finllm-perplexity-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Losses that are not short decimals, so a lossy round trip would show.
const RESULT = aggregate([
  { loss: Math.PI, tokens: 7 },
  { loss: 1 / 3, tokens: 12 },
  { loss: Math.E, tokens: 1 },
]);

async function readError(name: string, text: string): Promise<Error> {
  const file = join(dir, name);
  writeFileSync(file, text);
  try {
    await readPerplexity(file);
  } catch (err) {
    return err as Error;
  }
  throw new Error(`readPerplexity accepted ${name}: ${text}`);
}

describe('readPerplexity', () => {
  it('reads back exactly what writePerplexity wrote', async () => {
    const file = join(dir, 'suite.perplexity.json');
    await writePerplexity(file, RESULT);
    expect(await readPerplexity(file)).toEqual(RESULT);
  });

  it('a malformed file is one InputError line naming the file and, where there is one, the key', async () => {
    const good = perplexityJson(RESULT) as Record<string, unknown> & { per_example: unknown[] };
    const cases: [string, string, RegExp][] = [
      ['truncated.json', JSON.stringify(good).slice(0, 40), /truncated\.json: invalid JSON/],
      ['loss-text.json', JSON.stringify({ ...good, loss: 'low' }), /loss-text\.json, key 'loss': .*number/],
      ['no-ppl.json', JSON.stringify({ ...good, perplexity: undefined }), /no-ppl\.json, key 'perplexity'/],
      [
        'bad-tokens.json',
        JSON.stringify({ ...good, per_example: [{ loss: 1, tokens: 2.5 }, ...good.per_example.slice(1)] }),
        /bad-tokens\.json, key 'per_example\.0\.tokens'/,
      ],
      [
        'short.json',
        JSON.stringify({ ...good, per_example: good.per_example.slice(1) }),
        /short\.json, key 'per_example': expected 3 entries \(one per example\), got 2/,
      ],
      ['results.json', JSON.stringify({ model: 'm', per_example: [] }), /results\.json, key 'examples'/],
    ];
    for (const [name, text, message] of cases) {
      const err = await readError(name, text);
      expect(err, name).toBeInstanceOf(InputError);
      expect(err.message, name).toMatch(message);
      expect(err.message, name).not.toContain('\n');
    }
  });

  it('a missing file is an InputError naming it', async () => {
    await expect(readPerplexity(join(dir, 'absent.perplexity.json'))).rejects.toThrow(
      /absent\.perplexity\.json: file not found/,
    );
  });
});
