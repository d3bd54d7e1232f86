// Saving activations for backward in the engine's precision: f32 in fp32, f16 (packed, half the
// bytes) in fp16-mixed. Backward rules that read a saved activation must accept either dtype; the
// GEMM loaders do (gemm.ts). In fp16-mixed every GEMM rounds its operands to f16 anyway, so a GEMM
// operand saved in f16 loses nothing the forward product had not already lost.
//
// One f16 copy per activation: the q/k/v (and gate/up) projections all save the same normed input,
// and share one copy (found by the storage it was made from) instead of keeping three. A tensor
// backward will rebuild (autograd `withRecompute`, selective checkpointing) keeps no memory when
// saved, so it is saved as it is.
import { type GradNode, isRecomputable, noGrad } from '../engine/autograd.js';
import { saveActivationsIn16Bit } from '../engine/precision.js';
import type { Tensor } from '../engine/tensor.js';
import { cast } from './elementwise.js';

/** The f16 copy made of a storage, as a saved (kept) view; dropped once disposed. */
const halfCopies = new WeakMap<object, Tensor>();

/** node.save(t), as a shared packed f16 copy when the precision is fp16-mixed and t is f32. */
export function saveActivation(node: GradNode, t: Tensor): Tensor {
  const key = t.storageKey;
  if (!saveActivationsIn16Bit() || t.dtype !== 'f32' || !key || isRecomputable(t)) return node.save(t);
  const copy = halfCopies.get(key);
  // A copy made of the same storage with the same shape is the same activation (views share storage).
  if (copy && !copy.disposed && copy.numel === t.numel) {
    const view = copy.reshape(t.shape);
    const saved = node.save(view);
    view.dispose();
    return saved;
  }
  const h = noGrad(() => cast(t, 'f16')); // a saved copy: no gradient flows through it
  const saved = node.save(h);
  h.dispose();
  halfCopies.set(key, saved);
  return saved;
}
