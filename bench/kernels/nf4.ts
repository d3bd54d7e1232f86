// NF4 benchmark cases: the dequant-GEMM (the GEMM generator's NF4 loader) forward and input
// gradient at the 1.1B MLP shape, validated against the float64 reference on the dequantized
// weight before timing, next to the plain f16 GEMM of the same shape (the ratio the issue tracks);
// the decode GEMV; quantization and dequantization (family 'nf4-quant'). Stable ids for
// bench/summary.ts: nf4_gemm_fwd.<precision>, nf4_gemm_dx.<precision>, f16_gemm_same_shape.

import { dequantizeNf4Ref } from '../../reference/nf4.js';
import { type Precision, withPrecision } from '../../src/engine/precision.js';
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { gemmPlan } from '../../src/kernels/gemm.js';
import { nf4LinearBackward, nf4LinearForward } from '../../src/kernels/matmul.js';
import {
  dequantizeNf4,
  disposeNf4,
  keepNf4,
  type Nf4Weight,
  nf4Absmax,
  nf4Gemv,
  quantizeNf4,
  unpackNf4Codes,
} from '../../src/kernels/nf4.js';
import { registerBench } from '../harness.js';
import { validateGemm } from '../validate.js';
import { gemmCase, hostTensor } from './matmul.js';

/** Bytes of an NF4 weight: half a byte per code plus an f32 absmax per 64. */
const nf4Bytes = (n: number) => n / 2 + (n / 64) * 4;

function weight(out: number, inF: number, seed: number): Nf4Weight {
  return keepNf4(quantizeNf4(Tensor.from(new Rng(seed).normalArray(out * inF, 0, 0.02), [out, inF])));
}

/** The f32 values an NF4 weight stands for, from its codes and absmax read back. */
async function dequantizedValues(w: Nf4Weight): Promise<Float64Array> {
  const n = w.shape[0] * w.shape[1];
  const am = nf4Absmax(w);
  const values = dequantizeNf4Ref(unpackNf4Codes((await w.codes.read()) as Uint32Array, n), await am.toFloat32());
  am.dispose();
  return values;
}

// [label, M, in, out, gpuOnly]
const linearCases: [string, number, number, number, boolean][] = [
  ['4096 tokens', 4096, 2048, 5632, true],
  ['64 tokens', 64, 256, 512, false],
];

for (const [label, M, K, N, gpuOnly] of linearCases) {
  for (const precision of ['fp32', 'fp16-mixed'] as Precision[]) {
    for (const dir of ['fwd', 'dx'] as const) {
      const [rows, inner, cols] = dir === 'fwd' ? [M, K, N] : [M, N, K];
      registerBench({
        family: 'nf4',
        name: `nf4 dequant-gemm ${dir} ${label} ${rows}x${inner}->${cols} ${precision}`,
        id: gpuOnly ? `nf4_gemm_${dir}.${precision}` : undefined,
        flops: 2 * M * K * N,
        bytes: nf4Bytes(N * K) + 4 * M * (K + N),
        gpuOnly,
        ...(precision === 'fp16-mixed' ? { needs: ['shader-f16' as const] } : {}),
        async setup() {
          const w = weight(N, K, 1);
          const x = hostTensor(new Rng(2), [rows, inner]);
          const run = () =>
            withPrecision(precision, () => (dir === 'fwd' ? nf4LinearForward(x.t, w) : nf4LinearBackward(x.t, w)));
          return {
            run: () => void run(),
            cleanup: () => {
              disposeNf4(w);
              x.t.dispose();
            },
            validate: async () => {
              const values = await dequantizedValues(w);
              const { key, choice } = withPrecision(precision, () =>
                gemmPlan({ a: { t: x.t }, b: { t: w, trans: dir === 'fwd' } }),
              );
              return validateGemm(
                run(),
                {
                  a: { data: x.values, shape: [rows, inner] },
                  b: { data: values, shape: [N, K], trans: dir === 'fwd' },
                  f16: choice.compute === 'f16',
                },
                key,
              );
            },
          };
        },
      });
    }
  }
}
// The plain f16 GEMM at the forward's shape: the NF4 loader's cost is the ratio to this.
gemmCase({
  name: 'f16 gemm (NF4 shape)',
  id: 'f16_gemm_same_shape',
  family: 'nf4',
  M: 4096,
  N: 5632,
  K: 2048,
  transB: true,
  aKind: 'f16',
  bKind: 'f16',
  precision: 'fp16-mixed',
  gpuOnly: true,
});

// Decode GEMV on NF4 codes: memory-bound (GB/s).
for (const [M, K, N, gpuOnly] of [
  [1, 2048, 5632, true],
  [1, 256, 512, false],
] as [number, number, number, boolean][]) {
  registerBench({
    family: 'nf4',
    name: `nf4 decode gemv ${M}x${K}->${N}`,
    flops: 2 * M * K * N,
    bytes: nf4Bytes(N * K) + 4 * M * (K + N),
    gpuOnly,
    async setup() {
      const w = weight(N, K, 1);
      const x = hostTensor(new Rng(2), [M, K]);
      return {
        run: () => void nf4Gemv(x.t, w),
        cleanup: () => {
          disposeNf4(w);
          x.t.dispose();
        },
        validate: async () =>
          validateGemm(
            nf4Gemv(x.t, w),
            {
              a: { data: x.values, shape: [M, K] },
              b: { data: await dequantizedValues(w), shape: [N, K], trans: true },
              f16: false,
            },
            'nf4 gemv',
          ),
      };
    },
  });
}

for (const [out, inF, gpuOnly] of [
  [5632, 2048, true],
  [512, 256, false],
] as [number, number, boolean][]) {
  const n = out * inF;
  registerBench({
    family: 'nf4-quant',
    name: `dequantize ${out}x${inF} (codes -> f32)`,
    bytes: nf4Bytes(n) + 4 * n,
    gpuOnly,
    async setup() {
      const w = weight(out, inF, 5);
      return { run: () => void dequantizeNf4(w), cleanup: () => disposeNf4(w) };
    },
  });
  registerBench({
    family: 'nf4-quant',
    name: `quantize ${out}x${inF} (f32 -> codes, load time)`,
    bytes: 4 * n + nf4Bytes(n),
    gpuOnly,
    async setup() {
      const x = Tensor.from(new Rng(6).normalArray(n, 0, 0.02), [out, inF]).keep();
      return {
        run: () => {
          const q = quantizeNf4(x);
          q.codes.dispose();
          (q.absmax as Tensor).dispose();
        },
        cleanup: () => x.dispose(),
      };
    },
  });
}
