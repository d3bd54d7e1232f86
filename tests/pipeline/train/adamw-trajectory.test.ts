// The trainer's optimizer step against PyTorch: golden.json holds 6 AdamW steps (lr 5e-3, betas
// .9/.999, eps 1e-8, weight decay 0.01, one text per step, no clipping) run by torch.optim.AdamW on
// a PEFT model from this adapter (tests/fixtures/reference/make_reference_fixtures.py). We take the
// same steps through trainStep and compare the loss before each step and every text's loss after.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AdamW } from '../../../src/kernels/optim.js';
import { LlamaModel } from '../../../src/llama/model.js';
import { readAdapter } from '../../../src/llama/peft.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import { trainStep } from '../../../src/pipeline/train/trainer.js';
import { expectClose, useEngine } from '../../helpers/index.js';
import { oneTextBatch } from './helpers.js';

useEngine();

const FIX = join(process.cwd(), 'tests/fixtures/reference');
const golden = JSON.parse(readFileSync(join(FIX, 'golden.json'), 'utf8')) as {
  texts: string[];
  models: Record<
    string,
    {
      adamw: {
        lr: number;
        betas: [number, number];
        eps: number;
        weight_decay: number;
        texts_per_step: number[];
        loss_before_step: number[];
        loss_after: number[];
      };
    }
  >;
};

describe.each(['gqa-f32', 'mqa-bf16-tied-llama3rope'])('AdamW trajectory vs PyTorch + PEFT: %s', (name) => {
  it('6 steps: losses before each step and per-text losses after match within 1e-4', async () => {
    const g = golden.models[name]!.adamw;
    const dir = join(FIX, name);
    const tok = await LlamaTokenizer.load(join(dir, 'model'));
    const model = await LlamaModel.load(join(dir, 'model'), { adapter: join(dir, 'adapter') });
    const opt = new AdamW(model.loraParameters(), {
      lr: g.lr,
      betas: g.betas,
      eps: g.eps,
      weightDecay: g.weight_decay,
    });
    const before: number[] = [];
    for (const [i, t] of g.texts_per_step.entries()) {
      const r = await trainStep(model, opt, [oneTextBatch(tok.encode(golden.texts[t]!))], {
        lr: g.lr,
        stepIndex: i,
        seed: 0,
        maxGradNorm: null,
      });
      before.push(r.loss);
    }
    model.training = false;
    const after: number[] = [];
    for (const text of golden.texts) {
      const b = oneTextBatch(tok.encode(text));
      const per = await model.tokenLosses(b);
      after.push(per.reduce((s, v) => s + v, 0) / b.numTargetTokens);
    }
    for (let i = 0; i < before.length; i++)
      expect(
        Math.abs(before[i]! - g.loss_before_step[i]!),
        `loss before step ${i + 1}: ${before[i]} vs torch ${g.loss_before_step[i]}`,
      ).toBeLessThan(1e-4);
    for (let i = 0; i < after.length; i++)
      expect(
        Math.abs(after[i]! - g.loss_after[i]!),
        `text ${i} after 6 steps: ${after[i]} vs torch ${g.loss_after[i]}`,
      ).toBeLessThan(1e-4);
    // The trained weights themselves, against PEFT's saved adapter-after-adamw. Adam divides by
    // sqrt(v): a parameter whose gradient is near zero can move by up to lr on f32 rounding
    // differences, hence a tolerance relative to each tensor's largest value.
    const want = await readAdapter(join(dir, 'adapter-after-adamw'));
    const got = await model.adapter();
    for (const [k, p] of want.weights) {
      for (const f of ['A', 'B'] as const) {
        const maxAbs = p[f].reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        expectClose(got.weights.get(k)![f], p[f], { atol: 1e-4 * maxAbs }, `${k} ${f}`);
      }
    }
    opt.dispose();
    model.dispose();
  });
});
