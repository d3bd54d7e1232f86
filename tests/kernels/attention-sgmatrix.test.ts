// FlashAttention-2 on subgroup matrices (src/kernels/attention-sgmatrix.ts):
//  - every native kernel compiles on Dawn's Null backend with zero errors and zero warnings (Null
//    type-checks subgroup-matrix WGSL but executes nothing; its 16 KiB workgroup-memory cap is below
//    the kernels' tiles, so the check is at shader-module level);
//  - the emulated twins (same template, plain-WGSL fragments, smaller tiles) run here against the
//    float64 reference, forward and backward, in all three matrix shapes, with per-element bounds
//    derived from f16 operands and f32 accumulation (below);
//  - the chooser takes the native kernels only where an adapter like a real one offers them.
import { describe, expect, it } from 'vitest';
import { GpuDevice, type SubgroupMatrixConfig } from '../../src/engine/device.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor, engine } from '../../src/engine/tensor.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/io/dtype.js';
import {
  chooseAttentionVariant,
  flashAttentionBackward,
  flashAttentionForward,
  nativeFragmentShape,
  type AttentionCaps,
  type AttentionShape,
} from '../../src/kernels/attention.js';
import { enumerateAttentionVariants, shapeName } from '../../src/kernels/attention-sgmatrix.js';
import { kernelVariants, nullCompiler } from '../../src/kernels/variants.js';
import type { MatrixShape } from '../../src/kernels/sgmatrix.js';
import { attentionBackwardRef, attentionForwardRef, probabilities, type AttnRefOptions, type AttnRefShape } from '../reference/attention.js';
import { testRng, useEngine } from '../helpers/index.js';

useEngine();

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
// Emulated kernels are plain WGSL loops: a cold lavapipe compile takes several seconds each.
const TIMEOUT = 600_000;

interface Case {
  label: string;
  sh: AttnRefShape;
  shape: MatrixShape;
  causal: boolean;
  qOffset?: number;
  segments?: number[][];
  kvStart?: number[];
  dtype: 'f32' | 'f16';
}

const mk = (B: number, T: number, S: number, Hq: number, Hkv: number, Dh: number, Sk = S): AttnRefShape => ({ B, T, S, Sk, Hq, Hkv, Dh });
const roundF16 = (x: Float32Array): Float32Array => f16ArrayToF32(f32ArrayToF16(x));

function segmentIds(c: Case): Int32Array | undefined {
  if (!c.segments) return undefined;
  const ids = new Int32Array(c.sh.B * c.sh.T);
  c.segments.forEach((lens, b) => {
    let t = 0;
    lens.forEach((len, s) => {
      for (let k = 0; k < len; k++) ids[b * c.sh.T + t++] = 10 * s + b;
    });
    if (t !== c.sh.T) throw new Error(`segments of row ${b} sum to ${t}, not T=${c.sh.T}`);
  });
  return ids;
}

/** Inputs: N(0, 1); cache rows past kvLength and before kvStart are NaN (never written in a server's cache). */
function inputs(rng: Rng, c: Case) {
  const { B, T, S, Sk, Hq, Hkv, Dh } = c.sh;
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
    if (!ok && bad.length < 6) bad.push(`  [${i}] got ${actual[i]} want ${ref[i]} (err ${err.toExponential(2)}, bound ${bound[i]!.toExponential(2)})`);
    if (Number.isFinite(err)) worst = Math.max(worst, err / bound[i]!);
  }
  if (bad.length) throw new Error(`${label}: elements outside their bounds\n${bad.join('\n')}`);
  return worst;
}

async function checkCase(rng: Rng, c: Case): Promise<void> {
  const { B, T, S, Sk, Hq, Hkv, Dh } = c.sh;
  const G = Hq / Hkv;
  const scale = 1 / Math.sqrt(Dh);
  const seg = segmentIds(c);
  const refOpts: AttnRefOptions = { causal: c.causal, scale, qOffset: c.qOffset ?? 0, segmentIds: seg, kvStart: c.kvStart };
  const x = inputs(rng, c);
  const rho = c.dtype === 'f16' ? 0 : R;
  // f16 storage: the reference sees the stored values; f32: the exact ones (the staging rounding is in ρ).
  const xq = c.dtype === 'f16' ? roundF16(x.q) : x.q;
  const xk = c.dtype === 'f16' ? roundF16(x.k) : x.k;
  const xv = c.dtype === 'f16' ? roundF16(x.v) : x.v;
  const up = (a: Float32Array, shape: number[]) => (c.dtype === 'f16' ? Tensor.from(f32ArrayToF16(a), shape, 'f16') : Tensor.from(a, shape));
  const q = up(x.q, [B, T, Hq, Dh]);
  const k = up(x.k, [B, Sk, Hkv, Dh]);
  const v = up(x.v, [B, Sk, Hkv, Dh]);
  const opts = {
    causal: c.causal, qOffset: c.qOffset, kvLength: S,
    segmentIds: seg ? Tensor.from(seg, [B * T]) : undefined,
    kvStart: c.kvStart ? Tensor.from(Int32Array.from(c.kvStart), [B]) : undefined,
  };
  const tiles = { fragments: { mode: 'emulated' as const, shape: c.shape } };
  const tag = `${c.label} [emulated ${shapeName(c.shape)}]`;

  // Per-pair magnitudes from the float64 data.
  const { P } = probabilities(c.sh, refOpts, xq, xk);
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

  const fwd = attentionForwardRef(c.sh, refOpts, xq, xk, xv);
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
  const wOut = expectWithin(out, fwd.out, outBound, `${tag} out`);
  const wLse = expectWithin(await r.lse.toFloat32(), fwd.lse, lseBound, `${tag} lse`);
  console.log(`${tag}: forward max |err|/bound: out ${wOut.toFixed(3)}, lse ${wLse.toFixed(3)}`);
  if (c.kvStart) return; // kvStart is forward-only

  const dOut = Tensor.from(x.dOut, [B, T, Hq, Dh]);
  const grads = attentionBackwardRef(c.sh, refOpts, xq, xk, xv, x.dOut, out);
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
  const fin = (bound: Float64Array, ref: Float64Array) => bound.map((e, i) => MARGIN * e + BWD_F32.atol + BWD_F32.rtol * Math.abs(ref[i]!));
  const g = flashAttentionBackward(q, k, v, r.out, r.lse, dOut, opts, {}, tiles);
  const wq = expectWithin(await g.dq!.toFloat32(), grads.dq, fin(dqB, grads.dq), `${tag} dQ`);
  const wk = expectWithin(await g.dk!.toFloat32(), grads.dk, fin(dkB, grads.dk), `${tag} dK`);
  const wv = expectWithin(await g.dv!.toFloat32(), grads.dv, fin(dvB, grads.dv), `${tag} dV`);
  console.log(`${tag}: backward max |err|/bound: dQ ${wq.toFixed(3)}, dK ${wk.toFixed(3)}, dV ${wv.toFixed(3)}`);
}

const S16 = { M: 16, N: 16, K: 16 };
const S16x8 = { M: 16, N: 8, K: 16 };
const S8x16 = { M: 8, N: 16, K: 16 };

describe('attention on emulated subgroup matrices vs float64 (forward and backward)', () => {
  // Emulated tiles: forward 16 query rows × 32 keys, backward 16 × 16, 2 subgroups, so these lengths
  // span several blocks with ragged last ones. Each shape at one head size or more (compile time),
  // each head size once; Dh 80 with 16-wide tiles deals 5 output tiles to 2 subgroups (a repeated
  // filler tile in the last round, as the native kernels have at Dh 80).
  const cases: Case[] = [
    { label: 'Dh=64 T=37 causal GQA 4 q/k/v f16', sh: mk(2, 37, 37, 8, 2, 64), shape: S16x8, causal: true, dtype: 'f16' },
    { label: 'Dh=80 T=41 causal packed 3 segments q/k/v f32', sh: mk(2, 41, 41, 2, 2, 80), shape: S16, causal: true, segments: [[13, 21, 7], [5, 30, 6]], dtype: 'f32' },
    { label: 'Dh=96 T=7 qOffset=12 S=19 of 24 non-causal GQA 8', sh: mk(1, 7, 19, 8, 1, 96, 24), shape: S8x16, causal: false, qOffset: 12, dtype: 'f16' },
    { label: 'Dh=128 T=1 qOffset=44 S=45 of 48 causal GQA 2 kvStart [17, 0, 44] unwritten NaN', sh: mk(3, 1, 45, 4, 2, 128, 48), shape: S16, causal: true, qOffset: 44, kvStart: [17, 0, 44], dtype: 'f16' },
    { label: 'Dh=128 T=13 causal kvStart [5, 0] unwritten NaN (prefill, rows fully masked)', sh: mk(2, 13, 13, 2, 1, 128), shape: S16, causal: true, kvStart: [5, 0], dtype: 'f16' },
  ];
  for (const c of cases) it(c.label, async () => checkCase(testRng(`attention sgmatrix ${c.label}`), c), TIMEOUT);
});

describe('native subgroup-matrix attention kernels compile on Dawn Null', () => {
  it('every native variant in the registry: zero errors, zero warnings', async () => {
    const natives = kernelVariants().filter((v) => v.family === 'attention' && v.mode === 'native');
    expect(natives.length).toBe(3 * 3 * 4 * 4); // passes × shapes × head dims × (q, kv) storage dtypes
    expect(natives.map((v) => v.key)).toEqual(enumerateAttentionVariants().filter((v) => v.mode === 'native').map((v) => v.key));
    const nc = await nullCompiler();
    const failed: string[] = [];
    try {
      for (const v of natives) {
        const problems = await nc.check(v.code(), { workgroupBytes: v.workgroupBytes, label: v.key });
        if (problems.length) failed.push(`${v.key}: ${problems.join('; ')}`);
      }
    } finally {
      nc.destroy();
    }
    expect(failed).toEqual([]);
  }, TIMEOUT);
});

describe('attention chooser and subgroup matrices', () => {
  const f16 = (M: number, N: number, K: number, res = 'f32'): SubgroupMatrixConfig => ({ componentType: 'f16', resultComponentType: res, M, N, K });
  const base: AttentionCaps = {
    features: new Set(['subgroups', 'shader-f16', 'timestamp-query', 'chromium-experimental-subgroup-matrix']),
    subgroupMinSize: 32, subgroupMaxSize: 32, maxWorkgroupStorage: 48 * 1024, maxInvocations: 1024, software: false, precision: 'fp16-mixed',
  };
  // Adapter descriptions like real ones (Dawn's subgroupMatrixConfigs; f16 and int8 entries).
  const nvidia: AttentionCaps = { ...base, subgroupMatrixConfigs: [f16(16, 8, 8), f16(16, 8, 16), f16(16, 16, 16), f16(16, 16, 16, 'f16'), { componentType: 'i8', resultComponentType: 'i32', M: 16, N: 8, K: 32 }] };
  const intel: AttentionCaps = { ...base, subgroupMinSize: 16, subgroupMaxSize: 32, subgroupMatrixConfigs: [f16(8, 16, 16), f16(8, 16, 16, 'f16')] };
  const apple: AttentionCaps = { ...base, subgroupMatrixConfigs: [f16(8, 8, 8), f16(8, 8, 8, 'f16'), { componentType: 'f32', resultComponentType: 'f32', M: 8, N: 8, K: 8 }] };
  const none: AttentionCaps = { ...base, features: new Set(['subgroups', 'shader-f16']), subgroupMatrixConfigs: [] };
  const train = (Dh: number): AttentionShape => ({ B: 2, T: 512, S: 512, Hq: 32, Hkv: 8, Dh, qType: 'f16', kvType: 'f16' });

  it('NVIDIA-like: native kernels in fp16-mixed at Llama head sizes, 16x16x16 first', () => {
    for (const Dh of [64, 80, 96, 128]) {
      expect(chooseAttentionVariant('forward', train(Dh), nvidia).name).toBe('forward.tiled.sgmatrix');
      expect(chooseAttentionVariant('backward', train(Dh), nvidia).name).toBe('backward.sgmatrix');
      expect(nativeFragmentShape('forward', train(Dh), nvidia)).toEqual(S16);
    }
    // Only 16x8x16 (a list without 16x16x16) is taken too; 16x8x8 alone is not a shape the kernels have.
    expect(nativeFragmentShape('backward', train(64), { ...nvidia, subgroupMatrixConfigs: [f16(16, 8, 8), f16(16, 8, 16)] })).toEqual(S16x8);
    expect(nativeFragmentShape('backward', train(64), { ...nvidia, subgroupMatrixConfigs: [f16(16, 8, 8)] })).toBeNull();
    // Other head sizes, decoding (few query rows: the split layout), fp32, f16 results only: portable.
    expect(chooseAttentionVariant('forward', train(112), nvidia).name).toBe('forward.tiled.subgroup');
    expect(chooseAttentionVariant('forward', { ...train(128), T: 1 }, nvidia).name).toBe('forward.split.subgroup');
    expect(chooseAttentionVariant('forward', train(128), { ...nvidia, precision: 'fp32' }).name).toBe('forward.tiled.subgroup');
    expect(chooseAttentionVariant('backward', train(128), { ...nvidia, subgroupMatrixConfigs: [f16(16, 16, 16, 'f16')] }).name).toBe('backward.subgroup');
    // 48 KiB is what the tiles need; a 32 KiB device keeps the portable kernels.
    expect(chooseAttentionVariant('backward', train(128), { ...nvidia, maxWorkgroupStorage: 32 * 1024 }).name).toBe('backward.subgroup');
  });

  it('Intel-like (8x16x16, subgroups of 16 to 32), Apple-like (8x8x8), none: portable kernels', () => {
    // The kernels deal tiles to workgroup/32 subgroups: hardware subgroups must be exactly 32 lanes.
    expect(chooseAttentionVariant('forward', train(128), intel).name).toBe('forward.tiled.subgroup');
    expect(nativeFragmentShape('forward', train(128), { ...intel, subgroupMinSize: 32 })).toEqual(S8x16);
    expect(chooseAttentionVariant('forward', train(128), apple).name).toBe('forward.tiled.subgroup');
    expect(chooseAttentionVariant('backward', train(128), apple).name).toBe('backward.subgroup');
    expect(chooseAttentionVariant('forward', train(128), none).name).toBe('forward.tiled.subgroup');
    expect(chooseAttentionVariant('backward', train(128), none).name).toBe('backward.subgroup');
  });

  it('native kernels where the adapter does not offer their shape, and the split layout, are refused with the reason', () => {
    const q = Tensor.empty([1, 4, 2, 64]);
    const k = Tensor.empty([1, 4, 1, 64]);
    const native = () => flashAttentionForward(q, k, k, { causal: true }, 'tiled', { fragments: { mode: 'native', shape: S16 } });
    const offered = engine().dev.subgroupMatrixConfigs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32' && c.M === 16 && c.N === 16 && c.K === 16);
    if (offered) expect(native).not.toThrow();
    else expect(native).toThrow(/16×16×16 is not offered by this adapter/);
    expect(() => flashAttentionForward(q, k, k, { causal: true }, 'split', { fragments: { mode: 'emulated', shape: S16 } })).toThrow(/tiled layout only/);
    const x48 = Tensor.empty([1, 4, 1, 48]);
    expect(() => flashAttentionForward(x48, x48, x48, { causal: true }, 'tiled', { fragments: { mode: 'emulated', shape: S16 } })).toThrow(/head dim 48 not supported/);
  });

  it('FINLLM_DISABLE_FEATURES=chromium-experimental-subgroup-matrix removes the feature the native variants require', async () => {
    // Dawn's Null adapter offers the feature (and no configurations), so a device made there shows the switch.
    const prev = process.env.FINLLM_DISABLE_FEATURES;
    const devices: GpuDevice[] = [];
    try {
      delete process.env.FINLLM_DISABLE_FEATURES;
      devices.push(await GpuDevice.create({ backend: 'null' }));
      process.env.FINLLM_DISABLE_FEATURES = 'chromium-experimental-subgroup-matrix';
      devices.push(await GpuDevice.create({ backend: 'null' }));
    } finally {
      if (prev === undefined) delete process.env.FINLLM_DISABLE_FEATURES;
      else process.env.FINLLM_DISABLE_FEATURES = prev;
    }
    const [on, off] = devices as [GpuDevice, GpuDevice];
    expect(on.features.has('chromium-experimental-subgroup-matrix')).toBe(true);
    expect(off.features.has('chromium-experimental-subgroup-matrix')).toBe(false);
    const caps = (d: GpuDevice): AttentionCaps => ({ ...nvidia, features: d.features });
    expect(chooseAttentionVariant('forward', train(128), caps(on)).name).toBe('forward.tiled.sgmatrix');
    expect(chooseAttentionVariant('forward', train(128), caps(off)).name).not.toMatch(/sgmatrix/);
    for (const d of devices) d.destroy();
  });
});
