// `finllm compare --base RESULTS --candidate RESULTS --out DIR [--training-log FILE.jsonl]`:
// paired statistics of a fine-tuned model against its base, written as report.html, summary.md
// and report.json in DIR.
import type { Command } from 'commander';
import { escapeControl, InputError } from '../errors.js';
import { checkFolderDestination } from '../io/atomic.js';
import { compareResults } from '../pipeline/eval/compare.js';
import { fmtPBetter, writeReport } from '../pipeline/eval/report.js';
import { readResults, readTrainingLog } from '../pipeline/eval/results.js';
import { verdictLine } from '../pipeline/eval/verdict.js';

interface CompareOpts {
  base: string;
  candidate: string;
  out: string;
  trainingLog?: string;
  alpha: string;
  resamples: string;
  seed: string;
  primaryMetric?: string;
  top: string;
}

function num(value: string, flag: string, check: (x: number) => boolean, expected: string): number {
  const x = Number(value);
  if (!Number.isFinite(x) || !check(x)) throw new InputError(`expected ${expected}, got '${value}'`, { flag });
  return x;
}

export function register(program: Command): void {
  program
    .command('compare')
    .description(
      'compare fine-tuned vs base results (bootstrap CIs, Wilcoxon, t-test, effect size) and write an HTML/Markdown/JSON report',
    )
    .requiredOption('-b, --base <file>', 'results.json of the base model')
    .requiredOption('-c, --candidate <file>', 'results.json of the fine-tuned model')
    .requiredOption('-o, --out <dir>', 'output folder for report.html, summary.md, report.json')
    .option('--training-log <file>', 'training log JSONL ({step, loss, val_loss}) for the loss chart')
    .option('--alpha <p>', 'family-wise significance level (Holm)', '0.05')
    .option('--resamples <n>', 'bootstrap resamples', '10000')
    .option('--seed <n>', 'random seed for the bootstraps', '20240611')
    .option(
      '--primary-metric <name>',
      'metric used to pick the most improved / regressed examples (default: the first primary metric that changed)',
    )
    .option('--top <k>', 'how many improved and regressed examples to show', '5')
    .action(async (opts: CompareOpts) => {
      const alpha = num(opts.alpha, '--alpha', (x) => x > 0 && x < 1, 'a number between 0 and 1');
      const resamples = num(opts.resamples, '--resamples', (x) => Number.isInteger(x) && x >= 100, 'an integer >= 100');
      const seed = num(opts.seed, '--seed', (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
      const topK = num(opts.top, '--top', (x) => Number.isInteger(x) && x >= 0, 'a non-negative integer');
      checkFolderDestination(opts.out);
      const base = await readResults(opts.base);
      const cand = await readResults(opts.candidate);
      const cmp = compareResults(base, cand, {
        alpha,
        resamples,
        seed,
        topK,
        baseFile: opts.base,
        candidateFile: opts.candidate,
        ...(opts.primaryMetric !== undefined ? { primaryMetric: opts.primaryMetric } : {}),
      });
      if (opts.trainingLog !== undefined) cmp.trainingLog = await readTrainingLog(opts.trainingLog);
      const paths = await writeReport(opts.out, cmp);
      for (const m of cmp.metrics) {
        process.stdout.write(
          `${escapeControl(m.metric)} (${m.role}): base ${m.baseMean.toFixed(4)} -> fine-tuned ${m.candidateMean.toFixed(4)} (Δ ${m.meanDiff >= 0 ? '+' : ''}${m.meanDiff.toFixed(4)}, Holm p ${Number.isFinite(m.pHolm) ? m.pHolm.toPrecision(3) : 'n/a'}, P(better) ${fmtPBetter(m.pBetter)}): ${m.verdict}\n`,
        );
      }
      process.stdout.write(`wrote ${paths.html}, ${paths.markdown}, ${paths.json}\n`);
      process.stdout.write(`${escapeControl(verdictLine(cmp.candidate.task, cmp.suite))}\n`);
    });
}
