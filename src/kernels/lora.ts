// LoRA: y = x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ with a frozen base W (f32/bf16/f16 Tensor or NF4), A [r, in],
// B [out, r], s = alpha / r (or alpha / √r for rsLoRA: the caller passes the number).
//
// Shapes: M rows (all leading dims of x), K = in, N = out, r = rank (r ≤ 128).
// Forward: the base matmul (matmul.ts / nf4.ts), u = drop(x)·Aᵀ [M, r] (loraDown, dropout fused into
// the x loads), then y += s·u·Bᵀ in place (loraUp, a rank-r update tile kernel).
// Backward (one node for x, A, B; W gets nothing):
//   gu = s·g·B [M, r]                      loraDown with the weight read transposed
//   dB = s·gᵀ·u [N, r]                     loraWeightGrad (reduction over M, split for parallelism)
//   dA = guᵀ·drop(x) [r, K]                loraWeightGrad, transposed store, mask regenerated
//   dX = g·W (base, dequantized on the fly for NF4) + mask ⊙ (gu·A)   loraUp accumulating into dX
// Dropout is PEFT's nn.Dropout on the LoRA input only: keep element (m, k) when
// rand_uniform(seed, m·K + k) ≥ p, scaled by 1/(1−p); backward regenerates the same mask from the
// seed (no mask tensor). dropout 0 compiles the kernels without any mask code.
import { recordOp, type GradNode } from '../engine/autograd.js';
import { WGSL_RANDOM } from '../engine/random.js';
import { Tensor, numelOf } from '../engine/tensor.js';
import { Uniforms, assertDtype, dispatch } from './common.js';
import { matmulForward } from './matmul.js';
import { nf4LinearBackward, nf4LinearForward, type Nf4Weight } from './nf4.js';

export const LORA_MAX_RANK = 128;

export interface LoraOptions {
  /** Dropout probability on the LoRA input path (PEFT lora_dropout). Default 0. */
  dropout?: number;
  /** Mask seed (u32); required when dropout > 0. Use a distinct seed per layer and step. */
  seed?: number;
}

interface Dropout {
  p: number;
  seed: number;
}

const WGSL_DROPOUT_PARAMS = 'seed: u32, p: f32, inv_keep: f32';

function dropoutUniforms(u: Uniforms, d: Dropout | null): Uniforms {
  return u.u32(d ? d.seed >>> 0 : 0).f32(d ? d.p : 0).f32(d ? 1 / (1 - d.p) : 1);
}

// ---------------------------------------------------------------------------------------------
// loraDown: out[m, j] = alpha · Σ_k mask(m, k)·X[m, k]·W(j, k), W stored [r, K] (wT = false) or [K, r].

const DOWN_ROWS = 32;
const DOWN_KC = 32;

function loraDownKernel(r: number, wT: boolean, drop: boolean): string {
  const per = Math.ceil((DOWN_ROWS * r) / 256);
  const wLoad = wT ? `W[gk * ${r}u + j]` : 'W[j * p.K + gk]';
  return /* wgsl */ `
struct P { M: u32, K: u32, alpha: f32, ${WGSL_DROPOUT_PARAMS} }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> X: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;
${drop ? WGSL_RANDOM : ''}
var<workgroup> xs: array<f32, ${DOWN_ROWS * (DOWN_KC + 1)}>;
var<workgroup> ws: array<f32, ${r * (DOWN_KC + 1)}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u, @builtin(local_invocation_index) t: u32) {
  let m0 = (wid.x + wid.y * nwg.x) * ${DOWN_ROWS}u;
  var acc: array<f32, ${per}>;
  for (var k0 = 0u; k0 < p.K; k0 += ${DOWN_KC}u) {
    for (var i = t; i < ${DOWN_ROWS * DOWN_KC}u; i += 256u) {
      let row = i / ${DOWN_KC}u;
      let col = i % ${DOWN_KC}u;
      let gm = m0 + row;
      let gk = k0 + col;
      var v = 0.0;
      if (gm < p.M && gk < p.K) {
        v = X[gm * p.K + gk];${drop ? `
        v = select(0.0, v * p.inv_keep, rand_uniform(p.seed, gm * p.K + gk) >= p.p);` : ''}
      }
      xs[row * ${DOWN_KC + 1}u + col] = v;
    }
    for (var i = t; i < ${r * DOWN_KC}u; i += 256u) {
      let j = i % ${r}u;
      let col = i / ${r}u;
      let gk = k0 + col;
      var v = 0.0;
      if (gk < p.K) { v = ${wLoad}; }
      ws[j * ${DOWN_KC + 1}u + col] = v;
    }
    workgroupBarrier();
    for (var i = 0u; i < ${per}u; i++) {
      let o = t + 256u * i;
      if (o < ${DOWN_ROWS * r}u) {
        let xrow = (o / ${r}u) * ${DOWN_KC + 1}u;
        let wrow = (o % ${r}u) * ${DOWN_KC + 1}u;
        var s = 0.0;
        for (var k = 0u; k < ${DOWN_KC}u; k++) { s += xs[xrow + k] * ws[wrow + k]; }
        acc[i] += s;
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < ${per}u; i++) {
    let o = t + 256u * i;
    let gm = m0 + o / ${r}u;
    if (o < ${DOWN_ROWS * r}u && gm < p.M) { OUT[gm * ${r}u + o % ${r}u] = p.alpha * acc[i]; }
  }
}`;
}

function groupGrid(groups: number): [number, number] {
  const max = 65535;
  if (groups <= max) return [Math.max(groups, 1), 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
}

/** out [M, r] = alpha · drop(x [M, K]) · Wᵀ with w [r, K], or alpha · x · w with w [K, r] (wT). */
export function loraDown(x: Tensor, w: Tensor, r: number, alpha: number, wT: boolean, drop: Dropout | null): Tensor {
  const K = x.shape[x.shape.length - 1]!;
  const M = x.numel / K;
  const out = Tensor.empty([M, r]);
  if (M === 0) return out;
  dispatch(
    `lora.down.r${r}.${wT ? 't' : 'n'}.${drop ? 'drop' : 'nodrop'}`,
    () => loraDownKernel(r, wT, !!drop),
    [x, w, out],
    groupGrid(Math.ceil(M / DOWN_ROWS)),
    dropoutUniforms(new Uniforms().u32(M).u32(K).f32(alpha), drop),
  );
  return out;
}

// ---------------------------------------------------------------------------------------------
// loraUp: Y[m, n] (+)= alpha · mask(m, n) · Σ_j U[m, j]·W(j, n), W stored [N, r] (wT) or [r, N].

const UP_T = 64;
const UP_RC = 16;

function loraUpKernel(r: number, wT: boolean, accumulate: boolean, drop: boolean): string {
  const wLoad = wT ? `W[gn * ${r}u + gj]` : 'W[gj * p.N + gn]';
  const value = drop ? 'select(0.0, p.alpha * p.inv_keep * acc[i][j], rand_uniform(p.seed, gm * p.N + gn) >= p.p)' : 'p.alpha * acc[i][j]';
  return /* wgsl */ `
struct P { M: u32, N: u32, alpha: f32, ${WGSL_DROPOUT_PARAMS} }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> U: array<f32>;
@group(0) @binding(2) var<storage, read> W: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
${drop ? WGSL_RANDOM : ''}
var<workgroup> us: array<f32, ${UP_T * UP_RC}>;
var<workgroup> ws: array<f32, ${UP_RC * (UP_T + 1)}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let n0 = wid.x * ${UP_T}u;
  let m0 = wid.y * ${UP_T}u;
  let tx = t & 15u;
  let ty = t >> 4u;
  var acc: array<array<f32, 4>, 4>;
  for (var j0 = 0u; j0 < ${r}u; j0 += ${UP_RC}u) {
    for (var i = t; i < ${UP_T * UP_RC}u; i += 256u) {
      let row = i / ${UP_RC}u;
      let gj = j0 + i % ${UP_RC}u;
      let gm = m0 + row;
      var v = 0.0;
      if (gm < p.M && gj < ${r}u) { v = U[gm * ${r}u + gj]; }
      us[i] = v;
    }
    for (var i = t; i < ${UP_T * UP_RC}u; i += 256u) {
      ${wT ? `let jj = i % ${UP_RC}u; let c = i / ${UP_RC}u;` : `let c = i % ${UP_T}u; let jj = i / ${UP_T}u;`}
      let gj = j0 + jj;
      let gn = n0 + c;
      var v = 0.0;
      if (gn < p.N && gj < ${r}u) { v = ${wLoad}; }
      ws[jj * ${UP_T + 1}u + c] = v;
    }
    workgroupBarrier();
    for (var k = 0u; k < ${UP_RC}u; k++) {
      var a: array<f32, 4>;
      var b: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) { a[i] = us[(ty + 16u * i) * ${UP_RC}u + k]; }
      for (var j = 0u; j < 4u; j++) { b[j] = ws[k * ${UP_T + 1}u + tx + 16u * j]; }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) { acc[i][j] += a[i] * b[j]; }
      }
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < 4u; i++) {
    let gm = m0 + ty + 16u * i;
    for (var j = 0u; j < 4u; j++) {
      let gn = n0 + tx + 16u * j;
      if (gm < p.M && gn < p.N) {
        let idx = gm * p.N + gn;
        Y[idx] = ${accumulate ? 'Y[idx] + ' : ''}${value};
      }
    }
  }
}`;
}

/** y [M, N] (+)= alpha · mask ⊙ (u [M, r] · Wᵀ) with w [N, r] (wT), or u · w with w [r, N]. In place. */
export function loraUp(y: Tensor, u: Tensor, w: Tensor, r: number, alpha: number, wT: boolean, accumulate: boolean, drop: Dropout | null): void {
  const N = y.shape[y.shape.length - 1]!;
  const M = y.numel / N;
  if (M === 0 || N === 0) return;
  const gy = Math.ceil(M / UP_T);
  if (gy > 65535) throw new RangeError(`loraUp: ${M} rows exceed one dispatch`);
  dispatch(
    `lora.up.r${r}.${wT ? 't' : 'n'}.${accumulate ? 'acc' : 'set'}.${drop ? 'drop' : 'nodrop'}`,
    () => loraUpKernel(r, wT, accumulate, !!drop),
    [u, w, y],
    [Math.ceil(N / UP_T), gy],
    dropoutUniforms(new Uniforms().u32(M).u32(N).f32(alpha), drop),
  );
}

// ---------------------------------------------------------------------------------------------
// loraWeightGrad: out[c, j] = alpha · Σ_m mask(m, c)·G[m, c]·U[m, j]  → [C, r], or stored [r, C] (outT).
// The reduction over M is split over `splits` workgroup rows writing partial sums, then summed in a
// fixed order by a second kernel (deterministic), so a few hundred workgroups run even when C is small.

const WG_C = 64;
const WG_MC = 16;

function loraWeightGradKernel(r: number, drop: boolean, direct: boolean, outT: boolean): string {
  const per = Math.ceil((WG_C * r) / 256);
  const store = direct
    ? `OUT[${outT ? 'j * p.C + gc' : `gc * ${r}u + j`}] = p.alpha * acc[i];`
    : `OUT[wid.y * p.C * ${r}u + gc * ${r}u + j] = acc[i];`;
  return /* wgsl */ `
struct P { M: u32, C: u32, rows_per_split: u32, alpha: f32, ${WGSL_DROPOUT_PARAMS} }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read> U: array<f32>;
@group(0) @binding(3) var<storage, read_write> OUT: array<f32>;
${drop ? WGSL_RANDOM : ''}
var<workgroup> gs: array<f32, ${WG_MC * WG_C}>;
var<workgroup> us: array<f32, ${WG_MC * r}>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let c0 = wid.x * ${WG_C}u;
  let mBegin = wid.y * p.rows_per_split;
  let mEnd = min(p.M, mBegin + p.rows_per_split);
  var acc: array<f32, ${per}>;
  for (var m0 = mBegin; m0 < mEnd; m0 += ${WG_MC}u) {
    for (var i = t; i < ${WG_MC * WG_C}u; i += 256u) {
      let gm = m0 + i / ${WG_C}u;
      let gc = c0 + i % ${WG_C}u;
      var v = 0.0;
      if (gm < mEnd && gc < p.C) {
        v = G[gm * p.C + gc];${drop ? `
        v = select(0.0, v * p.inv_keep, rand_uniform(p.seed, gm * p.C + gc) >= p.p);` : ''}
      }
      gs[i] = v;
    }
    for (var i = t; i < ${WG_MC * r}u; i += 256u) {
      let gm = m0 + i / ${r}u;
      var v = 0.0;
      if (gm < mEnd) { v = U[gm * ${r}u + i % ${r}u]; }
      us[i] = v;
    }
    workgroupBarrier();
    for (var i = 0u; i < ${per}u; i++) {
      let o = t + 256u * i;
      let c = o % ${WG_C}u;
      let j = min(o / ${WG_C}u, ${r - 1}u);
      var s = 0.0;
      for (var mm = 0u; mm < ${WG_MC}u; mm++) { s += gs[mm * ${WG_C}u + c] * us[mm * ${r}u + j]; }
      acc[i] += s;
    }
    workgroupBarrier();
  }
  for (var i = 0u; i < ${per}u; i++) {
    let o = t + 256u * i;
    let gc = c0 + o % ${WG_C}u;
    let j = o / ${WG_C}u;
    if (j < ${r}u && gc < p.C) { ${store} }
  }
}`;
}

function splitReduceKernel(r: number, outT: boolean): string {
  return /* wgsl */ `
struct P { C: u32, splits: u32, alpha: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read_write> OUT: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let idx = gid.x + gid.y * nwg.x * 256u;
  let n = p.C * ${r}u;
  if (idx >= n) { return; }
  var s = 0.0;
  for (var k = 0u; k < p.splits; k++) { s += PART[k * n + idx]; }
  let c = idx / ${r}u;
  let j = idx % ${r}u;
  OUT[${outT ? 'j * p.C + c' : 'idx'}] = p.alpha * s;
}`;
}

/** alpha · mask ⊙ G [M, C] reduced against U [M, r] over M → [C, r] (or [r, C] with outT). */
export function loraWeightGrad(g: Tensor, u: Tensor, r: number, alpha: number, outT: boolean, drop: Dropout | null): Tensor {
  const C = g.shape[g.shape.length - 1]!;
  const M = g.numel / C;
  const out = Tensor.empty(outT ? [r, C] : [C, r]);
  const tilesC = Math.ceil(C / WG_C);
  // Enough splits for ~256 workgroups, each with at least 256 rows of work.
  const splits = Math.max(1, Math.min(Math.ceil(256 / tilesC), Math.floor(M / 256), 65535));
  const rowsPerSplit = Math.ceil(M / splits / WG_MC) * WG_MC;
  const nSplits = Math.max(1, Math.ceil(M / rowsPerSplit));
  const direct = nSplits === 1;
  const uni = () => dropoutUniforms(new Uniforms().u32(M).u32(C).u32(Math.max(rowsPerSplit, WG_MC)).f32(alpha), drop);
  const key = `lora.wgrad.r${r}.${drop ? 'drop' : 'nodrop'}`;
  if (direct) {
    dispatch(`${key}.direct.${outT ? 't' : 'n'}`, () => loraWeightGradKernel(r, !!drop, true, outT), [g, u, out], [tilesC, 1], uni());
    return out;
  }
  const part = Tensor.empty([nSplits, C * r]);
  dispatch(`${key}.split`, () => loraWeightGradKernel(r, !!drop, false, outT), [g, u, part], [tilesC, nSplits], uni());
  const n = C * r;
  const groups = Math.ceil(n / 256);
  dispatch(`lora.wgrad.reduce.r${r}.${outT ? 't' : 'n'}`, () => splitReduceKernel(r, outT), [part, out], groupGrid(groups), new Uniforms().u32(C).u32(nSplits).f32(alpha).u32(0));
  part.dispose();
  return out;
}

// ---------------------------------------------------------------------------------------------

function baseForward(x2: Tensor, base: Tensor | Nf4Weight): Tensor {
  return base instanceof Tensor ? matmulForward(x2, base, { transB: true }) : nf4LinearForward(x2, base);
}

function baseInputGrad(g2: Tensor, base: Tensor | Nf4Weight): Tensor {
  return base instanceof Tensor ? matmulForward(g2, base) : nf4LinearBackward(g2, base);
}

function wants(t: Tensor): boolean {
  return t.requiresGrad || t.gradFn !== null;
}

/**
 * y = x·Wᵀ + scale·(drop(x)·Aᵀ)·Bᵀ. x [..., in] f32; base [out, in] (f32 or packed bf16/f16 Tensor,
 * or Nf4Weight), frozen; A [r, in], B [out, r] f32. Autograd gives dX, dA, dB.
 */
export function loraLinear(x: Tensor, base: Tensor | Nf4Weight, A: Tensor, B: Tensor, scale: number, opts: LoraOptions = {}): Tensor {
  const [out, inF] = base.shape as [number, number];
  if (A.shape.length !== 2 || B.shape.length !== 2) throw new RangeError(`loraLinear: A and B must be 2-D, got A [${A.shape}] B [${B.shape}]`);
  const r = A.shape[0]!;
  if (A.shape[1] !== inF || B.shape[0] !== out || B.shape[1] !== r) {
    throw new RangeError(`loraLinear: base [${out}, ${inF}] needs A [r, ${inF}] and B [${out}, r]; got A [${A.shape}] B [${B.shape}]`);
  }
  if (r < 1 || r > LORA_MAX_RANK) throw new RangeError(`loraLinear: rank ${r} outside 1..${LORA_MAX_RANK}`);
  if (x.shape[x.shape.length - 1] !== inF) throw new RangeError(`loraLinear: x [${x.shape}] does not end in ${inF}`);
  assertDtype(x, 'f32', 'loraLinear x');
  assertDtype(A, 'f32', 'loraLinear A');
  assertDtype(B, 'f32', 'loraLinear B');
  if (base instanceof Tensor && base.requiresGrad) throw new Error('loraLinear: the base weight is frozen; it must not have requiresGrad');
  const p = opts.dropout ?? 0;
  if (!(p >= 0 && p < 1)) throw new RangeError(`loraLinear: dropout ${p} outside [0, 1)`);
  if (p > 0 && opts.seed === undefined) throw new Error('loraLinear: dropout > 0 needs a seed (distinct per layer and step) so backward can regenerate the mask');
  const drop: Dropout | null = p > 0 ? { p, seed: opts.seed! >>> 0 } : null;

  const lead = x.shape.slice(0, -1);
  const M = numelOf(lead);
  const x2 = x.reshape([M, inF]);
  const y2 = baseForward(x2, base);
  const u = loraDown(x2, A, r, 1, false, drop);
  loraUp(y2, u, B, r, scale, true, true, null);
  const y = y2.reshape([...lead, out]);
  y2.dispose();
  recordOp('loraLinear', [x, A, B], y, (node: GradNode) => {
    const xs = node.save(x2);
    const us = node.save(u);
    const As = node.save(A);
    const Bs = node.save(B);
    const [wantX, wantA, wantB] = [wants(x), wants(A), wants(B)];
    return ([g]) => {
      const g2 = g!.reshape([M, out]);
      const gu = loraDown(g2, Bs, r, scale, true, null);
      const dA = wantA ? loraWeightGrad(xs, gu, r, 1, true, drop) : null;
      const dB = wantB ? loraWeightGrad(g2, us, r, scale, false, null) : null;
      let dx: Tensor | null = null;
      if (wantX) {
        const d2 = baseInputGrad(g2, base);
        loraUp(d2, gu, As, r, 1, false, true, drop);
        dx = d2.reshape(x.shape);
        d2.dispose();
      }
      g2.dispose();
      gu.dispose();
      return [dx, dA, dB];
    };
  });
  x2.dispose();
  u.dispose();
  return y;
}
