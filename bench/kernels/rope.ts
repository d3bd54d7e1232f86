// RoPE cases: queries of TinyLlama-1.1B training (8 × 512 tokens, 32 heads × 64) on GPUs, and a
// small shape everywhere. The backward is the same kernel with the rotation inverted.
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { rope, ropeTables } from '../../src/kernels/rope.js';
import { registerBench } from '../harness.js';

for (const [b, t, h, dh, gpuOnly] of [
  [1, 64, 4, 64, false],
  [8, 512, 32, 64, true],
] as [number, number, number, number, boolean][]) {
  const n = b * t * h * dh;
  registerBench({
    family: 'rope',
    name: `forward f32 [${b},${t},${h},${dh}]`,
    bytes: 8 * n + 4 * n, // x in, y out, and the cos/sin reads (half-size each)
    flops: 3 * n,
    gpuOnly,
    async setup() {
      const rng = new Rng(12);
      const tables = ropeTables({ headDim: dh, theta: 10000, scaling: null, maxPositions: t });
      const x = Tensor.from(rng.normalArray(n), [b, t, h, dh]).keep();
      const pos = Tensor.from(
        Int32Array.from({ length: b * t }, (_, k) => k % t),
        [b * t],
      ).keep();
      return {
        run: () => void rope(x, pos, tables),
        cleanup: () =>
          [x, pos, tables.cos, tables.sin].forEach((z) => {
            z.dispose();
          }),
      };
    },
  });
}
