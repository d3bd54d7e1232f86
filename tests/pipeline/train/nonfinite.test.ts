// A training step whose loss is not finite is refused before it is applied: the parameters, the
// optimizer's moments and step count stay as they were, and the error names the step and the data
// rows (the trainer stops on it; dynamic loss scaling would skip it). The model is the tiny one with
// a '#'-triggered overflow (see tests/cli/reliability.test.ts): every weight finite, only batches
// holding '#' produce Inf logits (poisonedModel).
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { NonFiniteError } from '../../../src/errors.js';
import { AdamW } from '../../../src/kernels/optim.js';
import { LlamaModel } from '../../../src/llama/model.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import type { Batch } from '../../../src/pipeline/data/index.js';
import { nonFiniteStep } from '../../../src/pipeline/train/checks.js';
import { trainStep } from '../../../src/pipeline/train/trainer.js';
import { poisonedModel, removeTempDirs, tempDir } from '../../cli/helpers.js';
import { useEngine } from '../../helpers/index.js';
import { oneTextBatch } from './helpers.js';

useEngine();
afterAll(removeTempDirs);

function batchOf(tokenizer: LlamaTokenizer, text: string, row: number): Batch {
  return oneTextBatch(tokenizer.encode(text), [{ file: 'train.jsonl', row }]);
}

describe('a non-finite step is never applied', () => {
  it('nonFiniteStep names what is not finite', () => {
    expect(nonFiniteStep(2.5, 0.7)).toBeNull();
    expect(nonFiniteStep(NaN, 0.7)).toBe('the loss is NaN');
    expect(nonFiniteStep(Infinity, NaN)).toBe('the loss is Infinity');
    expect(nonFiniteStep(2.5, Infinity)).toBe('the loss is 2.5000 but the gradient norm is Infinity');
  });

  it('trainStep throws NonFiniteError naming step and rows; parameters and optimizer state are unchanged', async () => {
    const dir = await poisonedModel(join(tempDir(), 'model'));
    const tokenizer = await LlamaTokenizer.load(dir);
    const model = await LlamaModel.load(dir);
    model.initLora({ r: 2, loraAlpha: 4, targetModules: ['q_proj', 'v_proj'], loraDropout: 0 }, 1);
    const params = model.loraParameters();
    const opt = new AdamW(params, { lr: 1e-2 });
    try {
      const initial = await Promise.all(params.map((p) => p.toFloat32()));
      const good = await trainStep(model, opt, [batchOf(tokenizer, 'Revenue rose nine percent in the quarter.', 1)], {
        lr: 1e-2,
        stepIndex: 0,
        seed: 1,
        maxGradNorm: null,
      });
      expect(Number.isFinite(good.loss)).toBe(true);
      expect(Number.isFinite(good.gradNorm!)).toBe(true);
      const before = await Promise.all(params.map((p) => p.toFloat32()));
      // A finite step does move the parameters (so "unchanged" below is not vacuous).
      expect(before.some((b, i) => b.some((v, j) => v !== initial[i]![j]))).toBe(true);
      const state = await opt.exportState();
      const bad = batchOf(tokenizer, 'The board approved a dividend of # cents.', 7);
      const err = await trainStep(model, opt, [bad], { lr: 1e-2, stepIndex: 1, seed: 1, maxGradNorm: 1 }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(NonFiniteError);
      expect((err as Error).message).toMatch(/^step 2: the loss is (NaN|Infinity) \(examples: train\.jsonl row 7\)$/);
      const after = await Promise.all(params.map((p) => p.toFloat32()));
      after.forEach((a, i) => {
        expect(Array.from(a), `parameter ${i}`).toEqual(Array.from(before[i]!));
      });
      const state2 = await opt.exportState();
      expect(state2.step).toBe(state.step);
      state2.moments.forEach((m, i) => {
        expect(Array.from(m.expAvg)).toEqual(Array.from(state.moments[i]!.expAvg));
        expect(Array.from(m.expAvgSq)).toEqual(Array.from(state.moments[i]!.expAvgSq));
      });
      // The gradients of the refused step are cleared: the next good step is as if it never happened.
      for (const p of params) if (p.grad) expect((await p.grad.toFloat32()).every((g) => g === 0)).toBe(true);
    } finally {
      opt.dispose();
      model.dispose();
    }
  });
});
