// Parameters and gradients for the optimizer tests: kept f32 tensors built from host values.
import { Tensor } from '../../src/engine/tensor.js';

/** A kept, trainable 1-D parameter holding `data`. */
export function param(data: Float32Array): Tensor {
  const t = Tensor.from(data, [data.length]).keep();
  t.requiresGrad = true;
  return t;
}

/** Replaces `p`'s gradient with `g` (kept, of p's shape). */
export function setGrad(p: Tensor, g: Float32Array): void {
  p.grad?.dispose();
  p.grad = Tensor.from(g, p.shape).keep();
}
