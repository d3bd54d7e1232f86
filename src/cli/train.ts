// `finllm train [--config FILE] [--env NAME] [--set k=v ...] [--resume] [--allow-config-change]`:
// fine-tune with LoRA/QLoRA, or train every weight (training.method: full; pretraining from scratch
// is that on raw text). With no config it runs the bundled default (configs/default.yaml), writing
// under the current directory.
import type { Command } from 'commander';
import { escapeControl, Interrupted } from '../errors.js';
import { loadRunConfig, type RunConfigOptions } from '../pipeline/run-config.js';
import { runTraining } from '../pipeline/train/trainer.js';

const collect = (v: string, prev: string[]) => [...prev, v];

interface TrainOpts extends RunConfigOptions {
  resume?: boolean;
  allowConfigChange?: boolean;
  quiet?: boolean;
}

export function register(program: Command): void {
  program
    .command('train')
    .description(
      'fine-tune (LoRA/QLoRA, or full training of every weight) as the config says; writes the adapter or model, checkpoints and logs to output.dir',
    )
    .option(
      '-c, --config <file>',
      'YAML config (default: configs/default.yaml: the bundled base model and fine-tuning tasks)',
    )
    .option('-e, --env <name>', 'environment profile from the config, e.g. cpu or gpu (default: $FINLLM_ENV)')
    .option('-s, --set <key=value>', 'override a config key (repeatable), e.g. training.max_steps=10', collect, [])
    .option('--resume', 'continue from the latest checkpoint in output.dir')
    .option('--allow-config-change', "resume although settings differ from the checkpoint's (they are listed)")
    .option('-q, --quiet', 'no progress output')
    .addHelpText(
      'after',
      `
model.path may be a Hugging Face Hub id, ORG/NAME or ORG/NAME@REVISION, when no local folder has
that name: its config, tokenizer and safetensors weights are downloaded once into the HF cache
($HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub), honouring HF_TOKEN, HF_ENDPOINT
and HF_HUB_OFFLINE=1.

Exit codes: 0 done, 1 bad input (config, data, model folder), 2 runtime failure (e.g. a step with a
non-finite loss: nothing of it is saved), 130 interrupted by Ctrl-C (143 by SIGTERM).
Ctrl-C finishes the current step, saves a checkpoint and exits 130; --resume continues from it.
A resume refuses settings that differ from the checkpoint's unless --allow-config-change.
A checkpoints/step-N folder that is not a complete checkpoint (no trainer_state.json) stops the run
before any step; finllm deletes or replaces only checkpoints it wrote.
Re-running a finished run changes nothing.`,
    )
    .action(async (opts: TrainOpts) => {
      const cfg = loadRunConfig(opts);
      const r = await runTraining(cfg, {
        resume: opts.resume,
        quiet: opts.quiet,
        allowConfigChange: opts.allowConfigChange,
      });
      const lines = [
        `run folder: ${r.runDir}`,
        r.alreadyComplete
          ? `already complete at step ${r.steps}${r.stoppedEarly ? ' (early stopping)' : ''}: nothing to do`
          : null,
        r.alreadyComplete
          ? null
          : `steps: ${r.steps}${r.interrupted ? ' (interrupted; resume with --resume)' : ''}${r.stoppedEarly ? ' (early stopping)' : ''}`,
        r.initialValLoss !== null && r.finalValLoss !== null
          ? `validation loss: ${r.initialValLoss.toFixed(4)} -> ${r.finalValLoss.toFixed(4)}`
          : null,
        r.adapterDir ? `adapter: ${r.adapterDir}` : null,
        r.modelDir ? `model: ${r.modelDir}` : null,
        r.mergedDir ? `merged model: ${r.mergedDir}` : null,
        r.tokensPerSecond > 0 && !r.alreadyComplete ? `throughput: ${r.tokensPerSecond.toFixed(0)} tokens/s` : null,
      ].filter(Boolean);
      process.stdout.write(escapeControl(lines.join('\n')) + '\n');
      if (r.interrupted) {
        throw new Interrupted(
          r.signal ?? 'SIGINT',
          `interrupted: checkpoint saved at step ${r.steps}; the adapter in ${r.adapterDir} is partial. Continue with --resume`,
        );
      }
    });
}
