// SwiGLU cases: TinyLlama-1.1B MLP (8 × 512 tokens × 5632) on GPUs, and a small shape everywhere.
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { swiglu, swigluBackward } from '../../src/kernels/swiglu.js';
import { registerBench } from '../harness.js';

for (const [rows, d, gpuOnly] of [
  [64, 5632, false],
  [8 * 512, 5632, true],
] as [number, number, boolean][]) {
  const n = rows * d;
  const make = () => {
    const rng = new Rng(13);
    const ts = [0, 1, 2].map(() => Tensor.from(rng.normalArray(n), [rows, d]).keep());
    return {
      gate: ts[0]!,
      up: ts[1]!,
      dy: ts[2]!,
      cleanup: () =>
        ts.forEach((z) => {
          z.dispose();
        }),
    };
  };
  registerBench({
    family: 'swiglu',
    name: `forward f32 ${rows}x${d}`,
    bytes: 12 * n,
    flops: 5 * n,
    gpuOnly,
    async setup() {
      const t = make();
      return { run: () => void swiglu(t.gate, t.up), cleanup: t.cleanup };
    },
  });
  registerBench({
    family: 'swiglu',
    name: `backward dgate+dup ${rows}x${d}`,
    bytes: 20 * n,
    flops: 10 * n,
    gpuOnly,
    async setup() {
      const t = make();
      return { run: () => void swigluBackward(t.gate, t.up, t.dy, { gate: true, up: true }), cleanup: t.cleanup };
    },
  });
}
