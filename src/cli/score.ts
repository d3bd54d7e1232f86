// `finllm score --input FILE.jsonl [--metrics rouge,bleu,...] [--stem] [--json]`: score predictions
// against references. Each line: {"prediction": "...", "reference": "...", "source"?: "...", "id"?: ...}.
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import { DEFAULT_GROUPS, METRIC_GROUPS, metricInfo, parseGroups, scoreExamples } from '../pipeline/eval/metrics.js';
import { fmt } from '../pipeline/eval/report.js';
import { readScoreInput } from '../pipeline/eval/results.js';
import { DEFAULT_LCS_MAX_TOKENS } from '../pipeline/eval/rouge.js';
import { intOption } from './model-options.js';

interface ScoreOpts {
  input: string;
  metrics?: string;
  stem?: boolean;
  json?: boolean;
  rougeMaxTokens?: string;
}

export function register(program: Command): void {
  program
    .command('score')
    .description('score predictions against references (ROUGE, BLEU, chrF, exact match, financial metrics)')
    .requiredOption('-i, --input <file>', 'JSONL file, one {"prediction", "reference", "source"?} per line')
    .option(
      '-m, --metrics <list>',
      `comma-separated metric groups: ${METRIC_GROUPS.join(', ')} (default: ${DEFAULT_GROUPS.join(',')})`,
    )
    .option('--stem', 'Porter-stem tokens for ROUGE (rouge-score use_stemmer=True)')
    .option('--json', 'print one JSON object (corpus figures at the top level plus per_example)')
    .option(
      '--rouge-max-tokens <n>',
      `ROUGE-L uses at most this many tokens of each side, with a warning when it cuts (default ${DEFAULT_LCS_MAX_TOKENS}; its time grows with the product of the lengths)`,
    )
    .action(async (opts: ScoreOpts) => {
      let groups = DEFAULT_GROUPS.slice();
      if (opts.metrics !== undefined) {
        try {
          groups = parseGroups(opts.metrics);
        } catch (err) {
          throw new InputError((err as Error).message, { key: '--metrics' });
        }
        if (!groups.length)
          throw new InputError(`expected at least one metric group, got '${opts.metrics}'`, { key: '--metrics' });
      }
      const rougeMax = intOption(opts.rougeMaxTokens, 'rouge-max-tokens', 1);
      const inputs = await readScoreInput(opts.input);
      const r = scoreExamples(inputs, {
        groups,
        rougeStemmer: opts.stem ?? false,
        ...(rougeMax !== undefined ? { rougeLcsMaxTokens: rougeMax } : {}),
      });
      if (opts.json) {
        const out: Record<string, unknown> = { n: r.n, ...r.metrics };
        if (r.classification) out['classification'] = r.classification;
        out['per_example'] = r.per_example.map((p, i) => ({ id: inputs[i]!.id, scores: p.scores }));
        process.stdout.write(JSON.stringify(out) + '\n');
        return;
      }
      const rows = Object.entries(r.metrics).map(([name, v]) => {
        const info = metricInfo(name);
        const present = r.per_example.filter((p) => typeof p.scores[name] === 'number').length;
        return [name, fmt(v), info ? `${present}/${r.n}` : '', info?.description ?? ''];
      });
      const w0 = Math.max(6, ...rows.map((x) => x[0]!.length));
      const w1 = Math.max(5, ...rows.map((x) => x[1]!.length));
      const w2 = Math.max(5, ...rows.map((x) => x[2]!.length));
      const line = (a: string, b: string, c: string, d: string) =>
        `${a.padEnd(w0)}  ${b.padStart(w1)}  ${c.padStart(w2)}  ${d}\n`;
      process.stdout.write(line('metric', 'value', 'n', 'description'));
      process.stdout.write(line('-'.repeat(w0), '-'.repeat(w1), '-'.repeat(w2), '-'.repeat(11)));
      for (const x of rows) process.stdout.write(line(x[0]!, x[1]!, x[2]!, x[3]!));
      process.stdout.write(`${r.n} examples from ${opts.input}\n`);
    });
}
