// variants.test.ts's coverage check with FINLLM_FORCE_GPU_SHAPES=1: on a software adapter the engine
// otherwise chooses the CPU-shaped kernels, so this file is what checks that the kernels a GPU
// compiles (GPU-shaped GEMM tiles, unrolled attention, the other split choices) are registered
// variants. Each test file has its own engine, created after this module sets the variable.
import { describe, expect, it } from 'vitest';
import { engine } from '../../src/engine/tensor.js';
import '../../src/kernels/index.js';
import { requireFeature, useEngine } from '../helpers/index.js';
import { runCase, unregisteredPipelines, workloadCases } from './variants-workload.js';

process.env.FINLLM_FORCE_GPU_SHAPES = '1';
useEngine();

describe('every compiled pipeline is a registered variant (GPU-shaped kernels forced)', () => {
  it('runs with the CPU-shaped kernels off', () => {
    expect(engine().dev.info.cpuKernels).toBe(false);
  });
  it.for(workloadCases())('$what', async (c, ctx) => {
    if (c.precision === 'fp16-mixed') requireFeature(ctx, 'shader-f16');
    await runCase(c);
    expect(unregisteredPipelines()).toEqual([]);
  });
});
