// Matrix multiplication: C[b] = op(A[b]) · op(B[b]), batched, with either operand optionally
// transposed (transA/transB flip its last two dims, read in place: no transpose copies) and either
// operand 2-D and broadcast over the other's batch. B may be f32 or packed bf16/f16 (weights stay
// 16-bit in memory and are unpacked in-kernel); A and C are f32. `linear(x, w)` is y = x·Wᵀ with the
// Hugging Face weight layout [out, in].
//
// Kernel versions (kept side by side; the benchmark reports them, `matmul` uses the promoted ones):
//   matmulV1   naive: one thread per output element, K loop straight from global memory. The
//              simplest correct kernel, a cross-check for the others.
//   matmulV2   tiled: a 64×64 output tile per 256-thread workgroup, 4×4 outputs per thread in
//              registers, BK=16 slices of A and B staged through workgroup memory (k-major, rows
//              padded by 4 floats against bank conflicts on the k-fast stores, vec4 reads).
//   matmulV3   as V2 with a 128×128 tile and 8×8 outputs per thread (two 4-wide row groups and two
//              4-wide column groups 64 apart, so a warp's vec4 workgroup reads stay contiguous):
//              twice the arithmetic per workgroup-memory read (on an H100 a probe of this tile
//              shape beat the 64² one: docs/platform.md). Needs enough tiles to fill the GPU.
//   matmulGemv for M ≤ 4 rows with B transposed (linear at decode: x [1, in] · Wᵀ): one 32-lane
//              group per output column reads the weight row once, contiguously (vec4 of f32 or 8
//              packed halves per load), and the group reduces through workgroup memory. At decode
//              the weight read is the whole cost, so this runs at memory bandwidth, where a tiled
//              kernel would waste 63/64 of its work and read the weights with stride.
// Promoted (`matmul`, `linear`): Gemv when it applies, else V3 when the grid has ≥ 256 tiles of
// 128², else V2.
//
// Every kernel bounds-checks its loads (zero fill) and stores, so any M, N, K ≥ 0 works, and sizes
// come from uniforms (pool buffers may be larger than the tensor).
import { recordOp, type GradNode } from '../engine/autograd.js';
import { engine, Tensor, numelOf } from '../engine/tensor.js';
import { Uniforms, WGSL_HALF, dispatch } from './common.js';
import { cast, sumToSuffix } from './elementwise.js';

export interface MatmulOptions {
  /** Use Aᵀ: a holds [..., K, M]. */
  transA?: boolean;
  /** Use Bᵀ: b holds [..., N, K] (the Hugging Face [out, in] weight layout). */
  transB?: boolean;
}

export type MatmulKernel = 'v1' | 'v2' | 'v3' | 'gemv';

type BType = 'f32' | 'bf16' | 'f16';

/** Largest row count the GEMV kernel serves (each row is one register accumulator per thread). */
export const GEMV_MAX_ROWS = 4;

interface TileConfig {
  BM: number;
  BN: number;
  BK: number;
  TM: number;
  TN: number;
}
const V2_TILE: TileConfig = { BM: 64, BN: 64, BK: 16, TM: 4, TN: 4 };
const V3_TILE: TileConfig = { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8 };

// ---------------------------------------------------------------------------------------------
// WGSL

const PARAMS = /* wgsl */ `
struct P { M: u32, N: u32, K: u32, batch_off: u32, sA: u32, sB: u32, sC: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
`;

function bindings(bType: BType, bVec = false): string {
  const bElem = bType === 'f32' ? (bVec ? 'vec4f' : 'f32') : bVec ? 'vec4u' : 'u32';
  return /* wgsl */ `${PARAMS}${WGSL_HALF}
@group(0) @binding(1) var<storage, read> A: array<f32>;
@group(0) @binding(2) var<storage, read> B: array<${bElem}>;
@group(0) @binding(3) var<storage, read_write> C: array<f32>;
`;
}

/** Element (m, k) of op(A) and (k, n) of op(B) for one batch, zero outside the matrix. */
function loaders(transA: boolean, transB: boolean, bType: BType): string {
  const bRead = bType === 'f32' ? 'B[i]' : `half_word_get(B[i >> 1u], i, ${bType === 'bf16'})`;
  return /* wgsl */ `
fn loadA(base: u32, m: u32, k: u32) -> f32 {
  if (m >= p.M || k >= p.K) { return 0.0; }
  return A[base + ${transA ? 'k * p.M + m' : 'm * p.K + k'}];
}
fn loadB(base: u32, k: u32, n: u32) -> f32 {
  if (k >= p.K || n >= p.N) { return 0.0; }
  let i = base + ${transB ? 'n * p.K + k' : 'k * p.N + n'};
  return ${bRead};
}
`;
}

function naiveKernel(transA: boolean, transB: boolean, bType: BType): string {
  return /* wgsl */ `${bindings(bType)}${loaders(transA, transB, bType)}
@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let n = gid.x; let m = gid.y; let b = wid.z + p.batch_off;
  if (m >= p.M || n >= p.N) { return; }
  var acc = 0.0;
  for (var k = 0u; k < p.K; k++) { acc = fma(loadA(b * p.sA, m, k), loadB(b * p.sB, k, n), acc); }
  C[b * p.sC + m * p.N + n] = acc;
}`;
}

function tiledKernel(cfg: TileConfig, transA: boolean, transB: boolean, bType: BType): string {
  const { BM, BN, BK, TM, TN } = cfg;
  const WGX = BN / TN;
  const WGY = BM / TM;
  const NT = WGX * WGY;
  const RM = TM / 4; // vec4 row groups per thread
  const RN = TN / 4; // vec4 column groups per thread
  const SA = BM + 4; // padded row stride (floats) of the k-major A slice
  const SB = BN + 4;
  // Tile loads: consecutive threads walk the operand's contiguous dimension (coalesced reads).
  const aIdx = transA ? `let mm = e % ${BM}u; let kk = e / ${BM}u;` : `let kk = e % ${BK}u; let mm = e / ${BK}u;`;
  const bIdx = transB ? `let kk = e % ${BK}u; let nn = e / ${BK}u;` : `let nn = e % ${BN}u; let kk = e / ${BN}u;`;
  return /* wgsl */ `${bindings(bType)}${loaders(transA, transB, bType)}
var<workgroup> As: array<vec4f, ${(BK * SA) / 4}>;
var<workgroup> Bs: array<vec4f, ${(BK * SB) / 4}>;
@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % ${WGX}u; let ty = lid / ${WGX}u;
  let b = wid.z + p.batch_off;
  let baseA = b * p.sA; let baseB = b * p.sB;
  let m0 = wid.y * ${BM}u; let n0 = wid.x * ${BN}u;
  var acc: array<vec4f, ${TM * RN}>;
  for (var k0 = 0u; k0 < p.K; k0 += ${BK}u) {
    for (var r = 0u; r < ${(BM * BK) / NT}u; r++) {
      let e = lid + r * ${NT}u;
      ${aIdx}
      let s = kk * ${SA}u + mm;
      As[s >> 2u][s & 3u] = loadA(baseA, m0 + mm, k0 + kk);
    }
    for (var r = 0u; r < ${(BN * BK) / NT}u; r++) {
      let e = lid + r * ${NT}u;
      ${bIdx}
      let s = kk * ${SB}u + nn;
      Bs[s >> 2u][s & 3u] = loadB(baseB, k0 + kk, n0 + nn);
    }
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk++) {
      var av: array<vec4f, ${RM}>;
      var bv: array<vec4f, ${RN}>;
      for (var g = 0u; g < ${RM}u; g++) { av[g] = As[kk * ${SA / 4}u + g * ${WGY}u + ty]; }
      for (var q = 0u; q < ${RN}u; q++) { bv[q] = Bs[kk * ${SB / 4}u + q * ${WGX}u + tx]; }
      for (var i = 0u; i < ${TM}u; i++) {
        let a = av[i >> 2u][i & 3u];
        for (var q = 0u; q < ${RN}u; q++) { acc[i * ${RN}u + q] = fma(vec4f(a), bv[q], acc[i * ${RN}u + q]); }
      }
    }
    workgroupBarrier();
  }
  let baseC = b * p.sC;
  for (var i = 0u; i < ${TM}u; i++) {
    let m = m0 + (i >> 2u) * ${WGY * 4}u + ty * 4u + (i & 3u);
    if (m >= p.M) { continue; }
    for (var q = 0u; q < ${RN}u; q++) {
      let n = n0 + q * ${WGX * 4}u + tx * 4u;
      let v = acc[i * ${RN}u + q];
      for (var c = 0u; c < 4u; c++) {
        if (n + c < p.N) { C[baseC + m * p.N + n + c] = v[c]; }
      }
    }
  }
}`;
}

/** Elements of B per load in the GEMV kernel: vec4 of f32, vec4<u32> of packed halves, or one. */
function gemvWidth(bType: BType, K: number): number {
  if (K === 0) return 1; // an empty B binds 4 bytes: less than one vec4
  if (bType === 'f32') return K % 4 === 0 ? 4 : 1;
  return K % 8 === 0 ? 8 : 1;
}

const GEMV_LANES = 32;
const GEMV_WG = 256;
const GEMV_COLS = GEMV_WG / GEMV_LANES;

function gemvKernel(rows: number, transA: boolean, bType: BType, width: number): string {
  const aAt = (k: string) => (transA ? `A[baseA + (${k}) * p.M + m]` : `A[baseA + m * p.K + ${k}]`);
  let body: string;
  if (width === 1) {
    const bRead = bType === 'f32' ? 'B[i]' : `half_word_get(B[i >> 1u], i, ${bType === 'bf16'})`;
    body = `
    for (var k = lane; k < p.K; k += ${GEMV_LANES}u) {
      let i = rowB + k;
      let w = ${bRead};
      for (var m = 0u; m < ${rows}u; m++) { acc[m] = fma(${aAt('k')}, w, acc[m]); }
    }`;
  } else if (bType === 'f32') {
    body = `
    for (var k = lane * 4u; k < p.K; k += ${GEMV_LANES * 4}u) {
      let w = B[(rowB + k) >> 2u];
      for (var m = 0u; m < ${rows}u; m++) {
        let x = vec4f(${aAt('k')}, ${aAt('k + 1u')}, ${aAt('k + 2u')}, ${aAt('k + 3u')});
        acc[m] += dot(x, w);
      }
    }`;
  } else {
    // 8 packed halves per vec4<u32>: element 2j in the low half of word j.
    const unpack =
      bType === 'bf16'
        ? (w: string) => `vec2f(bitcast<f32>(${w} << 16u), bitcast<f32>(${w} & 0xffff0000u))`
        : (w: string) => `unpack2x16float(${w})`;
    body = `
    for (var k = lane * 8u; k < p.K; k += ${GEMV_LANES * 8}u) {
      let q = B[(rowB + k) >> 3u];
      let w0 = vec4f(${unpack('q.x')}, ${unpack('q.y')});
      let w1 = vec4f(${unpack('q.z')}, ${unpack('q.w')});
      for (var m = 0u; m < ${rows}u; m++) {
        let x0 = vec4f(${aAt('k')}, ${aAt('k + 1u')}, ${aAt('k + 2u')}, ${aAt('k + 3u')});
        let x1 = vec4f(${aAt('k + 4u')}, ${aAt('k + 5u')}, ${aAt('k + 6u')}, ${aAt('k + 7u')});
        acc[m] += dot(x0, w0) + dot(x1, w1);
      }
    }`;
  }
  return /* wgsl */ `${bindings(bType, width > 1)}
var<workgroup> red: array<f32, ${GEMV_WG * rows}>;
@compute @workgroup_size(${GEMV_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let lane = lid % ${GEMV_LANES}u;
  let n = (wid.x + wid.y * nwg.x) * ${GEMV_COLS}u + lid / ${GEMV_LANES}u;
  let b = wid.z + p.batch_off;
  let baseA = b * p.sA;
  var acc: array<f32, ${rows}>;
  if (n < p.N) {
    let rowB = b * p.sB + n * p.K;${body}
  }
  for (var m = 0u; m < ${rows}u; m++) { red[m * ${GEMV_WG}u + lid] = acc[m]; }
  for (var s = ${GEMV_LANES / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lane < s) {
      for (var m = 0u; m < ${rows}u; m++) { red[m * ${GEMV_WG}u + lid] += red[m * ${GEMV_WG}u + lid + s]; }
    }
  }
  if (lane == 0u && n < p.N) {
    for (var m = 0u; m < ${rows}u; m++) { C[b * p.sC + m * p.N + n] = red[m * ${GEMV_WG}u + lid]; }
  }
}`;
}

// ---------------------------------------------------------------------------------------------
// Shapes and launch

interface Plan {
  /** Batch dims of the output. */
  batchShape: number[];
  batch: number;
  M: number;
  N: number;
  K: number;
  /** Batch strides in elements (0 for a broadcast 2-D operand). */
  sA: number;
  sB: number;
}

function bTypeOf(b: Tensor): BType {
  if (b.dtype === 'f32' || b.dtype === 'bf16' || b.dtype === 'f16') return b.dtype;
  throw new TypeError(`matmul: b must be f32, bf16 or f16, got ${b.dtype}`);
}

function plan(a: Tensor, b: Tensor, opts: MatmulOptions): Plan {
  if (a.dtype !== 'f32') throw new TypeError(`matmul: a must be f32, got ${a.dtype}`);
  bTypeOf(b);
  if (a.shape.length < 2 || b.shape.length < 2) throw new RangeError(`matmul: operands need ≥ 2 dims, got [${a.shape}] and [${b.shape}]`);
  const aB = a.shape.slice(0, -2);
  const bB = b.shape.slice(0, -2);
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const [M, K] = opts.transA ? [ac, ar] : [ar, ac];
  const [Kb, N] = opts.transB ? [bc, br] : [br, bc];
  if (K !== Kb) {
    throw new RangeError(`matmul: inner dims differ: a [${a.shape}]${opts.transA ? 'ᵀ' : ''} · b [${b.shape}]${opts.transB ? 'ᵀ' : ''} (${K} vs ${Kb})`);
  }
  const sameBatch = aB.length === bB.length && aB.every((d, i) => d === bB[i]);
  if (!sameBatch && aB.length > 0 && bB.length > 0) {
    throw new RangeError(`matmul: batch dims [${aB}] and [${bB}] differ (they must match, or one operand must be 2-D)`);
  }
  const batchShape = aB.length > 0 ? aB : bB;
  return { batchShape, batch: numelOf(batchShape), M, N, K, sA: aB.length > 0 ? M * K : 0, sB: bB.length > 0 ? K * N : 0 };
}

function uniforms(pl: Plan, batchOff: number): Uniforms {
  return new Uniforms().u32(pl.M).u32(pl.N).u32(pl.K).u32(batchOff).u32(pl.sA).u32(pl.sB).u32(pl.M * pl.N).u32(0);
}

/** Dispatches over the batch in chunks that respect the per-dimension workgroup limit. */
function dispatchBatched(key: string, code: () => string, ts: Tensor[], xy: [number, number], pl: Plan): void {
  const max = engine().dev.limits.maxComputeWorkgroupsPerDimension;
  for (let off = 0; off < pl.batch; off += max) {
    dispatch(key, code, ts, [xy[0], xy[1], Math.min(max, pl.batch - off)], uniforms(pl, off));
  }
}

function launch(kernel: MatmulKernel, a: Tensor, b: Tensor, opts: MatmulOptions): Tensor {
  let pl = plan(a, b, opts);
  const outShape = [...pl.batchShape, pl.M, pl.N];
  const tA = !!opts.transA;
  const tB = !!opts.transB;
  // A batched, B 2-D, A not transposed: the batch folds into M (one big GEMM, better tiles).
  if (pl.sB === 0 && pl.sA !== 0 && !tA) pl = { ...pl, batchShape: [], batch: 1, M: pl.batch * pl.M, sA: 0 };
  const bType = bTypeOf(b);
  const c = Tensor.empty(outShape);
  const ts = [a, b, c];
  const { M, N } = pl;
  const flags = `${tA ? 'T' : 'N'}${tB ? 'T' : 'N'}.${bType}`;
  if (pl.batch === 0 || M === 0 || N === 0) return c;
  switch (kernel) {
    case 'v1':
      dispatchBatched(`matmul.v1.${flags}`, () => naiveKernel(tA, tB, bType), ts, [Math.ceil(N / 16), Math.ceil(M / 16)], pl);
      break;
    case 'v2':
    case 'v3': {
      const cfg = kernel === 'v2' ? V2_TILE : V3_TILE;
      dispatchBatched(`matmul.${kernel}.${flags}`, () => tiledKernel(cfg, tA, tB, bType), ts, [Math.ceil(N / cfg.BN), Math.ceil(M / cfg.BM)], pl);
      break;
    }
    case 'gemv': {
      if (!tB || M > GEMV_MAX_ROWS) throw new RangeError(`matmulGemv needs transB and M ≤ ${GEMV_MAX_ROWS} (got M=${M}, transB=${tB})`);
      const width = gemvWidth(bType, pl.K);
      const groups = Math.ceil(N / GEMV_COLS);
      const max = engine().dev.limits.maxComputeWorkgroupsPerDimension;
      const gy = Math.ceil(groups / max);
      dispatchBatched(`matmul.gemv.${M}.${flags}.w${width}`, () => gemvKernel(M, tA, bType, width), ts, [Math.ceil(groups / gy), gy], pl);
      break;
    }
  }
  return c;
}

/** Which kernel the promoted `matmul` runs for these operands. */
export function chooseMatmulKernel(a: Tensor, b: Tensor, opts: MatmulOptions = {}): MatmulKernel {
  const pl = plan(a, b, opts);
  const rows = pl.sB === 0 && pl.sA !== 0 && !opts.transA ? pl.batch * pl.M : pl.M;
  if (opts.transB && rows <= GEMV_MAX_ROWS) return 'gemv';
  const batch = pl.sB === 0 && pl.sA !== 0 && !opts.transA ? 1 : pl.batch;
  const tiles128 = Math.ceil(rows / 128) * Math.ceil(pl.N / 128) * batch;
  return tiles128 >= 256 ? 'v3' : 'v2';
}

/** V1 (naive) forward only, no autograd. */
export const matmulV1 = (a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor => launch('v1', a, b, opts);
/** V2 (64² tile, 4×4 per thread) forward only, no autograd. */
export const matmulV2 = (a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor => launch('v2', a, b, opts);
/** V3 (128² tile, 8×8 per thread) forward only, no autograd. */
export const matmulV3 = (a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor => launch('v3', a, b, opts);
/** GEMV for M ≤ 4 with transB, forward only, no autograd. */
export const matmulGemv = (a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor => launch('gemv', a, b, opts);

/** The promoted kernel, forward only (no autograd node): used by backward rules and other kernels. */
export function matmulForward(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  return launch(chooseMatmulKernel(a, b, opts), a, b, opts);
}

// ---------------------------------------------------------------------------------------------
// Autograd

function wants(t: Tensor): boolean {
  return t.requiresGrad || t.gradFn !== null;
}

/** dL/dA for C = op(A)·op(B) given G = dL/dC; a 2-D A broadcast over a batch gets the batch sum. */
function gradA(A: Tensor, B: Tensor, G: Tensor, tA: boolean, tB: boolean): Tensor {
  // op(A) grad is G·op(B)ᵀ; when A is stored transposed, its grad is the transpose: op(B)·Gᵀ. There
  // B is the left operand, which the kernels take in f32 only: a 16-bit B is widened first (rare:
  // only a transposed A that needs a gradient against 16-bit B takes this path).
  let full: Tensor;
  if (tA) {
    const Bf = B.dtype === 'f32' ? B : cast(B, 'f32');
    full = matmulForward(Bf, G, { transA: tB, transB: true });
    if (Bf !== B) Bf.dispose();
  } else {
    full = matmulForward(G, B, { transB: !tB });
  }
  if (A.shape.length === 2 && full.shape.length > 2) {
    const g = sumToSuffix(full, A.shape);
    full.dispose();
    return g;
  }
  return full;
}

/** dL/dB for C = op(A)·op(B); a 2-D B broadcast over a batch gets the batch sum. */
function gradB(A: Tensor, B: Tensor, G: Tensor, tA: boolean, tB: boolean): Tensor {
  const broadcast = B.shape.length === 2 && G.shape.length > 2;
  if (broadcast && !tA) {
    // Rows of every batch stack into one K dimension: the batch sum happens inside one GEMM.
    const Af = A.reshape([-1, A.shape[A.shape.length - 1]!]);
    const Gf = G.reshape([-1, G.shape[G.shape.length - 1]!]);
    const g = tB ? matmulForward(Gf, Af, { transA: true }) : matmulForward(Af, Gf, { transA: true });
    Af.dispose();
    Gf.dispose();
    return g;
  }
  // op(B) grad is op(A)ᵀ·G; stored transposed, Gᵀ·op(A).
  const full = tB ? matmulForward(G, A, { transA: true, transB: tA }) : matmulForward(A, G, { transA: !tA });
  if (broadcast) {
    const g = sumToSuffix(full, B.shape);
    full.dispose();
    return g;
  }
  return full;
}

/**
 * C = op(a)·op(b): a [...batch, M, K], b [...batch, K, N] or 2-D b broadcast over a's batch (or 2-D
 * a over b's); transA/transB flip the last two dims of that operand. b may be packed bf16/f16.
 * Backward: dA = dC·op(B)ᵀ, dB = op(A)ᵀ·dC through the same kernels with transposes.
 */
export function matmul(a: Tensor, b: Tensor, opts: MatmulOptions = {}): Tensor {
  const c = matmulForward(a, b, opts);
  const tA = !!opts.transA;
  const tB = !!opts.transB;
  recordOp('matmul', [a, b], c, (node: GradNode) => {
    const as = node.save(a);
    const bs = node.save(b);
    const [wantA, wantB] = [wants(a), wants(b)];
    return ([g]) => [wantA ? gradA(as, bs, g!, tA, tB) : null, wantB ? gradB(as, bs, g!, tA, tB) : null];
  });
  return c;
}

/**
 * y = x·Wᵀ: x [..., in], w [out, in] (f32 or packed bf16/f16) → [..., out]. Backward gives
 * dX = dY·W, and dW = dYᵀ·X (f32) only when w needs a gradient (frozen base weights get none).
 */
export function linear(x: Tensor, w: Tensor): Tensor {
  if (w.shape.length !== 2) throw new RangeError(`linear: weight must be [out, in], got [${w.shape}]`);
  const [out, inF] = w.shape as [number, number];
  if (x.shape.length < 1 || x.shape[x.shape.length - 1] !== inF) {
    throw new RangeError(`linear: x [${x.shape}] does not end in the weight's in-features ${inF} (weight [${w.shape}])`);
  }
  const lead = x.shape.slice(0, -1);
  const x2 = x.reshape([numelOf(lead), inF]);
  const y2 = matmulForward(x2, w, { transB: true });
  x2.dispose();
  const y = y2.reshape([...lead, out]);
  y2.dispose();
  recordOp('linear', [x, w], y, (node: GradNode) => {
    const xs = node.save(x);
    const ws = node.save(w);
    const [wantX, wantW] = [wants(x), wants(w)];
    return ([g]) => {
      const g2 = g!.reshape([numelOf(lead), out]);
      let dx: Tensor | null = null;
      let dw: Tensor | null = null;
      if (wantX) {
        const d2 = matmulForward(g2, ws);
        dx = d2.reshape(x.shape);
        d2.dispose();
      }
      if (wantW) {
        const xf = xs.reshape([numelOf(lead), inF]);
        dw = matmulForward(g2, xf, { transA: true });
        xf.dispose();
      }
      g2.dispose();
      return [dx, dw];
    };
  });
  return y;
}

