// specKey: the pipeline-cache key derived from a kernel spec (src/kernels/common.ts).
import { describe, expect, it } from 'vitest';
import { specKey } from '../../src/kernels/common.js';

describe('specKey', () => {
  it('is independent of field order and changes with any field, nested ones included', () => {
    const a = { kind: 'nf4', S: 2, lora: [true, false], tile: { m: 4, n: 8 } };
    const b = { tile: { n: 8, m: 4 }, lora: [true, false], S: 2, kind: 'nf4' };
    expect(specKey('gemv', a)).toBe(specKey('gemv', b));
    const variants = [
      { ...a, kind: 'f32' },
      { ...a, S: 3 },
      { ...a, lora: [false, true] },
      { ...a, tile: { m: 4, n: 16 } },
      { ...a, extra: 0 },
    ];
    const keys = new Set([specKey('gemv', a), ...variants.map((v) => specKey('gemv', v))]);
    expect(keys.size).toBe(variants.length + 1);
    expect(specKey('gemv', a)).not.toBe(specKey('gemm', a));
  });

  it('treats an undefined field as absent and keeps strings apart from numbers', () => {
    expect(specKey('k', { a: 1, b: undefined })).toBe(specKey('k', { a: 1 }));
    expect(specKey('k', { a: 1 })).not.toBe(specKey('k', { a: '1' }));
  });

  it('refuses a spec holding a function (its code would not be part of the key)', () => {
    expect(() => specKey('k', { f: () => 1 })).toThrow(/plain data/);
  });
});
