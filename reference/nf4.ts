// CPU references for NF4, written from the definition (QLoRA / the PyTorch fixture script), not from
// the WGSL: blockwise absmax over 64 elements, code = argmin_k |fl32(x / absmax) − NF4_k| with the
// distances rounded to f32 as PyTorch computes them and the first index winning ties; dequantized
// value fl32(NF4_code · absmax). Division/subtraction of f32 values done in f64 and rounded once to
// f32 equal the correctly rounded f32 operations (53 ≥ 2·24 + 2), so Math.fround emulates PyTorch.

export const NF4_TABLE = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
];

const f = Math.fround;

/** PyTorch-semantics NF4 code of one element. `am` = 0 gives the code of 0.0 (7). */
export function nf4CodeRef(x: number, am: number): number {
  if (am === 0) return 7;
  const xn = f(x / am);
  let best = 0;
  let bestD = f(Math.abs(xn - NF4_TABLE[0]!));
  for (let k = 1; k < 16; k++) {
    const d = f(Math.abs(xn - NF4_TABLE[k]!));
    if (d < bestD) {
      bestD = d;
      best = k;
    }
  }
  return best;
}

/** bitsandbytes' choice (kQuantizeBlockwise + dQuantizeNF4): x·fl(1/absmax), then `>` midpoint thresholds. */
export function nf4CodeBnb(x: number, am: number): number {
  const xn = f(x * f(1 / am));
  const mids = [
    -0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544, -0.23460740596055984,
    -0.13791173323988914, -0.045525018125772476, 0.03979014977812767, 0.1202552504837513, 0.2035212516784668,
    0.2920137718319893, 0.3893125355243683, 0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
  ].map(f);
  let c = 0;
  while (c < 15 && xn > mids[c]!) c++;
  return c;
}

export interface Nf4Ref {
  codes: Uint8Array;
  absmax: Float32Array;
}

/** Blockwise (64) NF4 quantization of a row-major flattened weight; the last block may be partial. */
export function quantizeNf4Ref(w: ArrayLike<number>): Nf4Ref {
  const n = w.length;
  const nb = Math.ceil(n / 64);
  const codes = new Uint8Array(n);
  const absmax = new Float32Array(nb);
  for (let b = 0; b < nb; b++) {
    let am = 0;
    for (let i = b * 64; i < Math.min(n, b * 64 + 64); i++) am = Math.max(am, Math.abs(w[i]!));
    absmax[b] = am;
    for (let i = b * 64; i < Math.min(n, b * 64 + 64); i++) codes[i] = nf4CodeRef(w[i]!, am);
  }
  return { codes, absmax };
}

/** The dequantized weight as the f32 values it stands for (one f32 product each). */
export function dequantizeNf4Ref(codes: ArrayLike<number>, absmax: ArrayLike<number>): Float64Array {
  const out = new Float64Array(codes.length);
  for (let i = 0; i < codes.length; i++) out[i] = f(NF4_TABLE[codes[i]!]! * absmax[i >> 6]!);
  return out;
}

/** Half the gap between the two codes bracketing x/absmax: the largest error nearest-rounding allows. */
export function nf4HalfSpacing(xn: number): number {
  for (let k = 0; k < 15; k++) {
    if (xn <= NF4_TABLE[k + 1]!) return (NF4_TABLE[k + 1]! - NF4_TABLE[k]!) / 2;
  }
  return 0;
}

/** y[m, n] = Σ_k x[m, k]·w[n, k] in f64, with Σ|x·w| per output for error bounds. */
export function matmulNTRef(
  x: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  K: number,
  N: number,
): { y: Float64Array; absSum: Float64Array } {
  const y = new Float64Array(M * N);
  const absSum = new Float64Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      let a = 0;
      for (let k = 0; k < K; k++) {
        const p = x[m * K + k]! * w[n * K + k]!;
        s += p;
        a += Math.abs(p);
      }
      y[m * N + n] = s;
      absSum[m * N + n] = a;
    }
  }
  return { y, absSum };
}

/** dx[m, k] = Σ_n g[m, n]·w[n, k] in f64, with Σ|g·w|. */
export function matmulNNRef(
  g: ArrayLike<number>,
  w: ArrayLike<number>,
  M: number,
  N: number,
  K: number,
): { y: Float64Array; absSum: Float64Array } {
  const y = new Float64Array(M * K);
  const absSum = new Float64Array(M * K);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      const gv = g[m * N + n]!;
      for (let k = 0; k < K; k++) {
        const p = gv * w[n * K + k]!;
        y[m * K + k] += p;
        absSum[m * K + k] += Math.abs(p);
      }
    }
  }
  return { y, absSum };
}

/**
 * Checks every element against a sum-of-products reference with the deterministic f32 summation
 * bound |ŷ − y| ≤ γ·Σ|terms|, γ = (terms + extra)·2^-24 (any summation order; extra covers the
 * per-term rounding of products and of scale factors).
 */
export function expectWithinSumBound(
  actual: ArrayLike<number>,
  ref: { y: Float64Array; absSum: Float64Array },
  terms: number,
  label: string,
  extra = 2,
): void {
  const gamma = (terms + extra) * 2 ** -24;
  const bad: string[] = [];
  let nBad = 0;
  for (let i = 0; i < ref.y.length; i++) {
    const a = actual[i]!;
    const tol = gamma * ref.absSum[i]! + 1e-30;
    if (!(Math.abs(a - ref.y[i]!) <= tol)) {
      nBad++;
      if (bad.length < 8)
        bad.push(
          `  [${i}] got ${a} want ${ref.y[i]} (err ${Math.abs(a - ref.y[i]!).toExponential(2)}, bound ${tol.toExponential(2)})`,
        );
    }
  }
  if (actual.length !== ref.y.length) throw new Error(`${label}: length ${actual.length} vs ${ref.y.length}`);
  if (nBad)
    throw new Error(`${label}: ${nBad}/${ref.y.length} elements outside the f32 summation bound\n${bad.join('\n')}`);
}
