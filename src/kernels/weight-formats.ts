// The WGSL that reads each weight format: the storage bindings a weight takes and the expressions
// that decode its elements to f32. Every kernel that reads weights (the GEMM loaders, the GEMV, the
// NF4 kernels, the elementwise 16-bit conversions) takes its decoding from here.
//
// Formats (element i of the row-major flattened weight):
// - f32: one f32.
// - bf16, f16: 16-bit halves packed two per u32 word, element 2w + j in the low (j = 0) or high half
//   of word w. bf16 is the top half of an f32; f16 goes through unpack2x16float (no shader-f16).
// - nf4: 4-bit codes into NF4_CODE packed 8 per u32 word (element 8w + j in bits 4j..4j+3), times an
//   f32 absmax per block of NF4_BLOCK consecutive elements (blocks may span rows).
// - nf4dq: nf4 whose absmax values are double-quantized: a signed int8 per block (4 per u32 word,
//   byte j of word w is block 4w + j) times a scale per NF4_DQ_BLOCK blocks, plus one offset.
//
// A weight is bound under a name X: X holds the values (or the codes); NF4 adds X_abs (plain) or
// X_qabs, X_dqs, X_dqo (double-quantized) and a function X_absmax(block) -> f32.
import { Tensor } from '../engine/tensor.js';
import type { Nf4DoubleQuant, Nf4Weight } from './nf4.js';

export type WeightFormat = 'f32' | 'bf16' | 'f16' | 'nf4' | 'nf4dq';

/** The 16 NF4 values (QLoRA appendix; bitsandbytes' table), each exactly an f32. */
export const NF4_CODE: readonly number[] = Object.freeze([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);
/** Elements per NF4 absmax block. */
export const NF4_BLOCK = 64;
/** NF4 absmax blocks per double-quantization scale. */
export const NF4_DQ_BLOCK = 256;

export function isNf4Format(f: WeightFormat): f is 'nf4' | 'nf4dq' {
  return f === 'nf4' || f === 'nf4dq';
}

/** The format of a weight: a dense tensor's dtype, or NF4 with plain or double-quantized absmax. */
export function weightFormatOf(w: Tensor | Nf4Weight): WeightFormat {
  if (!(w instanceof Tensor)) return w.absmax instanceof Tensor ? 'nf4' : 'nf4dq';
  if (w.dtype === 'f32' || w.dtype === 'bf16' || w.dtype === 'f16') return w.dtype;
  throw new TypeError(`weight dtype ${w.dtype} is not f32, bf16 or f16`);
}

/** The tensors bound for a weight, in the order wgslWeightBindings declares them. */
export function weightTensors(w: Tensor | Nf4Weight): Tensor[] {
  if (w instanceof Tensor) return [w];
  if (w.absmax instanceof Tensor) return [w.codes, w.absmax];
  const dq = w.absmax as Nf4DoubleQuant;
  return [w.codes, dq.qabsmax, dq.absmaxScale, dq.absmaxOffset];
}

/** Storage bindings a weight takes. */
export function weightBindingCount(w: Tensor | Nf4Weight): number {
  return weightTensors(w).length;
}

/**
 * WGSL: 16-bit floats packed two per u32 word. bf16 is the top half of an f32 (round-to-nearest-even
 * on store); f16 uses the core pack/unpack builtins (no shader-f16 needed).
 */
export const WGSL_HALF = /* wgsl */ `
fn bf16_to_f32(bits: u32) -> f32 { return bitcast<f32>(bits << 16u); }
fn f32_to_bf16(x: f32) -> u32 {
  let u = bitcast<u32>(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) { return (u >> 16u) | 0x40u; } // NaN stays NaN
  return (u + 0x7fffu + ((u >> 16u) & 1u)) >> 16u;
}
fn half_word_get(word: u32, i: u32, is_bf16: bool) -> f32 {
  let bits = (word >> (16u * (i & 1u))) & 0xffffu;
  if (is_bf16) { return bf16_to_f32(bits); }
  return unpack2x16float(bits).x;
}
`;

const f32Bits = (v: number): number => new Uint32Array(new Float32Array([v]).buffer)[0]!;

/** WGSL: the NF4 table as exact f32 bit patterns. */
export const WGSL_NF4_TABLE = /* wgsl */ `
const NF4_BITS = array<u32, 16>(${NF4_CODE.map((v) => `0x${f32Bits(v).toString(16)}u`).join(', ')});
fn nf4_value(c: u32) -> f32 { return bitcast<f32>(NF4_BITS[c]); }
`;

/**
 * WGSL: a workgroup table of the NF4 values of every code byte (two codes: low nibble → x, high →
 * y), so one lookup decodes two elements. Kernels with a 256-invocation workgroup fill it with
 * WGSL_NF4_PAIRS_INIT (uses `lid`, ends with a barrier) before reading it.
 */
export const WGSL_NF4_PAIRS = 'var<workgroup> nf4_pairs: array<vec2f, 256>;';
export const WGSL_NF4_PAIRS_INIT = /* wgsl */ `
  nf4_pairs[lid] = vec2f(nf4_value(lid & 15u), nf4_value((lid >> 4u) & 15u));
  workgroupBarrier();`;

/** The module-scope WGSL the formats need (the 16-bit helpers, the NF4 table). */
export function wgslFormatHelpers(formats: readonly WeightFormat[]): string {
  return WGSL_HALF + (formats.some(isNf4Format) ? WGSL_NF4_TABLE : '');
}

/** WGSL storage type of a weight's values read `vec` elements per load (1, or the format's vector). */
function valueType(f: WeightFormat, vec: number): string {
  if (f === 'f32') return vec === 4 ? 'vec4f' : 'f32';
  if (isNf4Format(f)) return vec === 32 ? 'vec4u' : 'u32';
  return vec === 8 ? 'vec4u' : 'u32';
}

/**
 * WGSL: the storage declarations of weight `name` from binding `first` (and, for NF4, its
 * `name_absmax` function); returns the code and the next free binding.
 */
export function wgslWeightBindings(f: WeightFormat, name: string, vec: number, first: number): [string, number] {
  const values = `@group(0) @binding(${first}) var<storage, read> ${name}: array<${valueType(f, vec)}>;`;
  if (!isNf4Format(f)) return [values, first + 1];
  const [absmax, next] = wgslNf4AbsmaxBindings(f === 'nf4dq', name, first + 1);
  return [`${values}\n${absmax}`, next];
}

/**
 * WGSL: the absmax bindings of NF4 weight `name` from binding `first` and its `name_absmax(block)`
 * function (plain: one f32 per block; double-quantized: int8 · scale + offset); [code, next binding].
 */
export function wgslNf4AbsmaxBindings(dq: boolean, name: string, first: number): [string, number] {
  const decl = (i: number, n: string, type: string) =>
    `@group(0) @binding(${first + i}) var<storage, read> ${n}: array<${type}>;`;
  if (!dq)
    return [`${decl(0, `${name}_abs`, 'f32')}\nfn ${name}_absmax(b: u32) -> f32 { return ${name}_abs[b]; }`, first + 1];
  const code = [
    decl(0, `${name}_qabs`, 'u32'),
    decl(1, `${name}_dqs`, 'f32'),
    decl(2, `${name}_dqo`, 'f32'),
    `fn ${name}_absmax(b: u32) -> f32 {
  let q = i32(${name}_qabs[b >> 2u] << (24u - 8u * (b & 3u))) >> 24u;
  return f32(q) * ${name}_dqs[b / ${NF4_DQ_BLOCK}u] + ${name}_dqo[0];
}`,
  ];
  return [code.join('\n'), first + 3];
}

/** WGSL: element `idx` (a u32 expression without side effects) of weight `name` bound with vec 1, as f32. */
export function wgslWeightElement(f: WeightFormat, name: string, idx: string): string {
  switch (f) {
    case 'f32':
      return `${name}[${idx}]`;
    case 'bf16':
    case 'f16':
      return `half_word_get(${name}[(${idx}) >> 1u], ${idx}, ${f === 'bf16'})`;
    case 'nf4':
    case 'nf4dq':
      return `(nf4_value((${name}[(${idx}) >> 3u] >> (4u * ((${idx}) & 7u))) & 15u) * ${name}_absmax((${idx}) >> 6u))`;
  }
}

/**
 * WGSL: the `vec` elements at `idx` (a multiple of vec) of weight `name` bound with vec 4 (f32) or 8
 * (16-bit halves, NF4 code words) — the GEMM loaders' unit. `pre` declares locals (prefixed with the
 * name), `vals` are f32 expressions, or f16 with `asF16` for f16 weights (no conversion).
 */
export function wgslWeightChunk(
  f: WeightFormat,
  name: string,
  idx: string,
  vec: number,
  asF16 = false,
): { pre: string; vals: string[] } {
  if (vec === 1) {
    if (asF16 && f === 'f16') return { pre: '', vals: [`bitcast<vec2<f16>>(${name}[(${idx}) >> 1u])[(${idx}) & 1u]`] };
    return { pre: '', vals: [wgslWeightElement(f, name, idx)] };
  }
  const range = (n: number) => Array.from({ length: n }, (_, j) => j);
  const q = `${name}_q`;
  switch (f) {
    case 'f32':
      return { pre: `let ${q} = ${name}[(${idx}) >> 2u];`, vals: [`${q}.x`, `${q}.y`, `${q}.z`, `${q}.w`] };
    case 'f16': {
      const cv = asF16 ? 'bitcast<vec2<f16>>' : 'unpack2x16float';
      return {
        pre: `let ${q} = ${name}[(${idx}) >> 3u];${range(4)
          .map((j) => ` let ${name}_h${j} = ${cv}(${q}[${j}]);`)
          .join('')}`,
        vals: range(8).map((j) => `${name}_h${j >> 1}.${j & 1 ? 'y' : 'x'}`),
      };
    }
    case 'bf16':
      return {
        pre: `let ${q} = ${name}[(${idx}) >> 3u];`,
        vals: range(8).map((j) => `bitcast<f32>(${q}[${j >> 1}] ${j & 1 ? '& 0xffff0000u' : '<< 16u'})`),
      };
    case 'nf4':
    case 'nf4dq':
      return {
        pre: `let ${q} = ${name}[(${idx}) >> 3u]; let ${name}_am = ${name}_absmax((${idx}) >> 6u);`,
        vals: range(8).map((j) => `nf4_value((${q} >> ${4 * j}u) & 15u) * ${name}_am`),
      };
  }
}

/** Widest vector load of a format for a contiguous run of `K` elements (1 when none divides K). */
export function weightVecFor(f: WeightFormat, K: number, widths: 'gemm' | 'gemv'): number {
  if (K === 0) return 1; // an empty weight binds 4 bytes: less than one vector
  const options = f === 'f32' ? [4] : isNf4Format(f) ? (widths === 'gemv' ? [32, 8] : [8]) : [8];
  return options.find((v) => K % v === 0) ?? 1;
}

/**
 * WGSL: weight `name` bound with `vec` elements per load (4 f32, 8 halves, 8 or 32 NF4 codes) as
 * vec/4 vec4f values — the GEMV's unit. `pre` (at element offset `e`, a multiple of vec) loads the
 * vector once; `at(j)` is the j-th vec4f (j a WGSL u32 expression); `scale` multiplies a dot
 * product with it (the NF4 absmax: one multiply per 4 products) or is null. NF4 reads the
 * WGSL_NF4_PAIRS table.
 */
export function wgslWeightVec4s(
  f: WeightFormat,
  name: string,
  e: string,
  vec: number,
): { pre: string; at: (j: string) => string; scale: string | null } {
  const q = `${name}_q`;
  switch (f) {
    case 'f32':
      return { pre: '', at: () => `${name}[(${e}) / 4u]`, scale: null };
    case 'bf16':
    case 'f16': {
      const un = (x: string) =>
        f === 'bf16' ? `vec2f(bitcast<f32>(${x} << 16u), bitcast<f32>(${x} & 0xffff0000u))` : `unpack2x16float(${x})`;
      return {
        pre: `let ${q} = ${name}[(${e}) / 8u];`,
        at: (j) => `vec4f(${un(`${q}[2u * ${j}]`)}, ${un(`${q}[2u * ${j} + 1u]`)})`,
        scale: null,
      };
    }
    case 'nf4':
    case 'nf4dq': {
      // Four codes per vec4f: the low (j even) or high (j odd) two bytes of word j / 2.
      const word = (j: string) => (vec === 32 ? `${q}[${j} / 2u]` : q);
      const half = (j: string) => `(${word(j)} >> (16u * (${j} & 1u)))`;
      return {
        pre: `let ${q} = ${name}[(${e}) / ${vec}u]; let ${name}_am = ${name}_absmax((${e}) / ${NF4_BLOCK}u);`,
        at: (j) => `vec4f(nf4_pairs[${half(j)} & 255u], nf4_pairs[(${half(j)} >> 8u) & 255u])`,
        scale: `${name}_am`,
      };
    }
  }
}
