// matmul benchmark cases: each kernel version on a square GEMM, the 1.1B model's MLP linear
// (forward and both backward GEMMs), and the decode GEMV, in f32 and packed bf16 weights. The big
// shapes run only on GPUs; the small ones also on lavapipe.
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { f32ToBf16 } from '../../src/io/dtype.js';
import { linear, matmulForward, matmulGemv, matmulV1, matmulV2, matmulV3, type MatmulOptions } from '../../src/kernels/matmul.js';
import { registerBench } from '../harness.js';

function tensor(rng: Rng, shape: number[], dtype: 'f32' | 'bf16' = 'f32'): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = rng.normalArray(n, 0, 0.02);
  return (dtype === 'f32' ? Tensor.from(data, shape) : Tensor.from(Uint16Array.from(data, f32ToBf16), shape, 'bf16')).keep();
}

type Fn = (a: Tensor, b: Tensor, o?: MatmulOptions) => Tensor;

function gemmCase(name: string, fn: Fn, M: number, N: number, K: number, opts: MatmulOptions, gpuOnly: boolean, bType: 'f32' | 'bf16' = 'f32'): void {
  const bBytes = bType === 'f32' ? 4 : 2;
  registerBench({
    family: 'matmul',
    name: `${name} ${M}x${N}x${K}${opts.transA ? ' Aᵀ' : ''}${opts.transB ? ' Bᵀ' : ''}${bType === 'bf16' ? ' B bf16' : ''}`,
    flops: 2 * M * N * K,
    bytes: 4 * M * K + bBytes * K * N + 4 * M * N,
    gpuOnly,
    async setup() {
      const rng = new Rng(7);
      const a = tensor(rng, opts.transA ? [K, M] : [M, K]);
      const b = tensor(rng, opts.transB ? [N, K] : [K, N], bType);
      return { run: () => void fn(a, b, opts), cleanup: () => { a.dispose(); b.dispose(); } };
    },
  });
}

// Square GEMM: every version (V1 only small: it is the naive cross-check).
gemmCase('v1', matmulV1, 256, 256, 256, {}, false);
for (const [name, fn] of [['v2', matmulV2], ['v3', matmulV3], ['promoted', matmulForward]] as [string, Fn][]) {
  gemmCase(name, fn, 256, 256, 256, {}, false);
  gemmCase(name, fn, 4096, 4096, 4096, {}, true);
}

// TinyLlama-1.1B MLP up/gate projection at batch 8 × 512 tokens: x [4096, 2048] · W[5632, 2048]ᵀ,
// then the two backward GEMMs (dX = dY·W, dW = dYᵀ·X) with the same kernels and transposes.
const [T, H, F] = [8 * 512, 2048, 5632];
for (const bType of ['f32', 'bf16'] as const) gemmCase('linear fwd', matmulForward, T, F, H, { transB: true }, true, bType);
gemmCase('linear dX', matmulForward, T, H, F, {}, true);
gemmCase('linear dW', matmulForward, F, H, T, { transA: true }, true);
gemmCase('linear fwd', matmulForward, 64, 512, 256, { transB: true }, false, 'bf16');

// Decode: one token through the same projection, x [1, 2048] · W[5632, 2048]ᵀ. Memory-bound: the
// weight read is the cost (GB/s is the figure of merit).
for (const bType of ['f32', 'bf16'] as const) {
  gemmCase('decode gemv', matmulGemv, 1, F, H, { transB: true }, true, bType);
  gemmCase('decode v2 (no gemv)', matmulV2, 1, F, H, { transB: true }, true, bType);
  gemmCase('decode gemv', matmulGemv, 1, 1024, 512, { transB: true }, false, bType);
}

registerBench({
  family: 'matmul',
  name: 'linear (autograd entry) 4x512 · 1024x512ᵀ bf16',
  flops: 2 * 4 * 512 * 1024,
  async setup() {
    const rng = new Rng(8);
    const x = tensor(rng, [4, 512]);
    const w = tensor(rng, [1024, 512], 'bf16');
    return { run: () => void linear(x, w), cleanup: () => { x.dispose(); w.dispose(); } };
  },
});
