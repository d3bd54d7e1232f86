// Kernel benchmark harness: each kernel family registers cases; the runner validates each case
// against the float64 reference (where the case provides `validate`: every GEMM-family case does),
// then times it with GPU timestamp queries around the recorded work (median of many runs after
// warm-up), and reports achieved GFLOP/s or GB/s. Wall-clock time is never used for GPU work.
import type { FeatureName } from '../src/engine/device.js';

export interface BenchCase {
  /** Kernel family, e.g. 'matmul'. */
  family: string;
  /** Variant and shape, e.g. 'f32 4096x4096x4096'. */
  name: string;
  /** Stable key for tools that read the results (bench/summary.ts), e.g. 'gemm_f16_4096'. */
  id?: string;
  /**
   * The ids `setup` may give the case when its id is only known on the device (the attention
   * variant the model picks there): `--ids` / `--summary-only` select the case by these too.
   */
  ids?: string[];
  /** Floating-point operations per run (for GFLOP/s), if meaningful. */
  flops?: number;
  /** Bytes moved per run (for GB/s), if meaningful. */
  bytes?: number;
  /** Only on adapters that are not software renderers (big shapes). */
  gpuOnly?: boolean;
  /** Optional features the case needs (skipped with the reason where absent). */
  needs?: FeatureName[];
  /**
   * Allocates inputs and returns the function that records one run (no sync inside), a cleanup,
   * and `validate`: runs once and checks the result against the float64 reference, returning null
   * or what is wrong; or `skip` with the reason the case cannot run on this device. `id`: the
   * case's stable id when it is only known on the device (e.g. the attention variant the model
   * picks there gets `attention.<shape>.fwd`, which the GPU summary reads). A setup that throws
   * (e.g. a failed validation against a reference) fails the case. Called once per case. With
   * `ctx.wanted` (the runner's `--ids`), a case whose id turns out not to be wanted may return
   * `skip` before its costly preparation (data, compiles, validation).
   */
  setup(
    ctx?: BenchContext,
  ): Promise<
    { run: () => void; cleanup?: () => void; validate?: () => Promise<string | null>; id?: string } | { skip: string }
  >;
}

export interface BenchContext {
  /** Only these ids are wanted (bench/run.ts `--ids`, `--summary-only`); absent: every case. */
  wanted?: ReadonlySet<string>;
}

/** Families whose every case must validate before it is timed. */
export const VALIDATED_FAMILIES: ReadonlySet<string> = new Set(['matmul', 'nf4', 'lora']);

const cases: BenchCase[] = [];

export function registerBench(...c: BenchCase[]): void {
  cases.push(...c);
}

export function registeredBenches(): readonly BenchCase[] {
  return cases;
}
