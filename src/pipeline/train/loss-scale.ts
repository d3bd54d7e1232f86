// Dynamic loss scaling for fp16-mixed training, with torch.cuda.amp.GradScaler's semantics:
//   the loss is multiplied by `scale` before backward (so small gradients survive the f16 GEMM
//   operands), gradients are unscaled inside the optimizer step;
//   a step whose gradients hold inf/NaN is skipped (no parameter or optimizer-state change, the
//   AdamW step counter does not advance) and the scale is multiplied by backoff_factor (0.5);
//   after growth_interval (2000) consecutive clean steps the scale is multiplied by growth_factor (2).
// The state (scale, clean-step counter, skipped steps) is saved in checkpoints so a resumed run
// continues bit-exactly.
//
// Whether a step is non-finite is decided in one place, nonFiniteStep (checks.ts): without loss
// scaling (fp32) the trainer stops on it; with loss scaling trainStep skips the update and the
// trainer backs the scale off (skippedStep says what to print, or to stop).

export interface LossScalingOptions {
  initScale: number;
  growthFactor: number;
  backoffFactor: number;
  growthInterval: number;
}

export const GRAD_SCALER_DEFAULTS: LossScalingOptions = {
  initScale: 2 ** 16,
  growthFactor: 2,
  backoffFactor: 0.5,
  growthInterval: 2000,
};

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
    if (
      !(opts.initScale > 0) ||
      !(opts.growthFactor > 1) ||
      !(opts.backoffFactor > 0 && opts.backoffFactor < 1) ||
      !(opts.growthInterval >= 1)
    ) {
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

/**
 * What a skipped step means (nonFiniteStep found it non-finite under loss scaling): the message to
 * print with GradScaler's backoff, or `stop` once the scale would fall below MIN_LOSS_SCALE, where
 * the overflow cannot be the gradients' range: the forward pass itself overflows f16.
 */
export function skippedStep(problem: string, scaler: DynamicLossScaler): { stop: boolean; message: string } {
  const next = scaler.scale * scaler.opts.backoffFactor;
  if (next < MIN_LOSS_SCALE) {
    return {
      stop: true,
      message: `fp16-mixed: ${problem} even at loss scale ${scaler.scale}; the forward pass overflows f16 (activations beyond ±65504): train with training.precision: fp32`,
    };
  }
  return { stop: false, message: `${problem} at loss scale ${scaler.scale}: step skipped, loss scale → ${next}` };
}
