// The tensor-core ceiling: for each known subgroup-matrix shape with f16 operands and f32 or f16
// results, a register-only loop of multiply-accumulates (fragments loaded once, NACC independent
// accumulators per subgroup, no memory traffic in the loop), reported as TFLOP/s. It bounds what any
// subgroup-matrix kernel (the GEMM core, FlashAttention) can reach through WGSL on this adapter.
// The adapter's configuration list is printed and saved by bench/run.ts. Where the adapter offers
// no subgroup matrices (CPUs, Dawn without the feature) or not this configuration, the case is
// skipped with the reason.
import { engine, Tensor } from '../../src/engine/tensor.js';
import { dispatch, Uniforms } from '../../src/kernels/common.js';
import {
  isOffered,
  MATRIX_SHAPE_NAMES,
  MATRIX_SHAPES,
  type MatrixResultType,
  type MatrixShapeName,
  subgroupMatrices,
} from '../../src/kernels/sgmatrix.js';
import { registerBench } from '../harness.js';

const NACC = 8;
const SUBGROUPS = 4;
const ITERS = 2048;
const WORKGROUPS = 1056; // 8 per SM on a 132-SM H100

export function ceilingKernel(shapeName: MatrixShapeName, result: MatrixResultType, sizeControl: boolean): string {
  const shape = MATRIX_SHAPES[shapeName];
  const sg = subgroupMatrices({ mode: 'native', shape, result, sizeControl });
  const src = { name: 'Ws', elem: 'f16' as const, length: 2 * 16 * 16 };
  const out = { name: 'OUT', elem: result };
  const accs = Array.from({ length: NACC }, (_, i) => `acc${i}`);
  return `${sg.enable}
struct P { iters: u32, _a: u32, _b: u32, _c: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> OUT: array<${result}>;
var<workgroup> Ws: array<f16, ${src.length}>;
@compute @workgroup_size(${sg.invocations(SUBGROUPS)})${sg.attributes}
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32${sg.entryParams}) {
  ${sg.prelude('lid')}
  for (var i = lid; i < ${src.length}u; i += ${sg.invocations(SUBGROUPS)}u) { Ws[i] = f16(f32(i % 7u) * 0.001); }
  workgroupBarrier();
  ${sg.load('left', 'a', src, '0u', '16u', 'row_major')}
  ${sg.load('right', 'b', src, '256u', '16u', 'row_major')}
  ${accs.map((n) => sg.declare('result', n)).join('\n  ')}
  for (var it = 0u; it < p.iters; it++) {
    ${accs.map((n) => sg.mma(n, 'a', 'b')).join('\n    ')}
  }
  let base = ((wid.x * ${SUBGROUPS}u + sg_id) * ${NACC}u) * ${shape.M * shape.N}u;
  ${accs.map((n, i) => sg.store(n, out, `base + ${i * shape.M * shape.N}u`, `${shape.N}u`, 'row_major')).join('\n  ')}
}`;
}

for (const shapeName of MATRIX_SHAPE_NAMES) {
  for (const result of ['f32', 'f16'] as MatrixResultType[]) {
    const { M, N, K } = MATRIX_SHAPES[shapeName];
    registerBench({
      family: 'sgmatrix',
      name: `ceiling f16→${result} ${M}×${N}×${K}, ${NACC} accumulators per subgroup`,
      id: `sgmatrix_ceiling_${shapeName}_${result}`,
      flops: 2 * M * N * K * NACC * ITERS * SUBGROUPS * WORKGROUPS,
      async setup() {
        const dev = engine().dev;
        if (!dev.has('chromium-experimental-subgroup-matrix') || dev.subgroupMatrixConfigs.length === 0) {
          return { skip: 'the adapter offers no subgroup matrices' };
        }
        if (!isOffered({ M, N, K, result }, dev.subgroupMatrixConfigs))
          return { skip: `f16→${result} ${M}×${N}×${K} is not offered` };
        const sizeControl = dev.has('subgroup-size-control');
        if (!sizeControl && !(dev.subgroupSize.min === 32 && dev.subgroupSize.max === 32))
          return { skip: 'subgroups are not 32 wide and cannot be declared so' };
        const out = Tensor.empty([WORKGROUPS * SUBGROUPS * NACC * M * N * (result === 'f32' ? 1 : 0.5)]);
        const run = () =>
          dispatch(
            `bench.sgmatrix.ceiling.${shapeName}.${result}.${sizeControl}`,
            () => ceilingKernel(shapeName, result, sizeControl),
            [out],
            [WORKGROUPS],
            new Uniforms().u32(ITERS).u32(0).u32(0).u32(0),
          );
        return { run, cleanup: () => out.dispose() };
      },
    });
  }
}
