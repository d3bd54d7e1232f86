import { Rng } from '../../src/engine/random.js';
import { engine, Tensor } from '../../src/engine/tensor.js';
import { AdamW, clipGradNorm, gradNormCoef } from '../../src/kernels/optim.js';
import { registerBench } from '../harness.js';

/** LoRA parameter sizes (A then B) of a Llama model with LoRA r on all 7 linear layers. */
function loraSizes(layers: number, hidden: number, kv: number, mlp: number, r: number): number[] {
  const lin: [number, number][] = [
    [hidden, hidden],
    [hidden, kv],
    [hidden, kv],
    [hidden, hidden],
    [hidden, mlp],
    [hidden, mlp],
    [mlp, hidden],
  ];
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
  const free = (ps: Tensor[]) => {
    for (const p of ps) {
      p.grad?.dispose();
      p.dispose();
    }
  };
  /** Records one run and prints its dispatch count (the multi-tensor kernels' figure of merit: each costs 5.5-7.5 µs on an H100, docs/platform.md). */
  const reportDispatches = (what: string, run: () => void) => {
    const before = engine().dev.dispatchCount;
    run();
    console.log(
      `optim: ${what} ${label}: ${engine().dev.dispatchCount - before} dispatches per step for ${sizes.length} tensors`,
    );
  };
  registerBench({
    family: 'optim',
    name: `AdamW step ${label} (${sizes.length} tensors, ${(total / 1e6).toFixed(2)}M params)`,
    bytes: 28 * total, // read p, g, m, v; write p, m, v
    gpuOnly,
    async setup() {
      const ps = make();
      const opt = new AdamW(ps, { lr: 1e-4 });
      reportDispatches('AdamW step', () => opt.step());
      return {
        run: () => opt.step(),
        cleanup: () => {
          opt.dispose();
          free(ps);
        },
      };
    },
  });
  registerBench({
    family: 'optim',
    name: `clipGradNorm ${label} (${sizes.length} tensors)`,
    bytes: 12 * total, // read g (norm), read + write g (scale)
    gpuOnly,
    async setup() {
      const ps = make();
      const run = () => clipGradNorm(ps, 1e9).dispose();
      reportDispatches('clipGradNorm', run);
      return { run, cleanup: () => free(ps) };
    },
  });
  registerBench({
    family: 'optim',
    name: `clip fused into AdamW step ${label} (gradNormCoef + step({gradScale}), ${sizes.length} tensors)`,
    bytes: 32 * total, // read g (norm); read p, g, m, v; write p, m, v
    gpuOnly,
    async setup() {
      const ps = make();
      const opt = new AdamW(ps, { lr: 1e-4 });
      const run = () => {
        const { norm, coef } = gradNormCoef(ps, 1e9);
        opt.step(undefined, { gradScale: coef });
        norm.dispose();
        coef.dispose();
      };
      reportDispatches('clip + AdamW step (fused)', run);
      return {
        run,
        cleanup: () => {
          opt.dispose();
          free(ps);
        },
      };
    },
  });
}
