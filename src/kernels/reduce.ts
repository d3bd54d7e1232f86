// Reductions over the last axis (or over all elements) and softmax over the last axis, each with
// its backward rule beside it.
//
// One workgroup reduces one row: each thread accumulates a strided slice of the row, then the
// workgroup combines the partials in a fixed binary tree through workgroup memory. The order of
// operations depends only on the shape, so results are bitwise deterministic run to run.
// All-element reductions run the same kernel twice: chunks of REDUCE_CHUNK elements to partials,
// then the partials (recursively, for very large tensors).
//
// Subgroup operations are deliberately not used: WGSL has no portable subgroup-to-slot mapping
// (no subgroup_id in core, and invocation-to-subgroup layout is not guaranteed), so combining
// subgroup partials deterministically needs assumptions; and these kernels are bandwidth-bound —
// the tree costs log2(256) = 8 barriers per row against a full pass over the row's memory. The
// portable path is the only path, so it is the tested one on every adapter.
//
// max also finds the index of the maximum (first occurrence on ties), which backward routes the
// gradient to (the subgradient PyTorch's max(dim) uses). Which element max picks when a row holds
// NaN is unspecified.
import { type GradNode, recordOp } from '../engine/autograd.js';
import { engine, Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms, WG, WGSL_FLAT_INDEX } from './common.js';
import { kernelFamily } from './variants.js';

/** Elements per workgroup in the first pass of an all-element reduction. */
export const REDUCE_CHUNK = 8192;

type ReduceOp = 'sum' | 'max';

const PARAMS = /* wgsl */ `
struct P { rows: u32, D: u32, n: u32, scale: f32, global_idx: u32, _p0: u32, _p1: u32, _p2: u32 }
@group(0) @binding(0) var<uniform> p: P;
const NO_INDEX = 0xffffffffu;
`;

/** The workgroup sizes of the per-row kernels (rowThreads picks one). */
const ROW_THREADS = [64, 256] as const;
type RowThreads = (typeof ROW_THREADS)[number];

/** Threads per row: fewer for short rows so most of a workgroup is not idle. */
function rowThreads(D: number): RowThreads {
  return D > 256 ? 256 : 64;
}

/** Row index for grids folded into two dimensions (rows may exceed 65535). */
function rowGrid(rows: number): [number, number] {
  const max = engine().dev.limits.maxComputeWorkgroupsPerDimension;
  const gy = Math.ceil(rows / max);
  return [Math.max(1, Math.ceil(rows / gy)), gy];
}

interface ReduceSpec {
  op: ReduceOp;
  wg: RowThreads;
  /** The input carries the indices of its values (max's later passes over partials). */
  indexed: boolean;
}

function reduceKernel({ op, wg, indexed: indexedInput }: ReduceSpec): string {
  const tree = (s: string) =>
    op === 'sum'
      ? `sv[lid] += sv[lid + ${s}];`
      : `let ov = sv[lid + ${s}]; let oi = si[lid + ${s}];
         if (oi != NO_INDEX && (si[lid] == NO_INDEX || ov > sv[lid] || (ov == sv[lid] && oi < si[lid]))) { sv[lid] = ov; si[lid] = oi; }`;
  const idxOf = indexedInput ? 'XI[i]' : 'select(i - start, i, p.global_idx == 1u)';
  return /* wgsl */ `${PARAMS}
@group(0) @binding(1) var<storage, read> X: array<f32>;
${indexedInput ? '@group(0) @binding(2) var<storage, read> XI: array<u32>;' : ''}
@group(0) @binding(${indexedInput ? 3 : 2}) var<storage, read_write> Y: array<f32>;
${op === 'max' ? `@group(0) @binding(${indexedInput ? 4 : 3}) var<storage, read_write> YI: array<u32>;` : ''}
var<workgroup> sv: array<f32, ${wg}>;
${op === 'max' ? `var<workgroup> si: array<u32, ${wg}>;` : ''}
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let start = row * p.D;
  let end = min(start + p.D, p.n);
  ${
    op === 'sum'
      ? `var acc = 0.0;
  for (var i = start + lid; i < end; i += ${wg}u) { acc += X[i]; }
  sv[lid] = acc;`
      : `var best = 0.0; var bi = NO_INDEX;
  for (var i = start + lid; i < end; i += ${wg}u) {
    let v = X[i];
    if (bi == NO_INDEX || v > best) { best = v; bi = ${idxOf}; }
  }
  sv[lid] = best; si[lid] = bi;`
  }
  for (var s = ${wg / 2}u; s > 0u; s >>= 1u) {
    workgroupBarrier();
    if (lid < s) { ${tree('s')} }
  }
  if (lid == 0u) {
    ${op === 'sum' ? 'Y[row] = sv[0] * p.scale;' : 'Y[row] = sv[0]; YI[row] = si[0];'}
  }
}`;
}

// Only max carries indices into a later pass (a sum's partials are plain values).
const REDUCE = kernelFamily<ReduceSpec>({
  family: 'reduce',
  specs: () =>
    ROW_THREADS.flatMap((wg): ReduceSpec[] => [
      { op: 'sum', wg, indexed: false },
      { op: 'max', wg, indexed: false },
      { op: 'max', wg, indexed: true },
    ]),
  code: reduceKernel,
  workgroupBytes: ({ op, wg }) => wg * (op === 'max' ? 8 : 4),
});

function params(rows: number, D: number, n: number, scale = 1, globalIdx = false): Uniforms {
  return new Uniforms()
    .u32(rows)
    .u32(D)
    .u32(n)
    .f32(scale)
    .u32(globalIdx ? 1 : 0)
    .u32(0)
    .u32(0)
    .u32(0);
}

interface Reduced {
  values: Tensor;
  /** max only: u32 index of the maximum (within the row, or flat for all-element reductions). */
  indices: Tensor | null;
}

/** Reduces rows of length D of the flat data (the last row may be short: n bounds it). */
function reduceRows(
  op: ReduceOp,
  x: Tensor,
  xi: Tensor | null,
  rows: number,
  D: number,
  scale: number,
  globalIdx: boolean,
): Reduced {
  const values = Tensor.empty([rows]);
  const indices = op === 'max' ? Tensor.empty([rows], 'i32') : null;
  const wg = rowThreads(D);
  const ts = [x, ...(xi ? [xi] : []), values, ...(indices ? [indices] : [])];
  REDUCE.dispatch({ op, wg, indexed: xi !== null }, ts, rowGrid(rows), params(rows, D, x.numel, scale, globalIdx));
  return { values, indices };
}

/** Reduces all elements to one, in passes of REDUCE_CHUNK. */
function reduceAll(op: ReduceOp, x: Tensor, scale: number): Reduced {
  let cur: Reduced = { values: x, indices: null };
  let first = true;
  for (;;) {
    const n = cur.values.numel;
    const last = n <= REDUCE_CHUNK;
    const rows = last ? 1 : Math.ceil(n / REDUCE_CHUNK);
    const next = reduceRows(
      op,
      cur.values,
      cur.indices,
      rows,
      last ? Math.max(n, 1) : REDUCE_CHUNK,
      last ? scale : 1,
      true,
    );
    if (!first) {
      cur.values.dispose();
      cur.indices?.dispose();
    }
    first = false;
    cur = next;
    if (last) return cur;
  }
}

function resolveAxis(x: Tensor, axis: number | undefined, what: string): 'last' | 'all' {
  if (axis === undefined) return 'all';
  const r = x.shape.length;
  if (axis === -1 || axis === r - 1) return r <= 1 ? 'all' : 'last';
  throw new RangeError(
    `${what}: only the last axis (-1 or ${r - 1}) or all elements (no axis) are supported, got axis ${axis} for shape [${x.shape}]`,
  );
}

function reduce(
  op: ReduceOp,
  x: Tensor,
  axis: number | undefined,
  mean: boolean,
  what: string,
): Reduced & { D: number; mode: 'last' | 'all' } {
  assertDtype(x, 'f32', what);
  const mode = resolveAxis(x, axis, what);
  if (mode === 'all') {
    const n = x.numel;
    const r = reduceAll(op, x, mean ? 1 / n : 1);
    return { ...r, D: n, mode };
  }
  const D = x.shape[x.shape.length - 1]!;
  const rows = x.numel / Math.max(D, 1);
  const outShape = x.shape.slice(0, -1);
  if (D === 0) throw new RangeError(`${what}: cannot reduce an empty last axis (shape [${x.shape}])`);
  const r = reduceRows(op, x, null, rows, D, mean ? 1 / D : 1, false);
  const values = r.values.reshape(outShape);
  r.values.dispose();
  const indices = r.indices ? r.indices.reshape(outShape) : null;
  r.indices?.dispose();
  return { values, indices, D, mode };
}

// ---------------------------------------------------------------------------------------------
// Backward kernels

const EW_PARAMS = /* wgsl */ `
struct P { n: u32, D: u32, scale: f32, global_idx: u32 }
@group(0) @binding(0) var<uniform> p: P;
${WGSL_FLAT_INDEX}`;

/** dx[i] = scale·g[row(i)]: the gradient of a sum (scale 1) or mean (1/D) broadcast over the row. */
const BROADCAST_ROWS = kernelFamily({
  family: 'reduce.broadcast_rows',
  specs: () => [{}],
  code: () => /* wgsl */ `${EW_PARAMS}
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read_write> DX: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (i >= p.n) { return; }
  DX[i] = p.scale * G[i / p.D];
}`,
});

/** dx[i] = g[row] where i is the row's argmax, else 0. */
const MAX_BACKWARD = kernelFamily({
  family: 'reduce.max.backward',
  specs: () => [{}],
  code: () => /* wgsl */ `${EW_PARAMS}
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<u32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (i >= p.n) { return; }
  let row = i / p.D;
  let at = select(i - row * p.D, i, p.global_idx == 1u);
  DX[i] = select(0.0, G[row], IDX[row] == at);
}`,
});

function ewParams(n: number, D: number, scale = 1, globalIdx = false): Uniforms {
  return new Uniforms()
    .u32(n)
    .u32(D)
    .f32(scale)
    .u32(globalIdx ? 1 : 0);
}

function broadcastRows(g: Tensor, shape: readonly number[], D: number, scale: number): Tensor {
  const dx = Tensor.empty(shape);
  BROADCAST_ROWS.dispatch({}, [g, dx], grid1d(dx.numel), ewParams(dx.numel, D, scale));
  return dx;
}

// ---------------------------------------------------------------------------------------------
// Public ops

/** Sum over the last axis (axis -1) → shape[:-1], or over all elements (no axis) → [1]. */
export function sum(x: Tensor, axis?: number): Tensor {
  const r = reduce('sum', x, axis, false, 'sum');
  recordOp('sum', [x], r.values, () => ([g]) => [broadcastRows(g!, x.shape, r.D, 1)]);
  return r.values;
}

/** Mean over the last axis (axis -1) → shape[:-1], or over all elements (no axis) → [1]. */
export function mean(x: Tensor, axis?: number): Tensor {
  const r = reduce('sum', x, axis, true, 'mean');
  recordOp('mean', [x], r.values, () => ([g]) => [broadcastRows(g!, x.shape, r.D, 1 / r.D)]);
  return r.values;
}

/** Max over the last axis (axis -1) → shape[:-1], or over all elements (no axis) → [1]. */
export function max(x: Tensor, axis?: number): Tensor {
  const r = reduce('max', x, axis, false, 'max');
  const idx = r.indices!;
  recordOp('max', [x], r.values, (n: GradNode) => {
    const saved = n.save(idx);
    return ([g]) => {
      const dx = Tensor.empty(x.shape);
      MAX_BACKWARD.dispatch({}, [g!, saved, dx], grid1d(dx.numel), ewParams(dx.numel, r.D, 1, r.mode === 'all'));
      return [dx];
    };
  });
  idx.dispose(); // the saved view (if any) keeps the storage for backward
  return r.values;
}

/** Index of the maximum over the last axis (first on ties), as i32 → shape[:-1]. Not differentiable. */
export function argmax(x: Tensor): Tensor {
  const r = reduce('max', x, -1, false, 'argmax');
  r.values.dispose();
  return r.indices!;
}

const SOFTMAX = kernelFamily<{ wg: RowThreads }>({
  family: 'softmax',
  specs: () => ROW_THREADS.map((wg) => ({ wg })),
  workgroupBytes: ({ wg }) => wg * 8,
  code: ({ wg }) => /* wgsl */ `${PARAMS}
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read_write> Y: array<f32>;
var<workgroup> sm: array<f32, ${wg}>;
var<workgroup> ss: array<f32, ${wg}>;
const LOWEST = -0x1.fffffep+127f; // most negative finite f32
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let start = row * p.D;
  // Online max and sum of exp(x - max) per thread (one read of the row), then a tree merge.
  var m = LOWEST; var s = 0.0;
  for (var i = start + lid; i < start + p.D; i += ${wg}u) {
    let x = X[i];
    if (x > m) { s = s * exp(m - x); m = x; }
    s += exp(x - m);
  }
  sm[lid] = m; ss[lid] = s;
  for (var k = ${wg / 2}u; k > 0u; k >>= 1u) {
    workgroupBarrier();
    if (lid < k) {
      let m2 = sm[lid + k]; let m1 = sm[lid];
      let mx = max(m1, m2);
      ss[lid] = ss[lid] * exp(m1 - mx) + ss[lid + k] * exp(m2 - mx);
      sm[lid] = mx;
    }
  }
  workgroupBarrier();
  let mx = sm[0]; let total = ss[0];
  for (var i = start + lid; i < start + p.D; i += ${wg}u) { Y[i] = exp(X[i] - mx) / total; }
}`,
});

const SOFTMAX_BACKWARD = kernelFamily<{ wg: RowThreads }>({
  family: 'softmax.backward',
  specs: () => ROW_THREADS.map((wg) => ({ wg })),
  workgroupBytes: ({ wg }) => wg * 4,
  code: ({ wg }) => /* wgsl */ `${PARAMS}
@group(0) @binding(1) var<storage, read> Yv: array<f32>;
@group(0) @binding(2) var<storage, read> G: array<f32>;
@group(0) @binding(3) var<storage, read_write> DX: array<f32>;
var<workgroup> sv: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let start = row * p.D;
  var acc = 0.0;
  for (var i = start + lid; i < start + p.D; i += ${wg}u) { acc = fma(G[i], Yv[i], acc); }
  sv[lid] = acc;
  for (var k = ${wg / 2}u; k > 0u; k >>= 1u) {
    workgroupBarrier();
    if (lid < k) { sv[lid] += sv[lid + k]; }
  }
  workgroupBarrier();
  let dot = sv[0];
  for (var i = start + lid; i < start + p.D; i += ${wg}u) { DX[i] = Yv[i] * (G[i] - dot); }
}`,
});

/**
 * Softmax over the last axis, numerically stable (exp(x − rowmax)). Backward:
 * dx = y ⊙ (g − Σ_row g ⊙ y).
 */
export function softmax(x: Tensor): Tensor {
  assertDtype(x, 'f32', 'softmax');
  if (x.shape.length === 0) throw new RangeError('softmax needs at least one dim');
  const D = x.shape[x.shape.length - 1]!;
  const rows = D === 0 ? 0 : x.numel / D;
  const y = Tensor.empty(x.shape);
  if (rows === 0) return y;
  const wg = rowThreads(D);
  SOFTMAX.dispatch({ wg }, [x, y], rowGrid(rows), params(rows, D, x.numel));
  recordOp('softmax', [x], y, (node: GradNode) => {
    const ys = node.save(y);
    return ([g]) => {
      const dx = Tensor.empty(x.shape);
      SOFTMAX_BACKWARD.dispatch({ wg }, [ys, g!, dx], rowGrid(rows), params(rows, D, x.numel));
      return [dx];
    };
  });
  return y;
}
