import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { accumulate, binary, cast } from '../../src/kernels/elementwise.js';
import { registerBench } from '../harness.js';

function sizes(): [string, number, boolean][] {
  return [
    ['64Ki', 1 << 16, false],
    ['64Mi', 1 << 26, true],
  ];
}

for (const [label, n, gpuOnly] of sizes()) {
  registerBench({
    family: 'elementwise',
    name: `mul f32 ${label}`,
    bytes: 12 * n,
    flops: n,
    gpuOnly,
    async setup() {
      const rng = new Rng(1);
      const a = Tensor.from(rng.uniformArray(n), [n]).keep();
      const b = Tensor.from(rng.uniformArray(n), [n]).keep();
      return {
        run: () => void binary('mul', a, b),
        cleanup: () => {
          a.dispose();
          b.dispose();
        },
      };
    },
  });
  registerBench({
    family: 'elementwise',
    name: `accumulate (y+=x) f32 ${label}`,
    bytes: 12 * n,
    flops: n,
    gpuOnly,
    async setup() {
      const rng = new Rng(2);
      const a = Tensor.from(rng.uniformArray(n), [n]).keep();
      const b = Tensor.from(rng.uniformArray(n), [n]).keep();
      return {
        run: () => accumulate(a, b),
        cleanup: () => {
          a.dispose();
          b.dispose();
        },
      };
    },
  });
  registerBench({
    family: 'elementwise',
    name: `cast f32->bf16 ${label}`,
    bytes: 6 * n,
    gpuOnly,
    async setup() {
      const a = Tensor.from(new Rng(3).uniformArray(n), [n]).keep();
      return { run: () => void cast(a, 'bf16'), cleanup: () => a.dispose() };
    },
  });
}
