// RMSNorm (Llama): y = x · rsqrt(mean(x²) + eps) · w over the last dimension, all in f32.
//
// HF's LlamaRMSNorm computes the variance in f32, multiplies x by rsqrt, casts back to the input
// dtype and then multiplies the weight; we stay in f32 throughout, in the same order ((x·r)·w).
//
// Kernels (one version each so far; bench/kernels/norm.ts times them):
// - forward: one workgroup per row, threads stride over D (coalesced), tree reduction of Σx² in
//   workgroup memory; writes y and rstd [rows] (saved for backward).
// - backward dX: one workgroup per row: dot = Σ g·w·x (tree reduction), then
//   dx = r·g·w − (r³·dot / D)·x.
// - backward dW (only when w.requiresGrad; the norm weight is usually frozen under LoRA), two passes
//   for a deterministic sum over rows: pass 1 sums g·x·r over a block of rows per column into
//   partials [rowBlocks, D]; pass 2 sums the partials in a fixed order.
import { recordOp } from '../engine/autograd.js';
import { type DType, Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms, WGSL_HALF } from './common.js';
import { kernelFamily } from './variants.js';

/** Threads per workgroup for the per-row kernels (a power of two: the tree reduction halves it). */
const ROW_WG = 256;
/** Threads per workgroup (columns) for the dW passes. */
const COL_WG = 256;
/** Rows summed by one thread in dW pass 1. */
const DW_ROWS_PER_BLOCK = 32;

/** WGSL: the weight binding and an accessor `wload(j)` for f32 or packed 16-bit weights. */
function weightDecl(dtype: DType, binding: number): string {
  if (dtype === 'f32') {
    return `@group(0) @binding(${binding}) var<storage, read> W: array<f32>;
fn wload(j: u32) -> f32 { return W[j]; }`;
  }
  return `${WGSL_HALF}
@group(0) @binding(${binding}) var<storage, read> W: array<u32>;
fn wload(j: u32) -> f32 { return half_word_get(W[j / 2u], j, ${dtype === 'bf16'}); }`;
}

/** WGSL: tree reduction of `red` (ROW_WG entries); every thread returns red[0]. */
const WGSL_TREE_SUM = /* wgsl */ `
var<workgroup> red: array<f32, ${ROW_WG}>;
fn tree_sum(lid: u32, v: f32) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s >>= 1u) {
    if (lid < s) { red[lid] += red[lid + s]; }
    workgroupBarrier();
  }
  let total = red[0];
  workgroupBarrier(); // red may be reused right after
  return total;
}`;

const ROW_HEADER = /* wgsl */ `
struct P { rows: u32, d: u32, eps: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;`;

/** What a per-row kernel computes: the forward (y, rstd) or dL/dx, and the weight's storage dtype. */
interface RowSpec {
  pass: 'fwd' | 'bwd_dx';
  dtype: 'f32' | 'bf16' | 'f16';
}

/**
 * The per-row kernels: one workgroup per row, threads striding over D. Both passes share the row's
 * bindings of x and w, the tree reduction and the loop structure; they differ in the sum reduced
 * (Σx² or Σg·w·x) and what is written from it.
 */
function rowKernel({ pass, dtype }: RowSpec): string {
  const fwd = pass === 'fwd';
  const io = fwd
    ? `@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@group(0) @binding(4) var<storage, read_write> RSTD: array<f32>;`
    : `@group(0) @binding(3) var<storage, read> RSTD: array<f32>;
@group(0) @binding(4) var<storage, read> G: array<f32>;
@group(0) @binding(5) var<storage, read_write> DX: array<f32>;`;
  const body = fwd
    ? `var ss = 0.0;
  for (var j = lid; j < p.d; j += ${ROW_WG}u) { let v = X[base + j]; ss += v * v; }
  let r = inverseSqrt(tree_sum(lid, ss) / f32(p.d) + p.eps);
  for (var j = lid; j < p.d; j += ${ROW_WG}u) { Y[base + j] = (X[base + j] * r) * wload(j); }
  if (lid == 0u) { RSTD[row] = r; }`
    : `var dot = 0.0;
  for (var j = lid; j < p.d; j += ${ROW_WG}u) { dot += G[base + j] * wload(j) * X[base + j]; }
  let r = RSTD[row];
  let c = r * r * r * tree_sum(lid, dot) / f32(p.d);
  for (var j = lid; j < p.d; j += ${ROW_WG}u) { DX[base + j] = r * G[base + j] * wload(j) - c * X[base + j]; }`;
  return /* wgsl */ `${ROW_HEADER}
@group(0) @binding(1) var<storage, read> X: array<f32>;
${weightDecl(dtype, 2)}
${io}
${WGSL_TREE_SUM}
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.d;
  ${body}
}`;
}

const WEIGHT_DTYPES = ['f32', 'bf16', 'f16'] as const;

const ROW = kernelFamily<RowSpec>({
  family: 'rmsnorm.row',
  specs: () => (['fwd', 'bwd_dx'] as const).flatMap((pass) => WEIGHT_DTYPES.map((dtype) => ({ pass, dtype }))),
  code: rowKernel,
  workgroupBytes: () => 4 * ROW_WG,
});

const DW_PARTIAL_KERNEL = /* wgsl */ `
struct P { rows: u32, d: u32, rows_per_block: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> RSTD: array<f32>;
@group(0) @binding(3) var<storage, read> G: array<f32>;
@group(0) @binding(4) var<storage, read_write> PART: array<f32>;
@compute @workgroup_size(${COL_WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(workgroup_id) wid: vec3u) {
  let j = gid.x;
  if (j >= p.d) { return; }
  let r0 = wid.y * p.rows_per_block;
  let r1 = min(r0 + p.rows_per_block, p.rows);
  var s = 0.0;
  for (var r = r0; r < r1; r++) { s += G[r * p.d + j] * X[r * p.d + j] * RSTD[r]; }
  PART[wid.y * p.d + j] = s;
}`;

const DW_FINAL_KERNEL = /* wgsl */ `
struct P { blocks: u32, d: u32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read_write> DW: array<f32>;
@compute @workgroup_size(${COL_WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let j = gid.x;
  if (j >= p.d) { return; }
  var s = 0.0;
  for (var b = 0u; b < p.blocks; b++) { s += PART[b * p.d + j]; }
  DW[j] = s;
}`;

const DW_PARTIAL = kernelFamily({ family: 'rmsnorm.bwd_dw_partial', specs: () => [{}], code: () => DW_PARTIAL_KERNEL });
const DW_FINAL = kernelFamily({ family: 'rmsnorm.bwd_dw_final', specs: () => [{}], code: () => DW_FINAL_KERNEL });

function checkArgs(x: Tensor, weight: Tensor): { rows: number; d: number } {
  assertDtype(x, 'f32', 'rmsnorm x');
  if (!['f32', 'bf16', 'f16'].includes(weight.dtype))
    throw new TypeError(`rmsnorm: weight dtype ${weight.dtype} (expected f32, bf16 or f16)`);
  const d = x.shape[x.shape.length - 1];
  if (d === undefined || d === 0)
    throw new RangeError(`rmsnorm: x must have a non-empty last dimension, got [${x.shape.join(', ')}]`);
  if (weight.numel !== d || weight.shape.length !== 1)
    throw new RangeError(`rmsnorm: weight [${weight.shape.join(', ')}] does not match the last dimension ${d} of x`);
  if (weight.requiresGrad && weight.dtype !== 'f32')
    throw new TypeError(`rmsnorm: a trainable weight must be f32 (got ${weight.dtype})`);
  return { rows: x.numel / d, d };
}

const rowParams = (rows: number, d: number, eps: number) => new Uniforms().u32(rows).u32(d).f32(eps).u32(0);

/** y and the per-row rstd = 1/sqrt(mean(x²) + eps) (for tests; `rmsnorm` keeps rstd internally). */
export function rmsnormWithStats(x: Tensor, weight: Tensor, eps: number): { y: Tensor; rstd: Tensor } {
  const { rows, d } = checkArgs(x, weight);
  const y = Tensor.empty(x.shape);
  const rstd = Tensor.empty(x.shape.slice(0, -1).length ? x.shape.slice(0, -1) : [1]);
  ROW.dispatch(
    { pass: 'fwd', dtype: weight.dtype as RowSpec['dtype'] },
    [x, weight, y, rstd],
    grid1d(rows, 1),
    rowParams(rows, d, eps),
  );
  const wantX = x.requiresGrad || x.gradFn !== null;
  const wantW = weight.requiresGrad || weight.gradFn !== null;
  recordOp('rmsnorm', [x, weight], y, (node) => {
    // x and rstd are read by both gradients; the weight only by dX. y is never kept.
    const xs = node.save(x);
    const ws = wantX ? node.save(weight) : null;
    const rs = node.save(rstd);
    return ([g]) => [wantX ? rmsnormBackwardDx(xs, ws!, rs, g!) : null, wantW ? rmsnormBackwardDw(xs, rs, g!) : null];
  });
  return { y, rstd };
}

/** Llama RMSNorm over the last dimension: x [..., D] f32, weight [D] (f32, or bf16/f16 when frozen). */
export function rmsnorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  const { y, rstd } = rmsnormWithStats(x, weight, eps);
  rstd.dispose(); // backward holds its own view when it needs one
  return y;
}

/** dL/dx of rmsnorm from the saved x, weight, rstd and the incoming gradient g. */
export function rmsnormBackwardDx(x: Tensor, weight: Tensor, rstd: Tensor, g: Tensor): Tensor {
  const d = x.shape[x.shape.length - 1]!;
  const rows = x.numel / d;
  const dx = Tensor.empty(x.shape);
  ROW.dispatch(
    { pass: 'bwd_dx', dtype: weight.dtype as RowSpec['dtype'] },
    [x, weight, rstd, g, dx],
    grid1d(rows, 1),
    rowParams(rows, d, 0),
  );
  return dx;
}

/** dL/dw = Σ_rows g·x·rstd, summed in a fixed order (deterministic). */
export function rmsnormBackwardDw(x: Tensor, rstd: Tensor, g: Tensor): Tensor {
  const d = x.shape[x.shape.length - 1]!;
  const rows = x.numel / d;
  const maxY = 65535;
  const perBlock = Math.max(DW_ROWS_PER_BLOCK, Math.ceil(rows / maxY));
  const blocks = Math.max(1, Math.ceil(rows / perBlock));
  const dw = Tensor.empty([d]);
  const cols = Math.ceil(d / COL_WG);
  const partial = blocks === 1 ? dw : Tensor.empty([blocks, d]);
  DW_PARTIAL.dispatch({}, [x, rstd, g, partial], [cols, blocks], new Uniforms().u32(rows).u32(d).u32(perBlock).u32(0));
  if (blocks > 1) {
    DW_FINAL.dispatch({}, [partial, dw], [cols], new Uniforms().u32(blocks).u32(d).u32(0).u32(0));
    partial.dispose();
  }
  return dw;
}
