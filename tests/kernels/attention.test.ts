import { describe, expect, it } from 'vitest';
import {
  type AttnRefOptions,
  type AttnRefShape,
  attentionBackwardRef,
  attentionForwardRef,
} from '../../reference/attention.js';
import { backward } from '../../src/engine/autograd.js';
import { GpuDevice } from '../../src/engine/device.js';
import type { Rng } from '../../src/engine/random.js';
import { engine, Tensor, tidy } from '../../src/engine/tensor.js';
import { f16ArrayToF32, f32ArrayToF16 } from '../../src/io/dtype.js';
import {
  ATTENTION_VARIANTS,
  type AttentionCaps,
  type AttentionShape,
  type AttentionTiles,
  attentionUnroll,
  attentionVariantsFor,
  chooseAttentionVariant,
  deviceAttentionCaps,
  type Exchange,
  type ForwardLayout,
  flashAttention,
  flashAttentionBackward,
  flashAttentionForward,
  simtDeviceKeys,
  sliceGeometry,
} from '../../src/kernels/attention.js';
import { binary, cast, sumToSuffix } from '../../src/kernels/elementwise.js';
import { kernelVariants } from '../../src/kernels/variants.js';
import { gradCheck } from '../helpers/gradcheck.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';

useEngine();

// Tolerances (f32 arithmetic). Inputs are N(0, 1) and scale = 1/sqrt(Dh), so scores are O(1) and
// softmax weights ≤ 1. A score is a Dh-term f32 dot product summed in slices (error ≲
// sqrt(Dh)·2⁻²⁴·|q||k|·scale ≈ 1e-6 for Dh ≤ 256); the online softmax multiplies rescale factors
// exp2(m_old − m_new) once per 8-key step and exp2 itself is an approximation of a few ulp on GPUs, so
// each weight carries ~1e-6 relative error, and the output, a convex combination of O(1) values,
// ~1e-6 absolute: 1e-5 absolute + 1e-5 relative leaves 10× margin; split partials merged by
// logsumexp add one more rescale. lse is O(log S + |s|) and gets the same bounds. Gradients sum up to
// S (dK, dV: up to T·Hq/Hkv) products whose magnitudes reach |dO|·|v| ~ Dh·scale, and dS = P·(dP − D)
// cancels two O(1) terms, so their absolute error is a few 1e-6 (measured max ≈ 2e-6 at Dh 64):
// 3e-5 absolute + 1e-4 relative.
const FWD_TOL = { atol: 1e-5, rtol: 1e-5 };
const BWD_TOL = { atol: 3e-5, rtol: 1e-4 };
/** Unit roundoff of f16 (11-bit significand): every f16-stored value is within u·|x| of the f32 it came from. */
const F16_U = 2 ** -11;

interface Case {
  label: string;
  sh: AttnRefShape;
  causal: boolean;
  qOffset?: number;
  /** Segment lengths per batch row (each must sum to T), ids 0, 1, 2, ... */
  segments?: number[][];
  scale?: number;
  tiles?: AttentionTiles;
  layouts: ForwardLayout[];
  /** Exchanges to run: every one the device can run at this head dim (default), or the one flashAttention picks. */
  exchanges?: Exchange[] | 'default';
  /** Split layout: chunk counts to run (default: the launcher's choice only). */
  splits?: (number | undefined)[];
  /** First valid key per batch row (left padding); forward only. */
  kvStart?: number[];
  /** The keys before kvStart were never written (NaN), as in a continuous-batching server's cache. */
  unwrittenPadding?: boolean;
  /** Skip the backward (compile time: the case is about the forward). */
  forwardOnly?: boolean;
  /** Storage dtypes (f16: packed, values rounded to f16 first so the f64 reference sees the same inputs). */
  qType?: 'f32' | 'f16';
  kvType?: 'f32' | 'f16';
  /**
   * Also run the backward from the output stored in f16 (as fp16-mixed training keeps it), against
   * the reference with D = dO·O taken from those f16 values: the kernel reads exactly them, so the
   * f32 tolerance applies.
   */
  f16Out?: boolean;
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

const roundF16 = (x: Float32Array): Float32Array => f16ArrayToF32(f32ArrayToF16(x));

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
  if (c.unwrittenPadding)
    c.kvStart?.forEach((start, b) => {
      for (let j = 0; j < start; j++)
        for (let e = 0; e < Hkv * Dh; e++) {
          k[(b * Sk + j) * Hkv * Dh + e] = NaN;
          v[(b * Sk + j) * Hkv * Dh + e] = NaN;
        }
    });
  const dOut = rng.normalArray(B * T * Hq * Dh);
  return { q, k, v, dOut };
}

function upload(x: Float32Array, shape: number[], dtype: 'f32' | 'f16'): Tensor {
  return dtype === 'f32' ? Tensor.from(x, shape) : Tensor.from(f32ArrayToF16(x), shape, 'f16');
}

/** The exchange flashAttention picks on this device for head dim Dh (the chooser's). */
function deviceDefaultExchange(Dh: number): Exchange {
  const s: AttentionShape = { B: 1, T: 512, S: 512, Hq: 8, Hkv: 8, Dh, qType: 'f32', kvType: 'f32' };
  return chooseAttentionVariant('forward', s, deviceAttentionCaps()).exchange;
}

/** The exchanges this device can run for head dim Dh (subgroup needs 2 ≤ TPR ≤ the subgroup size). */
function deviceExchanges(Dh: number): Exchange[] {
  const caps = deviceAttentionCaps();
  const { TPR } = sliceGeometry(Dh);
  const sg = caps.features.has('subgroups') && TPR >= 2 && TPR <= caps.subgroupMinSize;
  return sg ? ['workgroup', 'subgroup'] : ['workgroup'];
}

async function checkCase(rng: Rng, c: Case): Promise<void> {
  const { B, T, Sk, Hq, Hkv, Dh } = c.sh;
  const qType = c.qType ?? 'f32';
  const kvType = c.kvType ?? 'f32';
  const seg = segmentIds(c);
  const refOpts: AttnRefOptions = {
    causal: c.causal,
    scale: c.scale ?? 1 / Math.sqrt(Dh),
    qOffset: c.qOffset ?? 0,
    segmentIds: seg,
    kvStart: c.kvStart,
  };
  const x = inputs(rng, c);
  // The reference sees exactly the values the kernel reads: f16-stored inputs are rounded first.
  const xq = qType === 'f16' ? roundF16(x.q) : x.q;
  const xk = kvType === 'f16' ? roundF16(x.k) : x.k;
  const xv = kvType === 'f16' ? roundF16(x.v) : x.v;
  const fwd = attentionForwardRef(c.sh, refOpts, xq, xk, xv);
  const grads = c.kvStart || c.forwardOnly ? null : attentionBackwardRef(c.sh, refOpts, xq, xk, xv, x.dOut);
  const opts = {
    causal: c.causal,
    scale: c.scale,
    qOffset: c.qOffset,
    kvLength: c.sh.S,
    segmentIds: seg ? Tensor.from(seg, [B * T]) : undefined,
    kvStart: c.kvStart ? Tensor.from(Int32Array.from(c.kvStart), [B]) : undefined,
  };
  const q = upload(x.q, [B, T, Hq, Dh], qType);
  const k = upload(x.k, [B, Sk, Hkv, Dh], kvType);
  const v = upload(x.v, [B, Sk, Hkv, Dh], kvType);
  const dOut = Tensor.from(x.dOut, [B, T, Hq, Dh]);
  const exchanges = c.exchanges === 'default' ? [deviceDefaultExchange(Dh)] : (c.exchanges ?? deviceExchanges(Dh));
  let saved: { out: Tensor; lse: Tensor } | null = null;
  for (const exchange of exchanges)
    for (const layout of c.layouts)
      for (const splits of layout === 'split' ? (c.splits ?? [undefined]) : [undefined]) {
        const label = `${c.label} [${layout}${splits !== undefined ? ` splits ${splits}` : ''}, ${exchange}]`;
        const tiles = { ...c.tiles, exchange, splits };
        const r = flashAttentionForward(q, k, v, opts, layout, tiles);
        expectClose(await r.out.toFloat32(), fwd.out, FWD_TOL, `${label} out`);
        expectClose(await r.lse.toFloat32(), fwd.lse, FWD_TOL, `${label} lse`);
        saved ??= r;
      }
  if (!grads || !saved) return;
  for (const exchange of exchanges) {
    const label = `${c.label} [backward, ${exchange}]`;
    const g = flashAttentionBackward(q, k, v, saved.out, saved.lse, dOut, opts, {}, { ...c.tiles, exchange });
    expectClose(await g.dq!.toFloat32(), grads.dq, BWD_TOL, `${label} dQ`);
    expectClose(await g.dk!.toFloat32(), grads.dk, BWD_TOL, `${label} dK`);
    expectClose(await g.dv!.toFloat32(), grads.dv, BWD_TOL, `${label} dV`);
  }
  if (!c.f16Out) return;
  const out16 = cast(saved.out, 'f16');
  const outRead = await cast(out16, 'f32').toFloat32();
  const grads16 = attentionBackwardRef(c.sh, refOpts, xq, xk, xv, x.dOut, outRead);
  for (const exchange of exchanges) {
    const label = `${c.label} [backward, f16 out, ${exchange}]`;
    const g = flashAttentionBackward(q, k, v, out16, saved.lse, dOut, opts, {}, { ...c.tiles, exchange });
    expectClose(await g.dq!.toFloat32(), grads16.dq, BWD_TOL, `${label} dQ`);
    expectClose(await g.dk!.toFloat32(), grads16.dk, BWD_TOL, `${label} dK`);
    expectClose(await g.dv!.toFloat32(), grads16.dv, BWD_TOL, `${label} dV`);
  }
}

const shape = (B: number, T: number, S: number, Hq: number, Hkv: number, Dh: number, Sk = S): AttnRefShape => ({
  B,
  T,
  S,
  Sk,
  Hq,
  Hkv,
  Dh,
});
const BOTH: ForwardLayout[] = ['tiled', 'split'];
// A cold lavapipe compile of one attention pipeline takes 1-5 s (bench/attention-compile.ts); a
// case compiles up to eight. The timeout only guards against a hang on a heavily loaded machine.
const COMPILE_TIMEOUT = 300_000;
const SMALL: AttentionTiles = { rows: 16, block: 8 };

describe('flash attention at every Llama head size (Dh 64, 80, 96, 128), both exchanges, vs float64', () => {
  // T = 67 (prime) spans several query row blocks and key blocks of every tile; GQA ratios 1, 4 and 8;
  // the split layout with 1 and 3 KV chunks; T = 1 (a single query row per head; the split layout's
  // 8-row workgroups, with the default exchange only to save compiles).
  for (const Dh of [64, 80, 96, 128]) {
    const cases: Case[] = [
      {
        label: `Dh=${Dh} T=67 causal GQA 4`,
        sh: shape(2, 67, 67, 8, 2, Dh),
        causal: true,
        layouts: BOTH,
        splits: [1, 3],
      },
      {
        label: `Dh=${Dh} T=1 non-causal GQA 8`,
        sh: shape(2, 1, 1, 8, 1, Dh),
        causal: false,
        layouts: BOTH,
        exchanges: 'default',
      },
      {
        label: `Dh=${Dh} T=67 causal MHA 3 segments`,
        sh: shape(2, 67, 67, 2, 2, Dh),
        causal: true,
        segments: [
          [23, 40, 4],
          [5, 30, 32],
        ],
        layouts: ['tiled'],
      },
    ];
    for (const c of cases) it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);
  }
});

describe('flash attention: every multiple of 16 up to 256 (default exchange)', () => {
  for (const Dh of [16, 32, 48, 112, 144, 160, 176, 192, 208, 224, 240, 256]) {
    const c: Case = {
      label: `Dh=${Dh} T=19 causal GQA 2`,
      sh: shape(1, 19, 19, 4, 2, Dh),
      causal: true,
      layouts: BOTH,
      splits: [2],
      exchanges: 'default',
    };
    it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);
  }
});

describe('flash attention vs float64 reference: small head dims and tiles', () => {
  const cases: Case[] = [
    { label: 'T=1 non-causal GQA Dh=16', sh: shape(2, 1, 1, 4, 2, 16), causal: false, layouts: BOTH },
    { label: 'T=5 causal GQA Dh=16', sh: shape(2, 5, 5, 4, 2, 16), causal: true, layouts: BOTH },
    { label: 'T=33 non-causal MQA Dh=12', sh: shape(1, 33, 33, 4, 1, 12), causal: false, layouts: BOTH },
    {
      label: 'T=33 causal MQA Dh=16 small tiles',
      sh: shape(1, 33, 33, 4, 1, 16),
      causal: true,
      tiles: SMALL,
      layouts: ['tiled'],
    },
    {
      label: 'T=20, S=37 cross non-causal Dh=12 scale 0.3',
      sh: shape(2, 20, 37, 2, 1, 12),
      causal: false,
      scale: 0.3,
      layouts: BOTH,
    },
  ];
  for (const c of cases) it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);
});

describe('flash attention: sequence packing with segment ids', () => {
  // Three segments per row, different layouts per batch row; small tiles so blocks are skipped.
  const segments = [
    [23, 40, 7],
    [5, 30, 35],
  ];
  const cases: Case[] = [
    {
      label: 'T=70 causal 3 segments GQA Dh=16',
      sh: shape(2, 70, 70, 4, 2, 16),
      causal: true,
      segments,
      layouts: BOTH,
    },
    {
      label: 'T=70 causal 3 segments small tiles',
      sh: shape(2, 70, 70, 4, 2, 16),
      causal: true,
      segments,
      tiles: SMALL,
      layouts: ['tiled'],
    },
    {
      label: 'T=70 non-causal 3 segments MQA small tiles',
      sh: shape(2, 70, 70, 2, 1, 16),
      causal: false,
      segments,
      tiles: SMALL,
      layouts: BOTH,
    },
  ];
  for (const c of cases) it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);
});

describe('flash attention: decode with a KV cache (qOffset, kvLength < cache rows), flash-decoding splits', () => {
  const cases: Case[] = [
    {
      label: 'T=1 qOffset=20 S=21 of 32 cached GQA',
      sh: shape(2, 1, 21, 4, 2, 16, 32),
      causal: true,
      qOffset: 20,
      layouts: ['split', 'tiled'],
      splits: [undefined, 2],
    },
    {
      label: 'T=5 qOffset=40 S=45 of 48 non-causal Dh=16 small tiles',
      sh: shape(1, 5, 45, 4, 2, 16, 48),
      causal: false,
      qOffset: 40,
      tiles: SMALL,
      layouts: ['tiled', 'split'],
      splits: [1, 3],
    },
    {
      label: 'T=3 qOffset=10 S=13 of 16',
      sh: shape(1, 3, 13, 2, 2, 12, 16),
      causal: true,
      qOffset: 10,
      layouts: ['split', 'tiled'],
    },
    {
      label: 'T=17 qOffset=5 S=22 of 30 small tiles',
      sh: shape(1, 17, 22, 2, 1, 16, 30),
      causal: true,
      qOffset: 5,
      tiles: SMALL,
      layouts: BOTH,
      splits: [2],
    },
    // Long caches at real head sizes: a prime valid length, chunk counts that do not divide it.
    {
      label: 'Dh=128 T=1 S=301 of 320 GQA 4',
      sh: shape(2, 1, 301, 8, 2, 128, 320),
      causal: true,
      qOffset: 300,
      layouts: ['split', 'tiled'],
      splits: [undefined, 1, 7],
    },
    {
      label: 'Dh=64 T=3 S=131 of 140 GQA 8',
      sh: shape(1, 3, 131, 8, 1, 64, 140),
      causal: true,
      qOffset: 128,
      layouts: ['split'],
      splits: [undefined, 4],
    },
  ];
  for (const c of cases) it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);

  it('the default decode layout is split, with enough KV chunks to fill a GPU', async () => {
    const s: AttentionShape = { B: 1, T: 1, S: 4096, Hq: 32, Hkv: 8, Dh: 128, qType: 'f32', kvType: 'f32' };
    expect(chooseAttentionVariant('forward', s, deviceAttentionCaps()).layout).toBe('split');
    expect(chooseAttentionVariant('forward', { ...s, T: 512, S: 512 }, deviceAttentionCaps()).layout).toBe('tiled');
  });
});

describe('flash attention: per-row kvStart (left-padded batches, forward only)', () => {
  // Row b's keys j < kvStart[b] are padding. The padded keys hold finite random values (real pad
  // tokens' K/V), so a kernel that ignored kvStart would give a different softmax; kvStart ≥ the
  // causal limit makes early query rows fully masked (0 output, lse −∞). Starts past a tile block
  // (small tiles, block 8) exercise the block skip, kvStart 0 the unpadded row, and starts inside later
  // KV chunks the split layout's empty chunks.
  const cases: Case[] = [
    {
      label: 'prefill T=13 causal GQA kvStart [0, 5, 12]',
      sh: shape(3, 13, 13, 4, 2, 16),
      causal: true,
      kvStart: [0, 5, 12],
      layouts: BOTH,
    },
    {
      label: 'prefill T=37 causal MQA Dh=16 small tiles kvStart [17, 0]',
      sh: shape(2, 37, 37, 4, 1, 16),
      causal: true,
      kvStart: [17, 0],
      tiles: SMALL,
      layouts: ['tiled'],
    },
    {
      label: 'decode T=1 qOffset=20 S=21 of 32 kvStart [3, 0, 20]',
      sh: shape(3, 1, 21, 4, 2, 16, 32),
      causal: true,
      qOffset: 20,
      kvStart: [3, 0, 20],
      layouts: ['split', 'tiled'],
      splits: [undefined, 3],
    },
    {
      label: 'decode T=1 Dh=128 S=301 of 320 GQA 4 kvStart [131, 0, 300]',
      sh: shape(3, 1, 301, 8, 2, 128, 320),
      causal: true,
      qOffset: 300,
      kvStart: [131, 0, 300],
      layouts: ['split', 'tiled'],
      splits: [undefined, 5],
    },
    {
      label: 'T=3 qOffset=10 S=13 non-causal small tiles kvStart [9, 2]',
      sh: shape(2, 3, 13, 2, 2, 16, 16),
      causal: false,
      qOffset: 10,
      kvStart: [9, 2],
      tiles: SMALL,
      layouts: BOTH,
    },
    // The server's cache: a row's keys start mid-cache and the positions before them were never
    // written (NaN here): they must not be read at all (0 · NaN is NaN), in any block or chunk.
    {
      label: 'decode T=1 qOffset=68 S=69 of 80 kvStart [63, 68, 0], unwritten padding',
      sh: shape(3, 1, 69, 4, 2, 16, 80),
      causal: true,
      qOffset: 68,
      kvStart: [63, 68, 0],
      unwrittenPadding: true,
      layouts: ['split', 'tiled'],
      splits: [undefined, 3],
    },
    {
      label: 'prefill T=13 causal small tiles kvStart [5, 0], unwritten padding',
      sh: shape(2, 13, 13, 4, 2, 16),
      causal: true,
      kvStart: [5, 0],
      unwrittenPadding: true,
      tiles: SMALL,
      layouts: ['tiled'],
    },
  ];
  for (const c of cases) it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);

  it(
    'fully padded query rows give exactly 0 and lse -inf; kvStart with autograd throws',
    async () => {
      const c: Case = {
        label: 'kvStart explicit',
        sh: shape(2, 6, 6, 2, 1, 16),
        causal: true,
        kvStart: [4, 0],
        layouts: BOTH,
      };
      const x = inputs(testRng('attention kvStart explicit'), c);
      const q = Tensor.from(x.q, [2, 6, 2, 16]);
      const k = Tensor.from(x.k, [2, 6, 1, 16]);
      const v = Tensor.from(x.v, [2, 6, 1, 16]);
      const kvStart = Tensor.from(new Int32Array([4, 0]), [2]);
      for (const layout of BOTH) {
        const { out, lse } = flashAttentionForward(q, k, v, { causal: true, kvStart }, layout);
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
      expect(() => flashAttention(q, k, v, { causal: true, kvStart: Tensor.from(new Int32Array(3), [3]) })).toThrow(
        /kvStart has 3/,
      );
    },
    COMPILE_TIMEOUT,
  );
});

describe('flash attention: f16 storage of q, k, v (packed two per u32)', () => {
  // With the f16-rounded values as the reference's inputs the kernels' only error is f32 arithmetic,
  // so the f32 tolerances apply: this checks the in-kernel unpacking exactly.
  const cases: Case[] = [
    {
      label: 'Dh=64 T=29 causal GQA 4 k/v f16',
      sh: shape(2, 29, 29, 8, 2, 64),
      causal: true,
      kvType: 'f16',
      layouts: BOTH,
      splits: [2],
      exchanges: 'default',
    },
    {
      label: 'Dh=128 T=29 causal GQA 4 q/k/v f16',
      sh: shape(2, 29, 29, 8, 2, 128),
      causal: true,
      qType: 'f16',
      kvType: 'f16',
      layouts: BOTH,
      splits: [2],
      exchanges: 'default',
    },
    // fp16-mixed training's inputs at the bundled model's head dim: packed rows (segments), GQA 2.
    {
      label: 'Dh=16 T=37 causal GQA 2 q/k/v f16 3 segments',
      sh: shape(2, 37, 37, 4, 2, 16),
      causal: true,
      qType: 'f16',
      kvType: 'f16',
      segments: [
        [10, 20, 7],
        [3, 30, 4],
      ],
      layouts: ['tiled'],
      exchanges: 'default',
      f16Out: true,
    },
    {
      label: 'Dh=128 decode S=301 of 320 k/v f16 kvStart',
      sh: shape(3, 1, 301, 8, 2, 128, 320),
      causal: true,
      qOffset: 300,
      kvStart: [131, 0, 300],
      kvType: 'f16',
      layouts: ['split'],
      splits: [undefined, 1],
      exchanges: 'default',
    },
  ];
  for (const c of cases) it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);

  it(
    'f16 k/v vs the unrounded float64 attention: within the bound that f16 rounding implies',
    async () => {
      // Storing k and v in f16 moves each element by at most u·|x| (u = 2⁻¹¹). A score s_j = scale·q·k_j
      // then moves by δ_j ≤ scale·Σ_d |q_d|·|k_jd|·u, so every softmax weight P_j = e^{s_j}/Σ e^{s} changes
      // by a factor within e^{±2δ} (δ = max_j δ_j), and |δO| ≤ Σ_j |δP_j|·|v_j| + Σ_j P_j·|δv_j|
      // ≤ (e^{2δ} − 1 + u)·max|v|; |δlse| ≤ δ. The bound is computed per query row from the data, plus the
      // f32 tolerance.
      const sh = shape(1, 23, 23, 4, 2, 128);
      const rng = testRng('attention f16 bound');
      const c: Case = { label: 'f16 bound', sh, causal: true, layouts: ['tiled'] };
      const x = inputs(rng, c);
      const scale = 1 / Math.sqrt(sh.Dh);
      const ref = attentionForwardRef(sh, { causal: true, scale, qOffset: 0 }, x.q, x.k, x.v);
      const { out, lse } = flashAttentionForward(
        upload(x.q, [1, 23, 4, 128], 'f32'),
        upload(x.k, [1, 23, 2, 128], 'f16'),
        upload(x.v, [1, 23, 2, 128], 'f16'),
        { causal: true },
      );
      const o = await out.toFloat32();
      const l = await lse.toFloat32();
      let worst = 0;
      for (let i = 0; i < sh.T; i++)
        for (let h = 0; h < sh.Hq; h++) {
          const hk = Math.floor(h / 2);
          let delta = 0;
          let vmax = 0;
          for (let j = 0; j <= i; j++) {
            let sum = 0;
            for (let d = 0; d < sh.Dh; d++) {
              sum += Math.abs(x.q[(i * sh.Hq + h) * sh.Dh + d]! * x.k[(j * sh.Hkv + hk) * sh.Dh + d]!);
              vmax = Math.max(vmax, Math.abs(x.v[(j * sh.Hkv + hk) * sh.Dh + d]!));
            }
            delta = Math.max(delta, scale * sum * F16_U);
          }
          const oTol = (Math.expm1(2 * delta) + F16_U) * vmax + FWD_TOL.atol;
          for (let d = 0; d < sh.Dh; d++) {
            const e = (i * sh.Hq + h) * sh.Dh + d;
            const err = Math.abs(o[e]! - ref.out[e]!);
            expect(err, `out[${e}] (row ${i}, head ${h}): |err| ${err} > bound ${oTol}`).toBeLessThanOrEqual(oTol);
            worst = Math.max(worst, err / oTol);
          }
          const le = h * sh.T + i;
          expect(Math.abs(l[le]! - ref.lse[le]!)).toBeLessThanOrEqual(delta + FWD_TOL.atol);
        }
      // The bound is not vacuous: f16 rounding does move the result by a visible fraction of it.
      expect(worst).toBeGreaterThan(1e-3);
    },
    COMPILE_TIMEOUT,
  );
});

describe('flash attention: slice loops unrolled (the GPU code path) on this device', () => {
  // GPUs compile the slice and exchange loops with constant trip counts (unrolled into registers);
  // lavapipe keeps uniform trip counts (compile time). Same arithmetic: checked here on small head
  // dims, one lane per row (Dh 8) and two lanes exchanging partial sums (Dh 24), whose unrolled
  // compiles are the cheapest.
  const cases: Case[] = [
    {
      label: 'unrolled Dh=8 T=21 causal GQA 2',
      sh: shape(1, 21, 21, 4, 2, 8),
      causal: true,
      tiles: { unroll: true },
      layouts: BOTH,
      splits: [2],
    },
    {
      label: 'unrolled Dh=24 T=21 causal GQA 2 (forward)',
      sh: shape(1, 21, 21, 4, 2, 24),
      causal: true,
      tiles: { unroll: true },
      layouts: ['tiled'],
      exchanges: 'default',
      forwardOnly: true,
    },
  ];
  for (const c of cases) it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);
});

describe('flash attention: row-per-invocation kernels (software adapters, attention-cpu.ts)', () => {
  // One lane per row with the whole row in registers, K/V (Q/dO) read from global memory, keys taken
  // 4 per forward step: the same arithmetic as the tiled kernels up to summation order (a score is
  // one lane's Dh-term dot product), so the same tolerances. Shapes are not multiples of the 32 rows
  // per workgroup nor of the 4-key step; rows past kvLength are NaN (inputs()).
  const CPU: AttentionTiles = { cpu: true };
  const cases: Case[] = [
    {
      label: 'cpu Dh=32 T=37 causal GQA 2 (fin-s head)',
      sh: shape(2, 37, 37, 4, 2, 32),
      causal: true,
      tiles: CPU,
      layouts: ['tiled'],
      exchanges: 'default',
    },
    {
      label: 'cpu Dh=20 T=13 non-causal MQA',
      sh: shape(1, 13, 13, 3, 1, 20),
      causal: false,
      tiles: CPU,
      layouts: ['tiled'],
      exchanges: 'default',
    },
    {
      label: 'cpu Dh=16 T=70 causal 3 segments',
      sh: shape(2, 70, 70, 4, 2, 16),
      causal: true,
      segments: [
        [10, 50, 10],
        [33, 1, 36],
      ],
      tiles: CPU,
      layouts: ['tiled'],
      exchanges: 'default',
    },
    {
      label: 'cpu T=17 qOffset=5 S=22 of 30 causal',
      sh: shape(1, 17, 22, 2, 1, 16, 30),
      causal: true,
      qOffset: 5,
      tiles: CPU,
      layouts: ['tiled'],
      exchanges: 'default',
    },
    {
      label: 'cpu prefill T=13 causal kvStart [5, 0], unwritten padding',
      sh: shape(2, 13, 13, 4, 2, 16),
      causal: true,
      kvStart: [5, 0],
      unwrittenPadding: true,
      tiles: CPU,
      layouts: ['tiled'],
      exchanges: 'default',
    },
    {
      label: 'cpu Dh=16 T=19 causal q/k/v f16, f16 out',
      sh: shape(1, 19, 19, 2, 1, 16),
      causal: true,
      qType: 'f16',
      kvType: 'f16',
      f16Out: true,
      tiles: CPU,
      layouts: ['tiled'],
      exchanges: 'default',
    },
    {
      label: 'cpu Dh=32 T=9 non-causal scale 0.3',
      sh: shape(1, 9, 9, 2, 2, 32),
      causal: false,
      scale: 0.3,
      tiles: CPU,
      layouts: ['tiled'],
      exchanges: 'default',
    },
  ];
  for (const c of cases) it(c.label, async () => checkCase(testRng(`attention ${c.label}`), c), COMPILE_TIMEOUT);

  it('flashAttention runs their backward by default exactly on adapters that take CPU-shaped kernels', async () => {
    const dev = engine().dev;
    const labels: string[] = [];
    dev.onDispatch = (s) => labels.push(s.pipeline.label);
    try {
      const rng = testRng('attention cpu chooser');
      // T = 70 query rows per kv head: the tiled layout (few rows take the split one, GPU-shaped).
      const x = () => Tensor.from(rng.normalArray(70 * 8), [1, 70, 1, 8]);
      const q = x();
      q.requiresGrad = true;
      tidy(() => backward(sumToSuffix(flashAttention(q, x(), x(), { causal: true }), [1])));
      await q.grad!.toFloat32();
      q.grad!.dispose();
      q.dispose();
    } finally {
      dev.onDispatch = null;
    }
    // The backward only: their forward measured slower than the tiled one on lavapipe (bench/NOTES.md).
    expect(labels.some((l) => l.startsWith('attn.cpu.dq:'))).toBe(dev.info.cpuKernels);
    expect(labels.some((l) => l.startsWith('attn.bwd.dq:'))).toBe(!dev.info.cpuKernels);
    expect(labels.some((l) => l.startsWith('attn.fwd:'))).toBe(true);
    expect(labels.some((l) => l.startsWith('attn.cpu.fwd:'))).toBe(false);
    expect(() => flashAttentionForward(x0(), x0(), x0(), { causal: true }, 'split', { cpu: true })).toThrow(
      /tiled layout/,
    );
    const wide = Tensor.from(new Float32Array(48), [1, 1, 1, 48]);
    expect(() => flashAttentionForward(wide, wide, wide, { causal: true }, 'tiled', { cpu: true })).toThrow(
      /head dims up to 32/,
    );
  });
});

const x0 = () => Tensor.from(new Float32Array(1 * 2 * 1 * 8), [1, 2, 1, 8]);

describe('flash attention: fully masked rows', () => {
  it('rows that see no key give 0 output, lse -inf and zero gradients, never NaN', async () => {
    // Causal with qOffset = -3: query rows 0..2 precede every key.
    const c: Case = { label: 'qOffset=-3', sh: shape(1, 12, 12, 2, 1, 16), causal: true, qOffset: -3, layouts: BOTH };
    await checkCase(testRng('attention fully masked'), c);
    // And explicitly: the reference has exact zeros and -inf there; expectClose would accept NaN for neither.
    const x = inputs(testRng('attention fully masked explicit'), c);
    const q = Tensor.from(x.q, [1, 12, 2, 16]);
    const k = Tensor.from(x.k, [1, 12, 1, 16]);
    const v = Tensor.from(x.v, [1, 12, 1, 16]);
    for (const layout of BOTH) {
      const { out, lse } = flashAttentionForward(q, k, v, { causal: true, qOffset: -3 }, layout);
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

describe('flash attention variants: table and chooser', () => {
  const shapeOf = (T: number, Hq: number, Hkv: number, Dh: number): AttentionShape => ({
    B: 2,
    T,
    S: T,
    Hq,
    Hkv,
    Dh,
    qType: 'f32',
    kvType: 'f32',
  });
  const gpu: AttentionCaps = {
    features: new Set(['subgroups', 'shader-f16', 'timestamp-query']),
    subgroupMinSize: 32,
    subgroupMaxSize: 32,
    maxWorkgroupStorage: 48 * 1024,
    maxInvocations: 1024,
    software: false,
  };
  const noSubgroups: AttentionCaps = { ...gpu, features: new Set(['shader-f16', 'timestamp-query']) };

  it('picks by features and shape: subgroup exchange where the device has subgroups, split layout for decoding', () => {
    expect(chooseAttentionVariant('forward', shapeOf(512, 32, 4, 64), gpu).name).toBe('forward.tiled.subgroup');
    expect(chooseAttentionVariant('forward', shapeOf(1, 32, 8, 128), gpu).name).toBe('forward.split.subgroup');
    expect(chooseAttentionVariant('backward', shapeOf(512, 32, 8, 128), gpu).name).toBe('backward.subgroup');
    expect(chooseAttentionVariant('forward', shapeOf(512, 32, 4, 64), noSubgroups).name).toBe(
      'forward.tiled.workgroup',
    );
    expect(chooseAttentionVariant('forward', shapeOf(1, 32, 8, 128), noSubgroups).name).toBe('forward.split.workgroup');
    expect(chooseAttentionVariant('backward', shapeOf(512, 32, 8, 128), noSubgroups).name).toBe('backward.workgroup');
    // One lane per row (Dh ≤ 16) has nothing to exchange; lanes per row above the subgroup size cannot shuffle.
    expect(chooseAttentionVariant('forward', shapeOf(512, 8, 8, 16), gpu).exchange).toBe('workgroup');
    expect(
      chooseAttentionVariant('forward', shapeOf(512, 8, 8, 256), { ...gpu, subgroupMinSize: 8, subgroupMaxSize: 8 })
        .exchange,
    ).toBe('workgroup');
    expect(chooseAttentionVariant('forward', shapeOf(512, 8, 8, 256), gpu).exchange).toBe('subgroup');
  });

  it('lists every variant a tuner may time, each named once', () => {
    const names = ATTENTION_VARIANTS.map((v) => v.name);
    expect(new Set(names).size).toBe(names.length);
    expect(attentionVariantsFor('forward', shapeOf(512, 32, 4, 64), gpu).map((v) => v.name)).toEqual([
      'forward.split.subgroup',
      'forward.split.workgroup',
      'forward.tiled.subgroup',
      'forward.tiled.workgroup',
    ]);
    expect(attentionVariantsFor('forward', shapeOf(512, 32, 4, 64), noSubgroups).map((v) => v.name)).toEqual([
      'forward.split.workgroup',
      'forward.tiled.workgroup',
    ]);
  });

  it("the SIMT variant tables hold every device's launches, each in the loop form attentionUnroll gives it", () => {
    // A software adapter like lavapipe (subgroups of 8, 32 KiB) keeps uniform trip counts; the same
    // adapter with FINLLM_FORCE_GPU_SHAPES=1, and GPUs, unroll. Uniform loops are listed exactly
    // where the software adapter launches them, so no variant is compiled that no launch can take.
    const lavapipe: AttentionCaps = {
      ...gpu,
      subgroupMinSize: 8,
      subgroupMaxSize: 8,
      maxWorkgroupStorage: 32 * 1024,
      software: true,
    };
    const amdLike: AttentionCaps = { ...gpu, subgroupMaxSize: 64, maxWorkgroupStorage: 64 * 1024 };
    const simt = kernelVariants().filter((v) => ['attn.fwd', 'attn.bwd.dq', 'attn.bwd.dkv'].includes(v.family));
    const registered = new Set(simt.map((v) => v.key));
    const unrollOf = (key: string) => (JSON.parse(key.slice(key.indexOf(':') + 1)) as { unroll: boolean }).unroll;
    for (const caps of [lavapipe, { ...lavapipe, software: false }, gpu, noSubgroups, amdLike]) {
      const keys = simtDeviceKeys(caps);
      expect(keys.length).toBeGreaterThan(0);
      expect(keys.filter((k) => !registered.has(k))).toEqual([]);
      expect(new Set(keys.map(unrollOf))).toEqual(new Set([attentionUnroll(caps)]));
    }
    expect(attentionUnroll(lavapipe)).toBe(false);
    expect(attentionUnroll(gpu)).toBe(true);
    const uniform = simt.filter((v) => !unrollOf(v.key)).map((v) => v.key);
    expect(uniform.sort()).toEqual([...new Set(simtDeviceKeys(lavapipe))].sort());
  });

  it('slice geometry: ≤ 5 vec4 per lane, power-of-two lanes, least padding', () => {
    const geo = (Dh: number) => sliceGeometry(Dh);
    expect(geo(64)).toEqual({ TPR: 4, WV: 4 });
    expect(geo(80)).toEqual({ TPR: 4, WV: 5 });
    expect(geo(96)).toEqual({ TPR: 8, WV: 3 });
    expect(geo(128)).toEqual({ TPR: 8, WV: 4 });
    expect(geo(256)).toEqual({ TPR: 16, WV: 4 });
    for (let Dh = 4; Dh <= 256; Dh += 4) {
      const { TPR, WV } = geo(Dh);
      expect(WV).toBeLessThanOrEqual(5);
      expect(TPR * WV * 4).toBeGreaterThanOrEqual(Dh);
      expect(Number.isInteger(Math.log2(TPR))).toBe(true);
    }
  });

  it('FINLLM_DISABLE_FEATURES=subgroups changes the kernel the chooser picks', async () => {
    const s = shapeOf(64, 8, 2, 64);
    const here = deviceAttentionCaps();
    if (!here.features.has('subgroups'))
      return expect(chooseAttentionVariant('forward', s, here).exchange).toBe('workgroup');
    expect(chooseAttentionVariant('forward', s, here).exchange).toBe('subgroup');
    const prev = process.env.FINLLM_DISABLE_FEATURES;
    process.env.FINLLM_DISABLE_FEATURES = 'subgroups';
    let other: GpuDevice | null = null;
    try {
      other = await GpuDevice.create();
    } finally {
      if (prev === undefined) delete process.env.FINLLM_DISABLE_FEATURES;
      else process.env.FINLLM_DISABLE_FEATURES = prev;
    }
    const caps: AttentionCaps = {
      features: other.features,
      subgroupMinSize: other.subgroupSize.min,
      subgroupMaxSize: other.subgroupSize.max,
      maxWorkgroupStorage: other.limits.maxComputeWorkgroupStorageSize,
      maxInvocations: other.limits.maxComputeInvocationsPerWorkgroup,
      software: other.info.isSoftware,
    };
    other.destroy();
    expect(caps.features.has('subgroups')).toBe(false);
    expect(chooseAttentionVariant('forward', s, caps).name).toBe('forward.tiled.workgroup');
    expect(chooseAttentionVariant('backward', s, caps).name).toBe('backward.workgroup');
  });

  it('an exchange the device cannot run is refused with the reason', () => {
    const q = Tensor.empty([1, 4, 2, 256]);
    const k = Tensor.empty([1, 4, 1, 256]);
    const sub = deviceAttentionCaps().subgroupMinSize;
    if (sub < 16)
      expect(() => flashAttentionForward(q, k, k, { causal: true }, 'tiled', { exchange: 'subgroup' })).toThrow(
        /subgroup exchange cannot run head dim 256/,
      );
    const q16 = Tensor.empty([1, 4, 2, 16]);
    const k16 = Tensor.empty([1, 4, 1, 16]);
    expect(() => flashAttentionForward(q16, k16, k16, { causal: true }, 'tiled', { exchange: 'subgroup' })).toThrow(
      /2 ≤ 1 lanes/,
    );
  });
});

describe('flash attention kernel families', () => {
  // check:kernels compiles every registered variant offline; a launch whose key is not in a
  // family's table would only ever be compiled by the device that runs it.
  it(
    'every kernel the default launches run is a registered variant',
    async () => {
      const dev = engine().dev;
      const labels: string[] = [];
      dev.onDispatch = (s) => labels.push(s.pipeline.label);
      const rng = testRng('attention families');
      const x = (shape: number[], dtype: 'f32' | 'f16') =>
        upload(rng.normalArray(shape.reduce((a, b) => a * b, 1)), shape, dtype);
      const train = async (dtype: 'f32' | 'f16', Hq: number, Hkv: number, Dh: number, seg?: Tensor) => {
        // 70 query rows per kv head: the tiled layout; the backward through autograd.
        const q = x([1, 70, Hq, Dh], dtype);
        q.requiresGrad = true;
        const k = x([1, 70, Hkv, Dh], dtype);
        const v = x([1, 70, Hkv, Dh], dtype);
        tidy(() =>
          backward(sumToSuffix(flashAttention(q, k, v, { causal: true, ...(seg ? { segmentIds: seg } : {}) }), [1])),
        );
        await q.grad!.toFloat32();
        for (const t of [q.grad!, q, k, v]) t.dispose();
      };
      try {
        await train('f32', 2, 1, 16); // the tiny preset's head dim
        const seg = Tensor.from(
          new Int32Array(70).map((_, i) => (i < 30 ? 0 : 1)),
          [70],
        );
        await train('f16', 4, 2, 32, seg); // fin presets' head dim, fp16-mixed storage, packed sequences
        seg.dispose();
        await train('f32', 1, 1, 64); // Llama-family head dim
        // Decoding one token over an f16 cache of 320 rows, 300 valid: split layout, KV chunks merged.
        const q = x([1, 1, 4, 16], 'f32');
        const k = x([1, 320, 2, 16], 'f16');
        const out = flashAttention(q, k, k, { causal: true, qOffset: 299, kvLength: 300 });
        await out.toFloat32();
        for (const t of [out, q, k]) t.dispose();
      } finally {
        dev.onDispatch = null;
      }
      const registered = new Set(kernelVariants().map((v) => v.key));
      const attn = labels.filter((l) => l.startsWith('attn.'));
      for (const family of ['attn.fwd:', 'attn.fwd.combine:', 'attn.bwd.dot:'])
        expect(attn.some((l) => l.startsWith(family))).toBe(true);
      expect(attn.filter((l) => !registered.has(l))).toEqual([]);
    },
    COMPILE_TIMEOUT,
  );
});

describe('flash attention autograd', () => {
  it('finite-difference check of sum(w ∘ attention(q, k, v)), causal GQA with segments', async () => {
    const rng = testRng('attention fd');
    const [B, T, Hq, Hkv, Dh] = [1, 6, 2, 1, 12];
    const w = rng.normalArray(B * T * Hq * Dh);
    const seg = Tensor.from(new Int32Array([0, 0, 0, 0, 1, 1]), [6]).keep();
    await gradCheck(
      'flashAttention',
      ([q, k, v]) =>
        sumToSuffix(
          binary('mul', flashAttention(q!, k!, v!, { causal: true, segmentIds: seg }), Tensor.from(w, [B, T, Hq, Dh])),
          [1],
        ),
      [
        { data: rng.normalArray(B * T * Hq * Dh), shape: [B, T, Hq, Dh] },
        { data: rng.normalArray(B * T * Hkv * Dh), shape: [B, T, Hkv, Dh] },
        { data: rng.normalArray(B * T * Hkv * Dh), shape: [B, T, Hkv, Dh] },
      ],
      rng,
    );
    seg.dispose();
  });

  it(
    'finite-difference check at Dh=64 (lanes per row exchange partial sums), causal GQA 2',
    async () => {
      // A step of 1e-1 (relative): with Dh = 64 terms per score, f32 rounding of the loss limits the
      // difference quotient more than its truncation error does (Richardson-extrapolated, O(h⁴)).
      const rng = testRng('attention fd dh64');
      const [B, T, Hq, Hkv, Dh] = [1, 5, 2, 1, 64];
      const w = rng.normalArray(B * T * Hq * Dh);
      await gradCheck(
        'flashAttention Dh=64',
        ([q, k, v]) =>
          sumToSuffix(binary('mul', flashAttention(q!, k!, v!, { causal: true }), Tensor.from(w, [B, T, Hq, Dh])), [1]),
        [
          { data: rng.normalArray(B * T * Hq * Dh), shape: [B, T, Hq, Dh] },
          { data: rng.normalArray(B * T * Hkv * Dh), shape: [B, T, Hkv, Dh] },
          { data: rng.normalArray(B * T * Hkv * Dh), shape: [B, T, Hkv, Dh] },
        ],
        rng,
        { eps: 1e-1 },
      );
    },
    COMPILE_TIMEOUT,
  );

  it('autograd gradients match the reference and tidy frees everything', async () => {
    const rng = testRng('attention autograd');
    const sh = shape(1, 11, 11, 4, 2, 16);
    const c: Case = { label: 'autograd', sh, causal: true, layouts: ['tiled'] };
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

  it('rejects bad shapes and dtypes with a clear message', () => {
    const q = Tensor.empty([1, 4, 3, 16]);
    const k = Tensor.empty([1, 4, 2, 16]);
    expect(() => flashAttention(q, k, k, { causal: true })).toThrow(/multiple of Hkv/);
    const k2 = Tensor.empty([1, 4, 1, 16]);
    expect(() => flashAttention(q, k2, k2, { causal: true, kvLength: 5 })).toThrow(/kvLength/);
    expect(() =>
      flashAttention(q, k2, k2, { causal: true, kvLength: 3, segmentIds: Tensor.from(new Int32Array(4), [4]) }),
    ).toThrow(/T == S/);
    expect(() =>
      flashAttention(Tensor.empty([1, 4, 1, 18]), Tensor.empty([1, 4, 1, 18]), Tensor.empty([1, 4, 1, 18]), {
        causal: true,
      }),
    ).toThrow(/head dim 18 not supported/);
    expect(() =>
      flashAttention(Tensor.empty([1, 4, 1, 260]), Tensor.empty([1, 4, 1, 260]), Tensor.empty([1, 4, 1, 260]), {
        causal: true,
      }),
    ).toThrow(/head dim 260/);
    expect(() => flashAttention(q, k2, Tensor.empty([1, 4, 1, 16], 'f16'), { causal: true })).toThrow(/same dtype/);
    expect(() =>
      flashAttention(q, Tensor.empty([1, 4, 1, 16], 'bf16'), Tensor.empty([1, 4, 1, 16], 'bf16'), { causal: true }),
    ).toThrow(/f32 or f16, got bf16/);
  });
});
