// Kernel benchmark harness: each kernel family registers cases; the runner times each case with
// GPU timestamp queries around the recorded work (median of many runs after warm-up), and reports
// achieved GFLOP/s or GB/s. Wall-clock time is never used for GPU work.
export interface BenchCase {
  /** Kernel family, e.g. 'matmul'. */
  family: string;
  /** Variant and shape, e.g. 'f32 4096x4096x4096'. */
  name: string;
  /** Floating-point operations per run (for GFLOP/s), if meaningful. */
  flops?: number;
  /** Bytes moved per run (for GB/s), if meaningful. */
  bytes?: number;
  /** Only on adapters that are not software renderers (big shapes). */
  gpuOnly?: boolean;
  /**
   * Allocates inputs and returns the function that records one run (no sync inside), plus a
   * cleanup; or `skip` with the reason the case cannot run on this device. `summary`: where the
   * median time (ms) goes in the GPU summary's `finllm` object (e.g. ['attention', 'B8_T512_Hq32_Hkv4_D64',
   * 'fwd_ms']). A setup that throws (e.g. a failed validation against a reference) fails the case.
   * Called once per case.
   */
  setup(): Promise<{ run: () => void; cleanup?: () => void; summary?: string[] } | { skip: string }>;
}

const cases: BenchCase[] = [];

export function registerBench(...c: BenchCase[]): void {
  cases.push(...c);
}

export function registeredBenches(): readonly BenchCase[] {
  return cases;
}
