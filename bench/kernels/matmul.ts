// GEMM-family benchmark cases (family 'matmul'), each validated against the float64 reference
// before it is timed: every tile × compute variant of the generator on a square product, the
// promoted choice (what the model runs) in fp32 and fp16-mixed, the 1.1B model's MLP linear
// (forward and both backward GEMMs), and the decode GEMV. The big shapes run only on GPUs; the
// small ones also on lavapipe. Stable ids (bench/summary.ts reads them): gemm_f32_4096,
// gemm_f16_4096 (f16 operands, f32 accumulation); gemm_f32_256 and gemm_f16_256 at a small shape.

import { halfBitsToNumber } from '../../reference/matmul.js';
import { type Precision, withPrecision } from '../../src/engine/precision.js';
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { f32ToBf16, f32ToF16 } from '../../src/io/dtype.js';
import {
  type Compute,
  type GemmArgs,
  type GemmChoice,
  gemm,
  gemmPlan,
  TILE_NAMES,
  TILES,
  type TileName,
} from '../../src/kernels/gemm.js';
import { linear, matmulGemv } from '../../src/kernels/matmul.js';
import { registerBench } from '../harness.js';
import { validateGemm } from '../validate.js';

export type HostKind = 'f32' | 'bf16' | 'f16';

/** A tensor with N(0, std) values and the exact values the GPU holds (16-bit decoded), for validation. */
export function hostTensor(
  rng: Rng,
  shape: number[],
  kind: HostKind = 'f32',
  std = 1,
): { t: Tensor; values: Float32Array } {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = rng.normalArray(n, 0, std);
  if (kind === 'f32') return { t: Tensor.from(data, shape).keep(), values: data };
  const bits = Uint16Array.from(data, (v) => (kind === 'bf16' ? f32ToBf16(v) : f32ToF16(v)));
  return {
    t: Tensor.from(bits, shape, kind).keep(),
    values: Float32Array.from(bits, (b) => halfBitsToNumber(b, kind)),
  };
}

export interface GemmCaseSpec {
  name: string;
  id?: string;
  M: number;
  N: number;
  K: number;
  transA?: boolean;
  transB?: boolean;
  aKind?: HostKind;
  bKind?: HostKind;
  choice?: Partial<GemmChoice>;
  precision?: Precision;
  gpuOnly: boolean;
  family?: string;
}

/** Registers a validated GEMM case; the label carries the variant the dispatcher picked. */
export function gemmCase(s: GemmCaseSpec): void {
  const aKind = s.aKind ?? 'f32';
  const bKind = s.bKind ?? 'f32';
  const precision = s.precision ?? 'fp32';
  registerBench({
    family: s.family ?? 'matmul',
    name: `${s.name} ${s.M}x${s.N}x${s.K}${s.transA ? ' Aᵀ' : ''}${s.transB ? ' Bᵀ' : ''}${aKind !== 'f32' ? ` A ${aKind}` : ''}${bKind !== 'f32' ? ` B ${bKind}` : ''}${precision !== 'fp32' ? ` ${precision}` : ''}`,
    id: s.id,
    flops: 2 * s.M * s.N * s.K,
    bytes: (aKind === 'f32' ? 4 : 2) * s.M * s.K + (bKind === 'f32' ? 4 : 2) * s.K * s.N + 4 * s.M * s.N,
    gpuOnly: s.gpuOnly,
    ...(s.choice?.compute === 'f16' || precision === 'fp16-mixed' ? { needs: ['shader-f16' as const] } : {}),
    async setup() {
      const rng = new Rng(7);
      const aShape = s.transA ? [s.K, s.M] : [s.M, s.K];
      const bShape = s.transB ? [s.N, s.K] : [s.K, s.N];
      const a = hostTensor(rng, aShape, aKind);
      const b = hostTensor(rng, bShape, bKind);
      const args: GemmArgs = {
        a: { t: a.t, trans: s.transA },
        b: { t: b.t, trans: s.transB },
        ...(s.choice ? { choice: s.choice } : {}),
      };
      const run = () => void withPrecision(precision, () => gemm(args));
      return {
        run,
        cleanup: () => {
          a.t.dispose();
          b.t.dispose();
        },
        validate: async () => {
          const { choice, key } = withPrecision(precision, () => gemmPlan(args));
          const out = withPrecision(precision, () => gemm(args));
          const problem = await validateGemm(
            out,
            {
              a: { data: a.values, shape: aShape as [number, number], trans: s.transA },
              b: { data: b.values, shape: bShape as [number, number], trans: s.transB },
              f16: choice.compute === 'f16',
            },
            key,
          );
          out.dispose();
          return problem;
        },
      };
    },
  });
}

// Every tile × compute variant on a square product (the tuner times them per shape class).
for (const compute of ['f32', 'f16'] as Compute[]) {
  for (const tile of TILE_NAMES as TileName[]) {
    if (compute === 'f16' && 'direct' in TILES[tile]) continue; // CPU-shaped tiles: f32 compute only
    gemmCase({
      name: `gemm ${compute} ${tile}`,
      M: 256,
      N: 256,
      K: 256,
      choice: { compute, tile, splitK: 1 },
      gpuOnly: false,
    });
    gemmCase({
      name: `gemm ${compute} ${tile}`,
      M: 4096,
      N: 4096,
      K: 4096,
      choice: { compute, tile, splitK: 1 },
      gpuOnly: true,
    });
  }
}
// The promoted choice: f32 operands in fp32; f16 operands in fp16-mixed (the tensor-core comparison).
gemmCase({ name: 'gemm promoted', id: 'gemm_f32_4096', M: 4096, N: 4096, K: 4096, gpuOnly: true });
gemmCase({
  name: 'gemm promoted',
  id: 'gemm_f16_4096',
  M: 4096,
  N: 4096,
  K: 4096,
  aKind: 'f16',
  bKind: 'f16',
  precision: 'fp16-mixed',
  gpuOnly: true,
});
// Their small counterparts (ids for a run on a software adapter: bench/gpu.ts --dry).
gemmCase({ name: 'gemm promoted', id: 'gemm_f32_256', M: 256, N: 256, K: 256, gpuOnly: false });
gemmCase({
  name: 'gemm promoted',
  id: 'gemm_f16_256',
  M: 256,
  N: 256,
  K: 256,
  aKind: 'f16',
  bKind: 'f16',
  precision: 'fp16-mixed',
  gpuOnly: false,
});

// TinyLlama-1.1B MLP up/gate projection at batch 8 × 512 tokens: x [4096, 2048] · W[5632, 2048]ᵀ,
// then the two backward GEMMs (dX = dY·W, dW = dYᵀ·X) with the same kernels and transposes.
const [T, H, F] = [8 * 512, 2048, 5632];
for (const precision of ['fp32', 'fp16-mixed'] as Precision[]) {
  gemmCase({
    name: 'linear fwd',
    id: `linear_fwd_bf16.${precision}`,
    M: T,
    N: F,
    K: H,
    transB: true,
    bKind: 'bf16',
    precision,
    gpuOnly: true,
  });
  gemmCase({
    name: 'linear dX',
    id: `linear_dx_bf16.${precision}`,
    M: T,
    N: H,
    K: F,
    bKind: 'bf16',
    precision,
    gpuOnly: true,
  });
  gemmCase({ name: 'linear dW', M: F, N: H, K: T, transA: true, precision, gpuOnly: true });
  gemmCase({ name: 'linear fwd', M: 64, N: 512, K: 256, transB: true, bKind: 'bf16', precision, gpuOnly: false });
}
// LoRA shapes at the same batch: the down-projection (N = r) and the A gradient (M = r, K = tokens: split-K).
gemmCase({ name: 'lora down x·Aᵀ', M: T, N: 16, K: H, transB: true, gpuOnly: true });
gemmCase({ name: 'lora dA guᵀ·x', M: 16, N: H, K: T, transA: true, gpuOnly: true });
gemmCase({ name: 'lora down x·Aᵀ', M: 256, N: 16, K: 256, transB: true, gpuOnly: false });
gemmCase({ name: 'lora dA guᵀ·x', M: 16, N: 256, K: 256, transA: true, gpuOnly: false });

// The bundled fin-s model's training GEMMs at 8 × 256 tokens (hidden 128, MLP 352): the MLP up
// projection forward and its two backward products, every f32 tile (CPU-shaped r* and GPU-shaped
// t*) and the promoted choice; these run on lavapipe too.
const [fT, fH, fF] = [8 * 256, 128, 352];
for (const tile of [undefined, ...TILE_NAMES] as (TileName | undefined)[]) {
  const choice = tile ? { choice: { compute: 'f32' as Compute, tile, splitK: 1 } } : {};
  const tag = tile ?? 'promoted';
  gemmCase({ name: `fin-s fwd ${tag}`, M: fT, N: fF, K: fH, transB: true, ...choice, gpuOnly: false });
  gemmCase({ name: `fin-s dX ${tag}`, M: fT, N: fH, K: fF, ...choice, gpuOnly: false });
  gemmCase({ name: `fin-s dW ${tag}`, M: fF, N: fH, K: fT, transA: true, ...choice, gpuOnly: false });
}

// Decode: one token through the same projection, x [1, 2048] · W[5632, 2048]ᵀ. Memory-bound: the
// weight read is the cost (GB/s is the figure of merit).
function gemvCase(M: number, N: number, K: number, bKind: HostKind, gpuOnly: boolean): void {
  registerBench({
    family: 'matmul',
    name: `decode gemv ${M}x${N}x${K} Bᵀ${bKind !== 'f32' ? ` B ${bKind}` : ''}`,
    flops: 2 * M * N * K,
    bytes: 4 * M * K + (bKind === 'f32' ? 4 : 2) * K * N + 4 * M * N,
    gpuOnly,
    async setup() {
      const rng = new Rng(9);
      const x = hostTensor(rng, [M, K]);
      const w = hostTensor(rng, [N, K], bKind, 0.02);
      return {
        run: () => void matmulGemv(x.t, w.t, { transB: true }),
        cleanup: () => {
          x.t.dispose();
          w.t.dispose();
        },
        validate: () =>
          validateGemm(
            matmulGemv(x.t, w.t, { transB: true }),
            {
              a: { data: x.values, shape: [M, K] },
              b: { data: w.values, shape: [N, K], trans: true },
              f16: false,
            },
            'gemv',
          ),
      };
    },
  });
}
for (const bKind of ['f32', 'bf16'] as HostKind[]) {
  gemvCase(1, F, H, bKind, true);
  gemvCase(1, 1024, 512, bKind, false);
}

registerBench({
  family: 'matmul',
  name: 'linear (autograd entry) 4x512 · 1024x512ᵀ bf16',
  flops: 2 * 4 * 512 * 1024,
  async setup() {
    const rng = new Rng(8);
    const x = hostTensor(rng, [4, 512]);
    const w = hostTensor(rng, [1024, 512], 'bf16');
    return {
      run: () => void linear(x.t, w.t),
      cleanup: () => {
        x.t.dispose();
        w.t.dispose();
      },
      validate: () =>
        validateGemm(
          linear(x.t, w.t),
          {
            a: { data: x.values, shape: [4, 512] },
            b: { data: w.values, shape: [1024, 512], trans: true },
            f16: false,
          },
          'linear',
        ),
    };
  },
});
