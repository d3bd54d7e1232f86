// Learning-rate schedules with linear warmup, as in transformers' get_{linear,cosine,constant}_schedule_with_warmup:
// the learning rate used at optimizer step s (0-based) is lr · factor(s).
export type ScheduleKind = 'linear' | 'cosine' | 'constant';

export interface ScheduleSpec {
  kind: ScheduleKind;
  baseLr: number;
  warmupSteps: number;
  totalSteps: number;
}

export function lrAt(spec: ScheduleSpec, step: number): number {
  const { kind, baseLr, warmupSteps, totalSteps } = spec;
  if (step < warmupSteps) return (baseLr * step) / Math.max(1, warmupSteps);
  if (kind === 'constant') return baseLr;
  const progress = (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps);
  if (kind === 'linear') return baseLr * Math.max(0, 1 - progress);
  return baseLr * Math.max(0, 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress))));
}

/** Warmup steps from either an absolute count or a ratio of the total (rounded up, as HF does). */
export function resolveWarmup(totalSteps: number, warmupSteps: number | null, warmupRatio: number | null): number {
  if (warmupSteps !== null) return warmupSteps;
  if (warmupRatio !== null) return Math.ceil(totalSteps * warmupRatio);
  return 0;
}
