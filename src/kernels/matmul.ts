// Matrix products with autograd: matmul (batched, transposes, broadcast), linear (y = x·Wᵀ with the
// Hugging Face weight layout [out, in]) and nf4Linear (the same with an NF4 weight, dequantized on
// the fly). Products run through the GEMM generator (gemm.ts: tuned tiles, f32 or f16 compute by
// the engine precision), except products of at most MATMUL_GEMV_ROWS rows with B transposed (linear
// at decode: x [1, in] · Wᵀ), which take the GEMV generator (gemv.ts): at one row the weight read is
// the whole cost, and the GEMV reads it once, contiguously, where a tiled kernel would waste most of
// its work. The GEMV computes in f32 at any precision.
//
// Backward: dA = dC·op(B)ᵀ and dB = op(A)ᵀ·dC through the same GEMMs with transposes; an operand
// is saved only when the other operand's gradient needs it, in f16 under fp16-mixed
// (activations.ts). Frozen weights (requiresGrad false) get no gradient and cost nothing.
import { type GradNode, recordOp } from '../engine/autograd.js';
import { numelOf, Tensor } from '../engine/tensor.js';
import { saveActivation } from './activations.js';
import { sumToSuffix } from './elementwise.js';
import { gemm, gemmGeometry } from './gemm.js';
import { gemv } from './gemv.js';
import { type Nf4Weight, nf4Gemv } from './nf4.js';

export interface MatmulOptions {
  /** Use Aᵀ: a holds [..., K, M]. */
  transA?: boolean;
  /** Use Bᵀ: b holds [..., N, K] (the Hugging Face [out, in] weight layout). */
  transB?: boolean;
}

/** 'gemv' for decode-shaped products, else the tuned GEMM (see chooseGemm in gemm.ts). */
export type MatmulKernel = 'gemm' | 'gemv';

/** Products of at most this many rows (f32 A, B transposed) take the GEMV. */
export const MATMUL_GEMV_ROWS = 4;

// ---------------------------------------------------------------------------------------------
// Decode GEMV

/** Rows of A the GEMV would serve (the batch folds into rows when B is 2-D), or null when it cannot. */
function gemvRows(a: Tensor, b: Tensor, opts: MatmulOptions): number | null {
  if (!opts.transB || a.dtype !== 'f32' || !(b.dtype === 'f32' || b.dtype === 'bf16' || b.dtype === 'f16')) return null;
  const g = gemmGeometry({ t: a, trans: opts.transA }, { t: b, trans: true });
  const rows = g.sB === 0 && g.sA !== 0 && !opts.transA ? g.batch * g.M : g.M;
  return rows <= MATMUL_GEMV_ROWS ? rows : null;
}

/** The GEMV for M ≤ MATMUL_GEMV_ROWS with transB (A f32), forward only, no autograd. */
export function matmulGemv(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  let g = gemmGeometry({ t: a, trans: opts.transA }, { t: b, trans: opts.transB });
  const outShape = [...g.batchShape, g.M, g.N];
  if (g.sB === 0 && g.sA !== 0 && !opts.transA) g = { ...g, batchShape: [], batch: 1, M: g.batch * g.M, sA: 0 };
  const { M, N, K, batch } = g;
  if (!opts.transB || M > MATMUL_GEMV_ROWS)
    throw new RangeError(`matmulGemv needs transB and M ≤ ${MATMUL_GEMV_ROWS} (got M=${M}, transB=${!!opts.transB})`);
  if (a.dtype !== 'f32') throw new TypeError(`matmulGemv: a must be f32, got ${a.dtype}`);
  if (b.dtype !== 'f32' && b.dtype !== 'bf16' && b.dtype !== 'f16')
    throw new TypeError(`matmulGemv: b must be f32, bf16 or f16, got ${b.dtype}`);
  const c = Tensor.empty(outShape);
  if (batch === 0 || M === 0 || N === 0) return c;
  gemv({
    x: a,
    segments: [b],
    out: c,
    layout: { M, N, K, transX: !!opts.transA, batch, sx: g.sA, sw: g.sB, sout: M * N },
  });
  return c;
}

/** Which kernel the promoted `matmul` runs for these operands. */
export function chooseMatmulKernel(a: Tensor, b: Tensor, opts: MatmulOptions = {}): MatmulKernel {
  return gemvRows(a, b, opts) !== null ? 'gemv' : 'gemm';
}

/** The promoted product, forward only (no autograd node): used by backward rules and other kernels. */
export function matmulForward(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  if (gemvRows(a, b, opts) !== null) return matmulGemv(a, b, opts);
  return gemm({ a: { t: a, trans: opts.transA }, b: { t: b, trans: opts.transB } });
}

// ---------------------------------------------------------------------------------------------
// Autograd

function wants(t: Tensor): boolean {
  return t.requiresGrad || t.gradFn !== null;
}

/** dL/dA for C = op(A)·op(B) given G = dL/dC; a 2-D A broadcast over a batch gets the batch sum. */
function gradA(aShape: readonly number[], B: Tensor, G: Tensor, tA: boolean, tB: boolean): Tensor {
  // op(A) grad is G·op(B)ᵀ; when A is stored transposed, its grad is the transpose: op(B)·Gᵀ.
  const full = tA
    ? gemm({ a: { t: B, trans: tB }, b: { t: G, trans: true } })
    : gemm({ a: { t: G }, b: { t: B, trans: !tB } });
  if (aShape.length === 2 && full.shape.length > 2) {
    const g = sumToSuffix(full, aShape);
    full.dispose();
    return g;
  }
  return full;
}

/** dL/dB for C = op(A)·op(B); a 2-D B broadcast over a batch gets the batch sum. */
function gradB(A: Tensor, bShape: readonly number[], G: Tensor, tA: boolean, tB: boolean): Tensor {
  const broadcast = bShape.length === 2 && G.shape.length > 2;
  if (broadcast && !tA) {
    // Rows of every batch stack into one K dimension: the batch sum happens inside one GEMM.
    const Af = A.reshape([-1, A.shape[A.shape.length - 1]!]);
    const Gf = G.reshape([-1, G.shape[G.shape.length - 1]!]);
    const g = tB
      ? gemm({ a: { t: Gf, trans: true }, b: { t: Af } })
      : gemm({ a: { t: Af, trans: true }, b: { t: Gf } });
    Af.dispose();
    Gf.dispose();
    return g;
  }
  // op(B) grad is op(A)ᵀ·G; stored transposed, Gᵀ·op(A).
  const full = tB
    ? gemm({ a: { t: G, trans: true }, b: { t: A, trans: tA } })
    : gemm({ a: { t: A, trans: !tA }, b: { t: G } });
  if (broadcast) {
    const g = sumToSuffix(full, bShape);
    full.dispose();
    return g;
  }
  return full;
}

/**
 * C = op(a)·op(b): a [...batch, M, K], b [...batch, K, N] or 2-D b broadcast over a's batch (or 2-D
 * a over b's); transA/transB flip the last two dims of that operand. Either operand may be f32 or
 * packed bf16/f16; C is f32. Backward: dA = dC·op(B)ᵀ, dB = op(A)ᵀ·dC through the same GEMMs.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const c = matmulForward(a, b, opts);
  const tA = !!opts.transA;
  const tB = !!opts.transB;
  recordOp('matmul', [a, b], c, (node: GradNode) => {
    const [wantA, wantB] = [wants(a), wants(b)];
    const as = wantB ? saveActivation(node, a) : null;
    const bs = wantA ? saveActivation(node, b) : null;
    return ([g]) => [wantA ? gradA(a.shape, bs!, g!, tA, tB) : null, wantB ? gradB(as!, b.shape, g!, tA, tB) : null];
  });
  return c;
}

/**
 * y = x·Wᵀ: x [..., in], w [out, in] (f32 or packed bf16/f16) → [..., out]. Backward gives
 * dX = dY·W, and dW = dYᵀ·X (f32) only when w needs a gradient (frozen base weights get none, and
 * x is then not kept for backward at all).
 */
export function linear(x: Tensor, w: Tensor): Tensor {
  if (w.shape.length !== 2) throw new RangeError(`linear: weight must be [out, in], got [${w.shape}]`);
  const [out, inF] = w.shape as [number, number];
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== inF) {
    throw new RangeError(
      `linear: x [${x.shape}] does not end in the weight's in-features ${inF} (weight [${w.shape}])`,
    );
  }
  const lead = x.shape.slice(0, -1);
  const x2 = x.reshape([numelOf(lead), inF]);
  const y2 = matmulForward(x2, w, { transB: true });
  x2.dispose();
  const y = y2.reshape([...lead, out]);
  y2.dispose();
  recordOp('linear', [x, w], y, (node: GradNode) => {
    const [wantX, wantW] = [wants(x), wants(w)];
    const xs = wantW ? saveActivation(node, x) : null;
    const ws = wantX ? node.save(w) : null;
    return ([g]) => {
      const g2 = g!.reshape([numelOf(lead), out]);
      let dx: Tensor | null = null;
      let dw: Tensor | null = null;
      if (wantX) {
        const d2 = gemm({ a: { t: g2 }, b: { t: ws! } });
        dx = d2.reshape(x.shape);
        d2.dispose();
      }
      if (wantW) {
        const xf = xs!.reshape([numelOf(lead), inF]);
        dw = gemm({ a: { t: g2, trans: true }, b: { t: xf } });
        xf.dispose();
      }
      g2.dispose();
      return [dx, dw];
    };
  });
  return y;
}

// ---------------------------------------------------------------------------------------------
// NF4 linear

function nf4Operand(x: Tensor, w: Nf4Weight, what: string, inDim: number): Tensor {
  if (x.shape[x.shape.length - 1] !== inDim) {
    throw new RangeError(
      `${what}: input [${x.shape.join(', ')}] does not end in ${inDim} (weight [${w.shape.join(', ')}])`,
    );
  }
  return x.reshape([x.numel / inDim, inDim]);
}

/** y = x·Wᵀ without materializing W (forward only, no autograd): the GEMV at few rows, else the GEMM. */
export function nf4LinearForward(x: Tensor, w: Nf4Weight): Tensor {
  const [out, inF] = w.shape;
  const x2 = nf4Operand(x, w, 'nf4Linear', inF);
  if (x2.shape[0]! <= MATMUL_GEMV_ROWS && x.dtype === 'f32') {
    x2.dispose();
    return nf4Gemv(x, w);
  }
  const y2 = gemm({ a: { t: x2 }, b: { t: w, trans: true } });
  x2.dispose();
  const y = y2.reshape([...x.shape.slice(0, -1), out]);
  y2.dispose();
  return y;
}

/** dX = dY·W (the input gradient of nf4Linear), W dequantized tile by tile in the GEMM. */
export function nf4LinearBackward(dy: Tensor, w: Nf4Weight): Tensor {
  const [out, inF] = w.shape;
  const g2 = nf4Operand(dy, w, 'nf4Linear backward', out);
  const d2 = gemm({ a: { t: g2 }, b: { t: w } });
  g2.dispose();
  const d = d2.reshape([...dy.shape.slice(0, -1), inF]);
  d2.dispose();
  return d;
}

/**
 * y = x·Wᵀ for x [..., in] and an NF4 weight [out, in] → [..., out]. W is frozen: autograd gives
 * only dX = dY·W (also dequantized on the fly).
 */
export function nf4Linear(x: Tensor, w: Nf4Weight): Tensor {
  const y = nf4LinearForward(x, w);
  recordOp('nf4Linear', [x], y, () => ([g]) => [nf4LinearBackward(g!, w).reshape(x.shape)]);
  return y;
}
