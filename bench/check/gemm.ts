// Runs one GEMM variant case (src/kernels/gemm.ts GEMM_SG_CASES) through gemm() with the emulated
// subgroup-matrix core forced, on fresh random operands, and checks every output element against
// the float64 reference and its rigorous rounding bound (reference/gemm.ts: f16 operands,
// exact products, f32 accumulation). Used by `npm run check:kernels` and tests/kernels/gemm-sgmatrix.test.ts.

import { expectWithinGemmBound, gemmReference, type RefOperand } from '../../reference/gemm.js';
import { halfBitsToNumber } from '../../reference/matmul.js';
import { dequantizeNf4Ref } from '../../reference/nf4.js';
import type { Rng } from '../../src/engine/random.js';
import { Tensor } from '../../src/engine/tensor.js';
import { f32ToBf16, f32ToF16 } from '../../src/io/dtype.js';
import {
  type GemmArgs,
  type GemmMutation,
  type GemmOperand,
  type GemmVariantCase,
  type GemmVariantOperand,
  gemm,
  gemmPlan,
  gemmVariantSpec,
  kernelKey,
} from '../../src/kernels/gemm.js';
import { disposeNf4, nf4Absmax, quantizeNf4, unpackNf4Codes } from '../../src/kernels/nf4.js';

/** A GEMM operand on the GPU and its float64 reference (the values the kernel actually reads). */
export interface MadeOperand {
  op: GemmOperand;
  ref: RefOperand;
  dispose: () => void;
}

/**
 * A random operand of a kind (f32, f16, bf16 rounded; NF4 quantized and dequantized for the
 * reference) stored as `stored`, with a dropout mask (p 0.3, `seed`, else one drawn) where `drop`.
 */
export async function makeOperand(
  rng: Rng,
  c: GemmVariantOperand,
  stored: [number, number],
  seed?: number,
): Promise<MadeOperand> {
  const n = stored[0] * stored[1];
  const data = rng.normalArray(n);
  const dropout = c.drop ? { p: 0.3, seed: seed ?? rng.nextU32() } : undefined;
  if (c.kind === 'nf4' || c.kind === 'nf4dq') {
    const q = quantizeNf4(Tensor.from(data, stored), { doubleQuant: c.kind === 'nf4dq' });
    const codes = unpackNf4Codes((await q.codes.read()) as Uint32Array, n);
    const values = dequantizeNf4Ref(codes, await nf4Absmax(q).toFloat32());
    return {
      op: { t: q, trans: c.trans },
      ref: { data: values, shape: stored, trans: c.trans },
      dispose: () => disposeNf4(q),
    };
  }
  let t: Tensor;
  let values: ArrayLike<number> = data;
  if (c.kind === 'f32') t = Tensor.from(data, stored);
  else {
    const kind = c.kind;
    const bits = Uint16Array.from(data, (v) => (kind === 'bf16' ? f32ToBf16(v) : f32ToF16(v)));
    values = Float64Array.from(bits, (b) => halfBitsToNumber(b, kind));
    t = Tensor.from(bits, stored, kind);
  }
  return {
    op: { t, trans: c.trans, ...(dropout ? { dropout } : {}) },
    ref: { data: values, shape: stored, trans: c.trans, ...(dropout ? { dropout } : {}) },
    dispose: () => t.dispose(),
  };
}

const stored = (rows: number, cols: number, trans?: boolean): [number, number] => (trans ? [cols, rows] : [rows, cols]);

export interface GemmCheck {
  key: string;
  /** Null when every element is within its bound, else the failure report. */
  failure: string | null;
}

/**
 * Runs case `c` emulated (with a seeded bug when `mutation` is given) and checks it. The pipeline
 * key gemm() used must be the one the variant table derives offline (the table lists what runs).
 */
export async function checkEmulatedGemm(
  c: GemmVariantCase,
  rng: Rng,
  mutation: GemmMutation | null = null,
): Promise<GemmCheck> {
  const { M, N, K } = c;
  const a = await makeOperand(rng, c.a, stored(M, K, c.a.trans));
  const b = await makeOperand(rng, c.b, stored(K, N, c.b.trans));
  const u = c.pro ? await makeOperand(rng, c.pro.u, stored(M, c.pro.R, c.pro.u.trans)) : null;
  const w = c.pro ? await makeOperand(rng, c.pro.w, stored(c.pro.R, N, c.pro.w.trans)) : null;
  const proDrop = c.pro?.mask ? { p: 0.25, seed: rng.nextU32() } : undefined;
  const acc0 = c.accumulate ? rng.normalArray(M * N) : null;
  const accT = acc0 ? Tensor.from(acc0, [M, N]) : undefined;
  const args: GemmArgs = {
    a: a.op,
    b: b.op,
    alpha: c.alpha,
    ...(accT ? { accumulate: accT } : {}),
    ...(c.pro ? { prologue: { u: u!.op, w: w!.op, scale: 1.7, ...(proDrop ? { dropout: proDrop } : {}) } } : {}),
    choice: {
      compute: 'f16',
      tile: c.tile,
      splitK: c.splitK ?? 1,
      matrix: { shape: c.shape, emulated: true, ...(mutation ? { mutation } : {}) },
    },
  };
  const expectKey = kernelKey(gemmVariantSpec(c, 'emulated', mutation));
  const { key } = gemmPlan(args);
  const label = `${c.shape} ${c.tile} ${c.what} [${M}×${N}×${K}]${mutation ? ` mutation ${mutation}` : ''}`;
  try {
    if (key !== expectKey)
      return { key, failure: `${label}: gemm() ran kernel ${key}, the variant table lists ${expectKey}` };
    const out = gemm(args);
    const got = await out.toFloat32();
    const ref = gemmReference({
      a: a.ref,
      b: b.ref,
      alpha: c.alpha,
      ...(acc0 ? { accumulate: acc0 } : {}),
      ...(c.pro ? { prologue: { u: u!.ref, w: w!.ref, scale: 1.7, ...(proDrop ? { dropout: proDrop } : {}) } } : {}),
      f16: true,
    });
    if (!accT) out.dispose();
    try {
      expectWithinGemmBound(got, ref, label);
      return { key, failure: null };
    } catch (e) {
      return { key, failure: (e as Error).message };
    }
  } finally {
    accT?.dispose();
    for (const m of [a, b, u, w]) m?.dispose();
  }
}
