// The memory estimate (src/pipeline/train/memory.ts) against the engine pool's measured peak of real training
// steps on small random-init models, LoRA and full training, and the checkpointing modes' order.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { backward, zeroGrad } from '../../../src/engine/autograd.js';
import {
  computePrecision,
  type Precision,
  setComputePrecision,
  withPrecision,
  withPrecisionAsync,
} from '../../../src/engine/precision.js';
import { Rng } from '../../../src/engine/random.js';
import { BufferPool, engine, Tensor, tidy } from '../../../src/engine/tensor.js';
import { cast, flashAttention, rope, ropeTables, scale, sumToSuffix } from '../../../src/kernels/index.js';
import { AdamW } from '../../../src/kernels/optim.js';
import type { LlamaConfig } from '../../../src/llama/config.js';
import { savedInputDtype } from '../../../src/llama/decoder-layer.js';
import { initModel } from '../../../src/llama/init.js';
import { type CheckpointMode, LlamaModel, shiftLabels } from '../../../src/llama/model.js';
import { LINEAR_MODULES, type LinearModule } from '../../../src/llama/weights.js';
import type { Batch } from '../../../src/pipeline/data/index.js';
import { wholeRowsBatch } from '../../../src/pipeline/data/loader.js';
import { estimateTrainingMemory } from '../../../src/pipeline/train/memory.js';
import { trainStep } from '../../../src/pipeline/train/trainer.js';
import { requireFeature, testRng, useEngine } from '../../helpers/index.js';

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
  /** The engine precision the steps run in (default fp32). */
  precision?: Precision;
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
    return wholeRowsBatch(
      Int32Array.from({ length: B * T }, () => rng.int(model.config.vocabSize)),
      B,
      T,
    );
  };
  const batches = Array.from({ length: setup.micro ?? 1 }, makeBatch);
  const out = new Map<CheckpointMode, Measured>();
  const precision = setup.precision ?? 'fp32';
  const previous = computePrecision();
  setComputePrecision(precision);
  try {
    for (const mode of modes) {
      const step = (i: number) =>
        trainStep(model, opt, batches, {
          lr: 1e-3,
          stepIndex: i,
          seed: 0,
          maxGradNorm: 1,
          gradientCheckpointing: mode,
        });
      await step(0);
      await dev.sync();
      pool.resetPeak();
      await step(1);
      await dev.sync();
      const estimate = estimateTrainingMemory({
        config: model.config,
        batchSize: B,
        seqLen: T,
        method: setup.method ?? 'lora',
        quantize: setup.quantize,
        storage: 'f32',
        lora: full ? null : { r: setup.r, targetModules: setup.targets },
        checkpointing: mode,
        maxBindingBytes: dev.limits.maxStorageBufferBindingSize,
        accumulating: (setup.micro ?? 1) > 1,
        precision,
      });
      out.set(mode, { measured: pool.peakBytes - before, estimate: estimate.total, peakAt: estimate.peakAt });
    }
  } finally {
    setComputePrecision(previous);
    opt.dispose();
    model.dispose();
  }
  return out;
}

function expectWithin10(label: string, r: Measured): void {
  console.log(
    `${label}: estimate ${r.estimate} B (peak during ${r.peakAt}), measured pool peak ${r.measured} B (ratio ${(r.estimate / r.measured).toFixed(3)})`,
  );
  expect(Math.abs(r.estimate - r.measured), label).toBeLessThanOrEqual(0.1 * r.measured);
}

describe('memory model vs the measured pool peak', () => {
  it('QLoRA on every linear layer, vocabulary-heavy (loss head peak): each mode within 10%, none > selective > full', async () => {
    const setup: Setup = {
      overrides: {
        hiddenSize: 64,
        intermediateSize: 160,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 2,
        headDim: 16,
      },
      quantize: 'nf4',
      r: 8,
      targets: LINEAR_MODULES,
      B: 2,
      T: 64,
    };
    const r = await measure(setup, ['none', 'selective', 'full']);
    for (const [mode, v] of r) expectWithin10(`nf4 all-linear ${mode}`, v);
    const peak = (m: CheckpointMode) => r.get(m)!.measured;
    expect(peak('none')).toBeGreaterThan(peak('selective'));
    expect(peak('selective')).toBeGreaterThan(peak('full'));
  });

  it('dense f32 weights, LoRA on o_proj and down_proj only, MLP-heavy (backward peak)', async () => {
    const setup: Setup = {
      overrides: {
        hiddenSize: 96,
        intermediateSize: 352,
        numHiddenLayers: 3,
        numAttentionHeads: 6,
        numKeyValueHeads: 2,
        headDim: 16,
      },
      quantize: 'none',
      r: 4,
      targets: ['o_proj', 'down_proj'],
      B: 3,
      T: 40,
    };
    expectWithin10('dense o/down selective', (await measure(setup, ['selective'])).get('selective')!);
  });

  it('gradient accumulation (two micro-batches): the LoRA gradients of the first stay through the second', async () => {
    const setup: Setup = {
      overrides: {
        hiddenSize: 128,
        intermediateSize: 352,
        numHiddenLayers: 3,
        numAttentionHeads: 8,
        numKeyValueHeads: 2,
        headDim: 16,
        vocabSize: 300,
      },
      quantize: 'nf4',
      r: 32,
      targets: LINEAR_MODULES,
      B: 2,
      T: 32,
      micro: 2,
    };
    expectWithin10('nf4 r32 grad_accum 2 none', (await measure(setup, ['none'])).get('none')!);
  });

  it('QLoRA rank 16 on q_proj and v_proj, full checkpointing (re-run peak)', async () => {
    const setup: Setup = {
      overrides: {
        hiddenSize: 128,
        intermediateSize: 704,
        numHiddenLayers: 2,
        numAttentionHeads: 8,
        numKeyValueHeads: 2,
        headDim: 16,
      },
      quantize: 'nf4',
      r: 16,
      targets: ['q_proj', 'v_proj'],
      B: 2,
      T: 48,
    };
    expectWithin10('nf4 q/v full', (await measure(setup, ['full'])).get('full')!);
  });
});

// Full training: every weight's gradient is made (dW, then a copy into .grad) as backward reaches
// it, so the peak moves with the shapes: the loss head's backward when the vocabulary dominates,
// a layer's or the embedding's backward when the weights and their gradients do.
describe('memory model vs the measured pool peak, full training', () => {
  const fullSetup = (s: Omit<Setup, 'method' | 'quantize' | 'r' | 'targets'>): Setup => ({
    ...s,
    method: 'full',
    quantize: 'none',
    r: 0,
    targets: [],
  });

  it('untied embeddings, vocabulary-heavy: each mode within 10%, none > selective > full', async () => {
    const setup = fullSetup({
      overrides: {
        hiddenSize: 64,
        intermediateSize: 160,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 2,
        headDim: 16,
      },
      B: 2,
      T: 64,
    });
    const r = await measure(setup, ['none', 'selective', 'full']);
    for (const [mode, v] of r) expectWithin10(`full untied ${mode}`, v);
    const peak = (m: CheckpointMode) => r.get(m)!.measured;
    expect(peak('none')).toBeGreaterThan(peak('selective'));
    expect(peak('selective')).toBeGreaterThan(peak('full'));
  });

  it('tied embeddings, gradient accumulation (two micro-batches: every gradient exists through the second), no and full checkpointing', async () => {
    const setup = fullSetup({
      overrides: {
        hiddenSize: 128,
        intermediateSize: 352,
        numHiddenLayers: 3,
        numAttentionHeads: 8,
        numKeyValueHeads: 2,
        headDim: 16,
        vocabSize: 300,
        tieWordEmbeddings: true,
      },
      B: 2,
      T: 32,
      micro: 2,
    });
    const r = await measure(setup, ['none', 'full']);
    for (const [mode, v] of r) expectWithin10(`full tied grad_accum 2 ${mode}`, v);
  });

  it('weights dominate (one short row, large untied vocabulary): within 10% in each mode, and checkpointing saves nothing', async () => {
    const setup = fullSetup({
      overrides: {
        hiddenSize: 128,
        intermediateSize: 160,
        numHiddenLayers: 1,
        numAttentionHeads: 8,
        numKeyValueHeads: 2,
        headDim: 16,
        vocabSize: 2000,
      },
      B: 1,
      T: 8,
    });
    const r = await measure(setup, ['none', 'selective', 'full']);
    for (const [mode, v] of r) expectWithin10(`full weight-heavy ${mode}`, v);
    // The peak is where the gradients are nearly all made, not where activations are kept (so the
    // out-of-memory advice must not offer checkpointing here).
    const peak = (m: CheckpointMode) => r.get(m)!.measured;
    expect(peak('full')).toBeGreaterThan(0.99 * peak('none'));
  });
});

// fp16-mixed keeps the GEMM inputs (norm outputs, attention output, SwiGLU output), LoRA's u and
// attention's q, k, v in f16: the same configurations' estimates against measured peaks, and the
// savings pinned in exact pool bytes. lavapipe has shader-f16; an adapter without it skips these,
// as the fp16-mixed kernel tests do.

describe('memory model vs the measured pool peak, fp16-mixed', () => {
  it('QLoRA on every linear layer, vocabulary-heavy: each mode within 10%, none > selective > full, each below fp32', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const setup: Setup = {
      overrides: {
        hiddenSize: 64,
        intermediateSize: 160,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 2,
        headDim: 16,
      },
      quantize: 'nf4',
      r: 8,
      targets: LINEAR_MODULES,
      B: 2,
      T: 64,
    };
    const modes: CheckpointMode[] = ['none', 'selective', 'full'];
    const r = await measure({ ...setup, precision: 'fp16-mixed' }, modes);
    const r32 = await measure(setup, modes);
    for (const [mode, v] of r) {
      expectWithin10(`fp16-mixed nf4 all-linear ${mode}`, v);
      expect(v.measured, mode).toBeLessThan(r32.get(mode)!.measured);
    }
    const peak = (m: CheckpointMode) => r.get(m)!.measured;
    expect(peak('none')).toBeGreaterThan(peak('selective'));
    expect(peak('selective')).toBeGreaterThan(peak('full'));
  });

  it('dense f32 weights, LoRA on o_proj and down_proj only, MLP-heavy (backward peak), selective', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const setup: Setup = {
      overrides: {
        hiddenSize: 96,
        intermediateSize: 352,
        numHiddenLayers: 3,
        numAttentionHeads: 6,
        numKeyValueHeads: 2,
        headDim: 16,
      },
      quantize: 'none',
      r: 4,
      targets: ['o_proj', 'down_proj'],
      B: 3,
      T: 40,
      precision: 'fp16-mixed',
    };
    expectWithin10('fp16-mixed dense o/down selective', (await measure(setup, ['selective'])).get('selective')!);
  });

  it('full training, untied embeddings, no and full checkpointing', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const setup: Setup = {
      overrides: {
        hiddenSize: 64,
        intermediateSize: 160,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 2,
        headDim: 16,
      },
      method: 'full',
      quantize: 'none',
      r: 0,
      targets: [],
      B: 2,
      T: 64,
      precision: 'fp16-mixed',
    };
    const r = await measure(setup, ['none', 'full']);
    for (const [mode, v] of r) expectWithin10(`fp16-mixed full untied ${mode}`, v);
  });
});

describe('fp16-mixed savings in pool bytes', () => {
  /** Bytes held after `build`'s scope once its output is freed: what its backward rules saved. */
  async function heldAfter(build: () => Tensor): Promise<{ held: number; finish: () => void }> {
    const { dev, pool } = engine();
    await dev.sync();
    const base = pool.liveBytes;
    const out = tidy(build);
    const root = tidy(() => sumToSuffix(out, [1]));
    out.dispose();
    await dev.sync();
    return {
      held: pool.liveBytes - base - BufferPool.sizeClass(root.byteSize),
      finish: () => tidy(() => backward(root)),
    };
  }

  it('attention keeps q, k, v and its output in f16: half of what it keeps in fp32 (lse stays f32)', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const rng = testRng('fp16 attention saving');
    // Power-of-two byte sizes: exact pool size classes.
    const [B, T, Hq, Hkv, Dh] = [2, 32, 4, 2, 16];
    const tables = ropeTables({ headDim: Dh, theta: 10000, scaling: null, maxPositions: T });
    const positions = Tensor.from(
      Int32Array.from({ length: B * T }, (_, i) => i % T),
      [B * T],
    ).keep();
    const leaf = (h: number) => {
      const t = Tensor.from(rng.normalArray(B * T * h * Dh), [B, T, h, Dh]).keep();
      t.requiresGrad = true;
      return t;
    };
    const [xq, xk, xv] = [leaf(Hq), leaf(Hkv), leaf(Hkv)];
    const held: Record<string, number> = {};
    try {
      // The first run also makes what kernels create once (kept dummy bindings): measure the second.
      for (const precision of ['fp32', 'fp32', 'fp16-mixed'] as const) {
        const r = await withPrecisionAsync(precision, () =>
          heldAfter(() => {
            // As the decoder layer feeds it (v scaled so that, as a projection output, it is not a leaf).
            const dtype = savedInputDtype();
            const q = rope(xq, positions, tables, { dtype });
            const k = rope(xk, positions, tables, { dtype });
            const v = scale(xv, 1);
            return flashAttention(q, k, dtype === 'f16' ? cast(v, 'f16') : v, { causal: true });
          }),
        );
        held[precision] = r.held;
        withPrecision(precision, r.finish);
        zeroGrad([xq, xk, xv]);
      }
    } finally {
      for (const t of [xq, xk, xv, positions, tables.cos, tables.sin]) t.dispose();
    }
    const [nq, nkv, lse] = [B * T * Hq * Dh, B * T * Hkv * Dh, B * Hq * T];
    const qkvo = (bytesPer: number) =>
      2 * BufferPool.sizeClass(nq * bytesPer) + 2 * BufferPool.sizeClass(nkv * bytesPer);
    expect(held['fp32']).toBe(qkvo(4) + BufferPool.sizeClass(lse * 4));
    expect(held['fp16-mixed']).toBe(qkvo(2) + BufferPool.sizeClass(lse * 4));
    expect(qkvo(2) * 2).toBe(qkvo(4));
  });

  it('a QLoRA forward keeps, per layer, exactly the f32 − f16 bytes the memory model counts (GEMM inputs, LoRA u, attention q/k/v and output, SwiGLU gate/up)', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const dir = mkdtempSync(join(tmpdir(), 'finllm-mem16-'));
    const overrides: Partial<LlamaConfig> = {
      hiddenSize: 64,
      intermediateSize: 160,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      headDim: 16,
    };
    await initModel(dir, { preset: 'tiny', tokenizerDir: TOKENIZER, seed: 1, overrides });
    const model = await LlamaModel.load(dir, { quantize: 'nf4' });
    rmSync(dir, { recursive: true, force: true });
    const [B, T, r] = [2, 64, 8];
    try {
      model.initLora({ r, loraAlpha: 2 * r, targetModules: [...LINEAR_MODULES] }, 3);
      model.training = true;
      const rng = new Rng(7);
      const ids = Int32Array.from({ length: B * T }, () => rng.int(model.config.vocabSize));
      const batch = { inputIds: ids, labels: shiftLabels(ids, B, T), batchSize: B, seqLen: T };
      const held: Record<string, number> = {};
      const perLayer: Record<string, number> = {};
      for (const precision of ['fp32', 'fp32', 'fp16-mixed'] as const) {
        const r0 = await withPrecisionAsync(precision, () => heldAfter(() => model.loss(batch)));
        held[precision] = r0.held;
        withPrecision(precision, r0.finish);
        zeroGrad(model.loraParameters());
        const e = estimateTrainingMemory({
          config: model.config,
          batchSize: B,
          seqLen: T,
          quantize: 'nf4',
          storage: 'f32',
          lora: { r, targetModules: LINEAR_MODULES },
          checkpointing: 'none',
          precision,
        });
        perLayer[precision] = e.activationsPerTokenPerLayer * B * T;
      }
      const saving = held['fp32']! - held['fp16-mixed']!;
      console.log(
        `[memory] QLoRA forward keeps ${held['fp32']} B in fp32, ${held['fp16-mixed']} B in fp16-mixed; per layer (model) ${perLayer['fp32']} / ${perLayer['fp16-mixed']}`,
      );
      expect(saving).toBe(model.config.numHiddenLayers * (perLayer['fp32']! - perLayer['fp16-mixed']!));
      expect(saving).toBeGreaterThan(0.25 * held['fp32']!);
    } finally {
      model.dispose();
    }
  });
});
