// NF4 4-bit weights (QLoRA): blockwise quantization, dequantization, and matmuls that dequantize on
// the fly so the f32 weight never exists in memory.
//
// Format (Nf4Weight):
// - blocks of 64 consecutive elements of the row-major flattened weight [out, in] (a block may span
//   rows when in % 64 != 0; the last block may be partial), one f32 absmax per block;
// - code = index into NF4_CODE (16 values in [-1, 1]) of the value nearest to x / absmax;
// - codes packed 8 per u32 word, element 8w + j in bits 4j..4j+3 of word w (low nibble first, the
//   same "lower element in the lower bits" order as packed 16-bit tensors; bitsandbytes packs two
//   per byte with the FIRST element in the HIGH nibble, so its bytes need a nibble swap);
// - optional double quantization of the absmax values (QLoRA): offset = mean(absmax), then per
//   block of 256 absmax values a LINEAR symmetric int8 code q = round((absmax - offset) / s) with
//   s = max|absmax - offset| / 127 (bitsandbytes uses its 8-bit dynamic-map code here instead; the
//   linear code is simpler and bounds the absmax error by s / 2). q is stored as bytes, 4 per u32
//   word (element 4w + j in byte j), s per 256-block in `absmaxScale`, the offset in `absmaxOffset`.
//
// Code choice matches the reference fixtures (PyTorch: argmin_k |fl(x / absmax) - code_k| in f32,
// first index on ties) bit for bit. bitsandbytes instead multiplies by fl(1 / absmax) and walks a
// decision tree of midpoint thresholds (`x > t` goes up); both agree except within about one ulp
// of a midpoint. WGSL allows 2.5 ulp of error in f32 division, so the quotient is computed with
// integer long division (correctly rounded) to make codes identical on every GPU.
//
// Kernels here: quantize (one workgroup per 4 blocks, segmented max reduction in workgroup memory),
// double quantization, dequantize (one thread per code word). Products with an NF4 weight decode it
// on the fly: the GEMM's NF4 loader (gemm.ts) and the GEMV (gemv.ts), through weight-formats.ts;
// nf4Linear (matmul.ts) picks one.
import { Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms, WGSL_FLAT_INDEX } from './common.js';
import { gemv } from './gemv.js';
import { kernelFamily } from './variants.js';
import {
  NF4_BLOCK,
  NF4_DQ_BLOCK,
  WGSL_NF4_TABLE,
  weightTensors,
  wgslFormatHelpers,
  wgslNf4AbsmaxBindings,
  wgslWeightBindings,
  wgslWeightChunk,
  wgslWeightElement,
} from './weight-formats.js';

export { NF4_BLOCK, NF4_CODE, NF4_DQ_BLOCK } from './weight-formats.js';

/** Double-quantized absmax: absmax[b] ≈ int8(qabsmax[b]) · absmaxScale[b / 256] + absmaxOffset[0]. */
export interface Nf4DoubleQuant {
  /** u32 words, 4 signed bytes each (element 4w + j in byte j). */
  qabsmax: Tensor;
  /** f32 [ceil(blocks / 256)]. */
  absmaxScale: Tensor;
  /** f32 [1]. */
  absmaxOffset: Tensor;
}

export interface Nf4Weight {
  /** [out, in] of the original weight (HF layout). */
  shape: readonly [number, number];
  /** u32 [ceil(out·in / 8)], 8 codes per word, low nibble first. */
  codes: Tensor;
  /** f32 [blocks] absmax per block of 64, or its double-quantized form. */
  absmax: Tensor | Nf4DoubleQuant;
}

export function nf4Blocks(numel: number): number {
  return Math.ceil(numel / NF4_BLOCK);
}

export function isDoubleQuant(a: Tensor | Nf4DoubleQuant): a is Nf4DoubleQuant {
  return !(a instanceof Tensor);
}

/** Frees the GPU buffers of an NF4 weight. */
export function disposeNf4(w: Nf4Weight): void {
  w.codes.dispose();
  if (isDoubleQuant(w.absmax)) {
    w.absmax.qabsmax.dispose();
    w.absmax.absmaxScale.dispose();
    w.absmax.absmaxOffset.dispose();
  } else w.absmax.dispose();
}

/** Marks every tensor of the weight `keep()` (model weights outlive tidy scopes). */
export function keepNf4(w: Nf4Weight): Nf4Weight {
  w.codes.keep();
  if (isDoubleQuant(w.absmax)) {
    w.absmax.qabsmax.keep();
    w.absmax.absmaxScale.keep();
    w.absmax.absmaxOffset.keep();
  } else w.absmax.keep();
  return w;
}

/** Packs codes 0..15 (one per element) into u32 words, 8 per word, low nibble first. */
export function packNf4Codes(codes: ArrayLike<number>): Uint32Array {
  const out = new Uint32Array(Math.ceil(codes.length / 8));
  for (let i = 0; i < codes.length; i++) out[i >>> 3]! |= (codes[i]! & 15) << (4 * (i & 7));
  return out;
}

/** Unpacks `n` codes from words packed by packNf4Codes / the GPU quantizer. */
export function unpackNf4Codes(words: Uint32Array, n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (words[i >>> 3]! >>> (4 * (i & 7))) & 15;
  return out;
}

/** An Nf4Weight from codes (one per element, 0..15) and f32 absmax per block, e.g. a saved quantization. */
export function nf4FromHost(
  shape: readonly [number, number],
  codes: ArrayLike<number>,
  absmax: Float32Array,
): Nf4Weight {
  const n = shape[0] * shape[1];
  if (codes.length !== n) throw new RangeError(`nf4FromHost: ${codes.length} codes for shape [${shape.join(', ')}]`);
  if (absmax.length !== nf4Blocks(n))
    throw new RangeError(`nf4FromHost: ${absmax.length} absmax values, expected ${nf4Blocks(n)}`);
  const words = packNf4Codes(codes);
  return {
    shape: [shape[0], shape[1]],
    codes: Tensor.from(words, [words.length], 'u32'),
    absmax: Tensor.from(absmax, [absmax.length]),
  };
}

// ---------------------------------------------------------------------------------------------
// Quantization

const QUANT_WG = 256;

/**
 * WGSL: correctly rounded x / a for finite x and a > 0 (integer long division on the 24-bit
 * significands; subnormals normalized first). Results below the normal range return ±0: such a
 * quotient is far below the smallest NF4 midpoint, so the code is the same.
 */
export const WGSL_DIV_RN = /* wgsl */ `
fn significand(bits: u32, e: ptr<function, i32>) -> u32 {
  let be = i32((bits >> 23u) & 0xffu);
  var m = bits & 0x7fffffu;
  if (be == 0) {
    let shift = i32(countLeadingZeros(m)) - 8;
    m = m << u32(shift);
    *e = 1 - shift;
    return m;
  }
  *e = be;
  return m | 0x800000u;
}
fn div_rn(x: f32, a: f32) -> f32 {
  let xb = bitcast<u32>(x);
  let sign = xb & 0x80000000u;
  if ((xb & 0x7fffffffu) == 0u) { return bitcast<f32>(sign); }
  var xe: i32; var ae: i32;
  var rem = significand(xb & 0x7fffffffu, &xe);
  let am = significand(bitcast<u32>(a), &ae);
  var e = xe - ae;
  if (rem < am) { rem = rem << 1u; e = e - 1; }
  var q = 0u;
  for (var i = 0u; i < 24u; i++) {
    q = q << 1u;
    if (rem >= am) { rem = rem - am; q = q | 1u; }
    rem = rem << 1u;
  }
  let guard = rem >= am;
  if (guard) { rem = rem - am; }
  if (guard && (rem != 0u || (q & 1u) == 1u)) {
    q = q + 1u;
    if (q == 0x1000000u) { q = 0x800000u; e = e + 1; }
  }
  let be = e + 127;
  if (be <= 0) { return bitcast<f32>(sign); }
  return bitcast<f32>(sign | (u32(be) << 23u) | (q & 0x7fffffu));
}
`;

type Nf4Source = 'f32' | 'bf16' | 'f16';

function quantizeKernel({ dtype: format }: { dtype: Nf4Source }): string {
  const load = wgslWeightElement(format, 'W', 'e');
  return /* wgsl */ `
struct P { n: u32, nwords: u32, nblocks: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
${wgslWeightBindings(format, 'W', 1, 1)[0]}
@group(0) @binding(2) var<storage, read_write> CODES: array<u32>;
@group(0) @binding(3) var<storage, read_write> ABSMAX: array<f32>;
${wgslFormatHelpers([format])}${WGSL_NF4_TABLE}${WGSL_DIV_RN}
var<workgroup> s_abs: array<f32, ${QUANT_WG}>;
var<workgroup> s_code: array<u32, ${QUANT_WG}>;
@compute @workgroup_size(${QUANT_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let group = wid.x + wid.y * nwg.x;
  let e = group * ${QUANT_WG}u + t;
  var x = 0.0;
  if (e < p.n) { x = ${load}; }
  s_abs[t] = abs(x);
  workgroupBarrier();
  for (var s = 32u; s > 0u; s = s >> 1u) {
    if ((t & 63u) < s) { s_abs[t] = max(s_abs[t], s_abs[t + s]); }
    workgroupBarrier();
  }
  let am = s_abs[t & ~63u];
  // argmin_k |x/am - code_k| with the first index winning ties (PyTorch argmin); am == 0 -> code of 0.0.
  var best = 7u;
  if (am > 0.0) {
    let xn = div_rn(x, am);
    var bestd = abs(xn - nf4_value(0u));
    best = 0u;
    for (var k = 1u; k < 16u; k++) {
      let d = abs(xn - nf4_value(k));
      if (d < bestd) { bestd = d; best = k; }
    }
  }
  s_code[t] = select(0u, best, e < p.n);
  workgroupBarrier();
  let blk = e >> 6u;
  if ((t & 63u) == 0u && blk < p.nblocks) { ABSMAX[blk] = am; }
  if (t < ${QUANT_WG / 8}u) {
    let w = group * ${QUANT_WG / 8}u + t;
    if (w < p.nwords) {
      var word = 0u;
      for (var j = 0u; j < 8u; j++) { word = word | (s_code[8u * t + j] << (4u * j)); }
      CODES[w] = word;
    }
  }
}`;
}

const DQ_MEAN_KERNEL = /* wgsl */ `
struct P { n: u32, nq: u32, ngroups: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read_write> OFFSET: array<f32>;
var<workgroup> s: array<f32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) t: u32) {
  var acc = 0.0;
  for (var i = t; i < p.n; i += 256u) { acc += A[i]; }
  s[t] = acc;
  workgroupBarrier();
  for (var k = 128u; k > 0u; k = k >> 1u) {
    if (t < k) { s[t] += s[t + k]; }
    workgroupBarrier();
  }
  if (t == 0u) { OFFSET[0] = s[0] / f32(p.n); }
}`;

// One workgroup per block of 256 absmax values: s = max|a - offset| / 127, q = round((a - offset)·127 / max).
const DQ_QUANT_KERNEL = /* wgsl */ `
struct P { n: u32, nq: u32, ngroups: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> OFFSET: array<f32>;
@group(0) @binding(3) var<storage, read_write> Q: array<u32>;
@group(0) @binding(4) var<storage, read_write> SCALE: array<f32>;
var<workgroup> s: array<f32, 256>;
var<workgroup> sq: array<u32, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let g = wid.x + wid.y * nwg.x;
  let i = g * 256u + t;
  var d = 0.0;
  if (i < p.n) { d = A[i] - OFFSET[0]; }
  s[t] = abs(d);
  workgroupBarrier();
  for (var k = 128u; k > 0u; k = k >> 1u) {
    if (t < k) { s[t] = max(s[t], s[t + k]); }
    workgroupBarrier();
  }
  let m = s[0];
  var q = 0i;
  if (m > 0.0) { q = clamp(i32(round(d * (127.0 / m))), -127i, 127i); }
  sq[t] = u32(q) & 0xffu;
  if (t == 0u && g < p.ngroups) { SCALE[g] = m / 127.0; }
  workgroupBarrier();
  if (t < 64u) {
    let w = g * 64u + t;
    if (w < p.nq) { Q[w] = sq[4u * t] | (sq[4u * t + 1u] << 8u) | (sq[4u * t + 2u] << 16u) | (sq[4u * t + 3u] << 24u); }
  }
}`;

const QUANTIZE = kernelFamily<{ dtype: Nf4Source }>({
  family: 'nf4.quantize',
  specs: () => (['f32', 'bf16', 'f16'] as const).map((dtype) => ({ dtype })),
  code: quantizeKernel,
  workgroupBytes: () => 8 * QUANT_WG,
});
const DQ_MEAN = kernelFamily({
  family: 'nf4.dq.mean',
  specs: () => [{}],
  code: () => DQ_MEAN_KERNEL,
  workgroupBytes: () => 4 * 256,
});
const DQ_QUANT = kernelFamily({
  family: 'nf4.dq.quant',
  specs: () => [{}],
  code: () => DQ_QUANT_KERNEL,
  workgroupBytes: () => 8 * 256,
});

/** Workgroup grid for `groups` workgroups, folded into y past the per-dimension limit. */
function groupGrid(groups: number): [number, number] {
  return grid1d(groups, 1);
}

/**
 * Quantizes a weight [out, in] (f32, or packed bf16/f16) to NF4 on the GPU. With doubleQuant the
 * absmax values are themselves quantized to int8 (see the header).
 */
export function quantizeNf4(w: Tensor, opts: { doubleQuant?: boolean } = {}): Nf4Weight {
  if (w.shape.length !== 2)
    throw new RangeError(`quantizeNf4: expected a 2-D weight [out, in], got [${w.shape.join(', ')}]`);
  if (w.dtype !== 'f32' && w.dtype !== 'bf16' && w.dtype !== 'f16')
    throw new TypeError(`quantizeNf4: unsupported dtype ${w.dtype}`);
  const n = w.numel;
  const nblocks = nf4Blocks(n);
  const nwords = Math.ceil(n / 8);
  const codes = Tensor.empty([nwords], 'u32');
  const absmax = Tensor.empty([nblocks]);
  QUANTIZE.dispatch(
    { dtype: w.dtype },
    [w, codes, absmax],
    groupGrid(Math.ceil(n / QUANT_WG)),
    new Uniforms().u32(n).u32(nwords).u32(nblocks).u32(0),
  );
  const shape: [number, number] = [w.shape[0]!, w.shape[1]!];
  if (!opts.doubleQuant) return { shape, codes, absmax };
  const dq = doubleQuantize(absmax);
  absmax.dispose();
  return { shape, codes, absmax: dq };
}

/** Double quantization of absmax values (f32 [blocks]) to int8 per 256-block around their mean. */
export function doubleQuantize(absmax: Tensor): Nf4DoubleQuant {
  assertDtype(absmax, 'f32', 'doubleQuantize');
  const n = absmax.numel;
  const ngroups = Math.ceil(n / NF4_DQ_BLOCK);
  const nq = Math.ceil(n / 4);
  const absmaxOffset = Tensor.empty([1]);
  const qabsmax = Tensor.empty([nq], 'u32');
  const absmaxScale = Tensor.empty([ngroups]);
  const u = () => new Uniforms().u32(n).u32(nq).u32(ngroups).u32(0);
  DQ_MEAN.dispatch({}, [absmax, absmaxOffset], [1], u());
  DQ_QUANT.dispatch({}, [absmax, absmaxOffset, qabsmax, absmaxScale], groupGrid(ngroups), u());
  return { qabsmax, absmaxScale, absmaxOffset };
}

// ---------------------------------------------------------------------------------------------
// Dequantization

function dequantKernel({ dq }: { dq: boolean }): string {
  const format = dq ? 'nf4dq' : 'nf4';
  const { pre, vals } = wgslWeightChunk(format, 'W', '8u * w', 8);
  return /* wgsl */ `
struct P { n: u32, nwords: u32, _p0: u32, _p1: u32 }
@group(0) @binding(0) var<uniform> p: P;
${wgslWeightBindings(format, 'W', 8, 1)[0]}
@group(0) @binding(${dq ? 5 : 3}) var<storage, read_write> Y: array<f32>;
${WGSL_FLAT_INDEX}${wgslFormatHelpers([format])}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let w = flat_index(gid, nwg, 256u);
  if (w >= p.nwords) { return; }
  ${pre}
  let e = 8u * w;
${vals.map((v, j) => `  if (e + ${j}u < p.n) { Y[e + ${j}u] = ${v}; }`).join('\n')}
}`;
}

const DEQUANT = kernelFamily<{ dq: boolean }>({
  family: 'nf4.dequant',
  specs: () => [{ dq: false }, { dq: true }],
  code: dequantKernel,
});

/** The f32 absmax of every block from its double-quantized form. */
function dqDecodeKernel(): string {
  return /* wgsl */ `
struct P { n: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: P;
${wgslNf4AbsmaxBindings(true, 'W', 1)[0]}
@group(0) @binding(4) var<storage, read_write> Y: array<f32>;
${WGSL_FLAT_INDEX}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let b = flat_index(gid, nwg, 256u);
  if (b < p.n) { Y[b] = W_absmax(b); }
}`;
}

const DQ_DECODE = kernelFamily({ family: 'nf4.dq.decode', specs: () => [{}], code: dqDecodeKernel });

/** The f32 weight [out, in] an NF4 weight stands for: code value × absmax (one f32 multiply). */
export function dequantizeNf4(w: Nf4Weight): Tensor {
  const n = w.shape[0] * w.shape[1];
  const nwords = Math.ceil(n / 8);
  const dq = isDoubleQuant(w.absmax);
  const y = Tensor.empty(w.shape);
  DEQUANT.dispatch({ dq }, [...weightTensors(w), y], grid1d(nwords), new Uniforms().u32(n).u32(nwords).u32(0).u32(0));
  return y;
}

/** The f32 absmax values (decoding double quantization when present), for tests and export. */
export function nf4Absmax(w: Nf4Weight): Tensor {
  if (!isDoubleQuant(w.absmax)) return w.absmax.reshape(w.absmax.shape);
  const n = nf4Blocks(w.shape[0] * w.shape[1]);
  const y = Tensor.empty([n]);
  DQ_DECODE.dispatch({}, [...weightTensors(w).slice(1), y], grid1d(n), new Uniforms().u32(n).u32(0).u32(0).u32(0));
  return y;
}

/** y = x·Wᵀ for inputs with few rows (decode) on the GEMV (gemv.ts), memory-bound on the codes. */
export function nf4Gemv(x: Tensor, w: Nf4Weight): Tensor {
  assertDtype(x, 'f32', 'nf4 gemv input');
  const [N, K] = w.shape;
  const M = x.numel / K;
  if (!Number.isInteger(M) || x.shape[x.shape.length - 1] !== K)
    throw new RangeError(`nf4 gemv: input [${x.shape.join(', ')}] does not end in ${K}`);
  const y = Tensor.empty([...x.shape.slice(0, -1), N]);
  if (M === 0) return y;
  const x2 = x.reshape([M, K]);
  const y2 = y.reshape([M, N]);
  gemv({ x: x2, segments: [w], out: y2 });
  x2.dispose();
  y2.dispose();
  return y;
}
