// `finllm train [--config FILE] [--env NAME] [--set k=v ...] [--resume]`: fine-tune with LoRA/QLoRA,
// or train every weight (training.method: full; pretraining from scratch is that on raw text).
// With no config it runs the bundled default (configs/default.yaml: tiny model + sample data).
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { loadConfig, DEFAULT_CONFIG_FILE } from '../pipeline/config.js';
import { runTraining } from '../pipeline/train/trainer.js';

const collect = (v: string, prev: string[]) => [...prev, v];

/** configs/default.yaml in the working directory, else the one shipped with finllm. */
export function defaultConfigFile(): string {
  const local = resolve(DEFAULT_CONFIG_FILE);
  if (existsSync(local)) return local;
  // dist/src/cli/train.js → package root
  return join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', DEFAULT_CONFIG_FILE);
}

interface TrainOpts {
  config?: string;
  env?: string;
  set: string[];
  resume?: boolean;
  quiet?: boolean;
}

export function register(program: Command): void {
  program
    .command('train')
    .description('fine-tune (LoRA/QLoRA, or full training of every weight) as the config says; writes the adapter or model, checkpoints and logs to output.dir')
    .option('-c, --config <file>', 'YAML config (default: configs/default.yaml, the bundled tiny model + sample data)')
    .option('-e, --env <name>', 'environment profile from the config, e.g. cpu or gpu (default: $FINLLM_ENV)')
    .option('-s, --set <key=value>', 'override a config key (repeatable), e.g. training.max_steps=10', collect, [])
    .option('--resume', 'continue from the latest checkpoint in output.dir')
    .option('-q, --quiet', 'no progress output')
    .addHelpText('after', '\nExit codes: 0 done, 1 bad input (config, data, model folder), 2 runtime failure.\nCtrl-C finishes the current step, saves a checkpoint and exits; --resume continues from it.')
    .action(async (opts: TrainOpts) => {
      const cfg = loadConfig({
        file: opts.config ?? defaultConfigFile(),
        ...(opts.env !== undefined ? { env: opts.env } : {}),
        sets: opts.set,
      });
      const r = await runTraining(cfg, { resume: opts.resume, quiet: opts.quiet });
      const lines = [
        `run folder: ${r.runDir}`,
        `steps: ${r.steps}${r.interrupted ? ' (interrupted; resume with --resume)' : ''}${r.stoppedEarly ? ' (early stopping)' : ''}`,
        r.initialValLoss !== null && r.finalValLoss !== null ? `validation loss: ${r.initialValLoss.toFixed(4)} -> ${r.finalValLoss.toFixed(4)}` : null,
        r.adapterDir ? `adapter: ${r.adapterDir}` : null,
        r.modelDir ? `model: ${r.modelDir}` : null,
        r.mergedDir ? `merged model: ${r.mergedDir}` : null,
        r.tokensPerSecond > 0 ? `throughput: ${r.tokensPerSecond.toFixed(0)} tokens/s` : null,
      ].filter(Boolean);
      process.stdout.write(lines.join('\n') + '\n');
    });
}
