// The data stage: read → template (with preprocessing and field checks) → dedup → tokenize →
// policy (fail / skip) → held-out validation split → report.
import { isAbsolute, relative } from 'node:path';
import { InputError } from '../../errors.js';
import type { DataConfig, ResolvedConfig } from '../config.js';
import { columnHint, recordLayout } from './columns.js';
import { findDuplicates, normalizeForDedup } from './dedup.js';
import { DataLoader, type DataLoaderOptions, makeRng, shuffleInPlace } from './loader.js';
import { inferFormat, readRows } from './readers.js';
import { type DataReport, splitStats } from './stats.js';
import { applyTemplate, type ConcreteTemplate, TemplateProblem } from './templates.js';
import { tokenizeExample } from './tokenize.js';
import type { Problem, ProblemKind, TextExample, TextTokenizer, TokenizedExample } from './types.js';
import { ERROR_KINDS } from './types.js';

export interface PreparedData {
  train: TokenizedExample[];
  val: TokenizedExample[];
  report: DataReport;
}

export interface PrepareOptions {
  /** How many problems a fail-policy error lists (default 10). */
  maxListedProblems?: number;
}

/** What the data stage reads from the config. */
export type DataStageConfig = Pick<ResolvedConfig, 'data'> & { training: Pick<ResolvedConfig['training'], 'seed'> };

interface SplitResult {
  rowsRead: number;
  /** How auto-detection read the rows: layout → rows (see recordLayout). */
  layouts: Map<string, number>;
  /** The columns of the first row that lacked a field its template needs, and that template. */
  firstMissing: { columns: string[]; template: ConcreteTemplate | undefined } | null;
  examples: TokenizedExample[];
  sources: (string | null)[];
  texts: string[];
  problems: Problem[];
  skipped: Partial<Record<ProblemKind, number>>;
  dups: { exact: number; near: number };
}

/** The file as the user would type it: relative to the working directory when inside it. */
function display(file: string): string {
  const rel = relative(process.cwd(), file);
  return rel !== '' && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

function where(file: string, row: number, line?: number): string {
  return `${display(file)} row ${row}${line !== undefined && line !== row ? ` (line ${line})` : ''}`;
}

async function loadSplit(file: string, data: DataConfig, tok: TextTokenizer): Promise<SplitResult> {
  const problems: Problem[] = [];
  const texts: TextExample[] = [];
  const layouts = new Map<string, number>();
  let firstMissing: SplitResult['firstMissing'] = null;
  let rowsRead = 0;
  const ctx = {
    columns: data.columns,
    template: data.template,
    preprocess: {
      unicode: data.preprocess.unicode,
      whitespace: data.preprocess.whitespace,
      speakerTurns: data.preprocess.speaker_turns,
    },
    tokenizer: tok,
  };
  for await (const r of readRows(file, data.format)) {
    rowsRead++;
    const loc = where(file, r.row, r.line);
    if (r.readProblems.length > 0) {
      for (const p of r.readProblems)
        problems.push({ kind: p.kind, file, row: r.row, message: `${loc}: ${p.message}` });
      continue;
    }
    try {
      const ex = applyTemplate(r.fields, ctx, file, r.row);
      texts.push(ex);
      const layout = recordLayout(r.fields, data.columns, ex.task as ConcreteTemplate, data.template);
      layouts.set(layout, (layouts.get(layout) ?? 0) + 1);
    } catch (e) {
      if (!(e instanceof TemplateProblem)) throw e;
      problems.push({ kind: e.kind, file, row: r.row, message: `${loc}: ${e.message}` });
      if (e.kind === 'missing_field' && firstMissing === null)
        firstMissing = { columns: Object.keys(r.fields), template: e.template };
    }
  }

  // Duplicates (first occurrence kept).
  const dupTexts = texts.map((t) => `${t.prompt}\n${t.response}`);
  const dups = { exact: 0, near: 0 };
  const dropped = new Set<number>();
  if (data.dedup.exact || data.dedup.near) {
    for (const m of findDuplicates(dupTexts, {
      exact: data.dedup.exact,
      near: data.dedup.near,
      threshold: data.dedup.near_threshold,
    })) {
      dropped.add(m.index);
      const a = texts[m.index]!;
      const b = texts[m.of]!;
      if (m.kind === 'duplicate') dups.exact++;
      else dups.near++;
      problems.push({
        kind: m.kind,
        file,
        row: a.row,
        message: `${where(file, a.row)}: ${m.kind === 'duplicate' ? 'duplicate' : `near duplicate (Jaccard ${m.similarity.toFixed(2)})`} of row ${b.row}; dropped`,
      });
    }
  }

  const examples: TokenizedExample[] = [];
  const sources: (string | null)[] = [];
  const keptTexts: string[] = [];
  const maxSeqLen = data.max_seq_len;
  texts.forEach((t, i) => {
    if (dropped.has(i)) return;
    const ex = tokenizeExample(t, tok, { maxSeqLen, responseOnlyLoss: data.response_only_loss });
    if (ex.numTargets === 0) {
      problems.push({
        kind: 'no_targets',
        file,
        row: t.row,
        message: `${where(file, t.row)}: no tokens left to train on after truncation to max_seq_len ${maxSeqLen} (${ex.fullLength} tokens, the prompt alone fills the window); raise data.max_seq_len or shorten the text`,
      });
      return;
    }
    if (ex.truncated) {
      problems.push({
        kind: 'truncated',
        file,
        row: t.row,
        message: `${where(file, t.row)}: ${ex.fullLength} tokens > max_seq_len ${maxSeqLen}; truncated (${ex.fullLength - maxSeqLen} tokens of the response lost)`,
      });
    }
    examples.push(ex);
    sources.push(t.source);
    keptTexts.push(dupTexts[i]!);
  });

  const skipped: Partial<Record<ProblemKind, number>> = {};
  const rowsWithErrors = new Set<number>();
  for (const p of problems) {
    if (ERROR_KINDS.has(p.kind) && !rowsWithErrors.has(p.row)) {
      rowsWithErrors.add(p.row);
      skipped[p.kind] = (skipped[p.kind] ?? 0) + 1;
    }
  }
  return { rowsRead, layouts, firstMissing, examples, sources, texts: keptTexts, problems, skipped, dups };
}

function emptySplit(): SplitResult {
  return {
    rowsRead: 0,
    layouts: new Map(),
    firstMissing: null,
    examples: [],
    sources: [],
    texts: [],
    problems: [],
    skipped: {},
    dups: { exact: 0, near: 0 },
  };
}

/** The report's line for one file: its format and what auto-detection found in it. */
function detectedLine(file: string, data: DataConfig, split: SplitResult): string {
  const format = inferFormat(file, data.format);
  const kinds = [...split.layouts].sort((a, b) => b[1] - a[1]);
  const what =
    kinds.length === 0
      ? 'no usable records'
      : kinds.length === 1
        ? kinds[0]![0]
        : kinds.map(([k, n]) => `${k} ×${n}`).join(', ');
  return `${display(file)} (${format}, ${split.rowsRead} rows): ${what}`;
}

/** Below this many validation examples the validation loss is too noisy to steer by (warned). */
export const MIN_VAL_EXAMPLES = 20;

/**
 * Run the data stage for a config. Throws InputError when a file is unreadable, when
 * `data.on_invalid` is `fail` and any row has an error (listing the first problems with row
 * numbers), or when nothing trainable is left.
 */
export async function prepareData(
  cfg: DataStageConfig,
  tokenizer: TextTokenizer,
  opts: PrepareOptions = {},
): Promise<PreparedData> {
  const data = cfg.data;
  const train = await loadSplit(data.train, data, tokenizer);
  const val = data.val !== null ? await loadSplit(data.val, data, tokenizer) : emptySplit();
  const allProblems = [...train.problems, ...val.problems];
  const errors = allProblems.filter((p) => ERROR_KINDS.has(p.kind));

  // When rows lack the fields their template needs, the fix is a column mapping, not skipping them.
  const missing = train.firstMissing ?? val.firstMissing;
  const missingFile = train.firstMissing ? data.train : data.val;
  const hint = missing
    ? `\n${display(missingFile!)}: ${columnHint(missing.columns, data.columns, data.template, missing.template)}`
    : '';
  const usable = train.examples.length + val.examples.length;

  if (errors.length > 0 && data.on_invalid === 'fail') {
    const max = opts.maxListedProblems ?? 10;
    const counts = new Map<string, number>();
    for (const p of errors) counts.set(p.kind, (counts.get(p.kind) ?? 0) + 1);
    const policy =
      usable > 0
        ? `data.on_invalid is 'fail' (set it to 'skip' to drop such rows and report them)`
        : `data.on_invalid is 'fail' (no row is usable as configured, so 'skip' would leave nothing)`;
    throw new InputError(
      `${errors.length} invalid row(s) in the data (${[...counts].map(([k, n]) => `${n} ${k}`).join(', ')}); ${policy}:\n  ` +
        errors
          .slice(0, max)
          .map((p) => p.message)
          .join('\n  ') +
        (errors.length > max ? `\n  ... and ${errors.length - max} more` : '') +
        hint,
      { key: missing ? 'data.columns' : 'data.on_invalid' },
    );
  }

  if (train.examples.length === 0) {
    const allMasked =
      train.problems.some((p) => p.kind === 'no_targets') && errors.every((p) => p.kind === 'no_targets');
    throw new InputError(
      allMasked
        ? `every training example has all labels masked after truncation to data.max_seq_len ${data.max_seq_len}: nothing to train on; raise data.max_seq_len or shorten the prompts`
        : `no usable training examples in ${data.train} (${train.rowsRead} rows read, ${errors.length} with errors${errors[0] ? `; first: ${errors[0].message}` : ''})${hint}`,
      { file: data.train },
    );
  }

  // Held-out validation split when there is no val file (seeded; the same rows every run).
  let valSource: 'file' | 'split' | 'none' = data.val !== null ? 'file' : 'none';
  let trainEx = train.examples;
  let trainSources = train.sources;
  let trainTexts = train.texts;
  let valEx = val.examples;
  let valSources = val.sources;
  let valRowsRead = val.rowsRead;
  if (data.val === null && data.val_split > 0 && trainEx.length >= 2) {
    const nVal = Math.min(trainEx.length - 1, Math.max(1, Math.round(trainEx.length * data.val_split)));
    const idx = shuffleInPlace(
      Array.from({ length: trainEx.length }, (_, i) => i),
      makeRng((cfg.training.seed ^ 0x5eed) >>> 0),
    );
    const valIdx = new Set(idx.slice(0, nVal));
    const keep = (_: unknown, i: number) => !valIdx.has(i);
    const take = (_: unknown, i: number) => valIdx.has(i);
    valEx = trainEx.filter(take);
    valSources = trainSources.filter(take);
    trainEx = trainEx.filter(keep);
    trainSources = trainSources.filter(keep);
    trainTexts = trainTexts.filter(keep);
    valRowsRead = nVal;
    valSource = 'split';
  }

  // Leakage: validation rows that also occur (normalized) in train are dropped from val.
  let valOverlapDropped = 0;
  if (valSource === 'file' && data.dedup.exact) {
    const seen = new Set(trainTexts.map(normalizeForDedup));
    const keepIdx = val.texts.map((t) => !seen.has(normalizeForDedup(t)));
    valOverlapDropped = keepIdx.filter((k) => !k).length;
    valEx = valEx.filter((_, i) => keepIdx[i]);
    valSources = valSources.filter((_, i) => keepIdx[i]);
  }

  const problemCounts: Partial<Record<ProblemKind, number>> = {};
  for (const p of allProblems) problemCounts[p.kind] = (problemCounts[p.kind] ?? 0) + 1;

  const warnings: string[] = [];
  if (valEx.length > 0 && valEx.length < MIN_VAL_EXAMPLES) {
    warnings.push(
      `only ${valEx.length} validation example(s) (${valEx.reduce((a, e) => a + e.numTargets, 0)} target tokens)${valSource === 'split' ? ` from data.val_split ${data.val_split} of ${train.examples.length}` : ` in ${display(data.val!)}`}: ` +
        `the validation loss will be noisy; use at least ${MIN_VAL_EXAMPLES} (raise data.val_split or give a larger data.val file)`,
    );
  }
  const detected = [
    detectedLine(data.train, data, train),
    ...(data.val !== null ? [detectedLine(data.val, data, val)] : []),
  ];

  const report: DataReport = {
    detected,
    warnings,
    settings: {
      template: data.template,
      maxSeqLen: data.max_seq_len,
      packing: data.packing,
      responseOnlyLoss: data.response_only_loss,
      onInvalid: data.on_invalid,
      valSource,
    },
    train: splitStats(
      [data.train],
      valSource === 'split' ? train.rowsRead : train.rowsRead,
      trainEx,
      trainSources,
      train.skipped,
      train.dups,
    ),
    val: splitStats(data.val !== null ? [data.val] : [], valRowsRead, valEx, valSources, val.skipped, val.dups),
    valOverlapDropped,
    problemCounts,
    problems: allProblems.slice(0, 200),
  };
  return { train: trainEx, val: valEx, report };
}

/** Loader options from the config (training order: shuffled; evaluation: fixed order). */
export function loaderOptions(
  cfg: Pick<ResolvedConfig, 'data' | 'training'>,
  tokenizer: Pick<TextTokenizer, 'padId' | 'eosId'>,
  split: 'train' | 'val',
): DataLoaderOptions {
  const batchSize = cfg.training.batch_size;
  if (batchSize === 'auto')
    throw new Error(
      'training.batch_size: auto must be resolved to a number (the trainer does) before batches are made',
    );
  return {
    batchSize,
    maxSeqLen: cfg.data.max_seq_len,
    packing: cfg.data.packing,
    seed: cfg.training.seed,
    shuffle: split === 'train',
    padId: tokenizer.padId ?? tokenizer.eosId,
    megaBatchFactor: cfg.data.bucket_megabatches,
  };
}

/** A DataLoader for one split, configured from the config. */
export function createDataLoader(
  examples: readonly TokenizedExample[],
  cfg: Pick<ResolvedConfig, 'data' | 'training'>,
  tokenizer: Pick<TextTokenizer, 'padId' | 'eosId'>,
  split: 'train' | 'val',
): DataLoader {
  return new DataLoader(examples, loaderOptions(cfg, tokenizer, split));
}
