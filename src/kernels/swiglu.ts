// Fused SwiGLU (Llama MLP): y = silu(gate) · up, with silu(g) = g·σ(g).
// Backward in one kernel: dGate = dy·up·σ(g)·(1 + g·(1 − σ(g))), dUp = dy·silu(g); the variant
// compiled writes only the gradients that are needed (gate, up or both), so a frozen branch costs no
// memory traffic.
//
// σ(g) = 1/(1 + exp(−g)): for g → −∞ exp overflows to +inf and σ → 0 (no NaN); for g → +∞, σ → 1.
import { recordOp } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { Uniforms, WGSL_FLAT_INDEX, WG, assertDtype, dispatch, grid1d } from './common.js';

const HEADER = /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
${WGSL_FLAT_INDEX}
fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }`;

const FORWARD_KERNEL = /* wgsl */ `${HEADER}
@group(0) @binding(1) var<storage, read> GATE: array<f32>;
@group(0) @binding(2) var<storage, read> UP: array<f32>;
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (i >= p.n) { return; }
  let g = GATE[i];
  Y[i] = g * sigmoid(g) * UP[i];
}`;

// Bindings: GATE, [UP when dGate is wanted], DY, then the outputs. (A binding the code does not read
// is dropped from the 'auto' layout, even with a phony `_ = UP[i]`, so the up-only variant omits UP.)
function backwardKernel(wantGate: boolean, wantUp: boolean): string {
  let binding = 1;
  const decl = [`@group(0) @binding(${binding++}) var<storage, read> GATE: array<f32>;`];
  if (wantGate) decl.push(`@group(0) @binding(${binding++}) var<storage, read> UP: array<f32>;`);
  decl.push(`@group(0) @binding(${binding++}) var<storage, read> DY: array<f32>;`);
  const body: string[] = [];
  if (wantGate) {
    decl.push(`@group(0) @binding(${binding++}) var<storage, read_write> DGATE: array<f32>;`);
    body.push('DGATE[i] = dy * UP[i] * s * (1.0 + g * (1.0 - s));');
  }
  if (wantUp) {
    decl.push(`@group(0) @binding(${binding++}) var<storage, read_write> DUP: array<f32>;`);
    body.push('DUP[i] = dy * g * s;');
  }
  return /* wgsl */ `${HEADER}
${decl.join('\n')}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (i >= p.n) { return; }
  let g = GATE[i];
  let s = sigmoid(g);
  let dy = DY[i];
  ${body.join('\n  ')}
}`;
}

/** The gradients of swiglu for whichever of gate/up are requested. */
export function swigluBackward(gate: Tensor, up: Tensor, dy: Tensor, want: { gate: boolean; up: boolean }): { dGate: Tensor | null; dUp: Tensor | null } {
  if (!want.gate && !want.up) return { dGate: null, dUp: null };
  const dGate = want.gate ? Tensor.empty(gate.shape) : null;
  const dUp = want.up ? Tensor.empty(gate.shape) : null;
  const outs = [dGate, dUp].filter((t): t is Tensor => t !== null);
  dispatch(`swiglu.bwd.${want.gate ? 'g' : ''}${want.up ? 'u' : ''}`, () => backwardKernel(want.gate, want.up), [gate, ...(want.gate ? [up] : []), dy, ...outs], grid1d(gate.numel), new Uniforms().u32(gate.numel).u32(0).u32(0).u32(0));
  return { dGate, dUp };
}

/** y = silu(gate) · up, elementwise; gate and up are f32 of the same shape. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  assertDtype(gate, 'f32', 'swiglu gate');
  assertDtype(up, 'f32', 'swiglu up');
  if (gate.numel !== up.numel || gate.shape.length !== up.shape.length || gate.shape.some((d, i) => d !== up.shape[i])) {
    throw new RangeError(`swiglu: gate [${gate.shape.join(', ')}] and up [${up.shape.join(', ')}] must have the same shape`);
  }
  const y = Tensor.empty(gate.shape);
  dispatch('swiglu.fwd', () => FORWARD_KERNEL, [gate, up, y], grid1d(gate.numel), new Uniforms().u32(gate.numel).u32(0).u32(0).u32(0));
  const want = { gate: gate.requiresGrad || gate.gradFn !== null, up: up.requiresGrad || up.gradFn !== null };
  recordOp('swiglu', [gate, up], y, (node) => {
    // Both gradients read gate; only dGate reads up. y is never kept.
    const gs = node.save(gate);
    const us = want.gate ? node.save(up) : gs;
    return ([dy]) => {
      const { dGate, dUp } = swigluBackward(gs, us, dy!, want);
      return [dGate, dUp];
    };
  });
  return y;
}
