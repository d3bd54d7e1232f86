// Fused kernels of the decode step (a few rows: one token per sequence), where every weight is read
// once per step and the cost is memory traffic plus the number of dispatches.
//
// decodeGemv: y[m, ·] = epilogue(x̂[m, ·] · [W₀; W₁; W₂]ᵀ (+ LoRA)) for M ≤ 8 rows per dispatch.
//   - x̂ = x, or RMSNorm(x)·g folded in: the sum of squares is accumulated alongside the dot
//     products (every column group reads the whole row of x anyway) and 1/rms applied at the end;
//     or, with `rstd` given, x·rstd·g on the fly (the LoRA path: its down projection computed rstd).
//   - up to 3 weight segments with the same K (q/k/v, gate/up) form one logical weight [ΣN, K]:
//     one dispatch, no concatenated copy. Each segment: f32, packed bf16/f16, or NF4 (plain or
//     double-quantized absmax), all of one kind per dispatch.
//   - LoRA in the epilogue: + s·Σⱼ B[n, j]·u[m, j] (u = x̂·Aᵀ from a previous decodeGemv over the A
//     matrices), summed by the same lanes as the dot product (no extra dispatch, no y round trip).
//   - epilogues: store (at a column offset per segment), accumulate into the output (residual
//     add in place: x += o_proj(…)), swiglu (2 segments gate/up: y = silu(gate)·up).
//   Layout: 256 threads = 8 column groups of 32 lanes; a group owns one output column (a weight row
//   of each needed segment) and streams it with 16-byte loads (vec4 of f32, 8 packed halves, or 32
//   NF4 codes with one absmax), the lanes reduce through workgroup memory. M is compiled as 1, 2, 4
//   or 8 accumulators (rows past M read row M−1 and are not stored).
//   Unaligned K (not a multiple of 4 / 8 / 32) takes a scalar loop: correct for any shape, slower.
//   Flash-decoding note: attention stays in flashAttention (kernels/attention.ts).
//
// ropeAppend: RoPE on q and k of the step's tokens and the K/V cache append in one kernel. Row b's
//   token t sits at cache position L + t, its RoPE position is max(0, L + t − start_b) (the cache's
//   left padding), L read from a GPU buffer (the cache length), so the step's uniforms and bind
//   groups do not change from token to token. The rotation is the rope kernel's arithmetic.
import { Tensor, engine } from '../engine/tensor.js';
import { Uniforms, WGSL_HALF, assertDtype, dispatch, grid1d, specKey } from './common.js';
import { NF4_CODE, isDoubleQuant, type Nf4Weight } from './nf4.js';
import type { RopeTables } from './rope.js';

/** A linear weight in HF layout [out, in]: dense (f32, bf16, f16) or NF4. */
export type GemvWeight = Tensor | Nf4Weight;

type WKind = 'f32' | 'bf16' | 'f16' | 'nf4' | 'nf4dq';

/** Rows per dispatch (accumulators per thread). */
export const DECODE_GEMV_MAX_ROWS = 8;
const LANES = 32;
const GROUPS = 8;
const WG = LANES * GROUPS;

function kindOf(w: GemvWeight): WKind {
  if (w instanceof Tensor) {
    if (w.dtype === 'f32' || w.dtype === 'bf16' || w.dtype === 'f16') return w.dtype;
    throw new TypeError(`decodeGemv: weight dtype ${w.dtype} is not f32, bf16 or f16`);
  }
  return isDoubleQuant(w.absmax) ? 'nf4dq' : 'nf4';
}

function shapeOf(w: GemvWeight): [number, number] {
  return w instanceof Tensor ? [w.shape[0]!, w.shape[1]!] : [w.shape[0], w.shape[1]];
}

/** Elements per lane per iteration on the vector path. */
function widthOf(kind: WKind): number {
  return kind === 'f32' ? 4 : kind === 'nf4' || kind === 'nf4dq' ? 32 : 8;
}

function weightTensors(w: GemvWeight): Tensor[] {
  if (w instanceof Tensor) return [w];
  return isDoubleQuant(w.absmax) ? [w.codes, w.absmax.qabsmax, w.absmax.absmaxScale, w.absmax.absmaxOffset] : [w.codes, w.absmax];
}

/** Storage bindings one segment's weight takes. */
export function weightBindings(w: GemvWeight): number {
  return weightTensors(w).length;
}

export interface DecodeGemvOptions {
  /** Input rows [M, K] f32. */
  x: Tensor;
  /** Weights [N_s, K], 1–3 of one kind. */
  segments: readonly GemvWeight[];
  /** RMSNorm folded into the input: weight [K] f32 and eps; `rstd` [M] supplied instead of computed. */
  norm?: { weight: Tensor; eps: number; rstd?: Tensor };
  /** Writes the computed 1/rms of each row here ([M] f32; needs `norm` without `rstd`). */
  rstdOut?: Tensor;
  /** LoRA epilogue: u [M, ldu] (segment s at column uOffset[s]), B_s [N_s, r] or null (not adapted). */
  lora?: { u: Tensor; B: readonly (Tensor | null)[]; r: number; scale: number; uOffsets: readonly number[] };
  /** 'store' (default), 'accumulate' (out += y), 'swiglu' (2 segments of equal N: out = silu(y₀)·y₁). */
  epilogue?: 'store' | 'accumulate' | 'swiglu';
  /** Output [M, ld] f32 (with 'accumulate' it is read and written). */
  out: Tensor;
  /** Output column of each segment's first output (default: side by side from 0; swiglu: [0, 0]). */
  outOffsets?: readonly number[];
}

interface GemvSpec {
  kind: WKind;
  S: number;
  MC: number;
  aligned: boolean;
  norm: 'none' | 'compute' | 'given';
  rstdOut: boolean;
  lora: boolean[];
  epilogue: 'store' | 'accumulate' | 'swiglu';
  /**
   * Loops over rows and vector chunks with constant trip counts (GPUs unroll them and keep the
   * accumulators in registers), or, on software adapters when rows × chunks > 8, with trip counts
   * from uniforms: lavapipe compiled the unrolled 8-row NF4 kernels in ~16 s of CPU each (minutes
   * per test file), the loops in ~2 s; unrolled small bodies run ~4× faster there. Same results.
   */
  unroll: boolean;
}

const NF4_BITS = NF4_CODE.map((v) => new Uint32Array(new Float32Array([v]).buffer)[0]!);

function gemvKernel(s: GemvSpec): string {
  const { kind, S, MC, aligned, norm, rstdOut, lora, epilogue, unroll } = s;
  const MCB = unroll ? `${MC}u` : 'p.mc';
  const nf4 = kind === 'nf4' || kind === 'nf4dq';
  const half = kind === 'bf16' || kind === 'f16';
  const W = widthOf(kind);
  const V4 = W / 4; // vec4s of x per lane-iteration
  let binding = 1;
  const decl: string[] = [];
  const bind = (name: string, type: string, rw = false) => decl.push(`@group(0) @binding(${binding++}) var<storage, ${rw ? 'read_write' : 'read'}> ${name}: ${type};`);
  bind('X', aligned ? 'array<vec4f>' : 'array<f32>');
  if (norm !== 'none') bind('G', aligned ? 'array<vec4f>' : 'array<f32>');
  if (norm === 'given') bind('RSTD_IN', 'array<f32>');
  const segs = epilogue === 'swiglu' ? 2 : S;
  for (let k = 0; k < segs; k++) {
    if (kind === 'f32') bind(`W${k}`, aligned ? 'array<vec4f>' : 'array<f32>');
    else if (half) bind(`W${k}`, aligned ? 'array<vec4u>' : 'array<u32>');
    else {
      bind(`C${k}`, aligned ? 'array<vec4u>' : 'array<u32>');
      if (kind === 'nf4') bind(`A${k}`, 'array<f32>');
      else {
        bind(`QA${k}`, 'array<u32>');
        bind(`DS${k}`, 'array<f32>');
        bind(`DO${k}`, 'array<f32>');
      }
    }
  }
  const anyLora = lora.some(Boolean);
  if (anyLora) bind('U', 'array<f32>');
  for (let k = 0; k < segs; k++) if (lora[k]) bind(`B${k}`, 'array<f32>');
  if (rstdOut) bind('RSTD_OUT', 'array<f32>', true);
  bind('OUT', 'array<f32>', true);

  // Quantities reduced per row: acc (segment A), acc2 (swiglu's up), ss (sum of squares).
  const Q = 1 + (epilogue === 'swiglu' ? 1 : 0) + (norm === 'compute' ? 1 : 0);
  const SS = Q - 1; // index of ss when norm === 'compute'
  const absmaxFns = nf4
    ? Array.from({ length: segs }, (_, k) =>
        kind === 'nf4'
          ? `fn absmax${k}(b: u32) -> f32 { return A${k}[b]; }`
          : `fn absmax${k}(b: u32) -> f32 { let q = i32(QA${k}[b >> 2u] << (24u - 8u * (b & 3u))) >> 24u; return f32(q) * DS${k}[b / 256u] + DO${k}[0]; }`,
      ).join('\n')
    : '';
  // Source-level loops over rows and vector chunks (not unrolled by hand): GPU compilers unroll the
  // constant trip counts; unrolled source made lavapipe spend minutes compiling the 8-row NF4 kernels.
  const xIdx = aligned ? '(xr + k) / 4u + j' : 'xr + k';
  const gIdx = aligned ? 'k / 4u + j' : 'k';
  const xLoad = `
          let xv = X[${xIdx}];${norm === 'compute' ? `
          ss[m] += ${aligned ? 'dot(xv, xv)' : 'xv * xv'};` : ''}
          let xn = ${norm === 'compute' ? `xv * G[${gIdx}]` : norm === 'given' ? `(xv * rs[m]) * G[${gIdx}]` : 'xv'};`;

  // Weight chunk j (vec4, or one value unaligned) of segment k at element offset e = row base + k.
  const wChunk = (k: number): { pre: string; w: string; scale: string | null; chunks: number } => {
    if (kind === 'f32') return { pre: '', w: aligned ? `W${k}[e / 4u]` : `W${k}[e]`, scale: null, chunks: 1 };
    if (half) {
      const bf = kind === 'bf16';
      if (!aligned) return { pre: '', w: `half_word_get(W${k}[e >> 1u], e, ${bf})`, scale: null, chunks: 1 };
      const un = (x: string) => (bf ? `vec2f(bitcast<f32>(${x} << 16u), bitcast<f32>(${x} & 0xffff0000u))` : `unpack2x16float(${x})`);
      return { pre: `let q${k} = W${k}[e / 8u];`, w: `vec4f(${un(`q${k}[2u * j]`)}, ${un(`q${k}[2u * j + 1u]`)})`, scale: null, chunks: 2 };
    }
    if (!aligned) return { pre: '', w: `lut[(C${k}[e >> 3u] >> (4u * (e & 7u))) & 15u].x * absmax${k}(e >> 6u)`, scale: null, chunks: 1 };
    // 32 codes: word j / 2, its low (j even) or high (j odd) two bytes → 4 values.
    return {
      pre: `let q${k} = C${k}[e / 32u];\n        let am${k} = absmax${k}(e / 64u);`,
      w: `vec4f(lut[(q${k}[j / 2u] >> (16u * (j & 1u))) & 255u], lut[(q${k}[j / 2u] >> (16u * (j & 1u) + 8u)) & 255u])`,
      scale: `am${k}`,
      chunks: 8,
    };
  };

  // The streaming loop over k for the segments `which` (accumulator q per entry).
  const loop = (which: { k: number; q: number }[]): string => {
    const step = aligned ? `${LANES * W}u` : `${LANES}u`;
    const start = aligned ? `lane * ${W}u` : 'lane';
    const parts = which.map(({ k }) => wChunk(k));
    const chunks = aligned ? parts[0]!.chunks : 1;
    const wDecl = parts.map((pt, i) => `let w${i} = ${pt.w};`).join('\n          ');
    const accum = which
      .map(({ q }, i) => {
        const term = aligned ? `dot(xn, w${i})` : `xn * w${i}`;
        const sc = parts[i]!.scale;
        return `acc[${q * MC}u + m] += ${sc ? `${sc} * ${term}` : term};`;
      })
      .join('\n            ');
    return `
      for (var k = ${start}; k < p.K; k += ${step}) {
        let e = rb + k;
        ${parts.map((pt) => pt.pre).filter(Boolean).join('\n        ')}
        for (var j = 0u; j < ${unroll ? `${chunks}u` : 'p.nch'}; j++) {
          ${wDecl}
          for (var m = 0u; m < ${MCB}; m++) {
            let xr = (p.m0 + min(m, p.M - 1u)) * p.K;${xLoad}
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
    let rb = n * p.K;${loop([{ k: 0, q: 0 }, { k: 1, q: 1 }])}${loraLoop(0, 0)}${loraLoop(1, 1)}`;
  } else {
    const branches = Array.from({ length: S }, (_, k) => {
      // One segment: its block alone, no condition.
      const cond = S === 1 ? '' : k === 0 ? `if (col < p.n0)` : k === S - 1 ? `else` : `else if (col < p.n0 + p.n1)`;
      const nExpr = k === 0 ? 'col' : k === 1 ? 'col - p.n0' : 'col - p.n0 - p.n1';
      return `${cond} {
      let n = ${nExpr};
      ocol = p.c${k} + n;
      let rb = n * p.K;${loop([{ k, q: 0 }])}${loraLoop(k, 0)}
    }`;
    }).join(' ');
    body = `
    ${branches}`;
  }

  const yOf = (q: number) => `red[(${q * MC}u + m) * ${WG}u + lid]${norm === 'compute' ? ' * rsm' : ''}`;
  const o = epilogue === 'swiglu' ? '(p.m0 + m) * p.ld + p.c0 + n' : '(p.m0 + m) * p.ld + ocol';
  const value = epilogue === 'swiglu' ? `silu(${yOf(0)}) * ${yOf(1)}` : epilogue === 'accumulate' ? `OUT[${o}] + ${yOf(0)}` : yOf(0);
  const store = `for (var m = 0u; m < ${MCB}; m++) {
      if (m >= p.M) { break; }${
        norm === 'compute'
          ? `
      let rsm = inverseSqrt(red[(${SS * MC}u + m) * ${WG}u + lid] / f32(p.K) + p.eps);${rstdOut ? '\n      if (col == 0u) { RSTD_OUT[p.m0 + m] = rsm; }' : ''}`
          : ''
      }
      OUT[${o}] = ${value};
    }`;

  const lutInit = nf4
    ? `
  {
    let lo = bitcast<f32>(NF4_BITS[lid & 15u]);
    let hi = bitcast<f32>(NF4_BITS[(lid >> 4u) & 15u]);
    lut[lid] = vec2f(lo, hi);
  }
  workgroupBarrier();`
    : '';

  return /* wgsl */ `
struct P {
  M: u32, K: u32, ld: u32, eps: f32,
  n0: u32, n1: u32, n2: u32, ncols: u32,
  c0: u32, c1: u32, c2: u32, m0: u32,
  r: u32, scale: f32, ldu: u32, uoff0: u32,
  uoff1: u32, uoff2: u32, mc: u32, nch: u32,
}
@group(0) @binding(0) var<uniform> p: P;
${decl.join('\n')}
${WGSL_HALF}
${nf4 ? `const NF4_BITS = array<u32, 16>(${NF4_BITS.map((b) => `0x${b.toString(16)}u`).join(', ')});\nvar<workgroup> lut: array<vec2f, 256>;` : ''}
${absmaxFns}
var<workgroup> red: array<f32, ${Q * MC * WG}>;
fn silu(g: f32) -> f32 { return g * (1.0 / (1.0 + exp(-g))); }

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {${lutInit}
  let lane = lid % ${LANES}u;
  let col = (wid.x + wid.y * nwg.x) * ${GROUPS}u + lid / ${LANES}u;
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

/**
 * One fused decode GEMV (see the header). Segments must share K and kind; the total number of
 * storage bindings must fit the device (splitDecodeGemv does that for a caller).
 */
export function decodeGemv(o: DecodeGemvOptions): void {
  const { x, segments, out } = o;
  const epilogue = o.epilogue ?? 'store';
  assertDtype(x, 'f32', 'decodeGemv x');
  assertDtype(out, 'f32', 'decodeGemv out');
  const S = segments.length;
  if (S < 1 || S > 3) throw new RangeError(`decodeGemv: 1 to 3 weight segments, got ${S}`);
  const kind = kindOf(segments[0]!);
  const shapes = segments.map(shapeOf);
  const K = shapes[0]![1];
  segments.forEach((w, k) => {
    if (kindOf(w) !== kind) throw new TypeError(`decodeGemv: segment ${k} is ${kindOf(w)}, segment 0 is ${kind}`);
    if (shapes[k]![1] !== K) throw new RangeError(`decodeGemv: segment ${k} has K = ${shapes[k]![1]}, segment 0 has ${K}`);
  });
  if (x.shape[x.shape.length - 1] !== K) throw new RangeError(`decodeGemv: x [${x.shape.join(', ')}] does not end in K = ${K}`);
  const M = x.numel / K;
  const Ns = shapes.map((s) => s[0]);
  if (epilogue === 'swiglu' && (S !== 2 || Ns[0] !== Ns[1])) throw new RangeError('decodeGemv: swiglu needs 2 segments (gate, up) of equal size');
  const ld = out.shape[out.shape.length - 1]!;
  if (out.numel !== M * ld) throw new RangeError(`decodeGemv: out [${out.shape.join(', ')}] for ${M} rows`);
  const offsets = o.outOffsets ?? (epilogue === 'swiglu' ? [0, 0] : Ns.map((_, k) => Ns.slice(0, k).reduce((a, b) => a + b, 0)));
  const width = epilogue === 'swiglu' ? Ns[0]! : 0;
  offsets.forEach((c, k) => {
    if (c + (epilogue === 'swiglu' ? width : Ns[k]!) > ld) throw new RangeError(`decodeGemv: segment ${k} at column ${c} overflows out's ${ld} columns`);
  });
  if (o.rstdOut && (!o.norm || o.norm.rstd)) throw new RangeError('decodeGemv: rstdOut needs norm without a given rstd');
  if (o.norm) {
    assertDtype(o.norm.weight, 'f32', 'decodeGemv norm weight');
    if (o.norm.weight.numel !== K) throw new RangeError(`decodeGemv: norm weight has ${o.norm.weight.numel} elements for K = ${K}`);
  }
  const lora = o.lora;
  const loraOn = segments.map((_, k) => !!lora?.B[k]);
  if (lora) {
    lora.B.forEach((b, k) => {
      if (b && (b.shape[0] !== Ns[k] || b.shape[1] !== lora.r)) throw new RangeError(`decodeGemv: LoRA B of segment ${k} is [${b.shape.join(', ')}], expected [${Ns[k]}, ${lora.r}]`);
    });
  }
  const aligned = K % widthOf(kind) === 0 && K > 0;
  const norm = o.norm ? (o.norm.rstd ? 'given' : 'compute') : 'none';
  const ncols = epilogue === 'swiglu' ? width : Ns.reduce((a, b) => a + b, 0);
  if (M === 0 || ncols === 0) return;
  const grid = grid1d(ncols, GROUPS); // one workgroup per GROUPS columns, folded into y past the limit
  const buffers: Tensor[] = [x];
  if (o.norm) buffers.push(o.norm.weight);
  if (o.norm?.rstd) buffers.push(o.norm.rstd);
  for (const w of epilogue === 'swiglu' ? segments.slice(0, 2) : segments) buffers.push(...weightTensors(w));
  if (loraOn.some(Boolean)) {
    buffers.push(lora!.u);
    lora!.B.forEach((b) => b && buffers.push(b));
  }
  if (o.rstdOut) buffers.push(o.rstdOut);
  buffers.push(out);
  for (let m0 = 0; m0 < M; m0 += DECODE_GEMV_MAX_ROWS) {
    const rows = Math.min(DECODE_GEMV_MAX_ROWS, M - m0);
    const MC = rows <= 1 ? 1 : rows <= 2 ? 2 : rows <= 4 ? 4 : 8;
    // Software adapters: unrolled only while the body stays small (see GemvSpec.unroll).
    const chunks = aligned ? widthOf(kind) / 4 : 1;
    const unroll = !engine().dev.info.cpuKernels || MC * chunks <= 8;
    const spec: GemvSpec = { kind, S, MC, aligned, norm, rstdOut: !!o.rstdOut, lora: loraOn, epilogue, unroll };
    const u = new Uniforms(24)
      .u32(rows).u32(K).u32(ld).f32(o.norm?.eps ?? 0)
      .u32(Ns[0] ?? 0).u32(Ns[1] ?? 0).u32(Ns[2] ?? 0).u32(ncols)
      .u32(offsets[0] ?? 0).u32(offsets[1] ?? 0).u32(offsets[2] ?? 0).u32(m0)
      .u32(lora?.r ?? 0).f32(lora?.scale ?? 0).u32(lora ? lora.u.shape[lora.u.shape.length - 1]! : 0).u32(lora?.uOffsets[0] ?? 0)
      .u32(lora?.uOffsets[1] ?? 0).u32(lora?.uOffsets[2] ?? 0).u32(MC).u32(chunks);
    dispatch(specKey('decode.gemv', spec), () => gemvKernel(spec), buffers, grid, u);
  }
}

// ---------------------------------------------------------------------------------------------
// RoPE + KV-cache append

/**
 * The rope-append kernel; with `kvF16` the cache holds f16 packed two per u32 (the layout the
 * attention kernels unpack), so each thread handles two adjacent pairs (i, i + 1 with i even; Dh/2
 * is even since Dh is a multiple of 4) and writes whole words.
 */
function ropeAppendKernel(kvF16: boolean): string {
  const per = kvF16 ? 2 : 1;
  const cacheType = kvF16 ? 'u32' : 'f32';
  // Stores x1' (at dst) and x2' (at dst + half) for the `per` adjacent pairs starting at dst.
  const store = (buf: string, a: string, b: string) =>
    kvF16
      ? `${buf}[dst / 2u] = pack2x16float(vec2f(${a}[0], ${a}[1]));\n    ${buf}[(dst + p.half) / 2u] = pack2x16float(vec2f(${b}[0], ${b}[1]));`
      : `${buf}[dst] = ${a}[0];\n    ${buf}[dst + p.half] = ${b}[0];`;
  return /* wgsl */ `
struct P {
  rows: u32, T: u32, hq: u32, hkv: u32,
  half: u32, smax: u32, max_pos: u32, nan_bits: u32,
  ldq: u32, offq: u32, ldk: u32, offk: u32,
  ldv: u32, offv: u32, has_starts: u32, _pad: u32,
}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> Q: array<f32>;
@group(0) @binding(2) var<storage, read> K: array<f32>;
@group(0) @binding(3) var<storage, read> V: array<f32>;
@group(0) @binding(4) var<storage, read> COS: array<f32>;
@group(0) @binding(5) var<storage, read> SIN: array<f32>;
@group(0) @binding(6) var<storage, read> LEN: array<u32>;
@group(0) @binding(7) var<storage, read> STARTS: array<i32>;
@group(0) @binding(8) var<storage, read_write> QOUT: array<f32>;
@group(0) @binding(9) var<storage, read_write> KC: array<${cacheType}>;
@group(0) @binding(10) var<storage, read_write> VC: array<${cacheType}>;
const PER: u32 = ${per}u;
// One thread per (token row, head slot, ${per} pair${per > 1 ? 's' : ''} i < Dh/2); head slots: Hq query heads,
// Hkv key heads, Hkv value heads (copied, not rotated).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = gid.x + gid.y * nwg.x * 256u;
  let slots = p.hq + 2u * p.hkv;
  let groups = p.half / PER;
  if (t >= p.rows * slots * groups) { return; }
  let i0 = (t % groups) * PER;
  let slot = (t / groups) % slots;
  let row = t / (groups * slots);           // b · T + tt
  let b = row / p.T;
  let tt = row % p.T;
  let dh = 2u * p.half;
  let cachePos = LEN[0] + tt;
  var start = 0;
  if (p.has_starts != 0u) { start = STARTS[b]; }
  let pos = max(0, i32(cachePos) - start);
  var r1: array<f32, ${per}>;
  var r2: array<f32, ${per}>;
  if (slot >= p.hq + p.hkv) {
    let h = slot - p.hq - p.hkv;
    let src = row * p.ldv + p.offv + h * dh + i0;
    let dst = ((b * p.smax + cachePos) * p.hkv + h) * dh + i0;
    for (var e = 0u; e < PER; e++) {
      r1[e] = V[src + e];
      r2[e] = V[src + e + p.half];
    }
    ${store('VC', 'r1', 'r2')}
    return;
  }
  let ok = u32(pos) < p.max_pos;
  let nan = bitcast<f32>(p.nan_bits);
  var base: u32;
  if (slot < p.hq) {
    base = row * p.ldq + p.offq + slot * dh + i0;
  } else {
    base = row * p.ldk + p.offk + (slot - p.hq) * dh + i0;
  }
  for (var e = 0u; e < PER; e++) {
    var c = 0.0;
    var s = 0.0;
    if (ok) {
      c = COS[u32(pos) * p.half + i0 + e];
      s = SIN[u32(pos) * p.half + i0 + e];
    }
    var x1: f32;
    var x2: f32;
    if (slot < p.hq) {
      x1 = Q[base + e];
      x2 = Q[base + e + p.half];
    } else {
      x1 = K[base + e];
      x2 = K[base + e + p.half];
    }
    r1[e] = select(nan, x1 * c - x2 * s, ok);
    r2[e] = select(nan, x2 * c + x1 * s, ok);
  }
  if (slot < p.hq) {
    let o = (row * p.hq + slot) * dh + i0;
    for (var e = 0u; e < PER; e++) {
      QOUT[o + e] = r1[e];
      QOUT[o + e + p.half] = r2[e];
    }
  } else {
    let dst = ((b * p.smax + cachePos) * p.hkv + (slot - p.hq)) * dh + i0;
    ${store('KC', 'r1', 'r2')}
  }
}`;
}

/** One of q/k/v as the rows of a (possibly wider) buffer: element (row, j) at row·ld + offset + j. */
export interface RowView {
  t: Tensor;
  ld: number;
  offset: number;
}

export interface RopeAppendOptions {
  /** Batch rows B and tokens per row T (rows of q/k/v: b·T + t). */
  B: number;
  T: number;
  heads: number;
  kvHeads: number;
  q: RowView;
  k: RowView;
  v: RowView;
  rope: RopeTables;
  /** u32 [≥1]: the cache length L (position of the first new token). */
  length: Tensor;
  /** i32 [B]: each row's first real position (left padding); absent = all 0. */
  starts?: Tensor;
  /** Cache tensors [B, Smax, Hkv, Dh], f32 or f16 (both the same dtype). */
  kCache: Tensor;
  vCache: Tensor;
}

let noStarts: Tensor | null = null;

/**
 * Rotates q and k of B·T new tokens (RoPE at position max(0, L + t − start_b)) and appends k and v
 * to the cache at positions L..L+T−1. Returns the rotated q [B, T, H, Dh]. One dispatch.
 */
export function ropeAppend(o: RopeAppendOptions): Tensor {
  const { B, T, heads, kvHeads, rope } = o;
  const dh = rope.headDim;
  const [cb, smax, ch, cdh] = o.kCache.shape as [number, number, number, number];
  if (cb !== B || ch !== kvHeads || cdh !== dh) throw new RangeError(`ropeAppend: cache [${o.kCache.shape.join(', ')}] for B ${B}, Hkv ${kvHeads}, Dh ${dh}`);
  for (const [name, v, width] of [['q', o.q, heads * dh], ['k', o.k, kvHeads * dh], ['v', o.v, kvHeads * dh]] as const) {
    assertDtype(v.t, 'f32', `ropeAppend ${name}`);
    if (v.offset + width > v.ld || (B * T - 1) * v.ld + v.offset + width > v.t.numel) throw new RangeError(`ropeAppend: ${name} view (ld ${v.ld}, offset ${v.offset}) does not hold ${B * T} rows of ${width}`);
  }
  const kvF16 = o.kCache.dtype === 'f16';
  if (!kvF16) assertDtype(o.kCache, 'f32', 'ropeAppend kCache');
  assertDtype(o.vCache, o.kCache.dtype, 'ropeAppend vCache');
  if (kvF16 && dh % 4 !== 0) throw new RangeError(`ropeAppend: an f16 cache needs a head dim that is a multiple of 4, got ${dh}`);
  assertDtype(o.length, 'u32', 'ropeAppend length');
  if (o.starts) assertDtype(o.starts, 'i32', 'ropeAppend starts');
  const qOut = Tensor.empty([B, T, heads, dh]);
  const half = dh / 2;
  const n = B * T * (heads + 2 * kvHeads) * (kvF16 ? half / 2 : half);
  if (n === 0) return qOut;
  if (!o.starts && (!noStarts || noStarts.disposed)) noStarts = Tensor.from(new Int32Array(1), [1]).keep();
  dispatch(
    kvF16 ? 'decode.rope_append.kv_f16' : 'decode.rope_append',
    () => ropeAppendKernel(kvF16),
    [o.q.t, o.k.t, o.v.t, rope.cos, rope.sin, o.length, o.starts ?? noStarts!, qOut, o.kCache, o.vCache],
    grid1d(n),
    new Uniforms(16)
      .u32(B * T).u32(T).u32(heads).u32(kvHeads)
      .u32(half).u32(smax).u32(rope.maxPositions).u32(0x7fc00000)
      .u32(o.q.ld).u32(o.q.offset).u32(o.k.ld).u32(o.k.offset)
      .u32(o.v.ld).u32(o.v.offset).u32(o.starts ? 1 : 0).u32(0),
  );
  return qOut;
}
