// GGUF container and ggml block encodings. The quantizers are checked against a float64 statement
// of each format (scale from the block's extreme value, codes = nearest level, clamped), the
// container by a round trip of every metadata type and a header decoded byte by byte.
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { f16ToF32, f32ToF16 } from '../../src/io/dtype.js';
import { decodeGgml, encodeGgml, GGML_LAYOUT, quantizeQ4_0, quantizeQ8_0 } from '../../src/io/ggml-quants.js';
import { GgufFile, type GgufMetadata, writeGguf } from '../../src/io/gguf.js';
import { testRng } from '../helpers/index.js';
import { useTempDir } from '../llama/helpers.js';

const tempDir = useTempDir();

/** Block data with the awkward cases: an all-zero block, a block whose extreme is negative, ties. */
function blocks(n: number, label: string): Float32Array {
  const rng = testRng(label);
  const x = rng.normalArray(n * 32, 0, 0.05);
  x.fill(0, 0, 32); // block 0: zeros (scale 0)
  x[40] = -0.3; // block 1: negative extreme
  for (let j = 64; j < 96; j++) x[j] = (j - 80) / 16; // block 2: exact quarter steps (ties)
  return x;
}

describe('ggml block quantization', () => {
  it('Q8_0: f16 scale amax/127, codes round(x/d) half away from zero, within d/2 (plus f32 rounding)', () => {
    const x = blocks(7, 'q8_0');
    const q = quantizeQ8_0(x);
    expect(q.byteLength).toBe(7 * 34);
    const view = new DataView(q.buffer);
    const back = decodeGgml('Q8_0', q, x.length);
    for (let b = 0; b < 7; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]!));
      const d = amax / 127;
      expect(view.getUint16(b * 34, true)).toBe(f32ToF16(d));
      const dStored = f16ToF32(f32ToF16(d));
      for (let j = 0; j < 32; j++) {
        const v = x[b * 32 + j]!;
        const code = view.getInt8(b * 34 + 2 + j);
        const exact = d === 0 ? 0 : v / d;
        // The f32 code computation may land on the other side of a tie only when exact is within
        // f32 rounding (1e-5 of 127) of a half step.
        const nearTie = Math.abs(Math.abs(exact % 1) - 0.5) < 1e-4;
        if (!nearTie) expect(code).toBe((exact < 0 ? -Math.round(-exact) : Math.round(exact)) + 0);
        expect(back[b * 32 + j]).toBe(Math.fround(code * dStored));
      }
    }
  });

  it('Q4_0: scale = (value of largest |x|) / -8, codes min(15, floor(x/d + 8.5)), nibble layout j | j+16 << 4', () => {
    const x = blocks(5, 'q4_0');
    const q = quantizeQ4_0(x);
    expect(q.byteLength).toBe(5 * 18);
    const view = new DataView(q.buffer);
    const back = decodeGgml('Q4_0', q, x.length);
    for (let b = 0; b < 5; b++) {
      let max = 0;
      for (let j = 0; j < 32; j++) if (Math.abs(x[b * 32 + j]!) > Math.abs(max)) max = x[b * 32 + j]!;
      const d = max / -8;
      expect(view.getUint16(b * 18, true)).toBe(f32ToF16(d));
      const dStored = f16ToF32(f32ToF16(d));
      for (let j = 0; j < 32; j++) {
        const byte = q[b * 18 + 2 + (j % 16)]!;
        const code = j < 16 ? byte & 15 : byte >> 4;
        const exact = d === 0 ? 8.5 : x[b * 32 + j]! / d + 8.5;
        const nearTie = Math.abs(exact - Math.round(exact)) < 1e-5;
        if (!nearTie) expect(code).toBe(Math.min(15, Math.floor(exact)));
        expect(back[b * 32 + j]).toBe(Math.fround((code - 8) * dStored));
      }
      // The extreme value itself is exact: code 0 ↔ -8·d = max.
      const at = Array.from(x.subarray(b * 32, b * 32 + 32)).indexOf(max);
      if (max !== 0) expect(back[b * 32 + at]).toBe(Math.fround(-8 * dStored));
    }
  });

  it('F32/F16/BF16 round trips; rows that do not fill whole blocks are refused', () => {
    const x = blocks(2, 'floats');
    expect(decodeGgml('F32', encodeGgml('F32', x, 64), x.length)).toEqual(x);
    const h = decodeGgml('F16', encodeGgml('F16', x, 64), x.length);
    for (let i = 0; i < x.length; i++)
      expect(Math.abs(h[i]! - x[i]!)).toBeLessThanOrEqual(Math.abs(x[i]!) * 2 ** -11 + 2 ** -25);
    const bf = decodeGgml('BF16', encodeGgml('BF16', x, 64), x.length);
    for (let i = 0; i < x.length; i++) expect(Math.abs(bf[i]! - x[i]!)).toBeLessThanOrEqual(Math.abs(x[i]!) * 2 ** -8);
    expect(() => encodeGgml('Q8_0', new Float32Array(48 * 2), 48)).toThrow(/multiple of 32/);
    expect(GGML_LAYOUT.Q4_0.bytes).toBe(18);
  });
});

describe('GGUF container', () => {
  it('round-trips metadata of every type and tensors of every encoding, at the default alignment', async () => {
    const path = join(await tempDir(), 'm.gguf');
    const md: GgufMetadata = new Map([
      ['general.architecture', { type: 'string', value: 'llama' }],
      ['a.u8', { type: 'u8', value: 200 }],
      ['a.i8', { type: 'i8', value: -5 }],
      ['a.u16', { type: 'u16', value: 60000 }],
      ['a.i16', { type: 'i16', value: -3000 }],
      ['a.u32', { type: 'u32', value: 4e9 }],
      ['a.i32', { type: 'i32', value: -2e9 }],
      ['a.f32', { type: 'f32', value: 1e-5 }],
      ['a.f64', { type: 'f64', value: Math.PI }],
      ['a.u64', { type: 'u64', value: 2n ** 60n }],
      ['a.i64', { type: 'i64', value: -(2n ** 60n) }],
      ['a.bool', { type: 'bool', value: true }],
      ['a.str', { type: 'string', value: 'naïve €5 日本' }],
      ['a.arr', { type: 'array', itemType: 'string', value: ['x', '', 'yz'] }],
      ['a.arrf', { type: 'array', itemType: 'f32', value: [0.5, -2] }],
    ]);
    const x = blocks(3, 'container');
    const tensors = (['F32', 'F16', 'BF16', 'Q8_0', 'Q4_0'] as const).map((type, i) => ({
      name: `t${i}.${type}`,
      shape: [3, 32],
      type,
      data: () => x,
    }));
    tensors.push({ name: 'odd', shape: [3], type: 'F32', data: () => Float32Array.of(1, 2, 3) });
    await writeGguf(path, md, tensors);
    expect((await readdir(join(path, '..'))).filter((f) => f !== 'm.gguf')).toEqual([]); // no temp file left
    const bytes = await readFile(path);
    expect(bytes.subarray(0, 4).toString('latin1')).toBe('GGUF');
    expect(bytes.readUInt32LE(4)).toBe(3);
    expect(bytes.readBigUInt64LE(8)).toBe(BigInt(tensors.length));
    expect(bytes.readBigUInt64LE(16)).toBe(BigInt(md.size));
    const g = await GgufFile.open(path);
    try {
      for (const [k, v] of md) {
        const got = g.metadata.get(k)!;
        expect(got.type).toBe(v.type);
        if (v.type === 'f32') expect(got.value).toBe(Math.fround(v.value));
        else if (v.type === 'array' && v.itemType === 'f32')
          expect(got.value).toEqual(v.value.map((n) => Math.fround(n as number)));
        else if (v.type === 'u64' || v.type === 'i64') expect(got.value).toBe(BigInt(v.value));
        else expect(got.value).toEqual(v.value);
      }
      for (const t of tensors) {
        const info = g.tensors.get(t.name)!;
        expect(info.shape).toEqual(t.shape);
        expect(info.type).toBe(t.type);
        expect(info.offset % 32).toBe(0);
        expect(await g.readF32(t.name)).toEqual(
          decodeGgml(
            t.type,
            encodeGgml(t.type, await t.data(), t.shape.at(-1)!),
            t.shape.reduce((a, b) => a * b),
          ),
        );
      }
    } finally {
      await g.close();
    }
  });

  it('refuses a file that is not GGUF, or is cut short, naming the file', async () => {
    const dir = await tempDir();
    const path = join(dir, 'x.gguf');
    await writeGguf(path, new Map([['general.architecture', { type: 'string', value: 'llama' }]]), [
      { name: 'w', shape: [4, 32], type: 'Q8_0', data: () => new Float32Array(128) },
    ]);
    const full = await readFile(path);
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(dir, 'cut.gguf'), full.subarray(0, full.byteLength - 40));
    await expect(GgufFile.open(join(dir, 'cut.gguf'))).rejects.toThrow(/cut\.gguf.*past the end/);
    await writeFile(join(dir, 'not.gguf'), 'hello world, not a model');
    await expect(GgufFile.open(join(dir, 'not.gguf'))).rejects.toThrow(/not\.gguf.*not a GGUF file/);
    await expect(GgufFile.open(join(dir, 'missing.gguf'))).rejects.toThrow(/missing\.gguf.*not found/);
  });
});
