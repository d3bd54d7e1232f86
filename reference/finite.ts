// Reference for the non-finite count: decode every element to a float64 value from the format's
// definition (sign, exponent, mantissa), then ask whether it is finite. Not from the WGSL.

/** IEEE binary16 bits → value. */
export function f16Value(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : sign * Infinity;
  return e === 0 ? sign * m * 2 ** -24 : sign * (1 + m / 1024) * 2 ** (e - 15);
}

/** bfloat16 bits → value (the top half of an f32). */
export function bf16Value(h: number): number {
  const view = new DataView(new ArrayBuffer(4));
  view.setUint32(0, (h & 0xffff) << 16);
  return view.getFloat32(0);
}

export function nonFiniteRef(values: Iterable<number>): number {
  let n = 0;
  for (const v of values) if (!Number.isFinite(v)) n++;
  return n;
}
