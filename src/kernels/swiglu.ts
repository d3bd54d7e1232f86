// Fused SwiGLU (Llama MLP): y = silu(gate) · up, with silu(g) = g·σ(g).
// Backward in one kernel: dGate = dy·up·σ(g)·(1 + g·(1 − σ(g))), dUp = dy·silu(g); the variant
// compiled writes only the gradients that are needed (gate, up or both), so a frozen branch costs no
// memory traffic.
//
// σ(g) = 1/(1 + exp(−g)): for g → −∞ exp overflows to +inf and σ → 0 (no NaN); for g → +∞, σ → 1.
//
// gate and up are f32, or f16 packed two per u32 (fp16-mixed: the MLP keeps them for backward in
// half the bytes); they are read as f32, and the output and gradients are f32 either way.
import { recordOp } from '../engine/autograd.js';
import { Tensor } from '../engine/tensor.js';
import { grid1d, Uniforms, WG, WGSL_FLAT_INDEX, WGSL_HALF } from './common.js';
import { kernelFamily } from './variants.js';

type InputType = 'f32' | 'f16';

const HEADER = /* wgsl */ `
struct P { n: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
${WGSL_FLAT_INDEX}
fn sigmoid(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }`;

/** WGSL: an input binding read as f32 at element i through ld<NAME>(i). */
function input(binding: number, name: string, type: InputType): string {
  if (type === 'f32')
    return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<f32>;\nfn ld${name}(i: u32) -> f32 { return ${name}[i]; }`;
  return `@group(0) @binding(${binding}) var<storage, read> ${name}: array<u32>;\nfn ld${name}(i: u32) -> f32 { return half_word_get(${name}[i >> 1u], i, false); }`;
}

function forwardKernel({ type }: { type: InputType }): string {
  return /* wgsl */ `${HEADER}${type === 'f16' ? WGSL_HALF : ''}
${input(1, 'GATE', type)}
${input(2, 'UP', type)}
@group(0) @binding(3) var<storage, read_write> Y: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (i >= p.n) { return; }
  let g = ldGATE(i);
  Y[i] = g * sigmoid(g) * ldUP(i);
}`;
}

// Bindings: GATE, [UP when dGate is wanted], DY, then the outputs. (A binding the code does not read
// is dropped from the 'auto' layout, even with a phony `_ = UP[i]`, so the up-only variant omits UP.)
function backwardKernel({ gate: wantGate, up: wantUp, type }: BackwardSpec): string {
  let binding = 1;
  const decl = [input(binding++, 'GATE', type)];
  if (wantGate) decl.push(input(binding++, 'UP', type));
  decl.push(`@group(0) @binding(${binding++}) var<storage, read> DY: array<f32>;`);
  const body: string[] = [];
  if (wantGate) {
    decl.push(`@group(0) @binding(${binding++}) var<storage, read_write> DGATE: array<f32>;`);
    body.push('DGATE[i] = dy * ldUP(i) * s * (1.0 + g * (1.0 - s));');
  }
  if (wantUp) {
    decl.push(`@group(0) @binding(${binding++}) var<storage, read_write> DUP: array<f32>;`);
    body.push('DUP[i] = dy * g * s;');
  }
  return /* wgsl */ `${HEADER}${type === 'f16' ? WGSL_HALF : ''}
${decl.join('\n')}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (i >= p.n) { return; }
  let g = ldGATE(i);
  let s = sigmoid(g);
  let dy = DY[i];
  ${body.join('\n  ')}
}`;
}

/** The backward variant: which gradients it writes (at least one) and the inputs' storage. */
interface BackwardSpec {
  gate: boolean;
  up: boolean;
  type: InputType;
}

const INPUT_TYPES: InputType[] = ['f32', 'f16'];

const FORWARD = kernelFamily<{ type: InputType }>({
  family: 'swiglu.fwd',
  specs: () => INPUT_TYPES.map((type) => ({ type })),
  code: forwardKernel,
});

const BACKWARD = kernelFamily<BackwardSpec>({
  family: 'swiglu.bwd',
  // swigluBackward returns early when neither gradient is wanted.
  specs: () =>
    INPUT_TYPES.flatMap((type) =>
      [
        [true, false],
        [false, true],
        [true, true],
      ].map(([gate, up]) => ({ gate: gate!, up: up!, type })),
    ),
  code: backwardKernel,
});

/** The gradients of swiglu for whichever of gate/up are requested. */
export function swigluBackward(
  gate: Tensor,
  up: Tensor,
  dy: Tensor,
  want: { gate: boolean; up: boolean },
): { dGate: Tensor | null; dUp: Tensor | null } {
  if (!want.gate && !want.up) return { dGate: null, dUp: null };
  const dGate = want.gate ? Tensor.empty(gate.shape) : null;
  const dUp = want.up ? Tensor.empty(gate.shape) : null;
  const outs = [dGate, dUp].filter((t): t is Tensor => t !== null);
  const type = inputType(gate, up);
  BACKWARD.dispatch(
    { gate: want.gate, up: want.up, type },
    [gate, ...(want.gate ? [up] : []), dy, ...outs],
    grid1d(gate.numel),
    new Uniforms().u32(gate.numel).u32(0).u32(0).u32(0),
  );
  return { dGate, dUp };
}

/** The dtype gate and up share (f32 or f16); anything else is refused. */
function inputType(gate: Tensor, up: Tensor): InputType {
  if ((gate.dtype !== 'f32' && gate.dtype !== 'f16') || gate.dtype !== up.dtype) {
    throw new TypeError(`swiglu: gate (${gate.dtype}) and up (${up.dtype}) must both be f32 or both f16`);
  }
  return gate.dtype;
}

/** y = silu(gate) · up, elementwise → f32; gate and up are f32 (or both f16) of the same shape. */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  const type = inputType(gate, up);
  if (
    gate.numel !== up.numel ||
    gate.shape.length !== up.shape.length ||
    gate.shape.some((d, i) => d !== up.shape[i])
  ) {
    throw new RangeError(
      `swiglu: gate [${gate.shape.join(', ')}] and up [${up.shape.join(', ')}] must have the same shape`,
    );
  }
  const y = Tensor.empty(gate.shape);
  FORWARD.dispatch({ type }, [gate, up, y], grid1d(gate.numel), new Uniforms().u32(gate.numel).u32(0).u32(0).u32(0));
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
