// Flash attention on the portable f32 SIMT path: forward (tiled for prefill/training, split along the
// KV length for decoding, "flash-decoding"), FlashAttention-2 backward, head dims 4..256 (multiples
// of 4), q/k/v in f32 or packed f16 (unpacked in-kernel; outputs, softmax state and gradients f32;
// backward also reads the saved output in f16, as fp16-mixed training keeps it).
//
// Layouts (the natural ones after the q/k/v projections, no transposes):
//   q, out [B, T, Hq, Dh];  k, v [B, Sk, Hkv, Dh] of which the first S = kvLength rows are used (a KV
//   cache may be larger);  lse [B, Hq, T] (natural log, −∞ for a row that sees no key);
//   segmentIds i32 [B·T] (sequence packing, needs T == S).
// Query row i (of T) sees key j (of S) iff  (¬causal ∨ j ≤ i + qOffset) ∧ (¬segments ∨ seg_i = seg_j)
//   ∧ j ≥ kvStart[b] (optional i32 [B], left-padded batched decoding; forward only).
// GQA/MQA: query head h reads kv head h / (Hq/Hkv); K/V are never repeated in memory.
//
// Work decomposition (all kernels). A row (a query row in the forward and dQ, a key row in dK/dV) is
// owned by TPR threads; each holds a slice of WV vec4 of the row's operands and accumulators in
// registers (sliceGeometry: the power of two TPR that pads the head dim least with WV ≤ 5, e.g. Dh 64:
// 4 × 4 vec4, Dh 80: 4 × 5, Dh 96: 8 × 3, Dh 128: 8 × 4, Dh 256: 16 × 4). K/V (or Q/dO) blocks of BLOCK
// rows are staged in workgroup memory as f32; scores are computed CH keys at a time (8 in the forward,
// 4 in the backward), each lane summing its slice's partial dot products, then the TPR partials are
// summed ("exchange"):
//   - workgroup: through workgroup memory, two barriers per step (portable);
//   - subgroup: an xor butterfly of subgroup shuffles, no barrier (needs `subgroups`, TPR ≤ the
//     subgroup size). Rows are then mapped to lanes through a per-subgroup index taken from a
//     workgroup atomic, so a row's lanes are adjacent in one subgroup whatever the driver's layout.
// Both give every lane of a row bitwise the same sums (commutative pairwise adds, same order), so the
// online softmax state (running max m and sum l, log2 domain: q is pre-scaled by scale·log2 e) is
// identical across the row's lanes without further communication.
//
// Kernels:
//  - attnForward, tiled: a workgroup owns ROWS query rows of one (b, h); key blocks past the causal
//    limit or before kvStart, and blocks whose segment-id range cannot meet the query block's, are
//    skipped whole.
//  - attnForward, split (the same pipeline, a uniform flag): a workgroup owns ROWS of the group·T
//    (query head, position) pairs that share one kv head — K/V are read once for the whole GQA group —
//    and one chunk of the KV length; grid = row blocks × chunks × Hkv × B, so a single decoding
//    sequence still fills the GPU. With one chunk it writes the output directly; otherwise it writes
//    unnormalized partials (o, m, l) and attnCombine merges them by logsumexp.
//  - attnBackwardDot: D_i = rowsum(dO_i ∘ O_i), the FlashAttention-2 pre-pass.
//  - attnBackwardDq: per query block, recomputes P = exp(s − lse); dS = P ∘ (dO·vᵀ − D); dQ = scale·dS·K.
//  - attnBackwardDkv: per block of ROWS keys of one (b, kv head), loops over the query heads sharing it
//    and over query blocks staged in workgroup memory: dV = Pᵀ·dO, dK = scale·dSᵀ·Q. The GQA sum
//    happens in one thread's registers: deterministic, no atomics.
// Fully masked rows produce 0 output, lse = −∞ and zero gradients, never NaN: invisible keys are
// excluded by explicit flags, never by −∞ arithmetic.
//
// Compile time. Lavapipe compiles WGSL through NIR into LLVM, where every workgroup- or storage-memory
// access becomes per-lane branches and barriers become coroutine suspend points; compile time grows
// faster than linearly with the number of such accesses (bench/attention-compile.ts measures each
// kernel). So no kernel unrolls over the head dim: a row's slice is <= 5 vec4 and the per-step code
// loops over it. On GPUs that loop has the constant trip count WV, the driver unrolls it and the slice
// arrays live in registers; on software adapters the trip count is a uniform and the body is compiled
// once. The step loop has a runtime trip count, the head dim is a uniform (one pipeline per slice
// geometry), and the backward takes 4 keys per step.
// GPU trade-off: spreading a row over TPR threads keeps 32-80 f32 of row state per thread (more warps
// in flight) at the cost of the exchange per score vec4; rows per workgroup are 64 up to TPR = 4 and
// 256/TPR above, so K/V staging is shared by fewer rows at Dh > 64.
import { isGradEnabled, recordOp } from '../engine/autograd.js';
import type { FeatureName, SubgroupMatrixConfig } from '../engine/device.js';
import { computePrecision, type Precision } from '../engine/precision.js';
import { type DType, engine, Tensor } from '../engine/tensor.js';
import { saveActivation } from './activations.js';
import {
  CPU_MAX_DH,
  type CpuAttentionKind,
  cpuAttention,
  cpuAttentionGrid,
  cpuAttentionSpec,
} from './attention-cpu.js';
import {
  SG_HEAD_DIMS,
  SG_SHAPES,
  SG_WIDTH,
  type SgAttentionPass,
  type SgAttentionSpec,
  sgAttention,
  sgAttentionSharedBytes,
  sgAttentionSpec,
  sgWorkgroupSize,
} from './attention-sgmatrix.js';
import { backwardInputBindings, HEADER, inputBinding, MASK_FLAGS, qkvBindings, visible } from './attention-wgsl.js';
import { assertDtype, grid1d, specKey, Uniforms } from './common.js';
import {
  assertOffered,
  isOffered,
  MATRIX_SHAPES,
  type MatrixMode,
  type MatrixShape,
  type MatrixShapeName,
} from './sgmatrix.js';
import { type KernelFamily, kernelFamily } from './variants.js';

export interface FlashAttentionOptions {
  causal: boolean;
  /** Softmax scale; default 1/sqrt(Dh). */
  scale?: number;
  /** i32 [B·T] segment ids for sequence packing (requires T == S): tokens attend only within their segment. */
  segmentIds?: Tensor;
  /** Position of q's first row within the key sequence (decode with a KV cache: the cached length). Default 0. */
  qOffset?: number;
  /** Number of valid k/v rows (default: k.shape[1]); rows past it are never read for scores. */
  kvLength?: number;
  /**
   * i32 [B]: first valid key of each batch row (left-padded batched decoding): keys j < kvStart[b]
   * are invisible to every query of row b. Forward only: using it with autograd throws.
   */
  kvStart?: Tensor;
}

/** How the TPR lanes of a row sum their partial dot products. */
export type Exchange = 'workgroup' | 'subgroup';
/** Forward work layout: query blocks of one head (prefill, training) or GQA rows × KV chunks (decoding). */
export type ForwardLayout = 'tiled' | 'split';
export type ForwardVariant = 'auto' | ForwardLayout;

/** Tile and variant overrides, for tests (small tiles make small shapes span many blocks) and tuning. */
export interface AttentionTiles {
  /** Rows per workgroup: query rows (forward, dQ) / key rows (dK/dV). */
  rows?: number;
  /** Rows staged per block: key rows (forward, dQ) / query rows (dK/dV); a multiple of 8. */
  block?: number;
  /** Exchange of partial dot products (default: the chooser's, by features and shape). */
  exchange?: Exchange;
  /** Split layout: number of KV chunks (default from the shape; 1 writes the output directly). */
  splits?: number;
  /** Slice loops with a constant trip count (default: on GPUs) or a uniform one (default: on software adapters). */
  unroll?: boolean;
  /**
   * Run the subgroup-matrix kernels (attention-sgmatrix.ts) in this mode and matrix shape (tiled
   * forward and the backward, head dims 64, 80, 96, 128). 'emulated' is for tests: it runs anywhere.
   */
  fragments?: { mode: MatrixMode; shape: MatrixShape };
  /**
   * Run the row-per-invocation kernels of attention-cpu.ts (tiled forward and the backward, head dims
   * up to 32). Default: the backward on software adapters when no other tile override is given (the
   * forward measured slower than the tiled one there: bench/NOTES.md).
   */
  cpu?: boolean;
}

/**
 * Keys (or queries) scored per step: 8 in the forward (amortizes the online-softmax rescale), 4 in the
 * backward (halves its unrolled code, the largest; with the subgroup exchange the shuffles per key
 * are the same either way).
 */
const STEP: Record<KernelKind, number> = { fwd: 8, dq: 4, dkv: 4 };
const BLOCK_MULTIPLE = 8;
const MAX_DH = 256;
/** The split layout is the default when a kv head's query rows (group · T) are this few. */
const SPLIT_MAX_ROWS = 64;
/** Workgroups the split layout aims for (a large GPU has ~100–150 compute units). */
const SPLIT_TARGET_WORKGROUPS = 256;
const LOG2E = Math.LOG2E;

// ---------------------------------------------------------------------------------------------
// Shapes, geometry, variants.

interface Dims {
  B: number;
  T: number;
  S: number;
  Sk: number;
  Hq: number;
  Hkv: number;
  Dh: number;
  group: number;
  scale: number;
  qOffset: number;
  causal: boolean;
  seg: Tensor | null;
  kvStart: Tensor | null;
  qType: 'f32' | 'f16';
  kvType: 'f32' | 'f16';
}

const ATTN_DTYPES: readonly DType[] = ['f32', 'f16'];

function checkInputs(q: Tensor, k: Tensor, v: Tensor, o: FlashAttentionOptions): Dims {
  for (const [t, n] of [
    [q, 'q'],
    [k, 'k'],
    [v, 'v'],
  ] as const) {
    if (!ATTN_DTYPES.includes(t.dtype))
      throw new TypeError(`flashAttention ${n}: expected dtype f32 or f16, got ${t.dtype}`);
    if (t.shape.length !== 4) throw new RangeError(`flashAttention: ${n} must be 4-D, got [${t.shape.join(', ')}]`);
  }
  if (k.dtype !== v.dtype)
    throw new TypeError(`flashAttention: k (${k.dtype}) and v (${v.dtype}) must have the same dtype`);
  const [B, T, Hq, Dh] = q.shape as [number, number, number, number];
  const [Bk, Sk, Hkv, Dhk] = k.shape as [number, number, number, number];
  if (Bk !== B || Dhk !== Dh)
    throw new RangeError(
      `flashAttention: k [${k.shape.join(', ')}] does not match q [${q.shape.join(', ')}] (batch and head dim must agree)`,
    );
  if (v.shape.some((d, i) => d !== k.shape[i]))
    throw new RangeError(`flashAttention: v [${v.shape.join(', ')}] must have k's shape [${k.shape.join(', ')}]`);
  if (Hkv < 1 || Hq % Hkv !== 0) throw new RangeError(`flashAttention: Hq=${Hq} must be a multiple of Hkv=${Hkv}`);
  if (Dh < 4 || Dh > MAX_DH || Dh % 4 !== 0)
    throw new RangeError(`flashAttention: head dim ${Dh} not supported (a multiple of 4 in 4..${MAX_DH})`);
  const S = o.kvLength ?? Sk;
  if (!Number.isInteger(S) || S < 0 || S > Sk) throw new RangeError(`flashAttention: kvLength ${S} outside [0, ${Sk}]`);
  const qOffset = o.qOffset ?? 0;
  if (!Number.isInteger(qOffset)) throw new RangeError(`flashAttention: qOffset must be an integer, got ${qOffset}`);
  let seg: Tensor | null = null;
  if (o.segmentIds) {
    seg = o.segmentIds;
    assertDtype(seg, 'i32', 'flashAttention segmentIds');
    if (T !== S)
      throw new RangeError(`flashAttention: segmentIds need T == S (packed self-attention), got T=${T}, S=${S}`);
    if (seg.numel !== B * T)
      throw new RangeError(`flashAttention: segmentIds has ${seg.numel} elements, expected B·T = ${B * T}`);
  }
  let kvStart: Tensor | null = null;
  if (o.kvStart) {
    kvStart = o.kvStart;
    assertDtype(kvStart, 'i32', 'flashAttention kvStart');
    if (kvStart.numel !== B)
      throw new RangeError(`flashAttention: kvStart has ${kvStart.numel} elements, expected B = ${B}`);
  }
  const scale = o.scale ?? 1 / Math.sqrt(Dh);
  return {
    B,
    T,
    S,
    Sk,
    Hq,
    Hkv,
    Dh,
    group: Hq / Hkv,
    scale,
    qOffset,
    causal: o.causal,
    seg,
    kvStart,
    qType: q.dtype as 'f32' | 'f16',
    kvType: k.dtype as 'f32' | 'f16',
  };
}

/** TPR lanes per row, WV vec4 each: the power of two TPR that pads Dh/4 least with WV ≤ 5 (ties: fewer lanes). */
export function sliceGeometry(Dh: number): { TPR: number; WV: number } {
  const d4 = Math.ceil(Dh / 4);
  let best = { TPR: 0, WV: 0 };
  for (let tpr = 1; tpr <= 64; tpr *= 2) {
    const wv = Math.ceil(d4 / tpr);
    if (wv > 5) continue;
    if (!best.TPR || tpr * wv < best.TPR * best.WV) best = { TPR: tpr, WV: wv };
  }
  return best;
}

type KernelKind = 'fwd' | 'dq' | 'dkv';

/** One compiled kernel's constants. */
interface Geo {
  kind: KernelKind;
  TPR: number;
  WV: number;
  DV: number; // vec4 per staged (padded) row
  CH: number; // keys (queries) per step
  ROWS: number;
  BLOCK: number;
  NT: number;
  exchange: Exchange;
  qType: 'f32' | 'f16';
  kvType: 'f32' | 'f16';
  /** Slice loops with the constant trip count WV (unrolled into registers) rather than a uniform one. */
  unroll: boolean;
}

/** What the device offers that the choice depends on (a plain object, so tests can pose as other devices). */
export interface AttentionCaps {
  features: ReadonlySet<FeatureName>;
  subgroupMinSize: number;
  subgroupMaxSize: number;
  maxWorkgroupStorage: number;
  maxInvocations: number;
  /** A software renderer (lavapipe): slice loops keep a runtime trip count there (compile time). */
  software: boolean;
  /** The adapter's subgroup-matrix configurations (none when absent). */
  subgroupMatrixConfigs?: readonly SubgroupMatrixConfig[];
  /** The compute precision: the subgroup-matrix kernels (f16 operands) run only in fp16-mixed. */
  precision?: Precision;
}

export function deviceAttentionCaps(): AttentionCaps {
  const dev = engine().dev;
  return {
    features: dev.features,
    subgroupMinSize: dev.subgroupSize.min,
    subgroupMaxSize: dev.subgroupSize.max,
    maxWorkgroupStorage: dev.limits.maxComputeWorkgroupStorageSize,
    maxInvocations: dev.limits.maxComputeInvocationsPerWorkgroup,
    software: dev.info.cpuKernels,
    subgroupMatrixConfigs: dev.subgroupMatrixConfigs,
    precision: computePrecision(),
  };
}

/**
 * The loop form a launch on these caps takes without a tile override (Geo.unroll): constant trip
 * counts (unrolled into registers) on GPUs, uniform ones on software adapters (compile time). The
 * variant table lists exactly the forms this gives on its devices.
 */
export function attentionUnroll(caps: Pick<AttentionCaps, 'software'>): boolean {
  return !caps.software;
}

/** Workgroup-memory bytes of a kernel with these constants. */
function sharedBytes(kind: KernelKind, DV: number, BLOCK: number, NT: number, exchange: Exchange): number {
  const names = kind === 'fwd' ? 1 : 2; // score vectors exchanged per step: s, or s and dp
  const part = exchange === 'workgroup' ? NT * names * (STEP[kind] / 4) * 16 : 4;
  const extra = kind === 'dkv' ? 3 * BLOCK * 4 : BLOCK * 4;
  return 2 * BLOCK * DV * 16 + extra + part + 16;
}

function makeGeo(
  kind: KernelKind,
  d: Pick<Dims, 'Dh' | 'qType' | 'kvType'>,
  exchange: Exchange,
  caps: AttentionCaps,
  tiles?: AttentionTiles,
): Geo {
  const { TPR, WV } = sliceGeometry(d.Dh);
  const DV = TPR * WV;
  const maxThreads = Math.min(256, caps.maxInvocations);
  let rows = tiles?.rows ?? Math.min(64, Math.max(1, Math.floor(maxThreads / TPR)));
  if (!Number.isInteger(rows) || rows < 1 || rows * TPR > caps.maxInvocations) {
    throw new RangeError(
      `attention tile rows ${rows} must be a positive integer with rows·${TPR} lanes ≤ ${caps.maxInvocations}`,
    );
  }
  if (exchange === 'subgroup') rows = Math.max(rows, Math.ceil(caps.subgroupMaxSize / TPR)); // whole subgroups
  const override = tiles?.block;
  if (override !== undefined && (override % BLOCK_MULTIPLE !== 0 || override < BLOCK_MULTIPLE))
    throw new RangeError(`attention tile block ${override} must be a positive multiple of ${BLOCK_MULTIPLE}`);
  for (;;) {
    const NT = rows * TPR;
    for (const BLOCK of override !== undefined ? [override] : [64, 32, 16, 8]) {
      if (sharedBytes(kind, DV, BLOCK, NT, exchange) <= caps.maxWorkgroupStorage) {
        return {
          kind,
          TPR,
          WV,
          DV,
          CH: STEP[kind],
          ROWS: rows,
          BLOCK,
          NT,
          exchange,
          qType: d.qType,
          kvType: d.kvType,
          unroll: tiles?.unroll ?? attentionUnroll(caps),
        };
      }
    }
    if (tiles?.rows !== undefined || rows === 1) break;
    rows = Math.ceil(rows / 2);
  }
  throw new RangeError(
    `attention: no ${kind} tile of head dim ${d.Dh} fits ${caps.maxWorkgroupStorage} bytes of workgroup memory`,
  );
}

/** Whether the subgroup exchange can run this geometry: a row's lanes within one subgroup, whole subgroups. */
function subgroupFits(
  kind: KernelKind,
  d: Pick<Dims, 'Dh' | 'qType' | 'kvType'>,
  caps: AttentionCaps,
  tiles?: AttentionTiles,
): boolean {
  const { TPR } = sliceGeometry(d.Dh);
  if (!caps.features.has('subgroups') || TPR < 2 || caps.subgroupMinSize < TPR || caps.subgroupMaxSize < 1)
    return false;
  try {
    const g = makeGeo(kind, d, 'subgroup', caps, tiles);
    return g.NT % caps.subgroupMaxSize === 0;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// The SIMT kernels' variant table (kernel families below, next to each generator).

/**
 * Head dims enumerated offline: every multiple of 4 in 8..32 (the presets' 16 and 32, the reference
 * fixtures' 12 and 16, small models) and the Llama-family models' 64, 80, 96 and 128. Other head dims
 * the kernels take (4..256) compile on first use, outside the table.
 */
const TABLE_HEAD_DIMS: readonly number[] = [8, 12, 16, 20, 24, 28, 32, 64, 80, 96, 128];

/**
 * The storage dtypes (q, k/v) callers pass: f32 or f16 throughout (training and prefill, fp32 or
 * fp16-mixed), and in the forward f32 queries over an f16 KV cache (decoding).
 */
const TABLE_TYPES: Record<KernelKind, readonly (readonly ['f32' | 'f16', 'f32' | 'f16'])[]> = {
  fwd: [
    ['f32', 'f32'],
    ['f16', 'f16'],
    ['f32', 'f16'],
  ],
  dq: [
    ['f32', 'f32'],
    ['f16', 'f16'],
  ],
  dkv: [
    ['f32', 'f32'],
    ['f16', 'f16'],
  ],
};

/**
 * Devices the table is enumerated for (a geometry depends on workgroup memory, invocations and
 * subgroup sizes; the loop form on whether the adapter is software, attentionUnroll): a software
 * adapter like lavapipe (subgroups of 8, 32 KiB), the same adapter running the GPU-shaped kernels
 * (FINLLM_FORCE_GPU_SHAPES=1), and GPU-like limits, subgroups of 32 with 48 KiB (NVIDIA-like), 32..64
 * with 64 KiB (AMD-like), 16..32 with 48 KiB (Intel-like) and 32 with 32 KiB (Apple-like), as the
 * chooser's tests pose.
 */
const TABLE_CAPS: readonly AttentionCaps[] = (
  [
    [8, 8, 32 * 1024, true],
    [8, 8, 32 * 1024, false],
    [32, 32, 48 * 1024, false],
    [32, 64, 64 * 1024, false],
    [16, 32, 48 * 1024, false],
    [32, 32, 32 * 1024, false],
  ] as const
).map(([subgroupMinSize, subgroupMaxSize, maxWorkgroupStorage, software]) => ({
  features: new Set<FeatureName>(['subgroups', 'shader-f16']),
  subgroupMinSize,
  subgroupMaxSize,
  maxWorkgroupStorage,
  maxInvocations: 1024,
  software,
}));

/**
 * The geometries of a `kind` kernel on one device, as launches without tile overrides pick them:
 * table head dims × dtypes × both exchanges (the subgroup one where subgroupFits; the workgroup one is
 * what the same limits without the subgroups feature pick) × in the forward the split layout's 8 rows
 * per workgroup (splitTiles), each with the loop form the device's launches take (attentionUnroll).
 * On a software adapter the backward of head dims up to 32 runs attention-cpu.ts's kernels unless a
 * tile override is given (useCpuKernels); its SIMT geometries there are those the tests' exchange
 * overrides launch.
 */
function deviceGeometries(kind: KernelKind, caps: AttentionCaps): Geo[] {
  const out: Geo[] = [];
  for (const Dh of TABLE_HEAD_DIMS)
    for (const [qType, kvType] of TABLE_TYPES[kind])
      for (const rows of kind === 'fwd' ? [undefined, 8] : [undefined])
        for (const exchange of ['workgroup', 'subgroup'] as const) {
          const d = { Dh, qType, kvType };
          const tiles = { rows };
          if (exchange === 'subgroup' && !subgroupFits(kind, d, caps, tiles)) continue;
          out.push(makeGeo(kind, d, exchange, caps, tiles));
        }
  return out;
}

/**
 * The variant table of a `kind` kernel: deviceGeometries over TABLE_CAPS, deduplicated. Tile
 * overrides (`AttentionTiles` rows and block: tests, the tuner) give geometries outside the table;
 * they compile on first use.
 */
function geoTable(kind: KernelKind): Geo[] {
  const out = new Map<string, Geo>();
  for (const caps of TABLE_CAPS) for (const g of deviceGeometries(kind, caps)) out.set(specKey('', g), g);
  return [...out.values()];
}

/**
 * The pipeline keys of the SIMT kernels (forward, dQ, dK/dV) launches on these caps compile without
 * tile overrides, over the table's head dims and dtypes (deviceGeometries): the table's part for one
 * device, which tests compare with the registered variants.
 */
export function simtDeviceKeys(caps: AttentionCaps): string[] {
  const families = [
    [attnForward, 'fwd'],
    [attnBackwardDq, 'dq'],
    [attnBackwardDkv, 'dkv'],
  ] as const;
  return families.flatMap(([fam, kind]) => deviceGeometries(kind, caps).map((g) => fam.key(g)));
}

/**
 * A SIMT kernel family: its geometries from geoTable, the workgroup memory each declares (an upper
 * bound, sharedBytes), named in reports by slice geometry, tiles, exchange, dtypes and loop form.
 */
function simtFamily(family: string, kind: KernelKind, code: (g: Geo) => string): KernelFamily<Geo> {
  return kernelFamily<Geo>({
    family,
    specs: () => geoTable(kind),
    code,
    name: (g) =>
      `tpr${g.TPR}.wv${g.WV}.rows${g.ROWS}.block${g.BLOCK}.${g.exchange}.q${g.qType}.kv${g.kvType}${g.unroll ? '.unrolled' : ''}`,
    workgroupBytes: (g) => sharedBytes(g.kind, g.DV, g.BLOCK, g.NT, g.exchange),
  });
}

/** The shape facts the variant table looks at. */
export interface AttentionShape {
  B: number;
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  Dh: number;
  qType: 'f32' | 'f16';
  kvType: 'f32' | 'f16';
}

/**
 * One registered attention kernel variant. `requires`: optional device features it needs;
 * `supports`: whether it can run a shape on a device at all (what a tuner may time); `preferred`:
 * whether the default chooser takes it for the shape (the table is in order of preference).
 */
export interface AttentionVariant {
  name: string;
  pass: 'forward' | 'backward';
  layout: ForwardLayout;
  exchange: Exchange;
  /** Matrix products on f16 subgroup matrices (tensor cores) rather than f32 scalar code. */
  subgroupMatrix?: boolean;
  requires: readonly FeatureName[];
  supports(s: AttentionShape, caps: AttentionCaps): boolean;
  preferred(s: AttentionShape): boolean;
}

const fewRows = (s: AttentionShape): boolean => (s.Hq / s.Hkv) * s.T <= SPLIT_MAX_ROWS;

/**
 * The matrix shape the native subgroup-matrix kernels of `pass` would use for this shape and device,
 * or null: f16 operands into f32 offered in one of SG_SHAPES (first in their order), hardware
 * subgroups of exactly 32 lanes (the kernels deal tiles to NT/32 subgroups), fp16-mixed precision,
 * a head dim in SG_HEAD_DIMS, and the kernels' workgroup memory and size within the device's limits.
 */
export function nativeFragmentShape(
  pass: 'forward' | 'backward',
  s: AttentionShape,
  caps: AttentionCaps,
): MatrixShape | null {
  if (caps.precision !== 'fp16-mixed' || !SG_HEAD_DIMS.includes(s.Dh)) return null;
  if (!caps.features.has('chromium-experimental-subgroup-matrix') || !caps.features.has('shader-f16')) return null;
  if (caps.subgroupMinSize !== SG_WIDTH || caps.subgroupMaxSize !== SG_WIDTH) return null;
  const configs = caps.subgroupMatrixConfigs ?? [];
  const shape = SG_SHAPES.find((x) => isOffered({ ...x, result: 'f32' }, configs));
  if (!shape) return null;
  const passes: SgAttentionPass[] = pass === 'forward' ? ['fwd'] : ['dq', 'dkv'];
  const fits = passes.every((ps) => {
    const spec = sgAttentionSpec(ps, 'native', shape, s.Dh, s.qType, s.kvType);
    return sgAttentionSharedBytes(spec) <= caps.maxWorkgroupStorage && sgWorkgroupSize(spec) <= caps.maxInvocations;
  });
  return fits ? shape : null;
}

const SGM_REQUIRES: readonly FeatureName[] = ['chromium-experimental-subgroup-matrix', 'shader-f16'];

export const ATTENTION_VARIANTS: readonly AttentionVariant[] = [
  {
    name: 'forward.tiled.sgmatrix',
    pass: 'forward',
    layout: 'tiled',
    exchange: 'workgroup',
    subgroupMatrix: true,
    requires: SGM_REQUIRES,
    supports: (s, c) => nativeFragmentShape('forward', s, c) !== null,
    preferred: (s) => !fewRows(s),
  },
  {
    name: 'forward.split.subgroup',
    pass: 'forward',
    layout: 'split',
    exchange: 'subgroup',
    requires: ['subgroups'],
    supports: (s, c) => subgroupFits('fwd', s, c),
    preferred: fewRows,
  },
  {
    name: 'forward.split.workgroup',
    pass: 'forward',
    layout: 'split',
    exchange: 'workgroup',
    requires: [],
    supports: () => true,
    preferred: fewRows,
  },
  {
    name: 'forward.tiled.subgroup',
    pass: 'forward',
    layout: 'tiled',
    exchange: 'subgroup',
    requires: ['subgroups'],
    supports: (s, c) => subgroupFits('fwd', s, c),
    preferred: () => true,
  },
  {
    name: 'forward.tiled.workgroup',
    pass: 'forward',
    layout: 'tiled',
    exchange: 'workgroup',
    requires: [],
    supports: () => true,
    preferred: () => true,
  },
  {
    name: 'backward.sgmatrix',
    pass: 'backward',
    layout: 'tiled',
    exchange: 'workgroup',
    subgroupMatrix: true,
    requires: SGM_REQUIRES,
    supports: (s, c) => nativeFragmentShape('backward', s, c) !== null,
    preferred: () => true,
  },
  {
    name: 'backward.subgroup',
    pass: 'backward',
    layout: 'tiled',
    exchange: 'subgroup',
    requires: ['subgroups'],
    supports: (s, c) => subgroupFits('dq', s, c) && subgroupFits('dkv', s, c),
    preferred: () => true,
  },
  {
    name: 'backward.workgroup',
    pass: 'backward',
    layout: 'tiled',
    exchange: 'workgroup',
    requires: [],
    supports: () => true,
    preferred: () => true,
  },
];

const hasAll = (v: AttentionVariant, caps: AttentionCaps): boolean => v.requires.every((f) => caps.features.has(f));

/** Every variant that can run this shape on this device (what a tuner would time). */
export function attentionVariantsFor(
  pass: 'forward' | 'backward',
  s: AttentionShape,
  caps: AttentionCaps,
): AttentionVariant[] {
  return ATTENTION_VARIANTS.filter((v) => v.pass === pass && hasAll(v, caps) && v.supports(s, caps));
}

/** The default variant for a shape: the first in table order that the device and shape allow and prefer. */
export function chooseAttentionVariant(
  pass: 'forward' | 'backward',
  s: AttentionShape,
  caps: AttentionCaps,
): AttentionVariant {
  const v = attentionVariantsFor(pass, s, caps).find((x) => x.preferred(s));
  if (!v)
    throw new Error(`attention: no ${pass} variant for [B${s.B} T${s.T} S${s.S} Hq${s.Hq} Hkv${s.Hkv} Dh${s.Dh}]`); // the workgroup variants take every shape
  return v;
}

function shapeOf(d: Dims): AttentionShape {
  return { B: d.B, T: d.T, S: d.S, Hq: d.Hq, Hkv: d.Hkv, Dh: d.Dh, qType: d.qType, kvType: d.kvType };
}

/** The exchange to compile: the override (checked against the device) or the chosen variant's for the layout. */
function pickExchange(
  pass: 'forward' | 'backward',
  layout: ForwardLayout,
  d: Dims,
  caps: AttentionCaps,
  tiles?: AttentionTiles,
): Exchange {
  if (tiles?.exchange === 'workgroup') return 'workgroup';
  const kinds: KernelKind[] = pass === 'forward' ? ['fwd'] : ['dq', 'dkv'];
  const fits = kinds.every((k) => subgroupFits(k, d, caps, tiles));
  if (tiles?.exchange === 'subgroup') {
    if (!fits) {
      const { TPR } = sliceGeometry(d.Dh);
      throw new RangeError(
        `attention: the subgroup exchange cannot run head dim ${d.Dh} here (needs the subgroups feature` +
          ` [${caps.features.has('subgroups') ? 'present' : 'absent'}] and 2 ≤ ${TPR} lanes per row ≤ subgroup size ${caps.subgroupMinSize})`,
      );
    }
    return 'subgroup';
  }
  const v = attentionVariantsFor(pass, shapeOf(d), caps).find((x) => x.layout === layout && !x.subgroupMatrix);
  return v?.exchange === 'subgroup' && fits ? 'subgroup' : 'workgroup';
}

/**
 * Split layout: 8 rows per workgroup when a kv head has at most 8 query rows (decoding with GQA ≤ 8),
 * else the tiled layout's rows (and its pipeline).
 */
function splitTiles(d: Dims, tiles?: AttentionTiles): AttentionTiles | undefined {
  return tiles?.rows === undefined && d.group * d.T <= 8 ? { ...tiles, rows: 8 } : tiles;
}

// ---------------------------------------------------------------------------------------------
// WGSL building blocks.

function uniforms(
  d: Dims,
  extra: { n?: number; splitMode?: boolean; chunk?: number; splits?: number; rowBlocks?: number } = {},
): Uniforms {
  return new Uniforms()
    .u32(d.T)
    .u32(d.S)
    .u32(d.Sk)
    .u32(d.Hq)
    .u32(d.Hkv)
    .u32(d.group)
    .i32(d.qOffset)
    .f32(d.scale * LOG2E)
    .f32(d.scale)
    .f32(-Infinity)
    .u32(extra.n ?? 0)
    .u32((d.causal ? 1 : 0) | (d.seg ? 2 : 0) | (d.kvStart ? 4 : 0) | (extra.splitMode ? 8 : 0))
    .u32(d.Dh / 4)
    .u32(extra.splits ?? 1)
    .u32(extra.chunk ?? 0)
    .u32(extra.rowBlocks ?? 1)
    .u32(sliceGeometry(d.Dh).WV)
    .u32(sliceGeometry(d.Dh).TPR);
}

const range = (n: number): number[] => [...Array(n).keys()];
const lines = (n: number, f: (i: number) => string, sep = '\n  '): string => range(n).map(f).join(sep);

function preamble(g: Geo): string {
  return `${g.exchange === 'subgroup' ? 'enable subgroups;\n' : ''}${HEADER}
const TPR = ${g.TPR}u; const WV = ${g.WV}u; const DV = ${g.DV}u; const ROWS = ${g.ROWS}u; const BLOCK = ${g.BLOCK}u; const NT = ${g.NT}u; const CH = ${g.CH}u;`;
}

function entry(g: Geo): string {
  const sg =
    g.exchange === 'subgroup' ? ', @builtin(subgroup_invocation_id) sgl: u32, @builtin(subgroup_size) sgn: u32' : '';
  return `@compute @workgroup_size(${g.NT})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${sg})`;
}

/** WGSL: `row` and `sl` (slice) of this lane. */
function rowMap(g: Geo): string {
  // Slice-major: consecutive lanes hold the same slice of consecutive rows, so their workgroup-memory
  // reads of a staged row hit one address (a broadcast on GPUs; one scalar load for lavapipe's SIMD lanes).
  if (g.exchange === 'workgroup') return 'let row = lid % ROWS; let sl = lid / ROWS;';
  // A subgroup's index from an atomic, so lanes sgi·sgn + [0, sgn) are exactly this subgroup's.
  return `var sgi = 0u;
  if (sgl == 0u) { sgi = atomicAdd(&sgCount, 1u); }
  sgi = subgroupBroadcast(sgi, 0u);
  let vl = sgi * sgn + sgl;
  let row = vl / TPR; let sl = vl % TPR;`;
}

function exchangeDecl(g: Geo, names: number): string {
  return g.exchange === 'workgroup'
    ? `var<workgroup> shPart: array<vec4f, ${g.NT * names * (g.CH / 4)}>;`
    : 'var<workgroup> sgCount: atomic<u32>;';
}

/** WGSL: sums vec4 registers `${name}${v}` over the TPR lanes of each row. */
function exchange(g: Geo, names: string[]): string {
  if (g.TPR === 1) return '';
  const regs = names.flatMap((n) => range(g.CH / 4).map((v) => `${n}${v}`));
  if (g.exchange === 'subgroup') {
    const steps: string[] = [];
    for (let m = 1; m < g.TPR; m *= 2) for (const r of regs) steps.push(`${r} += subgroupShuffleXor(${r}, ${m}u);`);
    return steps.join('\n      ');
  }
  const n = regs.length;
  return `${regs.map((r, k) => `shPart[lid * ${n}u + ${k}u] = ${r};`).join(' ')}
      workgroupBarrier();
      ${regs.map((r) => `${r} = vec4f(0.0);`).join(' ')}
      for (var t = 0u; t < ${g.unroll ? 'TPR' : 'p.tpr'}; t++) {
        let pb = (t * ROWS + row) * ${n}u;
        ${regs.map((r, k) => `${r} += shPart[pb + ${k}u];`).join(' ')}
      }
      workgroupBarrier();`;
}

/** WGSL: declares a slice array (registers once the slice loop is unrolled). */
function regs(name: string): string {
  return `var ${name}: array<vec4f, WV>;`;
}

/**
 * WGSL: a loop over the slice's vec4 (index w). On GPUs its trip count is the constant WV, so the
 * compiler unrolls it and the slice arrays live in registers; on software adapters it is a uniform,
 * so the body is compiled once (see the header: compile time grows faster than linearly with code).
 */
function sliceLoop(g: Geo, body: string): string {
  return `for (var w = 0u; w < ${g.unroll ? 'WV' : 'p.wv'}; w++) {
        ${body}
      }`;
}

/** WGSL: this lane's slice of the row at vec4 index `base` (zero past Dh). */
function loadSlice(g: Geo, dst: string, ld: string, base: string, mul = ''): string {
  return sliceLoop(g, `if (sl * WV + w < p.dh4) { ${dst}[w] = ${ld}(${base} + sl * WV + w)${mul}; }`);
}

function storeSlice(g: Geo, src: string, buf: string, base: string, mul = ''): string {
  return sliceLoop(g, `if (sl * WV + w < p.dh4) { ${buf}[${base} + sl * WV + w] = ${src}[w]${mul}; }`);
}

/**
 * WGSL: score vectors `${out}0..` (CH/4 vec4 each) = partial dot products of slice arrays with CH staged
 * rows from `kb`, for each [out, slice array, staged block] triple, in one slice loop.
 */
function dotRows(g: Geo, terms: [string, string, string][]): string {
  const decl = terms.flatMap(([out]) => range(g.CH / 4).map((v) => `var ${out}${v} = vec4f(0.0);`)).join(' ');
  const body = terms
    .map(([out, a, sh]) => {
      const dot = (r: number) => `dot(${a}w, ${sh}[ix${r ? ` + ${r * g.DV}u` : ''}])`;
      return `let ${a}w = ${a}[w];
        ${range(g.CH / 4)
          .map(
            (v) =>
              `${out}${v} += vec4f(${range(4)
                .map((c) => dot(4 * v + c))
                .join(', ')});`,
          )
          .join('\n        ')}`;
    })
    .join('\n        ');
  return `${decl}
      ${sliceLoop(g, `let ix = kb + w;\n        ${body}`)}`;
}

/** WGSL: r-th scalar of score vectors `${name}0..`. */
const comp = (name: string, r: number): string => `${name}${r >> 2}.${'xyzw'[r & 3]}`;

/** WGSL: acc[w] = acc[w]·decay + Σ_r coef_r · sh[row r][w] for each [acc, coef, staged block], in one slice loop. */
function axpyRows(g: Geo, terms: [string, (r: number) => string, string][], decay = ''): string {
  const body = terms
    .map(
      ([acc, coef, sh]) =>
        `${acc}[w] = ${acc}[w]${decay} + ${range(g.CH)
          .map((r) => `${coef(r)} * ${sh}[ix${r ? ` + ${r * g.DV}u` : ''}]`)
          .join(' + ')};`,
    )
    .join('\n        ');
  return sliceLoop(g, `let ix = kb + w;\n        ${body}`);
}

/** WGSL: lid 0's helper, the segment-id range of `count` rows from `first` of batch row b. */
const SEG_RANGE = /* wgsl */ `
fn segRange(b: u32, first: u32, count: u32) -> vec2i {
  var r = vec2i(2147483647, -2147483647);
  for (var t = first; t < first + count; t++) {
    let s = SEG[b * p.T + t];
    r = vec2i(min(r.x, s), max(r.y, s));
  }
  return r;
}`;

/**
 * WGSL: stages BLOCK rows (from j0, in [lo, limit)) of two inputs of head `hh` into workgroup memory,
 * zero elsewhere. Rows below `lo` are never read: a KV cache's positions before a row's kvStart may
 * never have been written (a masked key's zero weight times a NaN value would still be NaN).
 */
function stageRows(
  a: [string, string],
  bsh: [string, string],
  rowsTotal: string,
  heads: string,
  hh: string,
  limit: string,
  lo = '0u',
): string {
  return `for (var e = lid; e < BLOCK * DV; e += NT) {
      let jj = e / DV; let w = e % DV; let j = j0 + jj;
      var x0 = vec4f(0.0); var x1 = vec4f(0.0);
      if (j >= ${lo} && j < ${limit} && w < p.dh4) {
        let gi = ((b * ${rowsTotal} + j) * ${heads} + ${hh}) * p.dh4 + w;
        x0 = ld${a[0]}(gi); x1 = ld${a[1]}(gi);
      }
      ${bsh[0]}[e] = x0; ${bsh[1]}[e] = x1;
    }`;
}

/** WGSL, forward and dQ: the staged key block (K, V, segment ids), its skip flag, the exchange and segRange. */
function keyBlockDecls(g: Geo, names: number): string {
  return `var<workgroup> shK: array<vec4f, ${g.BLOCK * g.DV}>;
var<workgroup> shV: array<vec4f, ${g.BLOCK * g.DV}>;
var<workgroup> shSeg: array<i32, ${g.BLOCK}>;
var<workgroup> shSkip: u32;
${exchangeDecl(g, names)}
${SEG_RANGE}`;
}

/**
 * WGSL, forward and dQ: at key block j0, skip it (whole workgroup) when its segment ids cannot meet the
 * query rows', else stage its segment ids, K and V (keys from `lo` on); `cEnd` = keys of the block below kHi.
 */
const keyBlockPrologue = (lo: string) => `if (SEGON) {
      if (lid == 0u) {
        let kr = segRange(b, j0, min(BLOCK, kHi - j0));
        shSkip = select(0u, 1u, kr.y < qRange.x || kr.x > qRange.y);
      }
      if (workgroupUniformLoad(&shSkip) != 0u) { continue; }
      for (var t = lid; t < BLOCK; t += NT) { shSeg[t] = SEG[b * p.T + min(j0 + t, p.S - 1u)]; }
    }
    ${stageRows(['K', 'V'], ['shK', 'shV'], 'p.Sk', 'p.Hkv', 'hk', 'p.S', lo)}
    workgroupBarrier();
    let cEnd = min(BLOCK, kHi - j0);`;

// ---------------------------------------------------------------------------------------------
// Forward (tiled and split layouts in one pipeline).

function forwardKernel(g: Geo): string {
  return /* wgsl */ `${preamble(g)}
${qkvBindings(g.qType, g.kvType)}
@group(0) @binding(4) var<storage, read_write> O: array<vec4f>;   // out, or split partials (o unnormalized)
@group(0) @binding(5) var<storage, read_write> LSE: array<f32>;   // lse, or split partials (m, l)
@group(0) @binding(6) var<storage, read> SEG: array<i32>;
@group(0) @binding(7) var<storage, read> KVS: array<i32>;
${keyBlockDecls(g, 1)}

${entry(g)} {
  ${MASK_FLAGS} let SPLIT = (p.flags & 8u) != 0u;
  ${rowMap(g)}
  let b = wid.z;
  var h = wid.y; var hk = h / p.group; var i = 0u; var rowValid = false;
  var kLo = 0u; var kHi = p.S; // keys this workgroup visits (uniform)
  var qFirst = 0u; var qCount = p.T; // query positions of this workgroup (uniform, for segment skips)
  var chunkIx = 0u;
  if (SPLIT) {
    // Rows are the group·T (query head, position) pairs of kv head wid.y; wid.x = chunk · rowBlocks + row block.
    hk = wid.y;
    let rb = wid.x % p.rowBlocks; chunkIx = wid.x / p.rowBlocks;
    let f = rb * ROWS + row; let F = p.group * p.T;
    rowValid = f < F;
    let fc = min(f, F - 1u);
    h = hk * p.group + fc / p.T; i = fc % p.T;
    if (CAUSAL) { kHi = u32(clamp(i32(p.T) + p.qOffset, 0, i32(p.S))); }
    kLo = chunkIx * p.chunk; kHi = min(kHi, kLo + p.chunk);
  } else {
    let i0 = wid.x * ROWS;
    rowValid = i0 + row < p.T;
    i = min(i0 + row, p.T - 1u);
    qFirst = i0; qCount = min(ROWS, p.T - i0);
    if (CAUSAL) { kHi = u32(clamp(i32(i0 + qCount) + p.qOffset, 0, i32(p.S))); }
  }
  // Left padding: keys before this batch row's first valid key are invisible (and their blocks skipped).
  if ((p.flags & 4u) != 0u) { kLo = max(kLo, u32(max(KVS[b], 0))); }
  let qlim = i32(i) + p.qOffset; // last key this row sees (causal)
  let qbase = ((b * p.T + i) * p.Hq + h) * p.dh4;
  ${regs('q')}
  ${regs('o')}
  ${loadSlice(g, 'q', 'ldQ', 'qbase', ' * p.scale2')}
  var m = NEG;
  var l = 0.0;
  var mySeg = 0;
  var qRange = vec2i(0, 0);
  if (SEGON) {
    mySeg = SEG[b * p.T + i];
    if (lid == 0u) { qRange = segRange(b, qFirst, qCount); }
  }
  for (var j0 = (kLo / BLOCK) * BLOCK; j0 < kHi; j0 += BLOCK) {
    ${keyBlockPrologue('kLo')}
    for (var c0 = 0u; c0 < cEnd; c0 += CH) {
      let kb = c0 * DV + sl * WV;
      ${dotRows(g, [['s', 'q', 'shK']])}
      ${exchange(g, ['s'])}
      var cmax = NEG;
      ${lines(
        g.CH,
        (
          r,
        ) => `let ok${r} = ${visible({ within: ['rowValid', `c0 + ${r}u < cEnd`, `j0 + c0 + ${r}u >= kLo`], key: `j0 + c0 + ${r}u`, qlim: 'qlim', segment: [`shSeg[c0 + ${r}u]`, 'mySeg'] })};
      if (ok${r}) { cmax = max(cmax, ${comp('s', r)}); }`,
        '\n      ',
      )}
      if (cmax > NEG) {
        let mn = max(m, cmax);
        let alpha = exp2(m - mn);
        ${lines(g.CH, (r) => `let p${r} = select(0.0, exp2(${comp('s', r)} - mn), ok${r});`, '\n        ')}
        l = l * alpha + ${range(g.CH)
          .map((r) => `p${r}`)
          .join(' + ')};
        ${axpyRows(g, [['o', (r) => `p${r}`, 'shV']], ' * alpha')}
        m = mn;
      }
    }
    workgroupBarrier();
  }
  let lrow = (b * p.Hq + h) * p.T + i;
  if (rowValid) {
    if (p.splits > 1u) {
      let prow = chunkIx * p.n + lrow; // p.n = B·Hq·T rows
      ${storeSlice(g, 'o', 'O', 'prow * p.dh4')}
      if (sl == 0u) { LSE[2u * prow] = m; LSE[2u * prow + 1u] = l; }
    } else {
      let inv = select(0.0, 1.0 / l, l > 0.0);
      ${storeSlice(g, 'o', 'O', 'qbase', ' * inv')}
      if (sl == 0u) { LSE[lrow] = select(p.negInf, (m + log2(l)) * LN2, l > 0.0); }
    }
  }
}`;
}

const attnForward = simtFamily('attn.fwd', 'fwd', forwardKernel);

/** Merges split partials (o, m, l) into out and lse: one thread per (row, vec4 of the head dim). */
const COMBINE_KERNEL = /* wgsl */ `${HEADER}
@group(0) @binding(1) var<storage, read> OP: array<vec4f>;
@group(0) @binding(2) var<storage, read> ML: array<f32>;
@group(0) @binding(3) var<storage, read_write> O: array<vec4f>;
@group(0) @binding(4) var<storage, read_write> LSE: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let x = gid.x + gid.y * nwg.x * 64u;
  if (x >= p.n * p.dh4) { return; }
  let lrow = x / p.dh4; let w = x % p.dh4; // lrow = (b·Hq + h)·T + i
  var mm = NEG;
  for (var c = 0u; c < p.splits; c++) { mm = max(mm, ML[2u * (c * p.n + lrow)]); }
  var ll = 0.0;
  var acc = vec4f(0.0);
  for (var c = 0u; c < p.splits; c++) {
    let pr = c * p.n + lrow;
    let f = exp2(ML[2u * pr] - mm);
    ll += ML[2u * pr + 1u] * f;
    acc += OP[pr * p.dh4 + w] * f;
  }
  let i = lrow % p.T; let bh = lrow / p.T; let h = bh % p.Hq; let b = bh / p.Hq;
  O[((b * p.T + i) * p.Hq + h) * p.dh4 + w] = select(vec4f(0.0), acc / ll, ll > 0.0);
  if (w == 0u) { LSE[lrow] = select(p.negInf, (mm + log2(ll)) * LN2, ll > 0.0); }
}`;

const attnCombine = kernelFamily({ family: 'attn.fwd.combine', specs: () => [{}], code: () => COMBINE_KERNEL });

// ---------------------------------------------------------------------------------------------
// Backward.

/** D_i = rowsum(dO_i ∘ O_i); O in f32, or f16 (the output as fp16-mixed training keeps it). */
function dotKernel(oType: 'f32' | 'f16'): string {
  return /* wgsl */ `${HEADER}
${inputBinding(1, 'DO', 'f32')}
${inputBinding(2, 'O', oType)}
@group(0) @binding(3) var<storage, read_write> D: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let r = gid.x + gid.y * nwg.x * 64u; // row (b, t, h) of [B, T, Hq]
  if (r >= p.n) { return; }
  let h = r % p.Hq; let bt = r / p.Hq; let t = bt % p.T; let b = bt / p.T;
  var s = 0.0;
  for (var w = 0u; w < p.dh4; w++) { s += dot(ldDO(r * p.dh4 + w), ldO(r * p.dh4 + w)); }
  D[(b * p.Hq + h) * p.T + t] = s;
}`;
}

const attnBackwardDot = kernelFamily<{ oType: 'f32' | 'f16' }>({
  family: 'attn.bwd.dot',
  specs: () => [{ oType: 'f32' }, { oType: 'f16' }],
  code: ({ oType }) => dotKernel(oType),
});

function dqKernel(g: Geo): string {
  return /* wgsl */ `${preamble(g)}
${backwardInputBindings(g.qType, g.kvType)}
@group(0) @binding(7) var<storage, read_write> DQ: array<vec4f>;
@group(0) @binding(8) var<storage, read> SEG: array<i32>;
${keyBlockDecls(g, 2)}

${entry(g)} {
  ${MASK_FLAGS}
  ${rowMap(g)}
  let b = wid.z; let h = wid.y; let hk = h / p.group;
  let i0 = wid.x * ROWS;
  let rowValid = i0 + row < p.T;
  let i = min(i0 + row, p.T - 1u);
  let qlim = i32(i) + p.qOffset;
  let qbase = ((b * p.T + i) * p.Hq + h) * p.dh4;
  ${regs('q')}
  ${regs('gr')}
  ${regs('dq')}
  ${loadSlice(g, 'q', 'ldQ', 'qbase', ' * p.scale2')}
  ${loadSlice(g, 'gr', 'ldDO', 'qbase')}
  let lrow = (b * p.Hq + h) * p.T + i;
  let L2 = LSE[lrow] * LOG2E;
  let Di = DD[lrow];
  let qCount = min(ROWS, p.T - i0);
  var kHi = p.S;
  if (CAUSAL) { kHi = u32(clamp(i32(i0 + qCount) + p.qOffset, 0, i32(p.S))); }
  var mySeg = 0;
  var qRange = vec2i(0, 0);
  if (SEGON) {
    mySeg = SEG[b * p.T + i];
    if (lid == 0u) { qRange = segRange(b, i0, qCount); }
  }
  for (var j0 = 0u; j0 < kHi; j0 += BLOCK) {
    ${keyBlockPrologue('0u')}
    for (var c0 = 0u; c0 < cEnd; c0 += CH) {
      let kb = c0 * DV + sl * WV;
      ${dotRows(g, [
        ['s', 'q', 'shK'],
        ['dp', 'gr', 'shV'],
      ])}
      ${exchange(g, ['s', 'dp'])}
      ${lines(g.CH, (r) => `let ds${r} = select(0.0, exp2(${comp('s', r)} - L2) * (${comp('dp', r)} - Di), ${visible({ within: ['rowValid', `c0 + ${r}u < cEnd`], key: `j0 + c0 + ${r}u`, qlim: 'qlim', segment: [`shSeg[c0 + ${r}u]`, 'mySeg'] })});`, '\n      ')}
      ${axpyRows(g, [['dq', (r) => `ds${r}`, 'shK']])}
    }
    workgroupBarrier();
  }
  if (rowValid) {
    ${storeSlice(g, 'dq', 'DQ', 'qbase', ' * p.scale')}
  }
}`;
}

const attnBackwardDq = simtFamily('attn.bwd.dq', 'dq', dqKernel);

function dkvKernel(g: Geo): string {
  return /* wgsl */ `${preamble(g)}
${backwardInputBindings(g.qType, g.kvType)}
@group(0) @binding(7) var<storage, read_write> DK: array<vec4f>;
@group(0) @binding(8) var<storage, read_write> DVo: array<vec4f>;
@group(0) @binding(9) var<storage, read> SEG: array<i32>;
var<workgroup> shQ: array<vec4f, ${g.BLOCK * g.DV}>;
var<workgroup> shG: array<vec4f, ${g.BLOCK * g.DV}>;
var<workgroup> shL2: array<f32, ${g.BLOCK}>;
var<workgroup> shD: array<f32, ${g.BLOCK}>;
var<workgroup> shSeg: array<i32, ${g.BLOCK}>;
var<workgroup> shSkip: u32;
${exchangeDecl(g, 2)}
${SEG_RANGE}

${entry(g)} {
  ${MASK_FLAGS}
  ${rowMap(g)}
  let b = wid.z; let hk = wid.y;
  let key0 = wid.x * ROWS;
  let j = key0 + row;
  let keyValid = j < p.S;
  let kbase = ((b * p.Sk + min(j, p.Sk - 1u)) * p.Hkv + hk) * p.dh4;
  ${regs('k')}
  ${regs('v')}
  ${regs('dk')}
  ${regs('dv')}
  if (keyValid) {
    ${loadSlice(g, 'k', 'ldK', 'kbase')}
    ${loadSlice(g, 'v', 'ldV', 'kbase')}
  }
  // Query blocks that can see some key of this block (uniform over the workgroup).
  let keysHere = select(0u, min(ROWS, p.S - key0), key0 < p.S);
  var qStart = 0u;
  if (CAUSAL) { qStart = u32(max(i32(key0) - p.qOffset, 0)); }
  var qEnd = p.T;
  if (keysHere == 0u) { qEnd = 0u; }
  var mySeg = 0;
  var kRange = vec2i(0, 0);
  if (SEGON && keysHere > 0u) {
    mySeg = SEG[b * p.T + min(j, p.S - 1u)];
    if (lid == 0u) { kRange = segRange(b, key0, keysHere); }
  }
  for (var hh = 0u; hh < p.group; hh++) {
    let h = hk * p.group + hh;
    for (var j0 = (qStart / BLOCK) * BLOCK; j0 < qEnd; j0 += BLOCK) { // j0: first query row of the block
      if (SEGON) {
        if (lid == 0u) {
          let qr = segRange(b, j0, min(BLOCK, p.T - j0));
          shSkip = select(0u, 1u, qr.y < kRange.x || qr.x > kRange.y);
        }
        if (workgroupUniformLoad(&shSkip) != 0u) { continue; }
      }
      ${stageRows(['Q', 'DO'], ['shQ', 'shG'], 'p.T', 'p.Hq', 'h', 'p.T')}
      for (var t = lid; t < BLOCK; t += NT) {
        let qi = j0 + t;
        var l2 = 0.0; var dd = 0.0;
        if (qi < p.T) { let r = (b * p.Hq + h) * p.T + qi; l2 = LSE[r] * LOG2E; dd = DD[r]; }
        shL2[t] = l2; shD[t] = dd;
        if (SEGON) { shSeg[t] = SEG[b * p.T + min(qi, p.T - 1u)]; }
      }
      workgroupBarrier();
      let cEnd = min(BLOCK, p.T - j0);
      for (var c0 = 0u; c0 < cEnd; c0 += CH) {
        let kb = c0 * DV + sl * WV;
        ${dotRows(g, [
          ['s', 'k', 'shQ'],
          ['dp', 'v', 'shG'],
        ])}
        ${exchange(g, ['s', 'dp'])}
        ${lines(
          g.CH,
          (
            r,
          ) => `let ok${r} = ${visible({ within: ['keyValid', `c0 + ${r}u < cEnd`], key: 'j', qlim: `i32(j0 + c0 + ${r}u) + p.qOffset`, segment: [`shSeg[c0 + ${r}u]`, 'mySeg'] })};
        let p${r} = select(0.0, exp2(${comp('s', r)} * p.scale2 - shL2[c0 + ${r}u]), ok${r});
        let ds${r} = select(0.0, p${r} * (${comp('dp', r)} - shD[c0 + ${r}u]), ok${r});`,
          '\n        ',
        )}
        ${axpyRows(g, [
          ['dv', (r) => `p${r}`, 'shG'],
          ['dk', (r) => `ds${r}`, 'shQ'],
        ])}
      }
      workgroupBarrier();
    }
  }
  if (j < p.Sk) {
    ${storeSlice(g, 'dk', 'DK', 'kbase', ' * p.scale')}
    ${storeSlice(g, 'dv', 'DVo', 'kbase')}
  }
}`;
}

const attnBackwardDkv = simtFamily('attn.bwd.dkv', 'dkv', dkvKernel);

// ---------------------------------------------------------------------------------------------
// Launchers.

/** Per engine (its pool): a tensor made on one engine is not a binding on another. */
const dummies = new WeakMap<object, Map<string, Tensor>>();
/** A one-element i32 stand-in for an optional binding the kernel never reads (its flag is off). */
function dummyI32(name: string): Tensor {
  const pool = engine().pool;
  let mine = dummies.get(pool);
  if (!mine) dummies.set(pool, (mine = new Map()));
  let t = mine.get(name);
  if (!t || t.disposed) mine.set(name, (t = Tensor.from(new Int32Array([0]), [1]).keep()));
  return t;
}
const segBinding = (d: Dims): Tensor => d.seg ?? dummyI32('seg');
const kvStartBinding = (d: Dims): Tensor => d.kvStart ?? dummyI32('kvStart');

/** Split-layout plan: rows per workgroup, row blocks per kv head, KV chunk length and count. */
function splitPlan(d: Dims, g: Geo, splits?: number): { rowBlocks: number; chunk: number; splits: number } {
  const rowBlocks = Math.ceil((d.group * d.T) / g.ROWS);
  const span = Math.max(d.S, 1);
  let n =
    splits ?? Math.min(Math.ceil(SPLIT_TARGET_WORKGROUPS / (d.B * d.Hkv * rowBlocks)), Math.ceil(span / (4 * g.BLOCK)));
  if (!Number.isInteger(n) || n < 1)
    throw new RangeError(`attention: splits must be a positive integer, got ${splits}`);
  n = Math.min(n, Math.ceil(span / g.BLOCK));
  const chunk = Math.ceil(span / n / g.BLOCK) * g.BLOCK;
  return { rowBlocks, chunk, splits: Math.ceil(span / chunk) };
}

/**
 * The subgroup-matrix kernels to run, or null for the portable ones: the override `tiles.fragments`
 * (tiled layout only), else the native ones where the chooser takes them (no other tile override).
 */
function pickFragments(
  pass: 'forward' | 'backward',
  d: Dims,
  caps: AttentionCaps,
  variant: ForwardVariant,
  tiles?: AttentionTiles,
): AttentionTiles['fragments'] | null {
  if (tiles?.fragments) {
    if (variant === 'split') throw new RangeError('attention: the subgroup-matrix kernels have the tiled layout only');
    if (tiles.fragments.mode === 'native')
      assertOffered({ ...tiles.fragments.shape, result: 'f32' }, caps.subgroupMatrixConfigs ?? [], 'attention');
    return tiles.fragments;
  }
  if (tiles || variant !== 'auto') return null;
  const posed = emulatedCore ? withNativeCore(caps, MATRIX_SHAPES[emulatedCore]) : caps;
  if (!chooseAttentionVariant(pass, shapeOf(d), posed).subgroupMatrix) return null;
  const shape = nativeFragmentShape(pass, shapeOf(d), posed);
  return shape ? { mode: emulatedCore ? 'emulated' : 'native', shape } : null;
}

let emulatedCore: MatrixShapeName | null = null;

/**
 * Tests only: while set, attention without tile overrides runs the emulated subgroup-matrix kernels of
 * this shape wherever a device like this one with the native core would run the native ones
 * (withNativeCore), so a workload makes the pass, head-dim and dtype choices such a device makes.
 * The GEMMs have their own switch (gemm.ts forceEmulatedMatrixCore).
 */
export function forceEmulatedAttentionCore(shape: MatrixShapeName | null): void {
  emulatedCore = shape;
}

/** Workgroup memory the native subgroup-matrix tiles are sized for (SG_TILES: NVIDIA's 48 KiB). */
const NATIVE_CORE_WORKGROUP_BYTES = 48 * 1024;

/**
 * These caps as a device with the native f16 → f32 core of `shape` would have them: the features,
 * subgroups of exactly 32, the configuration offered and the workgroup memory the native tiles are
 * sized for (at least).
 */
function withNativeCore(caps: AttentionCaps, shape: MatrixShape): AttentionCaps {
  return {
    ...caps,
    features: new Set<FeatureName>([...caps.features, ...SGM_REQUIRES]),
    subgroupMinSize: SG_WIDTH,
    subgroupMaxSize: SG_WIDTH,
    maxWorkgroupStorage: Math.max(caps.maxWorkgroupStorage, NATIVE_CORE_WORKGROUP_BYTES),
    subgroupMatrixConfigs: [{ componentType: 'f16', resultComponentType: 'f32', ...shape }],
  };
}

/** Whether the row-per-invocation kernels (attention-cpu.ts) run this call. */
function useCpuKernels(
  pass: 'forward' | 'backward',
  d: Dims,
  caps: AttentionCaps,
  layout: ForwardLayout,
  tiles?: AttentionTiles,
): boolean {
  const fits = layout === 'tiled' && d.Dh <= CPU_MAX_DH;
  if (tiles?.cpu && !fits)
    throw new RangeError(
      `attention: the software adapter kernels take the tiled layout and head dims up to ${CPU_MAX_DH} (got ${layout}, ${d.Dh})`,
    );
  return fits && (tiles?.cpu ?? (pass === 'backward' && caps.software && tiles === undefined));
}

function dispatchCpu(kind: CpuAttentionKind, d: Dims, tensors: Tensor[], u: Uniforms): void {
  const spec = cpuAttentionSpec(kind, d.Dh, d.qType, d.kvType);
  cpuAttention[kind].dispatch(spec, tensors, cpuAttentionGrid(spec, d), u);
}

function pickLayout(d: Dims, variant: ForwardVariant): ForwardLayout {
  if (variant !== 'auto') return variant;
  return chooseAttentionVariant('forward', shapeOf(d), deviceAttentionCaps()).layout;
}

/**
 * Forward attention without autograd: the output [B, T, Hq, Dh] (f32) and the logsumexp [B, Hq, T]
 * that backward needs. `variant` picks the layout (default: split for few query rows per kv head,
 * tiled otherwise); `tiles` overrides tile sizes, the exchange and the number of KV chunks.
 */
export function flashAttentionForward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  opts: FlashAttentionOptions,
  variant: ForwardVariant = 'auto',
  tiles?: AttentionTiles,
): { out: Tensor; lse: Tensor } {
  const d = checkInputs(q, k, v, opts);
  return forwardWithDims(d, q, k, v, variant, tiles);
}

function forwardWithDims(
  d: Dims,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  variant: ForwardVariant,
  tiles?: AttentionTiles,
): { out: Tensor; lse: Tensor } {
  const out = Tensor.empty(q.shape);
  const lse = Tensor.empty([d.B, d.Hq, d.T]);
  if (q.numel === 0) return { out, lse };
  const caps = deviceAttentionCaps();
  const frag = pickFragments('forward', d, caps, variant, tiles);
  if (frag) {
    const spec = sgAttentionSpec('fwd', frag.mode, frag.shape, d.Dh, d.qType, d.kvType);
    sgAttention.dispatch(
      spec,
      [q, k, v, out, lse, segBinding(d), kvStartBinding(d)],
      [Math.ceil(d.T / spec.BR), d.Hq, d.B],
      uniforms(d),
    );
    return { out, lse };
  }
  const layout = pickLayout(d, variant);
  if (useCpuKernels('forward', d, caps, layout, tiles)) {
    dispatchCpu('fwd', d, [q, k, v, out, lse, segBinding(d), kvStartBinding(d)], uniforms(d, { n: d.B * d.Hq * d.T }));
    return { out, lse };
  }
  if (layout === 'split') tiles = splitTiles(d, tiles);
  const g = makeGeo('fwd', d, pickExchange('forward', layout, d, caps, tiles), caps, tiles);
  const rows = d.B * d.Hq * d.T;
  const run = (o: Tensor, l: Tensor, grid: [number, number, number], u: Uniforms) =>
    attnForward.dispatch(g, [q, k, v, o, l, segBinding(d), kvStartBinding(d)], grid, u);
  if (layout === 'tiled') {
    if (tiles?.splits !== undefined) throw new RangeError('attention: splits applies to the split layout only');
    run(out, lse, [Math.ceil(d.T / g.ROWS), d.Hq, d.B], uniforms(d, { n: rows }));
    return { out, lse };
  }
  const plan = splitPlan(d, g, tiles?.splits);
  const grid: [number, number, number] = [plan.rowBlocks * plan.splits, d.Hkv, d.B];
  const u = uniforms(d, { n: rows, splitMode: true, ...plan });
  if (plan.splits === 1) {
    run(out, lse, grid, u);
    return { out, lse };
  }
  const partO = Tensor.empty([plan.splits, rows, d.Dh]);
  const partML = Tensor.empty([plan.splits, rows, 2]);
  run(partO, partML, grid, u);
  attnCombine.dispatch({}, [partO, partML, out, lse], grid1d(rows * (d.Dh / 4), 64), u);
  partO.dispose();
  partML.dispose();
  return { out, lse };
}

/**
 * Gradients of attention from the saved forward (out, lse) and dOut; `out` may be f32 or f16 (it is
 * read only for D = rowsum(dO ∘ out)). Returns dq [B, T, Hq, Dh], and
 * dk, dv [B, Sk, Hkv, Dh] (zero in rows ≥ kvLength), all f32; pass `want` to skip the ones not needed.
 */
export function flashAttentionBackward(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  opts: FlashAttentionOptions,
  want: { dq?: boolean; dkv?: boolean } = {},
  tiles?: AttentionTiles,
): { dq: Tensor | null; dk: Tensor | null; dv: Tensor | null } {
  const d = checkInputs(q, k, v, opts);
  return backwardWithDims(d, q, k, v, out, lse, dOut, want.dq ?? true, want.dkv ?? true, tiles);
}

function backwardWithDims(
  d: Dims,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  out: Tensor,
  lse: Tensor,
  dOut: Tensor,
  wantDq: boolean,
  wantDkv: boolean,
  tiles?: AttentionTiles,
): { dq: Tensor | null; dk: Tensor | null; dv: Tensor | null } {
  if (d.kvStart) throw new RangeError('flashAttention: kvStart (left-padded decoding) has no backward');
  assertDtype(dOut, 'f32', 'flashAttention dOut');
  if (out.dtype !== 'f32' && out.dtype !== 'f16')
    throw new TypeError(`flashAttention backward: out must be f32 or f16, got ${out.dtype}`);
  if (dOut.numel !== q.numel)
    throw new RangeError(
      `flashAttention backward: dOut [${dOut.shape.join(', ')}] must match q [${q.shape.join(', ')}]`,
    );
  const rows = d.B * d.T * d.Hq;
  const caps = deviceAttentionCaps();
  const exchange = pickExchange('backward', 'tiled', d, caps, tiles);
  const D = Tensor.empty([d.B, d.Hq, d.T]);
  const oType = out.dtype as 'f32' | 'f16';
  if (rows > 0) attnBackwardDot.dispatch({ oType }, [dOut, out, D], grid1d(rows, 64), uniforms(d, { n: rows }));
  const seg = segBinding(d);
  // The kernels of the two passes, each given its bindings (q, k, v, dO, lse, D, outputs…, segments).
  let launchDq: (bindings: Tensor[]) => void;
  let launchDkv: (bindings: Tensor[]) => void;
  const frag = pickFragments('backward', d, caps, 'auto', tiles);
  if (frag) {
    const spec = (pass: SgAttentionPass): SgAttentionSpec =>
      sgAttentionSpec(pass, frag.mode, frag.shape, d.Dh, d.qType, d.kvType);
    launchDq = (t) => {
      const g = spec('dq');
      sgAttention.dispatch(g, t, [Math.ceil(d.T / g.BR), d.Hq, d.B], uniforms(d));
    };
    launchDkv = (t) => {
      const g = spec('dkv');
      sgAttention.dispatch(g, t, [Math.ceil(d.Sk / g.BC), d.Hkv, d.B], uniforms(d));
    };
  } else if (useCpuKernels('backward', d, caps, 'tiled', tiles)) {
    launchDq = (t) => dispatchCpu('dq', d, t, uniforms(d));
    launchDkv = (t) => dispatchCpu('dkv', d, t, uniforms(d));
  } else {
    launchDq = (t) => {
      const g = makeGeo('dq', d, exchange, caps, tiles);
      attnBackwardDq.dispatch(g, t, [Math.ceil(d.T / g.ROWS), d.Hq, d.B], uniforms(d));
    };
    launchDkv = (t) => {
      const g = makeGeo('dkv', d, exchange, caps, tiles);
      attnBackwardDkv.dispatch(g, t, [Math.ceil(d.Sk / g.ROWS), d.Hkv, d.B], uniforms(d));
    };
  }
  let dq: Tensor | null = null;
  let dk: Tensor | null = null;
  let dv: Tensor | null = null;
  if (wantDq) {
    dq = Tensor.empty(q.shape);
    if (rows > 0) launchDq([q, k, v, dOut, lse, D, dq, seg]);
  }
  if (wantDkv) {
    dk = Tensor.empty(k.shape);
    dv = Tensor.empty(v.shape);
    if (k.numel > 0) launchDkv([q, k, v, dOut, lse, D, dk, dv, seg]);
  }
  D.dispose();
  return { dq, dk, dv };
}

/**
 * Scaled dot-product attention softmax(scale·q·kᵀ + mask)·v with causal / segment masking and GQA,
 * differentiable in q, k and v. q [B, T, Hq, Dh]; k, v [B, Sk, Hkv, Dh] (f32 or f16); returns
 * [B, T, Hq, Dh] f32.
 */
export function flashAttention(q: Tensor, k: Tensor, v: Tensor, opts: FlashAttentionOptions): Tensor {
  const d = checkInputs(q, k, v, opts);
  if (d.kvStart && isGradEnabled() && [q, k, v].some((t) => t.requiresGrad || t.gradFn !== null)) {
    throw new RangeError('flashAttention: kvStart (left-padded decoding) is forward-only; run it under noGrad');
  }
  const { out, lse } = forwardWithDims(d, q, k, v, 'auto');
  recordOp('flashAttention', [q, k, v], out, (n) => {
    const qs = n.save(q);
    const ks = n.save(k);
    const vs = n.save(v);
    // Backward reads the output only for D = rowsum(dO ∘ O): in fp16-mixed an f16 copy, shared with
    // o_proj, which keeps the same tensor as its GEMM input (activations.ts).
    const os = saveActivation(n, out);
    const ls = n.save(lse);
    const seg = d.seg ? n.save(d.seg) : null;
    const wantDq = q.requiresGrad || q.gradFn !== null;
    const wantDkv = k.requiresGrad || k.gradFn !== null || v.requiresGrad || v.gradFn !== null;
    return ([g]) => {
      const r = backwardWithDims({ ...d, seg }, qs, ks, vs, os, ls, g!, wantDq, wantDkv);
      return [r.dq, r.dk, r.dv];
    };
  });
  lse.dispose(); // backward holds its own saved view of it
  return out;
}
