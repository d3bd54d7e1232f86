// What `--resume` checks before continuing a run: that trainer_state.json is what the trainer
// wrote (every field validated, so a hand-edited `"step": -3` is refused with the key named), and
// that the configuration has not changed since the checkpoint. Every difference from the
// checkpoint's resolved config is listed; the resume is refused unless --allow-config-change,
// except for settings that cannot change the trained weights (logging, checkpoint cadence, the
// pipeline's eval section, where the run folder lives).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { InputError } from '../../errors.js';
import { parseWithSchema } from '../../io/json.js';
import { RESOLVED_CONFIG_NAME, type ResolvedConfig } from '../config.js';

const nonNegInt = z.number().int().nonnegative();
const finite = z.number().refine(Number.isFinite, 'expected a finite number');

const loaderStateSchema = z.object({
  version: z.literal(1),
  seed: z.number().int(),
  epoch: nonNegInt,
  position: nonNegInt,
  fingerprint: z.string().min(1),
  numExamples: nonNegInt,
  packing: z.boolean(),
  batchSize: z.number().int().positive(),
  maxSeqLen: z.number().int().positive(),
});

const stepRecordSchema = z.object({
  step: z.number().int().positive(),
  loss: finite,
  lr: finite,
  gradNorm: finite.nullable(),
  tokens: nonNegInt,
  lossScale: finite.optional(),
  skipped: z.boolean().optional(),
});

export const trainerStateSchema = z
  .object({
    version: z.literal(1),
    step: nonNegInt,
    totalSteps: z.number().int().positive(),
    loader: loaderStateSchema,
    bestValLoss: finite.nullable(),
    badEvals: nonNegInt,
    losses: z.array(stepRecordSchema),
    valLosses: z.array(z.object({ step: nonNegInt, loss: finite })),
    initialValLoss: finite.nullable(),
    tokensSeen: nonNegInt,
    /** The run ended by early stopping at `step` (a finished run, though step < totalSteps). */
    stoppedEarly: z.boolean().optional(),
    /** The precision the run trains in (absent in checkpoints written before it existed: fp32). */
    precision: z.enum(['fp32', 'fp16-mixed']).optional(),
    /** fp16-mixed: the dynamic loss scaler's state (loss-scale.ts). */
    lossScaler: z
      .object({
        scale: finite.refine((v) => v > 0, 'expected a positive scale'),
        growthTracker: nonNegInt,
        skippedSteps: nonNegInt,
      })
      .nullable()
      .optional(),
  })
  .superRefine((s, ctx) => {
    if (s.step > s.totalSteps)
      ctx.addIssue({ code: 'custom', path: ['step'], message: `step ${s.step} is past totalSteps ${s.totalSteps}` });
    if (s.losses.length > s.step)
      ctx.addIssue({
        code: 'custom',
        path: ['losses'],
        message: `${s.losses.length} loss records for ${s.step} steps`,
      });
    s.losses.forEach((r, i) => {
      if (r.step > s.step || (i > 0 && r.step <= s.losses[i - 1]!.step))
        ctx.addIssue({
          code: 'custom',
          path: ['losses', i, 'step'],
          message: `loss record steps must increase up to ${s.step}`,
        });
    });
  });

export type TrainerState = z.infer<typeof trainerStateSchema>;

/** Reads and validates a checkpoint's trainer_state.json, which must belong to step `step` (its folder name). */
export function readTrainerState(file: string, step: number): TrainerState {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new InputError(`cannot read checkpoint state: ${(err as Error).message}`, { file });
  }
  const st = parseWithSchema(trainerStateSchema, raw, file);
  if (st.step !== step)
    throw new InputError(`says step ${st.step}, but it is in the checkpoint of step ${step}`, { file, key: 'step' });
  return st;
}

/**
 * The training settings that say when and how a run checkpoints, not what it computes: a run
 * resumed or re-run with other values trains the same weights.
 */
export const CHECKPOINTING_KEYS = ['resume', 'save_every', 'keep_last_checkpoints'] as const;

/**
 * Keys whose change cannot alter the trained weights (prefix match on the dotted path). The data
 * files' paths are here because the data themselves are checked: the data loader refuses a
 * checkpoint made from other examples (a fingerprint of their token ids), so a moved file is fine.
 */
const HARMLESS_KEYS = [
  'logging',
  'eval',
  'output.dir',
  'output.export_merged',
  'data.train',
  'data.val',
  ...CHECKPOINTING_KEYS.map((k) => `training.${k}`),
  'training.log_every',
];

export interface ConfigDifference {
  key: string;
  saved: unknown;
  now: unknown;
  harmless: boolean;
}

function leaves(value: unknown, prefix: string, out: Map<string, unknown>): void {
  if (value !== null && typeof value === 'object' && !Array.isArray(value) && Object.keys(value).length > 0) {
    for (const [k, v] of Object.entries(value)) leaves(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, value);
  }
}

/** Every leaf that differs between two resolved configs (lists compare whole), sorted by key. */
export function configDifferences(saved: object, now: object): ConfigDifference[] {
  const a = new Map<string, unknown>();
  const b = new Map<string, unknown>();
  leaves(saved, '', a);
  leaves(now, '', b);
  const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
  const out: ConfigDifference[] = [];
  for (const key of keys) {
    const x = a.get(key);
    const y = b.get(key);
    if (JSON.stringify(x ?? null) === JSON.stringify(y ?? null)) continue;
    out.push({ key, saved: x, now: y, harmless: HARMLESS_KEYS.some((h) => key === h || key.startsWith(`${h}.`)) });
  }
  return out;
}

const show = (v: unknown) => (v === undefined ? '(absent)' : JSON.stringify(v));

export function formatDifferences(diffs: readonly ConfigDifference[]): string {
  return diffs.map((d) => `${d.key}: ${show(d.saved)} -> ${show(d.now)}`).join('; ');
}

/** The sections of a resolved config, as they are saved (without `source`). */
export function configSections(cfg: ResolvedConfig): object {
  const { source: _source, ...sections } = cfg;
  return JSON.parse(JSON.stringify(sections)) as object;
}

/**
 * The resolved config a checkpoint was made with: its own copy, else (checkpoints of older
 * versions) the run folder's, else null.
 */
export function savedConfigFor(checkpointDir: string, runDir: string): { file: string; sections: object } | null {
  for (const file of [join(checkpointDir, RESOLVED_CONFIG_NAME), join(runDir, RESOLVED_CONFIG_NAME)]) {
    if (!existsSync(file)) continue;
    let value: unknown;
    try {
      value = YAML.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new InputError(`cannot read the checkpoint's configuration: ${(err as Error).message.split('\n')[0]}`, {
        file,
      });
    }
    if (value === null || typeof value !== 'object' || Array.isArray(value))
      throw new InputError('expected the resolved configuration (a YAML mapping)', { file });
    return { file, sections: value };
  }
  return null;
}

/**
 * Compares the config of a resume with the checkpoint's. Returns the differences (to report);
 * throws an InputError listing them when any could change the result and `allowChange` is off.
 */
export function checkResumeConfig(
  cfg: ResolvedConfig,
  checkpointDir: string,
  runDir: string,
  allowChange: boolean,
): ConfigDifference[] {
  const saved = savedConfigFor(checkpointDir, runDir);
  if (!saved) return [];
  const diffs = configDifferences(saved.sections, configSections(cfg));
  const relevant = diffs.filter((d) => !d.harmless);
  if (relevant.length > 0 && !allowChange) {
    throw new InputError(
      `the configuration differs from the one the checkpoint was made with (${saved.file}): ${formatDifferences(relevant)}. ` +
        'Resume with the same settings, pass --allow-config-change to continue with the new ones, or choose another output.dir',
    );
  }
  return diffs;
}
