// GGML tensor encodings used in GGUF files: the plain float types (F32, F16, BF16) and the block
// quantizations Q8_0 and Q4_0, bit for bit as ggml's reference quantizers lay them out:
//   Q8_0: blocks of 32 values = f16 scale d (amax / 127) + 32 × int8 round(x / d)      (34 bytes)
//   Q4_0: blocks of 32 values = f16 scale d (the value of largest |x|, / -8) + 16 bytes holding
//         min(15, trunc(x / d + 8.5)), value j in the low nibble of byte j, value j+16 in its high
//         nibble (18 bytes)
// The scale is rounded to f16 for storage, but the codes are computed from the f32 scale, as ggml
// does; every step is done in f32 (Math.fround) so the codes match ggml's C code exactly.
// Rows are quantized independently (a row's length must be a multiple of the block size).
import { f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16, bf16ArrayToF32, f32ToF16, f16ToF32 } from './dtype.js';

/** ggml_type ids (ggml.h) of the encodings finllm reads and writes. */
export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, BF16: 30 } as const;
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
};

export function ggmlTypeName(id: number): GgmlTypeName | undefined {
  return (Object.keys(GGML_TYPE) as GgmlTypeName[]).find((k) => GGML_TYPE[k] === id);
}

/** Bytes a tensor of `numel` values with rows of `rowLength` takes in `type`. */
export function ggmlByteSize(type: GgmlTypeName, numel: number, rowLength: number): number {
  const { block, bytes } = GGML_LAYOUT[type];
  if (rowLength % block !== 0) throw new RangeError(`${type} needs rows of a multiple of ${block} values, got ${rowLength}`);
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

export function quantizeQ4_0(x: Float32Array): Uint8Array {
  if (x.length % 32 !== 0) throw new RangeError(`Q4_0 needs a multiple of 32 values, got ${x.length}`);
  const nb = x.length / 32;
  const out = new Uint8Array(nb * 18);
  const view = new DataView(out.buffer);
  for (let b = 0; b < nb; b++) {
    const off = b * 32;
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[off + j]!;
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
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

function bytesOf(a: Float32Array | Uint16Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Encodes f32 values (row-major, rows of `rowLength`) as `type`; little-endian bytes. */
export function encodeGgml(type: GgmlTypeName, x: Float32Array, rowLength: number): Uint8Array {
  ggmlByteSize(type, x.length, rowLength); // checks the row length
  switch (type) {
    case 'F32': return bytesOf(x);
    case 'F16': return bytesOf(f32ArrayToF16(x));
    case 'BF16': return bytesOf(f32ArrayToBf16(x));
    case 'Q8_0': return quantizeQ8_0(x);
    case 'Q4_0': return quantizeQ4_0(x);
  }
}

/** Decodes `numel` values of `type` from `bytes` to f32. */
export function decodeGgml(type: GgmlTypeName, bytes: Uint8Array, numel: number): Float32Array {
  // Copy 16/32-bit data to an aligned buffer first: the bytes may sit at any offset of a file read.
  switch (type) {
    case 'F32': return new Float32Array(bytes.slice(0, numel * 4).buffer);
    case 'F16': return f16ArrayToF32(new Uint16Array(bytes.slice(0, numel * 2).buffer));
    case 'BF16': return bf16ArrayToF32(new Uint16Array(bytes.slice(0, numel * 2).buffer));
    case 'Q8_0': return dequantizeQ8_0(bytes, numel);
    case 'Q4_0': return dequantizeQ4_0(bytes, numel);
  }
}
