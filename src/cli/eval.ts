// `finllm eval --model DIR [--adapter DIR] [--quantize nf4] --data FILE.jsonl [--task perplexity]
//  [--metrics perplexity] [--json]`: evaluates a model on a data file with the library's evaluation
// flow (src/pipeline/eval/run.ts). This file parses the flags and formats the results.
// The perplexity task reads {"text": ...} rows and reports per-text losses exactly as transformers
// computes `model(input_ids=ids, labels=ids).loss`, their token-weighted mean and its exp.
// The generation and classification tasks prompt the records through the training templates,
// decode greedily, score, and write a finllm.results.v1 file (--out).
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import { checkFileDestination } from '../io/atomic.js';
import { validateSampling } from '../llama/generate.js';
import type { KvCacheSetting } from '../llama/kv-cache.js';
import { type GenerationEvalResult, type GenerationTask, parseEvalMetrics } from '../pipeline/eval/generation.js';
import { type PerplexityResult, perplexityJson } from '../pipeline/eval/perplexity.js';
import { fmt } from '../pipeline/eval/report.js';
import { type EvalSuite, type EvaluateOptions, evaluate } from '../pipeline/eval/run.js';
import { addDataOptions, type DataCliOptions, dataSettings, describeSettings } from './data-options.js';
import {
  addModelOptions,
  applyPrecision,
  intOption,
  type ModelCliOptions,
  modelLoadOptions,
  numberOption,
} from './model-options.js';

export interface EvalCliOptions extends ModelCliOptions, DataCliOptions {
  data?: string;
  task?: string;
  metrics?: string;
  json?: boolean;
  tokensPerPass?: string;
  /** The output file: the results (generation/classification) or the perplexity JSON. */
  out?: string;
  maxNewTokens?: string;
  batchSize?: string;
  limit?: string;
  sample?: boolean;
  temperature?: string;
  topK?: string;
  topP?: string;
  repetitionPenalty?: string;
  seed?: string;
  embeddingLayer?: string;
  quiet?: boolean;
}

/** The model, data settings and precision hook shared by the tasks: evaluate()'s options less the suites. */
async function evalSetup(
  opts: EvalCliOptions,
): Promise<{ base: Omit<EvaluateOptions, 'suites'>; kvCache: KvCacheSetting }> {
  const { dir, load, precision, kvCache } = await modelLoadOptions(opts);
  const s = dataSettings(opts, [opts.adapter, opts.model]);
  const line = describeSettings(s);
  if (line && !opts.quiet) process.stderr.write(`${line}\n`);
  return {
    kvCache,
    base: {
      modelDir: dir,
      load,
      data: { format: s.format, columns: s.columns, template: s.template, preprocess: s.preprocess },
      quiet: opts.quiet ?? false,
      beforeLoad: () => applyPrecision(precision),
    },
  };
}

export function perplexityTable(r: PerplexityResult): string {
  const lines = ['  #   tokens      loss   perplexity'];
  r.perExample.forEach((e, i) => {
    lines.push(
      `${String(i + 1).padStart(3)}  ${String(e.tokens).padStart(7)}  ${e.loss.toFixed(4).padStart(8)}  ${Math.exp(e.loss).toFixed(2).padStart(11)}`,
    );
  });
  lines.push('');
  lines.push(`examples: ${r.examples}   predicted tokens: ${r.tokens}`);
  lines.push(`loss: ${r.loss.toFixed(6)}   perplexity: ${r.perplexity.toFixed(4)}`);
  return lines.join('\n');
}

/** Runs the perplexity task (writes --out when given); returns the result (the verb prints it). */
export async function runPerplexityEval(opts: EvalCliOptions): Promise<PerplexityResult> {
  const metrics = (opts.metrics ?? 'perplexity')
    .split(',')
    .map((m) => m.trim())
    .filter(Boolean);
  for (const m of metrics)
    if (m !== 'perplexity')
      throw new InputError(`unknown metric ${JSON.stringify(m)} for the perplexity task; expected perplexity`, {
        flag: 'metrics',
      });
  if (!opts.data) throw new InputError('--data is required', { flag: 'data' });
  const tokensPerPass = intOption(opts.tokensPerPass, 'tokens-per-pass', 1);
  const { base } = await evalSetup(opts);
  const suite: EvalSuite = { file: opts.data, task: 'perplexity', out: opts.out ?? null };
  const [r] = await evaluate({ ...base, suites: [suite], ...(tokensPerPass !== undefined ? { tokensPerPass } : {}) });
  return r!.perplexity!;
}

/** Runs the generation or classification task; writes --out when given; returns the result. */
export async function runGenerationTask(task: GenerationTask, opts: EvalCliOptions): Promise<GenerationEvalResult> {
  if (!opts.data) throw new InputError('--data is required', { flag: 'data' });
  const maxNewTokens = intOption(opts.maxNewTokens, 'max-new-tokens', 1) ?? 64;
  const batchSize = intOption(opts.batchSize, 'batch-size', 1);
  const limit = intOption(opts.limit, 'limit', 1);
  const embeddingLayer = numberOption(opts.embeddingLayer, 'embedding-layer', true);
  const sampled = opts.sample || [opts.temperature, opts.topK, opts.topP].some((v) => v !== undefined);
  const sampling = {
    greedy: !sampled,
    ...(opts.temperature !== undefined ? { temperature: numberOption(opts.temperature, 'temperature')! } : {}),
    ...(opts.topK !== undefined ? { topK: numberOption(opts.topK, 'top-k', true)! } : {}),
    ...(opts.topP !== undefined ? { topP: numberOption(opts.topP, 'top-p')! } : {}),
    ...(opts.repetitionPenalty !== undefined
      ? { repetitionPenalty: numberOption(opts.repetitionPenalty, 'repetition-penalty')! }
      : {}),
    ...(opts.seed !== undefined ? { seed: numberOption(opts.seed, 'seed', true)! } : {}),
  };
  validateSampling({ maxNewTokens, ...sampling }); // before the model is loaded
  const metrics = opts.metrics !== undefined ? parseEvalMetrics(opts.metrics, 'metrics') : null;
  const { base, kvCache } = await evalSetup(opts);
  const suite: EvalSuite = { file: opts.data, task, limit: limit ?? null, metrics, out: opts.out ?? null };
  const [r] = await evaluate({
    ...base,
    suites: [suite],
    maxNewTokens,
    sampling: { ...sampling, kvCache },
    ...(batchSize !== undefined ? { batchSize } : {}),
    ...(embeddingLayer !== undefined ? { embeddingLayer } : {}),
  });
  return r!.generation!;
}

/** Human-readable summary of a generation / classification run. */
export function generationTable(r: GenerationEvalResult, out?: string): string {
  const lines = [
    `task: ${r.results.task} (${r.results.per_example.length} examples, ${r.results.generation.greedy ? 'greedy' : 'sampled'}, max ${r.results.generation.max_new_tokens} new tokens)`,
  ];
  const w = Math.max(6, ...Object.keys(r.results.metrics).map((k) => k.length));
  for (const [k, v] of Object.entries(r.results.metrics)) lines.push(`  ${k.padEnd(w)}  ${fmt(v)}`);
  const c = r.classification;
  if (c) {
    lines.push(`accuracy ${fmt(c.accuracy)}   macro F1 ${fmt(c.macroF1)}   weighted F1 ${fmt(c.weightedF1)}`);
    lines.push('confusion (rows gold, columns predicted: negative neutral positive)');
    for (const [i, label] of ['negative', 'neutral', 'positive'].entries())
      lines.push(`  ${label.padEnd(8)} ${c.confusion[i]!.map((n) => String(n).padStart(5)).join('')}`);
  }
  if (out) lines.push(`results: ${out}`);
  return lines.join('\n');
}

/** Eval tasks by name: each runs and prints its own output. */
export const EVAL_TASKS: Record<string, (opts: EvalCliOptions, out: (s: string) => void) => Promise<void>> = {
  perplexity: async (opts, out) => {
    if (opts.limit !== undefined)
      throw new InputError('--limit applies to the generation and classification tasks', { flag: 'limit' });
    if (opts.kvCache !== undefined)
      throw new InputError(
        '--kv-cache applies to the generation and classification tasks (perplexity keeps no KV cache)',
        { flag: 'kv-cache' },
      );
    const r = await runPerplexityEval(opts);
    out(opts.json ? `${JSON.stringify(perplexityJson(r))}\n` : `${perplexityTable(r)}\n`);
  },
  generation: async (opts, out) => {
    const r = await runGenerationTask('generation', opts);
    out(opts.json ? `${JSON.stringify(r.results)}\n` : `${generationTable(r, opts.out)}\n`);
  },
  classification: async (opts, out) => {
    const r = await runGenerationTask('classification', opts);
    out(opts.json ? `${JSON.stringify(r.results)}\n` : `${generationTable(r, opts.out)}\n`);
  },
};

export async function evalAction(
  opts: EvalCliOptions,
  out: (s: string) => void = (s) => void process.stdout.write(s),
): Promise<void> {
  const task = opts.task ?? 'perplexity';
  const run = Object.hasOwn(EVAL_TASKS, task) ? EVAL_TASKS[task] : undefined;
  if (!run)
    throw new InputError(
      `unknown task ${JSON.stringify(task)}; expected one of ${Object.keys(EVAL_TASKS).join(', ')}`,
      { flag: 'task' },
    );
  if (opts.out !== undefined) checkFileDestination(opts.out);
  await run(opts, out);
}

export function register(program: Command): void {
  addDataOptions(addModelOptions(program.command('eval')), { format: true })
    .description('evaluate a model (+ adapter) on a JSONL, JSON or CSV file')
    .requiredOption(
      '-d, --data <file>',
      'records (.jsonl, .json or .csv); for perplexity: {"text": "..."}; generation/classification: see below',
    )
    .option('-t, --task <name>', 'evaluation task: perplexity, generation or classification', 'perplexity')
    .option(
      '--metrics <list>',
      "comma-separated metrics of the task (perplexity: perplexity; generation: rouge, bleu, chrf, exact, numeric, sentiment, terms, embedding, bertscore; classification: label); default: the task's",
    )
    .option('--json', 'print exactly one JSON object on stdout')
    .option('--tokens-per-pass <n>', 'texts are packed into forward passes of up to this many tokens', '2048')
    .option('-o, --out <file>', 'write the results (generation/classification: finllm.results.v1 for `finllm compare`)')
    .option('-n, --max-new-tokens <n>', 'most tokens generated per example (default 64)')
    .option(
      '--batch-size <n>',
      'generation/classification: prompts decoded together, left-padded, shortest first (default 8; 1 = one at a time)',
    )
    .option('--limit <n>', 'evaluate the first N records only')
    .option('--sample', 'sample instead of greedy decoding (implied by --temperature, --top-k, --top-p)')
    .option('--temperature <t>', 'sampling temperature')
    .option('--top-k <k>', 'sample among the k most likely tokens (0 = all)')
    .option('--top-p <p>', 'nucleus sampling threshold')
    .option('--repetition-penalty <r>', 'penalise tokens already present (1 = off)')
    .option('--seed <n>', 'sampling seed (default 0)')
    .option(
      '--embedding-layer <n>',
      'hidden-state layer for the embedding/bertscore metrics (default: last, final norm)',
    )
    .option('-q, --quiet', 'no progress bar on stderr')
    .addHelpText(
      'after',
      `
Perplexity: each text is tokenized with the model's tokenizer defaults (BOS added by its
post-processor); its loss is the mean negative log-likelihood of tokens 2..n given the tokens
before them, as transformers computes model(input_ids=ids, labels=ids).loss. "tokens" counts the
predicted tokens, n - 1 per text. The corpus loss is the token-weighted mean; perplexity = exp(loss).
--json prints {"examples", "tokens", "loss", "perplexity", "per_example": [{"loss", "tokens"}, ...]}.

Generation / classification: each record becomes a prompt with the training templates (qa:
{context, question, answer}; summarization: {source, summary}; sentiment: {text, label};
or {prompt, reference}; or any training record: Alpaca, messages, conversations, or your columns
mapped as in training), the model continues it (greedy by default) and the text is scored with
the eval library (classification: the label is read from the generated text as FinGPT does, then
accuracy, F1 and the confusion matrix). --out writes a finllm.results.v1 file for
\`finllm compare\`; --json prints that object. The embedding and bertscore metrics use the base
model's hidden states (relative comparisons only, not a trained sentence encoder).

Training records are prompted exactly as in training: the data settings (data.columns,
data.template, data.preprocess) come from the run folder's resolved-config.yaml (--run, or the one
beside --adapter / --model), then --template and --column.

Exit codes: 0 done, 1 bad input (model, adapter or data), 2 runtime failure.`,
    )
    .action(async (opts: EvalCliOptions) => evalAction(opts));
}
