// RMSNorm cases: TinyLlama-1.1B training shape (batch 8 × 512 tokens, hidden 2048) on GPUs, and a
// small shape everywhere. Bytes count the compulsory traffic (x, g, y/dx once each, f32).
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { rmsnormBackwardDw, rmsnormBackwardDx, rmsnormWithStats } from '../../src/kernels/rmsnorm.js';
import { registerBench } from '../harness.js';

for (const [rows, d, gpuOnly] of [
  [64, 2048, false],
  [8 * 512, 2048, true],
] as [number, number, boolean][]) {
  const shape = `${rows}x${d}`;
  const make = () => {
    const rng = new Rng(11);
    const x = Tensor.from(rng.normalArray(rows * d), [rows, d]).keep();
    const w = Tensor.from(rng.normalArray(d, 1, 0.1), [d]).keep();
    const g = Tensor.from(rng.normalArray(rows * d), [rows, d]).keep();
    const { y, rstd } = rmsnormWithStats(x, w, 1e-5);
    y.dispose();
    rstd.keep();
    return {
      x,
      w,
      g,
      rstd,
      cleanup: () =>
        [x, w, g, rstd].forEach((t) => {
          t.dispose();
        }),
    };
  };
  registerBench({
    family: 'rmsnorm',
    name: `forward f32 ${shape}`,
    bytes: 8 * rows * d,
    flops: 4 * rows * d,
    gpuOnly,
    async setup() {
      const t = make();
      return { run: () => void rmsnormWithStats(t.x, t.w, 1e-5), cleanup: t.cleanup };
    },
  });
  registerBench({
    family: 'rmsnorm',
    name: `backward dx ${shape}`,
    bytes: 12 * rows * d,
    flops: 7 * rows * d,
    gpuOnly,
    async setup() {
      const t = make();
      return { run: () => void rmsnormBackwardDx(t.x, t.w, t.rstd, t.g), cleanup: t.cleanup };
    },
  });
  registerBench({
    family: 'rmsnorm',
    name: `backward dw (2-pass) ${shape}`,
    bytes: 8 * rows * d,
    flops: 3 * rows * d,
    gpuOnly,
    async setup() {
      const t = make();
      return { run: () => void rmsnormBackwardDw(t.x, t.rstd, t.g), cleanup: t.cleanup };
    },
  });
}
