// Float64 references for matmul, written from the definition C[b,m,n] = Σ_k op(A)[b,m,k]·op(B)[b,k,n]
// (not from the WGSL). Alongside each result the reference returns Σ_k |op(A)[m,k]·op(B)[k,n]| per
// element: the scale that bounds f32 rounding error of a K-term dot product (Higham: |error| ≤
// γ_K·Σ|a·b| with γ_K = K·u/(1 − K·u), u = 2⁻²⁴), so tests can state exact, justified tolerances.

export interface MatRef {
  shape: number[];
  data: Float64Array;
  /** Σ|a·b| per element. */
  absDot: Float64Array;
}

export interface Operand {
  data: ArrayLike<number>;
  shape: readonly number[];
}

/** Shapes of op(A)·op(B): M, K, N, the batch, and each operand's batch stride (0 when broadcast). */
function geometry(a: Operand, b: Operand, transA: boolean, transB: boolean) {
  const aB = a.shape.slice(0, -2);
  const bB = b.shape.slice(0, -2);
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const M = transA ? ac : ar;
  const K = transA ? ar : ac;
  const N = transB ? br : bc;
  if ((transB ? bc : br) !== K) throw new Error('matmulRef: inner dims differ');
  const batchShape = aB.length ? aB : bB;
  return {
    M,
    K,
    N,
    batchShape,
    batch: batchShape.reduce((x, y) => x * y, 1),
    aStride: aB.length ? M * K : 0,
    bStride: bB.length ? K * N : 0,
  };
}

/** op(A)·op(B) with numpy-style broadcasting limited to: equal batch dims, or one operand 2-D. */
export function matmulRef(a: Operand, b: Operand, transA = false, transB = false): MatRef {
  const { M, K, N, batchShape, batch, aStride, bStride } = geometry(a, b, transA, transB);
  const data = new Float64Array(batch * M * N);
  const absDot = new Float64Array(batch * M * N);
  for (let t = 0; t < batch; t++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        let sa = 0;
        for (let k = 0; k < K; k++) {
          const av = a.data[t * aStride + (transA ? k * M + m : m * K + k)]!;
          const bv = b.data[t * bStride + (transB ? n * K + k : k * N + n)]!;
          s += av * bv;
          sa += Math.abs(av * bv);
        }
        data[(t * M + m) * N + n] = s;
        absDot[(t * M + m) * N + n] = sa;
      }
    }
  }
  return { shape: [...batchShape, M, N], data, absDot };
}

/**
 * Gradients of L = Σ G ⊙ (op(A)·op(B)) from the definition: dop(A) = G·op(B)ᵀ, dop(B) = op(A)ᵀ·G,
 * transposed back to each operand's storage layout, summed over the batch for a broadcast operand.
 * Computed element by element here (independently of the kernel's transposed-GEMM formulation).
 */
export function matmulGradRef(
  a: Operand,
  b: Operand,
  g: ArrayLike<number>,
  transA = false,
  transB = false,
): { dA: MatRef; dB: MatRef } {
  const { M, K, N, batch, aStride, bStride } = geometry(a, b, transA, transB);
  const nA = a.shape.reduce((x, y) => x * y, 1);
  const nB = b.shape.reduce((x, y) => x * y, 1);
  const dA = { shape: [...a.shape], data: new Float64Array(nA), absDot: new Float64Array(nA) };
  const dB = { shape: [...b.shape], data: new Float64Array(nB), absDot: new Float64Array(nB) };
  for (let t = 0; t < batch; t++) {
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        const gv = g[(t * M + m) * N + n]!;
        for (let k = 0; k < K; k++) {
          const ia = t * aStride + (transA ? k * M + m : m * K + k);
          const ib = t * bStride + (transB ? n * K + k : k * N + n);
          const av = a.data[ia]!;
          const bv = b.data[ib]!;
          dA.data[ia] += gv * bv;
          dA.absDot[ia] += Math.abs(gv * bv);
          dB.data[ib] += av * gv;
          dB.absDot[ib] += Math.abs(av * gv);
        }
      }
    }
  }
  return { dA, dB };
}

/** f32 rounding-error bound of a sum of `terms` products: γ_terms·Σ|a·b| (+ a small floor for zeros). */
export function dotErrorBound(absDot: number, terms: number): number {
  const u = 2 ** -24;
  const gamma = (terms * u) / (1 - terms * u);
  return gamma * absDot + 1e-30;
}

/** The value of 16-bit float bits, from the format definitions (bf16: top half of an f32; f16: IEEE binary16). */
export function halfBitsToNumber(bits: number, dtype: 'bf16' | 'f16'): number {
  if (dtype === 'bf16') return new Float32Array(new Uint32Array([(bits & 0xffff) << 16]).buffer)[0]!;
  const sign = bits & 0x8000 ? -1 : 1;
  const exp = (bits >> 10) & 0x1f;
  const frac = bits & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}
