// Differentiable glue the model needs beyond the kernels: a view autograd sees, a row gather, and
// gradient checkpointing.
import { backward, isGradEnabled, needsGrad, noGrad, recordOp } from '../engine/autograd.js';
import { Tensor, tidy } from '../engine/tensor.js';
import { embedding } from '../kernels/index.js';

/** A reshape that autograd sees (Tensor.reshape itself is an unrecorded view). */
export function view(x: Tensor, shape: readonly number[]): Tensor {
  const y = x.reshape(shape);
  recordOp('view', [x], y, () => ([g]) => [g!.reshape(x.shape)]);
  return y;
}

/**
 * Rows `rows` of a 2-D tensor [R, C] → [rows.length, C] (a gather through the embedding kernel,
 * whose backward scatter-adds into the source when it needs a gradient).
 */
export function gatherRows(x: Tensor, rows: readonly number[]): Tensor {
  const idx = Tensor.from(Int32Array.from(rows), [rows.length]);
  const y = embedding(idx, x);
  idx.dispose();
  return y;
}

/**
 * What a training forward keeps for backward:
 * - none: every activation backward reads (fastest);
 * - selective: the same minus the outputs that are cheap to rebuild (RMSNorm and SwiGLU outputs),
 *   recomputed in backward; GEMM and attention outputs are kept;
 * - full: only each decoder layer's input; backward re-runs the layer (one extra forward).
 */
export type CheckpointMode = 'none' | 'selective' | 'full';
export const CHECKPOINT_MODES: readonly CheckpointMode[] = ['none', 'selective', 'full'];

/**
 * Gradient checkpointing: runs `run(x)` without recording, keeping only its input; backward
 * re-runs it under a fresh tape and backpropagates through that. Gradients of the parameters used
 * inside (`params`, LoRA leaves) accumulate directly into their `.grad` during the re-run; the
 * input gradient is returned to the outer graph. `run` must be deterministic (dropout by seed).
 */
export function checkpoint(x: Tensor, params: readonly Tensor[], run: (x: Tensor) => Tensor): Tensor {
  if (!needsGrad([x, ...params])) return run(x);
  const xNeedsGrad = x.requiresGrad || x.gradFn !== null;
  const y = tidy(() => noGrad(() => run(x)));
  recordOp('checkpoint', [x, ...params], y, (node) => {
    const xs = node.save(x);
    return ([g]) => {
      if (!isGradEnabled()) throw new Error('gradient checkpointing: backward() must not run inside noGrad()');
      const dx = tidy(() => {
        const leaf = xs.reshape(xs.shape);
        leaf.requiresGrad = xNeedsGrad;
        const y2 = tidy(() => run(leaf)); // what no rule saved is freed before the backward runs
        backward(y2, g!);
        if (!xNeedsGrad) return null;
        const grad = leaf.grad!; // a kept tensor, handed to the outer backward (which frees it)
        leaf.grad = null;
        return grad;
      });
      return [dx, ...params.map(() => null)];
    };
  });
  return y;
}
