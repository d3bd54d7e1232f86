// Generation and classification evaluation: eval records → prompts → the model's output → scores
// (metrics.ts) → a finllm.results.v1 file that `finllm compare` reads.
//
// Prompts are built with the training data stage's templates (../data/templates.ts), so a
// fine-tuned model sees exactly the layout it was trained on ("### Instruction: … ### Response:\n").
// Records are recognised by their fields (the bundled set in data/eval/ uses the first three):
//
//   {id, context|text, question, answer}        qa             → template qa, reference = answer,
//                                                                 source = the passage
//   {id, source|text, summary, source_kind?}     summarization  → template summarization
//   {id, text, label|sentiment}                  sentiment      → template financial_analysis,
//                                                                 reference = the gold label
//   {id, prompt, reference|response|answer|label} prompt        → the prompt as given
//   any training record (Alpaca, messages, conversations, a task column, or the columns of
//   data.columns / data.template)               template       → the training template's prompt,
//                                                                 reference = its response
//
// In summarization records `source` is the passage (as in data/eval/); the template's noun
// ("earnings call excerpt", "filing excerpt", "news article") comes from `source_kind`, else
// "earnings call excerpt" when the passage mentions an earnings call, else "passage".
//
// The prediction is the decoded new tokens (special tokens dropped), cut at the first stop
// sequence (default "\n###": the start of a next template section) and trimmed. Decoding is greedy
// unless sampling is asked for. Prompts are decoded `batchSize` at a time (default 8), shortest
// first (sorted by token count, so a batch pads little; results and the results file stay in input
// order), left-padded (generateBatch: attention masks each row's padding, positions start at its
// first real token), each row stopping on its own at EOS or a stop sequence; under greedy decoding
// the predictions are those of one-at-a-time decoding (batchSize 1). Sampling: one-at-a-time
// decoding seeds every prompt with `seed`; batched decoding seeds item i (0-based, in file order)
// with seed + i, so its draws depend neither on the batch size nor on the length order.
//
// Classification reads the label from the generated text with FinGPT's rule ("positive" anywhere,
// else "negative", else neutral) and reports accuracy (mean label_correct), macro/weighted F1 and
// the confusion matrix.
import { InputError } from '../../errors.js';
import { describeValue } from '../../io/json.js';
import { type BatchSamplingOptions, cutAtStop, generate, generateBatch } from '../../llama/generate.js';
import type { LlamaModel } from '../../llama/model.js';
import { type ColumnMapping, DEFAULT_COLUMNS, suggest, type TemplateName } from '../config.js';
import { columnHint, formatSuggestion, suggestColumns } from '../data/columns.js';
import { DEFAULT_PREPROCESS, type PreprocessOptions } from '../data/preprocess.js';
import { applyTemplate, type TemplateContext, TemplateProblem } from '../data/templates.js';
import type { ChatMessage } from '../data/types.js';
import { type ClassificationReport, parseGoldLabel } from './classification.js';
import { METRIC_GROUPS, type MetricGroup, meanOfPresent, scoreExamples } from './metrics.js';
import { RESULTS_FORMAT, type Results } from './results.js';
import { bertScore, EMBEDDING_METRICS, type EmbeddingProvider, embeddingCosine } from './semantic.js';

export type GenerationTask = 'generation' | 'classification';
export type RecordKind = 'qa' | 'summarization' | 'sentiment' | 'prompt' | 'template';

/** Metric names of the runner: the eval library's groups plus the embedding-based ones. */
export type EvalMetric = MetricGroup | (typeof EMBEDDING_METRICS)[number];

/** Default metric groups per record kind (data/eval/README.md's suggestions). */
export const DEFAULT_METRICS: Record<RecordKind, readonly EvalMetric[]> = {
  qa: ['exact', 'numeric', 'rouge'],
  summarization: ['rouge', 'bleu', 'chrf', 'numeric', 'terms', 'sentiment'],
  sentiment: ['label'],
  prompt: ['rouge', 'bleu', 'chrf', 'numeric'],
  template: ['rouge', 'bleu', 'chrf', 'numeric'],
};

/** One evaluation example, ready to generate from. */
export interface EvalItem {
  id: string;
  /** 1-based line of the eval file. */
  row: number;
  kind: RecordKind;
  prompt: string;
  /** The gold answer, summary or label. */
  reference: string;
  /** The passage the prompt is about (numbers found there are not hallucinated). */
  source?: string;
  /** The prompt was rendered by a chat template and already holds its special tokens (no BOS added). */
  rendered?: boolean;
}

/** The minimal tokenizer surface of the runner (LlamaTokenizer satisfies it). */
export interface GenerationTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: readonly number[], opts?: { skipSpecialTokens?: boolean }): string;
  readonly bosId: number | null;
  readonly eosId: number;
  readonly padId: number | null;
  readonly hasChatTemplate: boolean;
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

export interface EvalRow {
  row: number;
  value: Record<string, unknown>;
}

const COLUMNS: ColumnMapping = DEFAULT_COLUMNS;

const SOURCE_KINDS = ['earnings_call', 'filing', 'news'];

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.trim() !== '' ? v : undefined;
}

function kindOf(value: Record<string, unknown>): RecordKind | undefined {
  if (str(value['prompt']) !== undefined) return 'prompt';
  if (value['question'] !== undefined) return 'qa';
  if (value['summary'] !== undefined) return 'summarization';
  if (value['label'] !== undefined || value['sentiment'] !== undefined) return 'sentiment';
  return undefined;
}

export interface BuildItemsOptions {
  preprocess?: PreprocessOptions;
  /** The training data's column mapping and template (data.columns / data.template): training records are prompted as in training. */
  columns?: ColumnMapping;
  template?: TemplateName;
  /** Only for chat-rendered prompts (not used by the record kinds above). */
  tokenizer?: GenerationTokenizer | null;
  /** First N usable records. */
  limit?: number | null;
}

/** The prompt layouts an eval file's records are rendered with. */
interface Layouts {
  /** The eval record kinds' own layout (the auto template over the canonical columns). */
  eval: TemplateContext;
  /** Training records: the training data's column mapping and template. */
  training: TemplateContext;
}

/** One eval row being read: its fields, and errors that name its file, row and field. */
class EvalRecord {
  constructor(
    readonly value: Record<string, unknown>,
    readonly file: string,
    readonly row: number,
  ) {}

  /** A non-empty string field. */
  need(key: string): string {
    const v = this.value[key];
    if (typeof v !== 'string' || v.trim() === '') {
      throw new InputError(`expected a non-empty string, got ${v === undefined ? 'nothing' : describeValue(v, 60)}`, {
        file: this.file,
        row: this.row,
        key,
      });
    }
    return v;
  }

  /** The field holding the passage: the first of `keys` present; if none, a missing-field error naming the first (and a near miss). */
  passageField(keys: string[], record: string): string {
    const { value } = this;
    const key = keys.find((k) => value[k] !== undefined);
    if (key !== undefined) return key;
    const near = Object.keys(value).find((k) => keys.some((want) => suggest(k, [want]) === want));
    throw new InputError(
      `a ${record} record needs its passage in '${keys[0]}'${
        keys.length > 1
          ? ` (or ${keys
              .slice(1)
              .map((k) => `'${k}'`)
              .join(', ')})`
          : ''
      }, found fields ${Object.keys(value).join(', ')}` +
        (near !== undefined
          ? `; did you mean '${keys.find((want) => suggest(near, [want]) === want)}' for '${near}'?`
          : ''),
      { file: this.file, row: this.row, key: keys[0]! },
    );
  }

  /** The prompt of `fields` in the eval kinds' layout. */
  templated(fields: Record<string, unknown>, layouts: Layouts): string {
    try {
      return applyTemplate(fields, layouts.eval, this.file, this.row).prompt;
    } catch (err) {
      if (err instanceof TemplateProblem) throw new InputError(err.message, { file: this.file, row: this.row });
      throw err;
    }
  }
}

/** What an item holds besides its id, row and kind (in the order items are written). */
type ItemBody = Pick<EvalItem, 'prompt' | 'reference' | 'source' | 'rendered'>;

/** How each record kind becomes a prompt, a reference and its passage. */
const ITEM_BUILDERS: Record<RecordKind, (r: EvalRecord, layouts: Layouts) => ItemBody> = {
  template(r, layouts) {
    const { value, file, row } = r;
    const { columns, template } = layouts.training;
    let ex: ReturnType<typeof applyTemplate>;
    try {
      ex = applyTemplate(value, layouts.training, file, row);
    } catch (err) {
      if (err instanceof TemplateProblem) {
        throw new InputError(
          err.kind === 'missing_field'
            ? `${err.message}; ${columnHint(Object.keys(value), columns, template, err.template)}`
            : err.message,
          { file, row },
        );
      }
      throw err;
    }
    const passage = [columns.text, columns.input, columns.prompt]
      .map((c) => str(value[c]))
      .find((v) => v !== undefined);
    return {
      prompt: ex.prompt,
      reference: ex.response.trim(),
      source: passage ?? ex.prompt,
      ...(ex.rendered ? { rendered: true } : {}),
    };
  },
  prompt(r) {
    const { value, file, row } = r;
    const refKey = ['reference', 'response', 'answer', 'label'].find((k) => typeof value[k] === 'string');
    if (!refKey)
      throw new InputError('a {prompt} record needs a "reference" (or "response", "answer", "label") string', {
        file,
        row,
        key: 'reference',
      });
    const body: ItemBody = { prompt: r.need('prompt'), reference: value[refKey] as string };
    const src = str(value['source']);
    if (src !== undefined) body.source = src;
    return body;
  },
  qa(r, layouts) {
    const passage = r.need(r.passageField(['context', 'text'], 'qa'));
    const answer = r.need('answer');
    return {
      prompt: r.templated({ task: 'qa', text: passage, question: r.need('question'), answer }, layouts),
      reference: answer,
      source: passage,
    };
  },
  summarization(r, layouts) {
    const { value, file, row } = r;
    // `source` is the passage in eval records unless a `text` field holds it (training layout).
    const passageKey = r.passageField(['text', 'source'], 'summarization');
    const passage = r.need(passageKey);
    const summary = r.need('summary');
    const given = str(value['source_kind']) ?? (passageKey === 'text' ? str(value['source']) : undefined);
    if (value['source_kind'] !== undefined && !SOURCE_KINDS.includes(String(value['source_kind']))) {
      throw new InputError(`expected one of ${SOURCE_KINDS.join(', ')}, got ${describeValue(value['source_kind'])}`, {
        file,
        row,
        key: 'source_kind',
      });
    }
    const sourceKind = given ?? (/earnings call/i.test(passage) ? 'earnings_call' : undefined);
    return {
      prompt: r.templated(
        { task: 'summarization', text: passage, summary, ...(sourceKind ? { source: sourceKind } : {}) },
        layouts,
      ),
      reference: summary,
      source: passage,
    };
  },
  sentiment(r, layouts) {
    const { value, file, row } = r;
    const labelKey = value['label'] !== undefined ? 'label' : 'sentiment';
    const label = value[labelKey];
    if (typeof label !== 'string' || parseGoldLabel(label) === undefined) {
      throw new InputError(`expected a label negative, neutral or positive, got ${describeValue(label, 60)}`, {
        file,
        row,
        key: labelKey,
      });
    }
    const text = r.need('text');
    return {
      prompt: r.templated({ task: 'sentiment', text, sentiment: label }, layouts),
      reference: label,
      source: text,
    };
  },
};

/** The record's kind: an eval kind by its fields, else a training record, else a one-line error listing the layouts. */
function recordKind(r: EvalRecord, training: TemplateContext): RecordKind {
  const { value } = r;
  const { columns, template } = training;
  /** A record in a training layout: Alpaca, chat, a task column, a mapped column, or any row under an explicit template. */
  const trainingLayout =
    template !== 'auto' ||
    (['instruction', 'messages', 'conversations', 'task'] as const).some((f) => value[columns[f]] !== undefined) ||
    Object.entries(columns).some(([field, col]) => field !== col && value[col] !== undefined);
  const kind = kindOf(value) ?? (trainingLayout ? 'template' : undefined);
  if (kind !== undefined) return kind;
  const fit = suggestColumns(Object.keys(value));
  throw new InputError(
    `cannot tell what this record is: expected {question, answer, context|text} (qa), {summary, source|text} (summarization), {text, label} (sentiment), {prompt, reference}, ` +
      `or a training record (Alpaca instruction/input/output, messages, conversations, or the columns of --column / --template); got fields ${Object.keys(value).join(', ') || 'none'}` +
      (fit ? `; to read these columns set ${formatSuggestion(fit)}` : ''),
    { file: r.file, row: r.row },
  );
}

/** The item's id: the record's `id` (string or number), else `row-N`. */
function itemId(value: Record<string, unknown>, row: number): string {
  const rawId = value['id'];
  return typeof rawId === 'string' && rawId !== '' ? rawId : typeof rawId === 'number' ? String(rawId) : `row-${row}`;
}

/** The task refuses items it cannot score. */
function checkTaskFits(item: EvalItem, task: GenerationTask, file: string): void {
  const { kind, row } = item;
  if (task === 'classification' && parseGoldLabel(item.reference) === undefined) {
    throw new InputError(
      `the classification task needs a gold label negative, neutral or positive, got ${JSON.stringify(item.reference).slice(0, 60)} (a ${kind} record)`,
      { file, row },
    );
  }
  if (task === 'generation' && kind === 'sentiment') {
    throw new InputError('a labelled sentiment record: evaluate it with --task classification', { file, row });
  }
}

/**
 * Turns eval file rows into prompts and references for `task`. Every problem is an InputError
 * naming the file, row and field.
 */
export function buildEvalItems(
  rows: readonly EvalRow[],
  task: GenerationTask,
  file: string,
  opts: BuildItemsOptions = {},
): EvalItem[] {
  const layout = {
    columns: COLUMNS,
    template: 'auto' as const,
    preprocess: opts.preprocess ?? DEFAULT_PREPROCESS,
    tokenizer: opts.tokenizer ?? null,
  };
  const layouts: Layouts = {
    eval: layout,
    training: { ...layout, columns: opts.columns ?? COLUMNS, template: opts.template ?? 'auto' },
  };
  const items: EvalItem[] = [];
  const seen = new Map<string, number>();
  for (const { row, value } of rows) {
    if (opts.limit != null && items.length >= opts.limit) break;
    const id = itemId(value, row);
    const dup = seen.get(id);
    if (dup !== undefined)
      throw new InputError(`duplicate id ${JSON.stringify(id)} (first on row ${dup}); ids must be unique`, {
        file,
        row,
        key: 'id',
      });
    seen.set(id, row);
    const record = new EvalRecord(value, file, row);
    const kind = recordKind(record, layouts.training);
    const item: EvalItem = { id, row, kind, ...ITEM_BUILDERS[kind](record, layouts) };
    checkTaskFits(item, task, file);
    items.push(item);
  }
  if (items.length === 0) throw new InputError('no eval records', { file });
  return items;
}

/** Parses metric names; InputError naming `key` for an unknown one. */
export function parseEvalMetrics(spec: string | readonly string[], key = 'metrics'): EvalMetric[] {
  const names = typeof spec === 'string' ? spec.split(',') : [...spec];
  const known: readonly string[] = [...METRIC_GROUPS, ...EMBEDDING_METRICS];
  const out: EvalMetric[] = [];
  for (const raw of names.map((s) => s.trim()).filter(Boolean)) {
    if (!known.includes(raw))
      throw new InputError(`unknown metric ${JSON.stringify(raw)}; expected some of ${known.join(', ')}`, { key });
    if (!out.includes(raw as EvalMetric)) out.push(raw as EvalMetric);
  }
  if (out.length === 0) throw new InputError('expected at least one metric', { key });
  return out;
}

/** The metrics to use for `items`: the given ones, else the defaults of their kind(s). */
export function metricsFor(
  items: readonly EvalItem[],
  task: GenerationTask,
  given?: readonly EvalMetric[] | null,
): EvalMetric[] {
  if (given?.length) return [...given];
  if (task === 'classification') return ['label'];
  const out: EvalMetric[] = [];
  for (const kind of new Set(items.map((i) => i.kind)))
    for (const m of DEFAULT_METRICS[kind]) if (!out.includes(m)) out.push(m);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Generation

export interface GenerationSettings {
  maxNewTokens: number;
  /** Decoding options of src/llama/generate.ts (greedy by default; `seeds` for batches only). */
  sampling?: Omit<BatchSamplingOptions, 'maxNewTokens'>;
  /** The prediction ends before the first of these. Default ["\n###"]. */
  stopSequences?: readonly string[];
  /** Prompts decoded together (left-padded batch). Default 8; 1 = one at a time. */
  batchSize?: number;
}

export const DEFAULT_EVAL_BATCH_SIZE = 8;

export interface Prediction {
  text: string;
  /** New tokens generated (stop sequence and EOS included). */
  tokens: number;
  stopReason: 'eos' | 'max_new_tokens' | 'stop_sequence';
}

export const DEFAULT_STOP_SEQUENCES: readonly string[] = ['\n###'];

export { cutAtStop };

/** Thrown from the token callback to end decoding once a stop sequence appeared. */
class StopSequenceReached extends Error {}

/** Prompt ids: BOS as the tokenizer adds it, unless a chat template already rendered the special tokens. */
function encodePrompt(tokenizer: GenerationTokenizer, prompt: string, rendered: boolean): number[] {
  return rendered ? tokenizer.encode(prompt, { addSpecialTokens: false }) : tokenizer.encode(prompt);
}

/** Generates the prediction for one prompt. */
export async function predict(
  model: LlamaModel,
  tokenizer: GenerationTokenizer,
  prompt: string,
  settings: GenerationSettings,
  rendered = false,
): Promise<Prediction> {
  const stops = settings.stopSequences ?? DEFAULT_STOP_SEQUENCES;
  const ids = encodePrompt(tokenizer, prompt, rendered);
  const out: number[] = [];
  let stopReason: Prediction['stopReason'];
  try {
    const r = await generate(model, ids, { ...settings.sampling, maxNewTokens: settings.maxNewTokens }, (id) => {
      out.push(id);
      // Re-decoding everything each token is quadratic, but predictions are short (max_new_tokens).
      if (stops.length && cutAtStop(tokenizer.decode(out, { skipSpecialTokens: true }), stops).stopped)
        throw new StopSequenceReached();
    });
    stopReason = r.stopReason;
  } catch (err) {
    if (!(err instanceof StopSequenceReached)) throw err;
    stopReason = 'stop_sequence';
  }
  const text = cutAtStop(tokenizer.decode(out, { skipSpecialTokens: true }), stops).text.trim();
  return { text, tokens: out.length, stopReason };
}

/**
 * Generates the predictions for several prompts in one left-padded batch (generateBatch). Under
 * sampling, prompt b is seeded with `sampling.seed + b`.
 */
export async function predictBatch(
  model: LlamaModel,
  tokenizer: GenerationTokenizer,
  prompts: readonly string[],
  settings: GenerationSettings,
  rendered: readonly boolean[] = [],
): Promise<Prediction[]> {
  const stops = settings.stopSequences ?? DEFAULT_STOP_SEQUENCES;
  const ids = prompts.map((p, i) => encodePrompt(tokenizer, p, rendered[i] ?? false));
  const outs: number[][] = prompts.map(() => []);
  const rs = await generateBatch(
    model,
    ids,
    { ...settings.sampling, maxNewTokens: settings.maxNewTokens },
    (row, id) => {
      const out = outs[row]!;
      out.push(id);
      if (stops.length && cutAtStop(tokenizer.decode(out, { skipSpecialTokens: true }), stops).stopped) return 'stop';
      return undefined;
    },
  );
  return rs.map((r, b) => ({
    text: cutAtStop(tokenizer.decode(outs[b]!, { skipSpecialTokens: true }), stops).text.trim(),
    tokens: outs[b]!.length,
    stopReason: r.stopReason === 'stopped' ? 'stop_sequence' : r.stopReason,
  }));
}

// ---------------------------------------------------------------------------------------------
// The runner

export interface GenerationEvalOptions extends GenerationSettings {
  task: GenerationTask;
  /** Metric groups (default: metricsFor the items). */
  metrics?: readonly EvalMetric[] | null;
  /** Needed for the embedding and bertscore metrics: see embeddings.ts. */
  embeddings?: EmbeddingProvider | null;
  /** Called after each example (batched: in the order batches finish, shortest prompts first). */
  onProgress?: (done: number, total: number, item: EvalItem, p: Prediction) => void;
  /** Recorded in the results file. */
  model: string;
  adapter?: string | null;
  /** The results file's `task` (default: the records' kind, or the task when they are mixed). */
  name?: string;
}

export interface GenerationEvalResult {
  results: Results & {
    classification?: ClassificationReport;
    generation: {
      task: GenerationTask;
      max_new_tokens: number;
      greedy: boolean;
      metrics: EvalMetric[];
      stop_reasons: Record<string, number>;
    };
  };
  predictions: Prediction[];
  classification?: ClassificationReport;
}

/** Scores predictions of `items` with `metrics` (embedding metrics need `embeddings`). */
export async function scorePredictions(
  items: readonly EvalItem[],
  predictions: readonly string[],
  metrics: readonly EvalMetric[],
  embeddings?: EmbeddingProvider | null,
): Promise<{
  metrics: Record<string, number | null>;
  perExample: Record<string, number | null>[];
  classification?: ClassificationReport;
}> {
  const groups = metrics.filter((m): m is MetricGroup => (METRIC_GROUPS as readonly string[]).includes(m));
  const inputs = items.map((it, i) => ({
    id: it.id,
    prediction: predictions[i]!,
    reference: it.reference,
    ...(it.source !== undefined ? { source: it.source } : {}),
  }));
  const scored = scoreExamples(inputs, { groups });
  const perExample = scored.per_example.map((p) => ({ ...p.scores }));
  const corpus: Record<string, number | null> = { ...scored.metrics };
  const wantCos = metrics.includes('embedding');
  const wantBert = metrics.includes('bertscore');
  if (wantCos || wantBert) {
    if (!embeddings)
      throw new InputError(
        'the embedding and bertscore metrics need an embedding model (see src/pipeline/eval/embeddings.ts)',
        { key: 'metrics' },
      );
    for (let i = 0; i < items.length; i++) {
      if (wantCos)
        perExample[i]!['embedding_cosine'] = await embeddingCosine(embeddings, predictions[i]!, items[i]!.reference);
      if (wantBert)
        perExample[i]!['bertscore_f1'] = (await bertScore(embeddings, predictions[i]!, items[i]!.reference)).f1;
    }
    if (wantCos) corpus['embedding_cosine'] = meanOfPresent(perExample.map((s) => s['embedding_cosine']));
    if (wantBert) corpus['bertscore_f1'] = meanOfPresent(perExample.map((s) => s['bertscore_f1']));
  }
  return { metrics: corpus, perExample, ...(scored.classification ? { classification: scored.classification } : {}) };
}

/** Generates for every item, scores, and builds the results object (not written: see writeResults). */
export async function runGenerationEval(
  model: LlamaModel,
  tokenizer: GenerationTokenizer,
  items: readonly EvalItem[],
  opts: GenerationEvalOptions,
): Promise<GenerationEvalResult> {
  const metrics = metricsFor(items, opts.task, opts.metrics);
  if ((metrics.includes('embedding') || metrics.includes('bertscore')) && !opts.embeddings) {
    throw new InputError('the embedding and bertscore metrics need an embedding model', { key: 'metrics' });
  }
  const batchSize = opts.batchSize ?? DEFAULT_EVAL_BATCH_SIZE;
  if (!(Number.isInteger(batchSize) && batchSize >= 1))
    throw new InputError(`expected a positive integer, got ${batchSize}`, { key: 'batch-size' });
  const predictions: Prediction[] = new Array<Prediction>(items.length);
  let done = 0;
  if (batchSize === 1) {
    for (let i = 0; i < items.length; i++) {
      const p = await predict(model, tokenizer, items[i]!.prompt, opts, items[i]!.rendered ?? false);
      predictions[i] = p;
      opts.onProgress?.(++done, items.length, items[i]!, p);
    }
  } else {
    // Shortest prompts first, so each batch pads little; predictions go back to input order.
    const lengths = items.map((it) => encodePrompt(tokenizer, it.prompt, it.rendered ?? false).length);
    const order = items.map((_, i) => i).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
    const seed = opts.sampling?.seed ?? 0;
    for (let i0 = 0; i0 < order.length; i0 += batchSize) {
      const idx = order.slice(i0, i0 + batchSize);
      const sampling = { ...opts.sampling, seeds: idx.map((i) => seed + i) }; // item i gets seed + i
      const ps = await predictBatch(
        model,
        tokenizer,
        idx.map((i) => items[i]!.prompt),
        { ...opts, sampling },
        idx.map((i) => items[i]!.rendered ?? false),
      );
      ps.forEach((p, j) => {
        predictions[idx[j]!] = p;
        opts.onProgress?.(++done, items.length, items[idx[j]!]!, p);
      });
    }
  }
  const scored = await scorePredictions(
    items,
    predictions.map((p) => p.text),
    metrics,
    opts.embeddings,
  );
  const kinds = [...new Set(items.map((i) => i.kind))];
  const stopReasons: Record<string, number> = {};
  for (const p of predictions) stopReasons[p.stopReason] = (stopReasons[p.stopReason] ?? 0) + 1;
  const results: GenerationEvalResult['results'] = {
    format: RESULTS_FORMAT,
    model: opts.model,
    adapter: opts.adapter ?? null,
    task: opts.name ?? (kinds.length === 1 && kinds[0] !== 'prompt' ? kinds[0]! : opts.task),
    created_at: new Date().toISOString(),
    metrics: scored.metrics,
    per_example: items.map((it, i) => ({
      id: it.id,
      prediction: predictions[i]!.text,
      reference: it.reference,
      ...(it.source !== undefined ? { source: it.source } : {}),
      scores: scored.perExample[i]!,
    })),
    generation: {
      task: opts.task,
      max_new_tokens: opts.maxNewTokens,
      greedy: opts.sampling?.greedy ?? true,
      metrics,
      stop_reasons: stopReasons,
    },
  };
  if (scored.classification) results.classification = scored.classification;
  return { results, predictions, ...(scored.classification ? { classification: scored.classification } : {}) };
}

// ---------------------------------------------------------------------------------------------
// Progress on stderr

/** A progress bar on a TTY, a line per ~10% otherwise (CI logs). */
export class EvalProgress {
  private readonly tty: boolean;
  private readonly start = Date.now();
  private lastDecile = -1;
  constructor(
    private readonly label: string,
    private readonly enabled = true,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  update(done: number, total: number, tokens: number): void {
    if (!this.enabled) return;
    const elapsed = (Date.now() - this.start) / 1000;
    const width = 24;
    const filled = Math.round((done / total) * width);
    const eta = done > 0 ? (elapsed / done) * (total - done) : NaN;
    const line = `${this.label} ${'█'.repeat(filled)}${'░'.repeat(width - filled)} ${done}/${total} ${(tokens / Math.max(elapsed, 1e-9)).toFixed(1)} tok/s ETA ${Number.isFinite(eta) ? `${eta.toFixed(0)}s` : '--'}`;
    if (this.tty) {
      this.stream.write(`\r${line}\x1b[K${done === total ? '\n' : ''}`);
      return;
    }
    const decile = Math.floor((done / total) * 10);
    if (decile !== this.lastDecile || done === total) {
      this.lastDecile = decile;
      this.stream.write(line + '\n');
    }
  }
}
