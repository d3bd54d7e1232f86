// The GEMV family: products with few rows (decode, one token per sequence), where reading each weight
// once is the whole cost. One generator serves matmul's and nf4Linear's few-row products and the
// fused kernels of the decode step:
//
//   out[m, ·] (=|+=) epilogue( x̂[m, ·] · [W₀; W₁; W₂]ᵀ (+ LoRA) )      1 ≤ rows ≤ 8 per dispatch
//
// - x̂ = x, or RMSNorm(x)·g folded in: the sum of squares is accumulated alongside the dot products
//   (every column group reads the whole row of x anyway) and 1/rms applied at the end; or, with
//   `rstd` given, x·rstd·g on the fly (the LoRA path: its down projection computed rstd).
// - 1 to 3 weight segments with the same K (q/k/v, gate/up) form one logical weight [ΣN, K]: one
//   dispatch, no concatenated copy. Every weight format of weight-formats.ts, one per dispatch.
// - LoRA in the epilogue: + s·Σⱼ B[n, j]·u[m, j] (u = x̂·Aᵀ from a previous GEMV over the A
//   matrices), summed by the same lanes as the dot product.
// - Epilogues: store (at a column offset per segment), accumulate into the output (the residual add
//   x += o_proj(…)), swiglu (2 segments gate/up: y = silu(gate)·up).
// - Matmul layouts: x stored transposed ([K, M]), and a batch of products on grid z with strides.
// Layout: 256 threads = 8 column groups of 32 lanes; a group owns one output column (a weight row of
// each needed segment) and streams it with 16-byte loads (vec4 of f32, 8 packed halves, 32 NF4 codes
// with one absmax; 8 codes when K is a multiple of 8 only), the lanes reduce through workgroup
// memory. Rows are compiled as 1, 2, 4 or 8 accumulators (rows past M read row M−1, not stored).
// K not a multiple of the vector width takes a scalar loop: correct for any shape, slower.
import { engine, type Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, specKey, Uniforms } from './common.js';
import type { Nf4Weight } from './nf4.js';
import { type KernelVariant, kernelFamily, kernelVariants } from './variants.js';
import {
  isNf4Format,
  type WeightFormat,
  WGSL_NF4_PAIRS,
  WGSL_NF4_PAIRS_INIT,
  weightFormatOf,
  weightTensors,
  weightVecFor,
  wgslFormatHelpers,
  wgslWeightBindings,
  wgslWeightElement,
  wgslWeightVec4s,
} from './weight-formats.js';

/** A linear weight in HF layout [out, in]: dense (f32, bf16, f16) or NF4. */
export type GemvWeight = Tensor | Nf4Weight;

/** Rows per dispatch (accumulators per thread); more rows take several dispatches. */
export const GEMV_MAX_ROWS = 8;
const LANES = 32;
const GROUPS = 8;
const WG = LANES * GROUPS;

export type GemvNorm = 'none' | 'compute' | 'given';
export type GemvEpilogue = 'store' | 'accumulate' | 'swiglu';

/** Everything a generated GEMV depends on: its pipeline key is derived from all of it. */
export interface GemvSpec {
  format: WeightFormat;
  /** Weight segments (swiglu: 2). */
  segments: number;
  /** Accumulators per thread: 1, 2, 4 or 8 rows. */
  rows: number;
  /** Weight elements per load (weightVecFor), 1 for the scalar loop. */
  vec: number;
  /** x stored transposed: [K, M] per batch. */
  transX: boolean;
  norm: GemvNorm;
  rstdOut: boolean;
  /** Per segment: a LoRA B in the epilogue. */
  lora: boolean[];
  epilogue: GemvEpilogue;
  /**
   * Loops over rows and vector chunks with constant trip counts (GPUs unroll them and keep the
   * accumulators in registers), or, on software adapters when rows × chunks > 8, with trip counts
   * from uniforms: lavapipe compiled the unrolled 8-row NF4 kernels in ~16 s of CPU each (minutes
   * per test file), the loops in ~2 s; unrolled small bodies run ~4× faster there. Same results.
   */
  unroll: boolean;
}

const PARAMS = /* wgsl */ `
struct P {
  M: u32, K: u32, ld: u32, eps: f32,
  n0: u32, n1: u32, n2: u32, ncols: u32,
  c0: u32, c1: u32, c2: u32, m0: u32,
  r: u32, scale: f32, ldu: u32, uoff0: u32,
  uoff1: u32, uoff2: u32, mc: u32, nch: u32,
  sx: u32, sw: u32, sout: u32, boff: u32,
  xm: u32, _p0: u32, _p1: u32, _p2: u32,
}
@group(0) @binding(0) var<uniform> p: P;
`;

/** Quantities reduced per row: acc (segment 0 or the selected one), acc of swiglu's up, Σx². */
function reduced(s: GemvSpec): number {
  return 1 + (s.epilogue === 'swiglu' ? 1 : 0) + (s.norm === 'compute' ? 1 : 0);
}

/** Workgroup memory of a GEMV kernel, in bytes. */
export function gemvWorkgroupBytes(s: GemvSpec): number {
  return reduced(s) * s.rows * WG * 4 + (isNf4Format(s.format) && s.vec > 1 ? 256 * 8 : 0);
}

/** Storage buffers a GEMV kernel binds (the device's per-stage limit applies; llama/decode.ts splits). */
export function gemvStorageBuffers(s: GemvSpec): number {
  const segs = s.epilogue === 'swiglu' ? 2 : s.segments;
  const perWeight = s.format === 'nf4dq' ? 4 : s.format === 'nf4' ? 2 : 1;
  const lora = s.lora.filter(Boolean).length;
  return (
    2 +
    (s.norm === 'none' ? 0 : s.norm === 'given' ? 2 : 1) +
    segs * perWeight +
    (lora ? 1 + lora : 0) +
    (s.rstdOut ? 1 : 0)
  );
}

export function gemvKernel(s: GemvSpec): string {
  const { format, rows: MC, vec, transX, norm, rstdOut, lora, epilogue, unroll } = s;
  const MCB = unroll ? `${MC}u` : 'p.mc';
  const vector = vec > 1;
  const chunks = vector ? vec / 4 : 1;
  const xVec = vector && !transX; // x read as vec4f
  let binding = 1;
  const decl: string[] = [];
  const bind = (name: string, type: string, rw = false) =>
    decl.push(`@group(0) @binding(${binding++}) var<storage, ${rw ? 'read_write' : 'read'}> ${name}: ${type};`);
  bind('X', xVec ? 'array<vec4f>' : 'array<f32>');
  if (norm !== 'none') bind('G', vector ? 'array<vec4f>' : 'array<f32>');
  if (norm === 'given') bind('RSTD_IN', 'array<f32>');
  const segs = epilogue === 'swiglu' ? 2 : s.segments;
  for (let k = 0; k < segs; k++) {
    const [code, next] = wgslWeightBindings(format, `W${k}`, vec, binding);
    decl.push(code);
    binding = next;
  }
  const anyLora = lora.some(Boolean);
  if (anyLora) bind('U', 'array<f32>');
  for (let k = 0; k < segs; k++) if (lora[k]) bind(`B${k}`, 'array<f32>');
  if (rstdOut) bind('RSTD_OUT', 'array<f32>', true);
  bind('OUT', 'array<f32>', true);

  const Q = reduced(s);
  const SS = Q - 1; // index of Σx² when norm === 'compute'
  // x row base xr (batch base included) and element k + 4j + i of the row.
  const xRow = transX ? 'xb + row' : 'xb + row * p.K';
  const xAt = (k: string) => (transX ? `X[xr + (${k}) * p.xm]` : `X[xr + ${k}]`);
  const xv = xVec
    ? 'X[(xr + k) / 4u + j]'
    : vector
      ? `vec4f(${[0, 1, 2, 3].map((i) => xAt(`k + 4u * j + ${i}u`)).join(', ')})`
      : xAt('k');
  const gIdx = vector ? 'k / 4u + j' : 'k';
  const xLoad = `
          let row = p.m0 + min(m, p.M - 1u);
          let xr = ${xRow};
          let xv = ${xv};${
            norm === 'compute'
              ? `
          ss[m] += ${vector ? 'dot(xv, xv)' : 'xv * xv'};`
              : ''
          }
          let xn = ${norm === 'compute' ? `xv * G[${gIdx}]` : norm === 'given' ? `(xv * rs[m]) * G[${gIdx}]` : 'xv'};`;

  // The streaming loop over k for the segments `which` (accumulator q per entry).
  const loop = (which: { k: number; q: number }[]): string => {
    const parts = which.map(({ k }) =>
      vector
        ? wgslWeightVec4s(format, `W${k}`, 'e', vec)
        : { pre: '', at: () => wgslWeightElement(format, `W${k}`, 'e'), scale: null },
    );
    const wDecl = parts.map((pt, i) => `let w${i} = ${pt.at('j')};`).join('\n          ');
    const accum = which
      .map(({ q }, i) => {
        const term = vector ? `dot(xn, w${i})` : `xn * w${i}`;
        const sc = parts[i]!.scale;
        return `acc[${q * MC}u + m] += ${sc ? `${sc} * ${term}` : term};`;
      })
      .join('\n            ');
    return `
      for (var k = ${vector ? `lane * ${vec}u` : 'lane'}; k < p.K; k += ${vector ? `${LANES * vec}u` : `${LANES}u`}) {
        let e = rb + k;
        ${parts
          .map((pt) => pt.pre)
          .filter(Boolean)
          .join('\n        ')}
        for (var j = 0u; j < ${unroll ? `${chunks}u` : 'p.nch'}; j++) {
          ${wDecl}
          for (var m = 0u; m < ${MCB}; m++) {${xLoad}
            ${accum}
          }
        }
      }`;
  };

  // LoRA partial sums: lanes take j ≡ lane (mod 32) of Σⱼ B[n, j]·u[m, j].
  const loraLoop = (k: number, q: number): string =>
    lora[k]
      ? `
      for (var j = lane; j < p.r; j += ${LANES}u) {
        let bv = p.scale * B${k}[n * p.r + j];
        for (var m = 0u; m < ${MCB}; m++) { acc[${q * MC}u + m] += bv * U[(p.m0 + min(m, p.M - 1u)) * p.ldu + p.uoff${k} + j]; }
      }`
      : '';

  // Main body: pick the segment of this column group.
  let body: string;
  if (epilogue === 'swiglu') {
    body = `
    let n = col;
    let rb = wb + n * p.K;${loop([
      { k: 0, q: 0 },
      { k: 1, q: 1 },
    ])}${loraLoop(0, 0)}${loraLoop(1, 1)}`;
  } else {
    body = Array.from({ length: segs }, (_, k) => {
      const cond =
        segs === 1 ? '' : k === 0 ? `if (col < p.n0)` : k === segs - 1 ? `else` : `else if (col < p.n0 + p.n1)`;
      const nExpr = k === 0 ? 'col' : k === 1 ? 'col - p.n0' : 'col - p.n0 - p.n1';
      return `${cond} {
      let n = ${nExpr};
      ocol = p.c${k} + n;
      let rb = wb + n * p.K;${loop([{ k, q: 0 }])}${loraLoop(k, 0)}
    }`;
    }).join(' ');
    body = `
    ${body}`;
  }

  const yOf = (q: number) => `red[(${q * MC}u + m) * ${WG}u + lid]${norm === 'compute' ? ' * rsm' : ''}`;
  const o = epilogue === 'swiglu' ? 'ob + (p.m0 + m) * p.ld + p.c0 + n' : 'ob + (p.m0 + m) * p.ld + ocol';
  const value =
    epilogue === 'swiglu'
      ? `silu(${yOf(0)}) * ${yOf(1)}`
      : epilogue === 'accumulate'
        ? `OUT[${o}] + ${yOf(0)}`
        : yOf(0);
  const store = `for (var m = 0u; m < ${MCB}; m++) {
      if (m >= p.M) { break; }${
        norm === 'compute'
          ? `
      let rsm = inverseSqrt(red[(${SS * MC}u + m) * ${WG}u + lid] / f32(p.K) + p.eps);${rstdOut ? '\n      if (col == 0u) { RSTD_OUT[p.m0 + m] = rsm; }' : ''}`
          : ''
      }
      OUT[${o}] = ${value};
    }`;
  const pairs = isNf4Format(format) && vector;

  return /* wgsl */ `${PARAMS}
${decl.join('\n')}
${wgslFormatHelpers([format])}
${pairs ? WGSL_NF4_PAIRS : ''}
var<workgroup> red: array<f32, ${Q * MC * WG}>;
fn silu(g: f32) -> f32 { return g * (1.0 / (1.0 + exp(-g))); }

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {${pairs ? WGSL_NF4_PAIRS_INIT : ''}
  let lane = lid % ${LANES}u;
  let col = (wid.x + wid.y * nwg.x) * ${GROUPS}u + lid / ${LANES}u;
  let b = wid.z + p.boff;
  let xb = b * p.sx;
  let wb = b * p.sw;
  let ob = b * p.sout;
  ${norm === 'given' ? `var rs: array<f32, ${MC}>;\n  for (var m = 0u; m < ${MCB}; m++) { rs[m] = RSTD_IN[p.m0 + min(m, p.M - 1u)]; }` : ''}
  var acc: array<f32, ${(epilogue === 'swiglu' ? 2 : 1) * MC}>;
  ${norm === 'compute' ? `var ss: array<f32, ${MC}>;` : ''}
  var ocol = 0u;
  if (col < p.ncols) {${body}
  }
  for (var i = 0u; i < ${epilogue === 'swiglu' ? 2 : 1}u * p.mc; i++) { red[i * ${WG}u + lid] = acc[i]; }
  ${norm === 'compute' ? `for (var m = 0u; m < ${MCB}; m++) { red[(${SS * MC}u + m) * ${WG}u + lid] = ss[m]; }` : ''}
  for (var s = ${LANES / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lane < s) {
      for (var i = 0u; i < ${Q}u * p.mc; i++) { red[i * ${WG}u + lid] += red[i * ${WG}u + lid + s]; }
    }
  }
  if (lane == 0u && col < p.ncols) {
    ${epilogue === 'swiglu' ? 'let n = col;' : '_ = ocol;'}
    ${store}
  }
}`;
}

export interface GemvOptions {
  /** Input rows [M, K] f32 (with `layout`, as the layout says). */
  x: Tensor;
  /** Weights [N_s, K], 1–3 of one format. */
  segments: readonly GemvWeight[];
  /** RMSNorm folded into the input: weight [K] f32 and eps; `rstd` [M] supplied instead of computed. */
  norm?: { weight: Tensor; eps: number; rstd?: Tensor };
  /** Writes the computed 1/rms of each row here ([M] f32; needs `norm` without `rstd`). */
  rstdOut?: Tensor;
  /** LoRA epilogue: u [M, ldu] (segment s at column uOffset[s]), B_s [N_s, r] or null (not adapted). */
  lora?: { u: Tensor; B: readonly (Tensor | null)[]; r: number; scale: number; uOffsets: readonly number[] };
  /** 'store' (default), 'accumulate' (out += y), 'swiglu' (2 segments of equal N: out = silu(y₀)·y₁). */
  epilogue?: GemvEpilogue;
  /** Output [M, ld] f32 (with 'accumulate' it is read and written). */
  out: Tensor;
  /** Output column of each segment's first output (default: side by side from 0; swiglu: [0, 0]). */
  outOffsets?: readonly number[];
  /**
   * Matmul layouts (one segment, store, no norm or LoRA): `batch` products [M, K]·[N, K]ᵀ, product b
   * reading x at b·sx (rows of K, or [K, M] with transX), the weight at b·sw, writing [M, N] at b·sout.
   */
  layout?: { M: number; N: number; K: number; transX: boolean; batch: number; sx: number; sw: number; sout: number };
}

function shapeOf(w: GemvWeight): [number, number] {
  return [w.shape[0]!, w.shape[1]!];
}

/** The problem a GEMV call describes, validated: one clear error for every inconsistent argument. */
function gemvProblem(o: GemvOptions): {
  format: WeightFormat;
  M: number;
  K: number;
  Ns: number[];
  ld: number;
  offsets: readonly number[];
  ncols: number;
} {
  const { x, segments, out, layout } = o;
  const epilogue = o.epilogue ?? 'store';
  const what = layout ? 'matmul GEMV' : 'decodeGemv';
  assertDtype(x, 'f32', `${what} x`);
  assertDtype(out, 'f32', `${what} out`);
  const S = segments.length;
  if (S < 1 || S > 3) throw new RangeError(`${what}: 1 to 3 weight segments, got ${S}`);
  if (layout && (S !== 1 || epilogue !== 'store' || o.norm || o.lora || o.rstdOut || o.outOffsets)) {
    throw new RangeError(`${what}: a matmul layout takes one segment, the store epilogue, no norm or LoRA`);
  }
  const format = weightFormatOf(segments[0]!);
  const shapes = layout ? [[layout.N, layout.K] as [number, number]] : segments.map(shapeOf);
  const K = shapes[0]![1];
  segments.forEach((w, k) => {
    if (weightFormatOf(w) !== format)
      throw new TypeError(`${what}: segment ${k} is ${weightFormatOf(w)}, segment 0 is ${format}`);
    if (shapes[k]![1] !== K) throw new RangeError(`${what}: segment ${k} has K = ${shapes[k]![1]}, segment 0 has ${K}`);
  });
  const Ns = shapes.map((s) => s[0]);
  let M: number;
  if (layout) {
    M = layout.M;
  } else {
    if (x.shape[x.shape.length - 1] !== K)
      throw new RangeError(`${what}: x [${x.shape.join(', ')}] does not end in K = ${K}`);
    M = x.numel / K;
  }
  if (epilogue === 'swiglu' && (S !== 2 || Ns[0] !== Ns[1]))
    throw new RangeError(`${what}: swiglu needs 2 segments (gate, up) of equal size`);
  const ld = layout ? Ns[0]! : out.shape[out.shape.length - 1]!;
  if (!layout && out.numel !== M * ld) throw new RangeError(`${what}: out [${out.shape.join(', ')}] for ${M} rows`);
  const offsets =
    o.outOffsets ?? (epilogue === 'swiglu' ? [0, 0] : Ns.map((_, k) => Ns.slice(0, k).reduce((a, b) => a + b, 0)));
  const width = epilogue === 'swiglu' ? Ns[0]! : 0;
  offsets.forEach((c, k) => {
    if (c + (epilogue === 'swiglu' ? width : Ns[k]!) > ld)
      throw new RangeError(`${what}: segment ${k} at column ${c} overflows out's ${ld} columns`);
  });
  if (o.rstdOut && (!o.norm || o.norm.rstd)) throw new RangeError(`${what}: rstdOut needs norm without a given rstd`);
  if (o.norm) {
    assertDtype(o.norm.weight, 'f32', `${what} norm weight`);
    if (o.norm.weight.numel !== K)
      throw new RangeError(`${what}: norm weight has ${o.norm.weight.numel} elements for K = ${K}`);
  }
  const lora = o.lora;
  if (lora) {
    lora.B.forEach((b, k) => {
      if (b && (b.shape[0] !== Ns[k] || b.shape[1] !== lora.r))
        throw new RangeError(
          `${what}: LoRA B of segment ${k} is [${b.shape.join(', ')}], expected [${Ns[k]}, ${lora.r}]`,
        );
    });
  }
  const ncols = epilogue === 'swiglu' ? width : Ns.reduce((a, b) => a + b, 0);
  return { format, M, K, Ns, ld, offsets, ncols };
}

/** vec4 loads per weight vector of `vec` elements (a scalar load counts as one). */
const gemvChunks = (vec: number): number => (vec > 1 ? vec / 4 : 1);

/**
 * The loop form a launch of `rows` rows and load width `vec` takes (GemvSpec.unroll): unrolled on
 * GPUs; on software adapters only while the body stays small (rows × vec4 chunks ≤ 8). The variant
 * table lists exactly the forms this can give.
 */
export function gemvUnroll(rows: number, vec: number, software: boolean): boolean {
  return !software || rows * gemvChunks(vec) <= 8;
}

/**
 * One GEMV (see the header), in dispatches of up to 8 rows. Segments must share K and format; the
 * total number of storage bindings must fit the device (llama/decode.ts splits a call that does not).
 */
export function gemv(o: GemvOptions): void {
  const { x, segments, out, layout, lora } = o;
  const epilogue = o.epilogue ?? 'store';
  const { format, M, K, Ns, ld, offsets, ncols } = gemvProblem(o);
  const loraOn = segments.map((_, k) => !!lora?.B[k]);
  const transX = !!layout?.transX;
  // Vector loads need every row base aligned: K, and the batch strides of x (read as vec4) and W.
  let vec = weightVecFor(format, K, 'gemv');
  if (layout && (layout.sw % vec !== 0 || (!transX && layout.sx % 4 !== 0))) vec = 1;
  const norm: GemvNorm = o.norm ? (o.norm.rstd ? 'given' : 'compute') : 'none';
  const batch = layout?.batch ?? 1;
  if (M === 0 || ncols === 0 || batch === 0) return;
  const grid = grid1d(ncols, GROUPS); // one workgroup per GROUPS columns, folded into y past the limit
  const buffers: Tensor[] = [x];
  if (o.norm) buffers.push(o.norm.weight);
  if (o.norm?.rstd) buffers.push(o.norm.rstd);
  for (const w of epilogue === 'swiglu' ? segments.slice(0, 2) : segments) buffers.push(...weightTensors(w));
  if (loraOn.some(Boolean)) {
    buffers.push(lora!.u);
    for (const b of lora!.B) if (b) buffers.push(b);
  }
  if (o.rstdOut) buffers.push(o.rstdOut);
  buffers.push(out);
  const maxZ = engine().dev.limits.maxComputeWorkgroupsPerDimension;
  const chunks = gemvChunks(vec);
  for (let m0 = 0; m0 < M; m0 += GEMV_MAX_ROWS) {
    const rows = Math.min(GEMV_MAX_ROWS, M - m0);
    const MC = rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : 8;
    const unroll = gemvUnroll(MC, vec, engine().dev.info.cpuKernels);
    const spec: GemvSpec = {
      format,
      segments: segments.length,
      rows: MC,
      vec,
      transX,
      norm,
      rstdOut: !!o.rstdOut,
      lora: loraOn,
      epilogue,
      unroll,
    };
    for (let b0 = 0; b0 < batch; b0 += maxZ) {
      const u = new Uniforms(28)
        .u32(rows)
        .u32(K)
        .u32(ld)
        .f32(o.norm?.eps ?? 0)
        .u32(Ns[0] ?? 0)
        .u32(Ns[1] ?? 0)
        .u32(Ns[2] ?? 0)
        .u32(ncols)
        .u32(offsets[0] ?? 0)
        .u32(offsets[1] ?? 0)
        .u32(offsets[2] ?? 0)
        .u32(m0)
        .u32(lora?.r ?? 0)
        .f32(lora?.scale ?? 0)
        .u32(lora ? lora.u.shape[lora.u.shape.length - 1]! : 0)
        .u32(lora?.uOffsets[0] ?? 0)
        .u32(lora?.uOffsets[1] ?? 0)
        .u32(lora?.uOffsets[2] ?? 0)
        .u32(MC)
        .u32(chunks)
        .u32(layout?.sx ?? 0)
        .u32(layout?.sw ?? 0)
        .u32(layout?.sout ?? 0)
        .u32(b0)
        .u32(M)
        .u32(0)
        .u32(0)
        .u32(0);
      GEMV.dispatch(spec, buffers, [grid[0], grid[1], Math.min(maxZ, batch - b0)], u);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Variants

/** 'a', 'a and b', 'a, b and c'. */
function andList(names: string[]): string {
  return names.length > 1 ? `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}` : names[0]!;
}

type FusedCase = Pick<GemvSpec, 'segments' | 'transX' | 'norm' | 'rstdOut' | 'lora' | 'epilogue'>;

/**
 * The fused configurations callers launch: matmul and nf4Linear (one segment, store), and the decode
 * step (llama/decode.ts): each linear group without LoRA, the down projection over the LoRA A of the
 * group's adapted modules (norm folded, rstd out) and the group with those modules' B, and the
 * single-segment pieces it splits a group into when the group's bindings exceed the device's
 * storage-buffer limit.
 */
const GEMV_CASES: { what: string; spec: FusedCase }[] = [
  {
    what: 'matmul',
    spec: { segments: 1, transX: false, norm: 'none', rstdOut: false, lora: [false], epilogue: 'store' },
  },
  {
    what: 'matmul, x transposed',
    spec: { segments: 1, transX: true, norm: 'none', rstdOut: false, lora: [false], epilogue: 'store' },
  },
  {
    what: 'qkv, norm folded',
    spec: {
      segments: 3,
      transX: false,
      norm: 'compute',
      rstdOut: false,
      lora: [false, false, false],
      epilogue: 'store',
    },
  },
  {
    what: 'LoRA A, norm folded, rstd out',
    spec: {
      segments: 3,
      transX: false,
      norm: 'compute',
      rstdOut: true,
      lora: [false, false, false],
      epilogue: 'store',
    },
  },
  {
    what: 'o/down, accumulate',
    spec: { segments: 1, transX: false, norm: 'none', rstdOut: false, lora: [false], epilogue: 'accumulate' },
  },
  {
    what: 'o/down, accumulate, LoRA',
    spec: { segments: 1, transX: false, norm: 'none', rstdOut: false, lora: [true], epilogue: 'accumulate' },
  },
  {
    what: 'gate/up swiglu, norm folded',
    spec: { segments: 2, transX: false, norm: 'compute', rstdOut: false, lora: [false, false], epilogue: 'swiglu' },
  },
  {
    what: 'gate/up swiglu, rstd given, LoRA',
    spec: { segments: 2, transX: false, norm: 'given', rstdOut: false, lora: [true, true], epilogue: 'swiglu' },
  },
  {
    what: 'lm head or a split segment, norm folded',
    spec: { segments: 1, transX: false, norm: 'compute', rstdOut: false, lora: [false], epilogue: 'store' },
  },
  // LoRA A of 1 or 2 adapted modules of a group (3: above).
  ...[1, 2].map((segments) => ({
    what: `LoRA A of ${segments} module${segments > 1 ? 's' : ''}, norm folded, rstd out`,
    spec: {
      segments,
      transX: false,
      norm: 'compute' as const,
      rstdOut: true,
      lora: Array<boolean>(segments).fill(false),
      epilogue: 'store' as const,
    },
  })),
  // Every non-empty subset of q, k, v with LoRA.
  ...[1, 2, 3, 4, 5, 6, 7]
    .map((bits) => [!!(bits & 1), !!(bits & 2), !!(bits & 4)])
    .map((lora) => ({
      what: `qkv, rstd given, LoRA ${andList(['q', 'k', 'v'].filter((_, k) => lora[k]))}`,
      spec: { segments: 3, transX: false, norm: 'given' as const, rstdOut: false, lora, epilogue: 'store' as const },
    })),
  // LoRA on gate or up only (both: above).
  ...[
    [true, false],
    [false, true],
  ].map((lora) => ({
    what: `gate/up swiglu, rstd given, LoRA ${lora[0] ? 'gate' : 'up'}`,
    spec: { segments: 2, transX: false, norm: 'given' as const, rstdOut: false, lora, epilogue: 'swiglu' as const },
  })),
  // A split segment of a group with LoRA on some module.
  ...[false, true].map((b) => ({
    what: `split segment, rstd given${b ? ', LoRA' : ''}`,
    spec: { segments: 1, transX: false, norm: 'given' as const, rstdOut: false, lora: [b], epilogue: 'store' as const },
  })),
];

const GEMV_FORMATS: WeightFormat[] = ['f32', 'bf16', 'f16', 'nf4', 'nf4dq'];

/** The configuration names of the fused cases, by their canonical key. */
const CASE_NAMES = new Map(GEMV_CASES.map((c) => [specKey('', c.spec), c.what]));

function fusedCaseOf(s: GemvSpec): FusedCase {
  const { segments, transX, norm, rstdOut, lora, epilogue } = s;
  return { segments, transX, norm, rstdOut, lora, epilogue };
}

/**
 * Every weight format × rows × load width × the loop forms a launch can take there (gemvUnroll, on a
 * GPU and on a software adapter) × the fused configurations callers use.
 */
const GEMV = kernelFamily<GemvSpec>({
  family: 'gemv',
  specs: () => {
    const out: GemvSpec[] = [];
    for (const format of GEMV_FORMATS) {
      const vecs = [...new Set([1, weightVecFor(format, 32, 'gemv'), weightVecFor(format, 8, 'gemv')])];
      for (const rows of [1, 2, 4, 8])
        for (const vec of vecs)
          for (const unroll of new Set([false, true].map((software) => gemvUnroll(rows, vec, software))))
            for (const c of GEMV_CASES) out.push({ format, rows, vec, unroll, ...c.spec });
    }
    return out;
  },
  code: gemvKernel,
  name: (s) =>
    `${s.format} rows ${s.rows} vec ${s.vec}${s.unroll ? '' : ' loops'}: ${CASE_NAMES.get(specKey('', fusedCaseOf(s)))!}`,
  workgroupBytes: gemvWorkgroupBytes,
});

/** The registered GEMV variants (the family's variant table). */
export function gemvVariants(): KernelVariant[] {
  return kernelVariants().filter((v) => v.family === GEMV.family);
}
