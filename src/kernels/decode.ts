// Kernels of the decode step (a few rows: one token per sequence), where every weight is read once
// per step and the cost is memory traffic plus the number of dispatches.
//
// decodeGemv: the GEMV generator (gemv.ts) with the decode step's fused options: RMSNorm folded into
// the input, up to 3 weight segments per dispatch, LoRA and the accumulate / swiglu epilogues.
//
// ropeAppend: RoPE on q and k of the step's tokens and the K/V cache append in one kernel. Row b's
//   token t sits at cache position L + t, its RoPE position is max(0, L + t − start_b) (the cache's
//   left padding), L read from a GPU buffer (the cache length), so the step's uniforms and bind
//   groups do not change from token to token. The rotation is the rope kernel's arithmetic.
import { Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms } from './common.js';
import type { RopeTables } from './rope.js';
import { kernelFamily } from './variants.js';

export { type GemvOptions as DecodeGemvOptions, type GemvWeight, gemv as decodeGemv } from './gemv.js';

// ---------------------------------------------------------------------------------------------
// RoPE + KV-cache append

interface RopeAppendSpec {
  /** The K/V cache holds f16 packed two per u32 (else f32). */
  kvF16: boolean;
}

/**
 * The rope-append kernel; with `kvF16` the cache holds f16 packed two per u32 (the layout the
 * attention kernels unpack), so each thread handles two adjacent pairs (i, i + 1 with i even; Dh/2
 * is even since Dh is a multiple of 4) and writes whole words.
 */
function ropeAppendKernel({ kvF16 }: RopeAppendSpec): string {
  const per = kvF16 ? 2 : 1;
  const cacheType = kvF16 ? 'u32' : 'f32';
  // Stores x1' (at dst) and x2' (at dst + half) for the `per` adjacent pairs starting at dst.
  const store = (buf: string, a: string, b: string) =>
    kvF16
      ? `${buf}[dst / 2u] = pack2x16float(vec2f(${a}[0], ${a}[1]));\n    ${buf}[(dst + p.half) / 2u] = pack2x16float(vec2f(${b}[0], ${b}[1]));`
      : `${buf}[dst] = ${a}[0];\n    ${buf}[dst + p.half] = ${b}[0];`;
  return /* wgsl */ `
struct P {
  rows: u32, T: u32, hq: u32, hkv: u32,
  half: u32, smax: u32, max_pos: u32, nan_bits: u32,
  ldq: u32, offq: u32, ldk: u32, offk: u32,
  ldv: u32, offv: u32, has_starts: u32, _pad: u32,
}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> COS: array<f32>;
@group(0) @binding(5) var<storage, read> SIN: array<f32>;
@group(0) @binding(6) var<storage, read> LEN: array<u32>;
@group(0) @binding(7) var<storage, read> STARTS: array<i32>;
@group(0) @binding(8) var<storage, read_write> QOUT: array<f32>;
@group(0) @binding(9) var<storage, read_write> KC: array<${cacheType}>;
@group(0) @binding(10) var<storage, read_write> VC: array<${cacheType}>;
const PER: u32 = ${per}u;
// One thread per (token row, head slot, ${per} pair${per > 1 ? 's' : ''} i < Dh/2); head slots: Hq query heads,
// Hkv key heads, Hkv value heads (copied, not rotated).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  let slots = p.hq + 2u * p.hkv;
  let groups = p.half / PER;
  if (t >= p.rows * slots * groups) { return; }
  let i0 = (t % groups) * PER;
  let slot = (t / groups) % slots;
  let row = t / (groups * slots);           // b · T + tt
  let b = row / p.T;
  let tt = row % p.T;
  let dh = 2u * p.half;
  let cachePos = LEN[0] + tt;
  var start = 0;
  if (p.has_starts != 0u) { start = STARTS[b]; }
  let pos = max(0, i32(cachePos) - start);
  var r1: array<f32, ${per}>;
  var r2: array<f32, ${per}>;
  if (slot >= p.hq + p.hkv) {
    let h = slot - p.hq - p.hkv;
    let src = row * p.ldv + p.offv + h * dh + i0;
    let dst = ((b * p.smax + cachePos) * p.hkv + h) * dh + i0;
    for (var e = 0u; e < PER; e++) {
      r1[e] = V[src + e];
      r2[e] = V[src + e + p.half];
    }
    ${store('VC', 'r1', 'r2')}
    return;
  }
  let ok = u32(pos) < p.max_pos;
  let nan = bitcast<f32>(p.nan_bits);
  var base: u32;
  if (slot < p.hq) {
    base = row * p.ldq + p.offq + slot * dh + i0;
  } else {
    base = row * p.ldk + p.offk + (slot - p.hq) * dh + i0;
  }
  for (var e = 0u; e < PER; e++) {
    var c = 0.0;
    var s = 0.0;
    if (ok) {
      c = COS[u32(pos) * p.half + i0 + e];
      s = SIN[u32(pos) * p.half + i0 + e];
    }
    var x1: f32;
    var x2: f32;
    if (slot < p.hq) {
      x1 = Q[base + e];
      x2 = Q[base + e + p.half];
    } else {
      x1 = K[base + e];
      x2 = K[base + e + p.half];
    }
    r1[e] = select(nan, x1 * c - x2 * s, ok);
    r2[e] = select(nan, x2 * c + x1 * s, ok);
  }
  if (slot < p.hq) {
    let o = (row * p.hq + slot) * dh + i0;
    for (var e = 0u; e < PER; e++) {
      QOUT[o + e] = r1[e];
      QOUT[o + e + p.half] = r2[e];
    }
  } else {
    let dst = ((b * p.smax + cachePos) * p.hkv + (slot - p.hq)) * dh + i0;
    ${store('KC', 'r1', 'r2')}
  }
}`;
}

const ROPE_APPEND = kernelFamily<RopeAppendSpec>({
  family: 'decode.rope_append',
  specs: () => [{ kvF16: false }, { kvF16: true }],
  code: ropeAppendKernel,
});

/** One of q/k/v as the rows of a (possibly wider) buffer: element (row, j) at row·ld + offset + j. */
export interface RowView {
  t: Tensor;
  ld: number;
  offset: number;
}

export interface RopeAppendOptions {
  /** Batch rows B and tokens per row T (rows of q/k/v: b·T + t). */
  B: number;
  T: number;
  heads: number;
  kvHeads: number;
  q: RowView;
  k: RowView;
  v: RowView;
  rope: RopeTables;
  /** u32 [≥1]: the cache length L (position of the first new token). */
  length: Tensor;
  /** i32 [B]: each row's first real position (left padding); absent = all 0. */
  starts?: Tensor;
  /** Cache tensors [B, Smax, Hkv, Dh], f32 or f16 (both the same dtype). */
  kCache: Tensor;
  vCache: Tensor;
}

/**
 * Rotates q and k of B·T new tokens (RoPE at position max(0, L + t − start_b)) and appends k and v
 * to the cache at positions L..L+T−1. Returns the rotated q [B, T, H, Dh]. One dispatch.
 */
export function ropeAppend(o: RopeAppendOptions): Tensor {
  const { B, T, heads, kvHeads, rope } = o;
  const dh = rope.headDim;
  const [cb, smax, ch, cdh] = o.kCache.shape as [number, number, number, number];
  if (cb !== B || ch !== kvHeads || cdh !== dh)
    throw new RangeError(`ropeAppend: cache [${o.kCache.shape.join(', ')}] for B ${B}, Hkv ${kvHeads}, Dh ${dh}`);
  for (const [name, v, width] of [
    ['q', o.q, heads * dh],
    ['k', o.k, kvHeads * dh],
    ['v', o.v, kvHeads * dh],
  ] as const) {
    assertDtype(v.t, 'f32', `ropeAppend ${name}`);
    if (v.offset + width > v.ld || (B * T - 1) * v.ld + v.offset + width > v.t.numel)
      throw new RangeError(
        `ropeAppend: ${name} view (ld ${v.ld}, offset ${v.offset}) does not hold ${B * T} rows of ${width}`,
      );
  }
  const kvF16 = o.kCache.dtype === 'f16';
  if (!kvF16) assertDtype(o.kCache, 'f32', 'ropeAppend kCache');
  assertDtype(o.vCache, o.kCache.dtype, 'ropeAppend vCache');
  if (kvF16 && dh % 4 !== 0)
    throw new RangeError(`ropeAppend: an f16 cache needs a head dim that is a multiple of 4, got ${dh}`);
  assertDtype(o.length, 'u32', 'ropeAppend length');
  if (o.starts) assertDtype(o.starts, 'i32', 'ropeAppend starts');
  const qOut = Tensor.empty([B, T, heads, dh]);
  const half = dh / 2;
  const n = B * T * (heads + 2 * kvHeads) * (kvF16 ? half / 2 : half);
  if (n === 0) return qOut;
  // Without starts the kernel never reads STARTS (has_starts = 0): the length buffer, bound read-only
  // in the same call, fills the slot, so no placeholder buffer outlives the call or its engine.
  ROPE_APPEND.dispatch(
    { kvF16 },
    [o.q.t, o.k.t, o.v.t, rope.cos, rope.sin, o.length, o.starts ?? o.length, qOut, o.kCache, o.vCache],
    grid1d(n),
    new Uniforms(16)
      .u32(B * T)
      .u32(T)
      .u32(heads)
      .u32(kvHeads)
      .u32(half)
      .u32(smax)
      .u32(rope.maxPositions)
      .u32(0x7fc00000)
      .u32(o.q.ld)
      .u32(o.q.offset)
      .u32(o.k.ld)
      .u32(o.k.offset)
      .u32(o.v.ld)
      .u32(o.v.offset)
      .u32(o.starts ? 1 : 0)
      .u32(0),
  );
  return qOut;
}
