// A device that records nothing: buffers are size-only stand-ins, pipelines are never compiled
// (no WGSL is generated), dispatches, copies and uploads do nothing, and reads return zeros. It
// carries a real device's features, limits and adapter description, so the kernels choose the
// same variants, tiles and chunkings (and so make the same buffers) as on that device. An engine
// on it runs the library's code unchanged and its pool counts what that code allocates, like
// PyTorch's meta device: the memory estimate of a training step is such a run (see
// src/pipeline/train/memory.ts). Nothing computed on it has values.
import {
  type AdapterDescription,
  checkBindings,
  checkBufferSize,
  type Device,
  type DeviceStats,
  type DispatchSpec,
  type FeatureName,
  GpuError,
  type MemoryContext,
  type SubgroupMatrixConfig,
} from './device.js';

/** A buffer of the meta device: a size and nothing behind it. */
function metaBuffer(size: number, usage: number, label = ''): GPUBuffer {
  const b = { size, usage, label, mapState: 'unmapped', destroy() {}, unmap() {} };
  return b as unknown as GPUBuffer;
}

/** The encoder handed out for copies: they do nothing. */
const NO_ENCODER = {
  copyBufferToBuffer() {},
  clearBuffer() {},
  resolveQuerySet() {},
} as unknown as GPUCommandEncoder;

export class MetaDevice implements Device {
  readonly features: ReadonlySet<FeatureName>;
  readonly limits: GPUSupportedLimits;
  readonly info: AdapterDescription;
  readonly subgroupSize: { min: number; max: number };
  readonly subgroupMatrixConfigs: readonly SubgroupMatrixConfig[];
  readonly toggles: readonly string[];
  readonly name: string;
  /** Dispatches are never recorded here, so nothing is ever reported to an observer. */
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

  /**
   * The stand-in of `like`: its features, limits (with `limits` overriding some, e.g. a smaller
   * maxStorageBufferBindingSize) and adapter description.
   */
  constructor(like: Device, limits: Partial<Record<keyof GPUSupportedLimits, number>> = {}) {
    this.features = like.features;
    this.limits = Object.freeze({
      ...(like.limits as unknown as Record<string, number>),
      ...limits,
    }) as unknown as GPUSupportedLimits;
    this.info = like.info;
    this.subgroupSize = like.subgroupSize;
    this.subgroupMatrixConfigs = like.subgroupMatrixConfigs;
    this.toggles = like.toggles;
    this.name = `meta (${like.name})`;
  }

  get adapter(): GPUAdapter {
    throw new GpuError('the meta device has no GPU adapter');
  }
  get device(): GPUDevice {
    throw new GpuError('the meta device has no GPU device');
  }
  get dispatchCount(): number {
    return this.stats.dispatches;
  }
  get submitCount(): number {
    return this.stats.submits;
  }
  has(feature: FeatureName): boolean {
    return this.features.has(feature);
  }
  hasF16SubgroupMatrix(): boolean {
    return (
      this.has('shader-f16') &&
      this.subgroupMatrixConfigs.some((c) => c.componentType === 'f16' && c.resultComponentType === 'f32')
    );
  }

  private readonly keys = new Set<string>();
  pipelineKeys(): string[] {
    return [...this.keys];
  }
  /** A stand-in pipeline named by its key; `code` is not called. */
  pipeline(key: string, _code: () => string, _entryPoint = 'main'): GPUComputePipeline {
    this.keys.add(key);
    return { label: key } as unknown as GPUComputePipeline;
  }
  async validatePipelines(): Promise<void> {}

  /** A size-only buffer; one above maxBufferSize is refused as the GPU device refuses it (BufferTooLargeError). */
  createBuffer(size: number, usage: number, label?: string, memory?: MemoryContext): GPUBuffer {
    checkBufferSize(size, this.limits, memory);
    this.stats.buffersCreated++;
    return metaBuffer(size, usage, label);
  }
  commandEncoder(): GPUCommandEncoder {
    return NO_ENCODER;
  }
  clearBindGroupCache(): void {}

  /**
   * Checks the grid and the bindings as the GPU device does (a dispatch it refuses is refused here
   * too, with the same error), then records nothing.
   */
  dispatch(spec: DispatchSpec): void {
    const [x, y = 1, z = 1] = spec.workgroups;
    const max = this.limits.maxComputeWorkgroupsPerDimension;
    if (x > max || y > max || z > max)
      throw new GpuError(
        `dispatch (${x}, ${y}, ${z}) exceeds ${max} workgroups per dimension (${spec.pipeline.label})`,
      );
    // An empty grid is skipped by the GPU device before it binds anything.
    if (x > 0 && y > 0 && z > 0) checkBindings(spec, this.limits);
    this.stats.dispatches++;
  }
  flush(): void {}
  async sync(): Promise<void> {}
  /** Zeros: nothing computed here has values. */
  async read(_buffer: GPUBuffer, _offset: number, size: number): Promise<ArrayBuffer> {
    return new ArrayBuffer(size);
  }
  stagingBuffer(bytes: number): GPUBuffer {
    return metaBuffer(Math.max(256, 2 ** Math.ceil(Math.log2(bytes))), 0);
  }
  releaseStaging(_buf: GPUBuffer): void {}
  async mapRead(_staging: GPUBuffer, size: number): Promise<ArrayBuffer> {
    return new ArrayBuffer(size);
  }
  write(_buffer: GPUBuffer, _offset: number, _data: ArrayBufferView): void {}
  async timeGpu(fn: () => void): Promise<number | null> {
    fn();
    return null;
  }
  startPassTiming(): boolean {
    return false;
  }
  async stopPassTiming(): Promise<{ seconds: number; passes: number } | null> {
    return null;
  }
  destroy(): void {}
}
