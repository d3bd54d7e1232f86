import { describe, expect, it } from 'vitest';
import {
  bf16ArrayToF32,
  bf16ToF32,
  f16ArrayToF32,
  f16ToF32,
  f32ArrayToBf16,
  f32ArrayToF16,
  f32ToBf16,
  f32ToF16,
} from '../../src/io/dtype.js';

// Independent decoders from the format definitions, written with floating-point arithmetic
// rather than bit manipulation, to check ours against.
function referenceF16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const fraction = bits & 0x3ff;
  if (exponent === 0) return sign * fraction * 2 ** -24;
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 1024) * 2 ** (exponent - 15);
}
function referenceBf16(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 7) & 0xff;
  const fraction = bits & 0x7f;
  if (exponent === 0) return sign * fraction * 2 ** -133;
  if (exponent === 255) return fraction ? NaN : sign * Infinity;
  return sign * (1 + fraction / 128) * 2 ** (exponent - 127);
}

function sameFloat(a: number, b: number): boolean {
  return Object.is(a, b) || (Number.isNaN(a) && Number.isNaN(b));
}

describe.each([
  { format: 'f16', decodeArray: f16ArrayToF32, decode: f16ToF32, reference: referenceF16 },
  { format: 'bf16', decodeArray: bf16ArrayToF32, decode: bf16ToF32, reference: referenceBf16 },
])('$format decoding', ({ decodeArray, decode, reference }) => {
  it('decodes every one of the 65536 bit patterns like the format definition says (array and scalar)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const decoded = decodeArray(all);
    let mismatches = 0;
    for (let h = 0; h < 65536; h++) {
      if (!sameFloat(decoded[h]!, reference(h))) mismatches++;
      if (!sameFloat(decode(h), reference(h))) mismatches++;
    }
    expect(mismatches).toBe(0);
  });
});

describe('f16', () => {
  it('re-encodes every non-NaN f16 value to the same bits', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ArrayToF16(f16ArrayToF32(all));
    let mismatches = 0;
    for (let h = 0; h < 65536; h++) {
      const nanBits = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (nanBits) {
        if ((back[h]! & 0x7c00) !== 0x7c00 || (back[h]! & 0x3ff) === 0) mismatches++;
      } else if (back[h] !== h) mismatches++;
    }
    expect(mismatches).toBe(0);
  });

  it('encodes hand-checked values with round-to-nearest-even', () => {
    expect(f32ToF16(1)).toBe(0x3c00);
    expect(f32ToF16(-2)).toBe(0xc000);
    expect(f32ToF16(0.1)).toBe(0x2e66);
    expect(f32ToF16(1 / 3)).toBe(0x3555);
    expect(f32ToF16(65504)).toBe(0x7bff); // largest finite
    expect(f32ToF16(65519)).toBe(0x7bff); // below the midpoint to 65536
    expect(f32ToF16(65520)).toBe(0x7c00); // tie rounds to even -> Inf
    expect(f32ToF16(1e6)).toBe(0x7c00);
    expect(f32ToF16(-Infinity)).toBe(0xfc00);
    expect(f32ToF16(-0)).toBe(0x8000);
    expect(f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie, keep even
    expect(f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, round up to even
    expect(f32ToF16(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above the tie
    expect(f32ToF16(2 ** -24)).toBe(0x0001); // smallest subnormal
    expect(f32ToF16(2 ** -25)).toBe(0x0000); // tie between 0 and 2^-24 -> even (0)
    expect(f32ToF16(2 ** -25 * 1.5)).toBe(0x0001);
    expect(f32ToF16(3 * 2 ** -25)).toBe(0x0002); // tie between 1 and 2 ulps -> 2
    expect(f32ToF16(2 ** -14 - 2 ** -25)).toBe(0x0400); // rounds up out of subnormals
    expect(f32ToF16(1e-10)).toBe(0x0000);
    const nan = f32ToF16(NaN);
    expect(nan & 0x7c00).toBe(0x7c00);
    expect(nan & 0x3ff).not.toBe(0);
  });
});

describe('bf16', () => {
  it('re-encodes every bf16 value to the same bits (NaNs stay NaN)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = f32ArrayToBf16(bf16ArrayToF32(all));
    let mismatches = 0;
    for (let h = 0; h < 65536; h++) {
      const nanBits = (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0;
      if (nanBits ? !Number.isNaN(bf16ToF32(back[h]!)) : back[h] !== h) mismatches++;
    }
    expect(mismatches).toBe(0);
  });

  it('encodes hand-checked values with round-to-nearest-even', () => {
    expect(f32ToBf16(1)).toBe(0x3f80);
    expect(f32ToBf16(Math.PI)).toBe(0x4049); // 0x40490fdb: low half below the midpoint
    expect(f32ToBf16(-Math.E)).toBe(0xc02e); // 0xc02df854: low half above the midpoint
    expect(f32ToBf16(1 + 2 ** -8)).toBe(0x3f80); // 0x3f808000: tie, keep even
    expect(f32ToBf16(1 + 3 * 2 ** -8)).toBe(0x3f82); // 0x3f818000: tie, round up to even
    expect(f32ToBf16(3.4028234663852886e38)).toBe(0x7f80); // f32 max rounds to Inf
    expect(f32ToBf16(-Infinity)).toBe(0xff80);
    // A NaN whose payload lives only in the low half must not become Inf.
    // Bit patterns are used directly so no JS double round trip can canonicalise the NaN.
    const negativeLowPayloadNaN = f32ArrayToBf16(new Float32Array(new Uint32Array([0xff800001]).buffer))[0]!;
    expect(Number.isNaN(bf16ToF32(negativeLowPayloadNaN))).toBe(true);
    expect(negativeLowPayloadNaN & 0x8000).toBe(0x8000);
  });
});
