// `finllm eval --model DIR [--adapter DIR] [--quantize nf4] --data FILE.jsonl [--task perplexity]
//  [--metrics perplexity] [--json]`: evaluates a model on a JSONL file. The perplexity task reads
// {"text": ...} rows and reports per-text losses exactly as transformers computes
// `model(input_ids=ids, labels=ids).loss`, their token-weighted mean and its exp.
// Tasks are looked up in EVAL_TASKS, so further tasks (generation, classification) plug in there.
import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { initEngine } from '../engine/tensor.js';
import { InputError } from '../errors.js';
import { evaluatePerplexity, type PerplexityResult } from '../llama/evaluate.js';
import { LlamaModel } from '../llama/model.js';
import { LlamaTokenizer } from '../llama/tokenizer.js';
import { addModelOptions, modelLoadOptions, numberOption, type ModelCliOptions } from './model-options.js';

export interface EvalCliOptions extends ModelCliOptions {
  data?: string;
  task?: string;
  metrics?: string;
  json?: boolean;
  tokensPerPass?: string;
}

/** One JSONL row: its 1-based line number and parsed object. */
export interface JsonlRow {
  row: number;
  value: Record<string, unknown>;
}

/** Reads a JSONL file (blank lines skipped); bad JSON or a non-object is an InputError with the row. */
export async function readJsonlRows(file: string): Promise<JsonlRow[]> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new InputError(code === 'ENOENT' ? 'data file not found' : `cannot read data file (${code})`, { file });
  }
  const rows: JsonlRow[] = [];
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      throw new InputError(`invalid JSON: ${(err as Error).message}`, { file, row: i + 1 });
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new InputError('expected a JSON object per line', { file, row: i + 1 });
    rows.push({ row: i + 1, value: value as Record<string, unknown> });
  });
  if (rows.length === 0) throw new InputError('no rows: the data file is empty', { file });
  return rows;
}

/** The {"text"} field of every row. */
export function textsOf(rows: JsonlRow[], file: string): string[] {
  return rows.map(({ row, value }) => {
    const t = value['text'];
    if (typeof t !== 'string') throw new InputError(`expected a "text" string, got ${t === undefined ? 'no "text" field' : JSON.stringify(t).slice(0, 60)}`, { file, row, key: 'text' });
    if (t === '') throw new InputError('"text" is empty', { file, row, key: 'text' });
    return t;
  });
}

/** The JSON object `eval --json` prints for the perplexity task. */
export function perplexityJson(r: PerplexityResult): Record<string, unknown> {
  return {
    examples: r.examples,
    tokens: r.tokens,
    loss: r.loss,
    perplexity: r.perplexity,
    per_example: r.perExample.map((e) => ({ loss: e.loss, tokens: e.tokens })),
  };
}

export function perplexityTable(r: PerplexityResult): string {
  const lines = ['  #   tokens      loss   perplexity'];
  r.perExample.forEach((e, i) => {
    lines.push(`${String(i + 1).padStart(3)}  ${String(e.tokens).padStart(7)}  ${e.loss.toFixed(4).padStart(8)}  ${Math.exp(e.loss).toFixed(2).padStart(11)}`);
  });
  lines.push('');
  lines.push(`examples: ${r.examples}   predicted tokens: ${r.tokens}`);
  lines.push(`loss: ${r.loss.toFixed(6)}   perplexity: ${r.perplexity.toFixed(4)}`);
  return lines.join('\n');
}

/** Runs the perplexity task; returns the result (the verb prints it). */
export async function runPerplexityEval(opts: EvalCliOptions): Promise<PerplexityResult> {
  const metrics = (opts.metrics ?? 'perplexity').split(',').map((m) => m.trim()).filter(Boolean);
  for (const m of metrics) if (m !== 'perplexity') throw new InputError(`unknown metric ${JSON.stringify(m)} for the perplexity task; expected perplexity`, { key: 'metrics' });
  if (!opts.data) throw new InputError('--data is required', { key: 'data' });
  const tokensPerPass = numberOption(opts.tokensPerPass, 'tokens-per-pass', true);
  const { dir, load } = await modelLoadOptions(opts);
  const texts = textsOf(await readJsonlRows(opts.data), opts.data);
  const tokenizer = await LlamaTokenizer.load(dir);
  await initEngine();
  const model = await LlamaModel.load(dir, load);
  try {
    return await evaluatePerplexity(model, tokenizer, texts, tokensPerPass ? { maxTokensPerPass: tokensPerPass } : {});
  } finally {
    model.dispose();
  }
}

/** Eval tasks by name: each runs and prints its own output. */
export const EVAL_TASKS: Record<string, (opts: EvalCliOptions, out: (s: string) => void) => Promise<void>> = {
  perplexity: async (opts, out) => {
    const r = await runPerplexityEval(opts);
    out(opts.json ? `${JSON.stringify(perplexityJson(r))}\n` : `${perplexityTable(r)}\n`);
  },
};

export async function evalAction(opts: EvalCliOptions, out: (s: string) => void = (s) => void process.stdout.write(s)): Promise<void> {
  const task = opts.task ?? 'perplexity';
  const run = EVAL_TASKS[task];
  if (!run) throw new InputError(`unknown task ${JSON.stringify(task)}; expected one of ${Object.keys(EVAL_TASKS).join(', ')}`, { key: 'task' });
  await run(opts, out);
}

export function register(program: Command): void {
  addModelOptions(program.command('eval'))
    .description('evaluate a model (+ adapter) on a JSONL file')
    .requiredOption('-d, --data <file.jsonl>', 'one JSON object per line; for perplexity: {"text": "..."}')
    .option('-t, --task <name>', 'evaluation task', 'perplexity')
    .option('--metrics <list>', 'comma-separated metrics of the task (perplexity: perplexity)', 'perplexity')
    .option('--json', 'print exactly one JSON object on stdout')
    .option('--tokens-per-pass <n>', 'texts are packed into forward passes of up to this many tokens', '2048')
    .addHelpText(
      'after',
      `
Perplexity: each text is tokenized with the model's tokenizer defaults (BOS added by its
post-processor); its loss is the mean negative log-likelihood of tokens 2..n given the tokens
before them, as transformers computes model(input_ids=ids, labels=ids).loss. "tokens" counts the
predicted tokens, n - 1 per text. The corpus loss is the token-weighted mean; perplexity = exp(loss).
--json prints {"examples", "tokens", "loss", "perplexity", "per_example": [{"loss", "tokens"}, ...]}.

Exit codes: 0 done, 1 bad input (model, adapter or data), 2 runtime failure.`,
    )
    .action(async (opts: EvalCliOptions) => evalAction(opts));
}
