// Fused decode kernels (src/kernels/decode.ts) against float64 references (reference/decode.ts)
// on odd shapes: K not a multiple of the vector width (scalar path) and multiples (vector path, with
// several iterations of the 32-lane stride: K = 260, 520, 2080; NF4 blocks spanning rows), N per
// segment 1 and primes, M = 1, 3, 5, 8 and 11 (two dispatches of ≤ 8 rows).
//
// Tolerance: the f32 summation bound γ·Σ|terms|, γ = (terms + extra)·2⁻²⁴ with terms = K products
// (+ r LoRA products), plus K/2 + 6 for the folded RMSNorm (Σx² over K terms: relative error ≤ K·u
// in the mean, halved by the inverse square root, 2 ulp for inverseSqrt, 2 roundings of x·r·g),
// plus 4 for scale products (NF4 absmax, LoRA scale); swiglu adds 8 for exp and the division.
import { describe, expect, it } from 'vitest';
import { decodeGemvRef, ropeAppendRef } from '../../reference/decode.js';
import { halfBitsToNumber } from '../../reference/matmul.js';
import { expectWithinSumBound } from '../../reference/nf4.js';
import { MetaDevice } from '../../src/engine/meta-device.js';
import type { Rng } from '../../src/engine/random.js';
import { Engine, engine, Tensor, withEngine } from '../../src/engine/tensor.js';
import { f32ArrayToF16 } from '../../src/io/dtype.js';
import { decodeGemv, ropeAppend } from '../../src/kernels/decode.js';
import { ropeTables } from '../../src/kernels/rope.js';
import type { WeightFormat } from '../../src/kernels/weight-formats.js';
import { expectClose, testRng, useEngine } from '../helpers/index.js';
import { makeGemvWeight } from '../helpers/weights.js';

useEngine();

type Kind = WeightFormat;

interface GemvCase {
  kind: Kind;
  M: number;
  K: number;
  Ns: number[];
  norm: 'none' | 'compute' | 'given';
  rstdOut?: boolean;
  lora?: boolean[];
  epilogue: 'store' | 'accumulate' | 'swiglu';
  /** Extra output columns on the left (custom offsets into a wider output). */
  pad?: number;
}

async function runGemv(rng: Rng, c: GemvCase): Promise<void> {
  const { M, K, Ns } = c;
  const label = `${c.kind} M${M} K${K} N[${Ns}] ${c.norm}${c.rstdOut ? '+rstd' : ''} ${c.epilogue}${c.lora ? ` lora[${c.lora.map(Number)}]` : ''}`;
  const made = await Promise.all(Ns.map((N) => makeGemvWeight(rng, c.kind, N, K)));
  const xData = rng.normalArray(M * K);
  const x = Tensor.from(xData, [M, K]);
  const g = rng.normalArray(K, 1, 0.2);
  const gT = Tensor.from(g, [K]);
  const r = 5;
  const pad = c.pad ?? 0;
  const swiglu = c.epilogue === 'swiglu';
  const ld = pad + (swiglu ? Ns[0]! : Ns.reduce((a, b) => a + b, 0)) + (pad ? 3 : 0);
  const offsets = swiglu ? [pad, pad] : Ns.map((_, s) => pad + Ns.slice(0, s).reduce((a, b) => a + b, 0));
  const out0 = rng.normalArray(M * ld);
  const out = Tensor.from(out0, [M, ld]);
  const ldu = 3 * r + 2;
  const uData = rng.normalArray(M * ldu);
  const u = Tensor.from(uData, [M, ldu]);
  const uOffsets = [2, 2 + r, 2 + 2 * r];
  const Bdata = Ns.map((N, s) => (c.lora?.[s] ? rng.normalArray(N * r, 0, 0.3) : null));
  const Bt = Bdata.map((d, s) => (d ? Tensor.from(d, [Ns[s]!, r]) : null));
  const ref = decodeGemvRef({
    M,
    K,
    x: xData,
    weights: made.map((m) => m.values),
    Ns,
    ...(c.norm !== 'none' ? { norm: { g, eps: 1e-5 } } : {}),
    ...(c.lora ? { lora: { u: uData, ldu, B: Bdata, r, scale: 1.75, uOffsets } } : {}),
    epilogue: c.epilogue,
    out0,
    ld,
    outOffsets: offsets,
  });
  const rstdIn = c.norm === 'given' ? Tensor.from(Float32Array.from(ref.rstd), [M]) : undefined;
  const rstdOut = c.rstdOut ? Tensor.empty([M]) : undefined;
  decodeGemv({
    x,
    segments: made.map((m) => m.w),
    out,
    epilogue: c.epilogue,
    outOffsets: offsets,
    ...(c.norm !== 'none' ? { norm: { weight: gT, eps: 1e-5, ...(rstdIn ? { rstd: rstdIn } : {}) } } : {}),
    ...(rstdOut ? { rstdOut } : {}),
    ...(c.lora ? { lora: { u, B: Bt, r, scale: 1.75, uOffsets } } : {}),
  });
  const terms = K + (c.lora ? r + 2 : 0) + (c.norm !== 'none' ? K / 2 + 6 : 0);
  expectWithinSumBound(await out.toFloat32(), ref, terms, label, 4 + (swiglu ? 8 : 0));
  if (rstdOut) expectClose(await rstdOut.toFloat32(), ref.rstd, { rtol: (K / 2 + 4) * 2 ** -24 }, `${label} rstd`);
  for (const t of [x, gT, out, u, rstdIn, rstdOut, ...Bt]) t?.dispose();
  for (const m of made) m.dispose();
}

describe('decodeGemv vs float64', () => {
  const cases: GemvCase[] = [
    { kind: 'f32', M: 3, K: 37, Ns: [13, 1, 29], norm: 'compute', epilogue: 'store' },
    { kind: 'f32', M: 1, K: 260, Ns: [5, 5, 5], norm: 'compute', rstdOut: true, epilogue: 'store' },
    {
      kind: 'bf16',
      M: 8,
      K: 520,
      Ns: [13, 7, 11],
      norm: 'given',
      lora: [true, false, true],
      epilogue: 'store',
      pad: 4,
    },
    { kind: 'f16', M: 11, K: 40, Ns: [17], norm: 'none', lora: [true], epilogue: 'accumulate' },
    { kind: 'f16', M: 2, K: 37, Ns: [3, 19], norm: 'compute', epilogue: 'store' },
    { kind: 'bf16', M: 1, K: 37, Ns: [7, 7], norm: 'none', epilogue: 'swiglu' },
    { kind: 'nf4', M: 2, K: 64, Ns: [23, 23], norm: 'compute', epilogue: 'swiglu' },
    { kind: 'nf4dq', M: 5, K: 2080, Ns: [19, 19], norm: 'given', lora: [true, true], epilogue: 'swiglu' },
    { kind: 'nf4', M: 1, K: 37, Ns: [13], norm: 'none', epilogue: 'accumulate' },
    { kind: 'nf4dq', M: 1, K: 64, Ns: [31, 3, 3], norm: 'compute', epilogue: 'store' },
    { kind: 'f32', M: 4, K: 1, Ns: [2], norm: 'none', epilogue: 'store' },
  ];
  for (const c of cases) {
    it(`${c.kind}, ${c.Ns.length} segment(s) [${c.Ns}], M ${c.M}, K ${c.K}, norm ${c.norm}${c.rstdOut ? ' (rstd out)' : ''}, ${c.epilogue}${c.lora ? ', LoRA' : ''}`, async () => {
      await runGemv(testRng(`decode-gemv-${c.kind}-${c.K}`), c);
    });
  }

  it('refuses mismatched segments and outputs', () => {
    const a = Tensor.empty([3, 8]);
    const b = Tensor.empty([3, 9]);
    const x = Tensor.empty([1, 8]);
    const out = Tensor.empty([1, 6]);
    expect(() => decodeGemv({ x, segments: [a, b], out })).toThrow(/K = 9/);
    expect(() => decodeGemv({ x, segments: [a, a, a], out })).toThrow(/overflows/);
    expect(() => decodeGemv({ x, segments: [a, a], out, epilogue: 'swiglu', rstdOut: out })).toThrow(/rstdOut/);
    for (const t of [a, b, x, out]) t.dispose();
  });
});

/**
 * Runs ropeAppend on random q/k/v (column ranges of one [B·T, ld] buffer, the fused QKV output, after
 * a left margin) into a random cache of `kvType`, and its float64 reference on the values the kernel
 * reads. Returns q, the caches after the call (as numbers), the reference and the caches before.
 */
async function ropeAppendCase(
  label: string,
  dims: {
    B: number;
    T: number;
    H: number;
    Hkv: number;
    dh: number;
    smax: number;
    L: number;
    /** Each row's first position; null: the call passes no starts (every row starts at 0). */
    starts: number[] | null;
    margin: number;
  },
  kvType: 'f32' | 'f16',
) {
  const rng = testRng(label);
  const { B, T, H, Hkv, dh, smax, L, margin } = dims;
  const starts = dims.starts ? Int32Array.from(dims.starts) : new Int32Array(B);
  const tab = ropeTables({ headDim: dh, theta: 10000, scaling: null, maxPositions: 16 });
  const cos = await tab.cos.toFloat32();
  const sin = await tab.sin.toFloat32();
  const ld = margin + (H + 2 * Hkv) * dh;
  const qkv = rng.normalArray(B * T * ld);
  const pick = (off: number, w: number) =>
    Float64Array.from({ length: B * T * w }, (_, i) => qkv[Math.floor(i / w) * ld + off + (i % w)]!);
  const cache = (data: Float32Array) => {
    if (kvType === 'f32') return { t: Tensor.from(data, [B, smax, Hkv, dh]), values: Float64Array.from(data) };
    const bits = f32ArrayToF16(data);
    return {
      t: Tensor.from(bits, [B, smax, Hkv, dh], 'f16'),
      values: Float64Array.from(bits, (b) => halfBitsToNumber(b, 'f16')),
    };
  };
  const kc = cache(rng.normalArray(B * smax * Hkv * dh));
  const vc = cache(rng.normalArray(B * smax * Hkv * dh));
  const t = Tensor.from(qkv, [B * T, ld]);
  const len = Tensor.from(Uint32Array.of(L), [1]);
  const st = dims.starts ? Tensor.from(starts, [B]) : null;
  const qT = ropeAppend({
    B,
    T,
    heads: H,
    kvHeads: Hkv,
    rope: tab,
    length: len,
    ...(st ? { starts: st } : {}),
    kCache: kc.t,
    vCache: vc.t,
    q: { t, ld, offset: margin },
    k: { t, ld, offset: margin + H * dh },
    v: { t, ld, offset: margin + (H + Hkv) * dh },
  });
  const ref = ropeAppendRef(
    B,
    T,
    H,
    Hkv,
    dh,
    L,
    starts,
    pick(margin, H * dh),
    pick(margin + H * dh, Hkv * dh),
    pick(margin + (H + Hkv) * dh, Hkv * dh),
    cos,
    sin,
    kc.values,
    vc.values,
    smax,
  );
  const readCache = async (x: Tensor) =>
    kvType === 'f32'
      ? Float64Array.from(await x.toFloat32())
      : Float64Array.from((await x.read()) as Uint16Array, (b) => halfBitsToNumber(b, 'f16'));
  const out = {
    q: await qT.toFloat32(),
    k: await readCache(kc.t),
    v: await readCache(vc.t),
    ref,
    k0: kc.values,
    v0: vc.values,
  };
  for (const x of [t, kc.t, vc.t, len, st, qT, tab.cos, tab.sin]) x?.dispose();
  return out;
}

describe('ropeAppend vs float64', () => {
  it('rotates q and k at max(0, L + t − start), appends k and v at L + t, leaves other cache rows alone', async () => {
    const r = await ropeAppendCase(
      'rope-append',
      { B: 3, T: 2, H: 4, Hkv: 2, dh: 6, smax: 9, L: 4, starts: [0, 3, 5], margin: 1 },
      'f32',
    );
    // The rope kernel's arithmetic: two products and a sum, rounded in f32 (unit-normal inputs).
    const tol = { atol: 2e-6, rtol: 1e-6 };
    expectClose(r.q, r.ref.q, tol, 'q');
    expectClose(r.k, r.ref.kCache, tol, 'k cache');
    expectClose(r.v, r.ref.vCache, { atol: 0 }, 'v cache');
  });

  it('without starts every row starts at position 0, also after a call on another engine', async () => {
    // A call on an engine over a MetaDevice (the memory estimate's) first: nothing it made may be
    // bound by the next call on the GPU engine.
    const meta = new Engine(new MetaDevice(engine().dev), { memory: null });
    withEngine(meta, () => {
      const tab = ropeTables({ headDim: 8, theta: 10000, scaling: null, maxPositions: 4 });
      const t = Tensor.empty([2, 3 * 8]);
      const cache = () => Tensor.empty([2, 4, 1, 8]);
      const view = (offset: number) => ({ t, ld: 24, offset });
      const [kc, vc] = [cache(), cache()];
      const len = Tensor.from(Uint32Array.of(1), [1]);
      const q = ropeAppend({
        B: 2,
        T: 1,
        heads: 1,
        kvHeads: 1,
        rope: tab,
        length: len,
        kCache: kc,
        vCache: vc,
        q: view(0),
        k: view(8),
        v: view(16),
      });
      for (const x of [tab.cos, tab.sin, t, kc, vc, len, q]) x.dispose();
    });
    const r = await ropeAppendCase(
      'rope-append-no-starts',
      { B: 3, T: 2, H: 3, Hkv: 1, dh: 10, smax: 7, L: 3, starts: null, margin: 2 },
      'f32',
    );
    // As above: the rope kernel's arithmetic, the value cache copied.
    const tol = { atol: 2e-6, rtol: 1e-6 };
    expectClose(r.q, r.ref.q, tol, 'q');
    expectClose(r.k, r.ref.kCache, tol, 'k cache');
    expectClose(r.v, r.ref.vCache, { atol: 0 }, 'v cache');
  });

  it('into an f16 cache: the appended k and v are the f32 results rounded to f16, other rows keep their bits', async () => {
    // Dh 12: three words of packed pairs per half, so the two-pairs-per-thread indexing is exercised
    // past the first word; B, T, heads and positions not powers of two.
    const dims = { B: 3, T: 3, H: 6, Hkv: 3, dh: 12, smax: 11, L: 5, starts: [0, 4, 7], margin: 3 };
    const r = await ropeAppendCase('rope-append-f16', dims, 'f16');
    // q stays f32 (the rope kernel's arithmetic). The cache entries are the f32 results rounded to
    // f16: relative error ≤ 2⁻¹¹ (round to nearest; WGSL lets pack2x16float round either way, ≤ 2⁻¹⁰),
    // plus the f32 rotation's 2e-6; rows not appended keep their exact f16 values.
    expectClose(r.q, r.ref.q, { atol: 2e-6, rtol: 1e-6 }, 'q');
    expectClose(r.k, r.ref.kCache, { atol: 2e-6, rtol: 2 ** -10 }, 'k cache');
    expectClose(r.v, r.ref.vCache, { atol: 0, rtol: 2 ** -10 }, 'v cache');
    // The appended positions changed, every other position is bit-identical.
    const { B, T, Hkv, dh, smax, L } = dims;
    const posWidth = Hkv * dh;
    for (let b = 0; b < B; b++) {
      for (let s = 0; s < smax; s++) {
        if (s >= L && s < L + T) continue;
        for (let j = 0; j < posWidth; j++) {
          const i = (b * smax + s) * posWidth + j;
          expect(r.k[i], `k[${b},${s},${j}]`).toBe(r.k0[i]);
          expect(r.v[i], `v[${b},${s},${j}]`).toBe(r.v0[i]);
        }
      }
    }
  });

  it('refuses a cache whose K and V dtypes differ', () => {
    const tab = ropeTables({ headDim: 8, theta: 10000, scaling: null, maxPositions: 4 });
    const t = Tensor.empty([1, 3 * 8]);
    const kc = Tensor.empty([1, 2, 1, 8], 'f16');
    const vc = Tensor.empty([1, 2, 1, 8]);
    const len = Tensor.from(Uint32Array.of(0), [1]);
    expect(() =>
      ropeAppend({
        B: 1,
        T: 1,
        heads: 1,
        kvHeads: 1,
        rope: tab,
        length: len,
        kCache: kc,
        vCache: vc,
        q: { t, ld: 24, offset: 0 },
        k: { t, ld: 24, offset: 8 },
        v: { t, ld: 24, offset: 16 },
      }),
    ).toThrow(/vCache: expected dtype f16, got f32/);
    for (const x of [t, kc, vc, len, tab.cos, tab.sin]) x.dispose();
  });
});
