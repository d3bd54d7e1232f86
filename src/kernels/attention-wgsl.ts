// The WGSL every attention kernel shares (flash-attention in attention.ts, the CPU-shaped kernels in
// attention-cpu.ts, the subgroup-matrix ones in attention-sgmatrix.ts): the uniforms, the q/k/v and
// backward input bindings, and the masking rule.
export const HEADER = /* wgsl */ `
struct P {
  T: u32, S: u32, Sk: u32, Hq: u32,
  Hkv: u32, group: u32, qOffset: i32, scale2: f32,
  scale: f32, negInf: f32, n: u32, flags: u32, // flags: 1 causal, 2 segments, 4 kvStart, 8 split layout
  dh4: u32, splits: u32, chunk: u32, rowBlocks: u32,
  wv: u32, tpr: u32, // WV and TPR, for loops with a runtime trip count (software adapters)
}
@group(0) @binding(0) var<uniform> p: P;
const NEG = -3.0e38; // below any finite score: marks "no key seen yet"
const LN2 = 0.6931471805599453;
const LOG2E = 1.4426950408889634;
`;

/** WGSL: a storage binding of q/k/v-like data read as vec4f rows (f32, or f16 packed two per u32). */
export function inputBinding(binding: number, name: string, type: 'f32' | 'f16'): string {
  const elem = type === 'f32' ? 'vec4f' : 'vec2u';
  const load =
    type === 'f32'
      ? `return ${name}[i];`
      : `let w = ${name}[i];\n  return vec4f(unpack2x16float(w.x), unpack2x16float(w.y));`;
  return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<${elem}>;
fn ld${name}(i: u32) -> vec4f {
  ${load}
}`;
}

/** Bindings 1-3, q, k and v, that every attention kernel reads first (outputs follow from binding 4). */
export function qkvBindings(qType: 'f32' | 'f16', kvType: 'f32' | 'f16'): string {
  return `${inputBinding(1, 'Q', qType)}
${inputBinding(2, 'K', kvType)}
${inputBinding(3, 'V', kvType)}`;
}

/**
 * Bindings 1-6 that every backward kernel reads (q, k, v, dO, the forward's logsumexp, D = rowsum(dO∘O)),
 * in the order the launchers bind them; dQ / dK / dV and the segment ids follow from binding 7.
 */
export function backwardInputBindings(qType: 'f32' | 'f16', kvType: 'f32' | 'f16'): string {
  return `${qkvBindings(qType, kvType)}
${inputBinding(4, 'DO', 'f32')}
@group(0) @binding(5) var<storage, read> LSE: array<f32>;
@group(0) @binding(6) var<storage, read> DD: array<f32>;`;
}

/** WGSL: the masking flags of the uniforms, as the `visible` predicate reads them. */
export const MASK_FLAGS = 'let CAUSAL = (p.flags & 1u) != 0u; let SEGON = (p.flags & 2u) != 0u;';

/**
 * WGSL: whether a query row sees a key, the rule of the header, for every kernel's loop shape: the
 * bounds in `within` (the query row exists, the key is below kvLength / the block's end and at or
 * after kvStart), causal (`key` ≤ `qlim`, the query's position + qOffset) and segments (the query's
 * and the key's segment ids, `segment`, are equal). Reads the lets of MASK_FLAGS.
 */
export function visible(m: { within: string[]; key: string; qlim: string; segment: [string, string] }): string {
  const [a, b] = m.segment;
  return [...m.within, `(!CAUSAL || i32(${m.key}) <= ${m.qlim})`, `(!SEGON || ${a} == ${b})`].join(' && ');
}
