// `finllm data validate|stats --config FILE`: run only the data stage (read, validate, template,
// dedup, tokenize) and print what was found. Bad input exits 1 with the message (see common.ts).
import { join } from 'node:path';
import type { Command } from 'commander';
import type { ResolvedConfig } from '../pipeline/config.js';
import { escapeControl } from '../errors.js';
import { loadRunConfig } from './train.js';
import { LlamaTokenizer } from '../llama/tokenizer.js';
import { prepareData, type PreparedData } from '../pipeline/data/prepare.js';
import { formatReport, saveReport } from '../pipeline/data/stats.js';
import { intOption } from './model-options.js';
import { checkFileDestination } from '../io/atomic.js';

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
  const tokenizer = await LlamaTokenizer.load(opts.tokenizer ?? cfg.model.path);
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
  const data = program.command('data').description('run only the data stage: validate the dataset and report statistics');

  addCommon(data.command('validate'))
    .description('check every row (fields, encoding, length, duplicates); exit 1 listing the problems under on_invalid=fail')
    .action(async (opts: DataOpts) => {
      const max = intOption(opts.problems, 'problems', 0)!;
      const { prepared } = await runStage(opts);
      const r = prepared.report;
      const shown = r.problems.slice(0, max);
      for (const p of shown) process.stdout.write(`${p.kind}: ${escapeControl(p.message)}\n`);
      if (r.problems.length > shown.length) process.stdout.write(`... ${r.problems.length - shown.length} more (see finllm data stats)\n`);
      const counts = Object.entries(r.problemCounts).map(([k, n]) => `${n} ${k}`).join(', ');
      process.stdout.write(
        `ok: ${r.train.examples} training and ${r.val.examples} validation examples` + (counts ? ` (${counts})` : ', no problems') + '\n',
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
}
