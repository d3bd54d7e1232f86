// Cross-entropy cases: TinyLlama-1.1B training logits (8 × 512 tokens × 32000 vocab, 524 MB) on GPUs,
// and a small case everywhere. Forward reads the logits once; backward reads them and writes dlogits.
import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { crossEntropyBackward, crossEntropyRows } from '../../src/kernels/crossentropy.js';
import { registerBench } from '../harness.js';

for (const [n, v, gpuOnly] of [
  [16, 32000, false],
  [8 * 512, 32000, true],
] as [number, number, boolean][]) {
  const make = () => {
    const rng = new Rng(14);
    const logits = Tensor.from(rng.normalArray(n * v, 0, 2), [n, v]).keep();
    const labels = Tensor.from(
      Int32Array.from({ length: n }, (_, i) => (i % 10 === 9 ? -100 : rng.int(v))),
      [n],
    ).keep();
    const { loss, lse } = crossEntropyRows(logits, labels);
    loss.dispose();
    lse.keep();
    const g = Tensor.from(new Float32Array(n).fill(1 / n), [n]).keep();
    return {
      logits,
      labels,
      lse,
      g,
      cleanup: () =>
        [logits, labels, lse, g].forEach((t) => {
          t.dispose();
        }),
    };
  };
  registerBench({
    family: 'crossentropy',
    name: `forward (lse + row loss) ${n}x${v}`,
    bytes: 4 * n * v,
    flops: 3 * n * v,
    gpuOnly,
    async setup() {
      const t = make();
      return { run: () => void crossEntropyRows(t.logits, t.labels), cleanup: t.cleanup };
    },
  });
  registerBench({
    family: 'crossentropy',
    name: `backward dlogits ${n}x${v}`,
    bytes: 8 * n * v,
    flops: 3 * n * v,
    gpuOnly,
    async setup() {
      const t = make();
      return { run: () => void crossEntropyBackward(t.logits, t.labels, t.lse, t.g, null), cleanup: t.cleanup };
    },
  });
}
