// FlashAttention-2 on subgroup matrices (tensor cores): forward, dQ and dK/dV kernels generated from
// one template per kernel, emitted either with the native subgroup-matrix builtins or with the exact
// plain-WGSL emulation of them (sgmatrix.ts: declare, fill, load, multiply-accumulate, store,
// subgroup id), so the tiling, staging, masking and softmax run on any adapter in tests and
// the native twin is compile-checked by Tint.
//
// Arithmetic: q, k, v, dO, P and dS are f16 matrix operands (q/k/v from f32 or f16 storage, rounded
// once when staged), every product is accumulated in f32; the softmax, its running max and sum, the
// LSE, D and all row rescaling are f32 scalar code. The API has no element access, so every result
// tile that scalar code needs goes through workgroup memory: S and dP as f32 tiles, P and dS written
// back as f16 operands. Reductions are done by one thread per row in workgroup memory; no hardware
// subgroup operation is used (its width differs between native and emulated subgroups).
//
// Work decomposition (NSG subgroups of 32 lanes per workgroup; a GEMM's M×N result tiles are dealt
// to the subgroups round-robin, a subgroup owning tiles t = u·NSG + sg):
//  - forward: a workgroup owns BR query rows of one (b, head). Per key block of BC keys: S = Q·Kᵀ
//    into workgroup memory; one thread per row updates the running max m and sum l and writes
//    P = exp2(S·scale·log2e − m) as f16; V replaces K in the staging buffer; each PV tile is a fresh
//    accumulator stored to the subgroup's scratch tile and added by its lanes into their f32 O
//    registers after scaling by the row's alpha = exp2(m_old − m_new) (llama.cpp's coopmat1 scheme:
//    row rescaling costs no matrix round trip). O/l and lse = (m + log2 l)·ln 2 are written at the end.
//  - dQ: a workgroup owns BR query rows of one (b, head) and loops over key blocks: S = Q·Kᵀ,
//    P = exp2(S·scale·log2e − lse·log2e) (kept in registers), dP = dO·Vᵀ, dS = P∘(dP − D) as f16,
//    dQ += dS·K in accumulators that live across the loop; dQ·scale is written at the end.
//  - dK/dV: a workgroup owns BC keys of one (b, kv head) and loops over the query heads sharing it and
//    their query blocks: S, P, dP, dS as above; dV += Pᵀ·dO and dK += dSᵀ·Q with Pᵀ and dSᵀ loaded
//    col_major from the row-major P and dS tiles (the transpose is free). WGSL has no float atomics, so
//    dQ and dK/dV are two kernels (each recomputes S and dP).
// Masking is by explicit flags (never −∞ arithmetic); staged rows outside [kvStart, kvLength) and
// query rows past T are zero-filled without reading memory (a serving cache holds NaN there).
import { HEADER as ATTN_HEADER, backwardInputBindings, MASK_FLAGS, qkvBindings, visible } from './attention-wgsl.js';
import {
  LOGICAL_SUBGROUP,
  MATRIX_SHAPES,
  type Majorness,
  type MatrixArray,
  type MatrixMode,
  type MatrixShape,
  type SgMatrix,
  subgroupMatrices,
} from './sgmatrix.js';
import { kernelFamily } from './variants.js';

export type SgAttentionPass = 'fwd' | 'dq' | 'dkv';

/** Everything one kernel's WGSL depends on; its pipeline cache key is derived from it. */
export interface SgAttentionSpec {
  pass: SgAttentionPass;
  mode: MatrixMode;
  shape: MatrixShape;
  /** Head dim (a multiple of 16: every tile of the head dim is whole). */
  Dh: number;
  /** Query rows per block (forward, dQ: per workgroup). */
  BR: number;
  /** Key rows per block (dK/dV: per workgroup). */
  BC: number;
  /** Subgroups of 32 lanes per workgroup. */
  NSG: number;
  qType: 'f32' | 'f16';
  kvType: 'f32' | 'f16';
}

/** Logical subgroup width: the native kernels need hardware subgroups of exactly this size. */
export const SG_WIDTH = LOGICAL_SUBGROUP;
/** Head dims with subgroup-matrix kernels (Llama's); others keep the portable kernels. */
export const SG_HEAD_DIMS: readonly number[] = [64, 80, 96, 128];
/** Matrix shapes the kernels are written for, in order of preference (M×N×K, f16 operands, f32 result). */
export const SG_SHAPES: readonly MatrixShape[] = [
  MATRIX_SHAPES.m16n16k16,
  MATRIX_SHAPES.m16n8k16,
  MATRIX_SHAPES.m8n16k16,
];
/** Padding of f16 staging rows (halves): 16-byte aligned rows that do not all start in one bank. */
const PAD16 = 8;
/** Padding of f32 score rows (floats). */
const PAD32 = 4;

/**
 * Tile sizes per pass: native within 48 KiB of workgroup memory at Dh 128 (the NVIDIA limit), and the
 * emulated twins (same template) within lavapipe's 32 KiB with tiles small enough that short test
 * sequences span several blocks.
 */
export const SG_TILES: Record<MatrixMode, Record<SgAttentionPass, { BR: number; BC: number; NSG: number }>> = {
  native: { fwd: { BR: 32, BC: 64, NSG: 4 }, dq: { BR: 32, BC: 32, NSG: 4 }, dkv: { BR: 32, BC: 32, NSG: 4 } },
  emulated: { fwd: { BR: 16, BC: 32, NSG: 2 }, dq: { BR: 16, BC: 16, NSG: 2 }, dkv: { BR: 16, BC: 16, NSG: 2 } },
};

export function sgAttentionSpec(
  pass: SgAttentionPass,
  mode: MatrixMode,
  shape: MatrixShape,
  Dh: number,
  qType: 'f32' | 'f16',
  kvType: 'f32' | 'f16',
): SgAttentionSpec {
  if (!SG_HEAD_DIMS.includes(Dh))
    throw new RangeError(`attention on subgroup matrices: head dim ${Dh} not supported (${SG_HEAD_DIMS.join(', ')})`);
  if (!SG_SHAPES.some((s) => s.M === shape.M && s.N === shape.N && s.K === shape.K)) {
    throw new RangeError(
      `attention on subgroup matrices: shape ${shapeName(shape)} not supported (${SG_SHAPES.map(shapeName).join(', ')})`,
    );
  }
  const spec: SgAttentionSpec = { pass, mode, shape, Dh, ...SG_TILES[mode][pass], qType, kvType };
  checkSpec(spec);
  return spec;
}

export const shapeName = (s: MatrixShape): string => `${s.M}x${s.N}x${s.K}`;

/** A short name of a spec, for variant listings and messages. */
export function sgAttentionName(s: SgAttentionSpec): string {
  return `${s.pass}.${s.mode}.${shapeName(s.shape)}.dh${s.Dh}.br${s.BR}.bc${s.BC}.sg${s.NSG}.q${s.qType}.kv${s.kvType}`;
}

/** The pipeline cache key: derived from every field of the spec (the family's specKey). */
export function sgAttentionKey(s: SgAttentionSpec): string {
  return sgAttention.key(s);
}

function checkSpec(s: SgAttentionSpec): void {
  const { M, N, K } = s.shape;
  const bad = (what: string) => new RangeError(`attention on subgroup matrices (${sgAttentionName(s)}): ${what}`);
  // Every GEMM dimension the kernels tile: rows (BR or BC, M), columns (BC or Dh, N), depths (Dh, BR, BC: K).
  for (const [v, n, what] of [
    [s.BR, M, 'BR'],
    [s.BC, M, 'BC'],
    [s.BC, N, 'BC'],
    [s.Dh, N, 'Dh'],
    [s.Dh, K, 'Dh'],
    [s.BR, K, 'BR'],
    [s.BC, K, 'BC'],
  ] as const) {
    if (v % n !== 0) throw bad(`${what} ${v} is not a multiple of ${n}`);
  }
  if ((M * N) % SG_WIDTH !== 0) throw bad(`a ${M}x${N} result does not spread evenly over ${SG_WIDTH} lanes`);
}

/** Workgroup-memory bytes of a kernel (the chooser compares it with the device limit). */
export function sgAttentionSharedBytes(s: SgAttentionSpec): number {
  const SQ = s.Dh + PAD16;
  const scratch = Math.max(s.BR * (s.BC + PAD32), s.NSG * s.shape.M * s.shape.N) * 4;
  const pTile = s.BR * (s.BC + PAD16) * 2;
  if (s.pass === 'fwd') return (s.BR + s.BC) * SQ * 2 + scratch + pTile + 3 * s.BR * 4 + (s.BR + s.BC) * 4 + 16;
  return (
    2 * (s.BR + s.BC) * SQ * 2 + scratch + (s.pass === 'dkv' ? 2 : 1) * pTile + 2 * s.BR * 4 + (s.BR + s.BC) * 4 + 16
  );
}

export function sgWorkgroupSize(s: SgAttentionSpec): number {
  return s.NSG * SG_WIDTH;
}

// ---------------------------------------------------------------------------------------------
// Template pieces.

/** One GEMM on the workgroup: the tiles of an RM×RN result dealt to the subgroups. */
interface Gemm {
  /** Result tiles down and across. */
  TM: number;
  TN: number;
  /** Tiles per subgroup (the last round may repeat a tile: its result is then discarded). */
  U: number;
}

function gemm(s: SgAttentionSpec, rows: number, cols: number): Gemm {
  const TM = rows / s.shape.M;
  const TN = cols / s.shape.N;
  return { TM, TN, U: Math.ceil((TM * TN) / s.NSG) };
}

/**
 * WGSL: `tr`, `tc` (tile row and column) of this subgroup's u-th tile, and `tv` (whether the tile is
 * its own; false for the repeated filler of an uneven last round).
 */
function tileOf(g: Gemm, s: SgAttentionSpec, u: string): string {
  const tt = g.TM * g.TN;
  const t = tt % s.NSG === 0 ? `${u} * ${s.NSG}u + sg` : `min(${u} * ${s.NSG}u + sg, ${tt - 1}u)`;
  return `let t = ${t}; let tr = t / ${g.TN}u; let tc = t % ${g.TN}u; let tv = ${u} * ${s.NSG}u + sg < ${tt}u;`;
}

/**
 * WGSL: acc (declared by the caller) += Σ_kk left(rows tr) · right(cols tc) over `depth`, operands
 * loaded from workgroup arrays with the given offset expressions (in `kk`, `tr`, `tc`).
 */
interface Operand {
  arr: MatrixArray;
  off: string;
  stride: number;
  major: Majorness;
}

function mmaLoop(f: SgMatrix, acc: string, depth: number, K: number, left: Operand, right: Operand): string {
  return `for (var kk = 0u; kk < ${depth}u; kk += ${K}u) {
        ${f.load('left', 'fa', left.arr, left.off, `${left.stride}u`, left.major)}
        ${f.load('right', 'fb', right.arr, right.off, `${right.stride}u`, right.major)}
        ${f.mma(acc, 'fa', 'fb')}
      }`;
}

/**
 * WGSL: `var name` of a zero accumulator, explicitly filled: declared in a loop body, a `var` without
 * initializer kept the previous iteration's value on lavapipe.
 */
function zeroAcc(f: SgMatrix, name: string): string {
  return `${f.declare('result', name)}
      ${f.fill(name, '0.0')}`;
}

/** The workgroup arrays of a kernel, as the fragment hooks address them. */
function arrays(
  s: SgAttentionSpec,
): Record<'shQ' | 'shG' | 'shK' | 'shV' | 'shKV' | 'shP' | 'shDS' | 'shS', MatrixArray> {
  const q = s.BR * (s.Dh + PAD16);
  const k = s.BC * (s.Dh + PAD16);
  const pt = s.BR * (s.BC + PAD16);
  return {
    shQ: { name: 'shQ', elem: 'f16', length: q },
    shG: { name: 'shG', elem: 'f16', length: q },
    shK: { name: 'shK', elem: 'f16', length: k },
    shV: { name: 'shV', elem: 'f16', length: k },
    shKV: { name: 'shKV', elem: 'f16', length: k },
    shP: { name: 'shP', elem: 'f16', length: pt },
    shDS: { name: 'shDS', elem: 'f16', length: pt },
    shS: { name: 'shS', elem: 'f32', length: scratchLength(s) },
  };
}

const scratchLength = (s: SgAttentionSpec): number => Math.max(s.BR * (s.BC + PAD32), s.NSG * s.shape.M * s.shape.N);

function ops(s: SgAttentionSpec): SgMatrix {
  return subgroupMatrices({ mode: s.mode, shape: s.shape, result: 'f32' });
}

/** WGSL: stages `count` rows × Dh of input `ld` (vec4 loader) rows [first, first+count) as f16, zero outside [lo, hi). */
function stageF16(
  s: SgAttentionSpec,
  dst: string,
  rows: number,
  ld: string,
  first: string,
  lo: string,
  hi: string,
  index: string,
): string {
  const d4 = s.Dh / 4;
  return `for (var e = lid; e < ${rows * d4}u; e += NT) {
      let r = e / ${d4}u; let w = e % ${d4}u; let j = ${first} + r;
      var x = vec4f(0.0);
      if (j >= ${lo} && j < ${hi}) { x = ${ld}(${index} + w); }
      let o = r * SQ + 4u * w;
      ${dst}[o] = f16(x.x); ${dst}[o + 1u] = f16(x.y); ${dst}[o + 2u] = f16(x.z); ${dst}[o + 3u] = f16(x.w);
    }`;
}

/**
 * WGSL: writes each of this subgroup's accumulators `accs[u]` (rows×Dh tiles) to global memory through
 * the subgroup's scratch tile: `put(row, col, value)` is called per element by the owning lanes.
 */
function storeAccs(f: SgMatrix, g: Gemm, s: SgAttentionSpec, accs: string, put: string): string {
  const { M, N } = s.shape;
  return `for (var u = 0u; u < ${g.U}u; u++) {
    ${tileOf(g, s, 'u')}
    ${f.store(`${accs}[u]`, arrays(s).shS, `sg * ${M * N}u`, `${N}u`, 'row_major')}
    workgroupBarrier();
    if (tv) {
      for (var q = 0u; q < ${(M * N) / SG_WIDTH}u; q++) {
        let f = q * ${SG_WIDTH}u + lane; let rr = tr * ${M}u + f / ${N}u; let cc = tc * ${N}u + f % ${N}u;
        ${put}
      }
    }
    workgroupBarrier();
  }`;
}

function common(s: SgAttentionSpec, f: SgMatrix): string {
  const scratch = scratchLength(s);
  return `${f.enable}${ATTN_HEADER}${f.moduleDecls}
const NT = ${sgWorkgroupSize(s)}u; const BR = ${s.BR}u; const BC = ${s.BC}u; const DH = ${s.Dh}u;
const SQ = ${s.Dh + PAD16}u; // f16 row stride of staged q/k/v/dO tiles
const SS = ${s.BC + PAD32}u; // f32 row stride of S / dP
const SP = ${s.BC + PAD16}u; // f16 row stride of P / dS
var<workgroup> shS: array<f32, ${scratch}>; // S, dP; each subgroup's output tile (sg·M·N) in epilogues
var<workgroup> shQSeg: array<i32, BR>;
var<workgroup> shKSeg: array<i32, BC>;`;
}

/** The entry point; `sg` is the subgroup index and `lane` the invocation's index in it (0..31). */
function entry(s: SgAttentionSpec, f: SgMatrix): string {
  const native = s.mode === 'native';
  return `@compute @workgroup_size(${sgWorkgroupSize(s)})${f.attributes}
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${f.entryParams}${native ? ', @builtin(subgroup_invocation_id) sg_lane_hw: u32' : ''}) {
  ${f.prelude('lid')}
  let sg = ${f.subgroupId}; let lane = ${native ? 'sg_lane_hw' : 'sg_lane'};`;
}

/**
 * WGSL: key column c of the block at j0 is visible from query row r of the block at i0. Built on call:
 * attention.ts, whose snippets it uses, imports this module and may not have run when it loads.
 */
const visibleFn = (): string => /* wgsl */ `
fn visible(i: u32, j: u32, r: u32, c: u32, kLo: u32, kHi: u32) -> bool {
  ${MASK_FLAGS}
  return ${visible({ within: ['i < p.T', 'j >= kLo', 'j < kHi'], key: 'j', qlim: 'i32(i) + p.qOffset', segment: ['shQSeg[r]', 'shKSeg[c]'] })};
}`;

// ---------------------------------------------------------------------------------------------
// Forward.

function forwardKernel(s: SgAttentionSpec): string {
  const f = ops(s);
  const A = arrays(s);
  const { M, N, K } = s.shape;
  const sS = gemm(s, s.BR, s.BC);
  const pv = gemm(s, s.BR, s.Dh);
  const EPL = (M * N) / SG_WIDTH;
  return /* wgsl */ `${common(s, f)}
${qkvBindings(s.qType, s.kvType)}
@group(0) @binding(4) var<storage, read_write> O: array<f32>;
@group(0) @binding(5) var<storage, read_write> LSE: array<f32>;
@group(0) @binding(6) var<storage, read> SEG: array<i32>;
@group(0) @binding(7) var<storage, read> KVS: array<i32>;
var<workgroup> shQ: array<f16, ${s.BR * (s.Dh + PAD16)}>;
var<workgroup> shKV: array<f16, ${s.BC * (s.Dh + PAD16)}>; // K, then V of the same block
var<workgroup> shP: array<f16, ${s.BR * (s.BC + PAD16)}>;
var<workgroup> rowM: array<f32, BR>;
var<workgroup> rowL: array<f32, BR>;
var<workgroup> rowA: array<f32, BR>;
${visibleFn()}

${entry(s, f)}
  let SEGON = (p.flags & 2u) != 0u;
  let b = wid.z; let h = wid.y; let hk = h / p.group; let i0 = wid.x * BR;
  let qCount = min(BR, p.T - i0);
  var kLo = 0u;
  if ((p.flags & 4u) != 0u) { kLo = u32(max(KVS[b], 0)); }
  var kHi = p.S;
  if ((p.flags & 1u) != 0u) { kHi = u32(clamp(i32(i0 + qCount) + p.qOffset, 0, i32(p.S))); }
  ${stageF16(s, 'shQ', s.BR, 'ldQ', 'i0', '0u', 'p.T', '((b * p.T + j) * p.Hq + h) * p.dh4')}
  for (var r = lid; r < BR; r += NT) {
    rowM[r] = NEG; rowL[r] = 0.0; rowA[r] = 1.0;
    if (SEGON) { shQSeg[r] = SEG[b * p.T + min(i0 + r, p.T - 1u)]; }
  }
  var o: array<f32, ${pv.U * EPL}>; // this lane's elements of its O tiles (f = q·32 + lane of tile u)
  for (var j0 = (kLo / BC) * BC; j0 < kHi; j0 += BC) {
    ${stageF16(s, 'shKV', s.BC, 'ldK', 'j0', 'kLo', 'p.S', '((b * p.Sk + j) * p.Hkv + hk) * p.dh4')}
    if (SEGON) { for (var c = lid; c < BC; c += NT) { shKSeg[c] = SEG[b * p.T + min(j0 + c, p.S - 1u)]; } }
    workgroupBarrier();
    // S = Q·Kᵀ (Kᵀ: the staged [key][d] rows read col_major).
    for (var u = 0u; u < ${sS.U}u; u++) {
      ${tileOf(sS, s, 'u')}
      ${zeroAcc(f, 'acc')}
      ${mmaLoop(f, 'acc', s.Dh, K, { arr: A.shQ, off: `tr * ${M}u * SQ + kk`, stride: s.Dh + PAD16, major: 'row_major' }, { arr: A.shKV, off: `tc * ${N}u * SQ + kk`, stride: s.Dh + PAD16, major: 'col_major' })}
      if (tv) { ${f.store('acc', A.shS, `tr * ${M}u * SS + tc * ${N}u`, 'SS', 'row_major')} }
    }
    workgroupBarrier();
    // Online softmax, one thread per query row.
    for (var r = lid; r < BR; r += NT) {
      let i = i0 + r;
      let m = rowM[r];
      var cmax = NEG;
      for (var c = 0u; c < BC; c++) {
        if (visible(i, j0 + c, r, c, kLo, kHi)) { cmax = max(cmax, shS[r * SS + c] * p.scale2); }
      }
      let mn = max(m, cmax);
      var sum = 0.0;
      for (var c = 0u; c < BC; c++) {
        var pr = 0.0;
        if (visible(i, j0 + c, r, c, kLo, kHi)) { pr = exp2(shS[r * SS + c] * p.scale2 - mn); }
        sum += pr;
        shP[r * SP + c] = f16(pr);
      }
      let alpha = exp2(m - mn);
      rowA[r] = alpha; rowL[r] = rowL[r] * alpha + sum; rowM[r] = mn;
    }
    workgroupBarrier();
    ${stageF16(s, 'shKV', s.BC, 'ldV', 'j0', 'kLo', 'p.S', '((b * p.Sk + j) * p.Hkv + hk) * p.dh4')}
    workgroupBarrier();
    // O = O·alpha + P·V, a fresh accumulator per tile added into the lanes' O registers.
    for (var u = 0u; u < ${pv.U}u; u++) {
      ${tileOf(pv, s, 'u')}
      ${zeroAcc(f, 'acc')}
      ${mmaLoop(f, 'acc', s.BC, K, { arr: A.shP, off: `tr * ${M}u * SP + kk`, stride: s.BC + PAD16, major: 'row_major' }, { arr: A.shKV, off: `kk * SQ + tc * ${N}u`, stride: s.Dh + PAD16, major: 'row_major' })}
      ${f.store('acc', A.shS, `sg * ${M * N}u`, `${N}u`, 'row_major')}
      workgroupBarrier();
      for (var q = 0u; q < ${EPL}u; q++) {
        let f = q * ${SG_WIDTH}u + lane;
        let x = u * ${EPL}u + q;
        o[x] = o[x] * rowA[tr * ${M}u + f / ${N}u] + shS[sg * ${M * N}u + f];
      }
      workgroupBarrier();
    }
  }
  for (var u = 0u; u < ${pv.U}u; u++) {
    ${tileOf(pv, s, 'u')}
    if (tv) {
      for (var q = 0u; q < ${EPL}u; q++) {
        let f = q * ${SG_WIDTH}u + lane; let r = tr * ${M}u + f / ${N}u; let c = tc * ${N}u + f % ${N}u;
        let l = rowL[r];
        if (i0 + r < p.T) { O[((b * p.T + i0 + r) * p.Hq + h) * DH + c] = select(0.0, o[u * ${EPL}u + q] / l, l > 0.0); }
      }
    }
  }
  for (var r = lid; r < qCount; r += NT) {
    let l = rowL[r];
    LSE[(b * p.Hq + h) * p.T + i0 + r] = select(p.negInf, (rowM[r] + log2(l)) * LN2, l > 0.0);
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// Backward.

/** Bindings shared by dQ and dK/dV, and the q/dO (and k/v) tiles. */
function backwardDecls(s: SgAttentionSpec): string {
  return `${backwardInputBindings(s.qType, s.kvType)}
var<workgroup> shQ: array<f16, ${s.BR * (s.Dh + PAD16)}>;
var<workgroup> shG: array<f16, ${s.BR * (s.Dh + PAD16)}>; // dO
var<workgroup> shK: array<f16, ${s.BC * (s.Dh + PAD16)}>;
var<workgroup> shV: array<f16, ${s.BC * (s.Dh + PAD16)}>;
var<workgroup> shDS: array<f16, ${s.BR * (s.BC + PAD16)}>;
var<workgroup> rowL2: array<f32, BR>;
var<workgroup> rowD: array<f32, BR>;
${visibleFn()}`;
}

/**
 * WGSL, one (query block i0, key block j0) step of the backward: S = Q·Kᵀ and dP = dO·Vᵀ through
 * shS, P (f32 in registers; f16 into shP when `keepP`) and dS = P∘(dP − D) as f16 into shDS.
 */
function scoresStep(s: SgAttentionSpec, f: SgMatrix, keepP: boolean): string {
  const { M, N, K } = s.shape;
  const g = gemm(s, s.BR, s.BC);
  const per = Math.ceil((s.BR * s.BC) / sgWorkgroupSize(s));
  const A = arrays(s);
  const tile = (a: MatrixArray, bm: MatrixArray) => `for (var u = 0u; u < ${g.U}u; u++) {
      ${tileOf(g, s, 'u')}
      ${zeroAcc(f, 'acc')}
      ${mmaLoop(f, 'acc', s.Dh, K, { arr: a, off: `tr * ${M}u * SQ + kk`, stride: s.Dh + PAD16, major: 'row_major' }, { arr: bm, off: `tc * ${N}u * SQ + kk`, stride: s.Dh + PAD16, major: 'col_major' })}
      if (tv) { ${f.store('acc', A.shS, `tr * ${M}u * SS + tc * ${N}u`, 'SS', 'row_major')} }
    }`;
  return `${tile(A.shQ, A.shK)}
    workgroupBarrier();
    var pr: array<f32, ${per}>;
    for (var x = 0u; x < ${per}u; x++) {
      let e = lid + x * NT; let r = e / BC; let c = e % BC;
      var pv = 0.0;
      if (e < BR * BC && visible(i0 + r, j0 + c, r, c, 0u, p.S)) { pv = exp2(shS[r * SS + c] * p.scale2 - rowL2[r]); }
      pr[x] = pv;${
        keepP
          ? `
      if (e < BR * BC) { shP[r * SP + c] = f16(pv); }`
          : ''
      }
    }
    workgroupBarrier();
    ${tile(A.shG, A.shV)}
    workgroupBarrier();
    for (var x = 0u; x < ${per}u; x++) {
      let e = lid + x * NT; let r = e / BC; let c = e % BC;
      if (e < BR * BC) { shDS[r * SP + c] = f16(pr[x] * (shS[r * SS + c] - rowD[r])); }
    }
    workgroupBarrier();`;
}

/** WGSL: stages query rows [i0, i0+BR) of head h: q, dO (f16), lse·log2e, D and segment ids. */
function stageQueries(s: SgAttentionSpec): string {
  return `${stageF16(s, 'shQ', s.BR, 'ldQ', 'i0', '0u', 'p.T', '((b * p.T + j) * p.Hq + h) * p.dh4')}
    ${stageF16(s, 'shG', s.BR, 'ldDO', 'i0', '0u', 'p.T', '((b * p.T + j) * p.Hq + h) * p.dh4')}
    for (var r = lid; r < BR; r += NT) {
      let i = min(i0 + r, p.T - 1u); let lr = (b * p.Hq + h) * p.T + i;
      rowL2[r] = LSE[lr] * LOG2E; rowD[r] = DD[lr];
      if (SEGON) { shQSeg[r] = SEG[b * p.T + i]; }
    }`;
}

function stageKeys(s: SgAttentionSpec): string {
  return `${stageF16(s, 'shK', s.BC, 'ldK', 'j0', '0u', 'p.S', '((b * p.Sk + j) * p.Hkv + hk) * p.dh4')}
    ${stageF16(s, 'shV', s.BC, 'ldV', 'j0', '0u', 'p.S', '((b * p.Sk + j) * p.Hkv + hk) * p.dh4')}
    if (SEGON) { for (var c = lid; c < BC; c += NT) { shKSeg[c] = SEG[b * p.T + min(j0 + c, p.S - 1u)]; } }`;
}

function dqKernel(s: SgAttentionSpec): string {
  const f = ops(s);
  const A = arrays(s);
  const { M, N, K } = s.shape;
  const g = gemm(s, s.BR, s.Dh);
  return /* wgsl */ `${common(s, f)}
${backwardDecls(s)}
@group(0) @binding(7) var<storage, read_write> DQ: array<f32>;
@group(0) @binding(8) var<storage, read> SEG: array<i32>;

${entry(s, f)}
  let SEGON = (p.flags & 2u) != 0u;
  let b = wid.z; let h = wid.y; let hk = h / p.group; let i0 = wid.x * BR;
  let qCount = min(BR, p.T - i0);
  var kHi = p.S;
  if ((p.flags & 1u) != 0u) { kHi = u32(clamp(i32(i0 + qCount) + p.qOffset, 0, i32(p.S))); }
  ${stageQueries(s)}
  ${`var dq: array<${f.type('result')}, ${g.U}>;`}
  for (var j0 = 0u; j0 < kHi; j0 += BC) {
    ${stageKeys(s)}
    workgroupBarrier();
    ${scoresStep(s, f, false)}
    // dQ += dS·K (the staged [key][d] rows read row_major).
    for (var u = 0u; u < ${g.U}u; u++) {
      ${tileOf(g, s, 'u')}
      ${mmaLoop(f, 'dq[u]', s.BC, K, { arr: A.shDS, off: `tr * ${M}u * SP + kk`, stride: s.BC + PAD16, major: 'row_major' }, { arr: A.shK, off: `kk * SQ + tc * ${N}u`, stride: s.Dh + PAD16, major: 'row_major' })}
    }
    workgroupBarrier();
  }
  ${storeAccs(f, g, s, 'dq', `if (i0 + rr < p.T) { DQ[((b * p.T + i0 + rr) * p.Hq + h) * DH + cc] = shS[sg * ${M * N}u + f] * p.scale; }`)}
}`;
}

function dkvKernel(s: SgAttentionSpec): string {
  const f = ops(s);
  const A = arrays(s);
  const { M, N, K } = s.shape;
  const g = gemm(s, s.BC, s.Dh);
  const put = (buf: string, mul: string) =>
    `if (key0 + rr < p.Sk) { ${buf}[((b * p.Sk + key0 + rr) * p.Hkv + hk) * DH + cc] = shS[sg * ${M * N}u + f]${mul}; }`;
  return /* wgsl */ `${common(s, f)}
${backwardDecls(s)}
@group(0) @binding(7) var<storage, read_write> DK: array<f32>;
@group(0) @binding(8) var<storage, read_write> DVo: array<f32>;
@group(0) @binding(9) var<storage, read> SEG: array<i32>;
var<workgroup> shP: array<f16, ${s.BR * (s.BC + PAD16)}>;

${entry(s, f)}
  let SEGON = (p.flags & 2u) != 0u;
  let b = wid.z; let hk = wid.y; let key0 = wid.x * BC; let j0 = key0;
  ${stageKeys(s)}
  ${`var dk: array<${f.type('result')}, ${g.U}>;`}
  ${`var dv: array<${f.type('result')}, ${g.U}>;`}
  // Query blocks that can see a key of this block (uniform over the workgroup).
  var qStart = 0u;
  if ((p.flags & 1u) != 0u) { qStart = u32(max(i32(key0) - p.qOffset, 0)); }
  var qEnd = p.T;
  if (key0 >= p.S) { qEnd = 0u; }
  for (var hh = 0u; hh < p.group; hh++) {
    let h = hk * p.group + hh;
    for (var i0 = (qStart / BR) * BR; i0 < qEnd; i0 += BR) {
      ${stageQueries(s)}
      workgroupBarrier();
      ${scoresStep(s, f, true)}
      // dV += Pᵀ·dO and dK += dSᵀ·Q (Pᵀ, dSᵀ: the row-major [query][key] tiles read col_major).
      for (var u = 0u; u < ${g.U}u; u++) {
        ${tileOf(g, s, 'u')}
        ${mmaLoop(f, 'dv[u]', s.BR, K, { arr: A.shP, off: `kk * SP + tr * ${M}u`, stride: s.BC + PAD16, major: 'col_major' }, { arr: A.shG, off: `kk * SQ + tc * ${N}u`, stride: s.Dh + PAD16, major: 'row_major' })}
        ${mmaLoop(f, 'dk[u]', s.BR, K, { arr: A.shDS, off: `kk * SP + tr * ${M}u`, stride: s.BC + PAD16, major: 'col_major' }, { arr: A.shQ, off: `kk * SQ + tc * ${N}u`, stride: s.Dh + PAD16, major: 'row_major' })}
      }
      workgroupBarrier();
    }
  }
  ${storeAccs(f, g, s, 'dk', put('DK', ' * p.scale'))}
  ${storeAccs(f, g, s, 'dv', put('DVo', ''))}
}`;
}

/** The WGSL of a kernel spec. */
export function sgAttentionKernel(s: SgAttentionSpec): string {
  checkSpec(s);
  return s.pass === 'fwd' ? forwardKernel(s) : s.pass === 'dq' ? dqKernel(s) : dkvKernel(s);
}

/** One emulated check: a problem run through the emulated kernels of one matrix shape. */
export interface AttentionVariantCase {
  label: string;
  B: number;
  T: number;
  /** Valid keys (kvLength) of Sk cached rows. */
  S: number;
  Sk: number;
  Hq: number;
  Hkv: number;
  Dh: number;
  shape: MatrixShape;
  causal: boolean;
  qOffset?: number;
  /** Segment lengths per batch row (sequence packing; each row's sum is T). */
  segments?: number[][];
  /** First valid key per batch row; the rows before it hold NaN (forward only). */
  kvStart?: number[];
  /** Storage dtype of q, k and v. */
  dtype: 'f32' | 'f16';
}

/**
 * The emulated checks (tests and check:kernels): emulated tiles are forward 16 query rows × 32 keys
 * and backward 16 × 16 with 2 subgroups, so these lengths span several blocks with ragged last ones.
 * Every shape and head size appears (each kernel compiles once; emulated kernels compile slowly on
 * software adapters); Dh 80 with 16-wide tiles deals 5 output tiles to 2 subgroups (a repeated
 * filler tile in the last round, as the native kernels have at Dh 80).
 */
export const ATTENTION_SG_CASES: readonly AttentionVariantCase[] = [
  {
    label: 'Dh=64 T=37 causal GQA 4 q/k/v f16',
    B: 2,
    T: 37,
    S: 37,
    Sk: 37,
    Hq: 8,
    Hkv: 2,
    Dh: 64,
    shape: MATRIX_SHAPES.m16n8k16,
    causal: true,
    dtype: 'f16',
  },
  {
    label: 'Dh=80 T=41 causal packed 3 segments q/k/v f32',
    B: 2,
    T: 41,
    S: 41,
    Sk: 41,
    Hq: 2,
    Hkv: 2,
    Dh: 80,
    shape: MATRIX_SHAPES.m16n16k16,
    causal: true,
    segments: [
      [13, 21, 7],
      [5, 30, 6],
    ],
    dtype: 'f32',
  },
  {
    label: 'Dh=96 T=7 qOffset=12 S=19 of 24 non-causal GQA 8',
    B: 1,
    T: 7,
    S: 19,
    Sk: 24,
    Hq: 8,
    Hkv: 1,
    Dh: 96,
    shape: MATRIX_SHAPES.m8n16k16,
    causal: false,
    qOffset: 12,
    dtype: 'f16',
  },
  {
    label: 'Dh=128 T=1 qOffset=44 S=45 of 48 causal GQA 2 kvStart [17, 0, 44] unwritten NaN',
    B: 3,
    T: 1,
    S: 45,
    Sk: 48,
    Hq: 4,
    Hkv: 2,
    Dh: 128,
    shape: MATRIX_SHAPES.m16n16k16,
    causal: true,
    qOffset: 44,
    kvStart: [17, 0, 44],
    dtype: 'f16',
  },
  {
    label: 'Dh=128 T=13 causal kvStart [5, 0] unwritten NaN (prefill, rows fully masked)',
    B: 2,
    T: 13,
    S: 13,
    Sk: 13,
    Hq: 2,
    Hkv: 1,
    Dh: 128,
    shape: MATRIX_SHAPES.m16n16k16,
    causal: true,
    kvStart: [5, 0],
    dtype: 'f16',
  },
];

/** The passes a case runs: the forward, and the backward's two kernels unless it has kvStart. */
export const casePasses = (c: AttentionVariantCase): SgAttentionPass[] => (c.kvStart ? ['fwd'] : ['fwd', 'dq', 'dkv']);

/** What check:kernels needs to run an emulated attention variant: the case and the kernel it checks. */
export interface AttentionVariantCheck {
  case: AttentionVariantCase;
  pass: SgAttentionPass;
}

/**
 * The subgroup-matrix kernels, one family (keys `attn.sgm:…`). Its table is every kernel the generator
 * can produce natively, offline (no device): each pass × matrix shape × head dim × storage dtypes of q
 * and k/v; and the emulated twins (`AttentionTiles.fragments` mode 'emulated', for tests) that the
 * checks in ATTENTION_SG_CASES run (one variant per case and pass), each with the case it needs:
 * check:kernels runs those against the float64 reference.
 */
export const sgAttention = kernelFamily<SgAttentionSpec>({
  family: 'attn.sgm',
  mode: (s) => s.mode,
  rows: () => {
    const dtypes = ['f32', 'f16'] as const;
    const natives = (['fwd', 'dq', 'dkv'] as const).flatMap((pass) =>
      SG_SHAPES.flatMap((shape) =>
        SG_HEAD_DIMS.flatMap((Dh) =>
          dtypes.flatMap((qType) => dtypes.map((kvType) => sgAttentionSpec(pass, 'native', shape, Dh, qType, kvType))),
        ),
      ),
    );
    const checks = ATTENTION_SG_CASES.flatMap((c) =>
      casePasses(c).map((pass) => ({
        spec: sgAttentionSpec(pass, 'emulated', c.shape, c.Dh, c.dtype, c.dtype),
        name: `${pass} ${shapeName(c.shape)}: ${c.label}`,
        check: { case: c, pass } satisfies AttentionVariantCheck,
      })),
    );
    return [...natives.map((spec) => ({ spec, name: sgAttentionName(spec) })), ...checks];
  },
  code: sgAttentionKernel,
  workgroupBytes: sgAttentionSharedBytes,
});
