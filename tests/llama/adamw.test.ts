// End to end against PyTorch: six AdamW steps on the PEFT adapter (one text per step, lr 5e-3,
// betas 0.9/0.999, eps 1e-8, weight decay 0.01) must follow transformers + PEFT's loss trajectory
// and end at the same per-text losses (golden.json "adamw").
//
// Tolerance 1e-4 like the other losses: Adam divides by sqrt(v), so parameters whose gradient is
// near zero can move by lr either way on f32 rounding differences; over six steps of lr 5e-3 the
// effect on the loss measured ~1e-6, well inside 1e-4.
import { describe, expect, it } from 'vitest';
import { backward, zeroGrad } from '../../src/engine/autograd.js';
import { tidy } from '../../src/engine/tensor.js';
import { AdamW } from '../../src/kernels/optim.js';
import { sequenceLosses } from '../../src/llama/evaluate.js';
import { LlamaModel, shiftLabels } from '../../src/llama/model.js';
import { expectClose, useEngine } from '../helpers/index.js';
import { join } from 'node:path';
import { readAdapter } from '../../src/llama/peft.js';
import { adapterDir, golden, maxAbs, modelDir, FIXTURES, MODEL_NAMES } from './helpers.js';

useEngine();

interface AdamwGolden {
  lr: number;
  betas: [number, number];
  eps: number;
  weight_decay: number;
  texts_per_step: number[];
  loss_before_step: number[];
  loss_after: number[];
}

describe('AdamW on the adapter vs PyTorch + PEFT', () => {
  for (const name of MODEL_NAMES) {
    it(`${name}: loss before each of 6 steps and per-text losses after, within 1e-4`, async () => {
      const g = (golden.models[name] as unknown as { adamw: AdamwGolden }).adamw;
      const model = await LlamaModel.load(modelDir(name), { adapter: adapterDir(name) });
      try {
        const params = model.loraParameters();
        const opt = new AdamW(params, { lr: g.lr, betas: g.betas, eps: g.eps, weightDecay: g.weight_decay });
        const before: number[] = [];
        for (const t of g.texts_per_step) {
          const ids = Int32Array.from(golden.models[name].token_ids[t]!);
          const loss = tidy(() => {
            const l = model.loss({ inputIds: ids, labels: shiftLabels(ids, 1, ids.length), batchSize: 1, seqLen: ids.length });
            backward(l);
            return l;
          });
          before.push(await loss.item());
          loss.dispose();
          opt.step(g.lr);
          zeroGrad(params);
        }
        expectClose(before, g.loss_before_step, { atol: 1e-4 }, 'loss before each step');
        const after = await sequenceLosses(model, golden.models[name].token_ids);
        const worst = Math.max(...after.map((e, i) => Math.abs(e.loss - g.loss_after[i]!)));
        console.log(`${name}: max |loss after 6 steps - PyTorch| = ${worst.toExponential(2)}`);
        expectClose(after.map((e) => e.loss), g.loss_after, { atol: 1e-4 }, 'per-text loss after 6 steps');
        expect(after[0]!.loss).toBeLessThan(golden.models[name].adapter_loss[0]! - 0.1); // it did train
        // The trained weights themselves, against PEFT's saved adapter-after-adamw.
        const want = await readAdapter(join(FIXTURES, name, 'adapter-after-adamw'));
        const got = await model.adapter();
        for (const [k, p] of want.weights) {
          for (const f of ['A', 'B'] as const) expectClose(got.weights.get(k)![f], p[f], { atol: 1e-4 * maxAbs(p[f]) }, `${k} ${f}`);
        }
      } finally {
        model.dispose();
      }
    });
  }
});
