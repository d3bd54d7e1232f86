// Validation of benchmarked kernels against the float64 references of the test suite before they
// are timed: a kernel that is fast and wrong must never win a benchmark or the tuner. Large outputs
// are checked on a sample of elements (the four corners, the last row and column, and random ones),
// each within the rigorous rounding bound of reference/gemm.ts: a wrong index or tile edge
// fails there.

import { type GemmRefInput, gemmReferenceAt, gemmRefShape } from '../reference/gemm.js';
import { Rng } from '../src/engine/random.js';
import type { Tensor } from '../src/engine/tensor.js';

/** Elements to check: corners, edges, and `count` random ones (fixed seed: the same on every run). */
export function samplePoints(M: number, N: number, count = 48): [number, number][] {
  const pts: [number, number][] = [
    [0, 0],
    [0, N - 1],
    [M - 1, 0],
    [M - 1, N - 1],
    [M >> 1, N - 1],
    [M - 1, N >> 1],
  ];
  const rng = new Rng(12345);
  for (let i = 0; i < count; i++) pts.push([rng.int(M), rng.int(N)]);
  return pts;
}

/** Null when every sampled element of `out` is within the reference's bound, else the first failures. */
export async function validateGemm(
  out: Tensor | Float32Array,
  inp: GemmRefInput,
  label: string,
): Promise<string | null> {
  const [M, N] = gemmRefShape(inp);
  const got = out instanceof Float32Array ? out : await out.toFloat32();
  if (got.length !== M * N) return `${label}: ${got.length} outputs, expected ${M}×${N}`;
  const bad: string[] = [];
  for (const [m, n] of samplePoints(M, N)) {
    const { value, bound } = gemmReferenceAt(inp, m, n);
    const v = got[m * N + n]!;
    if (!(Math.abs(v - value) <= bound))
      bad.push(`[${m}, ${n}] got ${v} want ${value} (bound ${bound.toExponential(2)})`);
  }
  return bad.length
    ? `${label}: ${bad.length} sampled elements outside the bound: ${bad.slice(0, 3).join('; ')}`
    : null;
}
