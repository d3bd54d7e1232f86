// The subgroup-matrix fragment layer (src/kernels/sgmatrix.ts): one small kernel template that uses
// every hook (load of left / right / result fragments in either majorness from workgroup and storage
// arrays at odd offsets and strides, multiply-accumulate, multiply, scalar scale, fill, zero
// declaration, store in either majorness), emitted in both modes.
// - native: compiles on Dawn's Null backend with zero errors and zero warnings, for every known shape
//   (16×16×16, 16×8×16, 8×16×16, 8×8×8) and both result types;
// - emulated: runs on the local adapter (lavapipe here) against a float64 reference, outputs poisoned
//   first; an out-of-bounds footprint or a stride below the minor dimension comes out as NaN.
// Tolerance, per output element: operands are f16 and their products exact in f32; f32 summation of
// the K products plus one addend errs by at most γ_{K+2}·(Σ|l·r| + |addend|) (Higham, u = 2⁻²⁴, any
// order); an f16 result is rounded once per multiply(-accumulate), adding up to one f16 ulp of the
// rounded value (WGSL may round to either neighbour), times the scale applied afterwards.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ceilingKernel } from '../../bench/kernels/sgmatrix.js';
import { f16Ulp } from '../../reference/gemm.js';
import { halfBitsToNumber } from '../../reference/matmul.js';
import { engine, Tensor } from '../../src/engine/tensor.js';
import { f32ToF16 } from '../../src/io/dtype.js';
import {
  assertOffered,
  fragmentDims,
  isOffered,
  MATRIX_SHAPE_NAMES,
  MATRIX_SHAPES,
  type Majorness,
  type MatrixArray,
  type MatrixMode,
  type MatrixResultType,
  type MatrixRole,
  type MatrixShape,
  offeredShapes,
  type SgMatrix,
  subgroupMatrices,
} from '../../src/kernels/sgmatrix.js';
import { type NullCompiler, nullCompiler } from '../../src/kernels/variants.js';
import { testRng, useEngine } from '../helpers/index.js';

useEngine();

const SUBGROUPS = 2;
const U = 2 ** -24;

interface Frag {
  role: MatrixRole;
  major: Majorness;
  rows: number;
  cols: number;
  offset: number;
  stride: number;
  /** Elements one subgroup's region spans (offset + footprint). */
  region: number;
}

function frag(role: MatrixRole, shape: MatrixShape, major: Majorness, offset: number, pad: number): Frag {
  const [rows, cols] = fragmentDims(role, shape);
  const [majorDim, minorDim] = major === 'row_major' ? [rows, cols] : [cols, rows];
  const stride = minorDim + pad;
  return { role, major, rows, cols, offset, stride, region: offset + stride * (majorDim - 1) + minorDim };
}

const at = (f: Frag, r: number, c: number) =>
  f.offset + (f.major === 'row_major' ? r * f.stride + c : c * f.stride + r);

interface Layout {
  left: Frag;
  right: Frag;
  acc: Frag;
  out: Frag;
  /** Seeded fault (emulated check): a load past the array, or a store with a stride below the minor dimension. */
  fault?: 'load-oob' | 'short-stride';
}

function layout(shape: MatrixShape, flip: boolean, fault?: Layout['fault']): Layout {
  const [a, b] = flip ? (['col_major', 'row_major'] as const) : (['row_major', 'col_major'] as const);
  return {
    left: frag('left', shape, a, 5, 3),
    right: frag('right', shape, b, 1, 7),
    acc: frag('result', shape, a, 3, 1),
    out: frag('result', shape, b, 2, 5),
    fault,
  };
}

function kernel(sg: SgMatrix, L: Layout): string {
  const TR = sg.result;
  const WA = L.left.region * SUBGROUPS;
  const As: MatrixArray = { name: 'As', elem: 'f16', length: WA };
  const B: MatrixArray = { name: 'B', elem: 'f16' };
  const C: MatrixArray = { name: 'C', elem: TR };
  const D: MatrixArray = { name: 'D', elem: TR };
  const id = sg.subgroupId;
  const leftOff =
    L.fault === 'load-oob'
      ? `select(${id} * ${L.left.region}u + ${L.left.offset}u, ${WA - (L.left.region - L.left.offset) + 1}u, ${id} == 0u)`
      : `${id} * ${L.left.region}u + ${L.left.offset}u`;
  const outStride =
    L.fault === 'short-stride' ? (L.out.major === 'row_major' ? L.out.cols : L.out.rows) - 1 : L.out.stride;
  const store = (name: string, q: number) =>
    sg.store(name, D, `(${id} * 4u + ${q}u) * ${L.out.region}u + ${L.out.offset}u`, `${outStride}u`, L.out.major);
  return `${sg.enable}${sg.moduleDecls}
@group(0) @binding(0) var<storage, read> A: array<f16>;
@group(0) @binding(1) var<storage, read> B: array<f16>;
@group(0) @binding(2) var<storage, read> C: array<${TR}>;
@group(0) @binding(3) var<storage, read_write> D: array<${TR}>;
var<workgroup> As: array<f16, ${WA}>;
@compute @workgroup_size(${sg.invocations(SUBGROUPS)})${sg.attributes}
fn main(@builtin(local_invocation_index) lid: u32${sg.entryParams}) {
  ${sg.prelude('lid')}
  for (var i = lid; i < ${WA}u; i += ${sg.invocations(SUBGROUPS)}u) { As[i] = A[i]; }
  workgroupBarrier();
  ${sg.load('left', 'l', As, leftOff, `${L.left.stride}u`, L.left.major)}
  ${sg.load('right', 'r', B, `${id} * ${L.right.region}u + ${L.right.offset}u`, `${L.right.stride}u`, L.right.major)}
  ${sg.declare('result', 'acc')}
  ${sg.load('result', 'acc', C, `${id} * ${L.acc.region}u + ${L.acc.offset}u`, `${L.acc.stride}u`, L.acc.major, { assign: true })}
  ${sg.mma('acc', 'l', 'r')}
  ${sg.multiply('m', 'l', 'r')}
  ${sg.scale('m', '0.5')}
  ${sg.declare('result', 'f')}
  ${sg.fill('f', '0.25')}
  ${sg.mma('f', 'l', 'r')}
  ${sg.declare('result', 'z')}
  ${sg.mma('z', 'l', 'r')}
  ${store('acc', 0)}
  ${store('m', 1)}
  ${store('f', 2)}
  ${store('z', 3)}
}`;
}

const CASES: { shape: MatrixShape; name: string; result: MatrixResultType; flip: boolean }[] = [
  ...MATRIX_SHAPE_NAMES.flatMap((name) =>
    [false, true].map((flip) => ({ shape: MATRIX_SHAPES[name], name, result: 'f32' as const, flip })),
  ),
  ...[false, true].map((flip) => ({ shape: MATRIX_SHAPES.m16n16k16, name: 'm16n16k16', result: 'f16' as const, flip })),
];

const make = (mode: MatrixMode, shape: MatrixShape, result: MatrixResultType) =>
  subgroupMatrices({ mode, shape, result, sizeControl: true });

describe('sgmatrix: native backend on Dawn Null', () => {
  let nul: NullCompiler;
  beforeAll(async () => {
    nul = await nullCompiler();
  });
  afterAll(() => nul?.destroy());

  it('every hook, every shape, both result types and majorness orders: zero errors, zero warnings', async () => {
    for (const c of CASES) {
      const code = kernel(make('native', c.shape, c.result), layout(c.shape, c.flip));
      expect(code).toContain('subgroupMatrixMultiplyAccumulate');
      expect(
        await nul.check(code, { workgroupBytes: 0, label: `${c.name} ${c.result}` }),
        `${c.name} ${c.result} flip=${c.flip}`,
      ).toEqual([]);
    }
  });

  it("the bench's register-only ceiling kernels compile too (every shape, f32 and f16 results)", async () => {
    for (const name of MATRIX_SHAPE_NAMES) {
      for (const result of ['f32', 'f16'] as const) {
        for (const sizeControl of [true, false]) {
          // Without @subgroup_size Null wants workgroups in multiples of 128: checked at module level.
          expect(
            await nul.check(ceilingKernel(name, result, sizeControl), { workgroupBytes: sizeControl ? 0 : Infinity }),
            `${name} ${result}`,
          ).toEqual([]);
        }
      }
    }
  });

  it('a type error is reported (the check can fail): f32 stored into an f16 array is refused in TypeScript, a bad WGSL shape by Tint', async () => {
    const sg = make('native', MATRIX_SHAPES.m16n16k16, 'f32');
    expect(() => sg.store('acc', { name: 'X', elem: 'f16' }, '0u', '16u', 'row_major')).toThrow(
      /f32 cannot use the f16 array/,
    );
    const bad = kernel(sg, layout(MATRIX_SHAPES.m16n16k16, false)).replace(
      'subgroupMatrixMultiplyAccumulate(l, r, acc)',
      'subgroupMatrixMultiplyAccumulate(r, l, acc)',
    );
    expect((await nul.check(bad)).length).toBeGreaterThan(0);
  });
});

describe('sgmatrix: emulated backend against float64', () => {
  async function run(
    c: (typeof CASES)[number],
    fault?: Layout['fault'],
  ): Promise<{ got: Float32Array; L: Layout; A: Float64Array; B: Float64Array; C: Float64Array }> {
    const rng = testRng(`sgmatrix ${c.name} ${c.result} ${c.flip} ${fault ?? ''}`);
    const L = layout(c.shape, c.flip, fault);
    const half = (n: number) => Uint16Array.from(rng.normalArray(n), (v) => f32ToF16(v));
    const aBits = half(L.left.region * SUBGROUPS);
    const bBits = half(L.right.region * SUBGROUPS);
    const cVals = rng.normalArray(L.acc.region * SUBGROUPS);
    const cT =
      c.result === 'f16'
        ? Tensor.from(
            Uint16Array.from(cVals, (v) => f32ToF16(v)),
            [cVals.length],
            'f16',
          )
        : Tensor.from(cVals, [cVals.length]);
    const C =
      c.result === 'f16'
        ? Float64Array.from(cVals, (v) => halfBitsToNumber(f32ToF16(v), 'f16'))
        : Float64Array.from(Float32Array.from(cVals));
    const nOut = 4 * L.out.region * SUBGROUPS;
    const out = Tensor.empty([nOut + (nOut % 2)], c.result); // poisoned (NaN) by the test engine
    const aT = Tensor.from(aBits, [aBits.length], 'f16');
    const bT = Tensor.from(bBits, [bBits.length], 'f16');
    const sg = make('emulated', c.shape, c.result);
    const dev = engine().dev;
    const key = `test.sgmatrix.${c.name}.${c.result}.${c.flip}.${fault ?? ''}`;
    dev.dispatch({
      pipeline: dev.pipeline(key, () => kernel(sg, L)),
      buffers: [aT, bT, cT, out].map((t) => t.binding),
      workgroups: [1],
    });
    const raw = await out.read();
    const got =
      raw instanceof Float32Array ? raw : Float32Array.from(raw as Uint16Array, (b) => halfBitsToNumber(b, 'f16'));
    for (const t of [aT, bT, cT, out]) t.dispose();
    const h = (bits: Uint16Array) => Float64Array.from(bits, (b) => halfBitsToNumber(b, 'f16'));
    return { got, L, A: h(aBits), B: h(bBits), C };
  }

  for (const c of CASES) {
    it(`${c.name} → ${c.result}, ${c.flip ? 'left col_major / right row_major' : 'left row_major / right col_major'}`, async () => {
      const { M, N, K } = c.shape;
      const { got, L, A, B, C } = await run(c);
      let worst = 0;
      for (let s = 0; s < SUBGROUPS; s++) {
        for (let r = 0; r < M; r++) {
          for (let col = 0; col < N; col++) {
            let lr = 0;
            let mag = 0;
            for (let k = 0; k < K; k++) {
              const p = A[s * L.left.region + at(L.left, r, k)]! * B[s * L.right.region + at(L.right, k, col)]!;
              lr += p;
              mag += Math.abs(p);
            }
            const acc = C[s * L.acc.region + at(L.acc, r, col)]!;
            // [value, addend magnitude, scale applied after the rounding] for acc, m, f, z
            const want: [number, number, number][] = [
              [lr + acc, Math.abs(acc), 1],
              [0.5 * lr, 0, 0.5],
              [lr + 0.25, 0.25, 1],
              [lr, 0, 1],
            ];
            want.forEach(([v, add, scale], q) => {
              const i = (s * 4 + q) * L.out.region + at(L.out, r, col);
              const bound =
                (K + 2) * U * (mag + add) * 1.0001 +
                (c.result === 'f16' ? scale * f16Ulp(Math.abs(v / scale) + (K + 2) * U * (mag + add)) : 0);
              const err = Math.abs(got[i]! - v);
              if (!(err <= bound))
                throw new Error(
                  `subgroup ${s} output ${q} [${r}, ${col}]: got ${got[i]}, want ${v} (bound ${bound.toExponential(2)})`,
                );
              worst = Math.max(worst, err);
            });
          }
        }
      }
      console.log(`[sgmatrix] ${c.name} ${c.result}: max |err| ${worst.toExponential(2)}`);
    });
  }

  it('a load footprint past the array and a store stride below the minor dimension come out as NaN', async () => {
    const c = CASES.find((x) => x.name === 'm8n8k8')!;
    const oob = await run(c, 'load-oob');
    const { M, N } = c.shape;
    // subgroup 0 loaded its left fragment past the array; subgroup 1's loads are in bounds
    const outputs = (s: number) =>
      Array.from(
        { length: M * N },
        (_, e) => oob.got[s * 4 * oob.L.out.region + at(oob.L.out, Math.floor(e / N), e % N)]!,
      );
    expect(outputs(0).every(Number.isNaN), 'out-of-bounds load: NaN fragment').toBe(true);
    expect(outputs(1).some(Number.isNaN), 'the in-bounds subgroup is unaffected').toBe(false);
    const short = await run(c, 'short-stride');
    const L = short.L;
    const first = at(L.out, 0, 0);
    expect(Number.isNaN(short.got[first]!), 'short stride store: NaN written').toBe(true);
  });
});

describe('sgmatrix: configurations offered by an adapter', () => {
  const nvidia = [
    { componentType: 'f16', resultComponentType: 'f32', M: 16, N: 16, K: 16 },
    { componentType: 'f16', resultComponentType: 'f16', M: 16, N: 16, K: 16 },
    { componentType: 'f16', resultComponentType: 'f32', M: 16, N: 8, K: 16 },
    { componentType: 'f16', resultComponentType: 'f32', M: 16, N: 8, K: 8 },
    { componentType: 'i8', resultComponentType: 'i32', M: 16, N: 16, K: 32 },
  ];
  it('asserts a configuration against the list, and lists the known shapes offered', () => {
    expect(isOffered({ ...MATRIX_SHAPES.m16n16k16, result: 'f32' }, nvidia)).toBe(true);
    expect(() => assertOffered({ ...MATRIX_SHAPES.m8n16k16, result: 'f32' }, nvidia, 'gemm')).toThrow(
      /8×16×16 is not offered.*16×8×8/,
    );
    expect(() => assertOffered({ ...MATRIX_SHAPES.m16n16k16, result: 'f32' }, [], 'gemm')).toThrow(/offers: none/);
    expect(offeredShapes(nvidia, 'f32')).toEqual(['m16n16k16', 'm16n8k16']);
    expect(offeredShapes(nvidia, 'f16')).toEqual(['m16n16k16']);
  });
});
