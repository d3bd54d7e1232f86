// Float64 references for the elementwise kernels, written from the math (not from the WGSL).
export const unaryRef: Record<string, { f: (x: number) => number; df: (x: number) => number }> = {
  neg: { f: (x) => -x, df: () => -1 },
  exp: { f: Math.exp, df: Math.exp },
  log: { f: Math.log, df: (x) => 1 / x },
  sqrt: { f: Math.sqrt, df: (x) => 0.5 / Math.sqrt(x) },
  square: { f: (x) => x * x, df: (x) => 2 * x },
  relu: { f: (x) => Math.max(x, 0), df: (x) => (x > 0 ? 1 : 0) },
  sigmoid: {
    f: (x) => 1 / (1 + Math.exp(-x)),
    df: (x) => {
      const s = 1 / (1 + Math.exp(-x));
      return s * (1 - s);
    },
  },
  silu: {
    f: (x) => x / (1 + Math.exp(-x)),
    df: (x) => {
      const s = 1 / (1 + Math.exp(-x));
      return s * (1 + x * (1 - s));
    },
  },
  tanh: { f: Math.tanh, df: (x) => 1 - Math.tanh(x) ** 2 },
};

export const binaryRef: Record<
  string,
  { f: (a: number, b: number) => number; da: (a: number, b: number) => number; db: (a: number, b: number) => number }
> = {
  add: { f: (a, b) => a + b, da: () => 1, db: () => 1 },
  sub: { f: (a, b) => a - b, da: () => 1, db: () => -1 },
  mul: { f: (a, b) => a * b, da: (_a, b) => b, db: (a) => a },
  div: { f: (a, b) => a / b, da: (_a, b) => 1 / b, db: (a, b) => -a / (b * b) },
};

/** Round-to-nearest-even f32 → bf16 bits (from the bf16 definition: the top 16 bits of an f32). */
export function bf16Bits(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0]!;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff;
  const lower = u & 0xffff;
  let upper = u >>> 16;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper += 1;
  return upper & 0xffff;
}

export function bf16ToNumber(bits: number): number {
  return new Float32Array(new Uint32Array([bits << 16]).buffer)[0]!;
}
