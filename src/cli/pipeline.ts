// `finllm pipeline [--config FILE] [--env NAME] [--set k=v ...] [--rerun-from STAGE] [--quiet]`:
// data → baseline eval → train → fine-tuned eval → compare → export in one run folder
// (src/pipeline/pipeline.ts). With no arguments it runs configs/default.yaml: full fine-tuning of the
// bundled base model (models/fin-base) on the bundled tasks (data/finetune), evaluated on held-out
// items of the bundled suites (data/eval), on whatever adapter Dawn finds.
import type { Command } from 'commander';
import { escapeControl, InputError } from '../errors.js';
import { runPipeline, STAGES, type StageName } from '../pipeline/pipeline.js';
import { loadRunConfig } from '../pipeline/run-config.js';

const collect = (v: string, prev: string[]) => [...prev, v];

export interface PipelineCliOptions {
  config?: string;
  env?: string;
  set: string[];
  rerunFrom?: string;
  quiet?: boolean;
}

export async function pipelineAction(
  opts: PipelineCliOptions,
  out: (s: string) => void = (s) => void process.stdout.write(s),
): Promise<void> {
  if (opts.rerunFrom !== undefined && !(STAGES as readonly string[]).includes(opts.rerunFrom)) {
    throw new InputError(`expected one of ${STAGES.join(', ')}, got ${JSON.stringify(opts.rerunFrom)}`, {
      flag: 'rerun-from',
    });
  }
  const cfg = loadRunConfig(opts);
  const r = await runPipeline(cfg, {
    quiet: opts.quiet ?? false,
    ...(opts.rerunFrom ? { rerunFrom: opts.rerunFrom as StageName } : {}),
  });
  const lines = [`run folder: ${r.runDir}`];
  for (const s of r.stages)
    lines.push(`  ${s.name.padEnd(15)} ${s.outcome}${s.outcome === 'ran' ? ` (${s.seconds.toFixed(1)}s)` : ''}`);
  for (const rep of r.reports) lines.push(`report ${rep.suite}: ${rep.html}`);
  if (r.adapterDir) lines.push(`adapter: ${r.adapterDir}`);
  if (r.modelDir) lines.push(`model: ${r.modelDir}`);
  if (r.mergedDir) lines.push(`merged model: ${r.mergedDir}`);
  lines.push(`state: ${r.stateFile}`);
  for (const rep of r.reports) if (rep.verdict) lines.push(rep.verdict);
  out(escapeControl(lines.join('\n')) + '\n');
}

export function register(program: Command): void {
  program
    .command('pipeline')
    .description('data → baseline eval → train → fine-tuned eval → compare → export, resumable stage by stage')
    .option(
      '-c, --config <file>',
      'YAML config (default: configs/default.yaml: the bundled base model, fine-tuning tasks and eval suites)',
    )
    .option('-e, --env <name>', 'environment profile from the config, e.g. cpu or gpu (default: $FINLLM_ENV)')
    .option(
      '-s, --set <key=value>',
      'override a config key (repeatable), e.g. training.max_steps=10 or eval.limit=5',
      collect,
      [],
    )
    .option('--rerun-from <stage>', `run this stage and all later ones even if done (${STAGES.join(', ')})`)
    .option('-q, --quiet', 'no progress output')
    .addHelpText(
      'after',
      `
Each stage writes into <output.dir>/stages/<stage>/ and is recorded in <output.dir>/pipeline-state.json
with a fingerprint of its inputs. Re-running skips stages that are done with unchanged inputs, so a
crashed or interrupted run continues where it stopped (training from its last checkpoint); changing
an input re-runs that stage and the ones after it. training.precision auto counts as what it
resolves to on this adapter (fp16-mixed with f16 tensor cores, else fp32): a folder trained where
auto meant the other precision is trained again. The comparison reports are in
<output.dir>/stages/compare/<suite>/ (report.html, summary.md, report.json).
<output.dir>/resolved-config.yaml is the latest run's configuration, every section included (what
\`finllm eval --run\` reads); stages/train/resolved-config.yaml holds what training used.

model.path may be a Hugging Face Hub id, ORG/NAME or ORG/NAME@REVISION, when no local folder has
that name: its config, tokenizer and safetensors weights are downloaded once into the HF cache
($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), honouring HF_TOKEN, HF_ENDPOINT
and HF_HUB_OFFLINE=1.

Exit codes: 0 done, 1 bad input (config, data, eval files, model folder), 2 runtime failure.`,
    )
    .action(async (opts: PipelineCliOptions) => pipelineAction(opts));
}
