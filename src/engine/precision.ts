// The compute precision of the engine: one process-wide switch that kernels read when they choose
// a variant and when they decide how to save activations for backward.
//
//   fp32         every GEMM in f32 (the reference path; HF-parity tests pin it)
//   fp16-mixed   GEMM operands rounded to f16 (f32 accumulation; where the adapter offers f16 → f32
//                subgroup matrices, the GEMMs' subgroup-matrix core and, at head dims 64–128,
//                attention's (attention-sgmatrix.ts): compile-checked on Dawn's Null backend and
//                verified through their emulation, not yet measured on a GPU), activations
//                saved for backward in f16; LoRA weights, their
//                gradients and the optimizer state stay f32; the trainer adds dynamic loss scaling
//
// `auto` (configs, CLI) resolves to fp16-mixed where the adapter multiplies f16 subgroup matrices
// into f32, fp32 elsewhere. Code that saves activations (autograd rules) asks
// `saveActivationsIn16Bit()`; the GEMM dispatcher asks `computePrecision()`.
import type { Device } from './device.js';

export type Precision = 'fp32' | 'fp16-mixed';
export type PrecisionSetting = Precision | 'auto';
export const PRECISION_SETTINGS: readonly PrecisionSetting[] = ['fp32', 'fp16-mixed', 'auto'];

let current: Precision = 'fp32';

/** The precision GEMMs run in now. */
export function computePrecision(): Precision {
  return current;
}

/** Sets the process-wide precision (the trainer and the eval/generate verbs do, once, at start). */
export function setComputePrecision(p: Precision): void {
  if (p !== 'fp32' && p !== 'fp16-mixed')
    throw new RangeError(`unknown precision '${String(p)}' (expected fp32 or fp16-mixed)`);
  current = p;
}

/** Runs `fn` with precision `p`, restoring the previous one afterwards (tests, benchmarks). */
export function withPrecision<T>(p: Precision, fn: () => T): T {
  const prev = current;
  setComputePrecision(p);
  try {
    return fn();
  } finally {
    current = prev;
  }
}

/** withPrecision for an async `fn` (its GPU work is recorded across awaits, all in precision `p`). */
export async function withPrecisionAsync<T>(p: Precision, fn: () => Promise<T>): Promise<T> {
  const prev = current;
  setComputePrecision(p);
  try {
    return await fn();
  } finally {
    current = prev;
  }
}

/** Whether activations saved for backward are stored as f16 (fp16-mixed) instead of f32. */
export function saveActivationsIn16Bit(): boolean {
  return current === 'fp16-mixed';
}

/** Why `p` cannot run on `dev`, or null when it can. */
export function precisionUnsupported(p: Precision, dev: Device): string | null {
  if (p === 'fp16-mixed' && !dev.has('shader-f16')) {
    return `fp16-mixed needs the WebGPU feature shader-f16, which this adapter (${dev.name}) does not offer${
      process.env.FINLLM_DISABLE_FEATURES?.includes('shader-f16') ? ' (FINLLM_DISABLE_FEATURES turns it off)' : ''
    }`;
  }
  return null;
}

/** `auto` → fp16-mixed on adapters with f16 → f32 subgroup matrices, else fp32. */
export function resolvePrecision(setting: PrecisionSetting, dev: Device): Precision {
  if (setting === 'auto') return dev.hasF16SubgroupMatrix() ? 'fp16-mixed' : 'fp32';
  return setting;
}

/** Why `auto` resolves as it does on `dev` (resolvePrecision), for the logs that say so. */
export function autoPrecisionReason(dev: Device): string {
  return dev.hasF16SubgroupMatrix() ? 'the adapter has f16 subgroup matrices' : 'no f16 subgroup matrices';
}
