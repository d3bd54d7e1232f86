// `finllm data validate|stats --config FILE`: run only the data stage (read, validate, template,
// dedup, tokenize) and print what was found. Bad input exits 1 with the message (see common.ts).
// `finllm data generate`: write a synthetic financial corpus or task set (src/pipeline/data/synthetic.ts).
import { join } from 'node:path';
import type { Command } from 'commander';
import { escapeControl, InputError } from '../errors.js';
import { LlamaTokenizer } from '../llama/tokenizer.js';
import { type ResolvedConfig, withLocalModel } from '../pipeline/config.js';
import { type PreparedData, prepareData } from '../pipeline/data/prepare.js';
import { formatReport, saveReport } from '../pipeline/data/stats.js';
import {
  ALL_TASK_KINDS,
  MAX_GENERATED_RECORDS,
  type Split,
  TASK_KINDS,
  type TaskKind,
  writeSyntheticJsonl,
} from '../pipeline/data/synthetic.js';
import { loadRunConfig } from '../pipeline/run-config.js';

interface GenerateOpts {
  kind: string;
  count: string;
  seed: string;
  split: string;
  tasks?: string;
  eval?: boolean;
  out: string;
}

const SPLITS: readonly Split[] = ['train', 'val', 'eval'];

import { checkFileDestination } from '../io/atomic.js';
import { intOption, numberOption } from './model-options.js';

interface DataOpts {
  config?: string;
  env?: string;
  set: string[];
  tokenizer?: string;
  report?: string;
  problems: string;
}

const collect = (v: string, prev: string[]) => [...prev, v];

export const DATA_REPORT_NAME = 'data-report.json';

async function runStage(opts: DataOpts): Promise<{ cfg: ResolvedConfig; prepared: PreparedData }> {
  const cfg = loadRunConfig(opts);
  // The same tokenizer class training uses, so lengths and truncation match `finllm train`.
  const tokenizer = await LlamaTokenizer.load(opts.tokenizer ?? (await withLocalModel(cfg)).model.path);
  const prepared = await prepareData(cfg, tokenizer);
  return { cfg, prepared };
}

function addCommon(cmd: Command): Command {
  return cmd
    .option('-c, --config <file>', 'config file (default: configs/default.yaml)')
    .option('-e, --env <name>', 'environment profile from the config (default: $FINLLM_ENV)')
    .option('-s, --set <key=value>', 'override a config key (repeatable), e.g. data.max_seq_len=256', collect, [])
    .option('--tokenizer <dir>', 'folder with tokenizer.json (default: model.path from the config)')
    .option('--problems <n>', 'how many problems to list', '20');
}

export function register(program: Command): void {
  const data = program
    .command('data')
    .description('run only the data stage: validate the dataset and report statistics');

  addCommon(data.command('validate'))
    .description(
      'check every row (fields, encoding, length, duplicates); exit 1 listing the problems under on_invalid=fail',
    )
    .action(async (opts: DataOpts) => {
      const max = intOption(opts.problems, 'problems', 0)!;
      const { prepared } = await runStage(opts);
      const r = prepared.report;
      const shown = r.problems.slice(0, max);
      for (const p of shown) process.stdout.write(`${p.kind}: ${escapeControl(p.message)}\n`);
      if (r.problems.length > shown.length)
        process.stdout.write(`... ${r.problems.length - shown.length} more (see finllm data stats)\n`);
      const counts = Object.entries(r.problemCounts)
        .map(([k, n]) => `${n} ${k}`)
        .join(', ');
      process.stdout.write(
        `ok: ${r.train.examples} training and ${r.val.examples} validation examples` +
          (counts ? ` (${counts})` : ', no problems') +
          '\n',
      );
    });

  addCommon(data.command('stats'))
    .description('print the dataset statistics table and save it as JSON')
    .option('-o, --report <file>', `where to save the JSON report (default: <output.dir>/${DATA_REPORT_NAME})`)
    .action(async (opts: DataOpts) => {
      if (opts.report !== undefined) checkFileDestination(opts.report);
      const { cfg, prepared } = await runStage(opts);
      process.stdout.write(formatReport(prepared.report) + '\n');
      const path = opts.report ?? join(cfg.output.dir, DATA_REPORT_NAME);
      saveReport(prepared.report, path);
      process.stdout.write(`\nreport saved to ${path}\n`);
    });

  data
    .command('generate')
    .description('write a synthetic financial dataset (JSONL): a pretraining corpus or instruction tasks, from a seed')
    .requiredOption(
      '--kind <kind>',
      'corpus (raw documents for pretraining) or tasks (sentiment, figure extraction, one-line summary)',
    )
    .requiredOption('-o, --out <file>', 'output .jsonl (or .ndjson, .json) file of JSON Lines, written atomically')
    .option(
      '-n, --count <n>',
      `documents (corpus) or records per task (tasks); at most ${MAX_GENERATED_RECORDS} records in all, and no more than the disk holds (checked first)`,
      '1000',
    )
    .option('--seed <n>', 'random seed: the same seed writes the same file', '0')
    .option(
      '--split <name>',
      `company name space: ${SPLITS.join(', ')} (disjoint: evaluation companies never appear in training)`,
      'train',
    )
    .option(
      '--tasks <list>',
      `tasks only: comma-separated subset of ${ALL_TASK_KINDS.join(', ')} (default: ${TASK_KINDS.join(',')})`,
    )
    .option(
      '--eval',
      'tasks only: evaluation layout ({id, text, label}, {id, context, question, answer}, {id, source, summary, source_kind}) for eval suites; sentiment, figures and summary only',
    )
    .addHelpText(
      'after',
      `
Every company, person and figure is invented. Each document is rendered from one company-quarter
fact sheet, so the figures inside a document agree (growth, prior and current revenue, EPS against
consensus, guidance). Documents: earnings-call turns, analyst questions, filing (MD&A) passages,
news articles, guidance statements. Records use the data stage's field names (template auto picks
the template per record); corpus records are {"task": "completion", "source": <kind>, "text"}.

Examples:
  finllm data generate --kind corpus -n 20000 --seed 1 -o runs/corpus/train.jsonl
  finllm data generate --kind tasks -n 200 --seed 2 -o data/train.jsonl
  finllm data generate --kind tasks -n 60 --seed 103 --split eval --eval --tasks sentiment -o data/eval/fin-sentiment.jsonl

The commands that wrote the committed data files (data/finetune, data/eval, data/sample) are in data/README.md.`,
    )
    .action(async (o: GenerateOpts) => {
      if (o.kind !== 'corpus' && o.kind !== 'tasks')
        throw new InputError(`expected corpus or tasks, got ${JSON.stringify(o.kind)}`, { flag: 'kind' });
      const count = numberOption(o.count, 'count', true)!;
      if (count < 1) throw new InputError(`expected a positive count, got ${count}`, { flag: 'count' });
      const seed = numberOption(o.seed, 'seed', true)!;
      if (!SPLITS.includes(o.split as Split))
        throw new InputError(`expected one of ${SPLITS.join(', ')}, got ${JSON.stringify(o.split)}`, { flag: 'split' });
      let tasks: TaskKind[] | undefined;
      if (o.tasks !== undefined) {
        tasks = o.tasks.split(',').map((t) => t.trim()) as TaskKind[];
        const bad = tasks.filter((t) => !ALL_TASK_KINDS.includes(t));
        if (bad.length || tasks.length === 0)
          throw new InputError(
            `unknown task ${bad.map((b) => JSON.stringify(b)).join(', ') || '(none)'}; expected ${ALL_TASK_KINDS.join(', ')}`,
            { flag: 'tasks' },
          );
      }
      if (o.kind === 'corpus' && (tasks || o.eval))
        throw new InputError('--tasks and --eval apply to --kind tasks only', { flag: 'kind' });
      const n = await writeSyntheticJsonl(o.out, {
        kind: o.kind,
        seed,
        count,
        split: o.split as Split,
        ...(tasks ? { tasks } : {}),
        ...(o.eval ? { evalLayout: true } : {}),
      });
      process.stdout.write(`wrote ${n} records to ${o.out}\n`);
    });
}
