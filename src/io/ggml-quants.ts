// GGML tensor encodings used in GGUF files: the plain float types (F32, F16, BF16), the block
// quantizations Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 and the K-quants Q2_K, Q3_K, Q4_K, Q5_K and Q6_K, bit for
// bit as ggml lays them out (Q2_K and Q3_K are read only):
//   Q8_0: blocks of 32 values = f16 scale d (amax / 127) + 32 × int8 round(x / d)      (34 bytes)
//   Q4_0: blocks of 32 values = f16 scale d (the value of largest |x|, / -8) + 16 bytes holding
//         min(15, trunc(x / d + 8.5)), value j in the low nibble of byte j, value j+16 in its high
//         nibble (18 bytes)
//   Q5_0: blocks of 32 values = f16 scale d (the value of largest |x|, / -16) + u32 holding bit 4
//         of code j at bit j + 16 bytes holding the low 4 bits as Q4_0 does; codes
//         min(31, trunc(x / d + 16.5)), value (code - 16)·d (22 bytes)
//   Q4_1: blocks of 32 values = f16 scale d ((max - min) / 15), f16 min m + 16 bytes of codes laid out
//         as Q4_0's, min(15, trunc((x - min) / d + 0.5)), value code·d + m (20 bytes)
//   Q5_1: as Q4_1 with 5-bit codes ((max - min) / 31), the 5th bits in a u32 after d and m as Q5_0
//         keeps them (24 bytes)
// The K-quants (ggml's super-blocks of 256 values) are described in their section below.
// The scale is rounded to f16 for storage, but the codes are computed from the f32 scale, as ggml
// does; every step is done in f32 (Math.fround) so the codes match ggml's C code exactly.
// Rows are quantized independently (a row's length must be a multiple of the block size).
import { bf16ArrayToF32, f16ArrayToF32, f16ToF32, f32ArrayToBf16, f32ArrayToF16, f32ToF16 } from './dtype.js';

/** ggml_type ids (ggml.h) of the encodings finllm reads and writes. */
export const GGML_TYPE = {
  F32: 0,
  F16: 1,
  Q4_0: 2,
  Q4_1: 3,
  Q5_0: 6,
  Q5_1: 7,
  Q8_0: 8,
  Q2_K: 10,
  Q3_K: 11,
  Q4_K: 12,
  Q5_K: 13,
  Q6_K: 14,
  BF16: 30,
} as const;
export type GgmlTypeName = keyof typeof GGML_TYPE;

interface TypeLayout {
  /** Values per block. */
  block: number;
  /** Bytes per block. */
  bytes: number;
}

export const GGML_LAYOUT: Record<GgmlTypeName, TypeLayout> = {
  F32: { block: 1, bytes: 4 },
  F16: { block: 1, bytes: 2 },
  BF16: { block: 1, bytes: 2 },
  Q8_0: { block: 32, bytes: 34 },
  Q4_0: { block: 32, bytes: 18 },
  Q4_1: { block: 32, bytes: 20 },
  Q5_0: { block: 32, bytes: 22 },
  Q5_1: { block: 32, bytes: 24 },
  Q2_K: { block: 256, bytes: 84 },
  Q3_K: { block: 256, bytes: 110 },
  Q4_K: { block: 256, bytes: 144 },
  Q5_K: { block: 256, bytes: 176 },
  Q6_K: { block: 256, bytes: 210 },
};

/** Names of the ggml types finllm does not read, for error messages (ggml.h's enum ggml_type). */
const OTHER_GGML_TYPES: Record<number, string> = {
  9: 'Q8_1',
  15: 'Q8_K',
  16: 'IQ2_XXS',
  17: 'IQ2_XS',
  18: 'IQ3_XXS',
  19: 'IQ1_S',
  20: 'IQ4_NL',
  21: 'IQ3_S',
  22: 'IQ2_S',
  23: 'IQ4_XS',
  24: 'I8',
  25: 'I16',
  26: 'I32',
  27: 'I64',
  28: 'F64',
  29: 'IQ1_M',
  34: 'TQ1_0',
  35: 'TQ2_0',
  39: 'MXFP4',
  40: 'NVFP4',
  41: 'Q1_0',
  42: 'Q2_0',
};

/** "Q5_K (13)" for a ggml type id, "type 99" for an unknown one. */
export function describeGgmlType(id: number): string {
  const name = ggmlTypeName(id) ?? OTHER_GGML_TYPES[id];
  return name ? `${name} (${id})` : `type ${id}`;
}

export function ggmlTypeName(id: number): GgmlTypeName | undefined {
  return (Object.keys(GGML_TYPE) as GgmlTypeName[]).find((k) => GGML_TYPE[k] === id);
}

/** Bytes a tensor of `numel` values with rows of `rowLength` takes in `type`. */
export function ggmlByteSize(type: GgmlTypeName, numel: number, rowLength: number): number {
  const { block, bytes } = GGML_LAYOUT[type];
  if (rowLength % block !== 0)
    throw new RangeError(`${type} needs rows of a multiple of ${block} values, got ${rowLength}`);
  return (numel / block) * bytes;
}

const fr = Math.fround;

/** C's roundf: half away from zero. */
function roundHalfAway(x: number): number {
  return x < 0 ? -Math.round(-x) : Math.round(x);
}

export function quantizeQ8_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new RangeError(`Q8_0 needs a multiple of 32 values, got ${x.length}`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 34);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const off = b * 32;
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[off + j]!));
    const d = fr(amax / 127);
    const id = d !== 0 ? fr(1 / d) : 0;
    const o = b * 34;
    view.setUint16(o, f32ToF16(d), true);
    for (let j = 0; j < 32; j++) view.setInt8(o + 2 + j, roundHalfAway(fr(x[off + j]! * id)));
  }
  return out;
}

export function dequantizeQ8_0(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < numel / 32; b++) {
    const o = b * 34;
    const d = f16ToF32(view.getUint16(o, true));
    for (let j = 0; j < 32; j++) out[b * 32 + j] = d * view.getInt8(o + 2 + j);
  }
  return out;
}

/** The value of largest magnitude among x[off, off + n) (the first one on ties), with its sign: the
 *  Q4_0 / Q5_0 scale is derived from it as ggml does. */
function maxByMagnitude(x: Float32Array, off: number, n: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < n; j++) {
    const v = x[off + j]!;
    if (amax < Math.abs(v)) {
      amax = Math.abs(v);
      max = v;
    }
  }
  return max;
}

export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new RangeError(`Q4_0 needs a multiple of 32 values, got ${x.length}`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 18);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const off = b * 32;
    const max = maxByMagnitude(x, off, 32);
    const d = fr(max / -8);
    const id = d !== 0 ? fr(1 / d) : 0;
    const o = b * 18;
    view.setUint16(o, f32ToF16(d), true);
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(fr(fr(x[off + j]! * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(fr(fr(x[off + 16 + j]! * id) + 8.5)));
      out[o + 2 + j] = q0 | (q1 << 4);
    }
  }
  return out;
}

export function dequantizeQ4_0(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < numel / 32; b++) {
    const o = b * 18;
    const d = f16ToF32(view.getUint16(o, true));
    for (let j = 0; j < 16; j++) {
      const q = bytes[o + 2 + j]!;
      out[b * 32 + j] = ((q & 0x0f) - 8) * d;
      out[b * 32 + 16 + j] = ((q >> 4) - 8) * d;
    }
  }
  return out;
}

export function quantizeQ5_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new RangeError(`Q5_0 needs a multiple of 32 values, got ${x.length}`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 22);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const off = b * 32;
    const max = maxByMagnitude(x, off, 32);
    const d = fr(max / -16);
    const id = d !== 0 ? fr(1 / d) : 0;
    const o = b * 22;
    view.setUint16(o, f32ToF16(d), true);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(31, Math.trunc(fr(fr(x[off + j]! * id) + 16.5)));
      const q1 = Math.min(31, Math.trunc(fr(fr(x[off + 16 + j]! * id) + 16.5)));
      out[o + 6 + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
      qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
    }
    view.setUint32(o + 2, qh >>> 0, true);
  }
  return out;
}

export function dequantizeQ5_0(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < numel / 32; b++) {
    const o = b * 22;
    const d = f16ToF32(view.getUint16(o, true));
    const qh = view.getUint32(o + 2, true);
    for (let j = 0; j < 16; j++) {
      const q = bytes[o + 6 + j]!;
      const hi0 = ((qh >>> j) & 1) << 4;
      const hi1 = ((qh >>> (j + 16)) & 1) << 4;
      out[b * 32 + j] = ((q & 0x0f) + hi0 - 16) * d;
      out[b * 32 + 16 + j] = ((q >> 4) + hi1 - 16) * d;
    }
  }
  return out;
}

/** Q4_1 and Q5_1: codes of (x - min) / d over [0, 2^bits - 1], rounded as ggml's `(int)(v + 0.5f)`. */
function quantizeMinBlock(x: Float32Array, bits: 4 | 5): Uint8Array {
  const name = bits === 4 ? 'Q4_1' : 'Q5_1';
  if (x.length % 32 !== 0) throw new RangeError(`${name} needs a multiple of 32 values, got ${x.length}`);
  const per = bits === 4 ? 20 : 24;
  const qs = bits === 4 ? 4 : 8;
  const nb = x.length / 32;
  const out = new Uint8Array(nb * per);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const off = b * 32;
    let min = Number.POSITIVE_INFINITY;
    let max = Number.NEGATIVE_INFINITY;
    for (let j = 0; j < 32; j++) {
      min = Math.min(min, x[off + j]!);
      max = Math.max(max, x[off + j]!);
    }
    const d = fr(fr(max - min) / ((1 << bits) - 1));
    const id = d !== 0 ? fr(1 / d) : 0;
    const o = b * per;
    view.setUint16(o, f32ToF16(d), true);
    view.setUint16(o + 2, f32ToF16(min), true);
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      let q0 = Math.trunc(fr(fr(fr(x[off + j]! - min) * id) + 0.5));
      let q1 = Math.trunc(fr(fr(fr(x[off + 16 + j]! - min) * id) + 0.5));
      if (bits === 4) {
        q0 = Math.min(15, q0);
        q1 = Math.min(15, q1);
      } else {
        qh |= ((q0 >> 4) << j) | ((q1 >> 4) << (j + 16));
      }
      out[o + qs + j] = (q0 & 0x0f) | ((q1 & 0x0f) << 4);
    }
    if (bits === 5) view.setUint32(o + 4, qh >>> 0, true);
  }
  return out;
}

function dequantizeMinBlock(bits: 4 | 5, bytes: Uint8Array, numel: number, out: Float32Array): Float32Array {
  const per = bits === 4 ? 20 : 24;
  const qs = bits === 4 ? 4 : 8;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < numel / 32; b++) {
    const o = b * per;
    const d = f16ToF32(view.getUint16(o, true));
    const m = f16ToF32(view.getUint16(o + 2, true));
    const qh = bits === 5 ? view.getUint32(o + 4, true) : 0;
    for (let j = 0; j < 16; j++) {
      const q = bytes[o + qs + j]!;
      const hi0 = ((qh >>> j) & 1) << 4;
      const hi1 = ((qh >>> (j + 16)) & 1) << 4;
      out[b * 32 + j] = fr(((q & 0x0f) | hi0) * d) + m;
      out[b * 32 + 16 + j] = fr(((q >> 4) | hi1) * d) + m;
    }
  }
  return out;
}

export function quantizeQ4_1(x: Float32Array): Uint8Array {
  return quantizeMinBlock(x, 4);
}

export function dequantizeQ4_1(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  return dequantizeMinBlock(4, bytes, numel, out);
}

export function quantizeQ5_1(x: Float32Array): Uint8Array {
  return quantizeMinBlock(x, 5);
}

export function dequantizeQ5_1(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  return dequantizeMinBlock(5, bytes, numel, out);
}

// ---------------------------------------------------------------------------------------------
// K-quants: super-blocks of QK_K = 256 values, each split into sub-blocks with their own scale,
// the sub-block scales themselves quantized against one f16 super-block scale.
//
// Q4_K (144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit sub-block scales sc[8] and mins m[8], 128
//   bytes of 4-bit codes q. Sub-block s (32 values) decodes as d·sc[s]·q - dmin·m[s]. Packing of the
//   12 scale bytes: for s < 4, byte s = sc[s] | (sc[s+4] >> 4) << 6 and byte s+4 = m[s] | (m[s+4] >> 4) << 6;
//   byte s+8 = (sc[s+4] & 15) | (m[s+4] & 15) << 4. Codes: each 64 values (two sub-blocks) take 32
//   bytes, value l of the first in the low nibble of byte l, value l of the second in its high nibble.
// Q5_K (176 bytes): as Q4_K with 5-bit codes: d, dmin, the 12 scale bytes, 32 bytes qh, then the low
//   4 bits as Q4_K lays them out; the 5th bit of value l of sub-block s is bit s of qh[l].
// Q2_K (84 bytes): 16 bytes of sub-block scale (low nibble) and min (high nibble), 64 bytes of 2-bit
//   codes, f16 d, f16 dmin. Sub-block s (16 values) decodes as d·sc[s]·q - dmin·m[s]. Each 128 values
//   take 32 bytes: value l + 32k (k = 0..3, l < 32) is bits 2k..2k+1 of byte l.
// Q3_K (110 bytes): 32 bytes hmask, 64 bytes of low 2 bits laid out as Q2_K's, 12 bytes of 6-bit
//   signed sub-block scales (biased by 32), f16 d. Sub-block s (16 values) decodes as
//   d·(sc[s] - 32)·(q - 4·(1 - high bit)); the high bit of value l + 32k' (k' = 0..7) is bit k' of
//   hmask[l]. Scale s has its low 4 bits in byte s (s < 8, low nibble) or byte s - 8 (high nibble),
//   its top 2 bits at bit 2·(s >> 2) of byte 8 + (s & 3).
// Q6_K (210 bytes): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 int8 sub-block scales,
//   f16 d last. Sub-block s (16 values) decodes as d·sc[s]·(q - 32). Each 128 values take 64 bytes of
//   ql and 32 of qh: value l + 32k (k = 0..3, l < 32) has its low nibble in ql[l + 32(k & 1)]
//   (low nibble for k < 2, high for k ≥ 2) and its high 2 bits at bit 2k of qh[l].
//
// The quantizers choose scales as ggml's reference quantizers do (no importance matrix): Q4_K fits
// each sub-block's scale and min by weighted least squares over 21 candidate grids (Q5_K: 16;
// weights rms(x) + |x|), Q6_K picks each sub-block's scale from 19 candidates by x²-weighted least squares;
// the sub-block scales are then rounded to 6 (Q4_K, Q5_K) or 8 (Q6_K) bits and the codes recomputed
// from the rounded scales. All arithmetic is f32 (Math.fround), as in ggml's C.

const QK_K = 256;
const GROUP_MAX_EPS = fr(1e-15);

/** ggml's nearest_int: round half to even. */
function nearestInt(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Scratch codes of fitScaleMin's candidate grids (sub-blocks are at most 32 values). */
const fitAux = new Uint8Array(32);

/**
 * Scale and min for one sub-block of `x` (codes 0..nmax, value = scale·q - min), minimising the
 * `w`-weighted squared error over the grids nmax + rmin + rdelta·k, k = 0..nstep, each refit by least
 * squares (ggml's make_qkx2_quants). Writes the codes to `L`; returns [scale, min ≥ 0].
 */
function fitScaleMin(
  x: Float32Array,
  w: Float32Array,
  L: Uint8Array,
  nmax: number,
  rmin: number,
  rdelta: number,
  nstep: number,
): [number, number] {
  const n = x.length;
  let min = x[0]!;
  let max = x[0]!;
  let sumW = w[0]!;
  let sumX = fr(sumW * x[0]!);
  for (let i = 1; i < n; i++) {
    if (x[i]! < min) min = x[i]!;
    if (x[i]! > max) max = x[i]!;
    sumW = fr(sumW + w[i]!);
    sumX = fr(sumX + fr(w[i]! * x[i]!));
  }
  if (min > 0) min = 0;
  if (max === min) {
    L.fill(0);
    return [0, -min];
  }
  let iscale = fr(nmax / fr(max - min));
  let scale = fr(1 / iscale);
  let bestError = 0;
  for (let i = 0; i < n; i++) {
    L[i] = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * fr(x[i]! - min)))));
    const diff = fr(fr(fr(scale * L[i]!) + min) - x[i]!);
    bestError = fr(bestError + fr(w[i]! * fr(diff * diff)));
  }
  const aux = fitAux;
  for (let is = 0; is <= nstep; is++) {
    iscale = fr(fr(fr(rmin + fr(rdelta * is)) + nmax) / fr(max - min));
    let sumL = 0;
    let sumL2 = 0;
    let sumXL = 0;
    for (let i = 0; i < n; i++) {
      const l = Math.max(0, Math.min(nmax, nearestInt(fr(iscale * fr(x[i]! - min)))));
      aux[i] = l;
      sumL = fr(sumL + fr(w[i]! * l));
      sumL2 = fr(sumL2 + fr(fr(w[i]! * l) * l));
      sumXL = fr(sumXL + fr(fr(w[i]! * l) * x[i]!));
    }
    const D = fr(fr(sumW * sumL2) - fr(sumL * sumL));
    if (D > 0) {
      let thisScale = fr(fr(fr(sumW * sumXL) - fr(sumX * sumL)) / D);
      let thisMin = fr(fr(fr(sumL2 * sumX) - fr(sumL * sumXL)) / D);
      if (thisMin > 0) {
        thisMin = 0;
        thisScale = fr(sumXL / sumL2);
      }
      let err = 0;
      for (let i = 0; i < n; i++) {
        const diff = fr(fr(fr(thisScale * aux[i]!) + thisMin) - x[i]!);
        err = fr(err + fr(w[i]! * fr(diff * diff)));
      }
      if (err < bestError) {
        L.set(aux.subarray(0, n));
        bestError = err;
        scale = thisScale;
        min = thisMin;
      }
    }
  }
  return [scale, -min];
}

/** Sub-block s's 6-bit scale and min from the 12 packed bytes at `o` (ggml's get_scale_min_k4). */
function scaleMinK4(s: number, q: Uint8Array, o: number): [number, number] {
  if (s < 4) return [q[o + s]! & 63, q[o + s + 4]! & 63];
  return [(q[o + s + 4]! & 0x0f) | ((q[o + s - 4]! >> 6) << 4), (q[o + s + 4]! >> 4) | ((q[o + s]! >> 6) << 4)];
}

/** The two K-quants with per-sub-block mins: 4- or 5-bit codes, and the search ggml runs for each. */
const SCALE_MIN_K = {
  Q4_K: { bytes: 144, nmax: 15, rmin: -1, nstep: 20, qs: 16 },
  Q5_K: { bytes: 176, nmax: 31, rmin: -0.5, nstep: 15, qs: 48 },
} as const;

function quantizeScaleMinK(x: Float32Array, type: 'Q4_K' | 'Q5_K'): Uint8Array {
  if (x.length % QK_K !== 0) throw new RangeError(`${type} needs a multiple of ${QK_K} values, got ${x.length}`);
  const { bytes: per, nmax, rmin, nstep, qs } = SCALE_MIN_K[type];
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * per);
  const view = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const w = new Float32Array(32);
  const scales = new Float32Array(8);
  const mins = new Float32Array(8);
  for (let b = 0; b < nb; b++) {
    const xb = x.subarray(b * QK_K, (b + 1) * QK_K);
    const o = b * per;
    let maxScale = 0;
    let maxMin = 0;
    for (let s = 0; s < 8; s++) {
      const xs = xb.subarray(32 * s, 32 * s + 32);
      let sumX2 = 0;
      for (let l = 0; l < 32; l++) sumX2 = fr(sumX2 + fr(xs[l]! * xs[l]!));
      const avX = fr(Math.sqrt(fr(sumX2 / 32)));
      for (let l = 0; l < 32; l++) w[l] = fr(avX + Math.abs(xs[l]!));
      [scales[s], mins[s]] = fitScaleMin(xs, w, L.subarray(32 * s, 32 * s + 32), nmax, rmin, 0.1, nstep);
      if (scales[s]! > maxScale) maxScale = scales[s]!;
      if (mins[s]! > maxMin) maxMin = mins[s]!;
    }
    const invScale = maxScale > 0 ? fr(63 / maxScale) : 0;
    const invMin = maxMin > 0 ? fr(63 / maxMin) : 0;
    for (let s = 0; s < 8; s++) {
      const ls = Math.min(63, nearestInt(fr(invScale * scales[s]!)));
      const lm = Math.min(63, nearestInt(fr(invMin * mins[s]!)));
      if (s < 4) {
        out[o + 4 + s] = ls;
        out[o + 4 + s + 4] = lm;
      } else {
        out[o + 4 + s + 4] = (ls & 0x0f) | ((lm & 0x0f) << 4);
        out[o + 4 + s - 4]! |= (ls >> 4) << 6;
        out[o + 4 + s]! |= (lm >> 4) << 6;
      }
    }
    const dBits = f32ToF16(fr(maxScale / 63));
    const dminBits = f32ToF16(fr(maxMin / 63));
    view.setUint16(o, dBits, true);
    view.setUint16(o + 2, dminBits, true);
    const d = f16ToF32(dBits);
    const dmin = f16ToF32(dminBits);
    for (let s = 0; s < 8; s++) {
      const [sc, m] = scaleMinK4(s, out, o + 4);
      const ds = fr(d * sc);
      if (ds === 0) continue; // the codes of the search stay (they decode to -dmin·m either way)
      const dm = fr(dmin * m);
      for (let i = 32 * s; i < 32 * s + 32; i++)
        L[i] = Math.max(0, Math.min(nmax, nearestInt(fr(fr(xb[i]! + dm) / ds))));
    }
    // Low 4 bits: two sub-blocks per 32 bytes (low / high nibble); Q5_K's 5th bit of value l of
    // sub-block s is bit s of qh[l].
    for (let j = 0; j < 4; j++) {
      for (let l = 0; l < 32; l++) {
        const a = L[64 * j + l]!;
        const c = L[64 * j + 32 + l]!;
        out[o + qs + 32 * j + l] = (a & 0x0f) | ((c & 0x0f) << 4);
        if (type === 'Q5_K') out[o + 16 + l]! |= ((a >> 4) << (2 * j)) | ((c >> 4) << (2 * j + 1));
      }
    }
  }
  return out;
}

function dequantizeScaleMinK(type: 'Q4_K' | 'Q5_K', bytes: Uint8Array, numel: number, out: Float32Array): Float32Array {
  const { bytes: per, qs } = SCALE_MIN_K[type];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < numel / QK_K; b++) {
    const o = b * per;
    const d = f16ToF32(view.getUint16(o, true));
    const dmin = f16ToF32(view.getUint16(o + 2, true));
    for (let s = 0; s < 8; s++) {
      const [sc, m] = scaleMinK4(s, bytes, o + 4);
      const ds = fr(d * sc);
      const ms = fr(dmin * m);
      const base = o + qs + 32 * (s >> 1);
      const shift = (s & 1) * 4;
      for (let l = 0; l < 32; l++) {
        const high = type === 'Q5_K' ? ((bytes[o + 16 + l]! >> s) & 1) << 4 : 0;
        out[b * QK_K + 32 * s + l] = fr(ds * (((bytes[base + l]! >> shift) & 0x0f) + high)) - ms;
      }
    }
  }
  return out;
}

export function quantizeQ4_K(x: Float32Array): Uint8Array {
  return quantizeScaleMinK(x, 'Q4_K');
}

export function dequantizeQ4_K(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  return dequantizeScaleMinK('Q4_K', bytes, numel, out);
}

export function quantizeQ5_K(x: Float32Array): Uint8Array {
  return quantizeScaleMinK(x, 'Q5_K');
}

export function dequantizeQ5_K(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  return dequantizeScaleMinK('Q5_K', bytes, numel, out);
}

/** Σ w·x·l and Σ w·l² (w = x²) of fitScaleSymmetric's grid 1/iscale, in f32. */
const symFit = new Float32Array(2);
function symmetricFit(x: Float32Array, nmax: number, iscale: number): void {
  let sumLX = 0;
  let sumL2 = 0;
  for (let i = 0; i < x.length; i++) {
    const l = Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * x[i]!))));
    const w = fr(x[i]! * x[i]!);
    sumLX = fr(sumLX + fr(fr(w * x[i]!) * l));
    sumL2 = fr(sumL2 + fr(fr(w * l) * l));
  }
  symFit[0] = sumLX;
  symFit[1] = sumL2;
}

function symmetricCodes(x: Float32Array, L: Uint8Array, nmax: number, iscale: number): void {
  for (let i = 0; i < x.length; i++) L[i] = nmax + Math.max(-nmax, Math.min(nmax - 1, nearestInt(fr(iscale * x[i]!))));
}

/**
 * Scale for one sub-block of `x` with signed codes -nmax..nmax-1 (value = scale·q), the best of 19
 * candidate grids by x²-weighted least squares (ggml's make_qx_quants, rmse_type 1). Writes the
 * codes + nmax to `L`; the scale has the sign that maps the largest |x| to -nmax.
 */
function fitScaleSymmetric(x: Float32Array, L: Uint8Array, nmax: number): number {
  const n = x.length;
  let max = 0;
  let amax = 0;
  for (let i = 0; i < n; i++) {
    const ax = Math.abs(x[i]!);
    if (ax > amax) {
      amax = ax;
      max = x[i]!;
    }
  }
  if (amax < GROUP_MAX_EPS) {
    L.fill(0);
    return 0;
  }
  let iscale = fr(-nmax / max);
  symmetricCodes(x, L, nmax, iscale);
  symmetricFit(x, nmax, iscale);
  let scale = symFit[1] !== 0 ? fr(symFit[0]! / symFit[1]!) : 0;
  let best = fr(scale * symFit[0]!);
  for (let is = -9; is <= 9; is++) {
    if (is === 0) continue;
    iscale = fr(-fr(nmax + fr(0.1 * is)) / max);
    symmetricFit(x, nmax, iscale);
    const sumLX = symFit[0]!;
    const sumL2 = symFit[1]!;
    if (sumL2 > 0 && fr(sumLX * sumLX) > fr(best * sumL2)) {
      symmetricCodes(x, L, nmax, iscale);
      scale = fr(sumLX / sumL2);
      best = fr(scale * sumLX);
    }
  }
  return scale;
}

export function quantizeQ6_K(x: Float32Array): Uint8Array {
  if (x.length % QK_K !== 0) throw new RangeError(`Q6_K needs a multiple of ${QK_K} values, got ${x.length}`);
  const nb = x.length / QK_K;
  const out = new Uint8Array(nb * 210);
  const view = new DataView(out.buffer);
  const L = new Uint8Array(QK_K);
  const scales = new Float32Array(16);
  for (let b = 0; b < nb; b++) {
    const xb = x.subarray(b * QK_K, (b + 1) * QK_K);
    const o = b * 210;
    let maxScale = 0;
    let maxAbsScale = 0;
    for (let s = 0; s < 16; s++) {
      scales[s] = fitScaleSymmetric(xb.subarray(16 * s, 16 * s + 16), L.subarray(16 * s, 16 * s + 16), 32);
      if (Math.abs(scales[s]!) > maxAbsScale) {
        maxAbsScale = Math.abs(scales[s]!);
        maxScale = scales[s]!;
      }
    }
    if (maxAbsScale < GROUP_MAX_EPS) continue; // an all-zero block: every byte 0
    const iscale = fr(-128 / maxScale);
    const dBits = f32ToF16(fr(1 / iscale));
    view.setUint16(o + 208, dBits, true);
    const d = f16ToF32(dBits);
    for (let s = 0; s < 16; s++) {
      const sc = Math.min(127, nearestInt(fr(iscale * scales[s]!)));
      view.setInt8(o + 192 + s, sc);
      const ds = fr(d * sc);
      if (ds === 0) continue;
      for (let i = 16 * s; i < 16 * s + 16; i++) L[i] = 32 + Math.max(-32, Math.min(31, nearestInt(fr(xb[i]! / ds))));
    }
    for (let h = 0; h < 2; h++) {
      const ql = o + 64 * h;
      const qh = o + 128 + 32 * h;
      for (let l = 0; l < 32; l++) {
        const q = (k: number) => L[128 * h + 32 * k + l]!;
        out[ql + l] = (q(0) & 0x0f) | ((q(2) & 0x0f) << 4);
        out[ql + 32 + l] = (q(1) & 0x0f) | ((q(3) & 0x0f) << 4);
        out[qh + l] = (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
      }
    }
  }
  return out;
}

export function dequantizeQ6_K(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < numel / QK_K; b++) {
    const o = b * 210;
    const d = f16ToF32(view.getUint16(o + 208, true));
    for (let h = 0; h < 2; h++) {
      const ql = o + 64 * h;
      const qh = o + 128 + 32 * h;
      for (let k = 0; k < 4; k++) {
        for (let l = 0; l < 32; l++) {
          const low = (bytes[ql + 32 * (k & 1) + l]! >> (4 * (k >> 1))) & 0x0f;
          const high = (bytes[qh + l]! >> (2 * k)) & 3;
          const sc = view.getInt8(o + 192 + 8 * h + 2 * k + (l >> 4));
          out[b * QK_K + 128 * h + 32 * k + l] = fr(d * sc) * ((low | (high << 4)) - 32);
        }
      }
    }
  }
  return out;
}

export function dequantizeQ2_K(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let b = 0; b < numel / QK_K; b++) {
    const o = b * 84;
    const d = f16ToF32(view.getUint16(o + 80, true));
    const dmin = f16ToF32(view.getUint16(o + 82, true));
    for (let h = 0; h < 2; h++) {
      const q = o + 16 + 32 * h;
      for (let k = 0; k < 4; k++) {
        for (let half = 0; half < 2; half++) {
          const sc = bytes[o + 8 * h + 2 * k + half]!;
          const dl = fr(d * (sc & 0x0f));
          const ml = fr(dmin * (sc >> 4));
          for (let l = 0; l < 16; l++) {
            const code = (bytes[q + 16 * half + l]! >> (2 * k)) & 3;
            out[b * QK_K + 128 * h + 32 * k + 16 * half + l] = fr(dl * code) - ml;
          }
        }
      }
    }
  }
  return out;
}

/** The 16 signed 6-bit sub-block scales of the Q3_K block at byte `o` (sc - 32). */
function scalesQ3K(bytes: Uint8Array, o: number, sc: Int8Array): void {
  for (let s = 0; s < 16; s++) {
    const low = s < 8 ? bytes[o + s]! & 0x0f : bytes[o + s - 8]! >> 4;
    const high = (bytes[o + 8 + (s & 3)]! >> (2 * (s >> 2))) & 3;
    sc[s] = (low | (high << 4)) - 32;
  }
}

export function dequantizeQ3_K(bytes: Uint8Array, numel: number, out = new Float32Array(numel)): Float32Array {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const sc = new Int8Array(16);
  for (let b = 0; b < numel / QK_K; b++) {
    const o = b * 110;
    const d = f16ToF32(view.getUint16(o + 108, true));
    scalesQ3K(bytes, o + 96, sc);
    for (let h = 0; h < 2; h++) {
      const q = o + 32 + 32 * h;
      for (let k = 0; k < 4; k++) {
        const bit = 4 * h + k;
        for (let half = 0; half < 2; half++) {
          const dl = fr(d * sc[8 * h + 2 * k + half]!);
          for (let l = 0; l < 16; l++) {
            const i = 16 * half + l;
            const code = ((bytes[q + i]! >> (2 * k)) & 3) - ((bytes[o + i]! >> bit) & 1 ? 0 : 4);
            out[b * QK_K + 128 * h + 32 * k + i] = fr(dl * code);
          }
        }
      }
    }
  }
  return out;
}

function bytesOf(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Encodes f32 values (row-major, rows of `rowLength`) as `type`; little-endian bytes. */
export function encodeGgml(type: GgmlTypeName, x: Float32Array, rowLength: number): Uint8Array {
  ggmlByteSize(type, x.length, rowLength); // checks the row length
  switch (type) {
    case 'F32':
      return bytesOf(x);
    case 'F16':
      return bytesOf(f32ArrayToF16(x));
    case 'BF16':
      return bytesOf(f32ArrayToBf16(x));
    case 'Q8_0':
      return quantizeQ8_0(x);
    case 'Q4_0':
      return quantizeQ4_0(x);
    case 'Q4_1':
      return quantizeQ4_1(x);
    case 'Q5_0':
      return quantizeQ5_0(x);
    case 'Q5_1':
      return quantizeQ5_1(x);
    case 'Q2_K':
    case 'Q3_K':
      throw new RangeError(`finllm reads ${type} but does not write it`);
    case 'Q4_K':
      return quantizeQ4_K(x);
    case 'Q5_K':
      return quantizeQ5_K(x);
    case 'Q6_K':
      return quantizeQ6_K(x);
  }
}

/** Decodes `numel` values of `type` from `bytes` to f32. */
export function decodeGgml(type: GgmlTypeName, bytes: Uint8Array, numel: number): Float32Array {
  // Copy 16/32-bit data to an aligned buffer first: the bytes may sit at any offset of a file read.
  switch (type) {
    case 'F32':
      return new Float32Array(bytes.slice(0, numel * 4).buffer);
    case 'F16':
      return f16ArrayToF32(new Uint16Array(bytes.slice(0, numel * 2).buffer));
    case 'BF16':
      return bf16ArrayToF32(new Uint16Array(bytes.slice(0, numel * 2).buffer));
    case 'Q8_0':
      return dequantizeQ8_0(bytes, numel);
    case 'Q4_0':
      return dequantizeQ4_0(bytes, numel);
    case 'Q4_1':
      return dequantizeQ4_1(bytes, numel);
    case 'Q5_0':
      return dequantizeQ5_0(bytes, numel);
    case 'Q5_1':
      return dequantizeQ5_1(bytes, numel);
    case 'Q2_K':
      return dequantizeQ2_K(bytes, numel);
    case 'Q3_K':
      return dequantizeQ3_K(bytes, numel);
    case 'Q4_K':
      return dequantizeQ4_K(bytes, numel);
    case 'Q5_K':
      return dequantizeQ5_K(bytes, numel);
    case 'Q6_K':
      return dequantizeQ6_K(bytes, numel);
  }
}
