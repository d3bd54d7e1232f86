// Saving activations for backward in the engine's precision: f32 in fp32, f16 (packed, half the
// bytes) in fp16-mixed. Backward rules that read a saved activation must accept either dtype; the
// GEMM loaders do (gemm.ts). In fp16-mixed every GEMM rounds its operands to f16 anyway, so a GEMM
// operand saved in f16 loses nothing the forward product had not already lost.
import type { GradNode } from '../engine/autograd.js';
import { saveActivationsIn16Bit } from '../engine/precision.js';
import type { Tensor } from '../engine/tensor.js';
import { cast } from './elementwise.js';

/** node.save(t), as a packed f16 copy when the precision is fp16-mixed and t is f32. */
export function saveActivation(node: GradNode, t: Tensor): Tensor {
  if (!saveActivationsIn16Bit() || t.dtype !== 'f32') return node.save(t);
  const h = cast(t, 'f16');
  const saved = node.save(h);
  h.dispose();
  return saved;
}
