// Float64 CPU reference of the Llama loss and its gradient with respect to EVERY weight (full
// training), derived by hand from the math of transformers' LlamaForCausalLM, independent of the GPU
// code and of the autograd engine. One sequence, labels = the ids shifted by one (HF's
// model(input_ids, labels=input_ids).loss). Tied embeddings: one matrix, the gradients of the
// embedding lookup and of the LM head summed. Slow; only for the tiny fixtures.
//
// Forward, per layer (x: [T, D]):
//   h = rms(x)·w_in ; q, k, v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ ; q, k = rope(q), rope(k)
//   a = softmax(q·kᵀ/√Dh, causal)·v (GQA: query head hh reads KV head hh / (Hq/Hkv))
//   x = x + a·Woᵀ ; h2 = rms(x)·w_post ; x = x + (silu(h2·Wgᵀ) ⊙ h2·Wuᵀ)·Wdᵀ
// then logits = rms(x)·w_norm·Wlmᵀ and loss = mean_t CE(logits_t, ids_{t+1}).
import type { LlamaConfig } from '../src/llama/config.js';
import { refInvFreq } from './llama.js';

export type RefParams = Map<string, Float64Array>;

/** y [n, out] = x [n, in] · Wᵀ */
function lin(x: Float64Array, n: number, inp: number, w: Float64Array, out: number): Float64Array {
  const y = new Float64Array(n * out);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let k = 0; k < inp; k++) s += x[i * inp + k]! * w[o * inp + k]!;
      y[i * out + o] = s;
    }
  }
  return y;
}

/** Backward of y = x·Wᵀ: dW += dyᵀ·x, returns dx = dy·W. */
function linBack(
  dy: Float64Array,
  x: Float64Array,
  n: number,
  inp: number,
  w: Float64Array,
  out: number,
  dW: Float64Array,
): Float64Array {
  const dx = new Float64Array(n * inp);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < out; o++) {
      const g = dy[i * out + o]!;
      if (g === 0) continue;
      for (let k = 0; k < inp; k++) {
        dW[o * inp + k] += g * x[i * inp + k]!;
        dx[i * inp + k] += g * w[o * inp + k]!;
      }
    }
  }
  return dx;
}

function rms(
  x: Float64Array,
  n: number,
  d: number,
  w: Float64Array,
  eps: number,
): { y: Float64Array; r: Float64Array } {
  const y = new Float64Array(n * d);
  const r = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let ss = 0;
    for (let k = 0; k < d; k++) ss += x[i * d + k]! ** 2;
    r[i] = 1 / Math.sqrt(ss / d + eps);
    for (let k = 0; k < d; k++) y[i * d + k] = x[i * d + k]! * r[i]! * w[k]!;
  }
  return { y, r };
}

/** Backward of y = x·r(x)·w: dw += Σ dy·x·r; dx = r·dy·w − (r³/D)·(Σ_k dy·w·x)·x. */
function rmsBack(
  dy: Float64Array,
  x: Float64Array,
  r: Float64Array,
  n: number,
  d: number,
  w: Float64Array,
  dw: Float64Array,
): Float64Array {
  const dx = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let k = 0; k < d; k++) {
      dot += dy[i * d + k]! * w[k]! * x[i * d + k]!;
      dw[k] += dy[i * d + k]! * x[i * d + k]! * r[i]!;
    }
    const c = (r[i]! ** 3 * dot) / d;
    for (let k = 0; k < d; k++) dx[i * d + k] = r[i]! * dy[i * d + k]! * w[k]! - c * x[i * d + k]!;
  }
  return dx;
}

/** Rotate-half RoPE in place on [T, H, Dh]; `sign` -1 applies the inverse (= transpose) rotation. */
function rope(v: Float64Array, T: number, H: number, Dh: number, inv: Float64Array, sign: 1 | -1): void {
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < Dh / 2; i++) {
        const o = (t * H + h) * Dh;
        const a = t * inv[i]!;
        const c = Math.cos(a);
        const s = sign * Math.sin(a);
        const x1 = v[o + i]!;
        const x2 = v[o + i + Dh / 2]!;
        v[o + i] = x1 * c - x2 * s;
        v[o + i + Dh / 2] = x2 * c + x1 * s;
      }
    }
  }
}

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

/** Loss and d loss / d every parameter for one sequence. Gradients are keyed like `params`. */
export function refLossAndGrads(
  cfg: LlamaConfig,
  params: RefParams,
  ids: readonly number[],
): { loss: number; grads: RefParams } {
  const P = (n: string) => {
    const v = params.get(n);
    if (!v) throw new Error(`ref: no parameter ${n}`);
    return v;
  };
  const grads: RefParams = new Map([...params].map(([n, v]) => [n, new Float64Array(v.length)]));
  const G = (n: string) => grads.get(n)!;
  const T = ids.length;
  const {
    hiddenSize: D,
    numAttentionHeads: Hq,
    numKeyValueHeads: Hkv,
    headDim: Dh,
    intermediateSize: F,
    vocabSize: V,
    rmsNormEps: eps,
  } = cfg;
  const group = Hq / Hkv;
  const scale = 1 / Math.sqrt(Dh);
  const inv = refInvFreq(cfg);
  const embName = 'model.embed_tokens.weight';
  const headName = cfg.tieWordEmbeddings ? embName : 'lm_head.weight';

  // ---- forward, keeping what backward needs
  const emb = P(embName);
  let x = new Float64Array(T * D);
  for (let t = 0; t < T; t++) for (let k = 0; k < D; k++) x[t * D + k] = emb[ids[t]! * D + k]!;
  interface LayerCache {
    x: Float64Array;
    h: Float64Array;
    r: Float64Array;
    q: Float64Array;
    k: Float64Array;
    v: Float64Array;
    p: Float64Array[];
    a: Float64Array;
    x1: Float64Array;
    h2: Float64Array;
    r2: Float64Array;
    g: Float64Array;
    u: Float64Array;
    m: Float64Array;
  }
  const caches: LayerCache[] = [];
  for (let l = 0; l < cfg.numHiddenLayers; l++) {
    const pre = `model.layers.${l}.`;
    const { y: h, r } = rms(x, T, D, P(pre + 'input_layernorm.weight'), eps);
    const q = lin(h, T, D, P(pre + 'self_attn.q_proj.weight'), Hq * Dh);
    const k = lin(h, T, D, P(pre + 'self_attn.k_proj.weight'), Hkv * Dh);
    const v = lin(h, T, D, P(pre + 'self_attn.v_proj.weight'), Hkv * Dh);
    rope(q, T, Hq, Dh, inv, 1);
    rope(k, T, Hkv, Dh, inv, 1);
    const a = new Float64Array(T * Hq * Dh);
    const probs: Float64Array[] = []; // per (head, t): softmax over u ≤ t
    for (let hh = 0; hh < Hq; hh++) {
      const kh = Math.floor(hh / group);
      for (let t = 0; t < T; t++) {
        const s = new Float64Array(t + 1);
        let mx = -Infinity;
        for (let u = 0; u <= t; u++) {
          let d = 0;
          for (let i = 0; i < Dh; i++) d += q[(t * Hq + hh) * Dh + i]! * k[(u * Hkv + kh) * Dh + i]!;
          s[u] = d * scale;
          mx = Math.max(mx, s[u]!);
        }
        let z = 0;
        for (let u = 0; u <= t; u++) z += s[u] = Math.exp(s[u]! - mx);
        for (let u = 0; u <= t; u++) s[u] = s[u]! / z;
        probs.push(s);
        for (let i = 0; i < Dh; i++) {
          let acc = 0;
          for (let u = 0; u <= t; u++) acc += s[u]! * v[(u * Hkv + kh) * Dh + i]!;
          a[(t * Hq + hh) * Dh + i] = acc;
        }
      }
    }
    const o = lin(a, T, Hq * Dh, P(pre + 'self_attn.o_proj.weight'), D);
    const x1 = x.map((val, i) => val + o[i]!);
    const { y: h2, r: r2 } = rms(x1, T, D, P(pre + 'post_attention_layernorm.weight'), eps);
    const g = lin(h2, T, D, P(pre + 'mlp.gate_proj.weight'), F);
    const u = lin(h2, T, D, P(pre + 'mlp.up_proj.weight'), F);
    const m = g.map((gv, i) => gv * sigmoid(gv) * u[i]!);
    const dn = lin(m, T, F, P(pre + 'mlp.down_proj.weight'), D);
    caches.push({ x, h, r, q, k, v, p: probs, a, x1, h2, r2, g, u, m });
    x = x1.map((val, i) => val + dn[i]!);
  }
  const { y: hf, r: rf } = rms(x, T, D, P('model.norm.weight'), eps);
  const logits = lin(hf, T, D, P(headName), V);

  // ---- loss and d loss / d logits (mean over the T-1 predicted positions)
  const n = T - 1;
  let loss = 0;
  const dlogits = new Float64Array(T * V);
  for (let t = 0; t < n; t++) {
    let mx = -Infinity;
    for (let c = 0; c < V; c++) mx = Math.max(mx, logits[t * V + c]!);
    let z = 0;
    for (let c = 0; c < V; c++) z += Math.exp(logits[t * V + c]! - mx);
    const target = ids[t + 1]!;
    loss += Math.log(z) + mx - logits[t * V + target]!;
    for (let c = 0; c < V; c++)
      dlogits[t * V + c] = (Math.exp(logits[t * V + c]! - mx) / z - (c === target ? 1 : 0)) / n;
  }
  loss /= n;

  // ---- backward
  const dhf = linBack(dlogits, hf, T, D, P(headName), V, G(headName));
  let dx = rmsBack(dhf, x, rf, T, D, P('model.norm.weight'), G('model.norm.weight'));
  for (let l = cfg.numHiddenLayers - 1; l >= 0; l--) {
    const pre = `model.layers.${l}.`;
    const c = caches[l]!;
    // MLP: x_out = x1 + (silu(g) ⊙ u)·Wdᵀ
    const dm = linBack(dx, c.m, T, F, P(pre + 'mlp.down_proj.weight'), D, G(pre + 'mlp.down_proj.weight'));
    const dg = new Float64Array(T * F);
    const du = new Float64Array(T * F);
    for (let i = 0; i < T * F; i++) {
      const sg = sigmoid(c.g[i]!);
      du[i] = dm[i]! * c.g[i]! * sg;
      dg[i] = dm[i]! * c.u[i]! * sg * (1 + c.g[i]! * (1 - sg));
    }
    const dh2 = linBack(dg, c.h2, T, D, P(pre + 'mlp.gate_proj.weight'), F, G(pre + 'mlp.gate_proj.weight'));
    const dh2u = linBack(du, c.h2, T, D, P(pre + 'mlp.up_proj.weight'), F, G(pre + 'mlp.up_proj.weight'));
    for (let i = 0; i < T * D; i++) dh2[i] += dh2u[i]!;
    const dx1 = rmsBack(
      dh2,
      c.x1,
      c.r2,
      T,
      D,
      P(pre + 'post_attention_layernorm.weight'),
      G(pre + 'post_attention_layernorm.weight'),
    );
    for (let i = 0; i < T * D; i++) dx1[i] += dx[i]!;
    // Attention: x1 = x + a·Woᵀ
    const da = linBack(dx1, c.a, T, Hq * Dh, P(pre + 'self_attn.o_proj.weight'), D, G(pre + 'self_attn.o_proj.weight'));
    const dq = new Float64Array(T * Hq * Dh);
    const dk = new Float64Array(T * Hkv * Dh);
    const dv = new Float64Array(T * Hkv * Dh);
    let pi = 0;
    for (let hh = 0; hh < Hq; hh++) {
      const kh = Math.floor(hh / group);
      for (let t = 0; t < T; t++) {
        const p = c.p[pi++]!;
        const dp = new Float64Array(t + 1);
        let sum = 0;
        for (let u = 0; u <= t; u++) {
          let s = 0;
          for (let i = 0; i < Dh; i++) {
            s += da[(t * Hq + hh) * Dh + i]! * c.v[(u * Hkv + kh) * Dh + i]!;
            dv[(u * Hkv + kh) * Dh + i] += p[u]! * da[(t * Hq + hh) * Dh + i]!;
          }
          dp[u] = s;
          sum += p[u]! * s;
        }
        for (let u = 0; u <= t; u++) {
          const ds = p[u]! * (dp[u]! - sum) * scale;
          for (let i = 0; i < Dh; i++) {
            dq[(t * Hq + hh) * Dh + i] += ds * c.k[(u * Hkv + kh) * Dh + i]!;
            dk[(u * Hkv + kh) * Dh + i] += ds * c.q[(t * Hq + hh) * Dh + i]!;
          }
        }
      }
    }
    rope(dq, T, Hq, Dh, inv, -1);
    rope(dk, T, Hkv, Dh, inv, -1);
    const dh = linBack(dq, c.h, T, D, P(pre + 'self_attn.q_proj.weight'), Hq * Dh, G(pre + 'self_attn.q_proj.weight'));
    const dhk = linBack(
      dk,
      c.h,
      T,
      D,
      P(pre + 'self_attn.k_proj.weight'),
      Hkv * Dh,
      G(pre + 'self_attn.k_proj.weight'),
    );
    const dhv = linBack(
      dv,
      c.h,
      T,
      D,
      P(pre + 'self_attn.v_proj.weight'),
      Hkv * Dh,
      G(pre + 'self_attn.v_proj.weight'),
    );
    for (let i = 0; i < T * D; i++) dh[i] += dhk[i]! + dhv[i]!;
    const dxa = rmsBack(dh, c.x, c.r, T, D, P(pre + 'input_layernorm.weight'), G(pre + 'input_layernorm.weight'));
    dx = dx1.map((val, i) => val + dxa[i]!);
  }
  // Embedding lookup: scatter-add (into the same matrix as the LM head's gradient when tied).
  const dEmb = G(embName);
  for (let t = 0; t < T; t++) for (let k = 0; k < D; k++) dEmb[ids[t]! * D + k] += dx[t * D + k]!;
  return { loss, grads };
}
