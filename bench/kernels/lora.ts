import { backward } from '../../src/engine/autograd.js';
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { loraLinear } from '../../src/kernels/lora.js';
import { disposeNf4, keepNf4, quantizeNf4, type Nf4Weight } from '../../src/kernels/nf4.js';
import { registerBench } from '../harness.js';

// [M, in, out, r, gpuOnly]: the training shape (batch 8 × 512 tokens, q_proj of a 1B model) and a lavapipe one.
const cases: [number, number, number, number, boolean][] = [
  [8 * 512, 2048, 2048, 16, true],
  [64, 256, 256, 8, false],
];

for (const [M, K, N, r, gpuOnly] of cases) {
  for (const base of ['nf4', 'f32'] as const) {
    for (const withBackward of [false, true]) {
      // forward: base 2MKN + LoRA 2Mr(K+N); backward adds dX (2MKN) and the LoRA grads (≈ 3·2Mr(K+N))
      const flops = 2 * M * K * N + 2 * M * r * (K + N) + (withBackward ? 2 * M * K * N + 6 * M * r * (K + N) : 0);
      registerBench({
        family: 'lora',
        name: `loraLinear ${base} base ${withBackward ? 'fwd+bwd' : 'fwd'} ${M}x${K}->${N} r=${r} dropout 0.05`,
        flops,
        gpuOnly,
        async setup() {
          const rng = new Rng(7);
          const wf = Tensor.from(rng.normalArray(N * K, 0, 0.02), [N, K]).keep();
          let w: Tensor | Nf4Weight = wf;
          if (base === 'nf4') {
            w = keepNf4(quantizeNf4(wf));
            wf.dispose();
          }
          const x = Tensor.from(rng.normalArray(M * K), [M, K]).keep();
          const g = Tensor.from(rng.normalArray(M * N), [M, N]).keep();
          const A = Tensor.from(rng.normalArray(r * K, 0, 0.02), [r, K]).keep();
          const B = Tensor.from(rng.normalArray(N * r, 0, 0.02), [N, r]).keep();
          A.requiresGrad = withBackward;
          B.requiresGrad = withBackward;
          x.requiresGrad = withBackward;
          let seed = 1;
          return {
            run: () => {
              const y = loraLinear(x, w, A, B, 2, { dropout: 0.05, seed: seed++ });
              if (withBackward) {
                backward(y, g);
                for (const t of [x, A, B]) { t.grad?.dispose(); t.grad = null; }
              }
            },
            cleanup: () => {
              if (w instanceof Tensor) w.dispose();
              else disposeNf4(w);
              for (const t of [x, g, A, B]) t.dispose();
            },
          };
        },
      });
    }
  }
}
