// The evaluation flow: what `finllm eval`, the pipeline's baseline and fine-tuned evaluation stages
// and the tests run. One model (+ adapter) is loaded once for a list of suites. Every suite's
// records are read and checked before anything heavy loads; then each suite runs in turn:
//
//   perplexity                  {"text"} records → per-text losses (perplexity.ts) → perplexityJson
//   generation, classification  records → prompts as in training → decoding → scores
//                               (generation.ts) → a finllm.results.v1 object (results.ts)
//
// A suite with `out` has its results written there atomically (perplexity: the perplexity JSON,
// pretty-printed; otherwise the results file `finllm compare` reads).
import { initEngine } from '../../engine/tensor.js';
import { InputError } from '../../errors.js';
import { checkFileDestination } from '../../io/atomic.js';
import { describeValue } from '../../io/json.js';
import type { SamplingOptions } from '../../llama/generate.js';
import { LlamaModel, type LoadModelOptions } from '../../llama/model.js';
import { LlamaTokenizer } from '../../llama/tokenizer.js';
import { type ColumnMapping, DEFAULT_COLUMNS, type TemplateName } from '../config.js';
import type { PreprocessOptions } from '../data/preprocess.js';
import { type DataFormat, type DataRecord, readRecords } from '../data/readers.js';
import { ModelEmbeddingProvider } from './embeddings.js';
import {
  buildEvalItems,
  type EvalItem,
  type EvalMetric,
  EvalProgress,
  type GenerationEvalResult,
  type GenerationTask,
  metricsFor,
  runGenerationEval,
} from './generation.js';
import { evaluatePerplexity, type PerplexityResult, writePerplexity } from './perplexity.js';
import { writeResults } from './results.js';

export type EvalTask = 'perplexity' | GenerationTask;

/** One eval file and what to do with it. */
export interface EvalSuite {
  file: string;
  task: EvalTask;
  /** Generation/classification: the results file's `task` (default: the records' kind). */
  name?: string;
  /** Evaluate the first N records only. */
  limit?: number | null;
  /** Generation/classification metrics (default: those of the records' kind, see metricsFor). */
  metrics?: readonly EvalMetric[] | null;
  /** Generation: add the embedding and bertscore metrics when they are not asked for already. */
  addEmbeddingMetrics?: boolean;
  /** Perplexity: the column holding the text (default: data.columns.text). */
  textColumn?: string;
  /** Where the results are written (atomically); absent: only returned. */
  out?: string | null;
  /** Progress bar label (default: the task). */
  label?: string;
}

/** How records are read and prompted: the training data's settings (data.columns, data.template, data.preprocess). */
export interface EvalDataSettings {
  /** The files' format (default: from the extension; other names are read as JSON Lines). */
  format?: DataFormat | null;
  columns?: ColumnMapping;
  template?: TemplateName;
  preprocess?: PreprocessOptions;
}

export interface EvaluateOptions {
  /** The model folder evaluated (a base model, or a fully trained one). */
  modelDir: string;
  /** Loader options (adapter, quantize, storage). */
  load: LoadModelOptions;
  /** Where the tokenizer is read (default: modelDir). */
  tokenizerDir?: string;
  /** The base model whose hidden states the embedding metrics use (default: modelDir, loaded without the adapter). */
  embeddingModelDir?: string;
  /** Hidden-state layer of the embedding metrics (default: the last, after the final norm). */
  embeddingLayer?: number;
  suites: readonly EvalSuite[];
  data?: EvalDataSettings;
  /** Perplexity: tokens per packed forward pass (default 2048). */
  tokensPerPass?: number;
  /** Generation: most new tokens per example. */
  maxNewTokens?: number;
  sampling?: Omit<SamplingOptions, 'maxNewTokens'>;
  stopSequences?: readonly string[];
  /** Prompts decoded together (default 8; 1 = one at a time). */
  batchSize?: number;
  /** No progress bars on stderr. */
  quiet?: boolean;
  /** Runs after every suite was read and checked, before the model loads (e.g. the compute precision). */
  beforeLoad?: () => Promise<unknown>;
}

export interface SuiteOutcome {
  suite: EvalSuite;
  /** The file written, or null. */
  out: string | null;
  perplexity?: PerplexityResult;
  generation?: GenerationEvalResult;
}

/** Reads an eval data file with the data readers (format from `format`, else the extension; any other name is JSON Lines). */
export async function readDataRows(file: string, format: DataFormat | null = null): Promise<DataRecord[]> {
  const rows = await readRecords(file, { format, fallback: 'jsonl' });
  if (rows.length === 0) throw new InputError('no rows: the data file is empty', { file });
  return rows;
}

/** The text field of every row (column `column`, default "text": data.columns.text / --column text=COL). */
export function textsOf(rows: readonly DataRecord[], file: string, column = 'text'): string[] {
  return rows.map(({ row, value }) => {
    const t = value[column];
    if (typeof t !== 'string') {
      const found =
        t === undefined
          ? `no "${column}" field (fields found: ${Object.keys(value).join(', ') || 'none'}; map another with --column text=COLUMN)`
          : describeValue(t, 60);
      throw new InputError(`expected a "${column}" string, got ${found}`, { file, row, key: column });
    }
    if (t === '') throw new InputError(`"${column}" is empty`, { file, row, key: column });
    return t;
  });
}

const wantsEmbeddings = (m: readonly EvalMetric[]) => m.includes('embedding') || m.includes('bertscore');

type Prepared = { suite: EvalSuite; texts: string[] } | { suite: EvalSuite; items: EvalItem[]; metrics: EvalMetric[] };

/** Runs every suite on one loaded model; writes each suite's `out`; returns the results in suite order. */
export async function evaluate(o: EvaluateOptions): Promise<SuiteOutcome[]> {
  for (const s of o.suites) if (s.out) checkFileDestination(s.out);
  const data = o.data ?? {};
  const columns = data.columns ?? DEFAULT_COLUMNS;
  // Every file is read (and perplexity texts checked) before the tokenizer loads, then the prompts are built.
  const read: { suite: EvalSuite; rows: DataRecord[]; texts?: string[] }[] = [];
  for (const suite of o.suites) {
    if (suite.task === 'perplexity') {
      const rows = await readDataRows(suite.file, data.format ?? null);
      const limited = suite.limit != null ? rows.slice(0, suite.limit) : rows;
      read.push({ suite, rows, texts: textsOf(limited, suite.file, suite.textColumn ?? columns.text) });
      continue;
    }
    const rows = await readRecords(suite.file, { format: data.format ?? null, fallback: 'jsonl' });
    if (rows.length === 0) throw new InputError('no eval records: the file is empty', { file: suite.file });
    read.push({ suite, rows });
  }
  const tokenizer = await LlamaTokenizer.load(o.tokenizerDir ?? o.modelDir);
  const prepared: Prepared[] = read.map(({ suite, rows, texts }) => {
    if (texts) return { suite, texts };
    const items = buildEvalItems(rows, suite.task as GenerationTask, suite.file, {
      limit: suite.limit ?? null,
      tokenizer,
      ...(data.preprocess ? { preprocess: data.preprocess } : {}),
      ...(data.columns ? { columns: data.columns } : {}),
      ...(data.template ? { template: data.template } : {}),
    });
    let metrics = metricsFor(items, suite.task as GenerationTask, suite.metrics);
    if (suite.addEmbeddingMetrics && suite.task === 'generation' && !wantsEmbeddings(metrics))
      metrics = [...metrics, 'embedding', 'bertscore'];
    return { suite, items, metrics };
  });
  await o.beforeLoad?.();
  await initEngine();
  const model = await LlamaModel.load(o.modelDir, o.load);
  let embeddings: ModelEmbeddingProvider | null = null;
  const outcomes: SuiteOutcome[] = [];
  try {
    for (const p of prepared) {
      const { suite } = p;
      const out = suite.out ?? null;
      if ('texts' in p) {
        const r = await evaluatePerplexity(
          model,
          tokenizer,
          p.texts,
          o.tokensPerPass !== undefined ? { maxTokensPerPass: o.tokensPerPass } : {},
        );
        if (out) await writePerplexity(out, r);
        outcomes.push({ suite, out, perplexity: r });
        continue;
      }
      if (wantsEmbeddings(p.metrics) && !embeddings) {
        // Always the base model's hidden states, so base and fine-tuned outputs are embedded alike.
        const baseDir = o.embeddingModelDir ?? o.modelDir;
        const { adapter: _adapter, ...baseLoad } = o.load;
        const layer = o.embeddingLayer !== undefined ? { layer: o.embeddingLayer } : {};
        embeddings =
          baseDir !== o.modelDir || o.load.adapter
            ? await ModelEmbeddingProvider.load(baseDir, baseLoad, layer)
            : new ModelEmbeddingProvider(model, tokenizer, layer);
      }
      const progress = new EvalProgress(suite.label ?? suite.task, !o.quiet);
      let tokens = 0;
      const r = await runGenerationEval(model, tokenizer, p.items, {
        task: suite.task as GenerationTask,
        metrics: p.metrics,
        embeddings,
        maxNewTokens: o.maxNewTokens ?? 64,
        ...(o.sampling ? { sampling: o.sampling } : {}),
        ...(o.stopSequences ? { stopSequences: o.stopSequences } : {}),
        ...(o.batchSize !== undefined ? { batchSize: o.batchSize } : {}),
        ...(suite.name ? { name: suite.name } : {}),
        model: o.modelDir,
        adapter: o.load.adapter ?? null,
        onProgress: (done, total, _item, pred) => {
          tokens += pred.tokens;
          progress.update(done, total, tokens);
        },
      });
      if (out) await writeResults(out, r.results);
      outcomes.push({ suite, out, generation: r });
    }
  } finally {
    embeddings?.dispose();
    model.dispose();
  }
  return outcomes;
}
