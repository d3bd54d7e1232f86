// One optimizer step's GPU work (src/pipeline/train/step.ts) on the bundled tiny model with LoRA:
// recordStep tells its observer where it is, op by op in the backward (the memory estimate's labels
// rest on it), and leaves every trainable gradient, the weighted losses and the clip tensors;
// discardStep applies nothing; and applyUpdate's two ways of scaling the gradients (the clip
// coefficient on the GPU, or the same coefficient read back and passed as a number, as loss scaling
// does) update bit for bit alike.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { engine } from '../../../src/engine/tensor.js';
import { AdamW } from '../../../src/kernels/optim.js';
import { LlamaModel } from '../../../src/llama/model.js';
import type { Batch } from '../../../src/pipeline/data/index.js';
import { wholeRowsBatch } from '../../../src/pipeline/data/loader.js';
import { applyUpdate, discardStep, recordStep } from '../../../src/pipeline/train/step.js';
import { testRng, useEngine } from '../../helpers/index.js';
import { ROOT } from './helpers.js';

useEngine();

const MODEL = join(ROOT, 'models/tiny-fin');

/** The tiny model with fresh LoRA leaves (seed 7) on q, v and down, and an AdamW over them. */
async function loraModel(): Promise<{ model: LlamaModel; optimizer: AdamW }> {
  const model = await LlamaModel.load(MODEL);
  model.initLora({ r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, 7);
  return { model, optimizer: new AdamW(model.loraParameters(), { lr: 1e-2, weightDecay: 0.01 }) };
}

/** `n` micro-batches of B × T random tokens, every position but each row's last labelled. */
function randomBatches(label: string, vocab: number, n: number, B = 2, T = 13): Batch[] {
  const rng = testRng(label);
  return Array.from({ length: n }, () => {
    return wholeRowsBatch(
      Int32Array.from({ length: B * T }, () => rng.int(vocab)),
      B,
      T,
    );
  });
}

const valuesOf = (model: LlamaModel) => Promise.all(model.loraParameters().map((p) => p.toFloat32()));

function expectSameBits(actual: Float32Array[], expected: Float32Array[]): void {
  expect(actual).toHaveLength(expected.length);
  for (const [i, v] of actual.entries())
    expect(Buffer.from(v.buffer).equals(Buffer.from(expected[i]!.buffer)), `parameter ${i}`).toBe(true);
}

describe('recordStep, applyUpdate, discardStep', () => {
  it("the observer hears each micro-batch's forward, then its backward (its saved tensors live) op by op, then the gradient norm; discardStep applies nothing", async () => {
    const { model, optimizer } = await loraModel();
    try {
      const batches = randomBatches('recordStep observer', model.config.vocabSize, 2);
      const before = await valuesOf(model);
      const pool = engine().pool;
      const events: string[] = [];
      const live: Record<string, number> = {};
      const note = (e: string) => {
        events.push(e);
        live[e] = pool.liveBytes;
      };
      const step = recordStep(
        model,
        batches,
        { stepIndex: 3, seed: 11, maxGradNorm: 1 },
        {
          forward: (m) => note(`forward ${m}`),
          backward: (m) => note(`backward ${m}`),
          backwardOp: (op, m) => events.push(`${op} ${m}`),
          gradNorm: () => note('gradNorm'),
        },
      );
      // Each micro-batch's backward runs its op rules: the token weighting's, the loss head's, ...
      const ops = (m: number) => {
        const from = events.indexOf(`backward ${m}`);
        return events.slice(from + 1, events.indexOf(m === 0 ? 'forward 1' : 'gradNorm', from));
      };
      for (const m of [0, 1]) {
        expect(ops(m).slice(0, 2)).toEqual([`scale ${m}`, `linearCrossEntropy ${m}`]);
        expect(ops(m).every((e) => e.endsWith(` ${m}`))).toBe(true);
      }
      const parts = events.filter((e) => /^(forward|backward) \d$|^gradNorm$/.test(e));
      expect(parts).toEqual(['forward 0', 'backward 0', 'forward 1', 'backward 1', 'gradNorm']);
      expect(events.length).toBeGreaterThan(parts.length + 2 * 10);
      // What the forward keeps for its backward is alive when the backward hook runs.
      expect(live['backward 0']!).toBeGreaterThan(live['forward 0']!);
      expect(live['backward 1']!).toBeGreaterThan(live['forward 1']!);
      expect(step.params).toEqual(model.loraParameters());
      for (const p of step.params) expect(p.grad, 'every LoRA leaf has a gradient').toBeTruthy();
      expect(step.weightedLosses).toHaveLength(2);
      let loss = 0;
      for (const w of step.weightedLosses) {
        loss += await w.item();
        w.dispose();
      }
      // Random tokens on a random-init model: near ln(vocab) per token.
      expect(Math.abs(loss - Math.log(model.config.vocabSize))).toBeLessThan(1);
      expect(await step.clip.norm.item()).toBeGreaterThan(0);
      step.clip.norm.dispose();
      discardStep(step);
      for (const p of step.params) expect(p.grad ?? null).toBeNull();
      expect(optimizer.steps).toBe(0);
      const after = await valuesOf(model);
      expectSameBits(after, before);
    } finally {
      optimizer.dispose?.();
      model.dispose();
    }
  });

  it("applyUpdate: 'clip' (the coefficient on the GPU) and that coefficient read back as a number update bit for bit alike", async () => {
    const [a, b] = [await loraModel(), await loraModel()];
    try {
      const batches = randomBatches('applyUpdate gradScale', a.model.config.vocabSize, 1);
      const initial = await valuesOf(a.model);
      // A small max norm, so that the coefficient clips (< 1) and the scaling is seen in the update.
      const o = { stepIndex: 0, seed: 5, maxGradNorm: 1e-3 };
      const coefs: number[] = [];
      for (const [{ model, optimizer }, gradScale] of [
        [a, 'clip'],
        [b, 'read back'],
      ] as const) {
        const step = recordStep(model, batches, o);
        for (const w of step.weightedLosses) w.dispose();
        step.clip.norm.dispose();
        const coef = await step.clip.coef.item();
        coefs.push(coef);
        applyUpdate(optimizer, step, 1e-2, gradScale === 'clip' ? 'clip' : coef);
        for (const p of step.params) expect(p.grad ?? null).toBeNull();
        expect(optimizer.steps).toBe(1);
      }
      expect(coefs[1]).toBe(coefs[0]);
      expect(coefs[0]).toBeLessThan(1);
      const [va, vb] = [await valuesOf(a.model), await valuesOf(b.model)];
      expect(va.some((v, i) => v.some((x, j) => x !== initial[i]![j]))).toBe(true);
      expectSameBits(vb, va);
    } finally {
      for (const { model, optimizer } of [a, b]) {
        optimizer.dispose?.();
        model.dispose();
      }
    }
  });
});
