// Full training (training.method full: every weight, embeddings, norms and LM head included) against
// an independent float64 implementation: reference/llama-grad.ts computes the loss and the
// gradient of every weight by hand-derived backpropagation (itself checked by float64 central
// differences below), reference/optim.ts takes AdamW steps as torch.optim.AdamW documents them.
// We take the same steps through trainStep on the GPU and compare the loss before each step and
// every weight after the last one.
//
// The fixtures' PyTorch side covers LoRA only (golden.json); the script that would add a PyTorch
// golden trajectory for full training is tests/fixtures/reference/make_full_ft_reference.py (it
// needs torch, which this project's machines cannot install). The float64 reference stands in for it.
//
// Fixtures: gqa-f32 (untied LM head, GQA) and mqa-bf16-tied-llama3rope (tied embeddings: one matrix
// read by the embedding gather and the LM head, the two gradients summed; MQA; llama3 RoPE; bf16
// weights loaded as f32 master weights).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { refLogits, refLoss } from '../../../reference/llama.js';
import { type RefParams, refLossAndGrads } from '../../../reference/llama-grad.js';
import { type AdamWRefState, adamwRefInit, adamwRefStep } from '../../../reference/optim.js';
import { Checkpoint } from '../../../src/io/safetensors.js';
import { AdamW } from '../../../src/kernels/optim.js';
import { type CheckpointMode, LlamaModel } from '../../../src/llama/model.js';
import { trainStep } from '../../../src/pipeline/train/trainer.js';
import { expectClose, testRng, useEngine } from '../../helpers/index.js';
import { oneTextBatch } from './helpers.js';

useEngine();

const FIX = join(process.cwd(), 'tests/fixtures/reference');
const golden = JSON.parse(readFileSync(join(FIX, 'golden.json'), 'utf8')) as {
  models: Record<string, { token_ids: number[][] }>;
};

/** The checkpoint's weights in float64, by HF name (tied: no lm_head.weight, as the model names them). */
async function refParams(dir: string, names: Iterable<string>): Promise<RefParams> {
  const ck = await Checkpoint.open(dir);
  const out: RefParams = new Map();
  for (const n of names) out.set(n, Float64Array.from(await ck.readF32(n)));
  await ck.close();
  return out;
}

const HYPER = { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };
const STEPS = 5;

describe.each(['gqa-f32', 'mqa-bf16-tied-llama3rope'])('full training vs float64 reference: %s', (name) => {
  const dir = join(FIX, name, 'model');
  const texts = golden.models[name]!.token_ids;

  it('the reference gradient agrees with float64 central differences of an independent forward', async () => {
    const model = await LlamaModel.load(dir);
    const cfg = model.config;
    const names = [...model.namedWeights().keys()];
    model.dispose();
    const params = await refParams(dir, names);
    const ids = texts[0]!.slice(0, 12);
    const { loss, grads } = refLossAndGrads(cfg, params, ids);
    // refLogits/refLoss (reference/llama.ts) is a separate forward implementation.
    const lossOf = (p: RefParams) => {
      const W = { get: (n: string) => p.get(n)! };
      return refLoss(refLogits(cfg, W, ids), ids, cfg.vocabSize);
    };
    expect(Math.abs(lossOf(params) - loss)).toBeLessThan(1e-12);
    const rng = testRng(`${name} reference FD`);
    for (const n of names) {
      const p = params.get(n)!;
      const g = grads.get(n)!;
      // The rows of the tokens in `ids` carry the embedding gradient: sample there and anywhere.
      const picks = n.includes('embed')
        ? [ids[3]! * cfg.hiddenSize + rng.int(cfg.hiddenSize), rng.int(p.length)]
        : [rng.int(p.length), rng.int(p.length)];
      for (const i of picks) {
        const h = 1e-5;
        const keep = p[i]!;
        p[i] = keep + h;
        const up = lossOf(params);
        p[i] = keep - h;
        const down = lossOf(params);
        p[i] = keep;
        const fd = (up - down) / (2 * h);
        // f64 central differences at h = 1e-5: truncation ~h²·f''' ≈ 1e-10, rounding ~1e-16/h ≈ 1e-11.
        expect(Math.abs(fd - g[i]!), `${n}[${i}]: analytic ${g[i]} vs FD ${fd}`).toBeLessThan(
          1e-8 + 1e-6 * Math.abs(fd),
        );
      }
    }
  });

  it(`${STEPS} AdamW steps on every weight: losses and all weights match within 1e-4`, async () => {
    const model = await LlamaModel.load(dir); // bf16 checkpoints are widened to f32 master weights
    const named = model.enableFullTraining();
    expect(named.has('lm_head.weight')).toBe(!model.config.tieWordEmbeddings);
    const opt = new AdamW([...named.values()], {
      lr: HYPER.lr,
      betas: [HYPER.beta1, HYPER.beta2],
      eps: HYPER.eps,
      weightDecay: HYPER.weightDecay,
    });
    const params = await refParams(dir, named.keys());
    const states = new Map<string, AdamWRefState>([...params].map(([n, p]) => [n, adamwRefInit(p)]));
    for (let s = 0; s < STEPS; s++) {
      const ids = texts[s]!;
      const r = await trainStep(model, opt, [oneTextBatch(ids)], {
        lr: HYPER.lr,
        stepIndex: s,
        seed: 0,
        maxGradNorm: null,
      });
      const cur: RefParams = new Map([...states].map(([n, st]) => [n, st.p]));
      const ref = refLossAndGrads(model.config, cur, ids);
      // f32 forward of ~60 tokens over a 600–800 word vocabulary: ~1e-6 relative.
      expect(Math.abs(r.loss - ref.loss), `loss before step ${s + 1}: ${r.loss} vs reference ${ref.loss}`).toBeLessThan(
        1e-4,
      );
      for (const [n, st] of states) adamwRefStep(st, ref.grads.get(n)!, HYPER);
    }
    // Adam normalises each step to ~lr per element whatever the gradient's size; the f32 gradient's
    // rounding (≲1e-6 relative) moves an update by ≲ lr·1e-6/|g|·|g| plus lr·δ/eps for gradients near
    // zero (δ ~1e-10 ≪ eps = 1e-8): far inside 1e-4 after 5 steps of 2e-3.
    let worst = 0;
    for (const [n, t] of named) {
      const got = await t.toFloat32();
      const want = states.get(n)!.p;
      expectClose(got, want, { atol: 1e-4 }, `${name} ${n} after ${STEPS} steps`);
      for (let i = 0; i < got.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
      // The weights did move (a step that changed nothing would also "match" a tiny tolerance).
      const start = params.get(n)!;
      let moved = 0;
      for (let i = 0; i < got.length; i++) moved = Math.max(moved, Math.abs(got[i]! - start[i]!));
      expect(moved, `${n} moved`).toBeGreaterThan(HYPER.lr);
    }
    console.log(`${name}: largest weight difference after ${STEPS} steps ${worst.toExponential(2)}`);
    opt.dispose();
    model.dispose();
  });

  it('gradient checkpointing (selective, full) gives the same step as keeping activations', async () => {
    const run = async (ckpt: CheckpointMode) => {
      const model = await LlamaModel.load(dir);
      const named = model.enableFullTraining();
      const opt = new AdamW([...named.values()], { lr: HYPER.lr, weightDecay: 0 });
      const r = await trainStep(model, opt, [oneTextBatch(texts[1]!)], {
        lr: HYPER.lr,
        stepIndex: 0,
        seed: 0,
        maxGradNorm: 1.0,
        gradientCheckpointing: ckpt,
      });
      const w = await Promise.all([...named.values()].map((t) => t.toFloat32()));
      opt.dispose();
      model.dispose();
      return { r, w };
    };
    const plain = await run('none');
    for (const mode of ['selective', 'full'] as const) {
      const recomputed = await run(mode);
      // The same kernels on the same inputs in the same order: identical bits.
      expect(recomputed.r.loss, mode).toBe(plain.r.loss);
      expect(recomputed.r.gradNorm, mode).toBe(plain.r.gradNorm);
      plain.w.forEach((w, i) => {
        expect(Buffer.from(recomputed.w[i]!.buffer).equals(Buffer.from(w.buffer)), `${mode}: weight ${i}`).toBe(true);
      });
    }
  });
});
