// The workload of the variant-coverage tests (variants.test.ts, variants-gpu-shapes.test.ts): one
// training step of every method and weight format the trainer offers, a validation forward, and
// greedy, sampled and batched generation, on a small random-init model. Afterwards every pipeline
// the device compiled must be a registered variant of src/kernels/variants.ts: a spec a caller can
// produce but the variant table omits would be missed by check:kernels (and by anyone reading the
// table to learn what runs).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { noGrad } from '../../src/engine/autograd.js';
import { type Precision, withPrecisionAsync } from '../../src/engine/precision.js';
import { Rng } from '../../src/engine/random.js';
import { engine } from '../../src/engine/tensor.js';
import { specKey } from '../../src/kernels/common.js';
import { AdamW } from '../../src/kernels/optim.js';
import { kernelVariants } from '../../src/kernels/variants.js';
import { generate, generateBatch } from '../../src/llama/generate.js';
import { initModel } from '../../src/llama/init.js';
import { type CheckpointMode, LlamaModel } from '../../src/llama/model.js';
import type { LoadWeightsOptions } from '../../src/llama/weights.js';
import type { Batch } from '../../src/pipeline/data/index.js';
import { wholeRowsBatch } from '../../src/pipeline/data/loader.js';
import { trainStep } from '../../src/pipeline/train/trainer.js';

const TOKENIZER = join(process.cwd(), 'models/tiny-fin');

export interface WorkloadCase {
  what: string;
  method: 'lora' | 'full';
  load: Pick<LoadWeightsOptions, 'storage' | 'quantize' | 'doubleQuant'>;
  precision: Precision;
  checkpointing: CheckpointMode;
}

/** The methods, weight formats, precisions and checkpointing modes a training run can combine. */
export function workloadCases(): WorkloadCase[] {
  return [
    { what: 'LoRA, f32 weights', method: 'lora', load: {}, precision: 'fp32', checkpointing: 'none' },
    { what: 'LoRA, bf16 weights', method: 'lora', load: { storage: 'bf16' }, precision: 'fp32', checkpointing: 'full' },
    {
      what: 'QLoRA, double-quantized NF4',
      method: 'lora',
      load: { quantize: 'nf4', doubleQuant: true },
      precision: 'fp32',
      checkpointing: 'selective',
    },
    {
      what: 'QLoRA, NF4',
      method: 'lora',
      load: { quantize: 'nf4', doubleQuant: false },
      precision: 'fp32',
      checkpointing: 'none',
    },
    { what: 'full, f32', method: 'full', load: {}, precision: 'fp32', checkpointing: 'none' },
    // fp16-mixed (the tests skip these where the adapter lacks shader-f16)
    {
      what: 'LoRA, f16 weights, fp16-mixed',
      method: 'lora',
      load: { storage: 'f16' },
      precision: 'fp16-mixed',
      checkpointing: 'none',
    },
    {
      what: 'QLoRA, fp16-mixed',
      method: 'lora',
      load: { quantize: 'nf4', doubleQuant: true },
      precision: 'fp16-mixed',
      checkpointing: 'full',
    },
    { what: 'full, fp16-mixed', method: 'full', load: {}, precision: 'fp16-mixed', checkpointing: 'selective' },
  ];
}

function randomBatch(rng: Rng, vocab: number, B: number, T: number): Batch {
  return wholeRowsBatch(
    Int32Array.from({ length: B * T }, () => rng.int(vocab)),
    B,
    T,
  );
}

/** Runs one case: a training step (two micro-batches, clipping), a validation forward, and generation. */
export async function runCase(c: WorkloadCase): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), 'finllm-variants-'));
  try {
    await initModel(dir, { preset: 'tiny', tokenizerDir: TOKENIZER, seed: 1 });
    const model = await LlamaModel.load(dir, c.load);
    let opt: AdamW;
    if (c.method === 'full') {
      const params = [...model.enableFullTraining().values()];
      opt = new AdamW(params, { lr: 1e-3, noWeightDecay: params.filter((p) => p.shape.length === 1) });
    } else {
      model.initLora({ r: 4, loraAlpha: 8, loraDropout: 0.1, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, 3);
      opt = new AdamW(model.loraParameters(), { lr: 1e-3 });
    }
    const rng = new Rng(7);
    const vocab = model.config.vocabSize;
    try {
      await withPrecisionAsync(c.precision, async () => {
        await trainStep(model, opt, [randomBatch(rng, vocab, 2, 13), randomBatch(rng, vocab, 2, 13)], {
          lr: 1e-3,
          stepIndex: 0,
          seed: 0,
          maxGradNorm: 1,
          gradientCheckpointing: c.checkpointing,
          ...(c.precision === 'fp16-mixed' ? { lossScale: 1024 } : {}),
        });
        model.training = false;
        const val = noGrad(() => model.loss(randomBatch(rng, vocab, 1, 9)));
        await val.item();
        val.dispose();
        await generate(model, [1, 5, 9], { maxNewTokens: 3 });
        await generate(model, [1, 5, 9], {
          maxNewTokens: 3,
          greedy: false,
          temperature: 0.8,
          topK: 5,
          topP: 0.9,
          repetitionPenalty: 1.1,
          seed: 3,
        });
        await generateBatch(
          model,
          [
            [1, 5],
            [1, 7, 8, 9],
          ],
          { maxNewTokens: 3 },
        );
      });
    } finally {
      opt.dispose();
      model.dispose();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The keys of the pipelines compiled so far that no registered variant has. */
export function unregisteredPipelines(): string[] {
  const registered = new Set(kernelVariants().map((v) => v.key));
  return engine()
    .dev.pipelineKeys()
    .filter((k) => !registered.has(k))
    .sort();
}

/**
 * The native twins (with and without subgroup-size control) of the emulated subgroup-matrix GEMMs
 * compiled so far that no registered variant has: run with forceEmulatedMatrixCore, the workload
 * makes the tile and operand choices a device with the native core makes, so this checks the
 * native table against what callers launch on such a device.
 */
export function unregisteredNativeTwins(): string[] {
  const registered = new Set(kernelVariants().map((v) => v.key));
  const missing: string[] = [];
  for (const key of engine().dev.pipelineKeys()) {
    if (!key.startsWith('gemm:')) continue;
    const spec = JSON.parse(key.slice('gemm:'.length)) as { sg: { mode: string; sizeControl: boolean } | null };
    if (spec.sg?.mode !== 'emulated') continue;
    for (const sizeControl of [true, false]) {
      const twin = specKey('gemm', { ...spec, sg: { ...spec.sg, mode: 'native', sizeControl } });
      if (!registered.has(twin)) missing.push(twin);
    }
  }
  return missing.sort();
}
