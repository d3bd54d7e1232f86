// Conversions between f32 and the 16-bit float formats stored in checkpoints.
// bf16 is the top half of an f32; f16 is IEEE binary16. Encoding rounds to nearest, ties to even,
// like torch's `.to(torch.bfloat16/float16)`, so our exports match what PyTorch would have saved.

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** f32 bit pattern -> bf16 bits, round to nearest even; NaN stays NaN (quiet, sign kept). */
export function f32BitsToBf16Bits(bits: number): number {
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x7fffff) !== 0) {
    // Truncating could clear every mantissa bit and turn NaN into Inf, so force the quiet bit.
    return ((bits >>> 16) | 0x0040) & 0xffff;
  }
  const roundingBias = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + roundingBias) >>> 16) & 0xffff;
}

/** f32 bit pattern -> f16 bits, round to nearest even, with subnormals, overflow to Inf, NaN kept. */
export function f32BitsToF16Bits(bits: number): number {
  const sign = (bits >>> 16) & 0x8000;
  const exponent = (bits >>> 23) & 0xff;
  const mantissa = bits & 0x7fffff;
  if (exponent === 0xff) {
    if (mantissa === 0) return sign | 0x7c00;
    return sign | 0x7c00 | 0x0200 | (mantissa >>> 13);
  }
  const halfExponent = exponent - 127 + 15;
  if (halfExponent >= 0x1f) return sign | 0x7c00;
  if (halfExponent <= 0) {
    // Result is an f16 subnormal (or zero): shift the full significand right, rounding half to even.
    // Below 2^-25 even the largest significand rounds to zero.
    if (halfExponent < -10) return sign;
    const significand = mantissa | 0x800000;
    const shift = 14 - halfExponent;
    const kept = significand >>> shift;
    const remainder = significand & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    const roundUp = remainder > half || (remainder === half && (kept & 1) === 1);
    // A carry out of the subnormal range lands exactly on the smallest normal, which is correct.
    return sign | (kept + (roundUp ? 1 : 0));
  }
  const kept = (halfExponent << 10) | (mantissa >>> 13);
  const remainder = mantissa & 0x1fff;
  const roundUp = remainder > 0x1000 || (remainder === 0x1000 && (kept & 1) === 1);
  // A carry into the exponent is the correct next binade; out of the top binade it gives Inf.
  return sign | (kept + (roundUp ? 1 : 0));
}

/** f16 bits -> f32 bit pattern (exact). */
export function f16BitsToF32Bits(half: number): number {
  const sign = (half & 0x8000) << 16;
  const exponent = (half >>> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent === 0x1f) return (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
  if (exponent !== 0) return (sign | ((exponent - 15 + 127) << 23) | (mantissa << 13)) >>> 0;
  if (mantissa === 0) return sign >>> 0;
  // Subnormal: normalise the mantissa so it gets an implicit leading one in f32.
  let shifted = mantissa;
  let e = -14;
  while ((shifted & 0x400) === 0) {
    shifted <<= 1;
    e -= 1;
  }
  return (sign | ((e + 127) << 23) | ((shifted & 0x3ff) << 13)) >>> 0;
}

let f16Table: Float32Array | undefined;
/** All 65536 f16 values decoded once; decoding big tensors is then one lookup per element. */
function f16DecodeTable(): Float32Array {
  if (!f16Table) {
    const bits = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) bits[h] = f16BitsToF32Bits(h);
    f16Table = new Float32Array(bits.buffer);
  }
  return f16Table;
}

/** Scalar helpers, mostly for tests and one-off values. */
export function f32ToBf16(value: number): number {
  scratchF32[0] = value;
  return f32BitsToBf16Bits(scratchU32[0]!);
}
export function bf16ToF32(bits: number): number {
  scratchU32[0] = (bits & 0xffff) << 16;
  return scratchF32[0]!;
}
export function f32ToF16(value: number): number {
  scratchF32[0] = value;
  return f32BitsToF16Bits(scratchU32[0]!);
}
export function f16ToF32(bits: number): number {
  return f16DecodeTable()[bits & 0xffff]!;
}

function checkOutLength(out: { length: number }, n: number): void {
  if (out.length !== n) throw new RangeError(`output length ${out.length} != input length ${n}`);
}

/** Encodes an f32 array as bf16 bits. */
export function f32ArrayToBf16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  checkOutLength(out, src.length);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToBf16Bits(bits[i]!);
  return out;
}

/** Decodes bf16 bits to f32 (exact). */
export function bf16ArrayToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  checkOutLength(out, src.length);
  const bits = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) bits[i] = src[i]! << 16;
  return out;
}

/** Encodes an f32 array as f16 bits. */
export function f32ArrayToF16(src: Float32Array, out = new Uint16Array(src.length)): Uint16Array {
  checkOutLength(out, src.length);
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < bits.length; i++) out[i] = f32BitsToF16Bits(bits[i]!);
  return out;
}

/** Decodes f16 bits to f32 (exact). */
export function f16ArrayToF32(src: Uint16Array, out = new Float32Array(src.length)): Float32Array {
  checkOutLength(out, src.length);
  const table = f16DecodeTable();
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
  return out;
}
