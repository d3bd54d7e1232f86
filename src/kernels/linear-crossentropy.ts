// Fused LM head + cross-entropy: loss = CE(h[rows]·Wᵀ, labels) without the logits [M, V] or their
// gradient in memory.
//
// The M labelled rows are processed in chunks of R rows (R·V·4 bytes ≤ CHUNK_BYTES). Forward, per
// chunk: gather the chunk's rows of h [R, D], logits = hc·Wᵀ [R, V] (matmulForward), the
// cross-entropy kernel writes the chunk's per-row losses and logsumexp into [M]-sized arrays; the
// logits block is released before the next chunk, so the pool hands the same buffer back. The mean
// (over counted rows) is one more dispatch over the [M] losses.
// Backward, per chunk: gather hc again, recompute the logits, overwrite them in place with
// dlogits = (softmax − onehot)·scale from the saved lse, then dhc = dlogits·W [R, D] is scattered
// into dh's rows and, when W is trainable, dW += dlogitsᵀ·hc. Saved for backward: h, the row
// indices, labels, lse [M] and the count — the logits are computed twice (one extra GEMM, as in
// every fused-loss implementation) instead of being kept.
//
// Rows not in `rows` get a zero gradient. The arithmetic per row is that of linear() followed by
// crossEntropy(): the same kernels, so the results match the unfused path to rounding of the GEMM
// tile order.
import { recordOp } from '../engine/autograd.js';
import { storageBindingLimit } from '../engine/device.js';
import { engine, Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms, WG, WGSL_FLAT_INDEX } from './common.js';
import { crossEntropyBackwardInPlace, crossEntropyMean, crossEntropyRowsInto } from './crossentropy.js';
import { accumulate, zeros } from './elementwise.js';
import { matmulForward } from './matmul.js';
import { kernelFamily } from './variants.js';

/** Default bound on one chunk's logits block (bytes). */
export const LOSS_CHUNK_BYTES = 32 * 2 ** 20;

/**
 * Rows per chunk for M labelled rows and vocabulary V: as many as fit `budget` bytes of f32 logits
 * and one storage binding (`maxBindingBytes`), a multiple of 64 when at least 64 (GEMM tiles), at
 * least 1. The memory estimate reports it too, with the device's binding limit.
 */
export function lossChunkRows(m: number, v: number, maxBindingBytes = Infinity, budget = LOSS_CHUNK_BYTES): number {
  const fit = Math.max(1, Math.floor(Math.min(budget, maxBindingBytes) / (4 * v)));
  const rows = fit >= 64 ? fit - (fit % 64) : fit;
  return Math.max(1, Math.min(rows, m));
}

const ROWS_HEADER = /* wgsl */ `
struct P { rows: u32, d: u32, row0: u32, _a: u32 }
@group(0) @binding(0) var<uniform> p: P;
${WGSL_FLAT_INDEX}`;

/** Y[i, :] = H[IDX[row0 + i], :] for i < rows. */
const GATHER = kernelFamily({
  family: 'lmloss.gather',
  specs: () => [{}],
  code: () => /* wgsl */ `${ROWS_HEADER}
@group(0) @binding(1) var<storage, read> H: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<i32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = flat_index(gid, nwg, ${WG}u);
  if (t >= p.rows * p.d) { return; }
  let i = t / p.d;
  Y[t] = H[u32(IDX[p.row0 + i]) * p.d + (t - i * p.d)];
}`,
});

/** DH[IDX[row0 + i], :] = G[i, :] (indices are distinct: every element has one writer). */
const SCATTER = kernelFamily({
  family: 'lmloss.scatter',
  specs: () => [{}],
  code: () => /* wgsl */ `${ROWS_HEADER}
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> IDX: array<i32>;
@group(0) @binding(3) var<storage, read_write> DH: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let t = flat_index(gid, nwg, ${WG}u);
  if (t >= p.rows * p.d) { return; }
  let i = t / p.d;
  DH[u32(IDX[p.row0 + i]) * p.d + (t - i * p.d)] = G[t];
}`,
});

function gatherRows(h: Tensor, idx: Tensor, row0: number, rows: number): Tensor {
  const d = h.shape[1]!;
  const y = Tensor.empty([rows, d]);
  GATHER.dispatch({}, [h, idx, y], grid1d(rows * d), new Uniforms().u32(rows).u32(d).u32(row0).u32(0));
  return y;
}

function scatterRows(g: Tensor, idx: Tensor, row0: number, dh: Tensor): void {
  const [rows, d] = g.shape as [number, number];
  SCATTER.dispatch({}, [g, idx, dh], grid1d(rows * d), new Uniforms().u32(rows).u32(d).u32(row0).u32(0));
}

export interface LinearCrossEntropyOptions {
  /** Label value that contributes nothing (any negative label is ignored too). Default −100. */
  ignoreIndex?: number;
  /**
   * Distinct rows of h that carry the labels (i32 [M]), e.g. the positions that have a target;
   * default: every row (M = N).
   */
  rows?: Tensor;
  /** Rows per chunk (default lossChunkRows: ≤ LOSS_CHUNK_BYTES of logits). */
  chunkRows?: number;
  /** 'mean' (default): the mean over counted rows, [1]; 'none': the per-row losses [M]. */
  reduction?: 'mean' | 'none';
}

/**
 * Cross-entropy of the logits h[rows]·Wᵀ against `labels` (i32 [M]) without materializing them:
 * h [N, D] f32, w [V, D] (f32, or packed bf16/f16 when frozen). Differentiable in h and (f32) w.
 * With every label ignored the mean is 0 and so is its gradient (as crossEntropy).
 */
export function linearCrossEntropy(h: Tensor, w: Tensor, labels: Tensor, opts: LinearCrossEntropyOptions = {}): Tensor {
  assertDtype(h, 'f32', 'linearCrossEntropy h');
  assertDtype(labels, 'i32', 'linearCrossEntropy labels');
  if (h.shape.length !== 2 || w.shape.length !== 2)
    throw new RangeError(`linearCrossEntropy: h [N, D] and w [V, D] must be 2-D, got [${h.shape}] and [${w.shape}]`);
  const [n, d] = h.shape as [number, number];
  const [v, dw] = w.shape as [number, number];
  if (dw !== d) throw new RangeError(`linearCrossEntropy: w [${w.shape}] does not match h's hidden size ${d}`);
  if (v === 0) throw new RangeError('linearCrossEntropy: empty vocabulary');
  if (w.requiresGrad && w.dtype !== 'f32')
    throw new TypeError(`linearCrossEntropy: a trainable w must be f32 (got ${w.dtype})`);
  const m = labels.numel;
  if (opts.rows) {
    assertDtype(opts.rows, 'i32', 'linearCrossEntropy rows');
    if (opts.rows.numel !== m) throw new RangeError(`linearCrossEntropy: ${opts.rows.numel} rows for ${m} labels`);
  } else if (m !== n) throw new RangeError(`linearCrossEntropy: ${m} labels for ${n} rows of h`);
  const ignoreIndex = opts.ignoreIndex ?? -100;
  const chunk = opts.chunkRows ?? lossChunkRows(m, v, storageBindingLimit(engine().dev.limits));
  if (!(Number.isInteger(chunk) && chunk >= 1))
    throw new RangeError(`linearCrossEntropy: chunkRows must be a positive integer, got ${chunk}`);
  const idx = opts.rows
    ? opts.rows.reshape([m])
    : Tensor.from(
        Int32Array.from({ length: n }, (_, i) => i),
        [n],
      );

  const rowLoss = Tensor.empty([m]);
  const lse = Tensor.empty([m]);
  for (let r0 = 0; r0 < m; r0 += chunk) {
    const rows = Math.min(chunk, m - r0);
    const hc = gatherRows(h, idx, r0, rows);
    const logits = matmulForward(hc, w, { transB: true });
    hc.dispose();
    crossEntropyRowsInto(logits, labels, rowLoss, lse, r0, ignoreIndex);
    logits.dispose();
  }
  let out = rowLoss;
  let count: Tensor | null = null;
  if ((opts.reduction ?? 'mean') === 'mean') {
    ({ loss: out, count } = crossEntropyMean(rowLoss, labels, ignoreIndex));
    rowLoss.dispose();
  }

  const wantH = h.requiresGrad || h.gradFn !== null;
  const wantW = w.requiresGrad || w.gradFn !== null;
  recordOp('linearCrossEntropy', [h, w], out, (node) => {
    const hs = node.save(h);
    const ws = node.save(w);
    const is = node.save(idx);
    const ls = node.save(labels);
    const lses = node.save(lse);
    const cs = count ? node.save(count) : null;
    return ([g]) => {
      // Rows outside `rows` get no gradient: zero-fill only when some are left out.
      const dh = wantH ? (opts.rows && m < n ? zeros([n, d]) : Tensor.empty([n, d])) : null;
      const dW = wantW ? zeros([v, d]) : null;
      for (let r0 = 0; r0 < m; r0 += chunk) {
        const rows = Math.min(chunk, m - r0);
        const hc = gatherRows(hs, is, r0, rows);
        const dlogits = matmulForward(hc, ws, { transB: true });
        crossEntropyBackwardInPlace(dlogits, ls, lses, g!, cs, r0, ignoreIndex);
        if (dh) {
          const dhc = matmulForward(dlogits, ws);
          scatterRows(dhc, is, r0, dh);
          dhc.dispose();
        }
        if (dW) {
          const part = matmulForward(dlogits, hc, { transA: true });
          accumulate(dW, part);
          part.dispose();
        }
        dlogits.dispose();
        hc.dispose();
      }
      return [dh, dW];
    };
  });
  idx.dispose();
  lse.dispose();
  count?.dispose();
  return out;
}
