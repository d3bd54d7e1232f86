// Elementwise kernels, generated from a table: each op is a WGSL expression for the forward and one
// for the gradient (in terms of x, y = f(x) and the incoming gradient g), so forward and backward
// sit side by side and one generator serves all. Binary ops broadcast their second operand when
// its shape is a trailing suffix of the first's (bias over rows) or a single element.
import { autogradKernels, recordOp } from '../engine/autograd.js';
import { type DType, numelOf, Tensor } from '../engine/tensor.js';
import { assertDtype, grid1d, Uniforms, WG, WGSL_FLAT_INDEX, WGSL_HALF } from './common.js';
import { kernelFamily } from './variants.js';

export interface UnaryOpDef {
  /** y as a function of x. */
  forward: string;
  /** dL/dx as a function of x, y and g = dL/dy. */
  backward: string;
}

export const UNARY_OPS = {
  neg: { forward: '-x', backward: '-g' },
  exp: { forward: 'exp(x)', backward: 'g * y' },
  log: { forward: 'log(x)', backward: 'g / x' },
  sqrt: { forward: 'sqrt(x)', backward: 'g * 0.5 / y' },
  square: { forward: 'x * x', backward: 'g * 2.0 * x' },
  relu: { forward: 'max(x, 0.0)', backward: 'select(0.0, g, x > 0.0)' },
  sigmoid: { forward: '1.0 / (1.0 + exp(-x))', backward: 'g * y * (1.0 - y)' },
  silu: {
    forward: 'x / (1.0 + exp(-x))',
    backward: 'g * (1.0 / (1.0 + exp(-x))) * (1.0 + x * (1.0 - 1.0 / (1.0 + exp(-x))))',
  },
  tanh: { forward: 'tanh(x)', backward: 'g * (1.0 - y * y)' },
} as const satisfies Record<string, UnaryOpDef>;
export type UnaryOp = keyof typeof UNARY_OPS;

export const BINARY_OPS = {
  add: { forward: 'a + b', gradA: 'g', gradB: 'g' },
  sub: { forward: 'a - b', gradA: 'g', gradB: '-g' },
  mul: { forward: 'a * b', gradA: 'g * b', gradB: 'g * a' },
  div: { forward: 'a / b', gradA: 'g / b', gradB: '-g * a / (b * b)' },
} as const;
export type BinaryOp = keyof typeof BINARY_OPS;

const HEADER = /* wgsl */ `
struct P { n: u32, nb: u32, alpha: f32, _pad: u32 }
@group(0) @binding(0) var<uniform> p: P;
${WGSL_FLAT_INDEX}`;

/** Storage buffers of a 1-D kernel, bound at @binding(1..) in order: [name, element type, writable]. */
type Binding = [name: string, type: 'f32' | 'u32', writable?: boolean];

/**
 * A 1-D kernel with one thread per index `i` of the flat grid: the uniform block P, the listed
 * storage buffers, and `body`, which runs only where `guard` (in terms of i) is false.
 */
function kernel1d(bindings: Binding[], body: string, guard = 'i >= p.n', extra = ''): string {
  const decls = bindings
    .map(
      ([name, type, writable], k) =>
        `@group(0) @binding(${k + 1}) var<storage, ${writable ? 'read_write' : 'read'}> ${name}: array<${type}>;`,
    )
    .join('\n');
  return /* wgsl */ `${HEADER}${extra}
${decls}
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = flat_index(gid, nwg, ${WG}u);
  if (${guard}) { return; }
  ${body}
}`;
}

const UNARY = kernelFamily<{ op: UnaryOp }>({
  family: 'unary',
  specs: () => unaryOps().map((op) => ({ op })),
  code: ({ op }) =>
    kernel1d(
      [
        ['X', 'f32'],
        ['Y', 'f32', true],
      ],
      `let x = X[i];\n  Y[i] = ${UNARY_OPS[op].forward};`,
    ),
});

function unaryOps(): UnaryOp[] {
  return Object.keys(UNARY_OPS) as UnaryOp[];
}

/** Whether a gradient expression reads the variable `name` (so backward must keep that tensor). */
function reads(expr: string, name: string): boolean {
  return new RegExp(`\\b${name}\\b`).test(expr);
}

/**
 * A gradient kernel D[i] = expr(g, saved operands) that binds only the operands `expr` reads (each
 * [variable, buffer name, WGSL load]), then G and the output D: backward keeps no more than that.
 */
function gradKernel(expr: string, operands: [variable: string, buffer: string, load: string][]): string {
  const used = operands.filter(([v]) => reads(expr, v));
  const bindings: Binding[] = [...used.map(([, b]): Binding => [b, 'f32']), ['G', 'f32'], ['D', 'f32', true]];
  return kernel1d(
    bindings,
    `${used.map(([v, , load]) => `let ${v} = ${load};`).join(' ')} let g = G[i];\n  D[i] = ${expr};`,
  );
}

// Backward of a unary op keeps x, y, both or neither (neg keeps nothing).
const UNARY_BACKWARD = kernelFamily<{ op: UnaryOp }>({
  family: 'unary.backward',
  specs: () => unaryOps().map((op) => ({ op })),
  code: ({ op }) =>
    gradKernel(UNARY_OPS[op].backward, [
      ['x', 'X', 'X[i]'],
      ['y', 'Yv', 'Yv[i]'],
    ]),
});

function params(n: number, nb = 0, alpha = 0): Uniforms {
  return new Uniforms().u32(n).u32(nb).f32(alpha).u32(0);
}

/** y = op(x), f32, any shape. */
export function unary(op: UnaryOp, x: Tensor): Tensor {
  assertDtype(x, 'f32', `unary ${op}`);
  const def = UNARY_OPS[op];
  const y = Tensor.empty(x.shape);
  UNARY.dispatch({ op }, [x, y], grid1d(x.numel), params(x.numel));
  recordOp(`unary.${op}`, [x], y, (node) => {
    const saved = [
      ...(reads(def.backward, 'x') ? [node.save(x)] : []),
      ...(reads(def.backward, 'y') ? [node.save(y)] : []),
    ];
    return ([g]) => {
      const dx = Tensor.empty(x.shape);
      UNARY_BACKWARD.dispatch({ op }, [...saved, g!, dx], grid1d(x.numel), params(x.numel));
      return [dx];
    };
  });
  return y;
}

const BINARY = kernelFamily<{ op: BinaryOp }>({
  family: 'binary',
  specs: () => binaryOps().map((op) => ({ op })),
  code: ({ op }) =>
    kernel1d(
      [
        ['A', 'f32'],
        ['B', 'f32'],
        ['C', 'f32', true],
      ],
      `let a = A[i]; let b = B[i % p.nb];\n  C[i] = ${BINARY_OPS[op].forward};`,
    ),
});

function binaryOps(): BinaryOp[] {
  return Object.keys(BINARY_OPS) as BinaryOp[];
}

/** The gradient expression of operand k (0: a, 1: b) of a binary op. */
function binaryGradExpr(op: BinaryOp, k: 0 | 1): string {
  return k === 0 ? BINARY_OPS[op].gradA : BINARY_OPS[op].gradB;
}

/**
 * Gradient of a binary op for one operand, in the full (un-broadcast) shape. A gradient that is the
 * incoming one itself ('g') needs no kernel, so only the other (op, operand) pairs are variants.
 */
const BINARY_GRAD = kernelFamily<{ op: BinaryOp; k: 0 | 1 }>({
  family: 'binary.grad',
  specs: () =>
    binaryOps().flatMap((op) => ([0, 1] as const).filter((k) => binaryGradExpr(op, k) !== 'g').map((k) => ({ op, k }))),
  code: ({ op, k }) =>
    gradKernel(binaryGradExpr(op, k), [
      ['a', 'A', 'A[i]'],
      ['b', 'B', 'B[i % p.nb]'],
    ]),
});

function broadcastable(a: Tensor, b: Tensor): boolean {
  if (b.numel === 1) return true;
  if (b.shape.length > a.shape.length) return false;
  const off = a.shape.length - b.shape.length;
  return b.shape.every((d, i) => d === a.shape[off + i]);
}

/** c = a op b, with b the same shape as a, a trailing suffix of it, or one element. */
export function binary(op: BinaryOp, a: Tensor, b: Tensor): Tensor {
  assertDtype(a, 'f32', `binary ${op}`);
  assertDtype(b, 'f32', `binary ${op}`);
  if (!broadcastable(a, b))
    throw new RangeError(
      `${op}: cannot broadcast [${b.shape}] onto [${a.shape}] (b must be a trailing suffix of a, or one element)`,
    );
  const def = BINARY_OPS[op];
  const c = Tensor.empty(a.shape);
  BINARY.dispatch({ op }, [a, b, c], grid1d(a.numel), params(a.numel, b.numel));
  // Only the operands that some wanted gradient reads are kept: add and sub keep nothing, mul keeps
  // the other operand of each one that needs a gradient.
  const want = [a.requiresGrad || a.gradFn !== null, b.requiresGrad || b.gradFn !== null];
  const exprs = [def.gradA, def.gradB];
  const needs = (v: string) => exprs.some((e, k) => want[k] && reads(e, v));
  recordOp(`binary.${op}`, [a, b], c, (node) => {
    const saved: Record<string, Tensor | null> = {
      a: needs('a') ? node.save(a) : null,
      b: needs('b') ? node.save(b) : null,
    };
    return ([g]) =>
      exprs.map((expr, k) => {
        if (!want[k]) return null;
        const broadcast = k === 1 && b.numel !== a.numel;
        // d(a ± b)/da = g: the incoming gradient itself (autograd copies it if both operands take it).
        if (expr === 'g') return broadcast ? sumToSuffix(g!, b.shape) : g!.reshape(k === 0 ? a.shape : b.shape);
        const full = Tensor.empty(a.shape);
        const operands = ['a', 'b'].filter((v) => reads(expr, v)).map((v) => saved[v]!);
        BINARY_GRAD.dispatch({ op, k: k as 0 | 1 }, [...operands, g!, full], grid1d(a.numel), params(a.numel, b.numel));
        if (!broadcast) return full;
        const reduced = sumToSuffix(full, b.shape);
        full.dispose();
        return reduced;
      });
  });
  return c;
}

export const add = (a: Tensor, b: Tensor): Tensor => binary('add', a, b);
export const sub = (a: Tensor, b: Tensor): Tensor => binary('sub', a, b);
export const mul = (a: Tensor, b: Tensor): Tensor => binary('mul', a, b);
export const div = (a: Tensor, b: Tensor): Tensor => binary('div', a, b);

const SCALE = kernelFamily({
  family: 'scale',
  specs: () => [{}],
  code: () =>
    kernel1d(
      [
        ['X', 'f32'],
        ['Y', 'f32', true],
      ],
      'Y[i] = p.alpha * X[i];',
    ),
});

/** y = s·x for a constant s. */
export function scale(x: Tensor, s: number): Tensor {
  assertDtype(x, 'f32', 'scale');
  const y = Tensor.empty(x.shape);
  SCALE.dispatch({}, [x, y], grid1d(x.numel), params(x.numel, 0, s));
  recordOp('scale', [x], y, () => ([g]) => [scale(g!, s)]);
  return y;
}

const ACCUMULATE = kernelFamily({
  family: 'accumulate',
  specs: () => [{}],
  code: () =>
    kernel1d(
      [
        ['D', 'f32', true],
        ['S', 'f32'],
      ],
      'D[i] = D[i] + p.alpha * S[i];',
    ),
});

/** dst += alpha·src, in place (not recorded by autograd). */
export function accumulate(dst: Tensor, src: Tensor, alpha = 1): void {
  if (dst.numel !== src.numel) throw new RangeError(`accumulate: ${src} into ${dst}`);
  ACCUMULATE.dispatch({}, [dst, src], grid1d(dst.numel), params(dst.numel, 0, alpha));
}

const FILL = kernelFamily({
  family: 'fill',
  specs: () => [{}],
  code: () => kernel1d([['Y', 'f32', true]], 'Y[i] = p.alpha;'),
});

/** A new f32 tensor filled with `value` on the GPU (no upload). */
export function full(shape: readonly number[], value: number): Tensor {
  const y = Tensor.empty(shape);
  fillValue(y, value);
  return y;
}

/** Sets every element of an f32 tensor to `value`, in place. */
export function fillValue(y: Tensor, value: number): void {
  assertDtype(y, 'f32', 'fill');
  FILL.dispatch({}, [y], grid1d(y.numel), params(y.numel, 0, value));
}

export const zeros = (shape: readonly number[]): Tensor => full(shape, 0);
export const ones = (shape: readonly number[]): Tensor => full(shape, 1);

// Thread i sums column i of x viewed as [n / nb, nb].
const SUM_TO_SUFFIX = kernelFamily({
  family: 'sum_to_suffix',
  specs: () => [{}],
  code: () =>
    kernel1d(
      [
        ['X', 'f32'],
        ['Y', 'f32', true],
      ],
      'var s = 0.0;\n  for (var r = i; r < p.n; r += p.nb) { s += X[r]; }\n  Y[i] = s;',
      'i >= p.nb',
    ),
});

/** Sums x over its leading dimensions down to `shape` (a trailing suffix of x's shape, or [1]). */
export function sumToSuffix(x: Tensor, shape: readonly number[]): Tensor {
  const nb = numelOf(shape);
  if (x.numel % nb !== 0) throw new RangeError(`sumToSuffix: [${x.shape}] to [${shape}]`);
  const y = Tensor.empty(shape);
  SUM_TO_SUFFIX.dispatch({}, [x, y], grid1d(nb), params(x.numel, nb));
  // d/dx of a sum is the incoming gradient broadcast back over the summed dimensions.
  recordOp('sum_to_suffix', [x], y, () => ([g]) => [binary('mul', ones(x.shape), g!)]);
  return y;
}

type HalfDType = 'bf16' | 'f16';
/** A conversion between f32 and a packed 16-bit dtype, either way. */
type CastSpec = { from: 'f32'; to: HalfDType } | { from: HalfDType; to: 'f32' };

function castKernel({ from, to }: CastSpec): string {
  if (from === 'f32') {
    // One thread packs elements 2i and 2i+1 into word i.
    const pack = to === 'bf16' ? 'f32_to_bf16(v0) | (f32_to_bf16(v1) << 16u)' : 'pack2x16float(vec2f(v0, v1))';
    return kernel1d(
      [
        ['X', 'f32'],
        ['Y', 'u32', true],
      ],
      `let v0 = X[2u * i];\n  var v1 = 0.0;\n  if (2u * i + 1u < p.n) { v1 = X[2u * i + 1u]; }\n  Y[i] = ${pack};`,
      '2u * i >= p.n',
      WGSL_HALF,
    );
  }
  return kernel1d(
    [
      ['X', 'u32'],
      ['Y', 'f32', true],
    ],
    `Y[i] = half_word_get(X[i / 2u], i, ${from === 'bf16'});`,
    'i >= p.n',
    WGSL_HALF,
  );
}

/** The kernel spec converting `from` to `to`, or null where no kernel converts them. */
function castSpecOf(from: DType, to: DType): CastSpec | null {
  if (from === 'f32' && (to === 'bf16' || to === 'f16')) return { from, to };
  if ((from === 'bf16' || from === 'f16') && to === 'f32') return { from, to };
  return null;
}

const CAST = kernelFamily<CastSpec>({
  family: 'cast',
  specs: () =>
    (['bf16', 'f16'] as const).flatMap((h): CastSpec[] => [
      { from: 'f32', to: h },
      { from: h, to: 'f32' },
    ]),
  code: castKernel,
});

/**
 * Converts between f32 and packed 16-bit (bf16 round-to-nearest-even, f16 IEEE). Differentiable:
 * gradients are f32 whatever the dtype of the tensor they belong to, so backward passes the incoming
 * gradient through unchanged (the straight-through gradient of rounding, as torch's .to() has).
 */
export function cast(x: Tensor, to: DType): Tensor {
  if (x.dtype === to) return x.reshape(x.shape);
  const spec = castSpecOf(x.dtype, to);
  if (!spec) throw new TypeError(`cast ${x.dtype} -> ${to} is not supported`);
  const y = Tensor.empty(x.shape, to);
  const threads = x.dtype === 'f32' ? Math.ceil(x.numel / 2) : x.numel;
  CAST.dispatch(spec, [x, y], grid1d(threads), params(x.numel));
  recordOp('cast', [x], y, () => ([g]) => [g!.reshape(x.shape)]);
  return y;
}

autogradKernels.accumulate = (dst, src) => accumulate(dst, src);
autogradKernels.ones = ones;
