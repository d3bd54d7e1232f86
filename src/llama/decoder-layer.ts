// One Llama decoder layer, as transformers' LlamaDecoderLayer computes it (+ PEFT LoRA):
//
//   h = rmsnorm(x) ; q,k,v = h·Wqᵀ, h·Wkᵀ, h·Wvᵀ (+ LoRA) ; q,k = rope(q,k)
//   x = x + o_proj(flashAttention(q, k, v, causal, GQA))
//   x = x + down_proj(silu(gate_proj(rmsnorm(x))) * up_proj(rmsnorm(x)))
//
// Shapes: B batch rows, T tokens per row, N = B·T, D hidden, Hq/Hkv heads, Dh head dim.
// Activations are [N, D]; q/k/v are views [B, T, H, Dh] of the projections.
//
// Kept for backward (none): x, rmsnorm(x), q, k, v (rotated), attention output + lse, x', rmsnorm(x'),
// gate, up, swiglu(gate, up), LoRA's rank-r products and the norms' rstd. Under fp16-mixed the GEMM
// inputs kept (the norm outputs, the attention output, the SwiGLU output, LoRA's u) are f16 copies
// (kernels/activations.ts), and attention's q, k, v and SwiGLU's gate, up are f16 themselves. Under selective
// checkpointing (`recompute`) the two norm outputs and the SwiGLU output are not kept but rebuilt
// in backward from x, x' and gate/up, which are kept anyway: every GEMM output and the attention
// output stay, the cheap elementwise work is done twice.
import { withRecompute } from '../engine/autograd.js';
import { saveActivationsIn16Bit } from '../engine/precision.js';
import { type Tensor, tidy } from '../engine/tensor.js';
import { add, cast, flashAttention, type RopeTables, rmsnorm, rope, ropeAppend, swiglu } from '../kernels/index.js';
import type { LlamaConfig } from './config.js';
import type { KvCache } from './kv-cache.js';
import { type LoraLayers, project } from './lora-layers.js';
import { view } from './ops.js';
import { type LayerWeights, LINEAR_MODULES, type LinearModule } from './weights.js';

/** What one layer's forward needs besides its input. */
export interface LayerContext {
  config: LlamaConfig;
  weights: LayerWeights;
  /** Layer index (selects the LoRA pairs and the KV cache entries). */
  index: number;
  lora: LoraLayers | null;
  /** LoRA dropout probability in effect (0 outside training). */
  loraDropout: number;
  /** One dropout seed per module in LINEAR_MODULES order. */
  dropoutSeeds: readonly number[];
  B: number;
  T: number;
  /** RoPE positions [N] (i32; unused with a cache, whose kernel derives them) and the tables covering them. */
  positions: Tensor | null;
  rope: RopeTables;
  /** Packing segment ids [N] (i32): tokens attend only within their segment. */
  segments?: Tensor;
  /** Decoding: K/V are appended at cache.length and attention runs over the cache. */
  cache?: KvCache;
  /** The cache length on the GPU (syncCacheLength), with `cache`. */
  cacheLength?: Tensor;
  /** Selective checkpointing: rebuild the norm and SwiGLU outputs in backward instead of keeping them. */
  recompute?: boolean;
}

function projection(x: Tensor, ctx: LayerContext, mod: LinearModule): Tensor {
  const pair = ctx.lora?.pair(ctx.index, mod);
  const seed = ctx.dropoutSeeds[LINEAR_MODULES.indexOf(mod)]!;
  return project(
    x,
    ctx.weights.linear[mod],
    pair ? { pair, scale: ctx.lora!.scale, dropout: ctx.loraDropout, seed } : undefined,
  );
}

/** Runs `body(h)` on h = rmsnorm(x, w); with ctx.recompute, backward rebuilds h from x instead of keeping it. */
function normed<T>(x: Tensor, w: Tensor, ctx: LayerContext, body: (h: Tensor) => T): T {
  const eps = ctx.config.rmsNormEps;
  const h = rmsnorm(x, w, eps);
  return ctx.recompute
    ? withRecompute(
        h,
        [x],
        ([xs]) => rmsnorm(xs!, w, eps),
        () => body(h),
      )
    : body(h);
}

/**
 * The dtype of attention's q, k, v and SwiGLU's gate, up (what those keep for backward): f16 under
 * fp16-mixed (the GEMMs round their operands to f16 there anyway), f32 otherwise (fp32 stays the
 * reference path).
 */
export function savedInputDtype(): 'f32' | 'f16' {
  return saveActivationsIn16Bit() ? 'f16' : 'f32';
}

/**
 * Self-attention block: x + o_proj(attention(rmsnorm(x))). Each stage runs in its own tidy scope, so
 * an intermediate is freed as soon as its readers have run rather than at the end of the layer:
 * the norm output after the q/k/v projections, the projections after RoPE, the attention output
 * after o_proj. What backward reads survives as the rules' saved views (f32) or f16 copies
 * (fp16-mixed, whose f32 originals are then freed at once: a full-checkpointing re-run peaks there).
 */
function attentionBlock(x: Tensor, ctx: LayerContext): Tensor {
  const { numAttentionHeads: hq, headDim: dh } = ctx.config;
  const { B, T } = ctx;
  return tidy(() => {
    const o = tidy(() => {
      const attn = ctx.cache
        ? cachedAttention(x, ctx)
        : tidy(() => {
            const [q, k, v] = projectQkv(x, ctx);
            return selfAttention(q, k, v, ctx);
          });
      return projection(view(attn, [B * T, hq * dh]), ctx, 'o_proj');
    });
    return add(x, o);
  });
}

/** The q, k, v projections of rmsnorm(x) (the norm output freed with this scope). */
function projectQkv(x: Tensor, ctx: LayerContext): [Tensor, Tensor, Tensor] {
  return tidy(() =>
    normed(x, ctx.weights.inputNorm, ctx, (h) => [
      projection(h, ctx, 'q_proj'),
      projection(h, ctx, 'k_proj'),
      projection(h, ctx, 'v_proj'),
    ]),
  );
}

/** Attention without a cache (prefill of training and evaluation), from the q, k, v projections. */
function selfAttention(qProj: Tensor, kProj: Tensor, vProj: Tensor, ctx: LayerContext): Tensor {
  const { numAttentionHeads: hq, numKeyValueHeads: hkv, headDim: dh } = ctx.config;
  const { B, T, positions, rope: rt } = ctx;
  // fp16-mixed: attention reads (and keeps for backward) q, k, v in f16, half the bytes; RoPE
  // writes q and k in f16 directly, v is cast. The forward and backward see the same values.
  const dtype = savedInputDtype();
  const q = rope(view(qProj, [B, T, hq, dh]), positions!, rt, { dtype });
  const k = rope(view(kProj, [B, T, hkv, dh]), positions!, rt, { dtype });
  const vf = view(vProj, [B, T, hkv, dh]);
  const v = dtype === 'f16' ? cast(vf, 'f16') : vf;
  return flashAttention(q, k, v, {
    causal: true,
    scale: 1 / Math.sqrt(dh),
    ...(ctx.segments ? { segmentIds: ctx.segments } : {}),
  });
}

/** Decoding: RoPE and the K/V append in one kernel (positions from the cache length and starts on the GPU), then attention over the cache. */
function cachedAttention(x: Tensor, ctx: LayerContext): Tensor {
  const { numAttentionHeads: hq, numKeyValueHeads: hkv, headDim: dh } = ctx.config;
  const { B, T, rope: rt } = ctx;
  const cache = ctx.cache!;
  const l = ctx.index;
  const q = tidy(() => {
    const [qp, kp, vp] = projectQkv(x, ctx);
    const row = (t: Tensor, heads: number) => ({ t, ld: heads * dh, offset: 0 });
    return ropeAppend({
      B,
      T,
      heads: hq,
      kvHeads: hkv,
      rope: rt,
      length: ctx.cacheLength!,
      kCache: cache.k[l]!,
      vCache: cache.v[l]!,
      q: row(qp, hq),
      k: row(kp, hkv),
      v: row(vp, hkv),
      ...(cache.startsTensor ? { starts: cache.startsTensor } : {}),
    });
  });
  return flashAttention(q, cache.k[l]!, cache.v[l]!, {
    causal: true,
    scale: 1 / Math.sqrt(dh),
    qOffset: cache.length,
    kvLength: cache.length + T,
    ...(cache.startsTensor ? { kvStart: cache.startsTensor } : {}),
  });
}

/**
 * MLP block: x + down_proj(silu(gate_proj(h)) * up_proj(h)), h = rmsnorm(x); scoped like the
 * attention block. Under fp16-mixed SwiGLU reads (and keeps for backward) gate and up in f16, as
 * attention does q, k, v.
 */
function mlpBlock(x: Tensor, ctx: LayerContext): Tensor {
  const half = savedInputDtype() === 'f16';
  return tidy(() => {
    const down = tidy(() => {
      const [gate, up] = tidy(() =>
        normed(x, ctx.weights.postAttentionNorm, ctx, (h) => {
          const [g, u] = [projection(h, ctx, 'gate_proj'), projection(h, ctx, 'up_proj')];
          return half ? [cast(g, 'f16'), cast(u, 'f16')] : [g, u];
        }),
      );
      const act = swiglu(gate, up);
      const run = () => projection(act, ctx, 'down_proj');
      return ctx.recompute ? withRecompute(act, [gate, up], ([g, u]) => swiglu(g!, u!), run) : run();
    });
    return add(x, down);
  });
}

/** The decoder layer on x [N, D] → [N, D]. */
export function decoderLayer(x: Tensor, ctx: LayerContext): Tensor {
  return mlpBlock(attentionBlock(x, ctx), ctx);
}
