// Float64 CPU reference of the Llama forward (+ LoRA) and its loss, written from the math of
// transformers' LlamaForCausalLM, independent of the GPU code. Slow; only for the tiny fixtures.
import { Checkpoint } from '../src/io/safetensors.js';
import type { LlamaConfig } from '../src/llama/config.js';

const MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'] as const;
type Mod = (typeof MODULES)[number];

export interface RefWeights {
  get(name: string): Float64Array;
}

export interface RefLora {
  scale: number;
  /** (layer, module) → A [r, in], B [out, r], or undefined when not adapted. */
  get(layer: number, mod: Mod): { A: Float64Array; B: Float64Array; r: number } | undefined;
}

export async function readRefWeights(dir: string): Promise<RefWeights> {
  const ck = await Checkpoint.open(dir);
  const m = new Map<string, Float64Array>();
  for (const n of ck.names()) m.set(n, Float64Array.from(await ck.readF32(n)));
  await ck.close();
  return {
    get: (n) => {
      const v = m.get(n);
      if (!v) throw new Error(`ref: no ${n}`);
      return v;
    },
  };
}

export function refInvFreq(cfg: LlamaConfig): Float64Array {
  const d = cfg.headDim;
  const inv = new Float64Array(d / 2);
  for (let i = 0; i < d / 2; i++) inv[i] = 1 / cfg.rope.theta ** ((2 * i) / d);
  const s = cfg.rope.scaling;
  if (s) {
    const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
    const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
    for (let i = 0; i < d / 2; i++) {
      const wavelen = (2 * Math.PI) / inv[i]!;
      if (wavelen > lowWavelen) inv[i] = inv[i]! / s.factor;
      else if (wavelen >= highWavelen) {
        const smooth =
          (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
        inv[i] = (1 - smooth) * (inv[i]! / s.factor) + smooth * inv[i]!;
      }
    }
  }
  return inv;
}

/** y [n, out] = x [n, in] · Wᵀ (+ scale · x·Aᵀ·Bᵀ). */
function lin(
  x: Float64Array,
  n: number,
  inp: number,
  w: Float64Array,
  out: number,
  lora?: { A: Float64Array; B: Float64Array; r: number },
  scale = 0,
): Float64Array {
  const y = new Float64Array(n * out);
  for (let i = 0; i < n; i++) {
    for (let o = 0; o < out; o++) {
      let s = 0;
      for (let k = 0; k < inp; k++) s += x[i * inp + k]! * w[o * inp + k]!;
      y[i * out + o] = s;
    }
    if (lora) {
      const t = new Float64Array(lora.r);
      for (let j = 0; j < lora.r; j++) {
        let s = 0;
        for (let k = 0; k < inp; k++) s += x[i * inp + k]! * lora.A[j * inp + k]!;
        t[j] = s;
      }
      for (let o = 0; o < out; o++) {
        let s = 0;
        for (let j = 0; j < lora.r; j++) s += t[j]! * lora.B[o * lora.r + j]!;
        y[i * out + o] += scale * s;
      }
    }
  }
  return y;
}

function rms(x: Float64Array, n: number, d: number, w: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(n * d);
  for (let i = 0; i < n; i++) {
    let ss = 0;
    for (let k = 0; k < d; k++) ss += x[i * d + k]! ** 2;
    const r = 1 / Math.sqrt(ss / d + eps);
    for (let k = 0; k < d; k++) y[i * d + k] = x[i * d + k]! * r * w[k]!;
  }
  return y;
}

/** Logits [T, V] for one sequence (positions 0..T-1). */
export function refLogits(cfg: LlamaConfig, W: RefWeights, ids: readonly number[], lora?: RefLora): Float64Array {
  const T = ids.length;
  const {
    hiddenSize: D,
    numAttentionHeads: Hq,
    numKeyValueHeads: Hkv,
    headDim: Dh,
    intermediateSize: F,
    vocabSize: V,
  } = cfg;
  const emb = W.get('model.embed_tokens.weight');
  let x = new Float64Array(T * D);
  for (let t = 0; t < T; t++) for (let k = 0; k < D; k++) x[t * D + k] = emb[ids[t]! * D + k]!;
  const inv = refInvFreq(cfg);
  const rot = (v: Float64Array, H: number) => {
    for (let t = 0; t < T; t++)
      for (let h = 0; h < H; h++)
        for (let i = 0; i < Dh / 2; i++) {
          const o = (t * H + h) * Dh;
          const a = t * inv[i]!;
          const c = Math.cos(a),
            s = Math.sin(a);
          const x1 = v[o + i]!,
            x2 = v[o + i + Dh / 2]!;
          v[o + i] = x1 * c - x2 * s;
          v[o + i + Dh / 2] = x2 * c + x1 * s;
        }
  };
  for (let l = 0; l < cfg.numHiddenLayers; l++) {
    const p = `model.layers.${l}.`;
    const L = (m: Mod) => lora?.get(l, m);
    const sc = lora?.scale ?? 0;
    const h = rms(x, T, D, W.get(p + 'input_layernorm.weight'), cfg.rmsNormEps);
    const q = lin(h, T, D, W.get(p + 'self_attn.q_proj.weight'), Hq * Dh, L('q_proj'), sc);
    const k = lin(h, T, D, W.get(p + 'self_attn.k_proj.weight'), Hkv * Dh, L('k_proj'), sc);
    const v = lin(h, T, D, W.get(p + 'self_attn.v_proj.weight'), Hkv * Dh, L('v_proj'), sc);
    rot(q, Hq);
    rot(k, Hkv);
    const att = new Float64Array(T * Hq * Dh);
    const g = Hq / Hkv;
    for (let hh = 0; hh < Hq; hh++) {
      const kh = Math.floor(hh / g);
      for (let t = 0; t < T; t++) {
        const s = new Float64Array(t + 1);
        let m = -Infinity;
        for (let u = 0; u <= t; u++) {
          let d = 0;
          for (let i = 0; i < Dh; i++) d += q[(t * Hq + hh) * Dh + i]! * k[(u * Hkv + kh) * Dh + i]!;
          s[u] = d / Math.sqrt(Dh);
          m = Math.max(m, s[u]!);
        }
        let z = 0;
        for (let u = 0; u <= t; u++) z += s[u] = Math.exp(s[u]! - m);
        for (let i = 0; i < Dh; i++) {
          let acc = 0;
          for (let u = 0; u <= t; u++) acc += s[u]! * v[(u * Hkv + kh) * Dh + i]!;
          att[(t * Hq + hh) * Dh + i] = acc / z;
        }
      }
    }
    const o = lin(att, T, Hq * Dh, W.get(p + 'self_attn.o_proj.weight'), D, L('o_proj'), sc);
    for (let i = 0; i < T * D; i++) x[i] += o[i]!;
    const h2 = rms(x, T, D, W.get(p + 'post_attention_layernorm.weight'), cfg.rmsNormEps);
    const gt = lin(h2, T, D, W.get(p + 'mlp.gate_proj.weight'), F, L('gate_proj'), sc);
    const up = lin(h2, T, D, W.get(p + 'mlp.up_proj.weight'), F, L('up_proj'), sc);
    for (let i = 0; i < T * F; i++) gt[i] = (gt[i]! / (1 + Math.exp(-gt[i]!))) * up[i]!;
    const dn = lin(gt, T, F, W.get(p + 'mlp.down_proj.weight'), D, L('down_proj'), sc);
    x = x.map((val, i) => val + dn[i]!);
  }
  const hf = rms(x, T, D, W.get('model.norm.weight'), cfg.rmsNormEps);
  const head = cfg.tieWordEmbeddings ? emb : W.get('lm_head.weight');
  return lin(hf, T, D, head, V);
}

/** HF loss with labels = ids: mean NLL of ids[t+1] given logits[t]. */
export function refLoss(logits: Float64Array, ids: readonly number[], V: number): number {
  let s = 0;
  for (let t = 0; t + 1 < ids.length; t++) {
    let m = -Infinity;
    for (let v = 0; v < V; v++) m = Math.max(m, logits[t * V + v]!);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[t * V + v]! - m);
    s += Math.log(z) + m - logits[t * V + ids[t + 1]!]!;
  }
  return s / (ids.length - 1);
}
