// The memory model (src/llama/memory.ts) against the engine pool's measured peak of real training
// steps on small random-init models, LoRA and full training, and the checkpointing modes' order.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Rng } from '../../src/engine/random.js';
import { engine } from '../../src/engine/tensor.js';
import { AdamW } from '../../src/kernels/optim.js';
import type { LlamaConfig } from '../../src/llama/config.js';
import { initModel } from '../../src/llama/init.js';
import { estimateTrainingMemory } from '../../src/llama/memory.js';
import { LlamaModel, shiftLabels, type CheckpointMode } from '../../src/llama/model.js';
import { LINEAR_MODULES, type LinearModule } from '../../src/llama/weights.js';
import { trainStep } from '../../src/pipeline/train/trainer.js';
import type { Batch } from '../../src/pipeline/data/index.js';
import { useEngine } from '../helpers/index.js';

useEngine();

const TOKENIZER = join(process.cwd(), 'models/tiny-fin');
// Every configuration keeps the bundled model's head dim 16: one set of attention pipelines to
// compile (lavapipe compiles each head dim's kernels anew, slowly, on a cold cache).

interface Setup {
  overrides: Partial<LlamaConfig>;
  /** LoRA (default; r and targets) or every weight trained (f32, quantize none). */
  method?: 'lora' | 'full';
  quantize: 'nf4' | 'none';
  r: number;
  targets: readonly LinearModule[];
  B: number;
  T: number;
  /** Micro-batches per step (gradient accumulation); default 1. */
  micro?: number;
}

/** Measured pool peak of one training step per mode (after a warm-up step), and the estimates. */
interface Measured {
  measured: number;
  estimate: number;
  /** Where the memory model puts the peak. */
  peakAt: string;
}

async function measure(setup: Setup, modes: readonly CheckpointMode[]): Promise<Map<CheckpointMode, Measured>> {
  const dev = engine().dev;
  await dev.sync();
  const pool = engine().pool;
  const before = pool.liveBytes;
  const dir = mkdtempSync(join(tmpdir(), 'finllm-mem-'));
  await initModel(dir, { preset: 'tiny', tokenizerDir: TOKENIZER, seed: 1, overrides: setup.overrides });
  const model = await LlamaModel.load(dir, setup.quantize === 'nf4' ? { quantize: 'nf4' } : {});
  rmSync(dir, { recursive: true, force: true });
  const full = setup.method === 'full';
  let opt: AdamW;
  if (full) {
    // As the trainer sets it up: every weight, norms without weight decay.
    const params = [...model.enableFullTraining().values()];
    opt = new AdamW(params, { lr: 1e-3, noWeightDecay: params.filter((p) => p.shape.length === 1) });
  } else {
    model.initLora({ r: setup.r, loraAlpha: 2 * setup.r, loraDropout: 0.1, targetModules: [...setup.targets] }, 3);
    opt = new AdamW(model.loraParameters(), { lr: 1e-3 });
  }
  const { B, T } = setup;
  const rng = new Rng(5);
  const makeBatch = (): Batch => {
    const ids = Int32Array.from({ length: B * T }, () => rng.int(model.config.vocabSize));
    return {
      inputIds: ids, labels: shiftLabels(ids, B, T), positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T),
      segmentIds: new Int32Array(B * T).fill(1), attentionMask: new Uint8Array(B * T).fill(1), batchSize: B, seqLen: T, numTargetTokens: B * (T - 1), numExamples: B,
    };
  };
  const batches = Array.from({ length: setup.micro ?? 1 }, makeBatch);
  const out = new Map<CheckpointMode, Measured>();
  try {
    for (const mode of modes) {
      const step = (i: number) => trainStep(model, opt, batches, { lr: 1e-3, stepIndex: i, seed: 0, maxGradNorm: 1, gradientCheckpointing: mode });
      await step(0);
      await dev.sync();
      pool.resetPeak();
      await step(1);
      await dev.sync();
      const estimate = estimateTrainingMemory({
        config: model.config, batchSize: B, seqLen: T, method: setup.method ?? 'lora', quantize: setup.quantize, storage: 'f32',
        lora: full ? null : { r: setup.r, targetModules: setup.targets }, checkpointing: mode, maxBindingBytes: dev.limits.maxStorageBufferBindingSize,
        accumulating: (setup.micro ?? 1) > 1,
      });
      out.set(mode, { measured: pool.peakBytes - before, estimate: estimate.total, peakAt: estimate.peakAt });
    }
  } finally {
    opt.dispose();
    model.dispose();
  }
  return out;
}

function expectWithin10(label: string, r: Measured): void {
  console.log(`${label}: estimate ${r.estimate} B (peak during ${r.peakAt}), measured pool peak ${r.measured} B (ratio ${(r.estimate / r.measured).toFixed(3)})`);
  expect(Math.abs(r.estimate - r.measured), label).toBeLessThanOrEqual(0.1 * r.measured);
}

describe('memory model vs the measured pool peak', () => {
  it('QLoRA on every linear layer, vocabulary-heavy (loss head peak): each mode within 10%, none > selective > full', async () => {
    const setup: Setup = {
      overrides: { hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16 },
      quantize: 'nf4', r: 8, targets: LINEAR_MODULES, B: 2, T: 64,
    };
    const r = await measure(setup, ['none', 'selective', 'full']);
    for (const [mode, v] of r) expectWithin10(`nf4 all-linear ${mode}`, v);
    const peak = (m: CheckpointMode) => r.get(m)!.measured;
    expect(peak('none')).toBeGreaterThan(peak('selective'));
    expect(peak('selective')).toBeGreaterThan(peak('full'));
  });

  it('dense f32 weights, LoRA on o_proj and down_proj only, MLP-heavy (backward peak)', async () => {
    const setup: Setup = {
      overrides: { hiddenSize: 96, intermediateSize: 352, numHiddenLayers: 3, numAttentionHeads: 6, numKeyValueHeads: 2, headDim: 16 },
      quantize: 'none', r: 4, targets: ['o_proj', 'down_proj'], B: 3, T: 40,
    };
    expectWithin10('dense o/down selective', (await measure(setup, ['selective'])).get('selective')!);
  });

  it('gradient accumulation (two micro-batches): the LoRA gradients of the first stay through the second', async () => {
    const setup: Setup = {
      overrides: { hiddenSize: 128, intermediateSize: 352, numHiddenLayers: 3, numAttentionHeads: 8, numKeyValueHeads: 2, headDim: 16, vocabSize: 300 },
      quantize: 'nf4', r: 32, targets: LINEAR_MODULES, B: 2, T: 32, micro: 2,
    };
    expectWithin10('nf4 r32 grad_accum 2 none', (await measure(setup, ['none'])).get('none')!);
  });

  it('QLoRA rank 16 on q_proj and v_proj, full checkpointing (re-run peak)', async () => {
    const setup: Setup = {
      overrides: { hiddenSize: 128, intermediateSize: 704, numHiddenLayers: 2, numAttentionHeads: 8, numKeyValueHeads: 2, headDim: 16 },
      quantize: 'nf4', r: 16, targets: ['q_proj', 'v_proj'], B: 2, T: 48,
    };
    expectWithin10('nf4 q/v full', (await measure(setup, ['full'])).get('full')!);
  });
});

// Full training: every weight's gradient is made (dW, then a copy into .grad) as backward reaches
// it, so the peak moves with the shapes: the loss head's backward when the vocabulary dominates,
// a layer's or the embedding's backward when the weights and their gradients do.
describe('memory model vs the measured pool peak, full training', () => {
  const fullSetup = (s: Omit<Setup, 'method' | 'quantize' | 'r' | 'targets'>): Setup => ({ ...s, method: 'full', quantize: 'none', r: 0, targets: [] });

  it('untied embeddings, vocabulary-heavy: each mode within 10%, none > selective > full', async () => {
    const setup = fullSetup({ overrides: { hiddenSize: 64, intermediateSize: 160, numHiddenLayers: 2, numAttentionHeads: 4, numKeyValueHeads: 2, headDim: 16 }, B: 2, T: 64 });
    const r = await measure(setup, ['none', 'selective', 'full']);
    for (const [mode, v] of r) expectWithin10(`full untied ${mode}`, v);
    const peak = (m: CheckpointMode) => r.get(m)!.measured;
    expect(peak('none')).toBeGreaterThan(peak('selective'));
    expect(peak('selective')).toBeGreaterThan(peak('full'));
  });

  it('tied embeddings, gradient accumulation (two micro-batches: every gradient exists through the second), no and full checkpointing', async () => {
    const setup = fullSetup({
      overrides: { hiddenSize: 128, intermediateSize: 352, numHiddenLayers: 3, numAttentionHeads: 8, numKeyValueHeads: 2, headDim: 16, vocabSize: 300, tieWordEmbeddings: true },
      B: 2, T: 32, micro: 2,
    });
    const r = await measure(setup, ['none', 'full']);
    for (const [mode, v] of r) expectWithin10(`full tied grad_accum 2 ${mode}`, v);
  });

  it('weights dominate (one short row, large untied vocabulary): within 10% in each mode, and checkpointing saves nothing', async () => {
    const setup = fullSetup({ overrides: { hiddenSize: 128, intermediateSize: 160, numHiddenLayers: 1, numAttentionHeads: 8, numKeyValueHeads: 2, headDim: 16, vocabSize: 2000 }, B: 1, T: 8 });
    const r = await measure(setup, ['none', 'selective', 'full']);
    for (const [mode, v] of r) expectWithin10(`full weight-heavy ${mode}`, v);
    // The peak is where the gradients are nearly all made, not where activations are kept (so the
    // out-of-memory advice must not offer checkpointing here).
    const peak = (m: CheckpointMode) => r.get(m)!.measured;
    expect(peak('full')).toBeGreaterThan(0.99 * peak('none'));
  });
});
