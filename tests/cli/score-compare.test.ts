// `finllm score` and `finllm compare`, run in-process through commander.
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Command } from 'commander';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { register as registerCompare } from '../../src/cli/compare.js';
import { register as registerScore } from '../../src/cli/score.js';
import { InputError } from '../../src/errors.js';
import { writeResults } from '../../src/pipeline/eval/results.js';
import { makeResults } from '../pipeline/eval/helpers.js';

async function run(args: string[]): Promise<string> {
  const program = new Command().exitOverride();
  registerScore(program);
  registerCompare(program);
  let out = '';
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString();
    return true;
  });
  try {
    await program.parseAsync(['node', 'finllm', ...args]);
  } finally {
    spy.mockRestore();
  }
  return out;
}

afterEach(() => vi.restoreAllMocks());
const tmp = () => mkdtempSync(join(tmpdir(), 'finllm-cli-'));

describe('finllm score', () => {
  it('--json prints rouge1/rouge2/rougeL (0-1), bleu (0-100), other metrics and per_example', async () => {
    const dir = tmp();
    const file = join(dir, 'in.jsonl');
    writeFileSync(
      file,
      [
        {
          prediction: 'The quick brown dog jumps on the log.',
          reference: 'The quick brown fox jumps over the lazy dog',
        },
        {
          prediction: 'Revenue rose 12% to $1.2B.',
          reference: 'Revenue rose 12% to 1,200 million dollars.',
          source: 'Revenue of $1.2 billion, up 12%.',
        },
      ]
        .map((x) => JSON.stringify(x))
        .join('\n') + '\n',
    );
    const out = JSON.parse(await run(['score', '--input', file, '--json']));
    // rouge-score README example gives rougeL F1 0.5882...; second pair: prediction tokens
    // [revenue rose 12 to 1 2b], reference [revenue rose 12 to 1 200 million dollars], LCS 5 -> P 5/6, R 5/8.
    const r2 = (2 * (5 / 6) * (5 / 8)) / (5 / 6 + 5 / 8);
    expect(out.rougeL).toBeCloseTo((0.5882352941176471 + r2) / 2, 12);
    expect(out.rouge1).toBeGreaterThan(0);
    expect(out.rouge2).toBeGreaterThan(0);
    expect(out.bleu).toBeGreaterThan(1);
    expect(out.bleu).toBeLessThanOrEqual(100);
    expect(out.per_example).toHaveLength(2);
    expect(out.per_example[1].scores.numeric_fidelity).toBe(1);
    expect(out.per_example[1].scores.hallucinated_number_rate).toBe(0);
    expect(out.numeric_fidelity).toBe(1);
    expect(out).toHaveProperty('chrf');
    expect(out).toHaveProperty('exact_match', 0);
  });
  it('--metrics restricts the groups and the table output is readable', async () => {
    const dir = tmp();
    const file = join(dir, 'in.jsonl');
    writeFileSync(file, JSON.stringify({ prediction: 'Positive', reference: 'positive' }) + '\n');
    const json = JSON.parse(await run(['score', '-i', file, '--metrics', 'exact,label', '--json']));
    expect(
      Object.keys(json)
        .filter((k) => k !== 'per_example' && k !== 'classification' && k !== 'n')
        .sort(),
    ).toEqual(['exact_match', 'label_correct', 'label_macro_f1', 'label_weighted_f1']);
    const table = await run(['score', '-i', file, '--metrics', 'exact']);
    expect(table).toMatch(/^metric\s+value\s+n\s+description$/m);
    expect(table).toMatch(/^exact_match\s+1\s+1\/1\s+Exact match/m);
  });
  it('bad lines and flags are InputErrors naming file and line', async () => {
    const dir = tmp();
    const file = join(dir, 'bad.jsonl');
    writeFileSync(file, '{"prediction": "a", "reference": "b"}\n{"prediction": "a"}\n');
    await expect(run(['score', '--input', file])).rejects.toThrow(InputError);
    await expect(run(['score', '--input', file])).rejects.toThrow(/bad\.jsonl, row 2, key 'reference'/);
    await expect(run(['score', '--input', file, '--metrics', 'rouge,meteor'])).rejects.toThrow(
      /key '--metrics': unknown metric 'meteor'/,
    );
  });
});

describe('finllm compare', () => {
  it('writes the report files and prints one line per metric', async () => {
    const dir = tmp();
    const { base, candidate } = makeResults();
    await writeResults(join(dir, 'base.json'), base);
    await writeResults(join(dir, 'cand.json'), candidate);
    writeFileSync(join(dir, 'log.jsonl'), '{"step": 0, "loss": 3}\n{"step": 5, "loss": 2, "val_loss": 2.5}\n');
    const out = await run([
      'compare',
      '--base',
      join(dir, 'base.json'),
      '--candidate',
      join(dir, 'cand.json'),
      '--out',
      join(dir, 'report'),
      '--training-log',
      join(dir, 'log.jsonl'),
      '--resamples',
      '500',
    ]);
    expect(out).toMatch(
      /^rougeL \(secondary\): base 0\.\d{4} -> fine-tuned 0\.\d{4} \(Δ \+0\.\d{4}, Holm p [\d.e-]+, P\(better\) > 0\.999\): improved$/m,
    );
    expect(out).toMatch(/^numeric_fidelity \(primary\): base 0\.6111 -> fine-tuned 0\.8944 /m);
    // The last line is the suite's verdict, as the pipeline prints it.
    expect(out.trimEnd().split('\n').at(-1)).toMatch(
      /^summarization: regressed — hallucinated_number_rate 0 → 0\.0444 \(Holm p [\d.]+\); although numeric_fidelity/,
    );
    expect(readdirSync(join(dir, 'report')).sort()).toEqual(['report.html', 'report.json', 'summary.md']);
    const json = JSON.parse(readFileSync(join(dir, 'report', 'report.json'), 'utf8'));
    expect(json.resamples).toBe(500);
    expect(json.trainingLog).toEqual([
      { step: 0, loss: 3 },
      { step: 5, loss: 2, val_loss: 2.5 },
    ]);
  });
  it('rejects bad options and bad files', async () => {
    const dir = tmp();
    const { base } = makeResults();
    await writeResults(join(dir, 'base.json'), base);
    writeFileSync(join(dir, 'broken.json'), '{"model": "m"');
    const args = ['compare', '--base', join(dir, 'base.json'), '--out', join(dir, 'o')];
    await expect(run([...args, '--candidate', join(dir, 'broken.json')])).rejects.toThrow(
      /broken\.json: expected JSON, got invalid JSON/,
    );
    await expect(run([...args, '--candidate', join(dir, 'base.json'), '--alpha', '2'])).rejects.toThrow(
      /--alpha: expected a number between 0 and 1, got '2'/,
    );
  });
});
