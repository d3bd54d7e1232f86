// Subgroup matrices (tensor cores) for the WGSL kernel generators: one template per kernel, emitted
// with either backend.
//
// - 'native': Dawn's chromium_experimental_subgroup_matrix builtins in their current forms
//   (`subgroupMatrixLoad<T, row_major|col_major>(&p, offset, stride)`, `subgroupMatrixStore<...>`,
//   `subgroupMatrixMultiplyAccumulate`, `subgroupMatrixMultiply`, `subgroupMatrixScalarMultiply`).
// - 'emulated': plain WGSL with the same semantics, so a kernel's tiling, staging and indexing run on
//   adapters without subgroup matrices (lavapipe) against a float64 reference. Logical subgroups of
//   LOGICAL_SUBGROUP = 32 invocations: subgroup `local_invocation_index / 32`, lane `% 32`, never the
//   hardware subgroup. Left and right fragments are replicated (every lane holds all M·K or K·N
//   values, row-major, in a function-scope array); a result is distributed (lane owns elements
//   f = s·32 + lane, s < M·N/32, row-major over the M × N matrix). Multiply-accumulate sums the K
//   exact f16 products in f32 and rounds to the result type once per call. Nothing of this layout is
//   observable through the API (no element access), so kernels cannot depend on it.
//
// Semantics both backends share (and kernels rely on):
// - Shapes are spoken M, N, K: left is M × K, right K × N, result M × N. WGSL's type parameters are
//   <T, cols, rows> (left<T, K, M>, right<T, N, K>, result<TR, N, M>); this file does the swap.
// - Element [r, c] of a fragment is at `offset + r·stride + c` (row_major) or `offset + c·stride + r`
//   (col_major), offset and stride counted in elements of the array (scalar arrays of the fragment's
//   component type only: f16 for left/right, the result type for results).
// - A load or store whose footprint leaves the array, or whose stride is below the minor dimension,
//   is a kernel bug. Native robustness would silently redirect it to the array's first tile; the
//   emulation makes it loud instead: such a load yields NaN in every element, such a store writes NaN
//   into the in-bounds part of its footprint, so the reference check fails.
//
// The API (stable: other kernel families build on it):
//   const sg = subgroupMatrices({ mode, shape: { M, N, K }, result: 'f32' | 'f16', sizeControl })
//   sg.enable                        module header (`enable ...;` lines), emit first
//   sg.moduleDecls                   module-scope declarations the hooks need (emit once)
//   sg.attributes                    extra entry-point attributes (`@subgroup_size(32)` with sizeControl)
//   sg.entryParams                   extra entry-point parameters, with a leading ', ' ('' when none)
//   sg.prelude(lid)                  first statements of the entry point: defines `sg_id` (and `sg_lane`)
//   sg.subgroupId / sg.invocations(n)  the subgroup index expression; workgroup size for n subgroups
//   sg.type(role)                    WGSL type of a fragment
//   sg.declare(role, name)           `var` of a zero fragment
//   sg.fill(name, value)             result := value in every element
//   sg.load(role, name, src, offset, stride, major, { assign })   declare (or assign) from an array
//   sg.store(name, dst, offset, stride, major)
//   sg.mma(acc, left, right)         acc := left · right + acc
//   sg.multiply(name, left, right, { assign })   name := left · right
//   sg.scale(name, s)                result := s · result (s a scalar expression)
// A kernel must call the hooks in subgroup-uniform control flow with subgroup-uniform offsets and
// strides (Tint's uniformity analysis enforces it on the native backend).
//
// Which configurations exist is the adapter's business: `subgroupMatrixConfigs` lists them and
// assertOffered checks a kernel's choice against that list before it is used (Dawn's Null backend
// lists none yet compiles any shape, so compile checks pass an explicit configuration).
import type { SubgroupMatrixConfig } from '../engine/device.js';

export type MatrixRole = 'left' | 'right' | 'result';
export type Majorness = 'row_major' | 'col_major';
export type MatrixResultType = 'f32' | 'f16';
export type MatrixMode = 'native' | 'emulated';

/** A matrix shape in GEMM terms: left M × K, right K × N, result M × N. */
export interface MatrixShape {
  M: number;
  N: number;
  K: number;
}

/** The shapes the generators know: NVIDIA's 16×16×16 and 16×8×16, Intel's 8×16×16, Apple's 8×8×8. */
export const MATRIX_SHAPES = {
  m16n16k16: { M: 16, N: 16, K: 16 },
  m16n8k16: { M: 16, N: 8, K: 16 },
  m8n16k16: { M: 8, N: 16, K: 16 },
  m8n8k8: { M: 8, N: 8, K: 8 },
} as const satisfies Record<string, MatrixShape>;
export type MatrixShapeName = keyof typeof MATRIX_SHAPES;
export const MATRIX_SHAPE_NAMES = Object.keys(MATRIX_SHAPES) as MatrixShapeName[];

export function matrixShapeName(s: MatrixShape): MatrixShapeName | null {
  return (
    MATRIX_SHAPE_NAMES.find(
      (n) => MATRIX_SHAPES[n].M === s.M && MATRIX_SHAPES[n].N === s.N && MATRIX_SHAPES[n].K === s.K,
    ) ?? null
  );
}

/** Invocations of one logical subgroup (the emulation's width, and the native kernels' declared size). */
export const LOGICAL_SUBGROUP = 32;

export interface SgMatrixOptions {
  mode: MatrixMode;
  shape: MatrixShape;
  /** Accumulator (result) component type; operands are f16. */
  result: MatrixResultType;
  /**
   * Native only: declare `@subgroup_size(32)` (needs the adapter feature subgroup-size-control), so the
   * hardware subgroups are the logical ones whatever the adapter's default size.
   */
  sizeControl?: boolean;
}

/** An array fragments are loaded from or stored to: a scalar array of the fragment's component type. */
export interface MatrixArray {
  name: string;
  elem: 'f16' | 'f32';
  /** Length in elements; omit for a runtime-sized storage array (arrayLength is used). */
  length?: number;
}

export interface SgMatrix {
  readonly mode: MatrixMode;
  readonly shape: MatrixShape;
  readonly result: MatrixResultType;
  readonly enable: string;
  readonly moduleDecls: string;
  readonly attributes: string;
  readonly entryParams: string;
  readonly subgroupId: string;
  prelude(lid: string): string;
  invocations(subgroups: number): number;
  type(role: MatrixRole): string;
  declare(role: MatrixRole, name: string): string;
  fill(name: string, value: string): string;
  load(
    role: MatrixRole,
    name: string,
    src: MatrixArray,
    offset: string,
    stride: string,
    major: Majorness,
    opts?: { assign?: boolean },
  ): string;
  store(name: string, dst: MatrixArray, offset: string, stride: string, major: Majorness): string;
  mma(acc: string, left: string, right: string): string;
  multiply(name: string, left: string, right: string, opts?: { assign?: boolean }): string;
  scale(name: string, s: string): string;
}

/** [rows, cols] of a fragment. */
export function fragmentDims(role: MatrixRole, s: MatrixShape): [number, number] {
  return role === 'left' ? [s.M, s.K] : role === 'right' ? [s.K, s.N] : [s.M, s.N];
}

/** WGSL component type of a fragment. */
function componentOf(role: MatrixRole, result: MatrixResultType): 'f16' | 'f32' {
  return role === 'result' ? result : 'f16';
}

function checkShape(s: MatrixShape): void {
  for (const d of [s.M, s.N, s.K]) {
    if (!Number.isInteger(d) || d < 1 || d > 64)
      throw new RangeError(`subgroup matrix: bad shape ${s.M}×${s.N}×${s.K}`);
  }
  if ((s.M * s.N) % LOGICAL_SUBGROUP !== 0) {
    throw new RangeError(`subgroup matrix: a ${s.M}×${s.N} result does not split over ${LOGICAL_SUBGROUP} lanes`);
  }
}

export function subgroupMatrices(opts: SgMatrixOptions): SgMatrix {
  const { mode, shape, result } = opts;
  checkShape(shape);
  const { M, N, K } = shape;
  const LSG = LOGICAL_SUBGROUP;
  const checkArray = (role: MatrixRole, a: MatrixArray) => {
    const want = componentOf(role, result);
    if (a.elem !== want)
      throw new TypeError(`subgroup matrix: a ${role} fragment of ${want} cannot use the ${a.elem} array '${a.name}'`);
  };
  const nativeType = (role: MatrixRole) =>
    role === 'left'
      ? `subgroup_matrix_left<f16, ${K}, ${M}>`
      : role === 'right'
        ? `subgroup_matrix_right<f16, ${N}, ${K}>`
        : `subgroup_matrix_result<${result}, ${N}, ${M}>`;

  if (mode === 'native') {
    const sizeControl = !!opts.sizeControl;
    return {
      mode,
      shape,
      result,
      enable: `enable f16;\nenable chromium_experimental_subgroup_matrix;\n${sizeControl ? 'enable subgroup_size_control;\n' : ''}`,
      moduleDecls: '',
      attributes: sizeControl ? ` @subgroup_size(${LSG})` : '',
      entryParams: ', @builtin(subgroup_id) sg_hw_id: u32',
      subgroupId: 'sg_id',
      prelude: () => 'let sg_id = sg_hw_id;',
      invocations: (n) => n * LSG,
      type: nativeType,
      declare: (role, name) => `var ${name}: ${nativeType(role)};`,
      fill: (name, value) => `${name} = ${nativeType('result')}(${result}(${value}));`,
      load: (role, name, src, offset, stride, major, o = {}) => {
        checkArray(role, src);
        return `${o.assign ? '' : 'let '}${name} = subgroupMatrixLoad<${nativeType(role)}, ${major}>(&${src.name}, u32(${offset}), u32(${stride}));`;
      },
      store: (name, dst, offset, stride, major) => {
        checkArray('result', dst);
        return `subgroupMatrixStore<${major}>(&${dst.name}, u32(${offset}), ${name}, u32(${stride}));`;
      },
      mma: (acc, left, right) => `${acc} = subgroupMatrixMultiplyAccumulate(${left}, ${right}, ${acc});`,
      multiply: (name, left, right, o = {}) =>
        `${o.assign ? '' : 'var '}${name} = subgroupMatrixMultiply<${result}>(${left}, ${right});`,
      scale: (name, s) => `${name} = subgroupMatrixScalarMultiply(${name}, ${result}(${s}));`,
    };
  }

  // Emulated. Owned result elements per lane:
  const ES = (M * N) / LSG;
  const emuType = (role: MatrixRole) => {
    const [r, c] = fragmentDims(role, shape);
    return role === 'result' ? `array<${result}, ${ES}>` : `array<f16, ${r * c}>`;
  };
  const nan = (t: 'f16' | 'f32') => (t === 'f16' ? 'bitcast<vec2<f16>>(sgm_nan_bits).x' : 'bitcast<f32>(sgm_nan_bits)');
  const len = (a: MatrixArray) => (a.length !== undefined ? `${a.length}u` : `arrayLength(&${a.name})`);
  /** Statements binding sgm_off, sgm_st and sgm_ok (footprint in bounds, stride not below the minor dimension). */
  const footprint = (role: MatrixRole, a: MatrixArray, offset: string, stride: string, major: Majorness) => {
    const [rows, cols] = fragmentDims(role, shape);
    const [majorDim, minorDim] = major === 'row_major' ? [rows, cols] : [cols, rows];
    return `let sgm_off = u32(${offset}); let sgm_st = u32(${stride});
    let sgm_ok = sgm_st >= ${minorDim}u && sgm_off + sgm_st * ${majorDim - 1}u + ${minorDim}u <= ${len(a)};`;
  };
  const addr = (major: Majorness) =>
    major === 'row_major' ? 'sgm_off + sgm_r * sgm_st + sgm_c' : 'sgm_off + sgm_c * sgm_st + sgm_r';
  /** Loop over the elements this lane holds: replicated (all) for left/right, owned ones for a result. */
  const forElements = (role: MatrixRole, body: string) => {
    const [rows, cols] = fragmentDims(role, shape);
    if (role === 'result') {
      return `for (var sgm_s = 0u; sgm_s < ${ES}u; sgm_s++) {
      let sgm_f = sgm_s * ${LSG}u + sg_lane; let sgm_r = sgm_f / ${cols}u; let sgm_c = sgm_f % ${cols}u; let sgm_e = sgm_s;
      ${body}
    }`;
    }
    return `for (var sgm_e = 0u; sgm_e < ${rows * cols}u; sgm_e++) {
      let sgm_r = sgm_e / ${cols}u; let sgm_c = sgm_e % ${cols}u;
      ${body}
    }`;
  };
  const mulLoop = (
    name: string,
    left: string,
    right: string,
    accumulate: boolean,
  ) => `for (var sgm_s = 0u; sgm_s < ${ES}u; sgm_s++) {
      let sgm_f = sgm_s * ${LSG}u + sg_lane; let sgm_r = sgm_f / ${N}u; let sgm_c = sgm_f % ${N}u;
      var sgm_t = 0.0;
      for (var sgm_k = 0u; sgm_k < ${K}u; sgm_k++) { sgm_t += f32(${left}[sgm_r * ${K}u + sgm_k]) * f32(${right}[sgm_k * ${N}u + sgm_c]); }
      ${name}[sgm_s] = ${result}(${accumulate ? `f32(${name}[sgm_s]) + ` : ''}sgm_t);
    }`;
  return {
    mode,
    shape,
    result,
    enable: 'enable f16;\n',
    // One word that is a NaN as f32 and, in its low half, as f16 (a private variable: a constant
    // expression may not evaluate to NaN).
    moduleDecls: 'var<private> sgm_nan_bits: u32 = 0x7fc07e00u;\n',
    attributes: '',
    entryParams: '',
    subgroupId: 'sg_id',
    prelude: (lid) => `let sg_id = (${lid}) / ${LSG}u; let sg_lane = (${lid}) % ${LSG}u;`,
    invocations: (n) => n * LSG,
    type: emuType,
    declare: (role, name) => `var ${name}: ${emuType(role)};`,
    fill: (name, value) => `for (var sgm_s = 0u; sgm_s < ${ES}u; sgm_s++) { ${name}[sgm_s] = ${result}(${value}); }`,
    load: (role, name, src, offset, stride, major, o = {}) => {
      checkArray(role, src);
      const t = componentOf(role, result);
      return `${o.assign ? '' : `var ${name}: ${emuType(role)};\n    `}{
    ${footprint(role, src, offset, stride, major)}
    ${forElements(
      role,
      `let sgm_i = ${addr(major)};
      ${name}[sgm_e] = select(${nan(t)}, ${src.name}[min(sgm_i, ${len(src)} - 1u)], sgm_ok);`,
    )}
    }`;
    },
    store: (name, dst, offset, stride, major) => {
      checkArray('result', dst);
      return `{
    ${footprint('result', dst, offset, stride, major)}
    ${forElements(
      'result',
      `let sgm_i = ${addr(major)};
      if (sgm_i < ${len(dst)}) { ${dst.name}[sgm_i] = select(${nan(result)}, ${name}[sgm_e], sgm_ok); }`,
    )}
    }`;
    },
    mma: (acc, left, right) => `{
    ${mulLoop(acc, left, right, true)}
    }`,
    multiply: (name, left, right, o = {}) => `${o.assign ? '' : `var ${name}: ${emuType('result')};\n    `}{
    ${mulLoop(name, left, right, false)}
    }`,
    scale: (name, s) =>
      `for (var sgm_s = 0u; sgm_s < ${ES}u; sgm_s++) { ${name}[sgm_s] = ${name}[sgm_s] * ${result}(${s}); }`,
  };
}

/** A subgroup-matrix configuration a kernel asks for: f16 operands, f32 or f16 results. */
export interface MatrixConfig extends MatrixShape {
  result: MatrixResultType;
}

/** Whether the adapter lists this configuration (f16 operands). */
export function isOffered(cfg: MatrixConfig, offered: readonly SubgroupMatrixConfig[]): boolean {
  return offered.some(
    (c) =>
      c.componentType === 'f16' &&
      c.resultComponentType === cfg.result &&
      c.M === cfg.M &&
      c.N === cfg.N &&
      c.K === cfg.K,
  );
}

/** Throws unless the adapter lists this configuration (kernels check before they are built). */
export function assertOffered(cfg: MatrixConfig, offered: readonly SubgroupMatrixConfig[], what = 'kernel'): void {
  if (!isOffered(cfg, offered)) {
    const list =
      offered.map((c) => `${c.componentType}→${c.resultComponentType} ${c.M}×${c.N}×${c.K}`).join(', ') || 'none';
    throw new RangeError(
      `${what}: subgroup-matrix configuration f16→${cfg.result} ${cfg.M}×${cfg.N}×${cfg.K} is not offered by this adapter (it offers: ${list})`,
    );
  }
}

/** The known shapes the adapter offers with f16 operands and `result` accumulators, in MATRIX_SHAPES order. */
export function offeredShapes(offered: readonly SubgroupMatrixConfig[], result: MatrixResultType): MatrixShapeName[] {
  return MATRIX_SHAPE_NAMES.filter((n) => isOffered({ ...MATRIX_SHAPES[n], result }, offered));
}
