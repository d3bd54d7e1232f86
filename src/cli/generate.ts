// `finllm generate --model DIR [--adapter DIR] [--quantize nf4] --prompt TEXT [sampling flags]`:
// continues a prompt with KV-cache decoding, printing text as it is generated.
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import {
  generate,
  generationEosIds,
  readGenerationConfig,
  type SamplingOptions,
  TextStreamer,
  validateSampling,
} from '../llama/generate.js';
import { LlamaModel } from '../llama/model.js';
import { LlamaTokenizer } from '../llama/tokenizer.js';
import type { TemplateName } from '../pipeline/config.js';
import { layOutPrompt } from '../pipeline/data/prompt-layout.js';
import { TemplateProblem } from '../pipeline/data/templates.js';
import { collect } from './common.js';
import {
  addDataOptions,
  type DataCliOptions,
  type DataSettings,
  dataSettings,
  describeSettings,
} from './data-options.js';
import {
  addModelOptions,
  applyPrecision,
  type ModelCliOptions,
  modelLoadOptions,
  numberOption,
} from './model-options.js';

export interface GenerateCliOptions extends ModelCliOptions, DataCliOptions {
  field?: string[];
  chatTemplate?: string;
  prompt?: string;
  maxNewTokens?: string;
  temperature?: string;
  topK?: string;
  topP?: string;
  repetitionPenalty?: string;
  seed?: string;
  greedy?: boolean;
  sample?: boolean;
  chat?: boolean;
}

/** Sampling settings: the model's generation_config.json, overridden by the flags. */
export async function samplingFromFlags(dir: string, o: GenerateCliOptions): Promise<SamplingOptions> {
  const gen = await readGenerationConfig(dir);
  const temperature = numberOption(o.temperature, 'temperature');
  const topK = numberOption(o.topK, 'top-k', true);
  const topP = numberOption(o.topP, 'top-p');
  if (o.greedy && (o.sample || temperature !== undefined || topK !== undefined || topP !== undefined)) {
    throw new InputError('--greedy cannot be combined with --sample, --temperature, --top-k or --top-p');
  }
  const sampling =
    !o.greedy &&
    (o.sample || temperature !== undefined || topK !== undefined || topP !== undefined || gen.doSample === true);
  const opts: SamplingOptions = {
    maxNewTokens: numberOption(o.maxNewTokens, 'max-new-tokens', true) ?? gen.maxNewTokens ?? 64,
    greedy: !sampling,
    // transformers' defaults when sampling: temperature 1, top_k 50, top_p 1.
    temperature: temperature ?? gen.temperature ?? 1,
    topK: topK ?? gen.topK ?? 50,
    topP: topP ?? gen.topP ?? 1,
    repetitionPenalty: numberOption(o.repetitionPenalty, 'repetition-penalty') ?? gen.repetitionPenalty ?? 1,
    seed: numberOption(o.seed, 'seed', true) ?? 0,
  };
  if (gen.eosTokenIds) opts.eosTokenIds = gen.eosTokenIds;
  validateSampling(opts); // before anything heavy is loaded
  return opts;
}

/**
 * The prompt's token ids: with a template (--template, --chat, or the run's data.template) the
 * prompt is laid out exactly as training laid out that template's records, --prompt filling its
 * main field (text, instruction, prompt, or the user's message) and --field the others.
 */
export function promptIds(o: GenerateCliOptions, tokenizer: LlamaTokenizer, settings: DataSettings): number[] {
  const prompt = o.prompt!;
  const template: TemplateName = o.chat || o.chatTemplate !== undefined ? 'chat' : settings.template;
  if (template === 'auto') {
    if ((o.field ?? []).length > 0)
      throw new InputError('--field needs a template: give --template (or --chat)', { flag: 'field' });
    return tokenizer.encode(prompt);
  }
  const c = settings.columns;
  const extra: Record<string, string> = {};
  for (const spec of o.field ?? []) {
    const eq = spec.indexOf('=');
    const name = spec.slice(0, eq).trim();
    if (eq <= 0 || !(name in c))
      throw new InputError(
        `expected FIELD=TEXT with FIELD one of ${Object.keys(c).join(', ')}, got ${JSON.stringify(spec)}`,
        { flag: 'field' },
      );
    extra[name] = spec.slice(eq + 1);
  }
  let r: ReturnType<typeof layOutPrompt>;
  try {
    r = layOutPrompt({ ...settings, template }, tokenizer, prompt, extra);
  } catch (err) {
    if (err instanceof TemplateProblem)
      throw new InputError(`${err.message} (give it with --field)`, { flag: 'field' });
    throw err;
  }
  return r.rendered ? tokenizer.encode(r.prompt, { addSpecialTokens: false }) : tokenizer.encode(r.prompt);
}

export async function generateAction(
  o: GenerateCliOptions,
  out: (s: string) => void = (s) => void process.stdout.write(s),
): Promise<number[]> {
  if (o.prompt === undefined) throw new InputError('--prompt is required', { flag: 'prompt' });
  const { dir, load, precision, kvCache } = await modelLoadOptions(o);
  const settings = dataSettings(o, [o.adapter, o.model]);
  const sampling = { ...(await samplingFromFlags(dir, o)), kvCache };
  const tokenizer = await LlamaTokenizer.load(
    dir,
    o.chatTemplate !== undefined ? { chatTemplateFile: o.chatTemplate } : {},
  );
  const note = describeSettings(settings);
  if (note) process.stderr.write(`${note}\n`);
  const ids = promptIds(o, tokenizer, settings);
  await applyPrecision(precision);
  const model = await LlamaModel.load(dir, load);
  try {
    sampling.eosTokenIds ??= generationEosIds({}, model.config.eosTokenIds, tokenizer.eosId);
    const streamer = new TextStreamer(tokenizer.streamDecoder());
    const r = await generate(model, ids, sampling, (id) => {
      const piece = streamer.push(id);
      if (piece) out(piece);
    });
    out(`${streamer.flush()}\n`);
    return r.tokens;
  } finally {
    model.dispose();
  }
}

export function register(program: Command): void {
  addDataOptions(addModelOptions(program.command('generate')))
    .description('continue a prompt (KV-cache decoding), printing tokens as they come')
    .requiredOption(
      '-p, --prompt <text>',
      'the prompt (tokenized with BOS like the model tokenizer does); with a template, its main field',
    )
    .option(
      '--chat',
      "wrap the prompt as a user message with the tokenizer's chat template (without one: the training layout of chat records)",
    )
    .option('--chat-template <file>', "Jinja chat template replacing the tokenizer's (implies --chat)")
    .option(
      '--field <name=text>',
      'another field of the template, e.g. --field question="What was revenue?" for qa, --field input=... for alpaca (repeatable)',
      collect,
      [],
    )
    .option('-n, --max-new-tokens <n>', 'most tokens to generate (default: generation_config.json, else 64)')
    .option('--greedy', 'always take the most likely token')
    .option('--sample', 'sample (the default when generation_config.json says do_sample or a sampling flag is given)')
    .option('--temperature <t>', 'sampling temperature (default 1; at least 1e-5: use --greedy for greedy decoding)')
    .option('--top-k <k>', 'sample among the k most likely tokens (default 50; 0 = all)')
    .option('--top-p <p>', 'nucleus sampling threshold (default 1 = off)')
    .option(
      '--repetition-penalty <r>',
      'penalise tokens already present, as transformers does (default 1 = off; at least 1e-5)',
    )
    .option('--seed <n>', 'sampling seed, 0 to 4294967295 (default 0)')
    .addHelpText(
      'after',
      `
With --template (or the run's data.template, see --run) the prompt is laid out as training laid
out that template's records: --prompt fills the main field (text; instruction for alpaca; prompt
for completion; the user's message for chat) and --field the others. Example:
  finllm generate --model M --template qa --prompt "Revenue rose 8% to $2.1 billion." --field question="What was revenue?"

Defaults follow the model's generation_config.json (greedy unless it sets do_sample), then
transformers' defaults. Generation stops at an EOS token or after --max-new-tokens.
--kv-cache f16 stores the cached keys and values in f16: half the memory, logits within f16
rounding of the f32 cache's (auto, the default, picks it under --precision fp16-mixed).

Exit codes: 0 done, 1 bad input, 2 runtime failure.`,
    )
    .action(async (o: GenerateCliOptions) => {
      await generateAction(o);
    });
}
