// Optimizer kernels: AdamW exactly as torch.optim.AdamW, and global-norm gradient clipping as
// torch.nn.utils.clip_grad_norm_, both without any CPU round trip and multi-tensor: one dispatch
// handles up to K tensors (K set by the device's storage-buffer binding limit), so a step costs
// ceil(T / K) dispatches for T tensors instead of T.
//
// AdamW, per element (torch's single-tensor path, same operation order):
//   p ← p·(1 − lr·wd)                      decoupled weight decay
//   m ← m + (1 − β1)·(g − m)               exp_avg.lerp_(g, 1 − β1)
//   v ← β2·v + (1 − β2)·g²                 exp_avg_sq.mul_(β2).addcmul_(g, g, 1 − β2)
//   p ← p − (lr / (1 − β1^t))·m / (√v / √(1 − β2^t) + eps)
// The scalars (1 − lr·wd, lr / bc1, √bc2) are computed in f64 on the CPU each step, like PyTorch's
// Python floats, and passed as uniforms: no recompilation when lr or t change. Parameters without a
// gradient are skipped (their moments stay); the step counter t is shared by all parameters (torch
// counts per parameter; the two agree as long as every parameter gets a gradient every step, as LoRA
// parameters do). With `step(lr, {gradScale})` the gradient is multiplied by gradScale[0] (e.g. the
// clip coefficient from gradNormCoef) inside the update: the same f32 product clipGradNorm's in-place
// scaling gives, without its extra pass and without modifying `.grad`.
//
// Multi-tensor layout: parameters and gradients are separate model tensors (they cannot move), so
// each dispatch binds a group of up to K (param, grad) pairs and reads a small uniform table of
// (state offset, length, first workgroup, workgroups) per tensor; a workgroup finds its tensor in the
// table and grid-strides over it. The moments live in a few flat buffers owned by the optimizer
// ([m of every tensor | v of every tensor], one binding), each within the storage binding size limit;
// a tensor whose moments alone exceed it is updated in pieces (table entries over ranges of it).
// WGSL is generated per group size (and clip-scale variant) and cached by key.
//
// clipGradNorm: per tensor, partial sums of squares (up to 64 workgroups each) into one partials
// buffer, several tensors per dispatch; one workgroup sums them in a fixed order and writes norm and
// coef = min(1, max/(norm+1e-6)); then every gradient is scaled by coef read from GPU memory (again
// several tensors per dispatch). The norm comes back as a Tensor.
import { type BufferBinding, storageBindingLimit } from '../engine/device.js';
import { engine, Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms, WGSL_FLAT_INDEX } from './common.js';
import { kernelFamily } from './variants.js';

export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  /** Parameters that get no weight decay (e.g. norm weights under full training, as the HF Trainer does). */
  noWeightDecay?: readonly Tensor[];
  /**
   * Most moment elements per flat state buffer (each holds m and v of whole tensors, or of a piece of
   * one whose moments exceed a binding). Default and upper bound: what one storage binding can hold;
   * smaller values exist for tests.
   */
  stateChunkElements?: number;
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

/** Most tensors one multi-tensor dispatch handles (bounds the uniform table and the WGSL variants). */
const MAX_GROUP = 16;
/** Most workgroups per tensor in a dispatch (grid-stride beyond): MAX_GROUP·this ≤ 65535. */
const WG_CAP = 2048;
const OPT_WG = 256;

function storageBindings(): number {
  return engine().dev.limits.maxStorageBuffersPerShaderStage;
}

/** Tensors per AdamW dispatch: state + optional scale + (param, grad) per tensor within the binding limit. */
export function adamwTensorsPerDispatch(scaled = true): number {
  return Math.max(1, Math.min(MAX_GROUP, Math.floor((storageBindings() - 1 - (scaled ? 1 : 0)) / 2)));
}

/** Tensors per clipping dispatch (sum-of-squares and scaling passes): one extra binding each. */
export function clipTensorsPerDispatch(): number {
  return Math.max(1, Math.min(MAX_GROUP, storageBindings() - 1));
}

/** Splits `n` tensors into consecutive runs of at most `k`. */
function runs<T>(items: T[], k: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += k) out.push(items.slice(i, i + k));
  return out;
}

/** WGSL `switch` over the group's tensors, `body(j)` for tensor j (bindings are not indexable). */
function switchOver(k: number, body: (j: number) => string): string {
  const cases = Array.from({ length: k }, (_, j) => `    case ${j}u: {\n${body(j)}\n    }`).join('\n');
  return `  switch (k) {\n${cases}\n    default: {}\n  }`;
}

/** WGSL: the group entry owning workgroup w (entries sorted by first workgroup in .z). */
function findEntry(k: number): string {
  return `  var k = 0u;\n  for (var j = 1u; j < ${k}u; j++) { if (w >= p.t[j].z) { k = j; } }\n  let e = p.t[k];`;
}

/**
 * Every group size a multi-tensor dispatch can have: 1..MAX_GROUP (adamwTensorsPerDispatch and
 * clipTensorsPerDispatch never exceed it; a device with fewer storage bindings uses a prefix).
 */
function groupSizes(): number[] {
  return Array.from({ length: MAX_GROUP }, (_, i) => i + 1);
}

interface AdamWSpec {
  /** Tensors (param, grad pairs) in the group. */
  params: number;
  /** The gradients are multiplied by SCALE[0] (AdamWStepOptions.gradScale). */
  scaled: boolean;
}

function adamwKernel({ params: k, scaled }: AdamWSpec): string {
  const bind = (j: number) =>
    `@group(0) @binding(${2 + (scaled ? 1 : 0) + 2 * j}) var<storage, read_write> P${j}: array<f32>;\n` +
    `@group(0) @binding(${3 + (scaled ? 1 : 0) + 2 * j}) var<storage, read> G${j}: array<f32>;`;
  return /* wgsl */ `
struct P { decay: f32, beta1: f32, beta2: f32, one_minus_beta1: f32, one_minus_beta2: f32, step_size: f32, bc2_sqrt: f32, eps: f32, v_base: u32, _a: u32, _b: u32, _c: u32, t: array<vec4u, ${k}> }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> S: array<f32>;
${scaled ? '@group(0) @binding(2) var<storage, read> SCALE: array<f32>;' : ''}
${Array.from({ length: k }, (_, j) => bind(j)).join('\n')}
@compute @workgroup_size(${OPT_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lt: u32) {
  let w = wid.x;
${findEntry(k)}
  let o = e.x;
  let n = e.y;
  let stride = e.w * ${OPT_WG}u;
  let first = (w - e.z) * ${OPT_WG}u + lt;
${switchOver(
  k,
  (j) => `      for (var i = first; i < n; i += stride) {
        let g = G${j}[i]${scaled ? ' * SCALE[0]' : ''};
        let x = P${j}[i] * p.decay;
        let m0 = S[o + i];
        let m = m0 + p.one_minus_beta1 * (g - m0);
        let v = S[p.v_base + o + i] * p.beta2 + p.one_minus_beta2 * g * g;
        S[o + i] = m;
        S[p.v_base + o + i] = v;
        let denom = sqrt(v) / p.bc2_sqrt + p.eps;
        P${j}[i] = x - p.step_size * (m / denom);
      }`,
)}
}`;
}

const ADAMW = kernelFamily<AdamWSpec>({
  family: 'adamw.multi',
  specs: () => groupSizes().flatMap((params) => [false, true].map((scaled) => ({ params, scaled }))),
  code: adamwKernel,
});

/**
 * Elements [start, start + n) of parameter `param`, updated by one entry of a dispatch (its
 * parameter and gradient bound by that range), their moments at `offset` in a state chunk's m half
 * (and its v half). A whole parameter unless its moments exceed one storage binding.
 */
interface StatePiece {
  param: number;
  start: number;
  n: number;
  offset: number;
}

/** One flat moment buffer: [m of its pieces | v of its pieces]. */
interface StateChunk {
  /** In constructor order of their parameters, then of their starts. */
  pieces: StatePiece[];
  /** Elements in each half. */
  n: number;
  buf: Tensor;
}

export interface AdamWStepOptions {
  /** Multiply every gradient by gradScale[0] inside the update (e.g. gradNormCoef's coef); `.grad` stays unchanged. */
  gradScale?: Tensor;
}

/** torch.optim.AdamW on GPU tensors (f32 parameters with f32 gradients in `.grad`). */
export class AdamW {
  readonly params: readonly Tensor[];
  lr: number;
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  /** Per parameter (constructor order): whether weight decay applies. */
  private readonly decays: boolean[];
  private stepCount = 0;
  private chunks: StateChunk[] = [];

  constructor(params: readonly Tensor[], opts: AdamWOptions = {}) {
    this.params = [...params];
    this.lr = opts.lr ?? 1e-3;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    this.weightDecay = opts.weightDecay ?? 0.01;
    const [b1, b2] = this.betas;
    if (!(b1 >= 0 && b1 < 1 && b2 >= 0 && b2 < 1))
      throw new RangeError(`AdamW: betas (${b1}, ${b2}) must be in [0, 1)`);
    if (!(this.eps >= 0) || !(this.weightDecay >= 0))
      throw new RangeError(`AdamW: eps ${this.eps} and weightDecay ${this.weightDecay} must be ≥ 0`);
    for (const p of this.params) assertDtype(p, 'f32', 'AdamW parameter');
    const exempt = new Set(opts.noWeightDecay ?? []);
    for (const t of exempt)
      if (!this.params.includes(t))
        throw new RangeError(`AdamW: a noWeightDecay tensor [${t.shape}] is not among the parameters`);
    this.decays = this.params.map((p) => !exempt.has(p));
    // Pack the moments into chunks of at most one storage binding (m and v halves). A parameter
    // whose moments alone exceed it (a large vocabulary's f32 embedding under full training) is
    // updated in pieces of `piece` elements, each bound by range: ranges start at multiples of the
    // device's offset alignment. The update is elementwise: the pieces change no value.
    const limits = engine().dev.limits;
    const bindingHalf = Math.floor(storageBindingLimit(limits) / 8);
    const maxHalf = Math.min(bindingHalf, opts.stateChunkElements ?? bindingHalf);
    const align = Math.max(1, limits.minStorageBufferOffsetAlignment / 4);
    const piece = Math.max(align, bindingHalf - (bindingHalf % align));
    let cur: Omit<StateChunk, 'buf'> = { pieces: [], n: 0 };
    const pending: Omit<StateChunk, 'buf'>[] = [];
    const add = (param: number, start: number, n: number) => {
      if (cur.pieces.length > 0 && cur.n + n > maxHalf) {
        pending.push(cur);
        cur = { pieces: [], n: 0 };
      }
      cur.pieces.push({ param, start, n, offset: cur.n });
      cur.n += n;
    };
    this.params.forEach((p, i) => {
      if (p.numel <= bindingHalf) add(i, 0, p.numel);
      else for (let start = 0; start < p.numel; start += piece) add(i, start, Math.min(piece, p.numel - start));
    });
    if (cur.pieces.length > 0) pending.push(cur);
    this.chunks = pending.map((c) => ({ ...c, buf: zerosKept(2 * Math.max(c.n, 1)) }));
  }

  /** Steps taken so far. */
  get steps(): number {
    return this.stepCount;
  }

  /**
   * One AdamW step over every parameter that has a gradient; `lr` overrides (and updates) this.lr.
   * Costs ceil(T / adamwTensorsPerDispatch()) dispatches per state chunk for T tensors with gradients.
   */
  step(lr?: number, opts: AdamWStepOptions = {}): void {
    const scale = opts.gradScale;
    if (scale) assertDtype(scale, 'f32', 'AdamW gradScale');
    for (const p of this.params) {
      const g = p.grad;
      if (!g) continue;
      if (g.numel !== p.numel)
        throw new RangeError(`AdamW: gradient [${g.shape}] does not match parameter [${p.shape}]`);
      assertDtype(g, 'f32', 'AdamW gradient');
    }
    if (lr !== undefined) this.lr = lr;
    this.stepCount++;
    const t = this.stepCount;
    const [b1, b2] = this.betas;
    const bc1 = 1 - b1 ** t;
    const bc2 = 1 - b2 ** t;
    const k = adamwTensorsPerDispatch(scale !== undefined);
    for (const chunk of this.chunks) {
      const live = chunk.pieces.filter((e) => this.params[e.param]!.grad && e.n > 0);
      // One dispatch applies one decay factor: decayed and exempt parameters go in separate groups.
      const groups = [
        ...runs(
          live.filter((e) => this.decays[e.param]),
          k,
        ),
        ...runs(
          live.filter((e) => !this.decays[e.param]),
          k,
        ),
      ];
      for (const group of groups) {
        const decay = this.decays[group[0]!.param] ? this.weightDecay : 0;
        const u = new Uniforms(12 + 4 * group.length)
          .f32(1 - this.lr * decay)
          .f32(b1)
          .f32(b2)
          .f32(1 - b1)
          .f32(1 - b2)
          .f32(this.lr / bc1)
          .f32(Math.sqrt(bc2))
          .f32(this.eps)
          .u32(chunk.n)
          .u32(0)
          .u32(0)
          .u32(0);
        let wgs = 0;
        const bufs: (Tensor | BufferBinding)[] = [chunk.buf];
        if (scale) bufs.push(scale);
        for (const e of group) {
          const p = this.params[e.param]!;
          const count = Math.min(WG_CAP, Math.ceil(e.n / OPT_WG));
          u.u32(e.offset).u32(e.n).u32(wgs).u32(count);
          wgs += count;
          const range = (t: Tensor) => ({ buffer: t.buffer, offset: 4 * e.start, size: 4 * e.n });
          bufs.push(range(p), range(p.grad!));
        }
        ADAMW.dispatch({ params: group.length, scaled: scale !== undefined }, bufs, [wgs], u);
      }
    }
  }

  /** Copies the state to the CPU (for checkpoints): one read per state chunk. */
  async exportState(): Promise<AdamWState> {
    const moments: AdamWMoments[] = this.params.map((p) => ({
      expAvg: new Float32Array(p.numel),
      expAvgSq: new Float32Array(p.numel),
    }));
    for (const chunk of this.chunks) {
      const all = await chunk.buf.toFloat32();
      for (const e of chunk.pieces) {
        const mo = moments[e.param]!;
        mo.expAvg.set(all.subarray(e.offset, e.offset + e.n), e.start);
        mo.expAvgSq.set(all.subarray(chunk.n + e.offset, chunk.n + e.offset + e.n), e.start);
      }
    }
    return { step: this.stepCount, moments };
  }

  /** Restores a state saved by exportState (same parameters, same order). */
  importState(state: AdamWState): void {
    if (state.moments.length !== this.params.length)
      throw new RangeError(`AdamW.importState: ${state.moments.length} moments for ${this.params.length} parameters`);
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new RangeError(`AdamW.importState: invalid step ${state.step}`);
    state.moments.forEach((mo, i) => {
      const n = this.params[i]!.numel;
      if (mo.expAvg.length !== n || mo.expAvgSq.length !== n) {
        throw new RangeError(
          `AdamW.importState: parameter ${i} has ${n} elements, state has ${mo.expAvg.length} / ${mo.expAvgSq.length}`,
        );
      }
    });
    for (const chunk of this.chunks) {
      const all = new Float32Array(2 * Math.max(chunk.n, 1));
      for (const e of chunk.pieces) {
        const mo = state.moments[e.param]!;
        all.set(mo.expAvg.subarray(e.start, e.start + e.n), e.offset);
        all.set(mo.expAvgSq.subarray(e.start, e.start + e.n), chunk.n + e.offset);
      }
      chunk.buf.dispose();
      chunk.buf = Tensor.from(all, [all.length]).keep();
    }
    this.stepCount = state.step;
  }

  dispose(): void {
    for (const c of this.chunks) c.buf.dispose();
  }
}

const FILL_ZERO = kernelFamily({
  family: 'optim.zero',
  specs: () => [{}],
  code: () => /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
${WGSL_FLAT_INDEX}
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, 256u);
  if (i < p.n) { Y[i] = 0.0; }
}`,
});

function zerosKept(n: number): Tensor {
  const t = Tensor.empty([n]).keep();
  FILL_ZERO.dispatch({}, [t], grid1d(n), new Uniforms().u32(n).u32(0).u32(0).u32(0));
  return t;
}

// ---------------------------------------------------------------------------------------------
// Gradient clipping

const NORM_WG = 256;
const NORM_MAX_GROUPS = 64;
const NORM_PER_THREAD = 16;

/** A clipping pass over `params` tensors. */
interface ClipSpec {
  params: number;
}

function sumsqKernel({ params: k }: ClipSpec): string {
  return /* wgsl */ `
struct P { t: array<vec4u, ${k}> }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> PART: array<f32>;
${Array.from({ length: k }, (_, j) => `@group(0) @binding(${2 + j}) var<storage, read> G${j}: array<f32>;`).join('\n')}
var<workgroup> s: array<f32, ${NORM_WG}>;
@compute @workgroup_size(${NORM_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) t: u32) {
  let w = wid.x;
${findEntry(k)}
  let n = e.x;
  let local = w - e.z;
  let stride = e.w * ${NORM_WG}u;
  var acc = 0.0;
${switchOver(k, (j) => `      for (var i = local * ${NORM_WG}u + t; i < n; i += stride) { let g = G${j}[i]; acc += g * g; }`)}
  s[t] = acc;
  workgroupBarrier();
  for (var r = ${NORM_WG / 2}u; r > 0u; r = r >> 1u) {
    if (t < r) { s[t] += s[t + r]; }
    workgroupBarrier();
  }
  if (t == 0u) { PART[e.y + local] = s[0]; }
}`;
}

const SUMSQ = kernelFamily<ClipSpec>({
  family: 'clip.sumsq',
  specs: () => groupSizes().map((params) => ({ params })),
  code: sumsqKernel,
  workgroupBytes: () => NORM_WG * 4,
});

const NORM_FINAL = kernelFamily({
  family: 'clip.final',
  specs: () => [{}],
  workgroupBytes: () => NORM_WG * 4,
  code: () => /* wgsl */ `
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
}`,
});

function scaleKernel({ params: k }: ClipSpec): string {
  return /* wgsl */ `
struct P { t: array<vec4u, ${k}> }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> COEF: array<f32>;
${Array.from({ length: k }, (_, j) => `@group(0) @binding(${2 + j}) var<storage, read_write> G${j}: array<f32>;`).join('\n')}
@compute @workgroup_size(${OPT_WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lt: u32) {
  let w = wid.x;
${findEntry(k)}
  let n = e.x;
  let stride = e.w * ${OPT_WG}u;
  let first = (w - e.z) * ${OPT_WG}u + lt;
  let c = COEF[0];
${switchOver(k, (j) => `      for (var i = first; i < n; i += stride) { G${j}[i] = G${j}[i] * c; }`)}
}`;
}

const CLIP_SCALE = kernelFamily<ClipSpec>({
  family: 'clip.scale',
  specs: () => groupSizes().map((params) => ({ params })),
  code: scaleKernel,
});

/** Global gradient norm and torch's clip coefficient, both as one-element GPU tensors. */
export interface GradNormCoef {
  norm: Tensor;
  /** min(1, maxNorm / (norm + 1e-6)): pass to AdamW.step(lr, {gradScale: coef}). */
  coef: Tensor;
}

function gradsOf(params: readonly Tensor[], what: string): Tensor[] {
  const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null && g !== undefined);
  for (const g of grads) assertDtype(g, 'f32', what);
  return grads.filter((g) => g.numel > 0);
}

/**
 * The global L2 norm of every gradient of `params` (those with a `.grad`) and the clip coefficient
 * min(1, maxNorm/(norm+1e-6)), without touching the gradients: ceil(T / clipTensorsPerDispatch()) + 1
 * dispatches. Fuse the clipping into the update with `optimizer.step(lr, {gradScale: coef})`.
 */
export function gradNormCoef(params: readonly Tensor[], maxNorm: number): GradNormCoef {
  const grads = gradsOf(params, 'clipGradNorm gradient');
  const norm = Tensor.empty([1]);
  const coef = Tensor.empty([1]);
  const slots = grads.map((g) =>
    Math.max(1, Math.min(NORM_MAX_GROUPS, Math.ceil(g.numel / (NORM_WG * NORM_PER_THREAD)))),
  );
  const total = slots.reduce((a, b) => a + b, 0);
  const part = Tensor.empty([Math.max(total, 1)]);
  const k = clipTensorsPerDispatch();
  let offset = 0;
  for (const group of runs(
    grads.map((g, i) => [g, slots[i]!] as const),
    k,
  )) {
    const u = new Uniforms(4 * group.length);
    let wgs = 0;
    for (const [g, n] of group) {
      u.u32(g.numel).u32(offset).u32(wgs).u32(n);
      wgs += n;
      offset += n;
    }
    SUMSQ.dispatch({ params: group.length }, [part, ...group.map(([g]) => g)], [wgs], u);
  }
  NORM_FINAL.dispatch({}, [part, norm, coef], [1], new Uniforms().u32(total).f32(maxNorm).u32(0).u32(0));
  part.dispose();
  return { norm, coef };
}

/**
 * The global L2 norm of every gradient of `params` (those with a `.grad`), and, like
 * torch.nn.utils.clip_grad_norm_, every gradient multiplied in place by min(1, maxNorm/(norm+1e-6)).
 * Nothing is read back: the norm is returned as a one-element tensor.
 */
export function clipGradNorm(params: readonly Tensor[], maxNorm: number): Tensor {
  const { norm, coef } = gradNormCoef(params, maxNorm);
  const grads = gradsOf(params, 'clipGradNorm gradient');
  for (const group of runs(grads, clipTensorsPerDispatch())) {
    const u = new Uniforms(4 * group.length);
    let wgs = 0;
    for (const g of group) {
      const count = Math.min(WG_CAP, Math.ceil(g.numel / OPT_WG));
      u.u32(g.numel).u32(0).u32(wgs).u32(count);
      wgs += count;
    }
    CLIP_SCALE.dispatch({ params: group.length }, [coef, ...group], [wgs], u);
  }
  coef.dispose();
  return norm;
}
