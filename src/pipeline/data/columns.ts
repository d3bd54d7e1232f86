// What a record holds versus what the templates need: the record layout that auto-detection found
// (for the one info line per file) and, when a record does not fit, the `data.template` /
// `data.columns` setting that would read its columns.
import type { ColumnMapping, TemplateName } from '../config.js';
import { type ConcreteTemplate, TEMPLATE_FIELDS } from './templates.js';

type Field = keyof ColumnMapping;

/** Names a column often has in public datasets, per template field (compared lower-case, `_`/`-`/space ignored). */
const SYNONYMS: Partial<Record<Field, string[]>> = {
  text: ['text', 'context', 'passage', 'document', 'body', 'article', 'content', 'paragraph', 'sentence', 'excerpt'],
  question: ['question', 'query', 'q'],
  answer: ['answer', 'answers', 'a', 'gold', 'reply'],
  summary: ['summary', 'abstract', 'highlights', 'tldr', 'headline'],
  sentiment: ['sentiment', 'label', 'polarity', 'class', 'labels'],
  analysis: ['analysis', 'rationale', 'explanation'],
  instruction: ['instruction', 'instructions', 'task_description'],
  input: ['input', 'inputs', 'context'],
  output: ['output', 'outputs', 'response', 'completion', 'target'],
  prompt: ['prompt', 'instruction', 'input', 'query', 'source'],
  response: ['response', 'output', 'completion', 'target', 'reply', 'answer', 'chosen'],
  messages: ['messages', 'conversation', 'dialog', 'dialogue', 'chat', 'turns'],
  conversations: ['conversations'],
};

const norm = (s: string): string => s.toLowerCase().replace(/[\s_-]+/g, '');

/** The column of `found` that best fits `field` (exact synonym, then one containing a synonym), not in `taken`. */
function pick(field: Field, found: readonly string[], taken: ReadonlySet<string>): string | undefined {
  const syns = (SYNONYMS[field] ?? [field]).map(norm);
  const free = found.filter((c) => !taken.has(c));
  for (const s of syns) {
    const exact = free.find((c) => norm(c) === s);
    if (exact) return exact;
  }
  for (const s of syns) {
    if (s.length < 4) continue; // 'q', 'a' inside longer names would match anything
    const part = free.find((c) => norm(c).includes(s));
    if (part) return part;
  }
  return undefined;
}

/** Templates tried for a suggestion, most specific first, with the fields each needs. */
const CANDIDATES: { template: ConcreteTemplate; fields: Field[]; optional?: Field[] }[] = [
  { template: 'chat', fields: ['messages'] },
  { template: 'alpaca', fields: ['instruction', 'output'], optional: ['input'] },
  { template: 'qa', fields: ['text', 'question', 'answer'] },
  { template: 'summarization', fields: ['text', 'summary'] },
  { template: 'financial_analysis', fields: ['text', 'sentiment'] },
  { template: 'financial_analysis', fields: ['text', 'analysis'] },
  { template: 'completion', fields: ['prompt', 'response'] },
];

export interface ColumnSuggestion {
  template: ConcreteTemplate;
  /** Only the fields whose column differs from the field's own name. */
  columns: Partial<Record<Field, string>>;
}

/** A template and column mapping that reads a record with these columns, or null when none fits. */
export function suggestColumns(found: readonly string[]): ColumnSuggestion | null {
  for (const c of CANDIDATES) {
    const taken = new Set<string>();
    const columns: Partial<Record<Field, string>> = {};
    let ok = true;
    for (const f of [...c.fields, ...(c.optional ?? [])]) {
      const col = pick(f, found, taken);
      if (col === undefined) {
        if (c.fields.includes(f)) ok = false;
        continue;
      }
      taken.add(col);
      if (col !== f) columns[f] = col;
    }
    if (ok) return { template: c.template, columns };
  }
  return null;
}

/** The YAML and --set forms of a suggestion. */
export function formatSuggestion(s: ColumnSuggestion): string {
  const entries = Object.entries(s.columns);
  const yaml = `data.template: ${s.template}${entries.length ? `, data.columns: {${entries.map(([k, v]) => `${k}: ${v}`).join(', ')}}` : ''}`;
  const sets = [
    `--set data.template=${s.template}`,
    ...entries.map(([k, v]) => `--set data.columns.${k}=${/^[\w.-]+$/.test(v) ? v : JSON.stringify(v)}`),
  ];
  return `${yaml} (${sets.join(' ')})`;
}

/**
 * One paragraph for an error about a record: the columns it has, what the template needs, and the
 * setting that would fit (or how to write one).
 */
export function columnHint(
  found: readonly string[],
  columns: ColumnMapping,
  template: TemplateName,
  chosen?: ConcreteTemplate,
): string {
  const t = chosen ?? (template === 'auto' ? undefined : template);
  const mapped = (f: string) =>
    f
      .split('|')
      .map((x) => (columns[x as Field] !== x ? `${x} (column '${columns[x as Field]}')` : x))
      .join(' or ');
  const needs = t
    ? `template ${t} needs ${TEMPLATE_FIELDS[t].required.map(mapped).join(', ')}${TEMPLATE_FIELDS[t].optional.length ? ` (optional: ${TEMPLATE_FIELDS[t].optional.map(mapped).join(', ')})` : ''}`
    : '';
  const head = `columns found: ${found.length ? found.join(', ') : 'none'}${needs ? `; ${needs}` : ''}`;
  const s = suggestColumns(found);
  if (s) return `${head}; to read these columns set ${formatSuggestion(s)}`;
  return (
    `${head}; map your columns to a template's fields with data.columns and data.template, e.g. ` +
    `data.template: completion, data.columns: {prompt: <prompt column>, response: <answer column>} ` +
    `(Alpaca instruction/input/output, ShareGPT conversations and OpenAI messages records are read as they are)`
  );
}

/** How auto-detection read a record, for the data report's one line per file. */
export function recordLayout(
  fields: Record<string, unknown>,
  columns: ColumnMapping,
  chosen: ConcreteTemplate,
  configured: TemplateName,
): string {
  if (configured !== 'auto') return `template ${chosen} (data.template)`;
  const has = (f: Field) => fields[columns[f]] !== undefined && fields[columns[f]] !== null;
  if (has('task')) return `finllm task records (column '${columns.task}')`;
  if (chosen === 'chat')
    return has('messages')
      ? 'OpenAI chat records (messages: role/content)'
      : 'ShareGPT records (conversations: from/value)';
  if (chosen === 'alpaca') return `Alpaca records (instruction, ${has('input') ? 'input, ' : ''}output)`;
  return `${chosen} records`;
}
