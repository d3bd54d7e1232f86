// The parts of a training run that depend on training.method, chosen once when the run is built
// (trainingMethod); the loop in trainer.ts calls them and never asks which method it runs.
//
//   lora  LoraAdapters: fresh PEFT LoRA leaves over a frozen base (QLoRA when model.quantize is nf4);
//         AdamW over the A/B leaves; the run and each checkpoint save the PEFT adapter (adapter/);
//         output.export_merged folds it into the base (merged/).
//   full  FullFineTuning: every weight an f32 leaf (tied embeddings are one parameter); AdamW decays
//         matrices (embeddings, linear layers, LM head) and not RMSNorm weights, as the HF Trainer
//         does; the run and each checkpoint save the complete model as an HF folder (model/).
//
// buildTrainingModel is the whole build (model, method, optimizer); with trainStep (trainer.ts) it
// runs one training step of a config outside a run.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { engine } from '../../engine/tensor.js';
import { InputError } from '../../errors.js';
import { hubIdOfSnapshot } from '../../io/hub.js';
import { Checkpoint, readSafetensorsF32 } from '../../io/safetensors.js';
import { AdamW } from '../../kernels/optim.js';
import { LlamaModel, type NewLoraOptions } from '../../llama/model.js';
import { saveModel } from '../../llama/save.js';
import type { ResolvedConfig } from '../config.js';
import { refuseNonFinite } from './checkpoint.js';

/** What `attach` reads: the LoRA adapter's settings and AdamW's. */
export interface AttachSettings {
  /** The LoRA adapter (PEFT LoraConfig names); full training has none. */
  lora: NewLoraOptions | null;
  /**
   * The seed of the LoRA leaves' PEFT initialisation, or null: value-less leaves, nothing drawn or
   * uploaded, for counting a step on a MetaDevice (the memory estimate), not for training.
   */
  seed: number | null;
  /** AdamW's learning rate and decoupled weight decay (default AdamW's). */
  lr?: number;
  weightDecay?: number;
}

/** The settings `attach` takes from a config (lora.*, training.seed, training.lr, training.weight_decay). */
export function attachSettings(cfg: ResolvedConfig): AttachSettings {
  return {
    lora: {
      r: cfg.lora.r,
      loraAlpha: cfg.lora.alpha,
      useRslora: cfg.lora.rslora,
      targetModules: cfg.lora.target_modules,
      loraDropout: cfg.lora.dropout,
      baseModelNameOrPath: hubIdOfSnapshot(cfg.model.path) ?? cfg.model.path,
    },
    seed: cfg.training.seed,
    lr: cfg.training.lr,
    weightDecay: cfg.training.weight_decay,
  };
}

/** What a training method decides: what is trainable, and what a run and its checkpoints save. */
export interface TrainingMethod {
  /** The folder of the trained weights in the run folder and in each checkpoint. */
  readonly outputDir: 'adapter' | 'model';
  /** The files of outputDir that a finished run's and its last checkpoint's hold alike. */
  readonly outputFiles: readonly string[];
  /**
   * Makes the trainable parameters (LoRA leaves, or every weight) and the AdamW over them; a
   * config's settings are attachSettings(cfg).
   */
  attach(model: LlamaModel, settings: AttachSettings): AdamW;
  /** Writes the trained weights into `dir` (replace: an existing folder there is replaced). */
  save(model: LlamaModel, cfg: ResolvedConfig, dir: string, opts?: { replace?: boolean }): Promise<void>;
  /** Reads a checkpoint's trained weights into the model's parameter tensors, in place (the optimizer holds them). */
  restore(model: LlamaModel, checkpointDir: string): Promise<void>;
  /** output.export_merged: writes <runDir>/merged and returns it, or says why nothing is merged and returns null. */
  exportMerged(
    model: LlamaModel,
    cfg: ResolvedConfig,
    runDir: string,
    say: (message: string) => void,
  ): Promise<string | null>;
  /** The result's adapterDir / modelDir of a run in `runDir`. */
  outputs(runDir: string): { adapterDir: string | null; modelDir: string | null };
}

/** LoRA / QLoRA: adapters trained over a frozen base, saved as a PEFT adapter. */
export const LoraAdapters: TrainingMethod = {
  outputDir: 'adapter',
  outputFiles: ['adapter_model.safetensors', 'adapter_config.json'],
  attach(model, s) {
    if (!s.lora) throw new Error('LoRA training needs the adapter settings (AttachSettings.lora)');
    model.initLora(s.lora, s.seed);
    return new AdamW(model.loraParameters(), { lr: s.lr, weightDecay: s.weightDecay });
  },
  async save(model, _cfg, dir) {
    await model.saveAdapter(dir);
  },
  async restore(model, checkpointDir) {
    const adapterFile = join(checkpointDir, 'adapter', 'adapter_model.safetensors');
    if (!existsSync(adapterFile))
      throw new InputError('checkpoint has no LoRA adapter (was the run made with training.method full?)', {
        file: adapterFile,
      });
    const saved = await readSafetensorsF32(adapterFile);
    refuseNonFinite(saved, adapterFile);
    for (const [name, t] of model.namedTrainableParameters()) {
      const data = saved.get(name);
      if (!data || data.length !== t.numel)
        throw new InputError(`checkpoint adapter lacks '${name}' with ${t.numel} values (LoRA settings changed?)`, {
          file: adapterFile,
        });
      engine().dev.write(t.buffer, 0, data);
    }
  },
  async exportMerged(model, cfg, runDir) {
    const mergedDir = join(runDir, 'merged');
    const { exportMerged } = await import('../../llama/merge.js');
    await exportMerged(model, cfg.model.path, mergedDir, { replace: true });
    return mergedDir;
  },
  outputs: (runDir) => ({ adapterDir: join(runDir, 'adapter'), modelDir: null }),
};

/** Full fine-tuning (and pretraining from scratch): every weight trained, saved as a complete HF model. */
export const FullFineTuning: TrainingMethod = {
  outputDir: 'model',
  outputFiles: ['model.safetensors', 'config.json'],
  attach(model, s) {
    const params = [...model.enableFullTraining().values()];
    return new AdamW(params, {
      lr: s.lr,
      weightDecay: s.weightDecay,
      noWeightDecay: params.filter((p) => p.shape.length === 1),
    });
  },
  async save(model, cfg, dir, opts = {}) {
    await saveModel(model, cfg.model.path, dir, opts.replace ? { replace: true } : {});
  },
  async restore(model, checkpointDir) {
    const modelDir = join(checkpointDir, 'model');
    const named = model.namedTrainableParameters();
    const ckpt = await Checkpoint.open(modelDir);
    try {
      const loaded = new Map<string, Float32Array>();
      for (const [name, t] of named) {
        if (!ckpt.has(name))
          throw new InputError(`checkpoint model lacks '${name}' (was the run made with training.method lora?)`, {
            file: modelDir,
          });
        loaded.set(name, await ckpt.readF32(name, t.shape));
      }
      refuseNonFinite(loaded, modelDir);
      for (const [name, t] of named) engine().dev.write(t.buffer, 0, loaded.get(name)!);
    } finally {
      await ckpt.close();
    }
  },
  async exportMerged(_model, _cfg, runDir, say) {
    say(`output.export_merged: nothing to merge under full training; the complete model is ${join(runDir, 'model')}`);
    return null;
  },
  outputs: (runDir) => ({ adapterDir: null, modelDir: join(runDir, 'model') }),
};

/** The component of each training.method. */
export const TRAINING_METHODS: Readonly<Record<ResolvedConfig['training']['method'], TrainingMethod>> = {
  lora: LoraAdapters,
  full: FullFineTuning,
};

/** The method a config trains with (training.method). */
export function trainingMethod(cfg: ResolvedConfig): TrainingMethod {
  return TRAINING_METHODS[cfg.training.method];
}

export interface TrainingModel {
  model: LlamaModel;
  method: TrainingMethod;
  /** AdamW over the method's trainable parameters. */
  optimizer: AdamW;
}

/**
 * The model of a config ready to train: its base loaded (NF4 under model.quantize: nf4), the
 * method's trainable parameters and optimizer attached, gradient checkpointing set. Running out
 * of memory raises OutOfMemoryError; a run turns it into what to change (trainer.ts).
 */
export async function buildTrainingModel(cfg: ResolvedConfig): Promise<TrainingModel> {
  const model = await LlamaModel.load(cfg.model.path, {
    quantize: cfg.model.quantize === 'nf4' ? 'nf4' : undefined,
    storage: cfg.model.storage,
  });
  const method = trainingMethod(cfg);
  let optimizer: AdamW;
  try {
    optimizer = method.attach(model, attachSettings(cfg));
  } catch (err) {
    model.dispose();
    throw err;
  }
  model.gradientCheckpointing = cfg.training.grad_checkpointing;
  return { model, method, optimizer };
}
