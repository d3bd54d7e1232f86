// Float64 reference for the GEMM generator (src/kernels/gemm.ts), written from the definition
//   C = alpha · ( [scale · mask ⊙ (op(U)·op(W))] + op(A)·op(B) ) [+ C_old]
// with LoRA dropout on an operand (element i of the stored matrix kept when hashUniform(seed, i) ≥ p,
// scaled by 1/(1 − p)) or on the prologue's output (element m·N + n), plus a rigorous error bound per
// element for the kernel's arithmetic:
//
// - Operand values: the reference takes exactly the values the GPU reads (f32, decoded bf16/f16,
//   dequantized NF4). A dropped-and-kept element is x·fl(1/(1−p)) in f32: relative error ≤ 2·2⁻²⁴.
//   The f16 compute variant rounds every operand element to f16 (WGSL lets a conversion pick either
//   neighbour, so the error is up to one f16 ulp: 2⁻¹⁰ relative for normal values, 2⁻²⁴ absolute
//   below 2⁻¹⁴), and its products are then exact in f32 (11 + 11 significant bits ≤ 24).
//   With e(x) the error of one operand element, the perturbed product differs from the exact one by
//   at most e(a)|b| + |a|e(b) + e(a)e(b).
// - Summation: any order of n f32 additions and roundings of f32 products errs by at most
//   γₙ·Σ|terms| (Higham), γₙ = n·u/(1 − n·u), u = 2⁻²⁴; n counts the K (+ R prologue) products plus
//   one rounding each for the prologue scale, the mask's 1/(1−p), alpha and the accumulate add.
// A wrong index, a missed term or a wrong mask is off by O(|a·b|) and fails; the bound cannot flake.
import { dropoutKeepRef } from './lora.js';

export interface RefOperand {
  /** The stored matrix's values, row-major, exactly as the GPU reads them. */
  data: ArrayLike<number>;
  /** Stored shape [rows, cols]. */
  shape: readonly [number, number];
  /** The logical operand is the transpose of the stored matrix. */
  trans?: boolean;
  dropout?: { p: number; seed: number };
}

export interface GemmRefInput {
  a: RefOperand;
  b: RefOperand;
  alpha?: number;
  accumulate?: ArrayLike<number>;
  prologue?: { u: RefOperand; w: RefOperand; scale: number; dropout?: { p: number; seed: number } };
  /** The f16 compute variant (operands rounded to f16). */
  f16: boolean;
}

export interface GemmRef {
  M: number;
  N: number;
  value: Float64Array;
  bound: Float64Array;
}

const U32 = 2 ** -24;

/** One f16 ulp at |x| (the largest error of rounding x to f16 in either direction; inf above the range). */
export function f16Ulp(x: number): number {
  const a = Math.abs(x);
  if (a >= 65520) return Infinity;
  if (a < 2 ** -14) return 2 ** -24;
  return 2 ** (Math.floor(Math.log2(a)) - 10);
}

/** Logical op(X)[i][j] (dropout applied) and whether the element went through the dropout scaling. */
function element(o: RefOperand, i: number, j: number): { v: number; dropped: boolean } {
  const cols = o.shape[1];
  const idx = o.trans ? j * cols + i : i * cols + j;
  const v = o.data[idx]!;
  if (!o.dropout) return { v, dropped: false };
  return { v: dropoutKeepRef(o.dropout.seed, idx, o.dropout.p) ? v * (1 / (1 - o.dropout.p)) : 0, dropped: true };
}

function logicalShape(o: RefOperand): [number, number] {
  return o.trans ? [o.shape[1], o.shape[0]] : [o.shape[0], o.shape[1]];
}

/** Σ_k op(X)[m,k]·op(Y)[k,n], the operand-perturbation bound and the magnitude sum of one element. */
function dot(
  x: RefOperand,
  y: RefOperand,
  f16: boolean,
  m: number,
  n: number,
): { sum: number; perturb: number; mag: number } {
  const K = logicalShape(x)[1];
  const err = (v: number, dropped: boolean) =>
    (dropped ? 2 * U32 * Math.abs(v) : 0) + (f16 ? f16Ulp(Math.abs(v) * (1 + 2 * U32)) : 0);
  let sum = 0;
  let perturb = 0;
  let mag = 0;
  for (let k = 0; k < K; k++) {
    const a = element(x, m, k);
    const b = element(y, k, n);
    const ea = err(a.v, a.dropped);
    const eb = err(b.v, b.dropped);
    sum += a.v * b.v;
    perturb += ea * Math.abs(b.v) + Math.abs(a.v) * eb + ea * eb;
    mag += (Math.abs(a.v) + ea) * (Math.abs(b.v) + eb);
  }
  return { sum, perturb, mag };
}

/** Shape [M, N] of the product, after checking the operands fit. */
export function gemmRefShape(inp: GemmRefInput): [number, number] {
  const [M, K] = logicalShape(inp.a);
  const [K2, N] = logicalShape(inp.b);
  if (K !== K2) throw new Error(`gemmReference: inner dims ${K} vs ${K2}`);
  if (inp.prologue) {
    const [pm, pk] = logicalShape(inp.prologue.u);
    const [pk2, pn] = logicalShape(inp.prologue.w);
    if (pm !== M || pn !== N || pk !== pk2) throw new Error('gemmReference: prologue shape differs');
  }
  return [M, N];
}

/** Reference value and error bound of element (m, n) (see the header for the bound). */
export function gemmReferenceAt(inp: GemmRefInput, m: number, n: number): { value: number; bound: number } {
  const [, N] = gemmRefShape(inp);
  const K = logicalShape(inp.a)[1];
  const R = inp.prologue ? logicalShape(inp.prologue.u)[1] : 0;
  const terms = K + (inp.prologue ? R + 2 : 0) + 1 + (inp.accumulate ? 1 : 0);
  const gamma = (terms * U32) / (1 - terms * U32);
  const alpha = inp.alpha ?? 1;
  let { sum: v, perturb: pe, mag: mg } = dot(inp.a, inp.b, inp.f16, m, n);
  if (inp.prologue) {
    const d = inp.prologue.dropout;
    const f = inp.prologue.scale * (d ? (dropoutKeepRef(d.seed, m * N + n, d.p) ? 1 / (1 - d.p) : 0) : 1);
    const p = dot(inp.prologue.u, inp.prologue.w, inp.f16, m, n);
    v += f * p.sum;
    pe += Math.abs(f) * p.perturb;
    mg += Math.abs(f) * p.mag;
  }
  v *= alpha;
  pe *= Math.abs(alpha);
  mg *= Math.abs(alpha);
  if (inp.accumulate) {
    v += inp.accumulate[m * N + n]!;
    mg += Math.abs(inp.accumulate[m * N + n]!);
  }
  return { value: v, bound: pe + gamma * mg + 1e-30 };
}

/** The whole product: reference values and bounds of every element. */
export function gemmReference(inp: GemmRefInput): GemmRef {
  const [M, N] = gemmRefShape(inp);
  const value = new Float64Array(M * N);
  const bound = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const r = gemmReferenceAt(inp, m, n);
      value[m * N + n] = r.value;
      bound[m * N + n] = r.bound;
    }
  }
  return { M, N, value, bound };
}

/** Checks every element against the reference's bound; NaN (an unwritten, poisoned output) fails. */
export function expectWithinGemmBound(actual: ArrayLike<number>, ref: GemmRef, label: string): void {
  if (actual.length !== ref.value.length)
    throw new Error(`${label}: length ${actual.length} vs reference ${ref.value.length}`);
  const bad: string[] = [];
  let nBad = 0;
  let worst = 0;
  for (let i = 0; i < ref.value.length; i++) {
    const err = Math.abs(actual[i]! - ref.value[i]!);
    if (!(err <= ref.bound[i]!)) {
      nBad++;
      if (bad.length < 8)
        bad.push(
          `  [${Math.floor(i / ref.N)}, ${i % ref.N}] got ${actual[i]} want ${ref.value[i]} (err ${err.toExponential(2)}, bound ${ref.bound[i]!.toExponential(2)})`,
        );
    }
    if (Number.isFinite(err)) worst = Math.max(worst, err / ref.bound[i]!);
  }
  if (nBad > 0)
    throw new Error(
      `${label}: ${nBad}/${ref.value.length} elements outside the error bound (worst err/bound ${worst.toFixed(2)})\n${bad.join('\n')}`,
    );
}
