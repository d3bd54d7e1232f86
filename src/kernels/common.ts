// Helpers shared by every kernel file: launch geometry, the pipeline key, WGSL snippets for 16-bit
// unpacking (from weight-formats.ts), and the standard dispatch call.
import { type BufferBinding, Uniforms } from '../engine/device.js';
import { engine, Tensor } from '../engine/tensor.js';

export { Uniforms };

/**
 * The pipeline-cache key of a generated kernel: its family name and every field of the spec its
 * generator reads, in a canonical order. Derived, never hand-written, so two specs that generate
 * different WGSL can never share a pipeline.
 */
export function specKey(family: string, spec: object): string {
  return `${family}:${canonicalJson(spec)}`;
}

function canonicalJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined);
    return `{${entries
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, x]) => `${JSON.stringify(k)}:${canonicalJson(x)}`)
      .join(',')}}`;
  }
  if (typeof v === 'function' || typeof v === 'symbol' || typeof v === 'bigint')
    throw new TypeError(`specKey: a spec holds only plain data, got a ${typeof v}`);
  return JSON.stringify(v);
}

/** Invocations per workgroup for 1-D elementwise kernels. */
export const WG = 256;

/**
 * Workgroup grid for `n` threads of `wg` each. Grids wider than the per-dimension limit fold into
 * y; kernels recover the flat index with `flatIndex` (WGSL below).
 */
export function grid1d(n: number, wg = WG): [number, number] {
  const groups = Math.ceil(n / wg);
  const max = engine().dev.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [Math.max(groups, 1), 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
}

/** WGSL: flat thread index for grids from grid1d (pass num_workgroups and global id). */
export const WGSL_FLAT_INDEX = /* wgsl */ `
fn flat_index(gid: vec3u, nwg: vec3u, wg: u32) -> u32 { return gid.x + gid.y * nwg.x * wg; }
`;

/** WGSL: 16-bit floats packed two per u32 word (the bf16 / f16 weight formats). */
export { WGSL_HALF } from './weight-formats.js';

export function dispatch(
  key: string,
  code: () => string,
  tensors: (Tensor | BufferBinding)[],
  workgroups: [number, number?, number?],
  uniforms?: Uniforms,
): void {
  const dev = engine().dev;
  dev.dispatch({
    pipeline: dev.pipeline(key, code),
    buffers: tensors.map((t) => (t instanceof Tensor ? t.binding : t)),
    uniforms: uniforms?.build(),
    workgroups,
  });
}

export function assertShape(t: Tensor, shape: readonly number[], what: string): void {
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new RangeError(`${what}: expected shape [${shape.join(', ')}], got [${t.shape.join(', ')}]`);
  }
}

export function assertDtype(t: Tensor, dtype: string, what: string): void {
  if (t.dtype !== dtype) throw new TypeError(`${what}: expected dtype ${dtype}, got ${t.dtype}`);
}
