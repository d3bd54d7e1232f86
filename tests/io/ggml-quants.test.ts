// The K-quants (Q4_K, Q5_K, Q6_K) and Q5_0 (llama.cpp's fallback for Q4_K) of ggml-quants.ts, checked two
// independent ways:
// - against llama.cpp itself: tests/fixtures/ggml/ggml_quants.json holds the bytes ggml's reference
//   quantizers (node-llama-cpp 3.21.1's libggml-base) wrote for seeded values and ggml's decoding of
//   them; our quantizer must write the same bytes and our decoder read the same values, exactly;
// - against a float64 statement of each format written here from the block layout, value by value
//   (no shared code with the decoder), on fresh seeded values (seed printed), an odd number of
//   blocks, and poisoned (NaN) output buffers. Decoding: every value within f32 rounding of the
//   float64 formula (two or three f32 products/sums: |err| ≤ 2^-22 · the magnitudes involved).
//   Encoding: every value decodes to the nearest level of its sub-block's grid (d·sc·q - dmin·m for
//   Q4_K, d·sc·(q-32) for Q6_K, d·(q-16) for Q5_0), so |x - x̂| ≤ step/2 inside the grid's span and
//   x̂ is the end level outside it; ties (within f32 rounding of a half step) may go either way.
//   Q5_0 computes its codes from the f32 scale and stores it as f16 (as ggml does): x/d moves by up to
//   16 · 2^-11 steps between the two, so a code may be the nearest but one by 2 · 2^-7 = 2^-6 step.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { f16ToF32 } from '../../src/io/dtype.js';
import {
  decodeGgml,
  dequantizeQ4_K,
  dequantizeQ5_0,
  dequantizeQ5_K,
  dequantizeQ6_K,
  encodeGgml,
  GGML_LAYOUT,
  type GgmlTypeName,
} from '../../src/io/ggml-quants.js';
import { testRng } from '../helpers/index.js';

type KType = 'Q4_K' | 'Q5_K' | 'Q6_K' | 'Q5_0';

interface Fixture {
  seed: number;
  values_f32: string;
  types: Record<KType, { bytes: string; dequantized_f32: string }>;
}
const fixture = JSON.parse(
  readFileSync(join(import.meta.dirname, '..', 'fixtures', 'ggml', 'ggml_quants.json'), 'utf8'),
) as Fixture;
const b64 = (s: string) => new Uint8Array(Buffer.from(s, 'base64'));
const f32s = (s: string) => new Float32Array(b64(s).buffer);

// ---------------------------------------------------------------------------------------------
// Float64 reference: one function per format giving, for value i of a block, its code and the
// grid (scale, offset) it lives on: value = scale·code - offset.

interface Level {
  code: number;
  scale: number;
  offset: number;
  codes: number; // the code range is 0..codes-1
}

const u16 = (b: Uint8Array, o: number) => b[o]! | (b[o + 1]! << 8);

/** Q4_K value i (0..255) of the 144-byte block at `o`. */
function refQ4K(b: Uint8Array, o: number, i: number): Level {
  const d = f16ToF32(u16(b, o));
  const dmin = f16ToF32(u16(b, o + 2));
  const s = Math.floor(i / 32);
  const sc6 = (j: number, isMin: boolean): number => {
    // 6-bit fields: for j < 4 the low 6 bits of byte j (scale) / j+4 (min); for j ≥ 4 the low (scale)
    // or high (min) nibble of byte j+4, plus the top 2 bits of byte j-4 (scale) / j (min) as bits 4-5.
    const sb = b.subarray(o + 4, o + 16);
    if (j < 4) return sb[isMin ? j + 4 : j]! % 64;
    const low = isMin ? Math.floor(sb[j + 4]! / 16) : sb[j + 4]! % 16;
    const high = Math.floor(sb[isMin ? j : j - 4]! / 64);
    return low + 16 * high;
  };
  const byte = b[o + 16 + 32 * Math.floor(i / 64) + (i % 32)]!;
  const code = s % 2 === 0 ? byte % 16 : Math.floor(byte / 16);
  return { code, scale: d * sc6(s, false), offset: dmin * sc6(s, true), codes: 16 };
}

/**
 * Q5_K value i (0..255) of the 176-byte block at `o`: Q4_K's d, dmin and 12 scale bytes, then 32
 * bytes qh (bit s of qh[l]: the 5th bit of value l of sub-block s), then the low 4 bits.
 */
function refQ5K(b: Uint8Array, o: number, i: number): Level {
  const s = Math.floor(i / 32);
  const { scale, offset } = refQ4K(b, o, i); // the same scale fields; refQ4K's code is not used
  const byte = b[o + 48 + 32 * Math.floor(i / 64) + (i % 32)]!;
  const low = s % 2 === 0 ? byte % 16 : Math.floor(byte / 16);
  const high = Math.floor(b[o + 16 + (i % 32)]! / 2 ** s) % 2;
  return { code: low + 16 * high, scale, offset, codes: 32 };
}

/** Q6_K value i of the 210-byte block at `o`. */
function refQ6K(b: Uint8Array, o: number, i: number): Level {
  const half = Math.floor(i / 128);
  const k = Math.floor((i % 128) / 32); // which quarter of the half
  const l = i % 32;
  const qlByte = b[o + 64 * half + 32 * (k % 2) + l]!;
  const low = k < 2 ? qlByte % 16 : Math.floor(qlByte / 16);
  const high = Math.floor(b[o + 128 + 32 * half + l]! / 4 ** k) % 4;
  const scRaw = b[o + 192 + Math.floor(i / 16)]!;
  const sc = scRaw >= 128 ? scRaw - 256 : scRaw;
  const d = f16ToF32(u16(b, o + 208));
  // value = d·sc·(q - 32) = (d·sc)·q - 32·d·sc
  return { code: low + 16 * high, scale: d * sc, offset: 32 * d * sc, codes: 64 };
}

/** Q5_0 value i (0..31) of the 22-byte block at `o`. */
function refQ5_0(b: Uint8Array, o: number, i: number): Level {
  const d = f16ToF32(u16(b, o));
  const qh = b[o + 2]! + 256 * b[o + 3]! + 65536 * b[o + 4]! + 16777216 * b[o + 5]!;
  const byte = b[o + 6 + (i % 16)]!;
  const low = i < 16 ? byte % 16 : Math.floor(byte / 16);
  const high = Math.floor(qh / 2 ** i) % 2;
  return { code: low + 16 * high, scale: d, offset: 16 * d, codes: 32 };
}

const REF: Record<KType, (b: Uint8Array, o: number, i: number) => Level> = {
  Q4_K: refQ4K,
  Q5_K: refQ5K,
  Q6_K: refQ6K,
  Q5_0: refQ5_0,
};
const DEQUANT = { Q4_K: dequantizeQ4_K, Q5_K: dequantizeQ5_K, Q6_K: dequantizeQ6_K, Q5_0: dequantizeQ5_0 };

function refDecode(type: KType, bytes: Uint8Array, numel: number): Level[] {
  const { block, bytes: per } = GGML_LAYOUT[type];
  const out: Level[] = [];
  for (let i = 0; i < numel; i++) out.push(REF[type](bytes, Math.floor(i / block) * per, i % block));
  return out;
}

/** Values with the awkward cases (a zero block, a zero sub-block, an all-positive block, an outlier). */
function awkwardValues(label: string, superBlocks: number): Float32Array {
  const rng = testRng(label);
  const x = rng.normalArray(superBlocks * 256, 0, 0.05);
  x.fill(0, 0, 256);
  for (let i = 256; i < 512; i++) x[i] = Math.abs(x[i]!) + 0.01;
  x.fill(0, 512, 528);
  x[600] = -1.5;
  for (let i = 768; i < 1024; i++) x[i] = x[i]! * 60;
  return x;
}

describe('ggml K-quants and Q5_0 against llama.cpp (fixture from its ggml library)', () => {
  const x = f32s(fixture.values_f32);
  for (const type of ['Q4_K', 'Q5_K', 'Q6_K', 'Q5_0'] as const) {
    it(`${type}: our quantizer writes llama.cpp's bytes; our decoder reads llama.cpp's values exactly`, () => {
      const want = b64(fixture.types[type].bytes);
      const got = encodeGgml(type, x, 256);
      expect(got.byteLength).toBe(want.byteLength);
      const differ = got.findIndex((v, i) => v !== want[i]);
      expect(differ, `first differing byte ${differ} (block ${Math.floor(differ / GGML_LAYOUT[type].bytes)})`).toBe(-1);
      const values = decodeGgml(type, want, x.length);
      const theirs = f32s(fixture.types[type].dequantized_f32);
      const off = values.findIndex((v, i) => !Object.is(v, theirs[i]));
      expect(off, `first differing value ${off}: ours ${values[off]} llama.cpp ${theirs[off]}`).toBe(-1);
    });
  }
});

describe('ggml K-quants and Q5_0 against a float64 statement of the format', () => {
  for (const type of ['Q4_K', 'Q5_K', 'Q6_K', 'Q5_0'] as const) {
    it(`${type}: decoding within f32 rounding of the formula; every value encodes to the nearest level of its grid`, () => {
      const superBlocks = 7; // an odd count; Q5_0 sees 56 blocks of 32
      const x = awkwardValues(type, superBlocks);
      const bytes = encodeGgml(type, x, 256);
      expect(bytes.byteLength).toBe((x.length / GGML_LAYOUT[type].block) * GGML_LAYOUT[type].bytes);
      const out = new Float32Array(x.length).fill(NaN);
      DEQUANT[type](bytes, x.length, out);
      const ref = refDecode(type, bytes, x.length);
      let worstStep = 0;
      for (let i = 0; i < x.length; i++) {
        const r = ref[i]!;
        expect(r.code).toBeGreaterThanOrEqual(0);
        expect(r.code).toBeLessThan(r.codes);
        const exact = r.scale * r.code - r.offset;
        // f32: the product d·sc, its product with the code and (Q4_K) the min's product and the
        // subtraction each round by ≤ 2^-24 relative; 2^-22 of the largest magnitude covers all.
        const mag = Math.max(Math.abs(r.scale * r.code), Math.abs(r.offset), Math.abs(exact));
        expect(Math.abs(out[i]! - exact), `value ${i}`).toBeLessThanOrEqual(2 ** -22 * mag);
        // Nearest level: no other code of the grid is closer to x (ties within f32 rounding of a half step).
        const step = Math.abs(r.scale);
        worstStep = Math.max(worstStep, step);
        if (step === 0) continue;
        const err = Math.abs(x[i]! - exact);
        let best = Infinity;
        for (let q = 0; q < r.codes; q++) best = Math.min(best, Math.abs(x[i]! - (r.scale * q - r.offset)));
        const slack = (type === 'Q5_0' ? 2 ** -6 : 1e-5) * step + 2 ** -22 * Math.abs(x[i]!);
        expect(
          err - best,
          `value ${i}: x ${x[i]} decodes to ${exact}, a level ${best} away exists`,
        ).toBeLessThanOrEqual(slack);
        const lo = Math.min(-r.offset, r.scale * (r.codes - 1) - r.offset);
        const hi = Math.max(-r.offset, r.scale * (r.codes - 1) - r.offset);
        if (x[i]! >= lo && x[i]! <= hi) expect(err).toBeLessThanOrEqual(step / 2 + slack);
      }
      // The all-zero block decodes to zeros.
      for (let i = 0; i < 256; i++) expect(Math.abs(out[i]!)).toBe(0); // -0 where the scale is -0, as in ggml
      expect(worstStep).toBeGreaterThan(0);
    });
  }

  it('Q4_K / Q6_K refuse rows that are not a multiple of 256; the layouts are 144 and 210 bytes per 256 values', () => {
    expect(() => encodeGgml('Q4_K', new Float32Array(2 * 128), 128)).toThrow(/multiple of 256/);
    expect(() => encodeGgml('Q6_K', new Float32Array(2 * 288), 288)).toThrow(/multiple of 256/);
    expect(GGML_LAYOUT.Q4_K).toEqual({ block: 256, bytes: 144 });
    expect(GGML_LAYOUT.Q6_K).toEqual({ block: 256, bytes: 210 });
    expect(GGML_LAYOUT.Q5_0).toEqual({ block: 32, bytes: 22 });
    expect(GGML_LAYOUT.Q5_K).toEqual({ block: 256, bytes: 176 });
  });

  it('quantization error of normal weights: relative RMS error Q6_K < Q5_K, Q5_0 < Q4_K, each below its step-derived bound', () => {
    // A uniform rounding error over a step Δ has RMS Δ/√12. For 256 normal values per block the
    // grids span about ±3σ: Q4_K 15 steps over the sub-block's range (≈ 4.5σ for 32 values) gives
    // ≈ 0.3σ/√12 ≈ 0.087σ; Q5_K 31 steps over the same range ≈ 0.042σ; Q5_0 31 steps over 2·max|x| (≈ 4.3σ for 32) ≈ 0.04σ; Q6_K 63 steps over
    // 2·max|x| (≈ 4σ for 16) ≈ 0.018σ. The bounds allow 1.5× for the 6-/8-bit rounding of the scales.
    const x = testRng('kquant-rms').normalArray(9 * 256, 0, 0.02);
    const rel = (t: GgmlTypeName) => {
      const y = decodeGgml(t, encodeGgml(t, x, 256), x.length);
      let e = 0;
      let s = 0;
      for (let i = 0; i < x.length; i++) {
        e += (x[i]! - y[i]!) ** 2;
        s += x[i]! ** 2;
      }
      return Math.sqrt(e / s);
    };
    const r = { Q4_K: rel('Q4_K'), Q5_K: rel('Q5_K'), Q5_0: rel('Q5_0'), Q6_K: rel('Q6_K') };
    console.log(
      `relative RMS quantization error: Q4_K ${r.Q4_K.toFixed(4)}, Q5_K ${r.Q5_K.toFixed(4)}, Q5_0 ${r.Q5_0.toFixed(4)}, Q6_K ${r.Q6_K.toFixed(4)}`,
    );
    expect(r.Q4_K).toBeLessThan(1.5 * 0.087);
    expect(r.Q5_K).toBeLessThan(1.5 * 0.042);
    expect(r.Q5_0).toBeLessThan(1.5 * 0.04);
    expect(r.Q6_K).toBeLessThan(1.5 * 0.018);
    expect(r.Q6_K).toBeLessThan(r.Q5_0);
    expect(r.Q5_0).toBeLessThan(r.Q4_K);
    expect(r.Q6_K).toBeLessThan(r.Q5_K);
    expect(r.Q5_K).toBeLessThan(r.Q4_K);
  });
});
