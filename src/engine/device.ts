// The GPU device: adapter selection, optional features, raised limits, pipeline cache, and the
// command recorder that batches many dispatches into one encoder until something needs the CPU.
//
// Platform facts this file encodes (docs/platform.md has the measurements):
// - the object returned by webgpu's create() must stay referenced while the device lives, or the
//   process later crashes in native code: it is a field of GpuDevice, never a temporary;
// - no optional feature is required: subgroups, timestamp-query, shader-f16 and subgroup matrices
//   are enabled when the adapter has them and kernels pick variants from `features` and
//   `subgroupMatrixConfigs`, never from the vendor name;
// - Dawn exposes shader-f16 on NVIDIA (and with it the f16 subgroup-matrix configurations: tensor
//   cores) only with the instance toggle `vulkan_enable_f16_on_nvidia`, which Dawn keeps off by
//   default because some drivers crashed in its f16 conformance tests: we turn it on (it does
//   nothing on other adapters) and FINLLM_F16_ON_NVIDIA=0 turns it off again;
// - Dawn quantizes timestamp queries (65.5 µs steps on an H100) unless `timestamp_quantization` is
//   disabled: it is, so kernel timings are real.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { create, globals } from 'webgpu';
import { InputError, RuntimeFailure } from '../errors.js';
import { formatBytes } from './device-memory.js';
import { withNativeStderrFiltered } from './native-stderr.js';

Object.assign(globalThis, globals);

/** A WGSL compile or pipeline validation failure, with the kernel's name and the compiler's message. */
export class KernelCompileError extends Error {
  override name = 'KernelCompileError';
}
/** A GPU validation / out-of-memory / internal error raised by an error scope or the device. */
export class GpuError extends RuntimeFailure {
  override name = 'GpuError';
}
/** The device was lost (driver reset, out of memory at the driver level, process teardown). */
export class DeviceLostError extends RuntimeFailure {
  override name = 'DeviceLostError';
}

/** Pool bytes when an allocation failed, and the capacity it was measured against. */
export interface MemoryContext {
  liveBytes: number;
  capacityBytes: number | null;
  /** Where the capacity comes from (FINLLM_GPU_MEMORY, nvidia-smi, ...). */
  capacitySource: string | null;
}

/**
 * A buffer did not fit: the pool's capacity (the device's memory) would be exceeded, or the driver
 * refused the allocation. Carries the numbers; the trainer adds what to change.
 */
export class OutOfMemoryError extends RuntimeFailure {
  override name = 'OutOfMemoryError';
  constructor(
    readonly requestedBytes: number,
    readonly context: MemoryContext,
  ) {
    const { liveBytes, capacityBytes, capacitySource } = context;
    super(
      `GPU out of memory: a ${formatBytes(requestedBytes)} buffer did not fit (${formatBytes(liveBytes)} already in use by finllm's buffers` +
        (capacityBytes !== null ? ` of ${formatBytes(capacityBytes)} device memory, from ${capacitySource}` : '') +
        ')',
    );
  }
}

/**
 * A buffer larger than the device's maxBufferSize: the device refuses it whatever memory is free.
 * An out-of-memory error all the same, since what makes it fit is what makes any step fit (a smaller
 * micro-batch, shorter sequences), and the memory estimate on the meta device refuses it alike.
 */
export class BufferTooLargeError extends OutOfMemoryError {
  override name = 'BufferTooLargeError';
  constructor(
    requestedBytes: number,
    readonly maxBufferSize: number,
    context: MemoryContext,
  ) {
    super(requestedBytes, context);
    this.message = `GPU out of memory: a ${formatBytes(requestedBytes)} buffer did not fit (the device's largest buffer, its maxBufferSize, is ${formatBytes(maxBufferSize)})`;
  }
}

/**
 * Refuses a buffer above `limits.maxBufferSize` with BufferTooLargeError, before the device is asked:
 * WebGPU would report it only as an uncaptured validation error and hand back an unusable buffer.
 */
export function checkBufferSize(size: number, limits: GPUSupportedLimits, memory?: MemoryContext): void {
  if (size > limits.maxBufferSize)
    throw new BufferTooLargeError(
      size,
      limits.maxBufferSize,
      memory ?? { liveBytes: 0, capacityBytes: null, capacitySource: null },
    );
}

/**
 * The most bytes one storage binding may cover on a device with these limits (its
 * maxStorageBufferBindingSize). The one rule for "does this fit one binding": every dispatch is
 * checked against it (checkBindings), and code that splits its work to respect it (AdamW's state
 * chunks, the loss head's row chunks, KV caches and decode slots, whose buffers must also fit
 * maxBufferSize) sizes its pieces with it.
 */
export function storageBindingLimit(limits: GPUSupportedLimits): number {
  return limits.maxStorageBufferBindingSize;
}

/**
 * A dispatch binds more bytes at one storage binding than the device's maxStorageBufferBindingSize:
 * the device refuses it whatever memory is free (WebGPU would report only an uncaptured validation
 * error and skip the work). An out-of-memory error all the same, as BufferTooLargeError: the memory
 * estimate on the meta device refuses it alike, and what makes it fit is a smaller micro-batch or
 * shorter sequences for activations, 16-bit weights for a weight, a device with larger bindings.
 */
export class BindingTooLargeError extends OutOfMemoryError {
  override name = 'BindingTooLargeError';
  constructor(
    /** The kernel's pipeline key. */
    readonly kernel: string,
    /** The @binding index in the kernel's WGSL. */
    readonly binding: number,
    bindingBytes: number,
    readonly maxBindingBytes: number,
    /** The named tensor bound (a model weight), when it has a name. */
    readonly weight?: { name: string; dtype?: string },
  ) {
    super(bindingBytes, { liveBytes: 0, capacityBytes: null, capacitySource: null });
    let [size, limit] = [formatBytes(bindingBytes), formatBytes(maxBindingBytes)];
    if (size === limit) [size, limit] = [`${bindingBytes} bytes`, `${maxBindingBytes} bytes`];
    // A weight is bound whole by the kernels that read it: 16-bit storage is what halves an f32 one.
    const what = !weight
      ? size
      : `weight ${weight.name} (${weight.dtype ? `${weight.dtype}, ` : ''}${size}${weight.dtype === 'f32' ? '; 16-bit storage halves it' : ''})`;
    this.message = `GPU out of memory: kernel '${kernel}' binds ${what} at @binding(${binding}), more than the device's largest storage binding (its maxStorageBufferBindingSize, ${limit})`;
  }
}

/** The bytes a binding covers: its size, or (WebGPU's default) the rest of its buffer from its offset. */
export function bindingBytes(b: BufferBinding): number {
  return b.size ?? b.buffer.size - (b.offset ?? 0);
}

/**
 * Refuses a dispatch that binds a storage buffer range above storageBindingLimit with
 * BindingTooLargeError, before the device sees it. Both devices call it on every dispatch they
 * record (the GPU device once per bind group it creates).
 */
export function checkBindings(spec: DispatchSpec, limits: GPUSupportedLimits): void {
  const limit = storageBindingLimit(limits);
  const first = spec.uniforms ? 1 : 0;
  for (let i = 0; i < spec.buffers.length; i++) {
    const b = spec.buffers[i]!;
    const bytes = bindingBytes(b);
    if (bytes > limit)
      throw new BindingTooLargeError(
        spec.pipeline.label,
        first + i,
        bytes,
        limit,
        b.name ? { name: b.name, dtype: b.dtype } : undefined,
      );
  }
}

export type FeatureName =
  | 'subgroups'
  | 'timestamp-query'
  | 'chromium-experimental-subgroup-matrix'
  | 'shader-f16'
  | 'subgroup-size-control';
export const OPTIONAL_FEATURES: readonly FeatureName[] = [
  'subgroups',
  'timestamp-query',
  'chromium-experimental-subgroup-matrix',
  'shader-f16',
  'subgroup-size-control',
];

/**
 * Dawn toggles a user may switch on with FINLLM_DAWN_TOGGLES (comma-separated), for measurement:
 * disable_robustness (Tint stops clamping storage-buffer indices; our kernels bounds-check every
 * access themselves), disable_workgroup_init (workgroup memory is not zeroed at each dispatch; our
 * kernels write every workgroup element they read), dump_shaders (Dawn prints the translated shader
 * code). None is on by default: they are on only where a GPU run has shown that they pay and the
 * test suite passes with them.
 */
export const OPT_IN_TOGGLES = ['disable_robustness', 'disable_workgroup_init', 'dump_shaders'] as const;

/** One subgroup-matrix shape the adapter supports (Dawn's GPUSubgroupMatrixConfig). */
export interface SubgroupMatrixConfig {
  /** Operand element type, e.g. 'f16', 'i8', 'u8'. */
  componentType: string;
  /** Accumulator element type, e.g. 'f32', 'i32'. */
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/** The Dawn instance flags: toggles on and off, plus backend / adapter choice. */
export function instanceFlags(
  env: NodeJS.ProcessEnv = process.env,
  opts: { backend?: string; adapter?: string } = {},
): { flags: string[]; toggles: string[] } {
  const enable = ['allow_unsafe_apis'];
  if (env.FINLLM_F16_ON_NVIDIA !== '0') enable.push('vulkan_enable_f16_on_nvidia');
  for (const t of (env.FINLLM_DAWN_TOGGLES ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean)) {
    if (!(OPT_IN_TOGGLES as readonly string[]).includes(t)) {
      throw new InputError(`unknown toggle '${t}'; expected a comma-separated list of ${OPT_IN_TOGGLES.join(', ')}`, {
        key: 'FINLLM_DAWN_TOGGLES',
      });
    }
    if (!enable.includes(t)) enable.push(t);
  }
  const flags = [`enable-dawn-features=${enable.join(',')}`, 'disable-dawn-features=timestamp_quantization'];
  const backend = opts.backend ?? env.FINLLM_BACKEND;
  const adapter = opts.adapter ?? env.FINLLM_ADAPTER;
  if (backend) flags.push(`backend=${backend}`);
  if (adapter) flags.push(`adapter=${adapter}`);
  return { flags, toggles: [...enable, '-timestamp_quantization'] };
}

/** FINLLM_DISABLE_FEATURES parsed and checked against the optional feature names. */
export function disabledFeatures(value: string | undefined): FeatureName[] {
  const names = (value ?? '')
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  for (const n of names) {
    if (!(OPTIONAL_FEATURES as readonly string[]).includes(n)) {
      throw new InputError(
        `unknown feature '${n}'; expected a comma-separated list of ${OPTIONAL_FEATURES.join(', ')}`,
        { key: 'FINLLM_DISABLE_FEATURES' },
      );
    }
  }
  return names as FeatureName[];
}

/** The adapter's subgroup-matrix configurations, or [] where Dawn or the adapter offers none. */
function readSubgroupMatrixConfigs(info: GPUAdapterInfo): SubgroupMatrixConfig[] {
  const raw = (info as unknown as { subgroupMatrixConfigs?: Iterable<Record<string, unknown>> }).subgroupMatrixConfigs;
  if (!raw || typeof (raw as { [Symbol.iterator]?: unknown })[Symbol.iterator] !== 'function') return [];
  const out: SubgroupMatrixConfig[] = [];
  for (const c of raw) {
    out.push({
      componentType: String(c.componentType),
      resultComponentType: String(c.resultComponentType),
      M: Number(c.M),
      N: Number(c.N),
      K: Number(c.K),
    });
  }
  return out;
}

export interface DeviceOptions {
  /** Dawn backend, e.g. 'vulkan'. Default: FINLLM_BACKEND or Dawn's choice. */
  backend?: string;
  /** Substring of the adapter name to pick, e.g. 'llvmpipe' or 'nvidia'. Default: FINLLM_ADAPTER. */
  adapter?: string;
  /** Features to leave off even when present (tests of the portable fallbacks). Default: FINLLM_DISABLE_FEATURES. */
  disableFeatures?: FeatureName[];
  /**
   * Bind at most this many bytes per storage binding, below what the adapter allows (the device
   * then behaves as one with this maxStorageBufferBindingSize: its kernels split their work to it
   * and a dispatch above it is refused). Default: the adapter's limit.
   */
  maxStorageBufferBindingSize?: number;
}

export interface AdapterDescription {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isSoftware: boolean;
  /**
   * Choose kernels shaped for CPUs (GEMM register tiles without workgroup memory, runtime trip
   * counts): a software adapter, unless FINLLM_FORCE_GPU_SHAPES=1 asks for the GPU-shaped variants
   * (the code GPUs run, tested on a CPU).
   */
  cpuKernels: boolean;
}

/** Whether FINLLM_FORCE_GPU_SHAPES asks for GPU-shaped kernels on a software adapter. */
export function forceGpuShapes(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.FINLLM_FORCE_GPU_SHAPES;
  if (v === undefined || v === '' || v === '0') return false;
  if (v === '1') return true;
  throw new InputError(`FINLLM_FORCE_GPU_SHAPES must be 0 or 1, got '${v}'`, { key: 'FINLLM_FORCE_GPU_SHAPES' });
}

/** One storage or uniform binding of a dispatch. */
export interface BufferBinding {
  buffer: GPUBuffer;
  offset?: number;
  size?: number;
  /** The name of the tensor bound, where it has one (a model weight: its checkpoint name), for messages. */
  name?: string;
  /** Its dtype, with `name`. */
  dtype?: string;
}

export interface DispatchSpec {
  pipeline: GPUComputePipeline;
  /** Storage buffers, bound at @binding(1..n) when `uniforms` is given, else @binding(0..n-1). */
  buffers: BufferBinding[];
  /** Packed uniform block, bound at @binding(0). Use `Uniforms` to build it. */
  uniforms?: ArrayBuffer;
  workgroups: [number, number?, number?];
}

let dropNativeNotices = false;

/**
 * Drop Dawn's two known-harmless "maxDynamic*BuffersPerPipelineLayout artificially reduced" lines
 * from stderr when the adapter is requested (the CLI turns this on; see native-stderr.ts).
 */
export function filterDawnNotices(on: boolean): void {
  dropNativeNotices = on;
}

const UNIFORM_ALIGN = 256;
/** Uniform slots: 4096 blocks of up to 256 bytes, content-addressed (see `uniformSlot`). */
const UNIFORM_BYTES = 1 << 20;
/** Cached bind groups before the cache is emptied (a bound on memory; decode needs a few hundred). */
const BIND_GROUP_CACHE = 16384;
/** Timestamp queries per query set when timing passes (WebGPU caps a query set at 4096). */
const PASS_QUERIES = 4096;

/**
 * What the device did since it was created (monotonic counters; take differences around the work
 * of interest). Benchmarks report them per token or per step to show the CPU-side overhead.
 */
export interface DeviceStats {
  /** Dispatches recorded. */
  dispatches: number;
  /** Compute passes begun (a copy between dispatches ends the pass). */
  passes: number;
  /** queue.submit calls. */
  submits: number;
  /** Bind groups created (one per dispatch unless reused). */
  bindGroups: number;
  /** GPU buffers created (pool growth, staging buffers, uniforms). */
  buffersCreated: number;
  /** queue.writeBuffer calls and bytes (uploads, uniform blocks). */
  writes: number;
  writeBytes: number;
  /** Reads back to the CPU (buffer maps) and bytes read. */
  readbacks: number;
  readBytes: number;
}

export class GpuDevice {
  /** Held for the device's lifetime: see the header comment. */
  private readonly gpuInstance: GPU;
  readonly adapter: GPUAdapter;
  readonly device: GPUDevice;
  readonly features: ReadonlySet<FeatureName>;
  readonly limits: GPUSupportedLimits;
  readonly info: AdapterDescription;
  readonly subgroupSize: { min: number; max: number };
  /**
   * Subgroup-matrix shapes the adapter supports ([] without chromium-experimental-subgroup-matrix,
   * or when FINLLM_DISABLE_FEATURES turns it off). f16 ones mean tensor cores in f16.
   */
  readonly subgroupMatrixConfigs: readonly SubgroupMatrixConfig[];
  /** Dawn toggles this instance was created with (a leading '-' marks one turned off). */
  readonly toggles: readonly string[];
  /** FINLLM_DUMP_WGSL: every pipeline's WGSL is written there, named by its pipeline key. */
  private readonly dumpDir: string | null;
  private readonly pipelines = new Map<string, GPUComputePipeline>();
  private encoder: GPUCommandEncoder | null = null;
  private pass: GPUComputePassEncoder | null = null;
  private uniformBuffer: GPUBuffer;
  private uniformStaging = new Uint8Array(UNIFORM_BYTES);
  private uniformUsed = 0;
  /** Uniform block contents → their slot offset in uniformBuffer. */
  private uniformSlots = new Map<string, number>();
  /** Slots [uniformDirty, uniformUsed) are staged but not yet written to the GPU. */
  private uniformDirty = 0;
  private readonly bindGroups = new Map<string, GPUBindGroup>();
  private readonly objectIds = new WeakMap<object, number>();
  private nextObjectId = 1;
  /** Free MAP_READ staging buffers by size (read() reuses them). */
  private readonly stagingFree = new Map<number, GPUBuffer[]>();
  private lostReason: string | null = null;
  /** Counters since the device was created (see DeviceStats). */
  /**
   * Called with every dispatch as it is recorded (benchmarks capture a step's dispatches and replay
   * them family by family to account its CPU time: bench/profile-step.ts). Null: nothing observes.
   */
  onDispatch: ((spec: DispatchSpec) => void) | null = null;
  readonly stats: DeviceStats = {
    dispatches: 0,
    passes: 0,
    submits: 0,
    bindGroups: 0,
    buffersCreated: 0,
    writes: 0,
    writeBytes: 0,
    readbacks: 0,
    readBytes: 0,
  };
  private passTiming: PassTiming | null = null;

  private constructor(
    gpu: GPU,
    adapter: GPUAdapter,
    device: GPUDevice,
    features: Set<FeatureName>,
    toggles: string[],
    maxBinding?: number,
  ) {
    this.gpuInstance = gpu;
    this.toggles = toggles;
    this.dumpDir = process.env.FINLLM_DUMP_WGSL || null;
    if (this.dumpDir) mkdirSync(this.dumpDir, { recursive: true });
    this.adapter = adapter;
    this.device = device;
    this.features = features;
    // A plain copy: every property read on the native GPUSupportedLimits is a call into Dawn, and
    // dispatch() reads a limit per dispatch.
    const native = device.limits as unknown as Record<string, number>;
    const names = new Set([...Object.keys(native), ...Object.getOwnPropertyNames(Object.getPrototypeOf(native))]);
    const copy: Record<string, number> = {};
    for (const k of names) if (typeof native[k] === 'number') copy[k] = native[k];
    // Dawn grants no limit below WebGPU's default (128 MiB here): a lower one is the engine's own.
    if (maxBinding !== undefined)
      copy.maxStorageBufferBindingSize = Math.min(copy.maxStorageBufferBindingSize!, maxBinding);
    this.limits = Object.freeze(copy) as unknown as GPUSupportedLimits;
    const ai = adapter.info;
    const description = `${ai.vendor} ${ai.architecture} ${ai.device} ${ai.description}`.trim();
    const isSoftware = /llvmpipe|lavapipe|swiftshader|software/i.test(description);
    this.info = {
      vendor: ai.vendor,
      architecture: ai.architecture,
      device: ai.device,
      description: ai.description,
      isSoftware,
      cpuKernels: isSoftware && !forceGpuShapes(),
    };
    const anyInfo = ai as unknown as { subgroupMinSize?: number; subgroupMaxSize?: number };
    this.subgroupSize = { min: anyInfo.subgroupMinSize ?? 0, max: anyInfo.subgroupMaxSize ?? 0 };
    this.subgroupMatrixConfigs = features.has('chromium-experimental-subgroup-matrix')
      ? Object.freeze(readSubgroupMatrixConfigs(ai))
      : [];
    this.uniformBuffer = device.createBuffer({
      size: UNIFORM_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.lost.then((info) => {
      this.lostReason = `${info.reason}: ${info.message}`;
      if (info.reason !== 'destroyed') process.stderr.write(`finllm: GPU device lost (${this.lostReason})\n`);
    });
    device.addEventListener('uncapturederror', (ev) => {
      const e = (ev as GPUUncapturedErrorEvent).error;
      process.stderr.write(`finllm: uncaptured GPU error: ${e.message}\n`);
    });
  }

  static async create(opts: DeviceOptions = {}): Promise<GpuDevice> {
    const { flags, toggles } = instanceFlags(process.env, opts);
    const gpu = create(flags);
    const request = () => gpu.requestAdapter({ powerPreference: 'high-performance' });
    // Dawn prints its notices synchronously inside this call.
    const adapter = await (dropNativeNotices ? withNativeStderrFiltered(request) : request());
    if (!adapter) {
      throw new GpuError(
        'no WebGPU adapter found. finllm needs a Vulkan driver: a GPU driver, or on CPU-only machines Mesa 25 ' +
          'lavapipe (Debian: apt-get install -t bookworm-backports mesa-vulkan-drivers). See README "Requirements".',
      );
    }
    const disabled = new Set(opts.disableFeatures ?? disabledFeatures(process.env.FINLLM_DISABLE_FEATURES));
    const features = new Set<FeatureName>(OPTIONAL_FEATURES.filter((f) => adapter.features.has(f) && !disabled.has(f)));
    const L = adapter.limits;
    const device = await adapter.requestDevice({
      requiredFeatures: [...features] as GPUFeatureName[],
      requiredLimits: {
        maxBufferSize: L.maxBufferSize,
        maxStorageBufferBindingSize: Math.min(
          L.maxStorageBufferBindingSize,
          opts.maxStorageBufferBindingSize ?? Infinity,
        ),
        maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
        maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
        maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
        maxComputeWorkgroupSizeY: L.maxComputeWorkgroupSizeY,
        maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
        maxStorageBuffersPerShaderStage: L.maxStorageBuffersPerShaderStage,
      },
    });
    return new GpuDevice(gpu, adapter, device, features, toggles, opts.maxStorageBufferBindingSize);
  }

  /** Dispatches recorded since the device was created (for tests and benchmarks). */
  get dispatchCount(): number {
    return this.stats.dispatches;
  }
  get submitCount(): number {
    return this.stats.submits;
  }

  get name(): string {
    return [this.info.vendor, this.info.device || this.info.architecture, this.info.description]
      .filter(Boolean)
      .join(' ');
  }

  has(feature: FeatureName): boolean {
    return this.features.has(feature);
  }

  /** Whether the adapter multiplies f16 subgroup matrices into f32 accumulators (tensor cores in f16). */
  hasF16SubgroupMatrix(): boolean {
    return (
      this.has('shader-f16') &&
      this.subgroupMatrixConfigs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32')
    );
  }

  private checkAlive(): void {
    if (this.lostReason) throw new DeviceLostError(`GPU device was lost (${this.lostReason}); restart the process`);
  }

  /**
   * A compute pipeline for `code`, compiled once and cached by `key` (kernel name plus every
   * specialization baked into the source). Compile errors become KernelCompileError with the
   * WGSL messages and line numbers.
   */
  /** The cache keys of every pipeline compiled so far on this device. */
  pipelineKeys(): string[] {
    return [...this.pipelines.keys()];
  }

  pipeline(key: string, code: () => string, entryPoint = 'main'): GPUComputePipeline {
    const cached = this.pipelines.get(key);
    if (cached) return cached;
    this.checkAlive();
    const src = code();
    if (this.dumpDir) writeFileSync(join(this.dumpDir, dumpFileName(key)), `// pipeline key: ${key}\n${src}`);
    this.device.pushErrorScope('validation');
    const module = this.device.createShaderModule({ code: src, label: key });
    const layout = this.explicitLayout(src, key);
    const pipeline = this.device.createComputePipeline({
      layout: layout ?? 'auto',
      compute: { module, entryPoint },
      label: key,
    });
    if (layout) this.dynamicUniform.add(pipeline);
    // Errors are reported asynchronously; a failing pipeline is caught by validatePipelines().
    const scope = this.device.popErrorScope();
    this.pendingValidation.push(
      scope.then(async (err) => {
        if (!err) return;
        const info = await module.getCompilationInfo();
        const lines = info.messages
          .filter((m) => m.type === 'error')
          .map(
            (m) => `  line ${m.lineNum}:${m.linePos}: ${m.message}  | ${src.split('\n')[m.lineNum - 1]?.trim() ?? ''}`,
          );
        this.pipelines.delete(key);
        throw new KernelCompileError(`kernel '${key}' failed to compile:\n${lines.join('\n') || err.message}`);
      }),
    );
    this.pipelines.set(key, pipeline);
    return pipeline;
  }
  private pendingValidation: Promise<void>[] = [];
  /** Pipelines whose uniform block (binding 0) takes a dynamic offset. */
  private readonly dynamicUniform = new WeakSet<GPUComputePipeline>();

  /**
   * The pipeline layout of a kernel whose bindings are all `@group(0) @binding(n) var<uniform|storage…>`
   * (every kernel here), with the uniform block at binding 0 taking a dynamic offset: a bind group
   * then does not depend on where the dispatch's uniform values sit, so a kernel whose uniforms
   * change every call (attention's key count while decoding, the learning rate) reuses its bind
   * group. Null (layout 'auto') for any other shape of bindings.
   */
  private explicitLayout(src: string, key: string): GPUPipelineLayout | null {
    const decl = [
      ...src.matchAll(
        /@group\((\d+)\)\s*@binding\((\d+)\)\s*var<\s*(uniform|storage)\s*(?:,\s*(read_write|read)\s*)?>/g,
      ),
    ];
    if (decl.length === 0 || decl.some((d) => d[1] !== '0')) return null;
    const bindingCount = (src.match(/@binding\(/g) ?? []).length;
    if (bindingCount !== decl.length) return null;
    const uniform = decl.filter((d) => d[3] === 'uniform');
    if (uniform.length > 1 || (uniform.length === 1 && uniform[0]![2] !== '0')) return null;
    const entries: GPUBindGroupLayoutEntry[] = decl.map((d) => ({
      binding: Number(d[2]),
      visibility: GPUShaderStage.COMPUTE,
      buffer:
        d[3] === 'uniform'
          ? { type: 'uniform', hasDynamicOffset: true }
          : { type: d[4] === 'read_write' ? 'storage' : 'read-only-storage' },
    }));
    if (uniform.length === 0) return null;
    const bindGroupLayout = this.device.createBindGroupLayout({ entries, label: key });
    return this.device.createPipelineLayout({ bindGroupLayouts: [bindGroupLayout], label: key });
  }

  /** Waits for pending pipeline compilations and throws the first compile error, if any. */
  async validatePipelines(): Promise<void> {
    const pending = this.pendingValidation;
    this.pendingValidation = [];
    await Promise.all(pending);
  }

  /**
   * A new buffer. With `memory` (the pool's numbers at this moment), a driver out-of-memory error is
   * caught by an error scope and thrown as OutOfMemoryError at the next sync or read (WebGPU
   * reports it asynchronously). A buffer above the device's maxBufferSize throws BufferTooLargeError.
   */
  createBuffer(size: number, usage: number, label?: string, memory?: MemoryContext): GPUBuffer {
    this.checkAlive();
    checkBufferSize(size, this.limits, memory);
    this.stats.buffersCreated++;
    if (!memory) return this.device.createBuffer({ size, usage, label });
    this.device.pushErrorScope('out-of-memory');
    const buf = this.device.createBuffer({ size, usage, label });
    const scope = this.device.popErrorScope();
    this.pendingValidation.push(
      scope.then((err) => {
        if (err) throw new OutOfMemoryError(size, memory);
      }),
    );
    return buf;
  }

  private ensurePass(): GPUComputePassEncoder {
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    if (!this.pass) {
      this.stats.passes++;
      const timestampWrites = this.passTiming?.next();
      this.pass = this.encoder.beginComputePass(timestampWrites ? { timestampWrites } : undefined);
    }
    return this.pass;
  }

  /** The open command encoder with no compute pass open (for copies and timestamped passes). */
  commandEncoder(): GPUCommandEncoder {
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (!this.encoder) this.encoder = this.device.createCommandEncoder();
    return this.encoder;
  }

  private idOf(o: object): number {
    let id = this.objectIds.get(o);
    if (id === undefined) this.objectIds.set(o, (id = this.nextObjectId++));
    return id;
  }

  /**
   * The offset of a uniform block with these contents in the uniform buffer. Blocks are
   * content-addressed and immutable once staged, so a dispatch that repeats (the same kernel on the
   * same shapes, e.g. every decode step) finds its block and, through it, its bind group again.
   * New blocks are written to the GPU in one write just before the next submit. When the buffer is
   * full, the recorded work is submitted and the slots (and the bind groups that point at them)
   * start over: queue order makes overwriting them safe.
   */
  private uniformSlot(data: ArrayBuffer): number {
    const words = new Uint32Array(data);
    let key = '';
    for (let i = 0; i < words.length; i++) key += String.fromCharCode(words[i]! & 0xffff, words[i]! >>> 16);
    let offset = this.uniformSlots.get(key);
    if (offset !== undefined) return offset;
    const bytes = Math.ceil(data.byteLength / UNIFORM_ALIGN) * UNIFORM_ALIGN;
    if (this.uniformUsed + bytes > UNIFORM_BYTES) {
      this.flush();
      this.uniformSlots.clear();
      this.bindGroups.clear();
      this.uniformUsed = 0;
      this.uniformDirty = 0;
    }
    offset = this.uniformUsed;
    this.uniformStaging.set(new Uint8Array(data), offset);
    this.uniformUsed += bytes;
    this.uniformSlots.set(key, offset);
    return offset;
  }

  /** Forgets cached bind groups (after buffers they may reference were destroyed). */
  clearBindGroupCache(): void {
    this.bindGroups.clear();
  }

  /**
   * Records one dispatch into the current pass. Nothing reaches the GPU until flush(). Bind groups
   * are cached by (pipeline, buffer ranges) (and the uniform slot for 'auto'-layout pipelines): a
   * repeated dispatch creates none, whatever its uniform values.
   */
  dispatch(spec: DispatchSpec): void {
    this.checkAlive();
    const [x, y = 1, z = 1] = spec.workgroups;
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max)
      throw new GpuError(
        `dispatch (${x}, ${y}, ${z}) exceeds ${max} workgroups per dimension (${spec.pipeline.label})`,
      );
    if (x === 0 || y === 0 || z === 0) return;
    const uniformOffset = spec.uniforms ? this.uniformSlot(spec.uniforms) : -1;
    // With a dynamic uniform offset the bind group covers [0, size) and the offset comes with setBindGroup.
    const dynamic = spec.uniforms !== undefined && this.dynamicUniform.has(spec.pipeline);
    let key = `${this.idOf(spec.pipeline)}|${dynamic ? `d${spec.uniforms!.byteLength}` : uniformOffset}`;
    for (const b of spec.buffers) key += `|${this.idOf(b.buffer)}:${b.offset ?? 0}:${b.size ?? -1}`;
    let bindGroup = this.bindGroups.get(key);
    if (!bindGroup) {
      checkBindings(spec, this.limits);
      const entries: GPUBindGroupEntry[] = [];
      let binding = 0;
      if (spec.uniforms)
        entries.push({
          binding: binding++,
          resource: { buffer: this.uniformBuffer, offset: dynamic ? 0 : uniformOffset, size: spec.uniforms.byteLength },
        });
      for (const b of spec.buffers)
        entries.push({ binding: binding++, resource: { buffer: b.buffer, offset: b.offset ?? 0, size: b.size } });
      bindGroup = this.device.createBindGroup({ layout: spec.pipeline.getBindGroupLayout(0), entries });
      this.stats.bindGroups++;
      if (this.bindGroups.size >= BIND_GROUP_CACHE) this.bindGroups.clear();
      this.bindGroups.set(key, bindGroup);
    }
    const pass = this.ensurePass();
    pass.setPipeline(spec.pipeline);
    if (dynamic) pass.setBindGroup(0, bindGroup, [uniformOffset]);
    else pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, z);
    this.stats.dispatches++;
    this.onDispatch?.(spec);
  }

  /** Submits everything recorded so far. New uniform blocks are written just before the submit. */
  flush(): void {
    if (!this.encoder) return;
    if (this.pass) {
      this.pass.end();
      this.pass = null;
    }
    if (this.uniformUsed > this.uniformDirty) {
      // Queue order: this write lands after every earlier submit ran and before this one.
      this.queueWrite(
        this.uniformBuffer,
        this.uniformDirty,
        this.uniformStaging,
        this.uniformDirty,
        this.uniformUsed - this.uniformDirty,
      );
      this.uniformDirty = this.uniformUsed;
    }
    this.device.queue.submit([this.encoder.finish()]);
    this.encoder = null;
    this.stats.submits++;
  }

  /** queue.writeBuffer, counted. */
  private queueWrite(
    buffer: GPUBuffer,
    offset: number,
    data: Uint8Array,
    dataOffset = 0,
    size = data.byteLength - dataOffset,
  ): void {
    this.stats.writes++;
    this.stats.writeBytes += size;
    this.device.queue.writeBuffer(buffer, offset, data, dataOffset, size);
  }

  /** Flushes and waits for the GPU to finish; surfaces device loss and GPU errors raised meanwhile. */
  async sync(): Promise<void> {
    this.flush();
    await this.device.queue.onSubmittedWorkDone();
    await this.validatePipelines();
    this.checkAlive();
  }

  /** Copies `size` bytes from `buffer` at `offset` back to the CPU. Flushes pending work. */
  async read(buffer: GPUBuffer, offset: number, size: number): Promise<ArrayBuffer> {
    const padded = Math.ceil(size / 4) * 4;
    const staging = this.stagingBuffer(padded);
    this.commandEncoder().copyBufferToBuffer(buffer, offset, staging, 0, padded);
    this.flush();
    try {
      return await this.mapRead(staging, size);
    } finally {
      this.releaseStaging(staging);
    }
  }

  /**
   * A MAP_READ | COPY_DST buffer of at least `bytes` (power-of-two size classes, reused: readbacks
   * create no buffers once warm). Return it with releaseStaging after its map resolved.
   */
  stagingBuffer(bytes: number): GPUBuffer {
    const size = Math.max(256, 2 ** Math.ceil(Math.log2(bytes)));
    return (
      this.stagingFree.get(size)?.pop() ?? this.createBuffer(size, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST)
    );
  }

  releaseStaging(buf: GPUBuffer): void {
    if (buf.mapState !== 'unmapped') buf.unmap();
    let list = this.stagingFree.get(buf.size);
    if (!list) this.stagingFree.set(buf.size, (list = []));
    if (list.length < 8) list.push(buf);
    else buf.destroy();
  }

  /**
   * Maps a staging buffer whose copy was already submitted and returns its first `size` bytes
   * (counted as one readback); surfaces GPU errors and device loss.
   */
  async mapRead(staging: GPUBuffer, size: number): Promise<ArrayBuffer> {
    this.stats.readbacks++;
    this.stats.readBytes += size;
    await staging.mapAsync(GPUMapMode.READ, 0, Math.ceil(size / 4) * 4);
    const out = staging.getMappedRange(0, Math.ceil(size / 4) * 4).slice(0, size);
    staging.unmap();
    await this.validatePipelines();
    this.checkAlive();
    return out;
  }

  /** Writes CPU data into a buffer, ordered with the recorded work (flushes what was recorded first). */
  write(buffer: GPUBuffer, offset: number, data: ArrayBufferView): void {
    // queue.writeBuffer is ordered against submits, so earlier recorded dispatches must be submitted first.
    this.flush();
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (bytes.byteLength % 4 === 0) {
      this.queueWrite(buffer, offset, bytes);
    } else {
      const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
      padded.set(bytes);
      this.queueWrite(buffer, offset, padded);
    }
  }

  /**
   * GPU time of the work `fn` records, from timestamp queries written at the start and end of one
   * compute pass that holds all of it. Returns null when the adapter has no timestamp-query.
   */
  async timeGpu(fn: () => void): Promise<number | null> {
    if (!this.has('timestamp-query')) {
      fn();
      await this.sync();
      return null;
    }
    this.flush();
    const querySet = this.device.createQuerySet({ type: 'timestamp', count: 2 });
    const resolve = this.device.createBuffer({
      size: 16,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const staging = this.device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    this.encoder = this.device.createCommandEncoder();
    this.pass = this.encoder.beginComputePass({
      timestampWrites: { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 },
    });
    fn();
    const enc = this.commandEncoder();
    enc.resolveQuerySet(querySet, 0, 2, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, staging, 0, 16);
    this.flush();
    await staging.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    resolve.destroy();
    querySet.destroy();
    return Number(t[1]! - t[0]!) / 1e9;
  }

  /**
   * Starts timing every compute pass with timestamp queries (benchmarks: GPU busy time of a stretch
   * of work that spans many passes and submits, e.g. decoding, where wall time minus GPU time is the
   * CPU-side overhead). Returns false when the adapter has no timestamp-query.
   */
  startPassTiming(): boolean {
    if (!this.has('timestamp-query')) return false;
    this.flush();
    this.passTiming?.destroy();
    this.passTiming = new PassTiming(this.device);
    return true;
  }

  /** Stops pass timing: the summed GPU time of the passes since startPassTiming, in seconds. */
  async stopPassTiming(): Promise<{ seconds: number; passes: number } | null> {
    const timing = this.passTiming;
    if (!timing) return null;
    this.flush();
    this.passTiming = null;
    const r = await timing.total(this);
    timing.destroy();
    return r;
  }

  destroy(): void {
    this.flush();
    this.uniformBuffer.destroy();
    for (const list of this.stagingFree.values()) for (const b of list) b.destroy();
    this.stagingFree.clear();
    this.bindGroups.clear();
    this.device.destroy();
    void this.gpuInstance;
  }
}

/**
 * Timestamp pairs around compute passes: query sets of PASS_QUERIES, resolved and summed at the end
 * (end − begin of each pass; passes of one queue do not overlap).
 */
class PassTiming {
  private sets: { querySet: GPUQuerySet; resolve: GPUBuffer }[] = [];
  private used = 0;
  constructor(private readonly device: GPUDevice) {}

  next(): GPUComputePassTimestampWrites {
    if (this.used % PASS_QUERIES === 0) {
      this.sets.push({
        querySet: this.device.createQuerySet({ type: 'timestamp', count: PASS_QUERIES }),
        resolve: this.device.createBuffer({
          size: PASS_QUERIES * 8,
          usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
        }),
      });
    }
    const set = this.sets[this.sets.length - 1]!;
    const i = this.used % PASS_QUERIES;
    this.used += 2;
    return { querySet: set.querySet, beginningOfPassWriteIndex: i, endOfPassWriteIndex: i + 1 };
  }

  /** Resolves every query written (the values stay in the query sets until then) and sums. */
  async total(dev: GpuDevice): Promise<{ seconds: number; passes: number }> {
    let ns = 0n;
    for (let s = 0; s < this.sets.length; s++) {
      const set = this.sets[s]!;
      const written = Math.min(PASS_QUERIES, this.used - s * PASS_QUERIES);
      if (written <= 0) continue;
      dev.commandEncoder().resolveQuerySet(set.querySet, 0, written, set.resolve, 0);
      const raw = new BigUint64Array(await dev.read(set.resolve, 0, written * 8));
      for (let i = 0; i + 1 < raw.length; i += 2) if (raw[i + 1]! > raw[i]!) ns += raw[i + 1]! - raw[i]!;
    }
    return { seconds: Number(ns) / 1e9, passes: this.used / 2 };
  }

  destroy(): void {
    for (const s of this.sets) {
      s.querySet.destroy();
      s.resolve.destroy();
    }
    this.sets = [];
  }
}

/** Builds a uniform block laid out as consecutive 4-byte scalars (u32 / i32 / f32), padded to 16 bytes. */
export class Uniforms {
  private readonly view: DataView;
  private readonly buf: ArrayBuffer;
  private n = 0;
  constructor(capacity = 64) {
    this.buf = new ArrayBuffer(capacity * 4);
    this.view = new DataView(this.buf);
  }
  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`uniform u32 out of range: ${v}`);
    this.view.setUint32(4 * this.n++, v, true);
    return this;
  }
  i32(v: number): this {
    this.view.setInt32(4 * this.n++, v, true);
    return this;
  }
  f32(v: number): this {
    this.view.setFloat32(4 * this.n++, v, true);
    return this;
  }
  build(): ArrayBuffer {
    const bytes = Math.max(16, Math.ceil((this.n * 4) / 16) * 16);
    return this.buf.slice(0, bytes);
  }
}

/**
 * What the engine and the kernels use of a device: GpuDevice's public members. A MetaDevice
 * (meta-device.ts) has the same shape and records nothing on a GPU.
 */
export type Device = Pick<GpuDevice, keyof GpuDevice>;

let defaultDevice: Promise<GpuDevice> | null = null;

/** The process-wide device, created on first use. */
export function getDevice(opts?: DeviceOptions): Promise<GpuDevice> {
  if (!defaultDevice) defaultDevice = GpuDevice.create(opts);
  return defaultDevice;
}

/**
 * The FINLLM_DUMP_WGSL file of a pipeline key: its readable start and a hash of the whole key (a key
 * holds the whole kernel spec, longer than a file name may be). The file's first line is the key.
 */
export function dumpFileName(key: string): string {
  const hash = createHash('sha256').update(key).digest('hex').slice(0, 12);
  return `${key.replace(/[^A-Za-z0-9_.-]+/g, '_').slice(0, 80)}-${hash}.wgsl`;
}
