// LoRA: y = x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ with a frozen base W (f32/bf16/f16 Tensor or NF4), A [r, in],
// B [out, r], s = alpha / r (or alpha / √r for rsLoRA: the caller passes the number).
//
// Shapes: M rows (all leading dims of x), K = in, N = out, r = rank (r ≤ 128). Every product is a
// GEMM of the one generator (gemm.ts), with the dropout and the up-projection fused:
// Forward:
//   u = drop(x)·Aᵀ [M, r]                         dropout in the x loader
//   y = x·Wᵀ + s·(u·Bᵀ)                           one GEMM: the LoRA term is its prologue
//                                                 (decode rows: base GEMV, then y += s·u·Bᵀ)
// Backward (one node for x, A, B; W gets nothing):
//   gu = s·g·B [M, r]
//   dA = guᵀ·drop(x) [r, K]                       dropout in the x loader (mask regenerated), split-K
//   dB = s·gᵀ·u [N, r]                            split-K
//   dX = g·W + mask ⊙ (gu·A)/(1−p)                one GEMM: the masked LoRA term is its prologue
//                                                 (NF4 dequantized in the tile loader)
// Dropout is PEFT's nn.Dropout on the LoRA input only: keep element (m, k) when
// rand_uniform(seed, m·K + k) ≥ p, scaled by 1/(1−p); backward regenerates the same mask from the
// seed (no mask tensor). In fp16-mixed the saved x and u are f16 (activations.ts); A, B and their
// gradients stay f32.
import { type GradNode, recordOp } from '../engine/autograd.js';
import { numelOf, Tensor } from '../engine/tensor.js';
import { saveActivation } from './activations.js';
import { assertDtype } from './common.js';
import { type Dropout, gemm } from './gemm.js';
import { MATMUL_GEMV_ROWS, matmulGemv, nf4LinearForward } from './matmul.js';
import type { Nf4Weight } from './nf4.js';

export const LORA_MAX_RANK = 128;

export interface LoraOptions {
  /** Dropout probability on the LoRA input path (PEFT lora_dropout). Default 0. */
  dropout?: number;
  /** Mask seed (u32); required when dropout > 0. Use a distinct seed per layer and step. */
  seed?: number;
}

function wants(t: Tensor): boolean {
  return t.requiresGrad || t.gradFn !== null;
}

/** y [M, N] = x·Wᵀ + scale·u·Bᵀ: one GEMM with the LoRA term as prologue, or GEMV + update at decode. */
function loraForward(x2: Tensor, base: Tensor | Nf4Weight, u: Tensor, B: Tensor, scale: number): Tensor {
  const M = x2.shape[0]!;
  if (M <= MATMUL_GEMV_ROWS) {
    const y = base instanceof Tensor ? matmulGemv(x2, base, { transB: true }) : nf4LinearForward(x2, base);
    return gemm({ a: { t: u }, b: { t: B, trans: true }, alpha: scale, accumulate: y });
  }
  return gemm({
    a: { t: x2 },
    b: { t: base, trans: true },
    prologue: { u: { t: u }, w: { t: B, trans: true }, scale },
  });
}

/**
 * y = x·Wᵀ + scale·(drop(x)·Aᵀ)·Bᵀ. x [..., in] f32; base [out, in] (f32 or packed bf16/f16 Tensor,
 * or Nf4Weight), frozen; A [r, in], B [out, r] f32. Autograd gives dX, dA, dB.
 */
export function loraLinear(
  x: Tensor,
  base: Tensor | Nf4Weight,
  A: Tensor,
  B: Tensor,
  scale: number,
  opts: LoraOptions = {},
): Tensor {
  const [out, inF] = base.shape as [number, number];
  if (A.shape.length !== 2 || B.shape.length !== 2)
    throw new RangeError(`loraLinear: A and B must be 2-D, got A [${A.shape}] B [${B.shape}]`);
  const r = A.shape[0]!;
  if (A.shape[1] !== inF || B.shape[0] !== out || B.shape[1] !== r) {
    throw new RangeError(
      `loraLinear: base [${out}, ${inF}] needs A [r, ${inF}] and B [${out}, r]; got A [${A.shape}] B [${B.shape}]`,
    );
  }
  if (r < 1 || r > LORA_MAX_RANK) throw new RangeError(`loraLinear: rank ${r} outside 1..${LORA_MAX_RANK}`);
  if (x.shape[x.shape.length - 1] !== inF) throw new RangeError(`loraLinear: x [${x.shape}] does not end in ${inF}`);
  assertDtype(x, 'f32', 'loraLinear x');
  assertDtype(A, 'f32', 'loraLinear A');
  assertDtype(B, 'f32', 'loraLinear B');
  if (base instanceof Tensor && base.requiresGrad)
    throw new Error('loraLinear: the base weight is frozen; it must not have requiresGrad');
  const p = opts.dropout ?? 0;
  if (!(p >= 0 && p < 1)) throw new RangeError(`loraLinear: dropout ${p} outside [0, 1)`);
  if (p > 0 && opts.seed === undefined)
    throw new Error(
      'loraLinear: dropout > 0 needs a seed (distinct per layer and step) so backward can regenerate the mask',
    );
  const drop: Dropout | undefined = p > 0 ? { p, seed: opts.seed! >>> 0 } : undefined;

  const lead = x.shape.slice(0, -1);
  const M = numelOf(lead);
  const x2 = x.reshape([M, inF]);
  const u = gemm({ a: { t: x2, dropout: drop }, b: { t: A, trans: true } });
  const y2 = loraForward(x2, base, u, B, scale);
  const y = y2.reshape([...lead, out]);
  y2.dispose();
  recordOp('loraLinear', [x, A, B], y, (node: GradNode) => {
    const [wantX, wantA, wantB] = [wants(x), wants(A), wants(B)];
    const xs = wantA ? saveActivation(node, x2) : null;
    const us = wantB ? saveActivation(node, u) : null;
    const As = node.save(A);
    const Bs = node.save(B);
    return ([g]) => {
      const g2 = g!.reshape([M, out]);
      const gu = gemm({ a: { t: g2 }, b: { t: Bs }, alpha: scale });
      const dA = wantA ? gemm({ a: { t: gu, trans: true }, b: { t: xs!, dropout: drop } }) : null;
      const dB = wantB ? gemm({ a: { t: g2, trans: true }, b: { t: us! }, alpha: scale }) : null;
      let dx: Tensor | null = null;
      if (wantX) {
        const d2 = gemm({
          a: { t: g2 },
          b: { t: base },
          prologue: { u: { t: gu }, w: { t: As }, scale: 1, ...(drop ? { dropout: drop } : {}) },
        });
        dx = d2.reshape(x.shape);
        d2.dispose();
      }
      g2.dispose();
      gu.dispose();
      return [dx, dA, dB];
    };
  });
  x2.dispose();
  u.dispose();
  return y;
}
