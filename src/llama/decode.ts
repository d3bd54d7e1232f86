// The decode step (one new token per sequence) on the fused decode kernels (kernels/decode.ts):
// what model.step runs when T = 1. Per decoder layer, without LoRA, 6 dispatches:
//
//   qkv = [Wq; Wk; Wv]·rmsnorm(x)            decodeGemv (norm folded, 3 segments, no concatenated copy)
//   q   = ropeAppend(qkv)                     RoPE on q and k, k and v appended to the cache
//   a   = flashAttention(q, cache)            kernels/attention.ts (the split-KV flash-decoding kernel
//                                             of the attention work plugs in here)
//   x  += Wo·a                                decodeGemv, residual add in place
//   g   = silu(Wg·h)·(Wu·h), h = rmsnorm(x)   decodeGemv (norm folded, 2 segments, swiglu epilogue)
//   x  += Wd·g                                decodeGemv, residual add in place
//
// With LoRA each group adds one dispatch: u = x̂·[A…]ᵀ (decodeGemv over the A matrices, writing the
// norm's 1/rms for the main GEMV), and the main GEMV adds s·B·u in its epilogue. Then the final norm
// folded into the lm_head GEMV. Every buffer a step uses comes from the pool in the same order each
// step, so bind groups repeat; the cache length comes from a GPU buffer, so only the attention
// dispatch's uniforms (kvLength) change from token to token.
import { engine, Tensor } from '../engine/tensor.js';
import {
  type DecodeGemvOptions,
  decodeGemv,
  embedding,
  flashAttention,
  ropeAppend,
  swiglu,
  weightBindingCount,
} from '../kernels/index.js';
import { type KvCache, syncCacheLength } from './kv-cache.js';
import type { LlamaModel } from './model.js';
import type { LinearModule } from './weights.js';

/** Whether the fused decode path computes what the general forward computes (no LoRA dropout in effect). */
export function fusedDecodeApplies(model: LlamaModel): boolean {
  return !(model.training && model.lora && model.lora.config.loraDropout > 0);
}

/** Storage bindings a decodeGemv call takes (see the kernel's binding list). */
function bindingsOf(o: DecodeGemvOptions): number {
  const segs = o.epilogue === 'swiglu' ? o.segments.slice(0, 2) : o.segments;
  let n = 2 + segs.reduce((a, w) => a + weightBindingCount(w), 0); // x, out, weights
  if (o.norm) n += o.norm.rstd ? 2 : 1;
  if (o.rstdOut) n++;
  if (o.lora?.B.some(Boolean)) n += 1 + o.lora.B.filter(Boolean).length;
  return n;
}

/**
 * decodeGemv, split into several dispatches when its bindings exceed the device's storage-buffer
 * limit (e.g. three NF4 segments with double-quantized absmax and LoRA: 20 bindings).
 */
function gemv(o: DecodeGemvOptions): void {
  const limit = engine().dev.limits.maxStorageBuffersPerShaderStage;
  if (bindingsOf(o) <= limit) {
    decodeGemv(o);
    return;
  }
  const Ns = o.segments.map((w) => w.shape[0]!);
  if (o.epilogue === 'swiglu') {
    // Gate and up apart, then the swiglu kernel.
    const M = o.x.numel / o.x.shape[o.x.shape.length - 1]!;
    const [gate, up] = [0, 1].map((k) => {
      const t = Tensor.empty([M, Ns[k]!]);
      gemv({
        ...o,
        segments: [o.segments[k]!],
        epilogue: 'store',
        out: t,
        outOffsets: [0],
        ...(o.lora ? { lora: { ...o.lora, B: [o.lora.B[k] ?? null], uOffsets: [o.lora.uOffsets[k]!] } } : {}),
      });
      return t;
    });
    const y = swiglu(gate!, up!);
    if (o.out.shape[o.out.shape.length - 1] !== Ns[0] || (o.outOffsets?.[0] ?? 0) !== 0)
      throw new RangeError('decode swiglu fallback writes a whole [M, F] output');
    engine().dev.commandEncoder().copyBufferToBuffer(y.buffer, 0, o.out.buffer, 0, y.byteSize);
    for (const t of [gate!, up!, y]) t.dispose();
    return;
  }
  const offsets = o.outOffsets ?? Ns.map((_, k) => Ns.slice(0, k).reduce((a, b) => a + b, 0));
  if (o.segments.length === 1)
    throw new RangeError(`decodeGemv needs ${bindingsOf(o)} storage bindings; the device allows ${limit}`);
  o.segments.forEach((w, k) => {
    gemv({
      ...o,
      segments: [w],
      outOffsets: [offsets[k]!],
      ...(o.lora ? { lora: { ...o.lora, B: [o.lora.B[k] ?? null], uOffsets: [o.lora.uOffsets[k]!] } } : {}),
      // Only one of the pieces writes the norm's rstd.
      ...(o.rstdOut && k > 0 ? { rstdOut: undefined } : {}),
    });
  });
}

/**
 * One linear group of a layer on the fused kernels: `modules` share the input (and its folded
 * norm); their LoRA pairs, if any, go through one down-projection dispatch and the epilogue.
 */
function linearGroup(
  model: LlamaModel,
  layer: number,
  modules: readonly LinearModule[],
  x: Tensor,
  out: Tensor,
  epilogue: 'store' | 'accumulate' | 'swiglu',
  norm?: { weight: Tensor; eps: number },
): void {
  const linear = model.weights.layers[layer]!.linear;
  const segments = modules.map((m) => linear[m]);
  const pairs = modules.map((m) => model.lora?.pair(layer, m));
  const present = pairs.filter((p) => p !== undefined);
  if (present.length === 0) {
    gemv({ x, segments, out, epilogue, ...(norm ? { norm } : {}) });
    return;
  }
  const M = x.numel / x.shape[x.shape.length - 1]!;
  const r = present[0]!.A.shape[0]!;
  const u = Tensor.empty([M, present.length * r]);
  const rstd = norm ? Tensor.empty([M]) : undefined;
  let j = 0;
  const uOffsets = pairs.map((p) => (p ? r * j++ : 0));
  gemv({ x, segments: present.map((p) => p.A), out: u, ...(norm ? { norm, rstdOut: rstd } : {}) });
  gemv({
    x,
    segments,
    out,
    epilogue,
    ...(norm ? { norm: { ...norm, rstd: rstd! } } : {}),
    lora: { u, B: pairs.map((p) => p?.B ?? null), r, scale: model.lora!.scale, uOffsets },
  });
  u.dispose();
  rstd?.dispose();
}

/**
 * Logits [B, V] of one decode step: `ids` i32 [B] (one new token per cache row) at cache position
 * cache.length, whose K/V are appended to the cache. The caller advances cache.length and runs this
 * under noGrad (model.step does both).
 */
export function decodeStepLogits(model: LlamaModel, ids: Tensor, cache: KvCache): Tensor {
  const c = model.config;
  const B = cache.batchSize;
  const { numAttentionHeads: hq, numKeyValueHeads: hkv, headDim: dh, rmsNormEps: eps } = c;
  const L = cache.length;
  const rope = model.ropeFor(L);
  const length = syncCacheLength(cache);
  const x = embedding(ids, model.weights.embedTokens);
  const nq = hq * dh;
  const nkv = hkv * dh;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    const w = model.weights.layers[l]!;
    const qkv = Tensor.empty([B, nq + 2 * nkv]);
    linearGroup(model, l, ['q_proj', 'k_proj', 'v_proj'], x, qkv, 'store', { weight: w.inputNorm, eps });
    const view = (offset: number) => ({ t: qkv, ld: nq + 2 * nkv, offset });
    const q = ropeAppend({
      B,
      T: 1,
      heads: hq,
      kvHeads: hkv,
      rope,
      length,
      kCache: cache.k[l]!,
      vCache: cache.v[l]!,
      q: view(0),
      k: view(nq),
      v: view(nq + nkv),
      ...(cache.startsTensor ? { starts: cache.startsTensor } : {}),
    });
    qkv.dispose();
    const attn = flashAttention(q, cache.k[l]!, cache.v[l]!, {
      causal: true,
      scale: 1 / Math.sqrt(dh),
      qOffset: L,
      kvLength: L + 1,
      ...(cache.startsTensor ? { kvStart: cache.startsTensor } : {}),
    });
    q.dispose();
    const a = attn.reshape([B, nq]);
    attn.dispose();
    linearGroup(model, l, ['o_proj'], a, x, 'accumulate');
    a.dispose();
    const g = Tensor.empty([B, c.intermediateSize]);
    linearGroup(model, l, ['gate_proj', 'up_proj'], x, g, 'swiglu', { weight: w.postAttentionNorm, eps });
    linearGroup(model, l, ['down_proj'], g, x, 'accumulate');
    g.dispose();
  }
  const logits = Tensor.empty([B, c.vocabSize]);
  gemv({ x, segments: [model.weights.lmHead], out: logits, norm: { weight: model.weights.norm, eps } });
  x.dispose();
  return logits;
}
