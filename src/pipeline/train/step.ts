// One optimizer step's GPU work, recorded: each micro-batch's forward and the backward of its
// token-weighted loss, then the global gradient norm and clip coefficient (recordStep); after the
// loss and the norm are read back, the AdamW update and the zeroing of the gradients (applyUpdate),
// or only the zeroing (discardStep). Nothing here reads back, so it runs as it is on an engine over a
// MetaDevice: trainStep (trainer.ts) records a step with it and the memory estimate (memory.ts) counts
// the same step, its observer naming the part of the step each allocation belongs to.
import { backward, noGrad, observeBackward, releaseOnError, zeroGrad } from '../../engine/autograd.js';
import { Tensor, tidy } from '../../engine/tensor.js';
import { InputError } from '../../errors.js';
import { scale } from '../../kernels/elementwise.js';
import { type AdamW, type GradNormCoef, gradNormCoef } from '../../kernels/optim.js';
import type { CheckpointMode, LlamaModel } from '../../llama/model.js';
import type { Batch } from '../data/index.js';

export interface StepOptions {
  lr: number;
  /** 0-based optimizer step (feeds the dropout seed). */
  stepIndex: number;
  seed: number;
  /** Clip the global gradient norm to this (null: no clipping). */
  maxGradNorm: number | null;
  gradientCheckpointing?: CheckpointMode;
  /**
   * Dynamic loss scaling (fp16-mixed): the loss is multiplied by this before backward; a
   * non-finite step is skipped (returned with `skipped`) instead of stopping, and otherwise the
   * update uses grad / lossScale.
   */
  lossScale?: number;
}

/** Mixes (seed, step, micro-batch) into the LoRA dropout seed of that forward pass. */
export function dropoutSeed(seed: number, step: number, micro: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [step, micro]) {
    h = Math.imul(h ^ v, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h;
}

/** Told where recordStep is (the memory estimate labels what the pool allocates with it). */
export interface StepObserver {
  /** Before micro-batch `micro`'s forward (0-based). */
  forward?(micro: number): void;
  /** After micro-batch `micro`'s forward (its loss recorded, what it keeps for backward alive), before its backward. */
  backward?(micro: number): void;
  /** In micro-batch `micro`'s backward, before the backward rule of each op (observeBackward's node name). */
  backwardOp?(op: string, micro: number): void;
  /** After the last backward, before the gradient norm and what follows it (the update). */
  gradNorm?(): void;
}

/** What a recorded step leaves for its caller to read back, then to update with or discard. */
export interface RecordedStep {
  /** The trainable parameters, whose .grad hold the step's gradients. */
  params: Tensor[];
  /** Each micro-batch's mean loss times its share of the step's target tokens (their sum: the step's loss). */
  weightedLosses: Tensor[];
  /** The global gradient norm (of the scaled gradients under loss scaling) and the clip coefficient. */
  clip: GradNormCoef;
}

/**
 * Records the work of one optimizer step over `batches` (the micro-batches of gradient accumulation)
 * up to its first read-back: forward and backward of each micro-batch with its loss weighted by its
 * share of the step's target tokens (and multiplied by the loss scale), then the global gradient norm
 * and the clip coefficient. Synchronous: nothing is read back.
 */
export function recordStep(
  model: LlamaModel,
  batches: Batch[],
  o: Omit<StepOptions, 'lr'>,
  observer: StepObserver = {},
): RecordedStep {
  const total = batches.reduce((s, b) => s + b.numTargetTokens, 0);
  if (total === 0)
    throw new InputError(
      `step ${o.stepIndex + 1}: every label in the batch is masked (-100); check response_only_loss and max_seq_len`,
      { key: 'data' },
    );
  model.training = true;
  const params = model.trainableParameters();
  const weightedLosses: Tensor[] = [];
  const lossScale = o.lossScale ?? 1;
  batches.forEach((b, micro) => {
    model.setDropoutSeed(dropoutSeed(o.seed, o.stepIndex, micro));
    observer.forward?.(micro);
    // Out of memory midway, the nodes recorded so far release what they saved (releaseOnError).
    const w = tidy(() =>
      releaseOnError(() => {
        const loss = model.loss(b, { gradientCheckpointing: o.gradientCheckpointing ?? 'none' });
        observer.backward?.(micro);
        const weightedBackward = () => backward(scale(loss, (lossScale * b.numTargetTokens) / total));
        const { backwardOp } = observer;
        if (backwardOp) observeBackward((node) => backwardOp(node.name, micro), weightedBackward);
        else weightedBackward();
        return noGrad(() => scale(loss, b.numTargetTokens / total));
      }),
    );
    weightedLosses.push(w);
  });
  observer.gradNorm?.();
  // The norm is computed with clipping off too: with the loss it shows whether the step is finite.
  // Clipping is folded into the update: the step scales each gradient by min(1, max/‖g‖) on the GPU.
  const clip = gradNormCoef(params, o.maxGradNorm ?? Infinity);
  return { params, weightedLosses, clip };
}

/**
 * The update of a recorded step (its losses and norm read back and disposed): AdamW at `lr` with
 * each gradient multiplied by `gradScale`, then the gradients zeroed. `gradScale`: 'clip', the clip
 * coefficient the step computed on the GPU; a number, a factor computed from the read-back norm
 * (under loss scaling: clip / scale); null, none (no clipping).
 */
export function applyUpdate(optimizer: AdamW, step: RecordedStep, lr: number, gradScale: 'clip' | number | null): void {
  const { clip, params } = step;
  if (typeof gradScale === 'number') {
    clip.coef.dispose();
    const factor = Tensor.from(new Float32Array([gradScale]), [1]);
    optimizer.step(lr, { gradScale: factor });
    factor.dispose();
  } else {
    optimizer.step(lr, gradScale === 'clip' ? { gradScale: clip.coef } : {});
    clip.coef.dispose();
  }
  zeroGrad(params);
}

/** A recorded step that is not applied (non-finite): its gradients are dropped. */
export function discardStep(step: RecordedStep): void {
  step.clip.coef.dispose();
  zeroGrad(step.params);
}
