// Fused cross-entropy over the vocabulary, from logits [N, V] and i32 labels [N].
//
// Forward (one workgroup per row, threads striding over V): an online max / sum-exp in one pass over
// the row (each thread keeps (m, s) and rescales s when m grows), then a tree reduction of the
// (m, s) pairs; lse = m + log(s) and the row's loss = lse − logit[label]. Rows whose label is the
// ignore index or negative get loss 0. A label ≥ V cannot be reported without a CPU sync, so the row
// gets NaN (the loss turns NaN rather than silently wrong). The per-row lse [N] is saved for
// backward; no softmax is materialized.
//
// Mean (crossEntropy): a single workgroup sums the per-row losses and counts the counted rows on the
// GPU (no CPU sync), loss = Σ / count. With every label ignored the count is 0 and the loss is
// defined as 0 (torch returns NaN there); its gradient is then 0 everywhere.
//
// Backward writes dlogits = (softmax − onehot(label)) · g / count directly from logits and lse (one
// logits-sized output), g being the loss's incoming gradient (a GPU scalar). crossEntropyPerRow
// returns the per-row losses [N] instead, and its backward scales row r by g[r].
//
// Row offset: the per-row kernels can process a chunk of rows (logits [R, V]) whose labels, losses
// and lse live at rows row0.. of [N]-sized arrays, and backward can overwrite the logits with
// their gradient in place: linear-crossentropy.ts computes the loss chunk by chunk from the hidden
// states and never holds more than one [R, V] block.
import { recordOp } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms } from './common.js';
import { kernelFamily } from './variants.js';

/** Threads per workgroup of the per-row kernels (a power of two for the tree reductions). */
const ROW_WG = 256;

const ROW_HEADER = /* wgsl */ `
struct P { rows: u32, v: u32, ignore_index: i32, nan_bits: u32, row0: u32, _a: u32, _b: u32, _c: u32 } // NaN via a uniform: a constant NaN does not compile
@group(0) @binding(0) var<uniform> p: P;
fn counted(label: i32) -> bool { return label >= 0 && label != p.ignore_index; }`;

const FORWARD = kernelFamily({
  family: 'crossentropy.fwd',
  specs: () => [{}],
  workgroupBytes: () => 2 * ROW_WG * 4,
  code: () => /* wgsl */ `${ROW_HEADER}
@group(0) @binding(1) var<storage, read> LOGITS: array<f32>;
@group(0) @binding(2) var<storage, read> LABELS: array<i32>;
@group(0) @binding(3) var<storage, read_write> LOSS: array<f32>;
@group(0) @binding(4) var<storage, read_write> LSE: array<f32>;
const NEG_BIG: f32 = -3.4028234e38; // finite: exp(NEG_BIG − m) = 0 without inf − inf
var<workgroup> red_m: array<f32, ${ROW_WG}>;
var<workgroup> red_s: array<f32, ${ROW_WG}>;
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.v;
  var m = NEG_BIG;
  var s = 0.0;
  for (var j = lid; j < p.v; j += ${ROW_WG}u) {
    let x = LOGITS[base + j];
    if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s += exp(x - m); }
  }
  red_m[lid] = m;
  red_s[lid] = s;
  workgroupBarrier();
  for (var k = ${ROW_WG / 2}u; k > 0u; k >>= 1u) {
    if (lid < k) {
      let m1 = red_m[lid];
      let m2 = red_m[lid + k];
      let mm = max(m1, m2);
      red_s[lid] = red_s[lid] * exp(m1 - mm) + red_s[lid + k] * exp(m2 - mm);
      red_m[lid] = mm;
    }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let lse = red_m[0] + log(red_s[0]);
    LSE[p.row0 + row] = lse;
    let label = LABELS[p.row0 + row];
    var loss = 0.0;
    if (counted(label)) {
      if (u32(label) < p.v) { loss = lse - LOGITS[base + u32(label)]; } else { loss = bitcast<f32>(p.nan_bits); }
    }
    LOSS[p.row0 + row] = loss;
  }
}`,
});

const MEAN = kernelFamily({
  family: 'crossentropy.mean',
  specs: () => [{}],
  workgroupBytes: () => 2 * ROW_WG * 4,
  code: () => /* wgsl */ `${ROW_HEADER}
@group(0) @binding(1) var<storage, read> LOSS: array<f32>;
@group(0) @binding(2) var<storage, read> LABELS: array<i32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;   // [1] mean loss
@group(0) @binding(4) var<storage, read_write> COUNT: array<f32>; // [1] counted rows
var<workgroup> red_l: array<f32, ${ROW_WG}>;
var<workgroup> red_c: array<f32, ${ROW_WG}>;
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var l = 0.0;
  var c = 0.0;
  for (var r = lid; r < p.rows; r += ${ROW_WG}u) {
    l += LOSS[r];
    if (counted(LABELS[r])) { c += 1.0; }
  }
  red_l[lid] = l;
  red_c[lid] = c;
  workgroupBarrier();
  for (var k = ${ROW_WG / 2}u; k > 0u; k >>= 1u) {
    if (lid < k) { red_l[lid] += red_l[lid + k]; red_c[lid] += red_c[lid + k]; }
    workgroupBarrier();
  }
  if (lid == 0u) {
    let count = red_c[0];
    COUNT[0] = count;
    OUT[0] = select(0.0, red_l[0] / count, count > 0.0);
  }
}`,
});

interface BackwardSpec {
  /** Scale g[0] / count (the mean's gradient) instead of g[row] per row. */
  mean: boolean;
  /** The gradient overwrites the logits (no DLOGITS binding). */
  inplace: boolean;
}

/**
 * dlogits[r, j] = (exp(logit − lse_r) − [j == label_r]) · scale_r, 0 for rows not counted.
 * mean: scale_r = g[0] / count; per-row: scale_r = g[row0 + r]. In place: written over LOGITS.
 */
function backwardKernel({ mean, inplace: inPlace }: BackwardSpec): string {
  let binding = 1;
  const decl = [
    `@group(0) @binding(${binding++}) var<storage, ${inPlace ? 'read_write' : 'read'}> LOGITS: array<f32>;`,
    `@group(0) @binding(${binding++}) var<storage, read> LABELS: array<i32>;`,
    `@group(0) @binding(${binding++}) var<storage, read> LSE: array<f32>;`,
    `@group(0) @binding(${binding++}) var<storage, read> G: array<f32>;`,
  ];
  if (mean) decl.push(`@group(0) @binding(${binding++}) var<storage, read> COUNT: array<f32>;`);
  if (!inPlace) decl.push(`@group(0) @binding(${binding++}) var<storage, read_write> DLOGITS: array<f32>;`);
  const out = inPlace ? 'LOGITS' : 'DLOGITS';
  return /* wgsl */ `${ROW_HEADER}
${decl.join('\n')}
@compute @workgroup_size(${ROW_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) lid: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.v;
  let label = LABELS[p.row0 + row];
  ${mean ? 'let count = COUNT[0];\n  var scale = 0.0;\n  if (count > 0.0) { scale = G[0] / count; }' : 'let scale = G[p.row0 + row];'}
  if (!counted(label)) {
    for (var j = lid; j < p.v; j += ${ROW_WG}u) { ${out}[base + j] = 0.0; }
    return;
  }
  let lse = LSE[p.row0 + row];
  for (var j = lid; j < p.v; j += ${ROW_WG}u) {
    let prob = exp(LOGITS[base + j] - lse);
    ${out}[base + j] = select(prob, prob - 1.0, i32(j) == label) * scale;
  }
}`;
}

const BACKWARD = kernelFamily<BackwardSpec>({
  family: 'crossentropy.bwd',
  specs: () => [false, true].flatMap((mean) => [false, true].map((inplace) => ({ mean, inplace }))),
  code: backwardKernel,
});

export interface CrossEntropyOptions {
  /** Label value that contributes nothing (any negative label is ignored too). Default −100. */
  ignoreIndex?: number;
}

function checkArgs(logits: Tensor, labels: Tensor): { rows: number; v: number } {
  assertDtype(logits, 'f32', 'crossEntropy logits');
  assertDtype(labels, 'i32', 'crossEntropy labels');
  if (logits.shape.length !== 2)
    throw new RangeError(`crossEntropy: logits must be [N, V], got [${logits.shape.join(', ')}]`);
  const [rows, v] = logits.shape as [number, number];
  if (labels.numel !== rows) throw new RangeError(`crossEntropy: ${labels.numel} labels for ${rows} rows of logits`);
  if (v === 0) throw new RangeError('crossEntropy: empty vocabulary dimension');
  return { rows, v };
}

const params = (rows: number, v: number, ignoreIndex: number, row0 = 0) =>
  new Uniforms().u32(rows).u32(v).i32(ignoreIndex).u32(0x7fc00000).u32(row0).u32(0).u32(0).u32(0);

/**
 * Losses and lse of the rows of `logits` [R, V] into rows row0..row0+R of `loss` and `lse`, with
 * labels read from the same rows of `labels`; not recorded.
 */
export function crossEntropyRowsInto(
  logits: Tensor,
  labels: Tensor,
  loss: Tensor,
  lse: Tensor,
  row0: number,
  ignoreIndex: number,
): void {
  const [rows, v] = logits.shape as [number, number];
  FORWARD.dispatch({}, [logits, labels, loss, lse], grid1d(rows, 1), params(rows, v, ignoreIndex, row0));
}

/** Per-row losses [N] (0 where ignored) and logsumexp [N]; not recorded. */
export function crossEntropyRows(
  logits: Tensor,
  labels: Tensor,
  opts: CrossEntropyOptions = {},
): { loss: Tensor; lse: Tensor } {
  const { rows } = checkArgs(logits, labels);
  const loss = Tensor.empty([rows]);
  const lse = Tensor.empty([rows]);
  crossEntropyRowsInto(logits, labels, loss, lse, 0, opts.ignoreIndex ?? -100);
  return { loss, lse };
}

/** The mean over counted rows of per-row losses [N] ([1]) and the count of counted rows ([1]); not recorded. */
export function crossEntropyMean(
  rowLoss: Tensor,
  labels: Tensor,
  ignoreIndex: number,
): { loss: Tensor; count: Tensor } {
  const loss = Tensor.empty([1]);
  const count = Tensor.empty([1]);
  MEAN.dispatch({}, [rowLoss, labels, loss, count], [1], params(rowLoss.numel, 0, ignoreIndex));
  return { loss, count };
}

/**
 * dlogits from the forward's saved lse: with `count` (the mean's [1] counted-row count) the scale is
 * g[0]/count, without it row r is scaled by g[r]. Exported for benchmarks; autograd calls it.
 */
export function crossEntropyBackward(
  logits: Tensor,
  labels: Tensor,
  lse: Tensor,
  g: Tensor,
  count: Tensor | null,
  ignoreIndex = -100,
): Tensor {
  const [rows, v] = logits.shape as [number, number];
  const d = Tensor.empty(logits.shape);
  const mean = count !== null;
  const buffers = mean ? [logits, labels, lse, g, count, d] : [logits, labels, lse, g, d];
  BACKWARD.dispatch({ mean, inplace: false }, buffers, grid1d(rows, 1), params(rows, v, ignoreIndex));
  return d;
}

/**
 * Overwrites the chunk `logits` [R, V] with its gradient; labels, lse and (per-row) g are read at
 * rows row0.. (see crossEntropyBackward for the scale).
 */
export function crossEntropyBackwardInPlace(
  logits: Tensor,
  labels: Tensor,
  lse: Tensor,
  g: Tensor,
  count: Tensor | null,
  row0: number,
  ignoreIndex: number,
): void {
  const [rows, v] = logits.shape as [number, number];
  const mean = count !== null;
  const buffers = mean ? [logits, labels, lse, g, count] : [logits, labels, lse, g];
  BACKWARD.dispatch({ mean, inplace: true }, buffers, grid1d(rows, 1), params(rows, v, ignoreIndex, row0));
}

/**
 * Mean cross-entropy over the counted rows (label ≥ 0 and ≠ ignoreIndex): a [1] tensor. With no
 * counted row the loss is 0 (not NaN) and so is its gradient.
 */
export function crossEntropy(logits: Tensor, labels: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const { loss: rowLoss, lse } = crossEntropyRows(logits, labels, opts);
  const { loss: out, count } = crossEntropyMean(rowLoss, labels, ignoreIndex);
  rowLoss.dispose();
  recordOp('crossentropy', [logits], out, (node) => {
    const ls = node.save(logits);
    const lb = node.save(labels);
    const lsv = node.save(lse);
    const cs = node.save(count);
    return ([g]) => [crossEntropyBackward(ls, lb, lsv, g!, cs, ignoreIndex)];
  });
  lse.dispose();
  count.dispose();
  return out;
}

/** Per-row cross-entropy [N] (0 where the label is ignored), for per-example losses. */
export function crossEntropyPerRow(logits: Tensor, labels: Tensor, opts: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const { loss, lse } = crossEntropyRows(logits, labels, opts);
  recordOp('crossentropy.rows', [logits], loss, (node) => {
    const ls = node.save(logits);
    const lb = node.save(labels);
    const lsv = node.save(lse);
    return ([g]) => [crossEntropyBackward(ls, lb, lsv, g!, null, ignoreIndex)];
  });
  lse.dispose();
  return loss;
}
