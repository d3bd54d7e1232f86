import { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { AdamW, clipGradNorm } from '../../src/kernels/optim.js';
import { registerBench } from '../harness.js';

/** LoRA parameter sizes (A then B) of a Llama model with LoRA r on all 7 linear layers. */
function loraSizes(layers: number, hidden: number, kv: number, mlp: number, r: number): number[] {
  const lin: [number, number][] = [[hidden, hidden], [hidden, kv], [hidden, kv], [hidden, hidden], [hidden, mlp], [hidden, mlp], [mlp, hidden]];
  const out: number[] = [];
  for (let l = 0; l < layers; l++) for (const [i, o] of lin) out.push(r * i, o * r);
  return out;
}

// TinyLlama-1.1B (22 layers, 2048, 256 KV, 5632 MLP), r=16: 308 tensors, 12.6M parameters.
const cases: [string, number[], boolean][] = [
  ['1.1B LoRA r=16', loraSizes(22, 2048, 256, 5632, 16), true],
  ['tiny LoRA r=4', loraSizes(2, 64, 16, 160, 4), false],
];

for (const [label, sizes, gpuOnly] of cases) {
  const total = sizes.reduce((a, b) => a + b, 0);
  const make = () => {
    const rng = new Rng(9);
    return sizes.map((n) => {
      const p = Tensor.from(rng.normalArray(n, 0, 0.02), [n]).keep();
      p.requiresGrad = true;
      p.grad = Tensor.from(rng.normalArray(n, 0, 1e-3), [n]).keep();
      return p;
    });
  };
  const free = (ps: Tensor[]) => { for (const p of ps) { p.grad?.dispose(); p.dispose(); } };
  registerBench({
    family: 'optim',
    name: `AdamW step ${label} (${sizes.length} tensors, ${(total / 1e6).toFixed(2)}M params)`,
    bytes: 28 * total, // read p, g, m, v; write p, m, v
    gpuOnly,
    async setup() {
      const ps = make();
      const opt = new AdamW(ps, { lr: 1e-4 });
      return { run: () => opt.step(), cleanup: () => { opt.dispose(); free(ps); } };
    },
  });
  registerBench({
    family: 'optim',
    name: `clipGradNorm ${label} (${sizes.length} tensors)`,
    bytes: 12 * total, // read g (norm), read + write g (scale)
    gpuOnly,
    async setup() {
      const ps = make();
      return { run: () => void clipGradNorm(ps, 1e9), cleanup: () => free(ps) };
    },
  });
}
