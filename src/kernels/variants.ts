// Every kernel variant the generators can produce, enumerated offline from their variant tables,
// and a compiler on Dawn's Null backend for the ones this machine cannot run.
//
// Each generator is declared as a kernel family (kernelFamily) with its variant table; `npm run
// check:kernels` (bench/check-kernels.ts) and the tests compile each native variant on the Null
// backend (Tint type checks, uniformity analysis, deprecation warnings: zero errors and zero warnings
// required) and run each emulated variant on the local adapter against its float64 reference.
//
// The Null backend (webgpu's dawn.node with allow_unsafe_apis) offers subgroups, shader-f16,
// subgroup-size-control and chromium-experimental-subgroup-matrix, executes nothing, lists no
// subgroup-matrix configurations (kernels assert their configuration in TypeScript), caps workgroup
// memory at 16 KiB, storage buffers at 8 per stage, and has subgroups of up to 128 invocations:
// kernels above the caps, or whose workgroup is not a multiple of that size without @subgroup_size,
// are checked at shader-module level (getCompilationInfo) instead of by creating a pipeline.
import { create } from 'webgpu';
import type { BufferBinding, Uniforms } from '../engine/device.js';
import type { Tensor } from '../engine/tensor.js';
import { dispatch, specKey } from './common.js';

export type VariantMode = 'native' | 'emulated' | 'portable';

export interface KernelVariant {
  family: string;
  /** Unique within the family; names the variant in reports. */
  name: string;
  mode: VariantMode;
  /** The kernel's pipeline cache key (derived from its spec). */
  key: string;
  code(): string;
  /** Workgroup memory the kernel declares, in bytes (decides pipeline vs module-level check on Null). */
  workgroupBytes: number;
  /** Storage buffers the kernel binds, when it may bind more than Null's 8 (same role as workgroupBytes). */
  storageBuffers?: number;
  /** The family's own description of the variant (what its verifier needs to run it). */
  spec: unknown;
  /**
   * Checked at shader-module level only: its pipeline needs a device property Null lacks (a subgroup
   * matrix kernel without @subgroup_size needs subgroups of exactly 32; Null's reach 128).
   */
  moduleOnly?: boolean;
}

const families = new Map<string, () => KernelVariant[]>();

/** Every registered variant, family by family in registration order. */
export function kernelVariants(): KernelVariant[] {
  const out: KernelVariant[] = [];
  for (const list of families.values()) out.push(...list());
  return out;
}

/** One row of a family's variant table, for a variant that needs more than its spec to be named or verified. */
export interface VariantRow<S extends object> {
  /** What dispatch takes: the key and code come from it. */
  spec: S;
  /** The variant's name in reports. */
  name: string;
  /** What the family's verifier needs to run it (KernelVariant.spec; default: the spec). */
  check?: unknown;
}

interface KernelFamilyBase<S extends object> {
  /** The family's name: the prefix of its pipeline cache keys and its name in reports. */
  family: string;
  /** The WGSL of one spec. */
  code: (spec: S) => string;
  /** How a variant is named in reports (default: its canonical spec). */
  name?: (spec: S) => string;
  /** Workgroup memory the kernel declares, in bytes (default 0). */
  workgroupBytes?: (spec: S) => number;
  /**
   * 'portable' (default) for plain WGSL; 'native' for kernels that need optional features; a
   * function when one family holds variants of several modes (each spec says which it is).
   */
  mode?: VariantMode | ((spec: S) => VariantMode);
  /** Whether a spec's variant is checked at shader-module level only (KernelVariant.moduleOnly). */
  moduleOnly?: (spec: S) => boolean;
}

/** A kernel generator and its variant table (see kernelFamily): a list of specs, or of rows. */
export type KernelFamilyDef<S extends object> = KernelFamilyBase<S> &
  (
    | {
        /** Every spec callers can launch (the variant table that check:kernels compiles). */
        specs: () => readonly S[];
        rows?: undefined;
      }
    | {
        /** The variant table, when its variants carry names or verifier inputs their specs do not hold. */
        rows: () => readonly VariantRow<S>[];
        specs?: undefined;
      }
  );

/** A registered kernel family: dispatch and the variant enumeration both derive key and code from the spec. */
export interface KernelFamily<S extends object> {
  readonly family: string;
  /** The pipeline cache key of a spec: specKey(family, spec). */
  key(spec: S): string;
  code(spec: S): string;
  /** Launches the spec's kernel (compiled once per key) over the buffers. */
  dispatch(
    spec: S,
    tensors: (Tensor | BufferBinding)[],
    workgroups: [number, number?, number?],
    uniforms?: Uniforms,
  ): void;
  /** The family's registered variants (its part of kernelVariants()). */
  variants(): KernelVariant[];
}

/**
 * Declares a kernel family whose launches and whose registered variants come from one place: the
 * cache key is derived from the complete spec, the code from the same spec, and the variant table
 * (`specs`, or `rows` naming each spec) is what `kernelVariants()` enumerates. A family without
 * parameters has one spec, `{}`.
 */
export function kernelFamily<S extends object>(def: KernelFamilyDef<S>): KernelFamily<S> {
  if (families.has(def.family)) throw new Error(`kernel family '${def.family}' is declared twice`);
  // The table is constant: built on first listing, then reused.
  let table: KernelVariant[] | null = null;
  const fam: KernelFamily<S> = {
    family: def.family,
    key: (spec) => specKey(def.family, spec),
    code: (spec) => def.code(spec),
    dispatch(spec, tensors, workgroups, uniforms) {
      dispatch(fam.key(spec), () => def.code(spec), tensors, workgroups, uniforms);
    },
    variants: () => (table ??= listVariants()),
  };
  const rows = (): readonly VariantRow<S>[] =>
    def.rows ? def.rows() : def.specs().map((spec) => ({ spec, name: def.name?.(spec) ?? specKey('', spec).slice(1) }));
  const listVariants = (): KernelVariant[] =>
    rows().map((row) => {
      const { spec } = row;
      const code = () => def.code(spec);
      const moduleOnly = def.moduleOnly?.(spec) ?? false;
      return {
        family: def.family,
        name: row.name,
        mode: typeof def.mode === 'function' ? def.mode(spec) : (def.mode ?? 'portable'),
        key: fam.key(spec),
        code,
        workgroupBytes: def.workgroupBytes?.(spec) ?? 0,
        // Counted from the WGSL only when asked (listing variants generates no code).
        get storageBuffers() {
          return (code().match(/var<storage/g) ?? []).length;
        },
        spec: 'check' in row ? row.check : spec,
        ...(moduleOnly ? { moduleOnly } : {}),
      };
    });
  families.set(def.family, fam.variants);
  return fam;
}

export interface NullCompiler {
  readonly device: GPUDevice;
  /** Compiles `code`; returns every error and warning (empty: clean). */
  check(
    code: string,
    opts?: { workgroupBytes?: number; storageBuffers?: number; moduleOnly?: boolean; label?: string },
  ): Promise<string[]>;
  destroy(): void;
}

const NULL_FEATURES = ['subgroups', 'shader-f16', 'subgroup-size-control', 'chromium-experimental-subgroup-matrix'];

/** A device on Dawn's Null backend with every feature subgroup-matrix kernels use. */
export async function nullCompiler(): Promise<NullCompiler> {
  const gpu = create(['backend=null', 'enable-dawn-features=allow_unsafe_apis']);
  const adapter = await gpu.requestAdapter();
  if (!adapter) throw new Error("Dawn's Null backend gave no adapter");
  const missing = NULL_FEATURES.filter((f) => !adapter.features.has(f));
  if (missing.length) throw new Error(`Dawn's Null adapter lacks ${missing.join(', ')}`);
  const device = await adapter.requestDevice({
    requiredFeatures: NULL_FEATURES as GPUFeatureName[],
    requiredLimits: { maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize },
  });
  const cap = device.limits.maxComputeWorkgroupStorageSize;
  const maxStorage = device.limits.maxStorageBuffersPerShaderStage;
  // Held together for the device's lifetime: the instance must outlive every object made from it.
  const held = { gpu, adapter, device };
  return {
    device,
    async check(code, opts = {}) {
      const problems: string[] = [];
      device.pushErrorScope('validation');
      const module = device.createShaderModule({ code, label: opts.label });
      const info = await module.getCompilationInfo();
      for (const m of info.messages) {
        if (m.type === 'error' || m.type === 'warning')
          problems.push(
            `${m.type} line ${m.lineNum}:${m.linePos}: ${m.message.split('\n')[0]}  | ${code.split('\n')[m.lineNum - 1]?.trim() ?? ''}`,
          );
      }
      const moduleError = await device.popErrorScope();
      if (moduleError && problems.length === 0) problems.push(moduleError.message.split('\n')[0]!);
      if (
        problems.length === 0 &&
        !opts.moduleOnly &&
        (opts.workgroupBytes ?? 0) <= cap &&
        (opts.storageBuffers ?? 0) <= maxStorage
      ) {
        device.pushErrorScope('validation');
        try {
          await device.createComputePipelineAsync({
            layout: 'auto',
            compute: { module, entryPoint: 'main' },
            label: opts.label,
          });
        } catch (e) {
          problems.push(`pipeline: ${(e as Error).message.split('\n')[0]}`);
        }
        const err = await device.popErrorScope();
        if (err) problems.push(`pipeline: ${err.message.split('\n')[0]}`);
      }
      return problems;
    },
    destroy() {
      held.device.destroy();
      void held.gpu;
    },
  };
}
