// The subgroup-matrix attention (src/kernels/attention-sgmatrix.ts) in a model workload: the coverage
// workload (variants-workload.ts) has head dim 16, which those kernels do not take, so this file runs
// small models with head dims 64 and 128 in fp16-mixed through the emulated matrix core (GEMMs and
// attention), making the choices a device with the native core makes: a training step (forward and
// both backward kernels), a validation forward, and batched generation (prefill over the cache with
// left padding, then decoding). It requires that (a) every compiled pipeline other than the emulated
// twins is a registered variant, (b) each emulated subgroup-matrix kernel's native twin is registered
// (attention and GEMM), and (c) loss and gradients agree with the SIMT attention's.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { noGrad } from '../../src/engine/autograd.js';
import { withPrecisionAsync } from '../../src/engine/precision.js';
import type { Rng } from '../../src/engine/random.js';
import { engine } from '../../src/engine/tensor.js';
import { forceEmulatedAttentionCore } from '../../src/kernels/attention.js';
import { type SgAttentionSpec, sgAttention, sgAttentionSpec } from '../../src/kernels/attention-sgmatrix.js';
import { forceEmulatedMatrixCore } from '../../src/kernels/gemm.js';
import '../../src/kernels/index.js';
import { AdamW } from '../../src/kernels/optim.js';
import { kernelVariants } from '../../src/kernels/variants.js';
import type { LlamaConfig } from '../../src/llama/config.js';
import { generateBatch } from '../../src/llama/generate.js';
import { initModel } from '../../src/llama/init.js';
import { LlamaModel } from '../../src/llama/model.js';
import type { Batch } from '../../src/pipeline/data/index.js';
import { wholeRowsBatch } from '../../src/pipeline/data/loader.js';
import { discardStep, recordStep } from '../../src/pipeline/train/step.js';
import { trainStep } from '../../src/pipeline/train/trainer.js';
import { requireFeature, testRng, useEngine } from '../helpers/index.js';
import { unregisteredNativeTwins } from './variants-workload.js';

useEngine();

const TOKENIZER = join(process.cwd(), 'models/tiny-fin');
const SHAPE = 'm16n8k16';
const LOSS_SCALE = 1024;
/**
 * Tokens per training row. The chooser takes the tiled forward (the subgroup-matrix one) when a kv
 * head has more than 64 query rows (group × T): 2 query heads per kv head × 40 = 80. Not a multiple
 * of the emulated tiles (16 query rows, 16 or 32 keys): ragged last blocks.
 */
const T = 40;
/** f16 unit roundoff. */
const U = 2 ** -11;
/**
 * (c) Normwise relative difference allowed between the gradients of the two attentions. Both run
 * fp16-mixed with the same GEMMs; the subgroup-matrix kernels round P (forward), dO, P and dS
 * (backward) to f16 where the SIMT ones keep f32, each an error of at most u = 2⁻¹¹ relative, with
 * f32 accumulation (error ~K·2⁻²⁴, far below). The perturbed values then flip the f16 roundings of
 * the GEMM operands downstream (fp16-mixed rounds every GEMM input), at most one ulp each: ≤ u
 * relative per operand, two operands per GEMM. A gradient is at most a few such steps from an
 * attention rounding: dQ, dK, dV ≤ 3u; the weight gradient (x·dQ, both operands perturbed) ≤ 3u + 2u;
 * with the forward's u on x, 6u. Allowed: 8u. The loss: cross-entropy is 2-Lipschitz in the max norm
 * of the logits z, whose relative perturbation is bounded the same way, so |ΔL| ≤ 2 · 8u · max|z|.
 * A wrong kernel (mask, scale, block edge) changes q/k/v gradients by O(1).
 */
const GRAD_RTOL = 8 * U;
/** Run every head dim on software adapters too (128 adds ~40 s of CPU there, compiling its kernels). */
const FULL = process.env.FINLLM_TEST_TIER === 'gpu';

interface SgmCase {
  what: string;
  Dh: number;
  overrides: Partial<LlamaConfig>;
}

const CASES: SgmCase[] = [
  {
    what: 'head dim 64: hidden 128, 2 query heads over 1 kv head, 1 layer',
    Dh: 64,
    overrides: {
      hiddenSize: 128,
      intermediateSize: 256,
      numHiddenLayers: 1,
      numAttentionHeads: 2,
      numKeyValueHeads: 1,
    },
  },
  {
    what: 'head dim 128: hidden 256, 2 query heads over 1 kv head, 1 layer',
    Dh: 128,
    overrides: {
      hiddenSize: 256,
      intermediateSize: 256,
      numHiddenLayers: 1,
      numAttentionHeads: 2,
      numKeyValueHeads: 1,
    },
  },
];

function randomBatch(rng: Rng, vocab: number, B: number, len: number): Batch {
  return wholeRowsBatch(
    Int32Array.from({ length: B * len }, () => rng.int(vocab)),
    B,
    len,
  );
}

/** The loss and every parameter's gradient (unscaled) of one recorded step; nothing is applied. */
async function lossAndGrads(model: LlamaModel, batch: Batch): Promise<{ loss: number; grads: Float32Array[] }> {
  const rec = recordStep(model, [batch], {
    stepIndex: 0,
    seed: 0,
    maxGradNorm: null,
    lossScale: LOSS_SCALE,
    gradientCheckpointing: 'none',
  });
  const loss = await rec.weightedLosses[0]!.item();
  for (const w of rec.weightedLosses) w.dispose();
  rec.clip.norm.dispose();
  const grads: Float32Array[] = [];
  for (const p of rec.params) grads.push((await p.grad!.toFloat32()).map((g) => g / LOSS_SCALE));
  discardStep(rec);
  return { loss, grads };
}

/** The specs of the emulated subgroup-matrix attention kernels compiled so far. */
function emulatedAttentionSpecs(): SgAttentionSpec[] {
  const prefix = `${sgAttention.family}:`;
  return engine()
    .dev.pipelineKeys()
    .filter((k) => k.startsWith(prefix))
    .map((k) => JSON.parse(k.slice(prefix.length)) as SgAttentionSpec)
    .filter((s) => s.mode === 'emulated');
}

/** The native twins of the emulated attention kernels compiled so far that no registered variant has. */
function unregisteredAttentionTwins(): string[] {
  const registered = new Set(kernelVariants().map((v) => v.key));
  return emulatedAttentionSpecs()
    .map((s) => sgAttention.key(sgAttentionSpec(s.pass, 'native', s.shape, s.Dh, s.qType, s.kvType)))
    .filter((k) => !registered.has(k))
    .sort();
}

/** Compiled pipelines that no registered variant has, other than the emulated twins (checked by (b)). */
function unregisteredOtherThanTwins(): string[] {
  const registered = new Set(kernelVariants().map((v) => v.key));
  return engine()
    .dev.pipelineKeys()
    .filter((k) => !registered.has(k) && !k.includes('"mode":"emulated"'))
    .sort();
}

const norm = (a: Float32Array): number => Math.sqrt(a.reduce((s, x) => s + x * x, 0));
const diffNorm = (a: Float32Array, b: Float32Array): number =>
  Math.sqrt(a.reduce((s, x, i) => s + (x - b[i]!) ** 2, 0));

describe('subgroup-matrix attention in training and generation (emulated core, native choices)', () => {
  it.for(CASES)('$what', { timeout: 600_000 }, async (c, ctx) => {
    requireFeature(ctx, 'shader-f16');
    if (c.Dh !== 64 && !FULL && engine().dev.info.cpuKernels)
      ctx.skip(
        `head dim ${c.Dh}: its kernels add ~40 s of compilation on a software adapter (FINLLM_TEST_TIER=gpu runs it)`,
      );
    const rng = testRng(`sgm attention workload, head dim ${c.Dh}`);
    const dir = mkdtempSync(join(tmpdir(), 'finllm-sgm-attn-'));
    try {
      await initModel(dir, { preset: 'tiny', tokenizerDir: TOKENIZER, seed: 1, overrides: c.overrides });
      const model = await LlamaModel.load(dir, {});
      expect(model.config.headDim).toBe(c.Dh);
      const named = [...model.enableFullTraining().entries()];
      const params = named.map(([, p]) => p);
      const opt = new AdamW(params, { lr: 1e-3, noWeightDecay: params.filter((p) => p.shape.length === 1) });
      const vocab = model.config.vocabSize;
      const batch = randomBatch(rng, vocab, 2, T);
      forceEmulatedMatrixCore(SHAPE);
      try {
        await withPrecisionAsync('fp16-mixed', async () => {
          // The same step with the SIMT attention (the emulated GEMMs either way), then the subgroup-matrix one.
          const simt = await lossAndGrads(model, batch);
          expect(emulatedAttentionSpecs().filter((s) => s.Dh === c.Dh)).toEqual([]);
          forceEmulatedAttentionCore(SHAPE);
          const sgm = await lossAndGrads(model, batch);
          const passes = new Set(
            emulatedAttentionSpecs()
              .filter((s) => s.Dh === c.Dh)
              .map((s) => s.pass),
          );
          expect([...passes].sort(), 'the step ran the forward and both backward kernels').toEqual([
            'dkv',
            'dq',
            'fwd',
          ]);
          // (c) The largest logit, for the loss bound (SIMT attention: the model's own logits, fp16-mixed).
          forceEmulatedAttentionCore(null);
          const logits = noGrad(() => model.logits(batch));
          const zMax = (await logits.toFloat32()).reduce((m, x) => Math.max(m, Math.abs(x)), 0);
          logits.dispose();
          forceEmulatedAttentionCore(SHAPE);
          const lossTol = 2 * GRAD_RTOL * zMax;
          const dLoss = Math.abs(sgm.loss - simt.loss);
          console.log(
            `[sgm attention] Dh ${c.Dh}: loss ${sgm.loss} vs SIMT ${simt.loss}: |Δ| ${dLoss.toExponential(2)} (bound ${lossTol.toExponential(2)}, max |z| ${zMax.toFixed(3)})`,
          );
          expect(dLoss, '(c) loss, subgroup-matrix vs SIMT attention').toBeLessThanOrEqual(lossTol);
          const bad: string[] = [];
          for (const [i, [name]] of named.entries()) {
            const g = simt.grads[i]!;
            expect(norm(g), `${name}: a gradient to compare`).toBeGreaterThan(0);
            const rel = diffNorm(sgm.grads[i]!, g) / norm(g);
            console.log(`  ${name}: ‖g‖ ${norm(g).toExponential(2)}, ‖Δg‖/‖g‖ ${rel.toExponential(2)}`);
            if (!(rel <= GRAD_RTOL)) bad.push(`${name}: ${rel.toExponential(2)} > ${GRAD_RTOL.toExponential(2)}`);
          }
          expect(bad, '(c) gradients, subgroup-matrix vs SIMT attention').toEqual([]);
          // A step that updates the weights, a validation forward, generation.
          await trainStep(model, opt, [batch], {
            lr: 1e-3,
            stepIndex: 0,
            seed: 0,
            maxGradNorm: 1,
            lossScale: LOSS_SCALE,
          });
          model.training = false;
          const val = noGrad(() => model.loss(randomBatch(rng, vocab, 2, T)));
          expect(Number.isFinite(await val.item())).toBe(true);
          val.dispose();
          // Prefill over the cache (rows left-padded to a common start), then decoding.
          const prompt = (n: number) => Array.from({ length: n }, () => 3 + rng.int(vocab - 3));
          await generateBatch(model, [prompt(T - 5), prompt(T + 2)], { maxNewTokens: 3 });
          console.log(
            `[sgm attention] Dh ${c.Dh}: emulated kernels run: ${emulatedAttentionSpecs()
              .filter((s) => s.Dh === c.Dh)
              .map((s) => `${s.pass} q ${s.qType} kv ${s.kvType}`)
              .join(', ')}`,
          );
        });
      } finally {
        forceEmulatedAttentionCore(null);
        forceEmulatedMatrixCore(null);
        opt.dispose();
        model.dispose();
      }
      expect(unregisteredOtherThanTwins(), '(a) compiled pipelines that are not registered variants').toEqual([]);
      expect(unregisteredAttentionTwins(), '(b) native twins of the emulated attention kernels').toEqual([]);
      expect(unregisteredNativeTwins(), '(b) native twins of the emulated GEMMs').toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
