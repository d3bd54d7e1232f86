// Float64 references for the fused decode kernels (src/kernels/decode.ts), from the definitions:
// RMSNorm, the linear layers over dense weight values, the LoRA update, the epilogues.

export interface GemvRefInput {
  M: number;
  K: number;
  x: ArrayLike<number>;
  /** Per segment: the weight values [N_s, K] (already decoded from bf16/f16/NF4). */
  weights: ArrayLike<number>[];
  Ns: number[];
  norm?: { g: ArrayLike<number>; eps: number };
  /** u [M, ldu]; per segment B [N_s, r] or null; u offset per segment. */
  lora?: {
    u: ArrayLike<number>;
    ldu: number;
    B: (ArrayLike<number> | null)[];
    r: number;
    scale: number;
    uOffsets: number[];
  };
  epilogue: 'store' | 'accumulate' | 'swiglu';
  /** Output [M, ld]: its initial content (accumulate, and the columns no segment writes). */
  out0: ArrayLike<number>;
  ld: number;
  outOffsets: number[];
}

/**
 * The output [M, ld] and, per element, Σ|terms| (the scale of f32 rounding: |x̂·w| products,
 * |s·B·u| products, and |out0| for accumulate).
 */
export function decodeGemvRef(inp: GemvRefInput): { y: Float64Array; absSum: Float64Array; rstd: Float64Array } {
  const { M, K, ld } = inp;
  const y = Float64Array.from(inp.out0);
  const absSum = new Float64Array(M * ld);
  const rstd = new Float64Array(M);
  for (let m = 0; m < M; m++) {
    const xh = new Float64Array(K);
    let ss = 0;
    for (let k = 0; k < K; k++) ss += inp.x[m * K + k]! ** 2;
    rstd[m] = 1 / Math.sqrt(ss / K + (inp.norm?.eps ?? 0));
    for (let k = 0; k < K; k++) xh[k] = inp.norm ? inp.x[m * K + k]! * rstd[m]! * inp.norm.g[k]! : inp.x[m * K + k]!;
    const seg = (s: number, n: number): { v: number; a: number } => {
      let v = 0;
      let a = 0;
      const w = inp.weights[s]!;
      for (let k = 0; k < K; k++) {
        const p = xh[k]! * w[n * K + k]!;
        v += p;
        a += Math.abs(p);
      }
      const B = inp.lora?.B[s];
      if (inp.lora && B) {
        const { u, ldu, r, scale, uOffsets } = inp.lora;
        for (let j = 0; j < r; j++) {
          const p = scale * B[n * r + j]! * u[m * ldu + uOffsets[s]! + j]!;
          v += p;
          a += Math.abs(p);
        }
      }
      return { v, a };
    };
    if (inp.epilogue === 'swiglu') {
      for (let n = 0; n < inp.Ns[0]!; n++) {
        const g = seg(0, n);
        const u = seg(1, n);
        const sig = 1 / (1 + Math.exp(-g.v));
        const o = m * ld + inp.outOffsets[0]! + n;
        y[o] = g.v * sig * u.v;
        // silu(g)·u: relative errors of g and u carry over (|silu'(g)| ≤ 1.1 times |g|'s error).
        absSum[o] = 1.1 * g.a * Math.abs(u.v) + Math.abs(g.v * sig) * u.a + Math.abs(y[o]!);
      }
      continue;
    }
    inp.Ns.forEach((N, s) => {
      for (let n = 0; n < N; n++) {
        const r = seg(s, n);
        const o = m * ld + inp.outOffsets[s]! + n;
        if (inp.epilogue === 'accumulate') {
          absSum[o] = r.a + Math.abs(y[o]!);
          y[o] = y[o]! + r.v;
        } else {
          y[o] = r.v;
          absSum[o] = r.a;
        }
      }
    });
  }
  return { y, absSum, rstd };
}

/**
 * RoPE + cache append: q rotated [B·T, H, Dh]; k rotated and v copied into caches [B, Smax, Hkv, Dh]
 * (given initial contents) at positions L + t; RoPE position max(0, L + t − start_b).
 */
export function ropeAppendRef(
  B: number,
  T: number,
  H: number,
  Hkv: number,
  dh: number,
  L: number,
  starts: ArrayLike<number>,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  cos: ArrayLike<number>,
  sin: ArrayLike<number>,
  kCache0: ArrayLike<number>,
  vCache0: ArrayLike<number>,
  smax: number,
): { q: Float64Array; kCache: Float64Array; vCache: Float64Array } {
  const half = dh / 2;
  const qo = new Float64Array(B * T * H * dh);
  const kc = Float64Array.from(kCache0);
  const vc = Float64Array.from(vCache0);
  const rot = (src: ArrayLike<number>, sb: number, dst: Float64Array, db: number, pos: number) => {
    for (let i = 0; i < half; i++) {
      const c = cos[pos * half + i]!;
      const s = sin[pos * half + i]!;
      const a = src[sb + i]!;
      const b = src[sb + i + half]!;
      dst[db + i] = a * c - b * s;
      dst[db + i + half] = b * c + a * s;
    }
  };
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      const row = b * T + t;
      const pos = Math.max(0, L + t - starts[b]!);
      const cp = L + t;
      for (let h = 0; h < H; h++) rot(q, (row * H + h) * dh, qo, (row * H + h) * dh, pos);
      for (let h = 0; h < Hkv; h++) {
        const dst = ((b * smax + cp) * Hkv + h) * dh;
        rot(k, (row * Hkv + h) * dh, kc, dst, pos);
        for (let i = 0; i < dh; i++) vc[dst + i] = v[(row * Hkv + h) * dh + i]!;
      }
    }
  }
  return { q: qo, kCache: kc, vCache: vc };
}
