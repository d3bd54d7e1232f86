// transformers/PEFT parity on the gqa-f32 fixture with the GPU-shaped kernels forced
// (FINLLM_FORCE_GPU_SHAPES=1): on a software adapter the engine otherwise picks the CPU-shaped ones
// (GEMM register tiles, runtime loop trip counts; device.ts `cpuKernels`), which parity-gqa.test.ts
// runs, so on a CPU machine this file is what runs the code a GPU runs. Each test file has its own
// engine (vitest forks), created after this module sets the variable.
import { describe, expect, it } from 'vitest';
import { engine, Tensor } from '../../src/engine/tensor.js';
import { gemmPlan } from '../../src/kernels/gemm.js';
import { parityTests } from './parity.js';

process.env.FINLLM_FORCE_GPU_SHAPES = '1';

describe('FINLLM_FORCE_GPU_SHAPES=1', () => {
  it('turns the CPU-shaped kernels off: GEMMs take the GPU-shaped tiles', () => {
    expect(engine().dev.info.cpuKernels).toBe(false);
    const x = Tensor.empty([64, 128]);
    const w = Tensor.empty([352, 128]);
    expect(gemmPlan({ a: { t: x }, b: { t: w, trans: true } }).choice.tile).toMatch(/^t/);
    x.dispose();
    w.dispose();
  });
});

parityTests('gqa-f32');
