// Float64 reference for attention, written from the math (naive softmax attention with the full
// T×S score matrix), independent of the WGSL kernels:
//   s_ij = scale · q_i·k_j,  visible(i, j) = j < S ∧ (¬causal ∨ j ≤ i + qOffset) ∧ (¬seg ∨ seg_i = seg_j)
//     ∧ j ≥ kvStart[b] (optional, left-padded batches)
//   P_ij = exp(s_ij − lse_i) over visible j,  lse_i = log Σ_visible exp(s_ij)  (−∞ for a row that sees nothing)
//   O_i = Σ_j P_ij v_j                        (0 for a row that sees nothing)
// Backward: dV_j = Σ_i P_ij dO_i;  dP_ij = dO_i·v_j;  dS_ij = P_ij (dP_ij − Σ_k P_ik dP_ik);
//   dQ_i = scale Σ_j dS_ij k_j;  dK_j = scale Σ_i dS_ij q_i.  GQA: head h reads kv head h / (Hq/Hkv),
//   and a kv head's gradient is the sum over the query heads that share it.
// Layouts: q, o [B, T, Hq, Dh]; k, v [B, Sk, Hkv, Dh] of which the first S = kvLength rows are used;
// lse [B, Hq, T]; segmentIds [B·T] (only with T == S).

export interface AttnRefShape {
  B: number;
  T: number;
  S: number;
  /** Rows of the k/v tensors (≥ S; a KV cache may be larger than the valid length). */
  Sk: number;
  Hq: number;
  Hkv: number;
  Dh: number;
}

export interface AttnRefOptions {
  causal: boolean;
  scale: number;
  qOffset: number;
  segmentIds?: ArrayLike<number>;
  /** First valid key per batch row (left padding): keys j < kvStart[b] are invisible. */
  kvStart?: ArrayLike<number>;
}

function visible(sh: AttnRefShape, o: AttnRefOptions, b: number, i: number, j: number): boolean {
  if (j >= sh.S) return false;
  if (o.kvStart && j < o.kvStart[b]!) return false;
  if (o.causal && j > i + o.qOffset) return false;
  if (o.segmentIds && o.segmentIds[b * sh.T + i] !== o.segmentIds[b * sh.T + j]) return false;
  return true;
}

/** Probabilities P[b][h][i][j] (S columns) and lse [B, Hq, T]. */
export function probabilities(
  sh: AttnRefShape,
  o: AttnRefOptions,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
): { P: Float64Array; lse: Float64Array } {
  const { B, T, S, Sk, Hq, Hkv, Dh } = sh;
  const G = Hq / Hkv;
  const P = new Float64Array(B * Hq * T * S);
  const lse = new Float64Array(B * Hq * T);
  const s = new Float64Array(S);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / G);
      for (let i = 0; i < T; i++) {
        let m = -Infinity;
        for (let j = 0; j < S; j++) {
          if (!visible(sh, o, b, i, j)) {
            s[j] = -Infinity;
            continue;
          }
          let dot = 0;
          const qb = ((b * T + i) * Hq + h) * Dh;
          const kb = ((b * Sk + j) * Hkv + hk) * Dh;
          for (let d = 0; d < Dh; d++) dot += q[qb + d]! * k[kb + d]!;
          s[j] = o.scale * dot;
          m = Math.max(m, s[j]!);
        }
        const row = ((b * Hq + h) * T + i) * S;
        if (m === -Infinity) {
          lse[(b * Hq + h) * T + i] = -Infinity;
          continue; // P row stays 0
        }
        let sum = 0;
        for (let j = 0; j < S; j++) sum += s[j] === -Infinity ? 0 : Math.exp(s[j]! - m);
        const l = m + Math.log(sum);
        lse[(b * Hq + h) * T + i] = l;
        for (let j = 0; j < S; j++) P[row + j] = s[j] === -Infinity ? 0 : Math.exp(s[j]! - l);
      }
    }
  return { P, lse };
}

export function attentionForwardRef(
  sh: AttnRefShape,
  o: AttnRefOptions,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
): { out: Float64Array; lse: Float64Array } {
  const { B, T, S, Sk, Hq, Hkv, Dh } = sh;
  const G = Hq / Hkv;
  const { P, lse } = probabilities(sh, o, q, k);
  const out = new Float64Array(B * T * Hq * Dh);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++)
      for (let i = 0; i < T; i++) {
        const row = ((b * Hq + h) * T + i) * S;
        const ob = ((b * T + i) * Hq + h) * Dh;
        for (let j = 0; j < S; j++) {
          const p = P[row + j]!;
          if (p === 0) continue;
          const vb = ((b * Sk + j) * Hkv + Math.floor(h / G)) * Dh;
          for (let d = 0; d < Dh; d++) out[ob + d] += p * v[vb + d]!;
        }
      }
  return { out, lse };
}

export function attentionBackwardRef(
  sh: AttnRefShape,
  o: AttnRefOptions,
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  dOut: ArrayLike<number>,
  /**
   * The output [B, T, Hq, Dh] as a kernel reads it back (e.g. stored in f16): D_i = dO_i·O_i is then
   * taken from it instead of from the exact Σ_j P_ij dP_ij.
   */
  out?: ArrayLike<number>,
): { dq: Float64Array; dk: Float64Array; dv: Float64Array } {
  const { B, T, S, Sk, Hq, Hkv, Dh } = sh;
  const G = Hq / Hkv;
  const { P } = probabilities(sh, o, q, k);
  const dq = new Float64Array(B * T * Hq * Dh);
  const dk = new Float64Array(B * Sk * Hkv * Dh);
  const dv = new Float64Array(B * Sk * Hkv * Dh);
  const dP = new Float64Array(S);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < Hq; h++) {
      const hk = Math.floor(h / G);
      for (let i = 0; i < T; i++) {
        const row = ((b * Hq + h) * T + i) * S;
        const qb = ((b * T + i) * Hq + h) * Dh;
        let rowDot = 0; // Σ_j P_ij dP_ij
        for (let j = 0; j < S; j++) {
          const vb = ((b * Sk + j) * Hkv + hk) * Dh;
          let dot = 0;
          for (let d = 0; d < Dh; d++) dot += dOut[qb + d]! * v[vb + d]!;
          dP[j] = dot;
          rowDot += P[row + j]! * dot;
        }
        if (out) {
          rowDot = 0;
          for (let d = 0; d < Dh; d++) rowDot += dOut[qb + d]! * out[qb + d]!;
        }
        for (let j = 0; j < S; j++) {
          const p = P[row + j]!;
          if (p === 0) continue;
          const kb = ((b * Sk + j) * Hkv + hk) * Dh;
          const ds = p * (dP[j]! - rowDot);
          for (let d = 0; d < Dh; d++) {
            dv[kb + d] += p * dOut[qb + d]!;
            dq[qb + d] += o.scale * ds * k[kb + d]!;
            dk[kb + d] += o.scale * ds * q[qb + d]!;
          }
        }
      }
    }
  return { dq, dk, dv };
}
