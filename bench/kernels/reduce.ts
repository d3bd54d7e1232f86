// Reduction and softmax benchmark cases (bandwidth-bound: GB/s is the figure of merit).
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { max, softmax, sum } from '../../src/kernels/reduce.js';
import { registerBench } from '../harness.js';

function rowsCase(
  name: string,
  rows: number,
  D: number,
  bytesPerElem: number,
  fn: (x: Tensor) => Tensor,
  gpuOnly: boolean,
): void {
  registerBench({
    family: 'reduce',
    name: `${name} [${rows}, ${D}]`,
    bytes: bytesPerElem * rows * D,
    gpuOnly,
    async setup() {
      const x = Tensor.from(new Rng(3).normalArray(rows * D), [rows, D]).keep();
      return { run: () => void fn(x), cleanup: () => x.dispose() };
    },
  });
}

for (const [rows, D, gpuOnly] of [
  [256, 1024, false],
  [4096, 2048, true],
  [4096, 32000, true],
] as [number, number, boolean][]) {
  rowsCase('sum last axis', rows, D, 4, (x) => sum(x, -1), gpuOnly);
  rowsCase('max last axis', rows, D, 4, (x) => max(x, -1), gpuOnly);
  // softmax reads the row twice and writes it once
  rowsCase('softmax', rows, D, 12, softmax, gpuOnly);
}
rowsCase('sum all', 256, 1024, 4, (x) => sum(x), false);
rowsCase('sum all', 4096, 8192, 4, (x) => sum(x), true);
