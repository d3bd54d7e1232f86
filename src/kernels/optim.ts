// Optimizer kernels: AdamW exactly as torch.optim.AdamW, and global-norm gradient clipping as
// torch.nn.utils.clip_grad_norm_, both without any CPU round trip.
//
// AdamW, per element (torch's single-tensor path, same operation order):
//   p ← p·(1 − lr·wd)                      decoupled weight decay
//   m ← m + (1 − β1)·(g − m)               exp_avg.lerp_(g, 1 − β1)
//   v ← β2·v + (1 − β2)·g²                 exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)
//   p ← p − (lr / (1 − β1^t))·m / (√v / √(1 − β2^t) + eps)
// The scalars (1 − lr·wd, lr / bc1, √bc2) are computed in f64 on the CPU each step, like PyTorch's
// Python floats, and passed as uniforms: one cached pipeline, one dispatch per parameter tensor, no
// recompilation when lr or t change. Parameters without a gradient are skipped (their moments stay);
// the step counter t is shared by all parameters (torch counts per parameter; the two agree as long
// as every parameter gets a gradient every step, as LoRA parameters do).
//
// clipGradNorm: per tensor, partial sums of squares (up to 64 workgroups each) into one partials
// buffer; one workgroup sums them in a fixed order and writes norm and coef = min(1, max/(norm+1e-6));
// then every gradient is scaled by coef read from GPU memory. The norm comes back as a Tensor.
import { Tensor } from '../engine/tensor.js';
import { Uniforms, WGSL_FLAT_INDEX, assertDtype, dispatch, grid1d } from './common.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** Moments of one parameter, as saved in checkpoints (torch names: exp_avg, exp_avg_sq). */
export interface AdamWMoments {
  expAvg: Float32Array;
  expAvgSq: Float32Array;
}

export interface AdamWState {
  /** Steps taken so far (t of the last step). */
  step: number;
  /** One entry per parameter, in constructor order. */
  moments: AdamWMoments[];
}

const ADAMW_KERNEL = /* wgsl */ `
struct P { n: u32, decay: f32, beta1: f32, beta2: f32, one_minus_beta1: f32, one_minus_beta2: f32, step_size: f32, bc2_sqrt: f32, eps: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> PARAM: array<f32>;
@group(0) @binding(2) var<storage, read> GRAD: array<f32>;
@group(0) @binding(3) var<storage, read_write> EXP_AVG: array<f32>;
@group(0) @binding(4) var<storage, read_write> EXP_AVG_SQ: array<f32>;
${WGSL_FLAT_INDEX}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i >= p.n) { return; }
  let g = GRAD[i];
  let x = PARAM[i] * p.decay;
  let m0 = EXP_AVG[i];
  let m = m0 + p.one_minus_beta1 * (g - m0);
  let v = EXP_AVG_SQ[i] * p.beta2 + p.one_minus_beta2 * g * g;
  EXP_AVG[i] = m;
  EXP_AVG_SQ[i] = v;
  let denom = sqrt(v) / p.bc2_sqrt + p.eps;
  PARAM[i] = x - p.step_size * (m / denom);
}`;

/** torch.optim.AdamW on GPU tensors (f32 parameters with f32 gradients in `.grad`). */
export class AdamW {
  readonly params: readonly Tensor[];
  lr: number;
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  private stepCount = 0;
  private expAvg: Tensor[];
  private expAvgSq: Tensor[];

  constructor(params: readonly Tensor[], opts: AdamWOptions = {}) {
    this.params = [...params];
    this.lr = opts.lr ?? 1e-3;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    const [b1, b2] = this.betas;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1)) throw new RangeError(`AdamW: betas (${b1}, ${b2}) must be in [0, 1)`);
    if (!(this.eps >= 0) || !(this.weightDecay >= 0)) throw new RangeError(`AdamW: eps ${this.eps} and weightDecay ${this.weightDecay} must be ≥ 0`);
    for (const p of this.params) assertDtype(p, 'f32', 'AdamW parameter');
    this.expAvg = this.params.map((p) => zerosKept(p.numel));
    this.expAvgSq = this.params.map((p) => zerosKept(p.numel));
  }

  /** Steps taken so far. */
  get steps(): number {
    return this.stepCount;
  }

  /** One AdamW step over every parameter that has a gradient; `lr` overrides (and updates) this.lr. */
  step(lr?: number): void {
    if (lr !== undefined) this.lr = lr;
    this.stepCount++;
    const t = this.stepCount;
    const [b1, b2] = this.betas;
    const bc1 = 1 - b1 ** t;
    const bc2 = 1 - b2 ** t;
    const uniforms = (n: number) =>
      new Uniforms()
        .u32(n)
        .f32(1 - this.lr * this.weightDecay)
        .f32(b1)
        .f32(b2)
        .f32(1 - b1)
        .f32(1 - b2)
        .f32(this.lr / bc1)
        .f32(Math.sqrt(bc2))
        .f32(this.eps);
    this.params.forEach((p, i) => {
      const g = p.grad;
      if (!g) return;
      if (g.numel !== p.numel) throw new RangeError(`AdamW: gradient [${g.shape}] does not match parameter [${p.shape}]`);
      assertDtype(g, 'f32', 'AdamW gradient');
      dispatch('adamw', () => ADAMW_KERNEL, [p, g, this.expAvg[i]!, this.expAvgSq[i]!], grid1d(p.numel), uniforms(p.numel));
    });
  }

  /** Copies the state to the CPU (for checkpoints). */
  async exportState(): Promise<AdamWState> {
    const moments: AdamWMoments[] = [];
    for (let i = 0; i < this.params.length; i++) {
      moments.push({ expAvg: await this.expAvg[i]!.toFloat32(), expAvgSq: await this.expAvgSq[i]!.toFloat32() });
    }
    return { step: this.stepCount, moments };
  }

  /** Restores a state saved by exportState (same parameters, same order). */
  importState(state: AdamWState): void {
    if (state.moments.length !== this.params.length) throw new RangeError(`AdamW.importState: ${state.moments.length} moments for ${this.params.length} parameters`);
    if (!Number.isInteger(state.step) || state.step < 0) throw new RangeError(`AdamW.importState: invalid step ${state.step}`);
    state.moments.forEach((mo, i) => {
      const n = this.params[i]!.numel;
      if (mo.expAvg.length !== n || mo.expAvgSq.length !== n) {
        throw new RangeError(`AdamW.importState: parameter ${i} has ${n} elements, state has ${mo.expAvg.length} / ${mo.expAvgSq.length}`);
      }
    });
    state.moments.forEach((mo, i) => {
      this.expAvg[i]!.dispose();
      this.expAvgSq[i]!.dispose();
      this.expAvg[i] = Tensor.from(mo.expAvg, [mo.expAvg.length]).keep();
      this.expAvgSq[i] = Tensor.from(mo.expAvgSq, [mo.expAvgSq.length]).keep();
    });
    this.stepCount = state.step;
  }

  dispose(): void {
    for (const t of [...this.expAvg, ...this.expAvgSq]) t.dispose();
  }
}

const FILL_ZERO = /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
${WGSL_FLAT_INDEX}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i < p.n) { Y[i] = 0.0; }
}`;

function zerosKept(n: number): Tensor {
  const t = Tensor.empty([n]).keep();
  dispatch('optim.zero', () => FILL_ZERO, [t], grid1d(n), new Uniforms().u32(n).u32(0).u32(0).u32(0));
  return t;
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

const NORM_WG = 256;
const NORM_MAX_GROUPS = 64;
const NORM_PER_THREAD = 16;

const SUMSQ_KERNEL = /* wgsl */ `
struct P { n: u32, offset: u32, groups: u32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> G: array<f32>;
@group(0) @binding(2) var<storage, read_write> PART: array<f32>;
var<workgroup> s: array<f32, ${NORM_WG}>;
@compute @workgroup_size(${NORM_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  var acc = 0.0;
  for (var i = wid.x * ${NORM_WG}u + t; i < p.n; i += p.groups * ${NORM_WG}u) { let g = G[i]; acc += g * g; }
  s[t] = acc;
  workgroupBarrier();
  for (var k = ${NORM_WG / 2}u; k > 0u; k = k >> 1u) {
    if (t < k) { s[t] += s[t + k]; }
    workgroupBarrier();
  }
  if (t == 0u) { PART[p.offset + wid.x] = s[0]; }
}`;

const NORM_FINAL_KERNEL = /* wgsl */ `
struct P { n: u32, max_norm: f32, _a: u32, _b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> PART: array<f32>;
@group(0) @binding(2) var<storage, read_write> NORM: array<f32>;
@group(0) @binding(3) var<storage, read_write> COEF: array<f32>;
var<workgroup> s: array<f32, ${NORM_WG}>;
@compute @workgroup_size(${NORM_WG})
fn main(@builtin(local_invocation_index) t: u32) {
  var acc = 0.0;
  for (var i = t; i < p.n; i += ${NORM_WG}u) { acc += PART[i]; }
  s[t] = acc;
  workgroupBarrier();
  for (var k = ${NORM_WG / 2}u; k > 0u; k = k >> 1u) {
    if (t < k) { s[t] += s[t + k]; }
    workgroupBarrier();
  }
  if (t == 0u) {
    let norm = sqrt(s[0]);
    NORM[0] = norm;
    COEF[0] = min(p.max_norm / (norm + 1e-6), 1.0);
  }
}`;

const SCALE_BY_KERNEL = /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> G: array<f32>;
@group(0) @binding(2) var<storage, read> COEF: array<f32>;
${WGSL_FLAT_INDEX}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i < p.n) { G[i] = G[i] * COEF[0]; }
}`;

/**
 * The global L2 norm of every gradient of `params` (those with a `.grad`), and, like
 * torch.nn.utils.clip_grad_norm_, every gradient multiplied in place by min(1, maxNorm/(norm+1e-6)).
 * Nothing is read back: the norm is returned as a one-element tensor.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): Tensor {
  const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
  const norm = Tensor.empty([1]);
  const slots = grads.map((g) => Math.max(1, Math.min(NORM_MAX_GROUPS, Math.ceil(g.numel / (NORM_WG * NORM_PER_THREAD)))));
  const total = slots.reduce((a, b) => a + b, 0);
  const part = Tensor.empty([Math.max(total, 1)]);
  const coef = Tensor.empty([1]);
  let offset = 0;
  grads.forEach((g, i) => {
    assertDtype(g, 'f32', 'clipGradNorm gradient');
    dispatch('clip.sumsq', () => SUMSQ_KERNEL, [g, part], [slots[i]!], new Uniforms().u32(g.numel).u32(offset).u32(slots[i]!).u32(0));
    offset += slots[i]!;
  });
  dispatch('clip.final', () => NORM_FINAL_KERNEL, [part, norm, coef], [1], new Uniforms().u32(total).f32(maxNorm).u32(0).u32(0));
  for (const g of grads) dispatch('clip.scale', () => SCALE_BY_KERNEL, [g, coef], grid1d(g.numel), new Uniforms().u32(g.numel).u32(0).u32(0).u32(0));
  part.dispose();
  coef.dispose();
  return norm;
}
