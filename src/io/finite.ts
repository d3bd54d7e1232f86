// Non-finite values (NaN, ±Inf) in weights held on the CPU: adapters and optimizer state as they are
// read, and the tensors `finllm export` streams. (Weights that live on the GPU are counted there:
// src/kernels/finite.ts.) One message format for both, naming each tensor.

/** How many elements of `data` are NaN or ±Inf. */
export function nonFiniteCount(data: ArrayLike<number>): number {
  let n = 0;
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i]!)) n++;
  return n;
}

/** How many 16-bit values (raw bf16 / f16 bits) are NaN or ±Inf: exponent bits all ones. */
export function nonFiniteCountBits16(bits: Uint16Array, dtype: 'BF16' | 'F16'): number {
  const mask = dtype === 'BF16' ? 0x7f80 : 0x7c00;
  let n = 0;
  for (let i = 0; i < bits.length; i++) if ((bits[i]! & mask) === mask) n++;
  return n;
}

// Rounding to nearest even: |x| at or above these becomes ±Inf. f16: halfway between 65504 (odd
// mantissa) and 2^16. bf16: halfway between 0x7f7f and 0x7f80, i.e. f32 bits 0x7f7f8000.
const OVERFLOW_AT = {
  F16: 65520,
  BF16: new Float32Array(new Uint32Array([0x7f7f8000]).buffer)[0]!,
} as const;

/** How many finite f32 values of `data` become ±Inf when rounded to `dtype`. */
export function overflowCount(data: Float32Array, dtype: 'BF16' | 'F16'): number {
  const limit = OVERFLOW_AT[dtype];
  let n = 0;
  for (let i = 0; i < data.length; i++) {
    const a = Math.abs(data[i]!);
    if (a >= limit && a !== Infinity) n++;
  }
  return n;
}

export interface NonFiniteTensor {
  name: string;
  count: number;
}

/** "tensor 'a' has 3 non-finite values (NaN or ±Inf); tensor 'b' has 1 ..." (the first few). */
export function describeNonFinite(found: readonly NonFiniteTensor[], shown = 3): string {
  const parts = found
    .slice(0, shown)
    .map((f) => `tensor '${f.name}' has ${f.count} non-finite value${f.count === 1 ? '' : 's'} (NaN or ±Inf)`);
  const more =
    found.length > shown ? `; and ${found.length - shown} more tensor${found.length - shown === 1 ? '' : 's'}` : '';
  return parts.join('; ') + more;
}
