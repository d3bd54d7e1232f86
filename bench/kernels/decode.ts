// Decode kernels at TinyLlama-1.1B shapes (GPU only) and small shapes: the fused decode GEMV for
// NF4 and bf16 weights at batch 1 and 8 (GB/s counts the weights once plus x and y), and the GPU
// sampler over a 32000-token vocabulary. Compare the NF4 GEMV with `nf4Linear decode (gemv v1)` in
// nf4.ts (25 GB/s on the H100) and with the card's copy bandwidth.
import { Rng } from '../../src/engine/random.js';
import { engine, Tensor } from '../../src/engine/tensor.js';
import { f32ArrayToBf16 } from '../../src/io/dtype.js';
import { decodeGemv, type GemvWeight } from '../../src/kernels/decode.js';
import { disposeNf4, keepNf4, quantizeNf4 } from '../../src/kernels/nf4.js';
import { TokenSampler } from '../../src/kernels/sampling.js';
import { registerBench } from '../harness.js';

const nf4Bytes = (n: number) => n / 2 + (n / 64) * 4;

function makeWeight(
  kind: 'nf4' | 'bf16',
  out: number,
  inF: number,
  seed: number,
): { w: GemvWeight; dispose: () => void } {
  const data = new Rng(seed).normalArray(out * inF, 0, 0.02);
  if (kind === 'bf16') {
    const t = Tensor.from(f32ArrayToBf16(data), [out, inF], 'bf16').keep();
    return { w: t, dispose: () => t.dispose() };
  }
  const src = Tensor.from(data, [out, inF]);
  const w = keepNf4(quantizeNf4(src));
  src.dispose();
  return { w, dispose: () => disposeNf4(w) };
}

// [label, in, outs per segment, epilogue, gpuOnly]
const shapes: [string, number, number[], 'store' | 'swiglu', boolean][] = [
  ['qkv (norm folded)', 2048, [2048, 256, 256], 'store', true],
  ['gate/up + swiglu (norm folded)', 2048, [5632, 5632], 'swiglu', true],
  ['down', 5632, [2048], 'store', true],
  ['qkv (norm folded)', 256, [256, 64, 64], 'store', false],
];

for (const kind of ['nf4', 'bf16'] as const) {
  for (const M of [1, 8]) {
    for (const [label, K, Ns, epilogue, gpuOnly] of shapes) {
      const weights = Ns.reduce((a, n) => a + n * K, 0);
      const outCols = epilogue === 'swiglu' ? Ns[0]! : Ns.reduce((a, b) => a + b, 0);
      registerBench({
        family: 'decode',
        name: `decodeGemv ${kind} ${label} M${M} ${K}->[${Ns.join(',')}]`,
        flops: 2 * M * weights,
        bytes: (kind === 'nf4' ? nf4Bytes(weights) : 2 * weights) + 4 * M * (K + outCols),
        gpuOnly,
        async setup() {
          const made = Ns.map((n, s) => makeWeight(kind, n, K, 10 + s));
          const x = Tensor.from(new Rng(2).normalArray(M * K), [M, K]).keep();
          const g = Tensor.from(new Float32Array(K).fill(1), [K]).keep();
          const out = Tensor.empty([M, outCols]).keep();
          const norm = label.includes('norm') ? { norm: { weight: g, eps: 1e-5 } } : {};
          return {
            run: () => decodeGemv({ x, segments: made.map((m) => m.w), out, epilogue, ...norm }),
            cleanup: () => {
              for (const m of made) m.dispose();
              for (const t of [x, g, out]) t.dispose();
            },
          };
        },
      });
    }
  }
}

for (const [V, B, gpuOnly] of [
  [32000, 1, true],
  [32000, 8, true],
  [600, 8, false],
] as [number, number, boolean][]) {
  for (const mode of ['greedy', 'top-k 50, top-p 0.9'] as const) {
    registerBench({
      family: 'decode',
      name: `TokenSampler ${mode} B${B} V${V}`,
      bytes: 4 * B * V,
      gpuOnly,
      async setup() {
        const sampler = new TokenSampler(B, V);
        for (let b = 0; b < B; b++)
          sampler.setRow(b, mode === 'greedy' ? {} : { greedy: false, topK: 50, topP: 0.9, seed: b }, [1, 2, 3]);
        const logits = Tensor.from(new Rng(3).normalArray(B * V, 0, 3), [B, V]).keep();
        const ids = Tensor.empty([B], 'i32').keep();
        await engine().dev.sync();
        return {
          run: () => sampler.sample(logits, ids),
          cleanup: () => {
            sampler.dispose();
            logits.dispose();
            ids.dispose();
          },
        };
      },
    });
  }
}
