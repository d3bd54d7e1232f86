// The GEMM family: one WGSL generator for every matrix product of the engine (matmul, linear, the
// NF4 dequant-matmul, the LoRA projections and their gradients). Products of a few rows take the
// GEMV (gemv.ts): at one row, reading the weight once is the whole cost.
//
//   C[b] (=|+=) alpha · ( [prologue] + op(A[b])·op(B[b]) )      op = identity or transpose
//
// A generated kernel is the product of four independent choices:
// - Operand loaders, per operand: element kind f32 | bf16 | f16 (16-bit packed two per u32 word) |
//   nf4 | nf4dq (NF4 codes + absmax, plain or double-quantized; B only), stored transposed or not,
//   read `vec` elements per global load along the stored matrix's contiguous dimension (vec4 of
//   f32, vec4<u32> = 8 halves, one NF4 code word = 8 codes) when that dimension is a multiple of
//   `vec`, else one element per load (the decoding of each format: weight-formats.ts). NF4 is
//   dequantized (code · absmax in f32) while the tile is staged into workgroup memory. An
//   f32/16-bit operand may carry LoRA dropout: element i of the stored matrix is kept when
//   rand_uniform(seed, i) ≥ p and scaled by 1/(1 − p).
// - Compute: 'f32' (portable SIMT: tiles and products in f32) or 'f16' (shader-f16: operands
//   rounded to f16 when staged, workgroup tiles in f16, products exact in f32, accumulation in f32 —
//   the arithmetic of f16 tensor cores, so this variant is the numerical twin of the subgroup-matrix
//   one that a GPU would run). Rounding an f32 above the f16 range gives ±inf, as torch's f16 casts
//   do, so loss scaling sees the overflow.
// - Tile: BM × BN outputs per workgroup, BK deep slices staged k-major in workgroup memory (rows
//   padded by 4 against bank conflicts, vec4 reads), TM × TN outputs per thread in two groups of
//   vec4 rows/columns strided across the tile (a warp's vec4 reads stay contiguous); optionally
//   double-buffered: the next slice is staged into the second buffer while the current one is
//   multiplied, one barrier per slice instead of two.
// - Epilogue: store, accumulate into C, scale by alpha, or write split-K partial sums (reduced in a
//   fixed order by a second kernel: deterministic); plus an optional prologue GEMM into the same
//   accumulators before the main loop, scaled and optionally dropout-masked per output element:
//   the fused LoRA up-projection y = x·Wᵀ + s·(u·Bᵀ) and its input gradient
//   dX = g·W + mask ⊙ (gu·A)/(1 − p) are one kernel each.
//
// The dispatcher (chooseGemm) picks compute and core from the engine precision, the features and
// the subgroup-matrix configurations (never the vendor), and tile / split-K from the tuned table of this adapter (gemm-tuning.ts, written by
// `npm run tune`), else from heuristics. FINLLM_DISABLE_FEATURES=shader-f16 removes the f16 variant.
//
// The f16 variant has a second compute core: subgroup matrices (tensor cores, sgmatrix.ts). Same
// loaders, same arithmetic (f16 operands, exact products, f32 accumulation), same epilogues; the
// tile comes from SG_TILES: SGM × SGN subgroups of 32, each owning (BM/SGM) × (BN/SGN) outputs as
// several result fragments; operands staged [outer][BK + 8] in f16 (k contiguous, rows padded by
// 8 halves against bank conflicts; A loaded row_major as left, B col_major as right), two stages
// with register prefetch (the next slice's global loads are issued before the current slice's
// multiply-accumulates and written to the other stage after them: one barrier per slice). No
// fragment is loaded from global memory; edges are zero-padded while staging and guarded per
// element in the epilogue, which goes through workgroup memory (result fragment → f32 scratch →
// scalar alpha / accumulate / split-K partial / prologue mask). The native core runs where the
// adapter lists an f16 → f32 configuration of a known shape and the precision is fp16-mixed
// (FINLLM_DISABLE_FEATURES=chromium-experimental-subgroup-matrix turns it off); its emulated twin
// runs only in tests and `npm run check:kernels`, against the float64 reference.
// Every kernel bounds-checks its loads (zero fill) and stores: any M, N, K ≥ 0.

import type { FeatureName, SubgroupMatrixConfig } from '../engine/device.js';
import { computePrecision, type Precision } from '../engine/precision.js';
import { WGSL_RANDOM } from '../engine/random.js';
import { engine, numelOf, Tensor } from '../engine/tensor.js';
import { grid1d, Uniforms } from './common.js';
import { GEMM_TUNING } from './gemm-tuning.js';
import { isDoubleQuant, type Nf4Weight } from './nf4.js';
import {
  assertOffered,
  LOGICAL_SUBGROUP,
  MATRIX_SHAPE_NAMES,
  MATRIX_SHAPES,
  type MatrixArray,
  type MatrixShape,
  type MatrixShapeName,
  offeredShapes,
  subgroupMatrices,
} from './sgmatrix.js';
import { type KernelVariant, kernelFamily, type VariantRow } from './variants.js';
import { weightTensors, wgslFormatHelpers, wgslWeightBindings, wgslWeightChunk } from './weight-formats.js';

export type OperandKind = 'f32' | 'bf16' | 'f16' | 'nf4' | 'nf4dq';
export type Compute = 'f32' | 'f16';

export interface TileConfig {
  BM: number;
  BN: number;
  BK: number;
  /** Outputs per thread along M and N (multiples of 4). */
  TM: number;
  TN: number;
  /** Two workgroup buffers: stage slice t+1 while multiplying slice t. */
  double: boolean;
  /**
   * CPU-shaped (software adapters): no workgroup memory and no barrier; each invocation reads its
   * TM rows of A and TN columns of B straight from global memory, 4 k-steps per iteration (vec4
   * loads where the layout allows), into TM × TN register accumulators. BK is that k-step (4).
   * f32 operands and f32 compute only, no dropout or prologue (others fall back to t64).
   */
  direct?: boolean;
}

/** The tile shapes the dispatcher and the tuner choose from. */
export const TILES = {
  /** 128² outputs, 8×8 per thread, 256 threads: twice the arithmetic per workgroup read of t64. */
  t128: { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8, double: false },
  /** t128 double-buffered with BK 8 (f32 fits 32 KiB of workgroup memory). */
  t128d: { BM: 128, BN: 128, BK: 8, TM: 8, TN: 8, double: true },
  /** 64² outputs, 4×4 per thread, 256 threads: enough workgroups for mid-sized products. */
  t64: { BM: 64, BN: 64, BK: 16, TM: 4, TN: 4, double: false },
  t64d: { BM: 64, BN: 64, BK: 16, TM: 4, TN: 4, double: true },
  /** Skinny N (LoRA down-projections, N = rank): 64 × 32, 128 threads. */
  t64x32: { BM: 64, BN: 32, BK: 16, TM: 4, TN: 4, double: false },
  /** Skinny M (LoRA A gradient, M = rank): 32 × 64, 128 threads. */
  t32x64: { BM: 32, BN: 64, BK: 16, TM: 4, TN: 4, double: false },
  /** CPU-shaped: 8×8 outputs per invocation, 64 invocations, no workgroup memory or barrier. */
  r8x8: { BM: 64, BN: 64, BK: 4, TM: 8, TN: 8, double: false, direct: true },
  /** CPU-shaped: 4×8 outputs per invocation, 32 × 64 per workgroup. */
  r4x8: { BM: 32, BN: 64, BK: 4, TM: 4, TN: 8, double: false, direct: true },
  /** CPU-shaped: 4×4 outputs per invocation, for small products. */
  r4x4: { BM: 32, BN: 32, BK: 4, TM: 4, TN: 4, double: false, direct: true },
} as const satisfies Record<string, TileConfig>;
export type TileName = keyof typeof TILES;
export const TILE_NAMES = Object.keys(TILES) as TileName[];

/**
 * Tiles of the subgroup-matrix core: BM × BN outputs per workgroup, BK deep slices, SGM × SGN
 * subgroups of 32 invocations, each owning (BM/SGM) × (BN/SGN) outputs. Always two stages.
 */
export interface SgTileConfig {
  BM: number;
  BN: number;
  BK: number;
  SGM: number;
  SGN: number;
}

/** The subgroup-matrix tiles the dispatcher and the tuner choose from. */
export const SG_TILES = {
  /** 128², 4 subgroups of 64 × 64 (4 × 4 16×16 accumulators each): 44 KiB, the H100 plan. */
  s128: { BM: 128, BN: 128, BK: 32, SGM: 2, SGN: 2 },
  /** 128 × 64, 4 subgroups of 64 × 32. */
  s128x64: { BM: 128, BN: 64, BK: 32, SGM: 2, SGN: 2 },
  /** 64², 4 subgroups of 32 × 32: mid-sized products, and 24.5 KiB (fits 32 KiB adapters). */
  s64: { BM: 64, BN: 64, BK: 32, SGM: 2, SGN: 2 },
  /** Skinny N (LoRA down-projections): 64 × 32, 2 subgroups of 32 × 32. */
  s64x32: { BM: 64, BN: 32, BK: 32, SGM: 2, SGN: 1 },
  /** Skinny M (LoRA A gradient): 32 × 64, 2 subgroups of 32 × 32. */
  s32x64: { BM: 32, BN: 64, BK: 32, SGM: 1, SGN: 2 },
} as const satisfies Record<string, SgTileConfig>;
export type SgTileName = keyof typeof SG_TILES;
export const SG_TILE_NAMES = Object.keys(SG_TILES) as SgTileName[];

/** Seeded bugs of the subgroup-matrix core, for tests only: the emulated check must catch each. */
export type GemmMutation = 'major' | 'stride' | 'nobarrier';

/** The subgroup-matrix core of a choice. */
export interface MatrixCore {
  shape: MatrixShapeName;
  /** The plain-WGSL emulation (tests and check:kernels only). */
  emulated: boolean;
  /** Tests only: a seeded bug. */
  mutation?: GemmMutation;
}

export interface GemmChoice {
  compute: Compute;
  /** A TILES name, or an SG_TILES name with `matrix`. */
  tile: TileName | SgTileName;
  /** Slices of K computed by separate workgroups and summed by a second kernel (1: none). */
  splitK: number;
  /** The subgroup-matrix core (compute 'f16' only); absent: the SIMT core. */
  matrix?: MatrixCore;
}

/** LoRA dropout of one operand or of the prologue's output. */
export interface Dropout {
  p: number;
  seed: number;
}

/** A GEMM operand: a dense tensor (f32 / bf16 / f16) or an NF4 weight (B only), transposed or not. */
export interface GemmOperand {
  t: Tensor | Nf4Weight;
  /** Read op(X) = Xᵀ: the tensor holds the transpose of the logical operand. */
  trans?: boolean;
  /** Dropout applied to this operand's elements (dense operands only). */
  dropout?: Dropout;
}

export interface GemmArgs {
  a: GemmOperand;
  b: GemmOperand;
  /** Scale of the result (default 1). */
  alpha?: number;
  /** Add into this tensor (shaped like the result) instead of returning a new one. */
  accumulate?: Tensor;
  /**
   * A second product added first: acc = scale · [mask ⊙] (op(u)·op(w)), with u [M, R] and w giving
   * [R, N]; the main product then accumulates on top. 2-D problems only.
   */
  prologue?: { u: GemmOperand; w: GemmOperand; scale: number; dropout?: Dropout };
  /** Force parts of the choice (tests, tuner); the rest comes from chooseGemm. */
  choice?: Partial<GemmChoice>;
}

// ---------------------------------------------------------------------------------------------
// WGSL generation

interface OperandSpec {
  kind: OperandKind;
  trans: boolean;
  /** Elements per global load: 1, 4 (f32) or 8 (16-bit, nf4). */
  vec: number;
  drop: boolean;
}

type OutMode = 'store' | 'accumulate' | 'partial';

/** The subgroup-matrix core of a kernel. */
interface SgCoreSpec {
  shape: MatrixShape;
  mode: 'native' | 'emulated';
  /** Native: declare @subgroup_size(32) (subgroup-size-control). */
  sizeControl: boolean;
  mutation: GemmMutation | null;
}

/** Everything a generated GEMM kernel depends on: its pipeline key is derived from all of it. */
export interface GemmKernelSpec {
  compute: Compute;
  tile: TileConfig | SgTileConfig;
  tileName: string;
  a: OperandSpec;
  b: OperandSpec;
  pro: { u: OperandSpec; w: OperandSpec; mask: boolean } | null;
  out: OutMode;
  sg: SgCoreSpec | null;
}
type KernelSpec = GemmKernelSpec;

/** The pipeline cache key: derived from every field of the spec (the GEMM family's specKey). */
export function kernelKey(s: KernelSpec): string {
  return GEMM.key(s);
}

const PARAMS = /* wgsl */ `
struct P {
  M: u32, N: u32, K: u32, batch_off: u32,
  sA: u32, sB: u32, sC: u32, k_split: u32,
  alpha: f32, R: u32, pro_scale: f32, seed: u32,
  drop_p: f32, inv_keep: f32, _p0: u32, _p1: u32,
}
@group(0) @binding(0) var<uniform> p: P;
`;

/** Storage declarations of one operand starting at `first`; returns the code and the next free binding. */
function operandBindings(name: string, o: OperandSpec, first: number): [string, number] {
  return wgslWeightBindings(o.kind, name, o.vec, first);
}

/**
 * WGSL expressions of the `vec` values of one chunk at element index `idx` (batch base included),
 * as f32, or as f16 when `asF16` (f16 storage read into the f16 compute variant: no conversion).
 */
function loadValues(name: string, o: OperandSpec, asF16: boolean): { pre: string; vals: string[] } {
  return wgslWeightChunk(o.kind, name, 'idx', o.vec, asF16);
}

interface StageArgs {
  name: string;
  side: 'a' | 'b';
  spec: OperandSpec;
  compute: Compute;
  /** Tile extent along this operand's outer dimension (BM for A, BN for B) and along k. */
  R: number;
  BK: number;
  NT: number;
  /** Workgroup array and its padded row stride (elements). */
  smem: string;
  stride: number;
  bufOff: string;
  /** WGSL: outer extent, k bound, leading dimension, batch base, tile origin (outer), slice origin (k). */
  outer: string;
  kEnd: string;
  ld: string;
  base: string;
  o0: string;
  k0: string;
}

/** Stages the R × BK slice of one operand into workgroup memory (k-major), converting and zero-filling. */
function stageCode(s: StageArgs): string {
  const o = s.spec;
  const V = o.vec;
  const contK = s.side === 'a' ? !o.trans : o.trans; // stored contiguous along k
  const cont = contK ? s.BK : s.R;
  const cpr = cont / V;
  const total = (s.R * s.BK) / V;
  const per = Math.ceil(total / s.NT);
  const guard = total % s.NT !== 0;
  const f16 = s.compute === 'f16';
  const T = f16 ? 'f16' : 'f32';
  const direct = f16 && o.kind === 'f16' && !o.drop;
  const { pre, vals } = loadValues(s.name, o, direct);
  const cvt = (x: string) => (f16 && !direct ? `to_f16(${x})` : x);
  const assign = vals
    .map((v, j) => {
      let x = v;
      if (o.drop) x = `select(0.0, ${v} * p.inv_keep, rand_uniform(p.seed, idx - ${s.base} + ${j}u) >= p.drop_p)`;
      return `v[${j}] = ${cvt(x)};`;
    })
    .join(' ');
  // Where the chunk's elements land: consecutive k rows (contiguous along k) or consecutive outer
  // positions of one k row (contiguous along the outer dim: whole vec4 stores).
  let store: string;
  if (!contK && V >= 4) {
    store = Array.from(
      { length: V / 4 },
      (_, g) =>
        `${s.smem}[${s.bufOff} + ((kk * ${s.stride}u + oo + ${4 * g}u) >> 2u)] = vec4<${T}>(v[${4 * g}], v[${4 * g + 1}], v[${4 * g + 2}], v[${4 * g + 3}]);`,
    ).join('\n        ');
  } else {
    store = `for (var j = 0u; j < ${V}u; j++) {
          let s = ${contK ? `(kk + j) * ${s.stride}u + oo` : `kk * ${s.stride}u + oo + j`};
          ${s.smem}[${s.bufOff} + (s >> 2u)][s & 3u] = v[j];
        }`;
  }
  return `
    for (var r = 0u; r < ${per}u; r++) {
      let e = lid + r * ${s.NT}u;${guard ? `\n      if (e >= ${total}u) { break; }` : ''}
      let cc = (e % ${cpr}u) * ${V}u;
      let oc = e / ${cpr}u;
      let oo = ${contK ? 'oc' : 'cc'};
      let kk = ${contK ? 'cc' : 'oc'};
      let go = ${s.o0} + oo;
      let gk = ${s.k0} + kk;
      var v = array<${T}, ${V}>(); // explicit zero fill: a bare declaration kept stale values across loop iterations on lavapipe
      if (go < ${s.outer} && gk < ${s.kEnd}) {
        let idx = ${s.base} + ${contK ? `go * ${s.ld} + gk` : `gk * ${s.ld} + go`};
        ${pre}
        ${assign}
      }
      ${store}
    }`;
}

// ---------------------------------------------------------------------------------------------
// WGSL pieces shared by the three GEMM cores (SIMT, subgroup-matrix, CPU-shaped).

/** The operand bindings (A, B, then U, W of a prologue) and C, with what the operands need. */
function kernelBindings(spec: KernelSpec): { decls: string[]; nf4: OperandSpec | undefined; anyDrop: boolean } {
  let binding = 1;
  const decls: string[] = [];
  const bind = (name: string, o: OperandSpec) => {
    const [d, next] = operandBindings(name, o, binding);
    decls.push(d);
    binding = next;
  };
  bind('A', spec.a);
  bind('B', spec.b);
  if (spec.pro) {
    bind('U', spec.pro.u);
    bind('W', spec.pro.w);
  }
  decls.push(`@group(0) @binding(${binding}) var<storage, read_write> C: array<f32>;`);
  const nf4 = [spec.a, spec.b].find((o) => o.kind === 'nf4' || o.kind === 'nf4dq');
  return { decls, nf4, anyDrop: spec.a.drop || spec.b.drop || !!spec.pro?.mask };
}

/** This workgroup's k range and batch: a split-K slice (partial output) or all of K for batch wid.z. */
function wgslKRange(partial: boolean): string {
  return partial
    ? `let kBegin = wid.z * p.k_split;
  let kEnd = min(p.K, kBegin + p.k_split);
  let b = 0u;`
    : `let kBegin = 0u;
  let kEnd = p.K;
  let b = wid.z + p.batch_off;`;
}

/** The store of value `v` at row m, column `col` for each output mode. */
function wgslWrite(out: OutMode, col: string, v: string): string {
  if (out === 'partial') return `C[wid.z * p.M * p.N + m * p.N + ${col}] = ${v};`;
  if (out === 'accumulate') return `let o = baseC + m * p.N + ${col}; C[o] = C[o] + p.alpha * ${v};`;
  return `C[baseC + m * p.N + ${col}] = p.alpha * ${v};`;
}

/**
 * f32 -> f16, overflowing to ±inf above the f16 range (65504 rounds up to inf from 65520 on). The
 * inf comes from a private variable: a constant expression may not evaluate to inf in WGSL.
 */
const WGSL_TO_F16 = /* wgsl */ `
var<private> F16_INF_BITS: u32 = 0x7c007c00u;
fn to_f16(x: f32) -> f16 {
  if (abs(x) >= 65520.0) { return select(f16(-1.0), f16(1.0), x > 0.0) * bitcast<vec2<f16>>(F16_INF_BITS).x; }
  return f16(x);
}`;

function gemmKernel(spec: KernelSpec): string {
  const { BM, BN, BK, TM, TN, double } = spec.tile as TileConfig;
  const f16 = spec.compute === 'f16';
  const T = f16 ? 'f16' : 'f32';
  const WGX = BN / TN;
  const WGY = BM / TM;
  const NT = WGX * WGY;
  const RM = TM / 4;
  const RN = TN / 4;
  const SA = BM + 4;
  const SB = BN + 4;
  const bufA = (BK * SA) / 4;
  const bufB = (BK * SB) / 4;
  const nbuf = double ? 2 : 1;

  const { decls, nf4, anyDrop } = kernelBindings(spec);

  const stage = (which: 'main' | 'pro', buf: string, k0: string, kEnd: string) => {
    const [oa, ob, na, nb] = which === 'main' ? [spec.a, spec.b, 'A', 'B'] : [spec.pro!.u, spec.pro!.w, 'U', 'W'];
    const K = which === 'main' ? 'p.K' : 'p.R';
    const common = { compute: spec.compute, BK, NT, k0, kEnd };
    const a = stageCode({
      ...common,
      name: na,
      side: 'a',
      spec: oa,
      R: BM,
      smem: 'As',
      stride: SA,
      bufOff: `${buf} * ${bufA}u`,
      outer: 'p.M',
      ld: oa.trans ? 'p.M' : K,
      base: which === 'main' ? 'baseA' : '0u',
      o0: 'm0',
    });
    const b = stageCode({
      ...common,
      name: nb,
      side: 'b',
      spec: ob,
      R: BN,
      smem: 'Bs',
      stride: SB,
      bufOff: `${buf} * ${bufB}u`,
      outer: 'p.N',
      ld: ob.trans ? K : 'p.N',
      base: which === 'main' ? 'baseB' : '0u',
      o0: 'n0',
    });
    return a + b;
  };

  const compute = (buf: string) => `
    for (var kk = 0u; kk < ${BK}u; kk++) {
      var av: array<vec4f, ${RM}>;
      var bv: array<vec4f, ${RN}>;
      for (var g = 0u; g < ${RM}u; g++) { av[g] = vec4f(As[${buf} * ${bufA}u + kk * ${SA / 4}u + g * ${WGY}u + ty]); }
      for (var q = 0u; q < ${RN}u; q++) { bv[q] = vec4f(Bs[${buf} * ${bufB}u + kk * ${SB / 4}u + q * ${WGX}u + tx]); }
      for (var i = 0u; i < ${TM}u; i++) {
        let a = av[i >> 2u][i & 3u];
        for (var q = 0u; q < ${RN}u; q++) { acc[i * ${RN}u + q] = fma(vec4f(a), bv[q], acc[i * ${RN}u + q]); }
      }
    }`;

  const loop = (which: 'main' | 'pro', kBegin: string, kEnd: string) =>
    double
      ? `
  if (${kBegin} < ${kEnd}) {
    {
      let kt = ${kBegin};${stage(which, '0u', 'kt', kEnd)}
    }
    workgroupBarrier();
    var buf = 0u;
    for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += ${BK}u) {
      let kt = k0 + ${BK}u;
      if (kt < ${kEnd}) {${stage(which, '(buf ^ 1u)', 'kt', kEnd)}
      }${compute('buf')}
      workgroupBarrier();
      buf = buf ^ 1u;
    }
  }`
      : `
  for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += ${BK}u) {${stage(which, '0u', 'k0', kEnd)}
    workgroupBarrier();${compute('0u')}
    workgroupBarrier();
  }`;

  // Output coordinates of acc[i * RN + q][c]: row m0 + (i/4)·4·WGY + 4·ty + i%4, column n0 + q·4·WGX + 4·tx + c.
  const rowOf = (i: string) => `m0 + (${i} >> 2u) * ${WGY * 4}u + ty * 4u + (${i} & 3u)`;
  const colOf = (q: string) => `n0 + ${q} * ${WGX * 4}u + tx * 4u`;

  const prologue = spec.pro
    ? `${loop('pro', '0u', 'p.R')}
  for (var i = 0u; i < ${TM}u; i++) {
    let m = ${rowOf('i')};
    for (var q = 0u; q < ${RN}u; q++) {
      var f = vec4f(p.pro_scale);${
        spec.pro.mask
          ? `
      let n = ${colOf('q')};
      for (var c = 0u; c < 4u; c++) { f[c] = select(0.0, p.pro_scale * p.inv_keep, rand_uniform(p.seed, m * p.N + n + c) >= p.drop_p); }`
          : ''
      }
      acc[i * ${RN}u + q] = acc[i * ${RN}u + q] * f;
    }
  }`
    : '';

  const kRange = wgslKRange(spec.out === 'partial');

  const write = wgslWrite(spec.out, 'n + c', 'v[c]');

  return /* wgsl */ `${f16 ? 'enable f16;\n' : ''}${PARAMS}${wgslFormatHelpers(nf4 ? [nf4.kind] : [])}${anyDrop ? WGSL_RANDOM : ''}
${decls.join('\n')}
${f16 ? WGSL_TO_F16 : ''}
var<workgroup> As: array<vec4<${T}>, ${nbuf * bufA}>;
var<workgroup> Bs: array<vec4<${T}>, ${nbuf * bufB}>;
@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % ${WGX}u;
  let ty = lid / ${WGX}u;
  let m0 = wid.y * ${BM}u;
  let n0 = wid.x * ${BN}u;
  ${kRange}
  let baseA = b * p.sA;
  let baseB = b * p.sB;
  var acc: array<vec4f, ${TM * RN}>;${prologue}${loop('main', 'kBegin', 'kEnd')}
  let baseC = b * p.sC;
  for (var i = 0u; i < ${TM}u; i++) {
    let m = ${rowOf('i')};
    if (m >= p.M) { continue; }
    for (var q = 0u; q < ${RN}u; q++) {
      let n = ${colOf('q')};
      let v = acc[i * ${RN}u + q];
      for (var c = 0u; c < 4u; c++) {
        if (n + c < p.N) { ${write} }
      }
    }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// The subgroup-matrix core (see the header): same bindings, loaders and epilogues as gemmKernel.

/** Padding of the staged rows, in halves (16 bytes: rows of BK + 8 halves start on new banks). */
const SG_PAD = 8;

/** Workgroup memory of a subgroup-matrix tile: two f16 stages of A and B, plus one f32 result fragment per subgroup. */
export function sgTileBytes(t: SgTileConfig, shape: MatrixShape): number {
  return 2 * (t.BM + t.BN) * (t.BK + SG_PAD) * 2 + t.SGM * t.SGN * shape.M * shape.N * 4;
}

/** Whether a tile divides into fragments of this shape (per-subgroup extents and BK). */
export function sgTileValid(t: SgTileConfig, shape: MatrixShape): boolean {
  return (t.BM / t.SGM) % shape.M === 0 && (t.BN / t.SGN) % shape.N === 0 && t.BK % shape.K === 0 && t.BK % 8 === 0;
}

interface SgStage {
  name: string;
  side: 'a' | 'b';
  spec: OperandSpec;
  /** Tile extent along the operand's outer dimension (BM or BN). */
  R: number;
  BK: number;
  NT: number;
  outer: string;
  kEnd: string;
  ld: string;
  base: string;
  o0: string;
  /** Prefetch register array of this operand. */
  reg: string;
}

function sgChunks(s: SgStage): { contK: boolean; V: number; cpr: number; total: number; per: number } {
  const V = s.spec.vec;
  const contK = s.side === 'a' ? !s.spec.trans : s.spec.trans;
  const cpr = (contK ? s.BK : s.R) / V;
  const total = (s.R * s.BK) / V;
  return { contK, V, cpr, total, per: Math.ceil(total / s.NT) };
}

/** Chunk coordinates of chunk `r` (a WGSL loop variable) of this invocation: oo (outer) and kk (k) within the tile. */
function sgChunkCoords(s: SgStage): string {
  const { contK, V, cpr } = sgChunks(s);
  return `let e = lid + r * ${s.NT}u;
      let cc = (e % ${cpr}u) * ${V}u;
      let oc = e / ${cpr}u;
      let oo = ${contK ? 'oc' : 'cc'};
      let kk = ${contK ? 'cc' : 'oc'};`;
}

/** Global → prefetch registers (f16, zero-filled outside the matrix) for the slice starting at k0. */
function sgStageLoad(s: SgStage, k0: string): string {
  const { contK, V, total, per } = sgChunks(s);
  const o = s.spec;
  const direct = o.kind === 'f16' && !o.drop;
  const { pre, vals } = loadValues(s.name, o, direct);
  const assign = vals
    .map((v, j) => {
      let x = v;
      if (o.drop) x = `select(0.0, ${v} * p.inv_keep, rand_uniform(p.seed, idx - ${s.base} + ${j}u) >= p.drop_p)`;
      return `v[${j}] = ${direct ? x : `to_f16(${x})`};`;
    })
    .join(' ');
  return `
    for (var r = 0u; r < ${per}u; r++) {
      ${sgChunkCoords(s)}
      let go = ${s.o0} + oo;
      let gk = ${k0} + kk;
      var v = array<f16, ${V}>();
      if (${per * s.NT > total ? `e < ${total}u && ` : ''}go < ${s.outer} && gk < ${s.kEnd}) {
        let idx = ${s.base} + ${contK ? `go * ${s.ld} + gk` : `gk * ${s.ld} + go`};
        ${pre}
        ${assign}
      }
      for (var j = 0u; j < ${V}u; j++) { ${s.reg}[r * ${V}u + j] = v[j]; }
    }`;
}

/** Prefetch registers → the stage `buf` of workgroup array `smem` ([outer][BK + pad], k contiguous). */
function sgStageStore(s: SgStage, smem: string, buf: string): string {
  const { contK, V, total, per } = sgChunks(s);
  const ST = s.BK + SG_PAD;
  const size = s.R * ST;
  return `
    for (var r = 0u; r < ${per}u; r++) {
      ${sgChunkCoords(s)}
      if (e < ${total}u) {
        for (var j = 0u; j < ${V}u; j++) { ${smem}[${buf} * ${size}u + ${contK ? `oo * ${ST}u + kk + j` : `(oo + j) * ${ST}u + kk`}] = ${s.reg}[r * ${V}u + j]; }
      }
    }`;
}

function sgGemmKernel(spec: KernelSpec): string {
  const tile = spec.tile as SgTileConfig;
  const core = spec.sg!;
  const { BM, BN, BK, SGM, SGN } = tile;
  const { M: FM, N: FN, K: FK } = core.shape;
  const sg = subgroupMatrices({ mode: core.mode, shape: core.shape, result: 'f32', sizeControl: core.sizeControl });
  const NSG = SGM * SGN;
  const NT = sg.invocations(NSG);
  const WM = BM / SGM;
  const WN = BN / SGN;
  const TI = WM / FM; // accumulators per subgroup along M and N
  const TJ = WN / FN;
  const ST = BK + SG_PAD;
  const FE = FM * FN;
  const mut = core.mutation;

  const { decls, nf4, anyDrop } = kernelBindings(spec);

  const As: MatrixArray = { name: 'As', elem: 'f16', length: 2 * BM * ST };
  const Bs: MatrixArray = { name: 'Bs', elem: 'f16', length: 2 * BN * ST };
  const Cs: MatrixArray = { name: 'Cs', elem: 'f32', length: NSG * FE };

  const stages = (which: 'main' | 'pro', kEnd: string): [SgStage, SgStage] => {
    const [oa, ob, na, nb] = which === 'main' ? [spec.a, spec.b, 'A', 'B'] : [spec.pro!.u, spec.pro!.w, 'U', 'W'];
    const K = which === 'main' ? 'p.K' : 'p.R';
    const base = (x: string) => (which === 'main' ? x : '0u');
    return [
      {
        name: na,
        side: 'a',
        spec: oa,
        R: BM,
        BK,
        NT,
        outer: 'p.M',
        kEnd,
        ld: oa.trans ? 'p.M' : K,
        base: base('baseA'),
        o0: 'm0',
        reg: `pf_${which}_a`,
      },
      {
        name: nb,
        side: 'b',
        spec: ob,
        R: BN,
        BK,
        NT,
        outer: 'p.N',
        kEnd,
        ld: ob.trans ? K : 'p.N',
        base: base('baseB'),
        o0: 'n0',
        reg: `pf_${which}_b`,
      },
    ];
  };

  const accs: [number, number][] = [];
  for (let i = 0; i < TI; i++) for (let j = 0; j < TJ; j++) accs.push([i, j]);
  const acc = (i: number, j: number) => `acc_${i}_${j}`;

  // Fragments of one stage: left i at rows wm·WM + i·FM, right j at columns wn·WN + j·FN.
  const bStride = mut === 'stride' ? `${BK}u` : `${ST}u`;
  const bMajor = mut === 'major' ? 'row_major' : 'col_major';
  const compute = (buf: string) => {
    let body = '';
    for (let i = 0; i < TI; i++)
      body += `\n        ${sg.load('left', `fa_${i}`, As, `${buf} * ${BM * ST}u + (wm * ${WM}u + ${i * FM}u) * ${ST}u + kk`, `${ST}u`, 'row_major')}`;
    for (let j = 0; j < TJ; j++) {
      body += `\n        ${sg.load('right', `fb_${j}`, Bs, `${buf} * ${BN * ST}u + (wn * ${WN}u + ${j * FN}u) * ${ST}u + kk`, bStride, bMajor)}`;
      for (let i = 0; i < TI; i++) body += `\n        ${sg.mma(acc(i, j), `fa_${i}`, `fb_${j}`)}`;
    }
    return `
      for (var kk = 0u; kk < ${BK}u; kk += ${FK}u) {${body}
      }`;
  };

  // Slice t: prefetched registers → stage t % 2, barrier, issue the global loads of slice t + 1,
  // multiply stage t % 2. The stage written next was last read two slices ago, before this
  // slice's barrier: one barrier per slice.
  const loop = (which: 'main' | 'pro', kBegin: string, kEnd: string) => {
    const [a, b] = stages(which, kEnd);
    return `
  {
    var ${a.reg}: array<f16, ${sgChunks(a).per * a.spec.vec}>;
    var ${b.reg}: array<f16, ${sgChunks(b).per * b.spec.vec}>;
    if (${kBegin} < ${kEnd}) {${sgStageLoad(a, kBegin)}${sgStageLoad(b, kBegin)}
    }
    var buf = 0u;
    for (var k0 = ${kBegin}; k0 < ${kEnd}; k0 += ${BK}u) {${sgStageStore(a, 'As', 'buf')}${sgStageStore(b, 'Bs', 'buf')}
      ${mut === 'nobarrier' ? '' : 'workgroupBarrier();'}
      let kt = k0 + ${BK}u;
      if (kt < ${kEnd}) {${sgStageLoad(a, 'kt')}${sgStageLoad(b, 'kt')}
      }${compute('buf')}
      buf = buf ^ 1u;
    }
    workgroupBarrier(); // the stages are free again (a following loop or prologue reuses them)
  }`;
  };

  /**
   * For each accumulator: every subgroup stores it to its scratch fragment, then the whole workgroup
   * walks the scratch of all subgroups element by element (row m, column n of the output) running
   * `body` on `v` (f32, read from Cs[ci]).
   */
  const throughScratch = (i: number, j: number, body: string, reload: boolean) => `
  workgroupBarrier();
  ${sg.store(acc(i, j), Cs, `sg_id * ${FE}u`, `${FN}u`, 'row_major')}
  workgroupBarrier();
  for (var ci = lid; ci < ${NSG * FE}u; ci += ${NT}u) {
    let s = ci / ${FE}u;
    let f = ci % ${FE}u;
    let m = m0 + (s % ${SGM}u) * ${WM}u + ${i * FM}u + f / ${FN}u;
    let n = n0 + (s / ${SGM}u) * ${WN}u + ${j * FN}u + f % ${FN}u;
    let v = Cs[ci];
    ${body}
  }${
    reload
      ? `
  workgroupBarrier();
  ${sg.load('result', acc(i, j), Cs, `sg_id * ${FE}u`, `${FN}u`, 'row_major', { assign: true })}`
      : ''
  }`;

  let prologue = '';
  if (spec.pro) {
    prologue = loop('pro', '0u', 'p.R');
    if (spec.pro.mask) {
      for (const [i, j] of accs) {
        prologue += throughScratch(
          i,
          j,
          `Cs[ci] = v * select(0.0, p.pro_scale * p.inv_keep, rand_uniform(p.seed, m * p.N + n) >= p.drop_p);`,
          true,
        );
      }
    } else {
      for (const [i, j] of accs) prologue += `\n  ${sg.scale(acc(i, j), 'p.pro_scale')}`;
    }
  }

  const kRange = wgslKRange(spec.out === 'partial');
  const write = wgslWrite(spec.out, 'n', 'v');
  let epilogue = '';
  for (const [i, j] of accs) epilogue += throughScratch(i, j, `if (m < p.M && n < p.N) { ${write} }`, false);

  return /* wgsl */ `${sg.enable}${PARAMS}${wgslFormatHelpers(nf4 ? [nf4.kind] : [])}${anyDrop ? WGSL_RANDOM : ''}
${decls.join('\n')}
${sg.moduleDecls}
${WGSL_TO_F16}
var<workgroup> As: array<f16, ${As.length}>;
var<workgroup> Bs: array<f16, ${Bs.length}>;
var<workgroup> Cs: array<f32, ${Cs.length}>;
@compute @workgroup_size(${NT})${sg.attributes}
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${sg.entryParams}) {
  ${sg.prelude('lid')}
  let wm = sg_id % ${SGM}u;
  let wn = sg_id / ${SGM}u;
  let m0 = wid.y * ${BM}u;
  let n0 = wid.x * ${BN}u;
  ${kRange}
  let baseA = b * p.sA;
  let baseB = b * p.sB;
  ${accs.map(([i, j]) => sg.declare('result', acc(i, j))).join('\n  ')}${prologue}${loop('main', 'kBegin', 'kEnd')}
  let baseC = b * p.sC;${epilogue}
}`;
}

/**
 * The CPU-shaped kernel (TileConfig.direct): straight-line code generated per (layout, vector
 * width), each invocation owning rows m0..m0+TM-1 and columns n0..n0+TN-1. Loads of rows or columns
 * past the matrix are clamped to its last row or column (in bounds, results never stored), so the
 * inner loop has no branch; k runs in steps of 4 with a scalar tail.
 */
function gemmDirectKernel(spec: KernelSpec): string {
  const { BM, BN, TM, TN } = spec.tile as TileConfig;
  const WGX = BN / TN;
  const WGY = BM / TM;
  const RN = TN / 4;
  const A = spec.a;
  const B = spec.b;
  const range = (n: number) => Array.from({ length: n }, (_, j) => j);
  const C4 = ['x', 'y', 'z', 'w'];
  // One element of a binding, whatever its declared type.
  const elem = (name: string, o: OperandSpec, idx: string) =>
    o.vec === 4 ? `${name}[(${idx}) >> 2u][(${idx}) & 3u]` : `${name}[${idx}]`;
  const lines: string[] = [];
  // Clamped row / column indices and row bases.
  for (const i of range(TM)) lines.push(`let mi${i} = min(m0 + ${i}u, p.M - 1u);`);
  for (const j of range(TN)) lines.push(`let nj${j} = min(n0 + ${j}u, p.N - 1u);`);
  if (!A.trans) for (const i of range(TM)) lines.push(`let ra${i} = baseA + mi${i} * p.K;`);
  if (B.trans) for (const j of range(TN)) lines.push(`let rb${j} = baseB + nj${j} * p.K;`);
  if (A.trans && A.vec === 4) for (const g of range(TM / 4)) lines.push(`let ma${g} = min(m0 + ${4 * g}u, p.M - 4u);`);
  if (!B.trans && B.vec === 4) for (const q of range(RN)) lines.push(`let nb${q} = min(n0 + ${4 * q}u, p.N - 4u);`);
  for (const i of range(TM)) for (const q of range(RN)) lines.push(`var acc${i}_${q} = vec4f(0.0);`);

  // Main loop body: loads of 4 k-steps, then aVal(i, kk) / bVec(kk, q) expressions.
  const body: string[] = [];
  let aVal: (i: number, kk: number) => string;
  if (!A.trans) {
    for (const i of range(TM)) {
      body.push(
        A.vec === 4
          ? `let a${i} = A[(ra${i} + k) >> 2u];`
          : `let a${i} = vec4f(${range(4)
              .map((c) => `A[ra${i} + k + ${c}u]`)
              .join(', ')});`,
      );
    }
    aVal = (i, kk) => `a${i}.${C4[kk]}`;
  } else if (A.vec === 4) {
    for (const kk of range(4))
      for (const g of range(TM / 4)) body.push(`let a${kk}_${g} = A[(baseA + (k + ${kk}u) * p.M + ma${g}) >> 2u];`);
    aVal = (i, kk) => `a${kk}_${i >> 2}.${C4[i & 3]}`;
  } else {
    for (const kk of range(4)) body.push(`let ak${kk} = baseA + (k + ${kk}u) * p.M;`);
    aVal = (i, kk) => `A[ak${kk} + mi${i}]`;
  }
  let bVec: (kk: number, q: number) => string;
  if (B.trans) {
    for (const j of range(TN)) {
      body.push(
        B.vec === 4
          ? `let b${j} = B[(rb${j} + k) >> 2u];`
          : `let b${j} = vec4f(${range(4)
              .map((c) => `B[rb${j} + k + ${c}u]`)
              .join(', ')});`,
      );
    }
    bVec = (kk, q) =>
      `vec4f(${range(4)
        .map((c) => `b${4 * q + c}.${C4[kk]}`)
        .join(', ')})`;
  } else {
    for (const kk of range(4)) {
      body.push(`let bk${kk} = baseB + (k + ${kk}u) * p.N;`);
      for (const q of range(RN)) {
        body.push(
          B.vec === 4
            ? `let b${kk}_${q} = B[(bk${kk} + nb${q}) >> 2u];`
            : `let b${kk}_${q} = vec4f(${range(4)
                .map((c) => `B[bk${kk} + nj${4 * q + c}]`)
                .join(', ')});`,
        );
      }
    }
    bVec = (kk, q) => `b${kk}_${q}`;
  }
  for (const kk of range(4)) {
    for (const q of range(RN)) body.push(`let bv${kk}_${q} = ${bVec(kk, q)};`);
    for (const i of range(TM)) {
      body.push(`let av${kk}_${i} = vec4f(${aVal(i, kk)});`);
      for (const q of range(RN)) body.push(`acc${i}_${q} = fma(av${kk}_${i}, bv${kk}_${q}, acc${i}_${q});`);
    }
  }

  // Scalar tail: one k at a time.
  const tail: string[] = [];
  for (const i of range(TM))
    tail.push(`let t${i} = vec4f(${elem('A', A, A.trans ? `baseA + k * p.M + mi${i}` : `ra${i} + k`)});`);
  for (const q of range(RN)) {
    tail.push(
      `let u${q} = vec4f(${range(4)
        .map((c) => elem('B', B, B.trans ? `rb${4 * q + c} + k` : `baseB + k * p.N + nj${4 * q + c}`))
        .join(', ')});`,
    );
  }
  for (const i of range(TM)) for (const q of range(RN)) tail.push(`acc${i}_${q} = fma(t${i}, u${q}, acc${i}_${q});`);

  const kRange = wgslKRange(spec.out === 'partial');
  const write = wgslWrite(spec.out, 'n', 'v');
  const stores: string[] = [];
  for (const i of range(TM)) {
    const st: string[] = [];
    for (const q of range(RN))
      for (const c of range(4))
        st.push(
          `if (n0 + ${4 * q + c}u < p.N) { let n = n0 + ${4 * q + c}u; let v = acc${i}_${q}.${C4[c]}; ${write} }`,
        );
    stores.push(`if (m0 + ${i}u < p.M) {\n    let m = m0 + ${i}u;\n    ${st.join('\n    ')}\n  }`);
  }
  const ind = (xs: string[], n: number) => xs.join('\n' + ' '.repeat(n));
  return /* wgsl */ `${PARAMS}
${operandBindings('A', A, 1)[0]}
${operandBindings('B', B, 2)[0]}
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
@compute @workgroup_size(${WGX * WGY})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let m0 = wid.y * ${BM}u + (lid / ${WGX}u) * ${TM}u;
  let n0 = wid.x * ${BN}u + (lid % ${WGX}u) * ${TN}u;
  ${kRange}
  let baseA = b * p.sA;
  let baseB = b * p.sB;
  ${ind(lines, 2)}
  var k = kBegin;
  for (; k + 4u <= kEnd; k += 4u) {
    ${ind(body, 4)}
  }
  for (; k < kEnd; k++) {
    ${ind(tail, 4)}
  }
  let baseC = b * p.sC;
  ${ind(stores, 2)}
}`;
}

const SPLIT_REDUCE_KERNEL = ({ accumulate }: { accumulate: boolean }) => /* wgsl */ `
struct P { n: u32, splits: u32, alpha: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read_write> C: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 256u;
  if (i >= p.n) { return; }
  var s = 0.0;
  for (var k = 0u; k < p.splits; k++) { s += PART[k * p.n + i]; }
  C[i] = ${accumulate ? 'C[i] + ' : ''}p.alpha * s;
}`;

/** The split-K reduction: C (=|+=) alpha · Σ partials, in a fixed order. */
const SPLIT_REDUCE = kernelFamily<{ accumulate: boolean }>({
  family: 'gemm.splitk.reduce',
  specs: () => [{ accumulate: false }, { accumulate: true }],
  code: SPLIT_REDUCE_KERNEL,
});

// ---------------------------------------------------------------------------------------------
// Shapes, operands and the choice of variant

interface Geometry {
  batchShape: number[];
  batch: number;
  M: number;
  N: number;
  K: number;
  /** Batch strides (elements); 0 for an operand broadcast over the batch. */
  sA: number;
  sB: number;
}

function shapeOf(t: Tensor | Nf4Weight): readonly number[] {
  return t instanceof Tensor ? t.shape : t.shape;
}

export function operandKind(t: Tensor | Nf4Weight): OperandKind {
  if (!(t instanceof Tensor)) return isDoubleQuant(t.absmax) ? 'nf4dq' : 'nf4';
  if (t.dtype === 'f32' || t.dtype === 'bf16' || t.dtype === 'f16') return t.dtype;
  throw new TypeError(`gemm: operands must be f32, bf16, f16 or NF4, got ${t.dtype}`);
}

/** M, N, K and batching of op(A)·op(B); RangeError naming both shapes when they do not fit. */
export function gemmGeometry(a: GemmOperand, b: GemmOperand, what = 'matmul'): Geometry {
  const as = shapeOf(a.t);
  const bs = shapeOf(b.t);
  if (as.length < 2 || bs.length < 2) throw new RangeError(`${what}: operands need ≥ 2 dims, got [${as}] and [${bs}]`);
  if (!(a.t instanceof Tensor)) throw new TypeError(`${what}: an NF4 weight can only be the right operand`);
  const aB = as.slice(0, -2);
  const bB = bs.slice(0, -2);
  const [ar, ac] = as.slice(-2) as [number, number];
  const [br, bc] = bs.slice(-2) as [number, number];
  const [M, K] = a.trans ? [ac, ar] : [ar, ac];
  const [Kb, N] = b.trans ? [bc, br] : [br, bc];
  if (K !== Kb) {
    throw new RangeError(
      `${what}: inner dims differ: a [${as}]${a.trans ? 'ᵀ' : ''} · b [${bs}]${b.trans ? 'ᵀ' : ''} (${K} vs ${Kb})`,
    );
  }
  const sameBatch = aB.length === bB.length && aB.every((d, i) => d === bB[i]);
  if (!sameBatch && aB.length > 0 && bB.length > 0) {
    throw new RangeError(
      `${what}: batch dims [${aB}] and [${bB}] differ (they must match, or one operand must be 2-D)`,
    );
  }
  const batchShape = aB.length > 0 ? aB : bB;
  return {
    batchShape,
    batch: numelOf(batchShape),
    M,
    N,
    K,
    sA: aB.length > 0 ? M * K : 0,
    sB: bB.length > 0 ? K * N : 0,
  };
}

/** Elements per global load for an operand whose stored rows have `ld` elements. */
function vecWidth(kind: OperandKind, ld: number, numel: number): number {
  if (numel === 0) return 1;
  if (kind === 'f32') return ld % 4 === 0 ? 4 : 1;
  return ld % 8 === 0 ? 8 : 1;
}

function operandSpec(o: GemmOperand, side: 'a' | 'b', M: number, N: number, K: number): OperandSpec {
  const kind = operandKind(o.t);
  const trans = !!o.trans;
  const contK = side === 'a' ? !trans : trans;
  const ld = contK ? K : side === 'a' ? M : N;
  const numel = o.t instanceof Tensor ? o.t.numel : o.t.shape[0] * o.t.shape[1];
  if (o.dropout && (kind === 'nf4' || kind === 'nf4dq')) throw new TypeError('gemm: dropout on an NF4 operand');
  return { kind, trans, vec: vecWidth(kind, ld, numel), drop: !!o.dropout };
}

function operandTensors(t: Tensor | Nf4Weight): Tensor[] {
  return weightTensors(t);
}

/** Workgroup memory of a tile in bytes (both operands, both buffers when double-buffered). */
export function tileBytes(tile: TileConfig, compute: Compute): number {
  if (tile.direct) return 0;
  return (tile.double ? 2 : 1) * tile.BK * (tile.BM + tile.BN + 8) * (compute === 'f16' ? 2 : 4);
}

export type ShapeClass = 'small' | 'medium' | 'large' | 'skinny-n' | 'skinny-m';
export const SHAPE_CLASSES: readonly ShapeClass[] = ['small', 'medium', 'large', 'skinny-n', 'skinny-m'];

/**
 * The tuning class of a problem: skinny (a LoRA rank dimension against at least 256 rows or
 * columns), else by output size and work.
 */
export function shapeClass(M: number, N: number, K: number): ShapeClass {
  if (N <= 32 && M >= 256) return 'skinny-n';
  if (M <= 32 && N >= 256) return 'skinny-m';
  if (M * N >= 1 << 22) return 'large';
  if (M * N * K < 1 << 24) return 'small';
  return 'medium';
}

/** One tuned entry: the tile and split-K target for a (compute, shape class). */
export interface TunedEntry {
  tile: TileName;
  /** Workgroups to aim for by splitting K (0 or 1: never split). */
  splitTarget: number;
  /** What the tuner measured for the winner (informational). */
  gflops?: number;
}

export interface AdapterTuning {
  description: string;
  date: string;
  commit?: string;
  f32?: Partial<Record<ShapeClass, TunedEntry>>;
  f16?: Partial<Record<ShapeClass, TunedEntry>>;
  /** The subgroup-matrix core (f16 compute): an SG_TILES tile and the matrix shape per class. */
  sgmatrix?: Partial<
    Record<ShapeClass, { tile: SgTileName; shape: MatrixShapeName; splitTarget: number; gflops?: number }>
  >;
}

export interface TuningTable {
  version: 1;
  /** Keyed by adapterKey(vendor, device). */
  adapters: Record<string, AdapterTuning>;
}

export function adapterKey(info: { vendor: string; device: string; architecture?: string }): string {
  return `${info.vendor || 'unknown'}/${info.device || info.architecture || 'unknown'}`;
}

export interface ChoiceContext {
  features: ReadonlySet<FeatureName>;
  precision: Precision;
  /** Workgroup memory and invocation limits. */
  maxWorkgroupBytes: number;
  maxInvocations: number;
  /** CPU-shaped kernels (a software adapter, unless FINLLM_FORCE_GPU_SHAPES=1). */
  isSoftware: boolean;
  /** This adapter's tuned entries, if `npm run tune` has run on it. */
  tuning?: AdapterTuning;
  /** The adapter's subgroup-matrix configurations ([] when the feature is off or absent). */
  subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[];
  /** The adapter's subgroup sizes (0 when unknown). */
  subgroupSize?: { min: number; max: number };
}

/**
 * The native subgroup-matrix core this context can run: needs the feature, shader-f16, an offered
 * f16 → f32 configuration of a known shape (MATRIX_SHAPES order: 16×16×16 first), and 32-wide
 * subgroups (declared with subgroup-size-control, or the adapter's only size). Null when not.
 */
export function nativeMatrixCore(
  ctx: Pick<ChoiceContext, 'features' | 'subgroupMatrixConfigs' | 'subgroupSize'>,
): { shape: MatrixShapeName; sizeControl: boolean } | null {
  if (!ctx.features.has('chromium-experimental-subgroup-matrix') || !ctx.features.has('shader-f16')) return null;
  const shape = offeredShapes(ctx.subgroupMatrixConfigs ?? [], 'f32')[0];
  if (!shape) return null;
  if (ctx.features.has('subgroup-size-control')) return { shape, sizeControl: true };
  const sz = ctx.subgroupSize;
  return sz && sz.min === LOGICAL_SUBGROUP && sz.max === LOGICAL_SUBGROUP ? { shape, sizeControl: false } : null;
}

let emulatedShape: MatrixShapeName | null = null;

/**
 * Tests only: while set, every product that would run the f16 compute variant runs the emulated
 * subgroup-matrix core of this shape instead (the fp16-mixed model tests run through it).
 */
export function forceEmulatedMatrixCore(shape: MatrixShapeName | null): void {
  emulatedShape = shape;
}

export function sgTileFits(
  tile: SgTileConfig,
  shape: MatrixShape,
  ctx: Pick<ChoiceContext, 'maxWorkgroupBytes' | 'maxInvocations'>,
): boolean {
  return (
    sgTileValid(tile, shape) &&
    sgTileBytes(tile, shape) <= ctx.maxWorkgroupBytes &&
    tile.SGM * tile.SGN * LOGICAL_SUBGROUP <= ctx.maxInvocations
  );
}

/** Tile and split-K of the subgroup-matrix core: the tuned entry, else heuristics like the SIMT ones. */
function chooseSgTile(
  g: { M: number; N: number; K: number; batch: number },
  ctx: ChoiceContext,
  shapeName: MatrixShapeName,
): { tile: SgTileName; splitK: number } {
  const shape = MATRIX_SHAPES[shapeName];
  const cls = shapeClass(g.M, g.N, g.K);
  const tuned = ctx.tuning?.sgmatrix?.[cls];
  const splits = (tile: SgTileName, target: number) => {
    const t = SG_TILES[tile];
    const tiles = Math.ceil(g.M / t.BM) * Math.ceil(g.N / t.BN) * g.batch;
    return g.batch === 1 ? splitsFor(target, tiles, g.K, t.BK) : 1;
  };
  if (tuned && tuned.shape === shapeName && SG_TILES[tuned.tile] && sgTileFits(SG_TILES[tuned.tile], shape, ctx)) {
    return { tile: tuned.tile, splitK: splits(tuned.tile, tuned.splitTarget) };
  }
  let tile: SgTileName;
  if (cls === 'skinny-n') tile = 's64x32';
  else if (cls === 'skinny-m') tile = 's32x64';
  else
    tile =
      Math.ceil(g.M / 128) * Math.ceil(g.N / 128) * g.batch >= 128 && sgTileFits(SG_TILES.s128, shape, ctx)
        ? 's128'
        : 's64';
  if (!sgTileFits(SG_TILES[tile], shape, ctx)) tile = 's64';
  return { tile, splitK: splits(tile, ctx.isSoftware ? 1 : 256) };
}

export function tileFits(
  tile: TileConfig,
  compute: Compute,
  ctx: Pick<ChoiceContext, 'maxWorkgroupBytes' | 'maxInvocations'>,
): boolean {
  return (
    tileBytes(tile, compute) <= ctx.maxWorkgroupBytes && (tile.BM / tile.TM) * (tile.BN / tile.TN) <= ctx.maxInvocations
  );
}

/** Split count so that about `target` workgroups run, each slice at least 8 BK-slices deep. */
export function splitsFor(target: number, tiles: number, K: number, BK: number): number {
  if (target <= 1 || tiles >= target) return 1;
  return Math.max(1, Math.min(Math.ceil(target / tiles), Math.floor(K / (8 * BK)), 64));
}

const isDirect = (t: TileName): boolean => !!(TILES[t] as TileConfig).direct;

/** Whether a CPU-shaped tile runs this product (f32 operands and compute, no dropout, no prologue); else t64 does. */
function directTileTakes(compute: Compute, a: OperandKind, b: OperandKind, pro: boolean, drop: boolean): boolean {
  return compute === 'f32' && !pro && !drop && a === 'f32' && b === 'f32';
}

/**
 * The CPU-shaped tile of a problem: 4×8 outputs per invocation, 4×4 when that leaves fewer than
 * 256 invocations (lavapipe, fin-s training shapes: r4x8 2.9-3.1 GFLOP per CPU-second, r8x8
 * 1.9-2.4, r4x4 1.9-2.9, the tuned GPU-shaped tiles 0.8-1.9; bench/NOTES.md).
 */
export function directTileFor(g: { M: number; N: number; batch: number }): TileName {
  return Math.ceil(g.M / 4) * Math.ceil(g.N / 8) * g.batch >= 256 ? 'r4x8' : 'r4x4';
}

/**
 * The variant for one problem: compute from the precision and the features (f16 needs
 * shader-f16; `f16Ok` false keeps an operand that does not fit f16 on f32), the tile and split-K
 * from this adapter's tuned table, else from heuristics.
 */
export function chooseGemm(
  g: { M: number; N: number; K: number; batch: number },
  ctx: ChoiceContext,
  f16Ok = true,
): GemmChoice {
  const compute: Compute = ctx.precision === 'fp16-mixed' && ctx.features.has('shader-f16') && f16Ok ? 'f16' : 'f32';
  if (compute === 'f16') {
    const native = nativeMatrixCore(ctx);
    const shape = emulatedShape ?? native?.shape;
    if (shape) return { compute, ...chooseSgTile(g, ctx, shape), matrix: { shape, emulated: emulatedShape !== null } };
  }
  const cls = shapeClass(g.M, g.N, g.K);
  const tuned = ctx.tuning?.[compute]?.[cls];
  // Software adapters: the CPU-shaped kernels (the tuned GPU-shaped entries apply only when
  // FINLLM_FORCE_GPU_SHAPES turns the CPU shapes off); a tuned entry may itself be CPU-shaped.
  const tunedOk =
    tuned &&
    TILES[tuned.tile] &&
    tileFits(TILES[tuned.tile], compute, ctx) &&
    (!isDirect(tuned.tile) || ctx.isSoftware);
  if (tunedOk && !(ctx.isSoftware && compute === 'f32' && !isDirect(tuned.tile))) {
    const t = TILES[tuned.tile];
    const tiles = Math.ceil(g.M / t.BM) * Math.ceil(g.N / t.BN) * g.batch;
    return { compute, tile: tuned.tile, splitK: g.batch === 1 ? splitsFor(tuned.splitTarget, tiles, g.K, t.BK) : 1 };
  }
  let tile: TileName;
  if (cls === 'skinny-n') tile = 't64x32';
  else if (cls === 'skinny-m') tile = 't32x64';
  else {
    const tiles128 = Math.ceil(g.M / 128) * Math.ceil(g.N / 128) * g.batch;
    tile = tiles128 >= 256 ? (tileFits(TILES.t128d, compute, ctx) ? 't128d' : 't128') : 't64';
  }
  if (!tileFits(TILES[tile], compute, ctx)) tile = 't64';
  if (ctx.isSoftware && compute === 'f32') tile = directTileFor(g);
  const t = TILES[tile];
  const tiles = Math.ceil(g.M / t.BM) * Math.ceil(g.N / t.BN) * g.batch;
  // A GPU wants a few hundred workgroups in flight; a CPU adapter has a few cores and gains nothing.
  const target = ctx.isSoftware ? 1 : 256;
  return { compute, tile, splitK: g.batch === 1 ? splitsFor(target, tiles, g.K, t.BK) : 1 };
}

let contextCache: { dev: unknown; ctx: Omit<ChoiceContext, 'precision'> } | null = null;

/** The choice context of the engine's device (tuned table entry looked up once). */
export function deviceContext(): ChoiceContext {
  const dev = engine().dev;
  if (contextCache?.dev !== dev) {
    contextCache = {
      dev,
      ctx: {
        features: dev.features,
        maxWorkgroupBytes: dev.limits.maxComputeWorkgroupStorageSize,
        maxInvocations: dev.limits.maxComputeInvocationsPerWorkgroup,
        isSoftware: dev.info.cpuKernels,
        tuning: GEMM_TUNING.adapters[adapterKey(dev.info)],
        subgroupMatrixConfigs: dev.subgroupMatrixConfigs,
        subgroupSize: dev.subgroupSize,
      },
    };
  }
  return { ...contextCache.ctx, precision: computePrecision() };
}

// Weights whose magnitude exceeds the f16 range stay on the f32 variant in fp16-mixed (their
// products would otherwise be inf). The loader records max|w| of every weight it uploads.
const F16_MAX = 65504;
const outOfF16 = new WeakSet<object>();

/** Records the largest magnitude of a weight (called at load); above 65504 it keeps the f32 path. */
export function noteWeightRange(w: Tensor | Nf4Weight, maxAbs: number): void {
  if (!(maxAbs <= F16_MAX)) outOfF16.add(w instanceof Tensor ? w : w.codes);
  else outOfF16.delete(w instanceof Tensor ? w : w.codes);
}

/** Whether a weight fits f16 (unknown tensors, e.g. activations, are assumed to). */
export function fitsF16(w: Tensor | Nf4Weight): boolean {
  return !outOfF16.has(w instanceof Tensor ? w : w.codes);
}

// ---------------------------------------------------------------------------------------------
// Launch

function dropoutUniforms(u: Uniforms, d: Dropout | undefined): Uniforms {
  return u
    .u32(d ? d.seed >>> 0 : 0)
    .f32(d ? d.p : 0)
    .f32(d ? 1 / (1 - d.p) : 1)
    .u32(0)
    .u32(0);
}

function checkDropout(d: Dropout | undefined): void {
  if (d && !(d.p >= 0 && d.p < 1)) throw new RangeError(`gemm: dropout ${d.p} outside [0, 1)`);
}

interface Plan {
  g: Geometry;
  outShape: number[];
  R: number;
  choice: GemmChoice;
  spec: KernelSpec;
  key: string;
  kSplit: number;
  nSplits: number;
}

function plan(args: GemmArgs): Plan {
  const { a, b } = args;
  let g = gemmGeometry(a, b, 'gemm');
  const outShape = [...g.batchShape, g.M, g.N];
  // A batched, B 2-D, A not transposed: the batch folds into M (one big GEMM, better tiles).
  if (g.sB === 0 && g.sA !== 0 && !a.trans) g = { ...g, batchShape: [], batch: 1, M: g.batch * g.M, sA: 0 };
  const drops = [a.dropout, b.dropout, args.prologue?.dropout].filter((d) => d !== undefined);
  if (drops.length > 1) throw new Error('gemm: at most one dropout (A, B or the prologue) per product');
  for (const d of drops) checkDropout(d);
  const { M, N, K, batch } = g;
  const pro = args.prologue;
  let R = 0;
  if (pro) {
    if (batch !== 1 || outShape.length !== 2) throw new RangeError('gemm: a prologue needs 2-D operands');
    const pg = gemmGeometry(pro.u, pro.w, 'gemm prologue');
    if (pg.M !== M || pg.N !== N || pg.batch !== 1)
      throw new RangeError(`gemm prologue: op(u)·op(w) is [${pg.M}, ${pg.N}], the product is [${M}, ${N}]`);
    R = pg.K;
  }
  const ctx = deviceContext();
  const f16Ok = fitsF16(b.t) && fitsF16(a.t) && (!pro || (fitsF16(pro.u.t) && fitsF16(pro.w.t)));
  const forced = args.choice ?? {};
  const choice: GemmChoice = { ...chooseGemm(g, ctx, f16Ok), ...forced };
  // A forced SIMT tile or f32 compute without a forced core means the SIMT core.
  if (!forced.matrix && ((forced.tile !== undefined && forced.tile in TILES) || forced.compute === 'f32'))
    delete choice.matrix;
  if (choice.compute === 'f16' && !ctx.features.has('shader-f16'))
    throw new Error('gemm: the f16 variant needs shader-f16');
  // The CPU-shaped kernels read f32 operands only, without dropout or prologue.
  if (!choice.matrix && choice.tile in TILES && isDirect(choice.tile as TileName)) {
    if (!directTileTakes(choice.compute, operandKind(a.t), operandKind(b.t), !!pro, drops.length > 0)) {
      if (args.choice?.tile)
        throw new RangeError(
          `gemm: the CPU-shaped tile '${choice.tile}' takes f32 operands and f32 compute, without dropout or prologue`,
        );
      choice.tile = 't64';
    }
  }
  const tile: TileConfig | SgTileConfig | undefined = choice.matrix
    ? SG_TILES[choice.tile as SgTileName]
    : TILES[choice.tile as TileName];
  if (!tile) throw new RangeError(`gemm: unknown ${choice.matrix ? 'subgroup-matrix ' : ''}tile '${choice.tile}'`);
  let sg: SgCoreSpec | null = null;
  if (choice.matrix) {
    const m = choice.matrix;
    const shape = MATRIX_SHAPES[m.shape];
    if (choice.compute !== 'f16' || !shape)
      throw new RangeError(
        `gemm: the subgroup-matrix core needs f16 compute and a known shape (got ${choice.compute}, '${m.shape}')`,
      );
    if (!sgTileValid(tile as SgTileConfig, shape))
      throw new RangeError(`gemm: tile '${choice.tile}' does not divide into ${m.shape} fragments`);
    let sizeControl = false;
    if (!m.emulated) {
      assertOffered({ ...shape, result: 'f32' }, ctx.subgroupMatrixConfigs ?? [], 'gemm');
      const native = nativeMatrixCore(ctx);
      if (!native)
        throw new Error(
          'gemm: the native subgroup-matrix core needs chromium-experimental-subgroup-matrix, shader-f16 and 32-wide subgroups',
        );
      sizeControl = native.sizeControl;
    }
    sg = { shape, mode: m.emulated ? 'emulated' : 'native', sizeControl, mutation: m.mutation ?? null };
  }
  const splits = pro || batch !== 1 ? 1 : Math.max(1, Math.min(choice.splitK, Math.ceil(K / tile.BK)));
  const kSplit = Math.max(tile.BK, Math.ceil(K / splits / tile.BK) * tile.BK);
  const nSplits = splits > 1 ? Math.ceil(K / kSplit) : 1;
  const out: OutMode = nSplits > 1 ? 'partial' : args.accumulate ? 'accumulate' : 'store';
  const spec: KernelSpec = {
    compute: choice.compute,
    tile,
    tileName: choice.tile,
    a: operandSpec(a, 'a', M, N, K),
    b: operandSpec(b, 'b', M, N, K),
    pro: pro ? { u: operandSpec(pro.u, 'a', M, N, R), w: operandSpec(pro.w, 'b', M, N, R), mask: !!pro.dropout } : null,
    out,
    sg,
  };
  return { g, outShape, R, choice: { ...choice, splitK: nSplits }, spec, key: kernelKey(spec), kSplit, nSplits };
}

/** The variant gemm() would run for these arguments, its kernel spec and pipeline key (tests, the tuner). */
export function gemmPlan(args: GemmArgs): { choice: GemmChoice; key: string; spec: GemmKernelSpec } {
  const pl = plan(args);
  return { choice: pl.choice, key: pl.key, spec: pl.spec };
}

/** The WGSL of a kernel spec (either core). */
export function gemmKernelCode(spec: GemmKernelSpec): string {
  if (spec.sg) return sgGemmKernel(spec);
  return (spec.tile as TileConfig).direct ? gemmDirectKernel(spec) : gemmKernel(spec);
}

/**
 * C = alpha · ([prologue] + op(A)·op(B)), batched like matmul (equal batch dims, or one operand
 * 2-D and broadcast). Forward only (no autograd). Returns C (f32), or `accumulate` after adding
 * into it.
 */
export function gemm(args: GemmArgs): Tensor {
  const { a, b } = args;
  const pro = args.prologue;
  const { g, outShape, R, spec, kSplit, nSplits } = plan(args);
  const { M, N, K, batch } = g;
  const c = args.accumulate ?? Tensor.empty(outShape);
  if (args.accumulate && (c.numel !== numelOf(outShape) || c.dtype !== 'f32')) {
    throw new RangeError(`gemm: accumulate target [${c.shape}] ${c.dtype} does not hold the f32 result [${outShape}]`);
  }
  if (batch === 0 || M === 0 || N === 0) return c;
  const out = spec.out;
  const tile = spec.tile;
  const drop = a.dropout ?? b.dropout ?? pro?.dropout;
  const alpha = args.alpha ?? 1;
  const target = out === 'partial' ? Tensor.empty([nSplits, M, N]) : c;
  const tensors = [
    ...operandTensors(a.t),
    ...operandTensors(b.t),
    ...(pro ? [...operandTensors(pro.u.t), ...operandTensors(pro.w.t)] : []),
    target,
  ];
  const gx = Math.ceil(N / tile.BN);
  const gy = Math.ceil(M / tile.BM);
  const max = engine().dev.limits.maxComputeWorkgroupsPerDimension;
  if (gx > max || gy > max)
    throw new RangeError(`gemm: [${M}, ${N}] needs ${gx} × ${gy} workgroups, more than ${max} per dimension`);
  const zTotal = out === 'partial' ? nSplits : batch;
  for (let off = 0; off < zTotal; off += max) {
    const u = new Uniforms()
      .u32(M)
      .u32(N)
      .u32(K)
      .u32(out === 'partial' ? 0 : off)
      .u32(g.sA)
      .u32(g.sB)
      .u32(M * N)
      .u32(kSplit)
      .f32(alpha)
      .u32(R)
      .f32(pro?.scale ?? 1);
    GEMM.dispatch(spec, tensors, [gx, gy, Math.min(max, zTotal - off)], dropoutUniforms(u, drop));
  }
  if (out === 'partial') {
    const n = M * N;
    SPLIT_REDUCE.dispatch(
      { accumulate: !!args.accumulate },
      [target, c],
      grid1d(n),
      new Uniforms().u32(n).u32(nSplits).f32(alpha).u32(0),
    );
    target.dispose();
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// The variant table of the subgroup-matrix core (check:kernels, tests, the Null compile check)

export interface GemmVariantOperand {
  kind: OperandKind;
  trans?: boolean;
  drop?: boolean;
}

/** One problem that selects one kernel: its operands, epilogue and the core's tile and shape. */
export interface GemmVariantCase {
  /** What the case covers (loader and epilogue). */
  what: string;
  M: number;
  N: number;
  K: number;
  a: GemmVariantOperand;
  b: GemmVariantOperand;
  alpha?: number;
  accumulate?: boolean;
  splitK?: number;
  pro?: { R: number; u: GemmVariantOperand; w: GemmVariantOperand; mask?: boolean };
  tile: SgTileName;
  shape: MatrixShapeName;
}

/**
 * Loaders × epilogues, each case once (shapes odd: 1, primes, non-multiples of every tile; a K
 * multiple of 8 where a case needs whole 8-element loads). Every loader: f32 rounded to f16, f16,
 * bf16, NF4, NF4 double-quant, vector and scalar loads, both storage layouts; every epilogue: store,
 * alpha, accumulate, split-K partials, operand dropout, the fused LoRA prologue with and without
 * its dropout mask.
 */
export const GEMM_SG_CASES: readonly Omit<GemmVariantCase, 'tile' | 'shape'>[] = [
  {
    what: 'f32→f16 forward x·Wᵀ, vec4, alpha',
    M: 67,
    N: 37,
    K: 40,
    a: { kind: 'f32' },
    b: { kind: 'f32', trans: true },
    alpha: 0.75,
  },
  { what: 'f16 · bf16ᵀ, 8 halves per load', M: 37, N: 71, K: 48, a: { kind: 'f16' }, b: { kind: 'bf16', trans: true } },
  {
    what: 'f32ᵀ · f16, scalar outer-contiguous loads, accumulate',
    M: 41,
    N: 29,
    K: 37,
    a: { kind: 'f32', trans: true },
    b: { kind: 'f16' },
    accumulate: true,
  },
  { what: 'NF4 forward x·Wᵀ, code words', M: 43, N: 67, K: 64, a: { kind: 'f32' }, b: { kind: 'nf4', trans: true } },
  {
    what: 'NF4 input gradient g·W (f16 g), accumulate',
    M: 31,
    N: 72,
    K: 37,
    a: { kind: 'f16' },
    b: { kind: 'nf4' },
    accumulate: true,
  },
  { what: 'NF4 double-quant, per element', M: 1, N: 67, K: 37, a: { kind: 'f32' }, b: { kind: 'nf4dq', trans: true } },
  {
    what: 'split-K partials, dropout on A, alpha',
    M: 29,
    N: 13,
    K: 301,
    a: { kind: 'f32', trans: true, drop: true },
    b: { kind: 'f32' },
    splitK: 4,
    alpha: 2,
  },
  {
    what: 'fused LoRA up-projection x·Wᵀ + s·(u·Bᵀ), NF4 W',
    M: 53,
    N: 70,
    K: 64,
    a: { kind: 'f32' },
    b: { kind: 'nf4', trans: true },
    pro: { R: 12, u: { kind: 'f32' }, w: { kind: 'f32', trans: true } },
  },
  {
    what: 'dX = g·W + mask ⊙ (gu·A)/(1−p), bf16 W',
    M: 47,
    N: 70,
    K: 37,
    a: { kind: 'f32' },
    b: { kind: 'bf16' },
    pro: { R: 5, u: { kind: 'f32' }, w: { kind: 'f32' }, mask: true },
  },
  {
    what: 'f16 B with dropout, size-1 K, accumulate',
    M: 5,
    N: 3,
    K: 1,
    a: { kind: 'bf16', trans: true },
    b: { kind: 'f16', trans: true, drop: true },
    accumulate: true,
  },
];

function offlineOperand(o: GemmVariantOperand, side: 'a' | 'b', M: number, N: number, K: number): OperandSpec {
  const contK = side === 'a' ? !o.trans : !!o.trans;
  const ld = contK ? K : side === 'a' ? M : N;
  return { kind: o.kind, trans: !!o.trans, vec: vecWidth(o.kind, ld, M * N * K), drop: !!o.drop };
}

/** The kernel spec gemm() builds for a case, derived without a device (the variant tables). */
export function gemmVariantSpec(
  c: GemmVariantCase,
  mode: 'native' | 'emulated',
  mutation: GemmMutation | null = null,
): GemmKernelSpec {
  const tile = SG_TILES[c.tile];
  const splits = c.pro ? 1 : Math.max(1, Math.min(c.splitK ?? 1, Math.ceil(c.K / tile.BK)));
  const kSplit = Math.max(tile.BK, Math.ceil(c.K / splits / tile.BK) * tile.BK);
  const partial = splits > 1 && Math.ceil(c.K / kSplit) > 1;
  return {
    compute: 'f16',
    tile,
    tileName: c.tile,
    a: offlineOperand(c.a, 'a', c.M, c.N, c.K),
    b: offlineOperand(c.b, 'b', c.M, c.N, c.K),
    pro: c.pro
      ? {
          u: offlineOperand(c.pro.u, 'a', c.M, c.N, c.pro.R),
          w: offlineOperand(c.pro.w, 'b', c.M, c.N, c.pro.R),
          mask: !!c.pro.mask,
        }
      : null,
    out: partial ? 'partial' : c.accumulate ? 'accumulate' : 'store',
    sg: { shape: MATRIX_SHAPES[c.shape], mode, sizeControl: mode === 'native', mutation },
  };
}

/** The shapes the emulation verifies (NVIDIA's two and Intel's: non-square ones catch swapped dimensions) plus Apple's. */
// (The NF4 forward loader of case 3 runs in case 7, the fused LoRA forward.)
const EMULATED_PLAN: Record<MatrixShapeName, number[]> = {
  m16n16k16: [0, 7, 9],
  m16n8k16: [1, 4, 6],
  m8n16k16: [2, 5, 8],
  m8n8k8: [0],
};

let caseRows: VariantRow<GemmKernelSpec>[] | null = null;

/**
 * Every subgroup-matrix GEMM variant of the case table: native ones for every tile × shape × case
 * (compiled on Null), emulated ones for a covering set on the tiles that fit 32 KiB (each case under
 * each of the three main shapes' plans at least once; run against float64). A row's verifier input is
 * its case: checkEmulatedGemm runs it through gemm().
 */
function gemmCaseRows(): VariantRow<GemmKernelSpec>[] {
  if (caseRows) return caseRows;
  const out: VariantRow<GemmKernelSpec>[] = [];
  const add = (c: GemmVariantCase, mode: 'native' | 'emulated') =>
    out.push({ spec: gemmVariantSpec(c, mode), name: `${mode} ${c.shape} ${c.tile}: ${c.what}`, check: c });
  for (const shape of MATRIX_SHAPE_NAMES) {
    for (const tile of SG_TILE_NAMES) {
      if (!sgTileValid(SG_TILES[tile], MATRIX_SHAPES[shape])) continue;
      for (const c of GEMM_SG_CASES) add({ ...c, tile, shape }, 'native');
    }
  }
  for (const shape of MATRIX_SHAPE_NAMES) {
    for (const i of EMULATED_PLAN[shape]) {
      const c = GEMM_SG_CASES[i]!;
      const tile: SgTileName = c.N < 32 && c.M >= 32 ? 's64x32' : c.M < 32 && c.N >= 32 ? 's32x64' : 's64';
      add({ ...c, tile, shape }, 'emulated');
    }
  }
  caseRows = out;
  return out;
}

/** The variants of the subgroup-matrix case table (the first rows of the GEMM family's table). */
export function gemmVariants(): KernelVariant[] {
  return GEMM.variants().slice(0, gemmCaseRows().length);
}

// ---------------------------------------------------------------------------------------------
// The variant table of the SIMT and CPU-shaped cores: the products callers launch
//
// Every product the engine runs through gemm() is one of GEMM_CALLER_PRODUCTS. Each of its operands
// is an activation or gradient (f32), a saved activation (f32, or f16 in fp16-mixed: activations.ts),
// a frozen base weight (f32, bf16, f16 or NF4, either precision) or a LoRA matrix (f32), stored with
// its rows along one model dimension (in, out or the LoRA rank r). The rest comes from the code that
// chooses: the load widths from vecWidth over every residue of those dimensions (a dimension shared
// by two operands gives both the same residue), compute from the precision (f32 in fp32; f16 in
// fp16-mixed, or f32 for a product with a base weight beyond the f16 range), the tiles and whether
// split-K happens from chooseGemm over probe shapes in every context it distinguishes (software or
// not, each tuned adapter of gemm-tuning.json or none, workgroup memory 16 or 32 KiB), and the
// CPU-shaped tiles' fallback to t64 from directTileTakes, as plan() applies it. The subgroup-matrix
// core's table is the one above (GEMM_SG_CASES).

/** Where an operand comes from, which decides its element kinds. */
type OperandRole = 'act' | 'saved' | 'weight' | 'lora';
/** The model dimension an operand's stored rows run along (its load width depends on it). */
type ModelDim = 'in' | 'out' | 'r';

interface CallerOperand {
  role: OperandRole;
  dim: ModelDim;
  trans?: boolean;
  /** The caller applies LoRA dropout to it, or not (both are launched). */
  drop?: boolean;
}

/** One product a caller launches (2-D: the callers fold leading dimensions into rows). */
export interface GemmCallerProduct {
  what: string;
  a: CallerOperand;
  b: CallerOperand;
  accumulate?: boolean;
  /** The fused LoRA prologue; `mask`: with and without its dropout mask. */
  pro?: { u: CallerOperand; w: CallerOperand; mask?: boolean };
}

/** The products of matmul.ts (linear, nf4Linear), lora.ts and linear-crossentropy.ts. */
export const GEMM_CALLER_PRODUCTS: readonly GemmCallerProduct[] = [
  {
    what: 'y = x·Wᵀ (linear, nf4Linear, loss-head logits)',
    a: { role: 'act', dim: 'in' },
    b: { role: 'weight', dim: 'in', trans: true },
  },
  {
    what: 'dX = dY·W (linear, nf4Linear, loss-head)',
    a: { role: 'act', dim: 'out' },
    b: { role: 'weight', dim: 'in' },
  },
  {
    what: 'dW = dYᵀ·x (linear, trainable W)',
    a: { role: 'act', dim: 'out', trans: true },
    b: { role: 'saved', dim: 'in' },
  },
  {
    what: 'dW = dlogitsᵀ·h (loss-head)',
    a: { role: 'act', dim: 'out', trans: true },
    b: { role: 'act', dim: 'in' },
  },
  {
    what: 'u = drop(x)·Aᵀ (LoRA)',
    a: { role: 'act', dim: 'in', drop: true },
    b: { role: 'lora', dim: 'in', trans: true },
  },
  {
    what: 'y += s·u·Bᵀ (LoRA, decode rows)',
    a: { role: 'act', dim: 'r' },
    b: { role: 'lora', dim: 'r', trans: true },
    accumulate: true,
  },
  {
    what: 'y = x·Wᵀ + s·u·Bᵀ (LoRA)',
    a: { role: 'act', dim: 'in' },
    b: { role: 'weight', dim: 'in', trans: true },
    pro: { u: { role: 'act', dim: 'r' }, w: { role: 'lora', dim: 'r', trans: true } },
  },
  { what: 'gu = s·dY·B (LoRA)', a: { role: 'act', dim: 'out' }, b: { role: 'lora', dim: 'r' } },
  {
    what: 'dA = guᵀ·drop(x) (LoRA)',
    a: { role: 'act', dim: 'r', trans: true },
    b: { role: 'saved', dim: 'in', drop: true },
  },
  { what: 'dB = s·dYᵀ·u (LoRA)', a: { role: 'act', dim: 'out', trans: true }, b: { role: 'saved', dim: 'r' } },
  {
    what: 'dX = dY·W + mask ⊙ (gu·A)/(1−p) (LoRA)',
    a: { role: 'act', dim: 'out' },
    b: { role: 'weight', dim: 'in' },
    pro: { u: { role: 'act', dim: 'r' }, w: { role: 'lora', dim: 'in' }, mask: true },
  },
];

function roleKinds(role: OperandRole, precision: Precision): readonly OperandKind[] {
  if (role === 'weight') return ['f32', 'bf16', 'f16', 'nf4', 'nf4dq'];
  if (role === 'saved') return precision === 'fp16-mixed' ? ['f16'] : ['f32'];
  return ['f32'];
}

/** A SIMT / CPU-shaped tile chooseGemm picks for some problem, and whether it then splits K. */
interface ReachableTile {
  compute: Compute;
  tile: TileName;
  splitK: boolean;
}

/**
 * The SIMT and CPU-shaped (compute, tile) choices chooseGemm makes, with whether it splits K for
 * them: every probe shape (each tuning class, few and many workgroups, shallow and deep K) in every
 * context it distinguishes (software or not, each tuned adapter or none, 16 or 32 KiB of workgroup
 * memory, each precision, weights within f16 range or not).
 */
export function reachableGemmTiles(): ReachableTile[] {
  const found = new Map<string, ReachableTile>();
  const sizes = [1, 5, 32, 100, 256, 700, 1500, 3000, 8000];
  const depths = [8, 100, 1000, 5000, 20000];
  for (const isSoftware of [false, true])
    for (const tuning of [undefined, ...Object.values(GEMM_TUNING.adapters)])
      for (const maxWorkgroupBytes of [16384, 32768])
        for (const precision of ['fp32', 'fp16-mixed'] as const)
          for (const f16Ok of [true, false]) {
            const ctx: ChoiceContext = {
              features: new Set<FeatureName>(['shader-f16']),
              precision,
              maxWorkgroupBytes,
              maxInvocations: 256,
              isSoftware,
              ...(tuning ? { tuning } : {}),
            };
            for (const M of sizes)
              for (const N of sizes)
                for (const K of depths) {
                  const c = chooseGemm({ M, N, K, batch: 1 }, ctx, f16Ok);
                  const key = `${c.compute} ${c.tile}`;
                  const prev = found.get(key);
                  if (!prev) found.set(key, { compute: c.compute, tile: c.tile as TileName, splitK: c.splitK > 1 });
                  else prev.splitK ||= c.splitK > 1;
                }
          }
  return [...found.values()];
}

/** Dimension residues that decide load widths: a multiple of 8, 4 mod 8, and neither. */
const DIM_RESIDUES = [16, 12, 7];

let callerSpecs: { spec: GemmKernelSpec; what: string }[] | null = null;

/** Every SIMT / CPU-shaped kernel spec the callers' products produce (see GEMM_CALLER_PRODUCTS). */
export function gemmCallerSpecs(): { spec: GemmKernelSpec; what: string }[] {
  callerSpecs ??= deriveCallerSpecs();
  return callerSpecs;
}

function deriveCallerSpecs(): { spec: GemmKernelSpec; what: string }[] {
  const out = new Map<string, { spec: GemmKernelSpec; what: string }>();
  const reachable = reachableGemmTiles();
  const both = (optional: boolean | undefined) => (optional ? [false, true] : [false]);
  for (const product of GEMM_CALLER_PRODUCTS) {
    const { a, b, pro } = product;
    for (const precision of ['fp32', 'fp16-mixed'] as const) {
      // fp16-mixed keeps f32 compute for products with a base weight beyond the f16 range (fitsF16).
      const computes: Compute[] =
        precision === 'fp32' ? ['f32'] : a.role === 'weight' || b.role === 'weight' ? ['f16', 'f32'] : ['f16'];
      for (const dIn of DIM_RESIDUES)
        for (const dOut of DIM_RESIDUES)
          for (const dR of DIM_RESIDUES) {
            const dims: Record<ModelDim, number> = { in: dIn, out: dOut, r: dR };
            // The specs one operand can have: its role's kinds, with and without its dropout.
            const specsOf = (o: CallerOperand): OperandSpec[] =>
              roleKinds(o.role, precision).flatMap((kind) =>
                both(o.drop).map((drop) => ({ kind, trans: !!o.trans, vec: vecWidth(kind, dims[o.dim], 1), drop })),
              );
            const pros = pro
              ? specsOf(pro.u).flatMap((u) =>
                  specsOf(pro.w).flatMap((w) => both(pro.mask).map((mask) => ({ u, w, mask }))),
                )
              : [null];
            for (const compute of computes)
              for (const sa of specsOf(a))
                for (const sb of specsOf(b))
                  for (const sp of pros) {
                    const direct = directTileTakes(compute, sa.kind, sb.kind, !!sp, sa.drop || sb.drop || !!sp?.mask);
                    for (const r of reachable) {
                      if (r.compute !== compute) continue;
                      const tileName: TileName = isDirect(r.tile) && !direct ? 't64' : r.tile;
                      const outs: OutMode[] = [product.accumulate ? 'accumulate' : 'store'];
                      if (r.splitK && !sp) outs.push('partial');
                      for (const o of outs) {
                        const spec: GemmKernelSpec = {
                          compute,
                          tile: TILES[tileName],
                          tileName,
                          a: sa,
                          b: sb,
                          pro: sp,
                          out: o,
                          sg: null,
                        };
                        const key = kernelKey(spec);
                        if (!out.has(key)) out.set(key, { spec, what: product.what });
                      }
                    }
                  }
          }
    }
  }
  return [...out.values()];
}

function operandName(o: OperandSpec): string {
  return `${o.kind}${o.trans ? 'ᵀ' : ''}/${o.vec}${o.drop ? ' dropout' : ''}`;
}

/** A caller product's operands, as variant names show them: `a · b + (u · w, masked) (what)`. */
function productName(spec: GemmKernelSpec, what: string): string {
  const pro = spec.pro
    ? ` + (${operandName(spec.pro.u)} · ${operandName(spec.pro.w)}${spec.pro.mask ? ', masked' : ''})`
    : '';
  return `${operandName(spec.a)} · ${operandName(spec.b)}${pro} (${what})`;
}

/** The SIMT and CPU-shaped variants: every spec of gemmCallerSpecs, compiled on Null as plain WGSL. */
function gemmCallerRows(): VariantRow<GemmKernelSpec>[] {
  return gemmCallerSpecs().map(({ spec, what }) => ({
    spec,
    name: `${spec.compute} ${spec.tileName} ${spec.out}: ${productName(spec, what)}`,
  }));
}

let callerSgSpecs: { spec: GemmKernelSpec; what: string }[] | null = null;

/**
 * Every subgroup-matrix kernel spec the callers' products produce on a device with the native core:
 * the loaders and epilogues of their f16-compute specs (gemmCallerSpecs) on every tile of every
 * matrix shape, split-K partials for products without a prologue, with and without subgroup-size
 * control (the device decides which: nativeMatrixCore).
 */
export function gemmCallerSgSpecs(): { spec: GemmKernelSpec; what: string }[] {
  callerSgSpecs ??= deriveCallerSgSpecs();
  return callerSgSpecs;
}

function deriveCallerSgSpecs(): { spec: GemmKernelSpec; what: string }[] {
  const out = new Map<string, { spec: GemmKernelSpec; what: string }>();
  for (const { spec, what } of gemmCallerSpecs()) {
    if (spec.compute !== 'f16' || spec.out === 'partial') continue;
    const outs: OutMode[] = spec.pro ? [spec.out] : [spec.out, 'partial'];
    for (const shapeName of MATRIX_SHAPE_NAMES)
      for (const tileName of SG_TILE_NAMES) {
        const shape = MATRIX_SHAPES[shapeName];
        const tile = SG_TILES[tileName];
        if (!sgTileValid(tile, shape)) continue;
        for (const o of outs)
          for (const sizeControl of [true, false]) {
            const sg: GemmKernelSpec = {
              ...spec,
              tile,
              tileName,
              out: o,
              sg: { shape, mode: 'native', sizeControl, mutation: null },
            };
            const key = kernelKey(sg);
            if (!out.has(key)) out.set(key, { spec: sg, what });
          }
      }
  }
  return [...out.values()];
}

/** The native subgroup-matrix variants of the callers' products (those the case table does not already list). */
function gemmCallerSgRows(listed: ReadonlySet<string>): VariantRow<GemmKernelSpec>[] {
  return gemmCallerSgSpecs()
    .filter(({ spec }) => !listed.has(kernelKey(spec)))
    .map(({ spec, what }) => {
      const sg = spec.sg!;
      return {
        spec,
        name: `native ${sg.shape.M}x${sg.shape.N}x${sg.shape.K} ${spec.tileName}${sg.sizeControl ? '' : ' fixed-size'} ${spec.out}: ${productName(spec, what)}`,
      };
    });
}

/**
 * The GEMM family: gemm() launches through it, and its table is the three above (the subgroup-matrix
 * cases, native and emulated; the callers' SIMT / CPU-shaped products, portable; their native
 * subgroup-matrix twins). Each spec says its mode: its core's, or portable for the SIMT core.
 */
const GEMM = kernelFamily<GemmKernelSpec>({
  family: 'gemm',
  rows: () => {
    const cases = gemmCaseRows();
    const listed = new Set(cases.filter((r) => r.spec.sg?.mode === 'native').map((r) => kernelKey(r.spec)));
    return [...cases, ...gemmCallerRows(), ...gemmCallerSgRows(listed)];
  },
  code: gemmKernelCode,
  mode: (spec) => spec.sg?.mode ?? 'portable',
  // Without size control a native kernel relies on the device's subgroups being exactly 32 wide.
  moduleOnly: (spec) => spec.sg?.mode === 'native' && !spec.sg.sizeControl,
  workgroupBytes: (spec) =>
    spec.sg ? sgTileBytes(spec.tile as SgTileConfig, spec.sg.shape) : tileBytes(spec.tile as TileConfig, spec.compute),
});
