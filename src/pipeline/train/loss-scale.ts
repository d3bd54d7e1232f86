// Dynamic loss scaling for fp16-mixed training, with torch.cuda.amp.GradScaler's semantics:
//   the loss is multiplied by `scale` before backward (so small gradients survive the f16 GEMM
//   operands), gradients are unscaled inside the optimizer step;
//   a step whose gradients hold inf/NaN is skipped (no parameter or optimizer-state change, the
//   AdamW step counter does not advance) and the scale is multiplied by backoff_factor (0.5);
//   after growth_interval (2000) consecutive clean steps the scale is multiplied by growth_factor (2).
// The state (scale, clean-step counter, skipped steps) is saved in checkpoints so a resumed run
// continues bit-exactly.
//
// stepHealth is the one place that decides what a non-finite step means: with loss scaling it is
// an overflow to skip; without (fp32) it is divergence, and training stops with a message.

export interface LossScalingOptions {
  initScale: number;
  growthFactor: number;
  backoffFactor: number;
  growthInterval: number;
}

export const GRAD_SCALER_DEFAULTS: LossScalingOptions = { initScale: 2 ** 16, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 };

/** Below this scale an overflow is not a gradient-range problem: the forward pass itself overflows f16. */
export const MIN_LOSS_SCALE = 2 ** -16;

export interface LossScalerState {
  scale: number;
  /** Consecutive clean steps since the last growth or backoff (torch: _growth_tracker). */
  growthTracker: number;
  /** Steps skipped so far because of inf/NaN gradients. */
  skippedSteps: number;
}

export class DynamicLossScaler {
  private st: LossScalerState;
  constructor(
    readonly opts: LossScalingOptions = GRAD_SCALER_DEFAULTS,
    state?: LossScalerState,
  ) {
    if (!(opts.initScale > 0) || !(opts.growthFactor > 1) || !(opts.backoffFactor > 0 && opts.backoffFactor < 1) || !(opts.growthInterval >= 1)) {
      throw new RangeError(`invalid loss scaling options ${JSON.stringify(opts)}`);
    }
    this.st = state ? { ...state } : { scale: opts.initScale, growthTracker: 0, skippedSteps: 0 };
  }

  get scale(): number {
    return this.st.scale;
  }

  get skippedSteps(): number {
    return this.st.skippedSteps;
  }

  /** Records one step's outcome (GradScaler.update): backoff on overflow, growth after a clean streak. */
  update(foundNonFinite: boolean): void {
    if (foundNonFinite) {
      this.st.scale *= this.opts.backoffFactor;
      this.st.growthTracker = 0;
      this.st.skippedSteps++;
    } else if (++this.st.growthTracker >= this.opts.growthInterval) {
      this.st.scale *= this.opts.growthFactor;
      this.st.growthTracker = 0;
    }
  }

  state(): LossScalerState {
    return { ...this.st };
  }
}

export type StepAction = 'ok' | 'skip' | 'stop';

/**
 * What to do with a step whose loss and (unscaled or scaled) gradient norm are known: 'ok' when
 * both are finite (a null norm, clipping off and no scaler, counts as finite); 'skip' when not and
 * a loss scaler is active (an f16 overflow: GradScaler skips the step); 'stop' when not and there
 * is no scaler (fp32: the run diverged), or when the scale has fallen so low that the overflow
 * cannot be a gradient-range problem. `message` says why for 'skip' and 'stop'.
 */
export function stepHealth(step: number, loss: number, gradNorm: number | null, scaler: DynamicLossScaler | null): { action: StepAction; message?: string } {
  const finite = Number.isFinite(loss) && (gradNorm === null || Number.isFinite(gradNorm));
  if (finite) return { action: 'ok' };
  const what = !Number.isFinite(loss) ? `loss is ${loss}` : `gradient norm is ${gradNorm}`;
  if (!scaler) return { action: 'stop', message: `training diverged: ${what} at step ${step} (try a lower training.lr)` };
  if (scaler.scale * scaler.opts.backoffFactor < MIN_LOSS_SCALE) {
    return {
      action: 'stop',
      message:
        `fp16-mixed: ${what} at step ${step} even at loss scale ${scaler.scale}; the forward pass overflows f16 ` +
        '(activations beyond ±65504): train with training.precision: fp32',
    };
  }
  return { action: 'skip', message: `step ${step}: ${what} at loss scale ${scaler.scale}: step skipped, loss scale → ${scaler.scale * scaler.opts.backoffFactor}` };
}
