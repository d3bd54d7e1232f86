import { describe, expect, it } from 'vitest';
import { backward } from '../../src/engine/autograd.js';
import { Tensor, engine, tidy } from '../../src/engine/tensor.js';
import type { Rng } from '../../src/engine/random.js';
import {
  flashAttention,
  flashAttentionBackward,
  flashAttentionForward,
  type AttentionTiles,
  type ForwardVariant,
} from '../../src/kernels/attention.js';
import { binary, sumToSuffix } from '../../src/kernels/elementwise.js';
import { attentionBackwardRef, attentionForwardRef, type AttnRefOptions, type AttnRefShape } from '../reference/attention.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';
import { gradCheck } from '../helpers/gradcheck.js';

useEngine();

// Tolerances. Inputs are N(0, 1) and scale = 1/sqrt(Dh), so scores are O(1) and softmax weights ≤ 1.
// A score is a Dh-term f32 dot product (error ≲ sqrt(Dh)·2⁻²⁴·|q||k|·scale ≈ 1e-6 for Dh ≤ 128); the
// online softmax multiplies rescale factors exp2(m_old − m_new) once per 8-key chunk and exp2 itself is
// an approximation of a few ulp on GPUs, so each weight carries ~1e-6 relative error, and the output,
// a convex combination of O(1) values, ~1e-6 absolute: 1e-5 absolute + 1e-5 relative leaves 10× margin.
// lse is O(log S + |s|) and gets the same bounds. Gradients sum up to S (dK, dV: up to T·Hq/Hkv)
// products whose magnitudes reach |dO|·|v| ~ Dh·scale, and dS = P·(dP − D) cancels two O(1) terms,
// so their absolute error is a few 1e-6 (measured max ≈ 2e-6): 3e-5 absolute + 1e-4 relative.
const FWD_TOL = { atol: 1e-5, rtol: 1e-5 };
const BWD_TOL = { atol: 3e-5, rtol: 1e-4 };

interface Case {
  label: string;
  sh: AttnRefShape;
  causal: boolean;
  qOffset?: number;
  /** Segment lengths per batch row (each must sum to T), ids 0, 1, 2, ... */
  segments?: number[][];
  scale?: number;
  tiles?: AttentionTiles;
  variants: ForwardVariant[];
  /** First valid key per batch row (left padding); forward only. */
  kvStart?: number[];
}

function segmentIds(c: Case): Int32Array | undefined {
  if (!c.segments) return undefined;
  const ids = new Int32Array(c.sh.B * c.sh.T);
  c.segments.forEach((lens, b) => {
    let t = 0;
    lens.forEach((len, s) => {
      for (let k = 0; k < len; k++) ids[b * c.sh.T + t++] = 10 * s + b; // distinct ids per row and segment
    });
    if (t !== c.sh.T) throw new Error(`segments of row ${b} sum to ${t}, not T=${c.sh.T}`);
  });
  return ids;
}

function inputs(rng: Rng, c: Case) {
  const { B, T, S, Sk, Hq, Hkv, Dh } = c.sh;
  const q = rng.normalArray(B * T * Hq * Dh);
  const k = rng.normalArray(B * Sk * Hkv * Dh);
  const v = rng.normalArray(B * Sk * Hkv * Dh);
  // Cache rows past kvLength hold garbage in real use: make it NaN so any read of them shows.
  for (let b = 0; b < B; b++)
    for (let j = S; j < Sk; j++)
      for (let e = 0; e < Hkv * Dh; e++) {
        k[(b * Sk + j) * Hkv * Dh + e] = NaN;
        v[(b * Sk + j) * Hkv * Dh + e] = NaN;
      }
  const dOut = rng.normalArray(B * T * Hq * Dh);
  return { q, k, v, dOut };
}

async function checkCase(rng: Rng, c: Case): Promise<void> {
  const { B, T, Sk, Hq, Hkv, Dh } = c.sh;
  const seg = segmentIds(c);
  const refOpts: AttnRefOptions = { causal: c.causal, scale: c.scale ?? 1 / Math.sqrt(Dh), qOffset: c.qOffset ?? 0, segmentIds: seg, kvStart: c.kvStart };
  const x = inputs(rng, c);
  const fwd = attentionForwardRef(c.sh, refOpts, x.q, x.k, x.v);
  const grads = c.kvStart ? null : attentionBackwardRef(c.sh, refOpts, x.q, x.k, x.v, x.dOut);
  const opts = {
    causal: c.causal,
    scale: c.scale,
    qOffset: c.qOffset,
    kvLength: c.sh.S,
    segmentIds: seg ? Tensor.from(seg, [B * T]) : undefined,
    kvStart: c.kvStart ? Tensor.from(Int32Array.from(c.kvStart), [B]) : undefined,
  };
  const q = Tensor.from(x.q, [B, T, Hq, Dh]);
  const k = Tensor.from(x.k, [B, Sk, Hkv, Dh]);
  const v = Tensor.from(x.v, [B, Sk, Hkv, Dh]);
  const dOut = Tensor.from(x.dOut, [B, T, Hq, Dh]);
  for (const variant of c.variants) {
    const label = `${c.label} [${variant}]`;
    const { out, lse } = flashAttentionForward(q, k, v, opts, variant, c.tiles);
    expectClose(await out.toFloat32(), fwd.out, FWD_TOL, `${label} out`);
    expectClose(await lse.toFloat32(), fwd.lse, FWD_TOL, `${label} lse`);
    if (grads && variant === c.variants[0]) {
      const g = flashAttentionBackward(q, k, v, out, lse, dOut, opts, {}, c.tiles);
      expectClose(await g.dq!.toFloat32(), grads.dq, BWD_TOL, `${label} dQ`);
      expectClose(await g.dk!.toFloat32(), grads.dk, BWD_TOL, `${label} dK`);
      expectClose(await g.dv!.toFloat32(), grads.dv, BWD_TOL, `${label} dV`);
    }
  }
}

const shape = (B: number, T: number, S: number, Hq: number, Hkv: number, Dh: number, Sk = S): AttnRefShape => ({ B, T, S, Sk, Hq, Hkv, Dh });
const BOTH: ForwardVariant[] = ['tiled', 'decode'];
// lavapipe compiles each new pipeline slowly (Dh = 64 backward: ~1-2 minutes on a loaded 2-core machine);
// Mesa's shader cache makes later runs fast.
const COMPILE_TIMEOUT = 900_000;
const SMALL: AttentionTiles = { rows: 16, block: 8 };

describe('flash attention vs float64 reference (forward: out, lse; backward: dQ, dK, dV)', () => {
  const cases: Case[] = [
    { label: 'T=1 non-causal GQA Dh=16', sh: shape(2, 1, 1, 4, 2, 16), causal: false, variants: BOTH },
    { label: 'T=5 causal GQA Dh=16', sh: shape(2, 5, 5, 4, 2, 16), causal: true, variants: BOTH },
    { label: 'T=33 non-causal MQA Dh=12', sh: shape(1, 33, 33, 4, 1, 12), causal: false, variants: BOTH },
    { label: 'T=33 causal MQA Dh=12 small tiles', sh: shape(1, 33, 33, 4, 1, 12), causal: true, tiles: SMALL, variants: ['tiled'] },
    { label: 'T=70 causal Dh=64', sh: shape(1, 70, 70, 2, 2, 64), causal: true, variants: BOTH },
    { label: 'T=70 non-causal GQA Dh=64', sh: shape(1, 70, 70, 4, 2, 64), causal: false, variants: ['tiled'] },
    { label: 'T=20, S=37 cross non-causal Dh=12 scale 0.3', sh: shape(2, 20, 37, 2, 1, 12), causal: false, scale: 0.3, variants: BOTH },
  ];
  for (const c of cases) {
    it(c.label, async () => {
      await checkCase(testRng(`attention ${c.label}`), c);
    }, COMPILE_TIMEOUT);
  }
});

describe('flash attention: sequence packing with segment ids', () => {
  // Three segments per row, different layouts per batch row; small tiles so blocks are skipped.
  const segments = [[23, 40, 7], [5, 30, 35]];
  const cases: Case[] = [
    { label: 'T=70 causal 3 segments GQA Dh=16', sh: shape(2, 70, 70, 4, 2, 16), causal: true, segments, variants: BOTH },
    { label: 'T=70 causal 3 segments small tiles', sh: shape(2, 70, 70, 4, 2, 16), causal: true, segments, tiles: SMALL, variants: ['tiled'] },
    { label: 'T=70 non-causal 3 segments MQA small tiles', sh: shape(2, 70, 70, 2, 1, 12), causal: false, segments, tiles: SMALL, variants: BOTH },
  ];
  for (const c of cases) {
    it(c.label, async () => {
      await checkCase(testRng(`attention ${c.label}`), c);
    }, COMPILE_TIMEOUT);
  }
});

describe('flash attention: decode with a KV cache (qOffset, kvLength < cache rows)', () => {
  const cases: Case[] = [
    { label: 'T=1 qOffset=20 S=21 of 32 cached GQA', sh: shape(2, 1, 21, 4, 2, 16, 32), causal: true, qOffset: 20, variants: ['decode', 'tiled'] },
    { label: 'T=1 qOffset=150 S=151 of 160 MQA Dh=64', sh: shape(1, 1, 151, 4, 1, 64, 160), causal: true, qOffset: 150, variants: ['decode', 'tiled'] },
    { label: 'T=5 qOffset=40 S=45 of 48 non-causal Dh=16 small tiles', sh: shape(1, 5, 45, 4, 2, 16, 48), causal: false, qOffset: 40, tiles: SMALL, variants: ['tiled', 'decode'] },
    { label: 'T=3 qOffset=10 S=13 of 16', sh: shape(1, 3, 13, 2, 2, 12, 16), causal: true, qOffset: 10, variants: ['decode', 'tiled'] },
    { label: 'T=17 qOffset=5 S=22 of 30 small tiles', sh: shape(1, 17, 22, 2, 1, 16, 30), causal: true, qOffset: 5, tiles: SMALL, variants: BOTH },
  ];
  for (const c of cases) {
    it(c.label, async () => {
      await checkCase(testRng(`attention ${c.label}`), c);
    }, COMPILE_TIMEOUT);
  }
});

describe('flash attention: per-row kvStart (left-padded batches, forward only)', () => {
  // Row b's keys j < kvStart[b] are padding. The padded keys hold finite random values (real pad
  // tokens' K/V), so a kernel that ignored kvStart would give a different softmax; kvStart ≥ the
  // causal limit makes early query rows fully masked (0 output, lse −∞). Starts past a tile block
  // (small tiles, block 8) exercise the block skip, and kvStart 0 the unpadded row.
  const cases: Case[] = [
    { label: 'prefill T=13 causal GQA kvStart [0, 5, 12]', sh: shape(3, 13, 13, 4, 2, 16), causal: true, kvStart: [0, 5, 12], variants: BOTH },
    { label: 'prefill T=37 causal MQA Dh=12 small tiles kvStart [17, 0]', sh: shape(2, 37, 37, 4, 1, 12), causal: true, kvStart: [17, 0], tiles: SMALL, variants: ['tiled'] },
    { label: 'decode T=1 qOffset=20 S=21 of 32 kvStart [3, 0, 20]', sh: shape(3, 1, 21, 4, 2, 16, 32), causal: true, qOffset: 20, kvStart: [3, 0, 20], variants: ['decode', 'tiled'] },
    { label: 'decode T=1 qOffset=150 S=151 of 160 Dh=64 kvStart [131, 7]', sh: shape(2, 1, 151, 4, 1, 64, 160), causal: true, qOffset: 150, kvStart: [131, 7], variants: ['decode', 'tiled'] },
    { label: 'T=3 qOffset=10 S=13 non-causal small tiles kvStart [9, 2]', sh: shape(2, 3, 13, 2, 2, 12, 16), causal: false, qOffset: 10, kvStart: [9, 2], tiles: SMALL, variants: BOTH },
  ];
  for (const c of cases) {
    it(c.label, async () => {
      await checkCase(testRng(`attention ${c.label}`), c);
    }, COMPILE_TIMEOUT);
  }

  it('fully padded query rows give exactly 0 and lse -inf; kvStart with autograd throws', async () => {
    const c: Case = { label: 'kvStart explicit', sh: shape(2, 6, 6, 2, 1, 16), causal: true, kvStart: [4, 0], variants: BOTH };
    const x = inputs(testRng('attention kvStart explicit'), c);
    const q = Tensor.from(x.q, [2, 6, 2, 16]);
    const k = Tensor.from(x.k, [2, 6, 1, 16]);
    const v = Tensor.from(x.v, [2, 6, 1, 16]);
    const kvStart = Tensor.from(new Int32Array([4, 0]), [2]);
    for (const variant of BOTH) {
      const { out, lse } = flashAttentionForward(q, k, v, { causal: true, kvStart }, variant);
      const o = await out.toFloat32();
      const l = await lse.toFloat32();
      for (let i = 0; i < 4; i++) {
        for (let e = 0; e < 2 * 16; e++) expect(o[i * 32 + e]).toBe(0);
        for (let h = 0; h < 2; h++) expect(l[h * 6 + i]).toBe(-Infinity);
      }
      expect(o.every(Number.isFinite)).toBe(true);
    }
    q.requiresGrad = true;
    expect(() => flashAttention(q, k, v, { causal: true, kvStart })).toThrow(/kvStart/);
    expect(() => flashAttention(q, k, v, { causal: true, kvStart: Tensor.from(new Int32Array(3), [3]) })).toThrow(/kvStart has 3/);
  }, COMPILE_TIMEOUT);
});

describe('flash attention: fully masked rows', () => {
  it('rows that see no key give 0 output, lse -inf and zero gradients, never NaN', async () => {
    // Causal with qOffset = -3: query rows 0..2 precede every key.
    const c: Case = { label: 'qOffset=-3', sh: shape(1, 12, 12, 2, 1, 16), causal: true, qOffset: -3, variants: BOTH };
    await checkCase(testRng('attention fully masked'), c);
    // And explicitly: the reference has exact zeros and -inf there; expectClose would accept NaN for neither.
    const x = inputs(testRng('attention fully masked explicit'), c);
    const q = Tensor.from(x.q, [1, 12, 2, 16]);
    const k = Tensor.from(x.k, [1, 12, 1, 16]);
    const v = Tensor.from(x.v, [1, 12, 1, 16]);
    for (const variant of BOTH) {
      const { out, lse } = flashAttentionForward(q, k, v, { causal: true, qOffset: -3 }, variant);
      const o = await out.toFloat32();
      const l = await lse.toFloat32();
      for (let i = 0; i < 3; i++) {
        for (let e = 0; e < 2 * 16; e++) expect(o[i * 32 + e]).toBe(0);
        for (let h = 0; h < 2; h++) expect(l[h * 12 + i]).toBe(-Infinity);
      }
      expect(o.every(Number.isFinite)).toBe(true);
    }
  });
});

describe('flash attention autograd', () => {
  it('finite-difference check of sum(w ∘ attention(q, k, v)), causal GQA with segments', async () => {
    const rng = testRng('attention fd');
    const [B, T, Hq, Hkv, Dh] = [1, 6, 2, 1, 12];
    const w = rng.normalArray(B * T * Hq * Dh);
    const seg = Tensor.from(new Int32Array([0, 0, 0, 0, 1, 1]), [6]).keep();
    await gradCheck(
      'flashAttention',
      ([q, k, v]) => sumToSuffix(binary('mul', flashAttention(q!, k!, v!, { causal: true, segmentIds: seg }), Tensor.from(w, [B, T, Hq, Dh])), [1]),
      [
        { data: rng.normalArray(B * T * Hq * Dh), shape: [B, T, Hq, Dh] },
        { data: rng.normalArray(B * T * Hkv * Dh), shape: [B, T, Hkv, Dh] },
        { data: rng.normalArray(B * T * Hkv * Dh), shape: [B, T, Hkv, Dh] },
      ],
      rng,
    );
    seg.dispose();
  });

  it('autograd gradients match the reference and tidy frees everything', async () => {
    const rng = testRng('attention autograd');
    const sh = shape(1, 11, 11, 4, 2, 16);
    const c: Case = { label: 'autograd', sh, causal: true, variants: ['tiled'] };
    const x = inputs(rng, c);
    const ref = attentionBackwardRef(sh, { causal: true, scale: 1 / Math.sqrt(16), qOffset: 0 }, x.q, x.k, x.v, x.dOut);
    const q = Tensor.from(x.q, [1, 11, 4, 16]).keep();
    const k = Tensor.from(x.k, [1, 11, 2, 16]).keep();
    const v = Tensor.from(x.v, [1, 11, 2, 16]).keep();
    for (const t of [q, k, v]) t.requiresGrad = true;
    await engine().dev.sync();
    const before = engine().pool.stats();
    tidy(() => backward(flashAttention(q, k, v, { causal: true }), Tensor.from(x.dOut, [1, 11, 4, 16])));
    expectClose(await q.grad!.toFloat32(), ref.dq, BWD_TOL, 'dQ');
    expectClose(await k.grad!.toFloat32(), ref.dk, BWD_TOL, 'dK');
    expectClose(await v.grad!.toFloat32(), ref.dv, BWD_TOL, 'dV');
    for (const t of [q, k, v]) {
      t.grad!.dispose();
      t.grad = null;
    }
    await engine().dev.sync();
    const after = engine().pool.stats();
    expect(after.liveBuffers).toBe(before.liveBuffers);
    expect(after.liveBytes).toBe(before.liveBytes);
    for (const t of [q, k, v]) t.dispose();
  });

  it('rejects bad shapes with a clear message', () => {
    const q = Tensor.empty([1, 4, 3, 16]);
    const k = Tensor.empty([1, 4, 2, 16]);
    expect(() => flashAttention(q, k, k, { causal: true })).toThrow(/multiple of Hkv/);
    const k2 = Tensor.empty([1, 4, 1, 16]);
    expect(() => flashAttention(q, k2, k2, { causal: true, kvLength: 5 })).toThrow(/kvLength/);
    expect(() => flashAttention(q, k2, k2, { causal: true, kvLength: 3, segmentIds: Tensor.from(new Int32Array(4), [4]) })).toThrow(/T == S/);
  });
});
