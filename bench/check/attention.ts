// Runs one emulated subgroup-matrix attention case (src/kernels/attention-sgmatrix.ts
// ATTENTION_SG_CASES) through flashAttentionForward / flashAttentionBackward with the emulated
// kernels forced, on fresh random inputs, and checks every output element against the float64
// reference (reference/attention.ts) and a bound derived from f16 operands with f32
// accumulation. Used by `npm run check:kernels` and tests/kernels/attention-sgmatrix.test.ts.

import {
  type AttnRefOptions,
  type AttnRefShape,
  attentionBackwardRef,
  attentionForwardRef,
  probabilities,
} from '../../reference/attention.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/io/dtype.js';
import { flashAttentionBackward, flashAttentionForward } from '../../src/kernels/attention.js';
import {
  type AttentionVariantCase,
  casePasses,
  type SgAttentionPass,
  sgAttentionKey,
  sgAttentionSpec,
  shapeName,
} from '../../src/kernels/attention-sgmatrix.js';

// Error bounds. A value converted to f16 on the GPU (q/k/v from f32 storage, dO, P, dS) may land on
// either neighbour (WGSL leaves the rounding direction open): relative error ≤ R = 2⁻¹⁰, plus 2⁻²⁵
// absolute below f16's normal range (P and dS are O(1), so only that subnormal term matters for
// them). f16-stored inputs are read exactly (ρ = 0), f32-stored ones carry ρ = R. Products of f16
// values are exact in f32 and the K-term sums add ≲ K·2⁻²⁴ relative: covered by the portable
// kernels' f32 tolerances, which are added. First-order terms, per element, from the float64 data:
//   score      ε_ij = 2ρ·scale·Σ_d |q_id||k_jd|            (q and k each moved by ρ)
//   out        Σ_j [P_ij·(e^{2 max_j ε_ij} − 1 + R + ρ) + 2⁻²⁵]·|v_jd|   (weights, P in f16, v)
//   lse        max_j ε_ij
//   P (bwd)    δP_ij = P_ij·(ε_ij + δlse_i + 4e-6)          (δlse_i: the forward's lse bound + 1e-5)
//   dP         δdP_ij = (R + ρ)·Σ_d |dO_id||v_jd|            (dO and v in f16)
//   dS         δdS_ij = δP_ij·|dP_ij − D_i| + P_ij·δdP_ij + R·|dS_ij| + 2⁻²⁵
//   dV_jd      Σ_i (δP_ij + 2R·P_ij + 2⁻²⁵)·|dO_id|         (P and dO in f16)
//   dK_jd      scale·Σ_i (δdS_ij + ρ|dS_ij|)·|q_id|;  dQ_id  scale·Σ_j (δdS_ij + ρ|dS_ij|)·|k_jd|
// D_i = dO_i·O_i is taken from the kernel's own output (as the backward reads it), so it adds nothing.
// Second-order terms are covered by a factor 1.25 on the sum.
const R = 2 ** -10;
const SUB = 2 ** -25;
const MARGIN = 1.25;
const FWD_F32 = { atol: 1e-5, rtol: 1e-5 };
const BWD_F32 = { atol: 3e-5, rtol: 1e-4 };

const roundF16 = (x: Float32Array): Float32Array => f16ArrayToF32(f32ArrayToF16(x));

function segmentIds(c: AttentionVariantCase): Int32Array | undefined {
  if (!c.segments) return undefined;
  const ids = new Int32Array(c.B * c.T);
  c.segments.forEach((lens, b) => {
    let t = 0;
    lens.forEach((len, s) => {
      for (let k = 0; k < len; k++) ids[b * c.T + t++] = 10 * s + b;
    });
    if (t !== c.T) throw new Error(`segments of row ${b} sum to ${t}, not T=${c.T}`);
  });
  return ids;
}

/** Inputs: N(0, 1); cache rows past kvLength and before kvStart are NaN (never written in a server's cache). */
function inputs(rng: Rng, c: AttentionVariantCase) {
  const { B, T, S, Sk, Hq, Hkv, Dh } = c;
  const q = rng.normalArray(B * T * Hq * Dh);
  const k = rng.normalArray(B * Sk * Hkv * Dh);
  const v = rng.normalArray(B * Sk * Hkv * Dh);
  for (let b = 0; b < B; b++)
    for (let j = 0; j < Sk; j++)
      if (j >= S || j < (c.kvStart?.[b] ?? 0))
        for (let e = 0; e < Hkv * Dh; e++) {
          k[(b * Sk + j) * Hkv * Dh + e] = NaN;
          v[(b * Sk + j) * Hkv * Dh + e] = NaN;
        }
  return { q, k, v, dOut: rng.normalArray(B * T * Hq * Dh) };
}

/** Every element within its own bound (NaN fails); returns the largest |err| / bound. */
function expectWithin(actual: Float32Array, ref: ArrayLike<number>, bound: ArrayLike<number>, label: string): number {
  let worst = 0;
  const bad: string[] = [];
  for (let i = 0; i < ref.length; i++) {
    const err = Math.abs(actual[i]! - ref[i]!);
    const ok = Object.is(actual[i], ref[i]) || err <= bound[i]!;
    if (!ok && bad.length < 6)
      bad.push(
        `  [${i}] got ${actual[i]} want ${ref[i]} (err ${err.toExponential(2)}, bound ${bound[i]!.toExponential(2)})`,
      );
    if (Number.isFinite(err)) worst = Math.max(worst, err / bound[i]!);
  }
  if (bad.length) throw new Error(`${label}: elements outside their bounds\n${bad.join('\n')}`);
  return worst;
}

export interface AttentionCheck {
  /** The emulated kernels that ran (pipeline keys). */
  keys: string[];
  /** Largest |err| / bound per output checked. */
  ratios: Record<string, number>;
  /** Null when every element is within its bound, else the failure report. */
  failure: string | null;
}

/**
 * Runs case `c` through the emulated kernels of `passes` (the forward always: the backward reads its
 * output and lse) and checks every output element against the float64 reference and its bound.
 */
export async function checkEmulatedAttention(
  c: AttentionVariantCase,
  rng: Rng,
  passes: readonly SgAttentionPass[] = casePasses(c),
): Promise<AttentionCheck> {
  const ratios: Record<string, number> = {};
  const keys = passes.map((p) => sgAttentionKey(sgAttentionSpec(p, 'emulated', c.shape, c.Dh, c.dtype, c.dtype)));
  try {
    await runCase(c, rng, passes, ratios);
    return { keys, ratios, failure: null };
  } catch (e) {
    return { keys, ratios, failure: (e as Error).message };
  }
}

async function runCase(
  c: AttentionVariantCase,
  rng: Rng,
  passes: readonly SgAttentionPass[],
  ratios: Record<string, number>,
): Promise<void> {
  const { B, T, S, Sk, Hq, Hkv, Dh } = c;
  const sh: AttnRefShape = { B, T, S, Sk, Hq, Hkv, Dh };
  const G = Hq / Hkv;
  const scale = 1 / Math.sqrt(Dh);
  const seg = segmentIds(c);
  const refOpts: AttnRefOptions = {
    causal: c.causal,
    scale,
    qOffset: c.qOffset ?? 0,
    segmentIds: seg,
    kvStart: c.kvStart,
  };
  const x = inputs(rng, c);
  const rho = c.dtype === 'f16' ? 0 : R;
  // f16 storage: the reference sees the stored values; f32: the exact ones (the staging rounding is in ρ).
  const xq = c.dtype === 'f16' ? roundF16(x.q) : x.q;
  const xk = c.dtype === 'f16' ? roundF16(x.k) : x.k;
  const xv = c.dtype === 'f16' ? roundF16(x.v) : x.v;
  const up = (a: Float32Array, shape: number[]) =>
    c.dtype === 'f16' ? Tensor.from(f32ArrayToF16(a), shape, 'f16') : Tensor.from(a, shape);
  const q = up(x.q, [B, T, Hq, Dh]);
  const k = up(x.k, [B, Sk, Hkv, Dh]);
  const v = up(x.v, [B, Sk, Hkv, Dh]);
  const opts = {
    causal: c.causal,
    qOffset: c.qOffset,
    kvLength: S,
    segmentIds: seg ? Tensor.from(seg, [B * T]) : undefined,
    kvStart: c.kvStart ? Tensor.from(Int32Array.from(c.kvStart), [B]) : undefined,
  };
  const tiles = { fragments: { mode: 'emulated' as const, shape: c.shape } };
  const tag = `${c.label} [emulated ${shapeName(c.shape)}]`;

  // Per-pair magnitudes from the float64 data.
  const { P } = probabilities(sh, refOpts, xq, xk);
  const eps = new Float64Array(B * Hq * T * S);
  const epsMax = new Float64Array(B * Hq * T);
  const qi = (b: number, i: number, h: number) => ((b * T + i) * Hq + h) * Dh;
  const kj = (b: number, j: number, h: number) => ((b * Sk + j) * Hkv + Math.floor(h / G)) * Dh;
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++)
      for (let i = 0; i < T; i++)
        for (let j = 0; j < S; j++) {
          const r = ((b * Hq + h) * T + i) * S + j;
          if (P[r] === 0) continue;
          let a = 0;
          for (let d = 0; d < Dh; d++) a += Math.abs(xq[qi(b, i, h) + d]! * xk[kj(b, j, h) + d]!);
          eps[r] = 2 * rho * scale * a;
          epsMax[(b * Hq + h) * T + i] = Math.max(epsMax[(b * Hq + h) * T + i]!, eps[r]!);
        }

  const fwd = attentionForwardRef(sh, refOpts, xq, xk, xv);
  const outBound = new Float64Array(fwd.out.length);
  const lseBound = new Float64Array(fwd.lse.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++)
      for (let i = 0; i < T; i++) {
        const lr = (b * Hq + h) * T + i;
        lseBound[lr] = MARGIN * epsMax[lr]! + FWD_F32.atol + FWD_F32.rtol * Math.abs(fwd.lse[lr]!);
        const wErr = Math.expm1(2 * epsMax[lr]!) + R + rho;
        for (let j = 0; j < S; j++) {
          const p = P[lr * S + j]!;
          if (p === 0) continue;
          for (let d = 0; d < Dh; d++) outBound[qi(b, i, h) + d] += (p * wErr + SUB) * Math.abs(xv[kj(b, j, h) + d]!);
        }
        for (let d = 0; d < Dh; d++) {
          const e = qi(b, i, h) + d;
          outBound[e] = MARGIN * outBound[e]! + FWD_F32.atol + FWD_F32.rtol * Math.abs(fwd.out[e]!);
        }
      }
  const r = flashAttentionForward(q, k, v, opts, 'tiled', tiles);
  const out = await r.out.toFloat32();
  ratios.out = expectWithin(out, fwd.out, outBound, `${tag} out`);
  ratios.lse = expectWithin(await r.lse.toFloat32(), fwd.lse, lseBound, `${tag} lse`);
  const wantDq = passes.includes('dq');
  const wantDkv = passes.includes('dkv');
  if (!wantDq && !wantDkv) return;
  if (c.kvStart) throw new Error(`${tag}: kvStart has no backward`);

  const dOut = Tensor.from(x.dOut, [B, T, Hq, Dh]);
  const grads = attentionBackwardRef(sh, refOpts, xq, xk, xv, x.dOut, out);
  const dqB = new Float64Array(grads.dq.length);
  const dkB = new Float64Array(grads.dk.length);
  const dvB = new Float64Array(grads.dv.length);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++)
      for (let i = 0; i < T; i++) {
        const lr = (b * Hq + h) * T + i;
        const dlse = lseBound[lr]! + 1e-5;
        let D = 0;
        for (let d = 0; d < Dh; d++) D += x.dOut[qi(b, i, h) + d]! * out[qi(b, i, h) + d]!;
        for (let j = 0; j < S; j++) {
          const p = P[lr * S + j]!;
          if (p === 0) continue;
          let dP = 0;
          let absdP = 0;
          for (let d = 0; d < Dh; d++) {
            dP += x.dOut[qi(b, i, h) + d]! * xv[kj(b, j, h) + d]!;
            absdP += Math.abs(x.dOut[qi(b, i, h) + d]! * xv[kj(b, j, h) + d]!);
          }
          const dS = p * (dP - D);
          const eP = p * (eps[lr * S + j]! + dlse + 4e-6);
          const edS = eP * Math.abs(dP - D) + p * (R + rho) * absdP + R * Math.abs(dS) + SUB;
          const gS = edS + rho * Math.abs(dS);
          for (let d = 0; d < Dh; d++) {
            dvB[kj(b, j, h) + d] += (eP + 2 * R * p + SUB) * Math.abs(x.dOut[qi(b, i, h) + d]!);
            dkB[kj(b, j, h) + d] += scale * gS * Math.abs(xq[qi(b, i, h) + d]!);
            dqB[qi(b, i, h) + d] += scale * gS * Math.abs(xk[kj(b, j, h) + d]!);
          }
        }
      }
  const fin = (bound: Float64Array, ref: Float64Array) =>
    bound.map((e, i) => MARGIN * e + BWD_F32.atol + BWD_F32.rtol * Math.abs(ref[i]!));
  const g = flashAttentionBackward(q, k, v, r.out, r.lse, dOut, opts, { dq: wantDq, dkv: wantDkv }, tiles);
  if (wantDq) ratios.dQ = expectWithin(await g.dq!.toFloat32(), grads.dq, fin(dqB, grads.dq), `${tag} dQ`);
  if (wantDkv) {
    ratios.dK = expectWithin(await g.dk!.toFloat32(), grads.dk, fin(dkB, grads.dk), `${tag} dK`);
    ratios.dV = expectWithin(await g.dv!.toFloat32(), grads.dv, fin(dvB, grads.dv), `${tag} dV`);
  }
  for (const t of [q, k, v, dOut, r.out, r.lse, g.dq, g.dk, g.dv]) t?.dispose();
}
