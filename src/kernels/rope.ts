// Rotary position embeddings, Llama's rotate-half convention: for i < Dh/2 the pair (i, i + Dh/2) of
// each head is rotated by the angle position · inv_freq[i]:
//   y[i]        = x[i]·cos − x[i + Dh/2]·sin
//   y[i + Dh/2] = x[i + Dh/2]·cos + x[i]·sin
// (HF: q·cos + rotate_half(q)·sin with rotate_half(x) = cat(−x2, x1) and cos = cat(c, c)).
// Backward is the inverse rotation (the transpose): the same kernel with sin negated.
//
// Tables. cos/sin are built on the CPU once, [maxPositions, Dh/2] f32 (HF's cat(freqs, freqs) halves
// are equal, so we store one half). Two precisions:
// - 'hf-float32' (default): reproduces transformers' float32 arithmetic step by step, each operation
//   done in f64 and rounded to f32 exactly where torch rounds (Math.fround): inv_freq = 1/θ^(2i/Dh)
//   (exponent, pow and reciprocal each rounded; torch evaluates `s / t` as t.reciprocal() * s), the
//   llama3 scaling of `_compute_llama3_parameters` in f32, and the angle as the f32 product
//   pos·inv_freq (HF's f32 matmul of inv_freq by positions; one product per entry, exact emulation).
//   cos/sin of that f32 angle are then taken in f64 and rounded once (torch's f32 cos is within an
//   ulp or two of that). This is what matters for matching HF logits: at position p an inv_freq
//   that differs by one f32 ulp moves the angle by ~p·6e-8·inv_freq (≈1e-4 rad at p = 2048), an
//   error our tables avoid wherever torch's f32 pow rounds correctly (its vectorized pow is only
//   bounded to ~1 ulp, so a few entries may still differ by an ulp). The chain is tested bit-exact against a
//   numpy float32 emulation for Llama 3.x and TinyLlama configs.
// - 'float64': the exact math in f64 (inv_freq, scaling, angle, cos/sin), rounded once to f32:
//   closest to the true rotation, but differs from HF by the f32 rounding of HF's angles.
//
// Positions come from an i32 tensor [B·T] (packed batches restart positions per example). A
// position outside [0, maxPositions) cannot be reported without a CPU sync, so the kernel writes NaN
// for that token: the loss turns NaN instead of silently using a wrong angle.
import { isGradEnabled, recordOp } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms, WG, WGSL_FLAT_INDEX } from './common.js';
import { kernelFamily } from './variants.js';

export interface RopeScalingLlama3 {
  type: 'llama3';
  factor: number;
  lowFreqFactor: number;
  highFreqFactor: number;
  originalMaxPositionEmbeddings: number;
}

export type RopePrecision = 'hf-float32' | 'float64';

export interface RopeTableOptions {
  headDim: number;
  theta: number;
  scaling: null | RopeScalingLlama3;
  maxPositions: number;
  /** Default 'hf-float32' (see the header comment). */
  precision?: RopePrecision;
}

export interface RopeTables {
  /** cos(pos · inv_freq[i]), [maxPositions, headDim/2] f32, kept (dispose when the model is freed). */
  cos: Tensor;
  sin: Tensor;
  headDim: number;
  maxPositions: number;
}

/**
 * inv_freq[i], i < headDim/2, with llama3 scaling if given. In 'hf-float32' every value is an f32
 * (rounded as transformers rounds); in 'float64' the exact values.
 */
export function ropeInvFreq(opts: Omit<RopeTableOptions, 'maxPositions'>): Float64Array {
  const { headDim: dim, theta, scaling, precision = 'hf-float32' } = opts;
  if (!Number.isInteger(dim) || dim < 2 || dim % 2 !== 0)
    throw new RangeError(`rope: headDim must be a positive even integer, got ${dim}`);
  if (!(theta > 0)) throw new RangeError(`rope: theta must be positive, got ${theta}`);
  const r = precision === 'hf-float32' ? Math.fround : (v: number) => v;
  const half = dim / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) {
    const e = r((2 * i) / dim); // arange(0, dim, 2).float() / dim
    const p = r(r(theta) ** e); // base ** e, f32 pow
    inv[i] = r(r(1 / p) * 1); // 1.0 / p == p.reciprocal() * 1.0
  }
  if (!scaling) return inv;
  if (scaling.type !== 'llama3')
    throw new RangeError(`rope: unsupported scaling type '${(scaling as { type: string }).type}'`);
  const { factor, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: old } = scaling;
  if (!(high > low))
    throw new RangeError(`rope llama3 scaling: highFreqFactor (${high}) must exceed lowFreqFactor (${low})`);
  const lowWavelen = r(old / low); // python floats, compared against an f32 tensor in f32
  const highWavelen = r(old / high);
  const twoPi = r(2 * Math.PI);
  for (let i = 0; i < half; i++) {
    const f = inv[i]!;
    const wavelen = r(r(1 / f) * twoPi); // 2π / inv_freq
    let llama = wavelen > lowWavelen ? r(f / r(factor)) : f;
    if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
      const smooth = r(r(r(r(1 / wavelen) * r(old)) - r(low)) / r(high - low)); // (old/wavelen − low) / (high − low)
      llama = r(r(r(r(1 - smooth) * llama) / r(factor)) + r(smooth * llama)); // (1−s)·f/factor + s·f
    }
    inv[i] = llama;
  }
  return inv;
}

/** The cos/sin tables on the CPU, [maxPositions, headDim/2] row-major (see the header comment). */
export function ropeTableData(opts: RopeTableOptions): { cos: Float32Array; sin: Float32Array } {
  const { headDim, maxPositions, precision = 'hf-float32' } = opts;
  if (!Number.isInteger(maxPositions) || maxPositions < 1)
    throw new RangeError(`rope: maxPositions must be a positive integer, got ${maxPositions}`);
  const inv = ropeInvFreq(opts);
  const half = headDim / 2;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let pos = 0; pos < maxPositions; pos++) {
    for (let i = 0; i < half; i++) {
      // f32 inputs: their f64 product is exact, so fround gives torch's f32 product.
      const angle = precision === 'hf-float32' ? Math.fround(pos * inv[i]!) : pos * inv[i]!;
      cos[pos * half + i] = Math.cos(angle);
      sin[pos * half + i] = Math.sin(angle);
    }
  }
  return { cos, sin };
}

/** Uploads cos/sin tables for `rope`. The tensors are kept (exempt from tidy): dispose them with the model. */
export function ropeTables(opts: RopeTableOptions): RopeTables {
  const { cos, sin } = ropeTableData(opts);
  const half = opts.headDim / 2;
  return {
    cos: Tensor.from(cos, [opts.maxPositions, half]).keep(),
    sin: Tensor.from(sin, [opts.maxPositions, half]).keep(),
    headDim: opts.headDim,
    maxPositions: opts.maxPositions,
  };
}

/**
 * The rotation kernel. f32 output: one thread per rotated pair. f16 output (packed two per u32, the
 * layout the attention kernels unpack): one thread per two adjacent pairs (i, i + 1 with i even; Dh/2
 * is even since Dh is a multiple of 4), so it writes whole words; the arithmetic is the same, each
 * result rounded to f16 once.
 */
function ropeKernel({ out }: RopeSpec): string {
  const f16Out = out === 'f16';
  const per = f16Out ? 2 : 1;
  // In place: X is read and written, there is no Y binding.
  const Y = out === 'in-place' ? 'X' : 'Y';
  const store = f16Out
    ? `Y[a / 2u] = pack2x16float(vec2f(y1[0], y1[1]));\n  Y[b / 2u] = pack2x16float(vec2f(y2[0], y2[1]));`
    : `${Y}[a] = y1[0];\n  ${Y}[b] = y2[0];`;
  const yBinding =
    out === 'in-place' ? '' : `@group(0) @binding(5) var<storage, read_write> Y: array<${f16Out ? 'u32' : 'f32'}>;`;
  return /* wgsl */ `
struct P { n: u32, half: u32, heads: u32, max_pos: u32, sign: f32, nan_bits: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, ${out === 'in-place' ? 'read_write' : 'read'}> X: array<f32>;
@group(0) @binding(2) var<storage, read> POS: array<i32>;
@group(0) @binding(3) var<storage, read> COS: array<f32>;
@group(0) @binding(4) var<storage, read> SIN: array<f32>;
${yBinding}
${WGSL_FLAT_INDEX}
const PER: u32 = ${per}u;
// One thread per PER adjacent rotated pairs; n = tokens · heads · half / PER. sign = −1 applies the
// inverse rotation. A position outside the table writes NaN (from a uniform: a constant NaN is a
// WGSL compile error).
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = flat_index(gid, nwg, ${WG}u);
  if (t >= p.n) { return; }
  let groups = p.half / PER;
  let i = (t % groups) * PER;
  let head_row = t / groups;          // token · heads + head
  let token = head_row / p.heads;
  let a = head_row * 2u * p.half + i;  // element i of this head
  let b = a + p.half;                  // its partner i + Dh/2
  let pos = POS[token];
  let ok = pos >= 0 && u32(pos) < p.max_pos;
  let nan = bitcast<f32>(p.nan_bits);
  var y1: array<f32, ${per}>;
  var y2: array<f32, ${per}>;
  for (var e = 0u; e < PER; e++) {
    var c = 0.0;
    var s = 0.0;
    if (ok) {
      c = COS[u32(pos) * p.half + i + e];
      s = p.sign * SIN[u32(pos) * p.half + i + e];
    }
    let x1 = X[a + e];
    let x2 = X[b + e];
    y1[e] = select(nan, x1 * c - x2 * s, ok);
    y2[e] = select(nan, x2 * c + x1 * s, ok);
  }
  ${store}
}`;
}

interface RopeSpec {
  /** The result: f32, f16 packed two per u32, or x rotated in place. */
  out: 'f32' | 'f16' | 'in-place';
}

const ROPE = kernelFamily<RopeSpec>({
  family: 'rope',
  specs: () => [{ out: 'f32' }, { out: 'f16' }, { out: 'in-place' }],
  code: ropeKernel,
});

function launch(
  x: Tensor,
  heads: number,
  positions: Tensor,
  tables: RopeTables,
  out: Tensor | null,
  sign: 1 | -1,
): void {
  const half = tables.headDim / 2;
  const f16Out = out?.dtype === 'f16';
  const n = x.numel / (f16Out ? 4 : 2);
  const params = new Uniforms()
    .u32(n)
    .u32(half)
    .u32(heads)
    .u32(tables.maxPositions)
    .f32(sign)
    .u32(0x7fc00000)
    .u32(0)
    .u32(0);
  const spec: RopeSpec = { out: !out ? 'in-place' : f16Out ? 'f16' : 'f32' };
  ROPE.dispatch(
    spec,
    out ? [x, positions, tables.cos, tables.sin, out] : [x, positions, tables.cos, tables.sin],
    grid1d(n),
    params,
  );
}

export interface RopeOptions {
  /**
   * Rotate x in place and return it (inference / KV-cache decode). Refused while autograd is
   * recording for x: an op that saved x for its backward would see the rotated values.
   */
  inPlace?: boolean;
  /**
   * Storage of the result: f32 (default) or f16 packed two per u32 (fp16-mixed: attention's q and k,
   * which attention keeps for backward, at half the bytes; needs a head dim that is a multiple of 4).
   * The gradient is f32 either way (the inverse rotation of the incoming f32 gradient).
   */
  dtype?: 'f32' | 'f16';
}

/** Rotates x [B, T, H, Dh] by the positions (i32 [B·T]) with tables from `ropeTables`. */
export function rope(x: Tensor, positions: Tensor, tables: RopeTables, opts: RopeOptions = {}): Tensor {
  assertDtype(x, 'f32', 'rope x');
  assertDtype(positions, 'i32', 'rope positions');
  if (x.shape.length !== 4) throw new RangeError(`rope: x must be [B, T, H, Dh], got [${x.shape.join(', ')}]`);
  const [b, t, heads, dh] = x.shape as [number, number, number, number];
  if (dh !== tables.headDim)
    throw new RangeError(`rope: head dim ${dh} of x does not match the tables' ${tables.headDim}`);
  if (positions.numel !== b * t)
    throw new RangeError(`rope: positions has ${positions.numel} entries for B·T = ${b * t} tokens`);
  const dtype = opts.dtype ?? 'f32';
  if (dtype !== 'f32' && dtype !== 'f16') throw new TypeError(`rope: dtype must be f32 or f16, got ${String(dtype)}`);
  if (dtype === 'f16' && dh % 4 !== 0)
    throw new RangeError(`rope: an f16 result needs a head dim that is a multiple of 4, got ${dh}`);
  if (opts.inPlace) {
    if (dtype !== 'f32') throw new RangeError('rope: inPlace rotates an f32 tensor; it cannot change its dtype');
    if (isGradEnabled() && (x.requiresGrad || x.gradFn !== null))
      throw new Error('rope: inPlace is only for tensors outside autograd (use noGrad or inPlace: false)');
    launch(x, heads, positions, tables, null, 1);
    return x;
  }
  const y = Tensor.empty(x.shape, dtype);
  launch(x, heads, positions, tables, y, 1);
  recordOp('rope', [x], y, (node) => {
    const pos = node.save(positions);
    return ([g]) => {
      const dx = Tensor.empty(x.shape);
      launch(g!, heads, pos, tables, dx, -1);
      return [dx];
    };
  });
  return y;
}
