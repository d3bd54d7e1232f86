// `finllm init-model --preset tiny|160m|1.1b --tokenizer DIR OUT_DIR [--seed N]`: writes a randomly
// initialised HF Llama checkpoint (normal(0, 0.02) as transformers initialises) with the tokenizer.
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import { LLAMA_PRESETS } from '../llama/config.js';
import { initModel } from '../llama/init.js';
import { intOption } from './model-options.js';

export interface InitModelCliOptions {
  preset?: string;
  tokenizer?: string;
  seed?: string;
}

export async function initModelAction(
  outDir: string,
  o: InitModelCliOptions,
  out: (s: string) => void = (s) => void process.stdout.write(s),
): Promise<void> {
  if (!o.preset) throw new InputError('--preset is required', { flag: 'preset' });
  if (!o.tokenizer) throw new InputError('--tokenizer is required', { flag: 'tokenizer' });
  const seed = intOption(o.seed, 'seed', 0) ?? 0;
  const cfg = await initModel(outDir, { preset: o.preset, tokenizerDir: o.tokenizer, seed });
  const params =
    cfg.vocabSize * cfg.hiddenSize * (cfg.tieWordEmbeddings ? 1 : 2) +
    cfg.numHiddenLayers *
      (2 * cfg.hiddenSize +
        cfg.hiddenSize * cfg.headDim * (2 * cfg.numAttentionHeads + 2 * cfg.numKeyValueHeads) +
        3 * cfg.hiddenSize * cfg.intermediateSize) +
    cfg.hiddenSize;
  out(
    `wrote ${outDir}: preset ${o.preset}, ${params.toLocaleString('en-US')} parameters, vocabulary ${cfg.vocabSize}\n`,
  );
}

export function register(program: Command): void {
  program
    .command('init-model')
    .description('write a randomly initialised Llama checkpoint (HF format) from a preset')
    .usage('--preset <name> --tokenizer <dir> [--seed <n>] <out_dir>')
    .argument('<out_dir>', 'output folder (must not exist or be empty; written atomically)')
    .requiredOption('--preset <name>', `required: model size: ${Object.keys(LLAMA_PRESETS).join(', ')}`)
    .requiredOption(
      '--tokenizer <dir>',
      'required: folder with tokenizer.json and tokenizer_config.json (copied; sets vocab size, BOS, EOS)',
    )
    .option('--seed <n>', 'random seed', '0')
    .addHelpText(
      'after',
      `
Weights ~ normal(0, initializer_range = 0.02), RMSNorm weights 1, as transformers initialises Llama.
The same seed gives identical files.

Exit codes: 0 done, 1 bad input, 2 runtime failure.`,
    )
    .action(async (outDir: string, o: InitModelCliOptions) => initModelAction(outDir, o));
}
