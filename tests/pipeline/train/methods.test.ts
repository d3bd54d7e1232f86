// The training-method components (src/pipeline/train/methods.ts) on the bundled tiny model: what
// each makes trainable and hands to AdamW, that what one saves the other's restore reads back bit
// for bit into the live parameter tensors, and that buildTrainingModel + trainStep (the one-step
// entry point) computes the same step as a whole run does.

import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { engine, Tensor } from '../../../src/engine/tensor.js';
import { LlamaModel } from '../../../src/llama/model.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import { LINEAR_MODULES } from '../../../src/llama/weights.js';
import type { ResolvedConfig } from '../../../src/pipeline/config.js';
import { createDataLoader, prepareData } from '../../../src/pipeline/data/index.js';
import {
  attachSettings,
  buildTrainingModel,
  FullFineTuning,
  LoraAdapters,
  type TrainingModel,
  trainingMethod,
} from '../../../src/pipeline/train/methods.js';
import { runTraining, stepOptions, trainStep } from '../../../src/pipeline/train/trainer.js';
import { useEngine } from '../../helpers/index.js';
import { lossRecords, MODEL, sampleConfig, sampleRunSets, sampleSlice } from './helpers.js';

useEngine();

let dataDir = '';

beforeAll(() => {
  dataDir = sampleSlice(8, 2);
});

function config(extra: string[]): ResolvedConfig {
  return sampleConfig(
    sampleRunSets(mkdtempSync(join(tmpdir(), 'finllm-methods-')), dataDir, [
      `model.path=${MODEL}`,
      'training.precision=fp32',
      'training.max_steps=1',
      'training.schedule=constant',
      ...extra,
    ]),
  );
}

const LORA = ['training.method=lora', 'model.quantize=nf4'];
const FULL = ['training.method=full', 'model.quantize=none', 'training.weight_decay=0.1'];

/** The first step's micro-batches of a run of `cfg`, as its loader deals them. */
async function firstBatches(cfg: ResolvedConfig) {
  const tokenizer = await LlamaTokenizer.load(cfg.model.path);
  const data = await prepareData(cfg, tokenizer);
  const loader = createDataLoader(data.train, cfg, tokenizer, 'train');
  return Array.from({ length: cfg.training.grad_accum }, () => loader.next());
}

async function values(built: TrainingModel): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of built.model.namedTrainableParameters()) out.set(name, await t.toFloat32());
  return out;
}

async function withBuilt<T>(cfg: ResolvedConfig, f: (b: TrainingModel) => Promise<T>): Promise<T> {
  const built = await buildTrainingModel(cfg);
  try {
    return await f(built);
  } finally {
    built.model.dispose();
    built.optimizer.dispose?.();
  }
}

describe('training methods', () => {
  it('training.method picks the component: lora (also over an NF4 base) -> LoraAdapters, full -> FullFineTuning', () => {
    expect(trainingMethod(config(LORA))).toBe(LoraAdapters);
    expect(trainingMethod(config(['training.method=lora', 'model.quantize=none']))).toBe(LoraAdapters);
    expect(trainingMethod(config(FULL))).toBe(FullFineTuning);
  });

  it('LoRA over NF4: the base stays NF4 and frozen, AdamW holds exactly the LoRA leaves in PEFT order', async () => {
    await withBuilt(config(LORA), async ({ model, method, optimizer }) => {
      expect(method).toBe(LoraAdapters);
      const named = model.namedTrainableParameters();
      expect(named.size).toBe(model.config.numHiddenLayers * LINEAR_MODULES.length * 2);
      for (const name of named.keys())
        expect(name).toMatch(/^base_model\.model\.model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj\.lora_[AB]\.weight$/);
      expect(optimizer.params).toEqual([...named.values()]);
      for (const t of named.values()) expect(t.requiresGrad).toBe(true);
      for (const layer of model.weights.layers)
        for (const m of LINEAR_MODULES) expect(layer.linear[m] instanceof Tensor, m).toBe(false); // NF4
      for (const t of [model.weights.embedTokens, model.weights.norm, model.weights.lmHead])
        expect(t.requiresGrad).toBe(false);
    });
  });

  it("attach with seed null (the memory estimate): value-less LoRA leaves of the seeded ones' names and shapes, nothing written, AdamW over them", async () => {
    const cfg = config(LORA);
    const settings = attachSettings(cfg);
    expect(settings).toMatchObject({
      seed: cfg.training.seed,
      lr: cfg.training.lr,
      weightDecay: cfg.training.weight_decay,
    });
    expect(settings.lora).toMatchObject({ r: cfg.lora.r, loraAlpha: cfg.lora.alpha, loraDropout: cfg.lora.dropout });
    await withBuilt(cfg, async ({ model: seeded }) => {
      const model = new LlamaModel(seeded.config, seeded.weights);
      // Writes and dispatches of `f`, without the tests' poisoning (it writes every buffer handed out).
      const work = (f: () => void) => {
        const { dev, pool } = engine();
        const [writes, dispatches, poison] = [dev.stats.writes, dev.stats.dispatches, pool.poisonOnAcquire];
        pool.poisonOnAcquire = false;
        try {
          f();
        } finally {
          pool.poisonOnAcquire = poison;
        }
        return dev.stats.writes - writes + dev.stats.dispatches - dispatches;
      };
      expect(work(() => model.initLora(settings.lora!, settings.seed))).toBeGreaterThan(0);
      expect(work(() => model.initLora(settings.lora!, null))).toBe(0);
      model.disposeLora();
      const optimizer = LoraAdapters.attach(model, { ...settings, seed: null });
      try {
        const shapes = (m: LlamaModel) => [...m.namedTrainableParameters()].map(([name, t]) => [name, t.shape]);
        expect(shapes(model)).toEqual(shapes(seeded));
        expect(optimizer.params).toEqual(model.loraParameters());
        for (const t of optimizer.params) expect(t.requiresGrad).toBe(true);
      } finally {
        optimizer.dispose?.();
        model.disposeLora(); // the base weights are the seeded model's
      }
    });
  });

  it('full fine-tuning: every weight is an f32 leaf under its HF name, AdamW holds them all', async () => {
    await withBuilt(config(FULL), async ({ model, method, optimizer }) => {
      expect(method).toBe(FullFineTuning);
      const named = model.namedTrainableParameters();
      expect([...named.keys()]).toEqual([...model.namedWeights().keys()]);
      expect(named.has('model.embed_tokens.weight')).toBe(true);
      expect(named.has('model.layers.0.self_attn.q_proj.weight')).toBe(true);
      expect(optimizer.params).toEqual([...named.values()]);
      for (const t of named.values()) {
        expect(t.requiresGrad).toBe(true);
        expect(t.dtype).toBe('f32');
      }
    });
  });

  for (const [label, sets, other, refusal] of [
    ['LoRA', LORA, FULL, /model: no model\.safetensors or model\.safetensors\.index\.json in this folder/],
    ['full', FULL, LORA, /checkpoint has no LoRA adapter \(was the run made with training\.method full\?\)/],
  ] as const) {
    it(`${label}: what save writes, restore reads back bit for bit into the live parameters; another method's checkpoint is refused`, async () => {
      const cfg = config(sets);
      const batches = await firstBatches(cfg);
      const dir = mkdtempSync(join(tmpdir(), 'finllm-methods-ckpt-'));
      // A trained model (one step moves every trainable value away from its initialisation) is saved...
      const saved = await withBuilt(cfg, async (built) => {
        await trainStep(built.model, built.optimizer, batches, stepOptions(cfg, 0.01, 0));
        await built.method.save(built.model, cfg, join(dir, built.method.outputDir));
        return values(built);
      });
      // ...and read into a freshly built one, whose tensors differ until then.
      await withBuilt(cfg, async (built) => {
        const before = await values(built);
        const tensors = [...built.model.namedTrainableParameters().values()];
        expect([...before].some(([name, v]) => !v.every((x, i) => x === saved.get(name)![i]))).toBe(true);
        await built.method.restore(built.model, dir);
        expect([...built.model.namedTrainableParameters().values()]).toEqual(tensors); // same objects: the optimizer's
        const after = await values(built);
        expect([...after.keys()]).toEqual([...saved.keys()]);
        for (const [name, v] of after)
          expect(Buffer.from(v.buffer).equals(Buffer.from(saved.get(name)!.buffer)), name).toBe(true);
      });
      await withBuilt(config(other), async (built) => {
        await expect(built.method.restore(built.model, dir)).rejects.toThrow(refusal);
      });
    });
  }

  for (const [label, sets] of [
    ['QLoRA', LORA],
    ['full', FULL],
  ] as const) {
    it(`${label}: buildTrainingModel + trainStep give the loss and gradient norm a run logs for its first step, bit for bit`, async () => {
      const cfg = config([...sets, 'training.grad_accum=2']);
      const run = await runTraining(cfg, { quiet: true });
      const first = lossRecords(cfg.output.dir).find((r) => r.step === 1)!;
      expect(run.losses[0]!.loss).toBe(first.loss);
      const batches = await firstBatches(cfg);
      const step = await withBuilt(cfg, (b) =>
        trainStep(b.model, b.optimizer, batches, stepOptions(cfg, cfg.training.lr, 0)),
      );
      expect(step.loss).toBe(first.loss);
      expect(step.gradNorm).toBe(first.grad_norm);
    });
  }
});
