// Shared test helpers: engine set-up with output poisoning, seeded random inputs (seed printed so a
// failure can be replayed with FINLLM_SEED=...), and expectClose with a readable failure report.
import { afterEach, beforeAll, expect, type TestContext } from 'vitest';
import type { FeatureName } from '../../src/engine/device.js';
import { Rng } from '../../src/engine/random.js';
import { engine, initEngine, Tensor } from '../../src/engine/tensor.js';
import '../../src/kernels/index.js';

/** Initializes the engine once per test file, with every pooled buffer poisoned (NaN) on hand-out. */
export function useEngine(): void {
  const gpuErrors: string[] = [];
  beforeAll(async () => {
    await initEngine();
    engine().pool.poisonOnAcquire = true;
    // A GPU validation error drops the whole command buffer, including the copy a read() records, so
    // the read returns zeros instead of the poisoned output: such a test could pass. Fail it instead.
    engine().dev.device.addEventListener('uncapturederror', (ev) =>
      gpuErrors.push((ev as GPUUncapturedErrorEvent).error.message),
    );
  });
  afterEach(async () => {
    await engine().dev.sync();
    if (gpuErrors.length)
      throw new Error(`uncaptured GPU error(s) during the test:\n${gpuErrors.splice(0).join('\n')}`);
  });
}

/**
 * Skips the running test, counted as skipped with the reason, where the adapter lacks `feature`
 * (e.g. shader-f16 for the fp16-mixed cases). Call it first in the test body.
 */
export function requireFeature(ctx: TestContext, feature: FeatureName): void {
  if (!engine().dev.has(feature)) ctx.skip(`${feature} absent on this adapter`);
}

/** A fresh seeded RNG; the seed is printed so the run can be replayed with FINLLM_SEED. */
export function testRng(label: string): Rng {
  const seed = process.env.FINLLM_SEED ? Number(process.env.FINLLM_SEED) : (Math.random() * 2 ** 31) >>> 0;
  console.log(`[seed] ${label}: FINLLM_SEED=${seed}`);
  return new Rng(seed);
}

export interface Tolerance {
  atol?: number;
  rtol?: number;
}

/**
 * Checks every element: |a - r| <= atol + rtol·|r|. NaN anywhere (e.g. a poisoned element the kernel
 * never wrote) fails. The error lists the worst and first mismatches with their indices.
 */
export function expectClose(actual: ArrayLike<number>, ref: ArrayLike<number>, tol: Tolerance, label = ''): void {
  const atol = tol.atol ?? 0;
  const rtol = tol.rtol ?? 0;
  if (actual.length !== ref.length) throw new Error(`${label}: length ${actual.length} vs reference ${ref.length}`);
  let maxAbs = 0;
  let maxRel = 0;
  let worst = -1;
  const bad: string[] = [];
  let nBad = 0;
  for (let i = 0; i < ref.length; i++) {
    const a = actual[i]!;
    const r = ref[i]!;
    const err = Math.abs(a - r);
    const ok =
      Number.isFinite(a) === Number.isFinite(r) &&
      (Number.isFinite(r) ? err <= atol + rtol * Math.abs(r) : Object.is(a, r) || (Number.isNaN(a) && Number.isNaN(r)));
    if (Number.isFinite(err) && err > maxAbs) {
      maxAbs = err;
      worst = i;
    }
    if (Number.isFinite(err) && Math.abs(r) > 0) maxRel = Math.max(maxRel, err / Math.abs(r));
    if (!ok) {
      nBad++;
      if (bad.length < 8) bad.push(`  [${i}] got ${a} want ${r} (err ${err.toExponential(2)})`);
    }
  }
  if (nBad > 0) {
    throw new Error(
      `${label}: ${nBad}/${ref.length} elements outside atol=${atol} rtol=${rtol}; max abs err ${maxAbs.toExponential(3)} at [${worst}], max rel ${maxRel.toExponential(3)}\n${bad.join('\n')}`,
    );
  }
}

/**
 * Checks |actual[i] − ref[i]| ≤ bound(i) for every element, with bounds derived per element (e.g.
 * from the rounding-error scale of a dot product). NaN fails. Lists the first offenders.
 */
export function expectWithin(
  actual: ArrayLike<number>,
  ref: ArrayLike<number>,
  bound: (i: number) => number,
  label = '',
): void {
  if (actual.length !== ref.length) throw new Error(`${label}: length ${actual.length} vs reference ${ref.length}`);
  const bad: string[] = [];
  let nBad = 0;
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(actual[i]! - ref[i]!);
    const b = bound(i);
    if (!(err <= b)) {
      nBad++;
      if (bad.length < 8)
        bad.push(`  [${i}] got ${actual[i]} want ${ref[i]} (err ${err.toExponential(2)}, bound ${b.toExponential(2)})`);
    }
  }
  if (nBad > 0) throw new Error(`${label}: ${nBad}/${ref.length} elements outside their bounds\n${bad.join('\n')}`);
}

/** Reads an f32 tensor back. */
export async function read(t: Tensor): Promise<Float32Array> {
  return t.toFloat32();
}

export function toF64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}

/** Random f32 values (the values the GPU sees) also as f64 for the reference. */
export function randomInput(
  rng: Rng,
  shape: number[],
  std = 1,
): { data: Float32Array; ref: Float64Array; tensor: Tensor } {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = rng.normalArray(n, 0, std);
  return { data, ref: Float64Array.from(data), tensor: Tensor.from(data, shape) };
}

/** Runs `step` (which must free everything it makes) 30 times and checks the pool does not grow. */
export async function expectNoGrowth(step: () => void): Promise<void> {
  step();
  await engine().dev.sync();
  const before = engine().pool.stats();
  for (let i = 0; i < 30; i++) step();
  await engine().dev.sync();
  const after = engine().pool.stats();
  expect(after.liveBuffers).toBe(before.liveBuffers);
  expect(after.liveBytes).toBe(before.liveBytes);
}
