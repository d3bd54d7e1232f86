// The training-step estimate as a counted run (src/pipeline/train/memory.ts): it leaves the GPU
// device and its pool untouched, its parts add up to the peak, and the persistent parts equal the
// pool bytes of the tensors a model of these shapes has, computed here from the HF tensor list.
// (Its agreement with measured peaks of real steps: tests/pipeline/train/memory-peak.test.ts.)
import { describe, expect, it } from 'vitest';
import { BufferPool, engine } from '../../../src/engine/tensor.js';
import { lossChunkRows } from '../../../src/kernels/index.js';
import { llamaPreset } from '../../../src/llama/config.js';
import { expectedTensors, LINEAR_MODULES, type LinearModule, linearShape } from '../../../src/llama/weights.js';
import { estimateTrainingMemory, type TrainingMemoryShape } from '../../../src/pipeline/train/memory.js';
import { useEngine } from '../../helpers/index.js';

useEngine();

// Not tile multiples anywhere; vocabulary small enough for one loss chunk per binding.
const config = llamaPreset('tiny', {
  hiddenSize: 72,
  intermediateSize: 200,
  numHiddenLayers: 3,
  numAttentionHeads: 6,
  numKeyValueHeads: 2,
  headDim: 12,
  vocabSize: 900,
});
const cls = (bytes: number) => BufferPool.sizeClass(Math.max(4, bytes));
const targets: LinearModule[] = ['q_proj', 'v_proj', 'down_proj'];
const shape = (over: Partial<TrainingMemoryShape> = {}): TrainingMemoryShape => ({
  config,
  batchSize: 3,
  seqLen: 41,
  quantize: 'none',
  storage: 'f32',
  lora: { r: 8, targetModules: targets },
  checkpointing: 'none',
  ...over,
});
const parts = (e: ReturnType<typeof estimateTrainingMemory>) =>
  e.weights + e.adapters + e.optimizer + e.ropeTables + e.activations + e.gradients + e.workspace;

describe('estimateTrainingMemory', () => {
  it('allocates nothing on the GPU device and records no work there; the engine is the GPU one again after', async () => {
    const real = engine();
    await real.dev.sync();
    const stats = { ...real.dev.stats };
    const [live, peak] = [real.pool.liveBytes, real.pool.peakBytes];
    for (const checkpointing of ['none', 'selective', 'full'] as const) {
      estimateTrainingMemory(shape({ checkpointing }));
      estimateTrainingMemory(shape({ checkpointing, method: 'full', lora: null, accumulating: true }));
    }
    expect(real.dev.stats).toEqual(stats);
    expect([real.pool.liveBytes, real.pool.peakBytes]).toEqual([live, peak]);
    expect(engine()).toBe(real);
  });

  it('LoRA on dense f32 weights: weights, adapters, AdamW and RoPE tables are the pool bytes of their tensors; the parts add up to the total', () => {
    const e = estimateTrainingMemory(shape());
    const weights = [...expectedTensors(config).values()].reduce(
      (a, s) => a + cls(4 * s.reduce((x, y) => x * y, 1)),
      0,
    );
    let adapters = 0;
    let numel = 0;
    for (let l = 0; l < config.numHiddenLayers; l++) {
      for (const mod of targets) {
        const [out, inF] = linearShape(config, mod);
        adapters += cls(4 * 8 * inF) + cls(4 * out * 8);
        numel += 8 * inF + out * 8;
      }
    }
    const positions = Math.max(config.maxPositionEmbeddings, 41);
    // The RoPE tables, and the attention kernel's one-element stand-ins for bindings it does not read,
    // made on first use and kept: they count with the weights.
    expect(e.weights - weights).toBeGreaterThanOrEqual(0);
    expect(e.weights - weights).toBeLessThanOrEqual(2 * 256);
    expect(e.adapters).toBe(adapters);
    expect(e.optimizer).toBe(cls(4 * 2 * numel)); // m and v in one chunk
    expect(e.ropeTables).toBe(2 * cls((4 * positions * config.headDim) / 2));
    expect(parts(e)).toBe(e.total);
    for (const k of ['activations', 'workspace'] as const) expect(e[k], k).toBeGreaterThan(0);
    expect(e.lossChunkRows).toBe(
      lossChunkRows(3 * 41, config.vocabSize, engine().dev.limits.maxStorageBufferBindingSize),
    );
  });

  it('full training: every weight trained, AdamW over all of them; accumulation keeps every gradient at the peak', () => {
    const e = estimateTrainingMemory(shape({ method: 'full', lora: null, accumulating: true }));
    const grads = [...expectedTensors(config).values()].reduce((a, s) => a + cls(4 * s.reduce((x, y) => x * y, 1)), 0);
    expect(e.adapters).toBe(0);
    expect(e.gradients).toBe(grads);
    expect(parts(e)).toBe(e.total);
    expect(() => estimateTrainingMemory(shape({ method: 'full', quantize: 'nf4' }))).toThrow(
      /full training keeps f32 master weights/,
    );
  });

  it('QLoRA: the NF4 codes and absmax (double-quantized: int8 absmax, per-256 scales, one offset) replace the dense decoder weights', () => {
    const dense = estimateTrainingMemory(shape());
    const nf4 = estimateTrainingMemory(shape({ quantize: 'nf4', doubleQuant: true }));
    let saved = 0;
    for (const mod of LINEAR_MODULES) {
      const n = linearShape(config, mod).reduce((a, b) => a * b, 1);
      const blocks = Math.ceil(n / 64);
      const packed =
        cls(4 * Math.ceil(n / 8)) + cls(4 * Math.ceil(blocks / 4)) + cls(4 * Math.ceil(blocks / 256)) + cls(4);
      saved += config.numHiddenLayers * (cls(4 * n) - packed);
    }
    expect(dense.weights - nf4.weights).toBe(saved);
    expect(nf4.adapters).toBe(dense.adapters);
  });
});
