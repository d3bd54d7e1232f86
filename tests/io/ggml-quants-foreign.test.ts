// The ggml types Hub GGUF files carry besides finllm's own: Q4_1 and Q5_1 (read and written; Q5_1 is
// llama.cpp's fallback for Q5_K rows that are not a multiple of 256) and Q2_K, Q3_K (read only; the
// low types of llama-quantize's q2_k / q3_k_* mixes). Checked two independent ways:
// - against llama.cpp itself: tests/fixtures/ggml/ggml_quants.json holds the bytes ggml's reference
//   quantizers (node-llama-cpp 3.21.1's libggml-base) wrote for seeded values and ggml's decoding of
//   them: our decoders must read exactly ggml's values and our Q4_1 / Q5_1 quantizers write its bytes;
// - against a float64 statement of each block layout written here (no code shared with the decoder),
//   on fresh random blocks (seed printed, an odd number of blocks, NaN-poisoned outputs): every value
//   within f32 rounding of the formula. The decoders take two f32 roundings (the product of the two
//   scales, then its product with the code, or code·d then + m): |err| ≤ 2^-23 · the magnitudes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { f16ToF32 } from '../../src/io/dtype.js';
import {
  decodeGgml,
  dequantizeQ2_K,
  dequantizeQ3_K,
  dequantizeQ4_1,
  dequantizeQ5_1,
  encodeGgml,
  GGML_LAYOUT,
} from '../../src/io/ggml-quants.js';
import { testRng } from '../helpers/index.js';

type ForeignType = 'Q4_1' | 'Q5_1' | 'Q2_K' | 'Q3_K';
const TYPES: ForeignType[] = ['Q4_1', 'Q5_1', 'Q2_K', 'Q3_K'];

interface Fixture {
  values_f32: string;
  types: Record<ForeignType, { bytes: string; dequantized_f32: string }>;
}
const fixture = JSON.parse(
  readFileSync(join(import.meta.dirname, '..', 'fixtures', 'ggml', 'ggml_quants.json'), 'utf8'),
) as Fixture;
const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
const f32s = (s: string) => new Float32Array(b64(s).buffer);
const u16 = (b: Uint8Array, o: number) => b[o]! + 256 * b[o + 1]!;
const bit = (byte: number, k: number) => Math.floor(byte / 2 ** k) % 2;
const bits2 = (byte: number, k: number) => Math.floor(byte / 4 ** k) % 4;

/** value = scale · code + offset, in float64, with the code's range for sanity checks. */
interface Level {
  scale: number;
  code: number;
  offset: number;
  codes: [number, number];
}

/** Q4_1 / Q5_1 value i (0..31) of the block at `o`: f16 d, f16 m, (Q5_1: u32 5th bits), nibbles. */
function refMinBlock(five: boolean) {
  return (b: Uint8Array, o: number, i: number): Level => {
    const qs = o + (five ? 8 : 4);
    const byte = b[qs + (i % 16)]!;
    const low = i < 16 ? byte % 16 : Math.floor(byte / 16);
    const high = five ? bit(b[o + 4 + Math.floor(i / 8)]!, i % 8) : 0;
    return {
      scale: f16ToF32(u16(b, o)),
      code: low + 16 * high,
      offset: f16ToF32(u16(b, o + 2)),
      codes: [0, five ? 31 : 15],
    };
  };
}

/** Q2_K value i (0..255): scales[16] (low nibble scale, high nibble min), qs[64], f16 d, f16 dmin. */
function refQ2K(b: Uint8Array, o: number, i: number): Level {
  const s = Math.floor(i / 16);
  const sc = b[o + s]!;
  const d = f16ToF32(u16(b, o + 80));
  const dmin = f16ToF32(u16(b, o + 82));
  const k = Math.floor((i % 128) / 32); // which 2-bit field of the byte
  const byte = b[o + 16 + 32 * Math.floor(i / 128) + (i % 32)]!;
  return { scale: d * (sc % 16), code: bits2(byte, k), offset: -dmin * Math.floor(sc / 16), codes: [0, 3] };
}

/** Q3_K value i (0..255): hmask[32], qs[64], scales[12] (6-bit, biased by 32), f16 d. */
function refQ3K(b: Uint8Array, o: number, i: number): Level {
  const s = Math.floor(i / 16);
  const sb = o + 96;
  // Low 4 bits: bytes 0..7, low nibble for scales 0..7, high nibble for 8..15; top 2 bits: byte
  // 8 + (s mod 4), bit pair s div 4.
  const low = s < 8 ? b[sb + s]! % 16 : Math.floor(b[sb + s - 8]! / 16);
  const high = bits2(b[sb + 8 + (s % 4)]!, Math.floor(s / 4));
  const sc = low + 16 * high - 32;
  const d = f16ToF32(u16(b, o + 108));
  const k = Math.floor((i % 128) / 32);
  const l = i % 32;
  const q2 = bits2(b[o + 32 + 32 * Math.floor(i / 128) + l]!, k);
  const hbit = bit(b[o + l]!, Math.floor(i / 32)); // bit (4·half + k) of hmask[l]
  return { scale: d * sc, code: q2 - (hbit ? 0 : 4), offset: 0, codes: [-4, 3] };
}

const REF: Record<ForeignType, (b: Uint8Array, o: number, i: number) => Level> = {
  Q4_1: refMinBlock(false),
  Q5_1: refMinBlock(true),
  Q2_K: refQ2K,
  Q3_K: refQ3K,
};
const DEQUANT = { Q4_1: dequantizeQ4_1, Q5_1: dequantizeQ5_1, Q2_K: dequantizeQ2_K, Q3_K: dequantizeQ3_K };

describe('Q4_1, Q5_1, Q2_K, Q3_K against llama.cpp (fixture from its ggml library)', () => {
  const x = f32s(fixture.values_f32);
  for (const type of TYPES) {
    it(`${type}: our decoder reads llama.cpp's values exactly${type.endsWith('_1') ? "; our quantizer writes llama.cpp's bytes" : ''}`, () => {
      const want = b64(fixture.types[type].bytes);
      expect(want.byteLength).toBe((x.length / GGML_LAYOUT[type].block) * GGML_LAYOUT[type].bytes);
      const values = decodeGgml(type, want, x.length);
      const theirs = f32s(fixture.types[type].dequantized_f32);
      const off = values.findIndex((v, i) => !Object.is(v, theirs[i]));
      expect(off, `first differing value ${off}: ours ${values[off]} llama.cpp ${theirs[off]}`).toBe(-1);
      if (type === 'Q4_1' || type === 'Q5_1') {
        const got = encodeGgml(type, x, 256);
        const differ = got.findIndex((v, i) => v !== want[i]);
        expect(got.byteLength).toBe(want.byteLength);
        expect(differ, `first differing byte ${differ} (block ${Math.floor(differ / GGML_LAYOUT[type].bytes)})`).toBe(
          -1,
        );
      }
    });
  }

  it('Q2_K and Q3_K are read, not written', () => {
    expect(() => encodeGgml('Q2_K', new Float32Array(256), 256)).toThrow(/reads Q2_K but does not write it/);
    expect(() => encodeGgml('Q3_K', new Float32Array(256), 256)).toThrow(/reads Q3_K but does not write it/);
  });
});

/** Random block bytes whose f16 scales are finite (exponent field not all ones). */
function randomBlocks(type: ForeignType, blocks: number): Uint8Array {
  const rng = testRng(`${type} random blocks`);
  const { bytes: per } = GGML_LAYOUT[type];
  const out = new Uint8Array(blocks * per);
  for (let i = 0; i < out.length; i++) out[i] = rng.nextU32() & 0xff;
  const halves = type === 'Q2_K' ? [80, 82] : type === 'Q3_K' ? [108] : [0, 2];
  for (let b = 0; b < blocks; b++) {
    for (const h of halves) {
      // Exponent 1..29 (|scale| in [2^-14, 2^14)), so products stay normal and finite in f32.
      const hi = out[b * per + h + 1]!;
      const exp = 1 + (((hi >> 2) & 0x1f) % 29);
      out[b * per + h + 1] = (hi & 0x83) | (exp << 2);
    }
  }
  return out;
}

describe('Q4_1, Q5_1, Q2_K, Q3_K against a float64 statement of the block layout', () => {
  for (const type of TYPES) {
    it(`${type}: every value of random blocks within f32 rounding of the formula`, () => {
      const blocks = type.endsWith('_K') ? 7 : 57; // odd counts
      const { block } = GGML_LAYOUT[type];
      const bytes = randomBlocks(type, blocks);
      const n = blocks * block;
      const out = new Float32Array(n).fill(Number.NaN);
      DEQUANT[type](bytes, n, out);
      const seen = new Set<number>();
      for (let i = 0; i < n; i++) {
        const r = REF[type](bytes, Math.floor(i / block) * GGML_LAYOUT[type].bytes, i % block);
        expect(r.code).toBeGreaterThanOrEqual(r.codes[0]);
        expect(r.code).toBeLessThanOrEqual(r.codes[1]);
        seen.add(r.code);
        const exact = r.scale * r.code + r.offset;
        const mag = Math.max(Math.abs(r.scale * r.code), Math.abs(r.offset), Math.abs(exact));
        // Two f32 roundings (2^-24 relative each) on magnitudes at most `mag`.
        expect(Math.abs(out[i]! - exact), `value ${i}: ${out[i]} vs ${exact}`).toBeLessThanOrEqual(2 ** -23 * mag);
      }
      // Random bytes reach every code of the range.
      const [lo, hi] = REF[type](bytes, 0, 0).codes;
      expect(seen.size).toBe(hi - lo + 1);
    });
  }
});

describe('Q4_1 / Q5_1 quantizers', () => {
  for (const type of ['Q4_1', 'Q5_1'] as const) {
    it(`${type}: every value within half a step of its decoding (the grid spans each block's min..max)`, () => {
      const rng = testRng(`${type} quantize`);
      const x = new Float32Array(33 * 32);
      for (let i = 0; i < x.length; i++) x[i] = rng.normal() * 0.05;
      x.fill(0.25, 64, 96); // a constant block: d = 0, every value decodes to m
      const bytes = encodeGgml(type, x, 32);
      const y = decodeGgml(type, bytes, x.length);
      const ref = REF[type];
      for (let i = 0; i < x.length; i++) {
        const r = ref(bytes, Math.floor(i / 32) * GGML_LAYOUT[type].bytes, i % 32);
        // The step and min are stored as f16 (relative error 2^-11) while the codes were computed
        // from their f32 values: up to (codes + 1)·2^-11 steps of drift on top of the half step.
        const step = r.scale;
        const slack = (r.codes[1] + 1) * 2 ** -11 * step + 2 ** -11 * Math.abs(r.offset) + 2 ** -22 * Math.abs(x[i]!);
        expect(Math.abs(y[i]! - x[i]!), `value ${i}`).toBeLessThanOrEqual(step / 2 + slack);
      }
      for (let i = 64; i < 96; i++) expect(y[i]).toBe(0.25);
    });
  }
});
