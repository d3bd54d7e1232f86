import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { dequantizeNf4, disposeNf4, keepNf4, nf4GemvV1, nf4LinearBackward, nf4MatmulV1, quantizeNf4 } from '../../src/kernels/nf4.js';
import { registerBench } from '../harness.js';

/** Bytes of an NF4 weight: half a byte per code plus an f32 absmax per 64. */
const nf4Bytes = (n: number) => n / 2 + (n / 64) * 4;

function weight(out: number, inF: number, seed: number) {
  return keepNf4(quantizeNf4(Tensor.from(new Rng(seed).normalArray(out * inF, 0, 0.02), [out, inF])));
}

// [label, M, in, out, gpuOnly]
const linearCases: [string, number, number, number, boolean][] = [
  ['decode', 1, 2048, 5632, true],
  ['prefill', 512, 2048, 5632, true],
  ['decode', 1, 256, 512, false],
  ['prefill', 64, 256, 512, false],
];

for (const [label, M, K, N, gpuOnly] of linearCases) {
  const kernel = M <= 4 ? 'gemv v1' : 'matmul v1';
  registerBench({
    family: 'nf4',
    name: `nf4Linear ${label} (${kernel}) ${M}x${K}->${N}`,
    flops: 2 * M * K * N,
    bytes: nf4Bytes(N * K) + 4 * M * (K + N),
    gpuOnly,
    async setup() {
      const w = weight(N, K, 1);
      const x = Tensor.from(new Rng(2).normalArray(M * K), [M, K]).keep();
      return {
        run: () => void (M <= 4 ? nf4GemvV1(x, w) : nf4MatmulV1(x, w, 'nt')),
        cleanup: () => { disposeNf4(w); x.dispose(); },
      };
    },
  });
  if (M > 4) {
    registerBench({
      family: 'nf4',
      name: `nf4Linear backward dX (matmul v1 nn) ${M}x${N}->${K}`,
      flops: 2 * M * K * N,
      bytes: nf4Bytes(N * K) + 4 * M * (K + N),
      gpuOnly,
      async setup() {
        const w = weight(N, K, 3);
        const g = Tensor.from(new Rng(4).normalArray(M * N), [M, N]).keep();
        return { run: () => void nf4LinearBackward(g, w), cleanup: () => { disposeNf4(w); g.dispose(); } };
      },
    });
  }
}

for (const [out, inF, gpuOnly] of [[5632, 2048, true], [512, 256, false]] as [number, number, boolean][]) {
  const n = out * inF;
  registerBench({
    family: 'nf4',
    name: `dequantize ${out}x${inF} (codes -> f32)`,
    bytes: nf4Bytes(n) + 4 * n,
    gpuOnly,
    async setup() {
      const w = weight(out, inF, 5);
      return { run: () => void dequantizeNf4(w), cleanup: () => disposeNf4(w) };
    },
  });
  registerBench({
    family: 'nf4',
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
