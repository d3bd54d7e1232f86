// File formats of the evaluation stage.
//
// results.json -- what `finllm eval` writes for one model and `finllm compare` reads:
//   {
//     "format": "finllm.results.v1",        // optional on read, always written
//     "model": "meta-llama/Llama-3.2-1B",   // base model id or path
//     "adapter": "runs/fin-qlora/adapter",  // optional (null or absent for the base model)
//     "task": "summarization",              // free text: qa | summarization | sentiment | ...
//     "created_at": "2025-01-01T00:00:00Z", // optional
//     "metrics": { "rougeL": 0.41, "bleu": 17.2, ... },   // corpus figures (null = not applicable)
//     "per_example": [
//       { "id": "sum-001", "prediction": "...", "reference": "...", "source": "...",  // source optional
//         "scores": { "rougeL": 0.44, "numeric_fidelity": null, ... } }
//     ]
//   }
//   Score names are those of METRICS in metrics.ts (other names are allowed and are compared
//   as higher-is-better); null means the metric does not apply to that example (e.g. numeric
//   fidelity of a reference without numbers). Ids must be unique within a file.
//
// score input (JSONL) -- one object per line: {"prediction": str, "reference": str,
//   "source"?: str, "id"?: str}.
//
// training log (JSONL) -- one object per line: {"step": int, "loss"?: number, "val_loss"?: number}
//   (what the trainer writes; extra keys are ignored).
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { InputError, readFailure } from '../../errors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { readRecords } from '../data/readers.js';
import type { ScoreInput } from './metrics.js';

export const RESULTS_FORMAT = 'finllm.results.v1';

const ScoreMap = z.record(z.string(), z.number().nullable());

export const ResultsSchema = z.object({
  format: z.literal(RESULTS_FORMAT).optional(),
  model: z.string().min(1),
  adapter: z.string().nullable().optional(),
  task: z.string().min(1),
  created_at: z.string().optional(),
  metrics: ScoreMap,
  per_example: z
    .array(
      z.object({
        id: z.string().min(1),
        prediction: z.string(),
        reference: z.string(),
        source: z.string().optional(),
        scores: ScoreMap,
      }),
    )
    .min(1),
});

export type Results = z.infer<typeof ResultsSchema>;
export type ResultExample = Results['per_example'][number];

function issuePath(path: readonly PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('');
}

function zodToInputError(err: z.ZodError, file: string, row?: number): InputError {
  const issue = err.issues[0]!;
  const loc: { file: string; row?: number; key?: string } = { file };
  if (row !== undefined) loc.row = row;
  if (issue.path.length) loc.key = issuePath(issue.path);
  return new InputError(issue.message, loc);
}

/** Validate a parsed results object (throws InputError naming file and key). */
export function parseResults(value: unknown, file: string): Results {
  const parsed = ResultsSchema.safeParse(value);
  if (!parsed.success) throw zodToInputError(parsed.error, file);
  const seen = new Set<string>();
  parsed.data.per_example.forEach((ex, i) => {
    if (seen.has(ex.id))
      throw new InputError(`duplicate id '${ex.id}' (ids must be unique)`, { file, key: `per_example[${i}].id` });
    seen.add(ex.id);
  });
  return parsed.data;
}

export async function readResults(file: string): Promise<Results> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw readFailure(err, file);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new InputError(`expected JSON, got invalid JSON (${(err as Error).message})`, { file });
  }
  return parseResults(value, file);
}

/** The records of a JSONL input (score input, training log): the data readers, rows numbered by line. */
const readJsonl = (file: string) => readRecords(file, { format: 'jsonl', what: 'file' });

export async function writeResults(file: string, results: Results): Promise<void> {
  const out = { format: RESULTS_FORMAT, ...results };
  await writeFileAtomic(file, JSON.stringify(out, null, 2) + '\n');
}

const ScoreLine = z.object({
  prediction: z.string(),
  reference: z.string(),
  source: z.string().optional(),
  id: z.union([z.string(), z.number()]).optional(),
});

export async function readScoreInput(file: string): Promise<ScoreInput[]> {
  const rows = await readJsonl(file);
  if (rows.length === 0)
    throw new InputError('expected at least one line {"prediction": ..., "reference": ...}, got none', { file });
  return rows.map(({ row, value }) => {
    const p = ScoreLine.safeParse(value);
    if (!p.success) throw zodToInputError(p.error, file, row);
    const out: ScoreInput = {
      prediction: p.data.prediction,
      reference: p.data.reference,
      id: p.data.id !== undefined ? String(p.data.id) : `line-${row}`,
    };
    if (p.data.source !== undefined) out.source = p.data.source;
    return out;
  });
}

export interface TrainingLogPoint {
  step: number;
  loss?: number;
  val_loss?: number;
}

const LogLine = z.object({
  step: z.number().int().nonnegative(),
  loss: z.number().nullable().optional(),
  val_loss: z.number().nullable().optional(),
});

export async function readTrainingLog(file: string): Promise<TrainingLogPoint[]> {
  const rows = await readJsonl(file);
  return rows.map(({ row, value }) => {
    const p = LogLine.safeParse(value);
    if (!p.success) throw zodToInputError(p.error, file, row);
    const point: TrainingLogPoint = { step: p.data.step };
    if (typeof p.data.loss === 'number') point.loss = p.data.loss;
    if (typeof p.data.val_loss === 'number') point.val_loss = p.data.val_loss;
    return point;
  });
}
