// Dataset statistics: counts, token length distribution, truncation, duplicates, tasks. Printed as
// a table and saved as JSON.

import { escapeControl } from '../../errors.js';
import { writeFileAtomicSync as writeFileAtomic } from '../../io/atomic.js';
import type { Problem, ProblemKind, TokenizedExample } from './types.js';

export interface LengthStats {
  min: number;
  median: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export interface SplitStats {
  /** Files the split was read from. */
  files: string[];
  /** Rows read from the files (for a held-out val split: rows moved from train). */
  rowsRead: number;
  /** Examples kept for training/evaluation. */
  examples: number;
  /** Rows dropped for errors (skip policy), by kind. */
  skipped: Partial<Record<ProblemKind, number>>;
  duplicatesDropped: { exact: number; near: number };
  /** Token lengths before truncation (prompt + response + EOS). */
  tokenLengths: LengthStats;
  truncated: number;
  truncationRate: number;
  totalTokens: number;
  targetTokens: number;
  perTask: Record<string, number>;
  perSource: Record<string, number>;
}

export interface DataReport {
  /** One line per file: its format and what auto-detection read in it. */
  detected?: string[];
  /** Things to fix that did not stop the run (e.g. a tiny validation set). */
  warnings?: string[];
  settings: {
    template: string;
    maxSeqLen: number;
    packing: boolean;
    responseOnlyLoss: boolean;
    onInvalid: 'fail' | 'skip';
    valSource: 'file' | 'split' | 'none';
  };
  train: SplitStats;
  val: SplitStats;
  /** Validation examples dropped because they also appear in train. */
  valOverlapDropped: number;
  /** Count of problems by kind (errors, truncation warnings, duplicates), both splits. */
  problemCounts: Partial<Record<ProblemKind, number>>;
  /** The first problems found (at most 200), with file and row. */
  problems: Problem[];
}

export function quantile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return 0;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[idx]!;
}

export function lengthStats(lengths: readonly number[]): LengthStats {
  const s = [...lengths].sort((a, b) => a - b);
  if (s.length === 0) return { min: 0, median: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return {
    min: s[0]!,
    median,
    p90: quantile(s, 0.9),
    p99: quantile(s, 0.99),
    max: s[s.length - 1]!,
    mean: Math.round((s.reduce((a, b) => a + b, 0) / s.length) * 10) / 10,
  };
}

export function splitStats(
  files: string[],
  rowsRead: number,
  examples: readonly TokenizedExample[],
  sources: readonly (string | null)[],
  skipped: Partial<Record<ProblemKind, number>>,
  duplicatesDropped: { exact: number; near: number },
): SplitStats {
  const perTask: Record<string, number> = {};
  const perSource: Record<string, number> = {};
  let truncated = 0;
  let totalTokens = 0;
  let targetTokens = 0;
  examples.forEach((ex, i) => {
    perTask[ex.task] = (perTask[ex.task] ?? 0) + 1;
    const src = sources[i] ?? '(none)';
    perSource[src] = (perSource[src] ?? 0) + 1;
    if (ex.truncated) truncated++;
    totalTokens += ex.inputIds.length;
    targetTokens += ex.numTargets;
  });
  return {
    files,
    rowsRead,
    examples: examples.length,
    skipped,
    duplicatesDropped,
    tokenLengths: lengthStats(examples.map((e) => e.fullLength)),
    truncated,
    truncationRate: examples.length ? truncated / examples.length : 0,
    totalTokens,
    targetTokens,
    perTask,
    perSource,
  };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) =>
    r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ');
  const sep = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(rows[0]!), sep, ...rows.slice(1).map(line)].join('\n');
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

/** Human-readable report (a few aligned tables). */
export function formatReport(r: DataReport): string {
  const t = r.train;
  const v = r.val;
  const sum = (o: Partial<Record<string, number>>) => Object.values(o).reduce<number>((a, b) => a + (b ?? 0), 0);
  const out: string[] = [];
  out.push(
    `data: template=${r.settings.template} max_seq_len=${r.settings.maxSeqLen} packing=${r.settings.packing} ` +
      `response_only_loss=${r.settings.responseOnlyLoss} on_invalid=${r.settings.onInvalid} val=${r.settings.valSource}`,
  );
  for (const d of r.detected ?? []) out.push(`read ${d}`);
  for (const w of r.warnings ?? []) out.push(`warning: ${w}`);
  out.push('');
  out.push(
    table([
      ['', 'train', 'val'],
      ['rows read', String(t.rowsRead), String(v.rowsRead)],
      ['skipped (errors)', String(sum(t.skipped)), String(sum(v.skipped))],
      ['exact duplicates dropped', String(t.duplicatesDropped.exact), String(v.duplicatesDropped.exact)],
      ['near duplicates dropped', String(t.duplicatesDropped.near), String(v.duplicatesDropped.near)],
      ['examples', String(t.examples), String(v.examples)],
      ['tokens (after truncation)', String(t.totalTokens), String(v.totalTokens)],
      ['target tokens', String(t.targetTokens), String(v.targetTokens)],
      ['length min', String(t.tokenLengths.min), String(v.tokenLengths.min)],
      ['length median', String(t.tokenLengths.median), String(v.tokenLengths.median)],
      ['length p90', String(t.tokenLengths.p90), String(v.tokenLengths.p90)],
      ['length p99', String(t.tokenLengths.p99), String(v.tokenLengths.p99)],
      ['length max', String(t.tokenLengths.max), String(v.tokenLengths.max)],
      ['truncated', `${t.truncated} (${pct(t.truncationRate)})`, `${v.truncated} (${pct(v.truncationRate)})`],
    ]),
  );
  if (r.valOverlapDropped > 0) out.push(`val rows dropped because they also occur in train: ${r.valOverlapDropped}`);
  const tasks = [...new Set([...Object.keys(t.perTask), ...Object.keys(v.perTask)])].sort();
  if (tasks.length) {
    out.push('');
    out.push(
      table([['task', 'train', 'val'], ...tasks.map((k) => [k, String(t.perTask[k] ?? 0), String(v.perTask[k] ?? 0)])]),
    );
  }
  const sources = [...new Set([...Object.keys(t.perSource), ...Object.keys(v.perSource)])].sort();
  if (sources.length > 1 || (sources.length === 1 && sources[0] !== '(none)')) {
    out.push('');
    out.push(
      table([
        ['source', 'train', 'val'],
        ...sources.map((k) => [k, String(t.perSource[k] ?? 0), String(v.perSource[k] ?? 0)]),
      ]),
    );
  }
  const kinds = Object.entries(r.problemCounts).filter(([, n]) => (n ?? 0) > 0);
  if (kinds.length) {
    out.push('');
    out.push(table([['problem', 'rows'], ...kinds.map(([k, n]) => [k, String(n)])]));
  }
  // Task names come from the data: a control character in one must not reach the terminal raw.
  return escapeControl(out.join('\n'));
}

/** Save the report as JSON (atomic). */
export function saveReport(r: DataReport, path: string): void {
  writeFileAtomic(path, JSON.stringify(r, null, 2) + '\n');
}
