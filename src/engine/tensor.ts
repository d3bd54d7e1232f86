// Tensors: a shape, a dtype and a pooled GPU buffer, reference counted so views (reshape) share
// storage, and freed deterministically by `tidy` scopes. Reading back to the CPU is explicit.
import { type BufferBinding, type Device, getDevice, type MemoryContext, OutOfMemoryError } from './device.js';
import { type DeviceMemory, deviceMemory } from './device-memory.js';

/**
 * Element types.
 * - f32, i32, u32: 4 bytes per element.
 * - bf16, f16: 16-bit values packed two per u32 word (element 2k in the low half); kernels unpack
 *   with bit shifts (bf16) or unpack2x16float (f16), core WGSL: the device enables shader-f16 where
 *   the adapter has it, but NVIDIA offers it only behind a Dawn toggle that is off by default
 *   (docs/platform.md), so no kernel requires it.
 */
export type DType = 'f32' | 'i32' | 'u32' | 'bf16' | 'f16';

export function bytesPerElement(dtype: DType): number {
  return dtype === 'bf16' || dtype === 'f16' ? 2 : 4;
}

/** Bytes a buffer needs for `numel` elements of `dtype`, rounded up to whole u32 words. */
export function storageBytes(dtype: DType, numel: number): number {
  return Math.max(4, Math.ceil((numel * bytesPerElement(dtype)) / 4) * 4);
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new RangeError(`invalid dimension ${d} in shape [${shape.join(', ')}]`);
    n *= d;
  }
  return n;
}

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/**
 * Size-class caching allocator. Sizes round up to a class (powers of two split in 4 steps), so a
 * freed buffer serves any later request of the same class. Buffers are reused in queue order: a
 * buffer released while earlier recorded work still reads it is safe to hand out again, because
 * every later use is recorded (and so executed) after that work.
 *
 * Capacity: with `capacityBytes` set (the device's memory, see device-memory.ts), a new buffer that
 * would take live + cached bytes past it first returns the cached buffers to the driver, and one
 * that would take the live bytes past it throws OutOfMemoryError instead of asking the driver. A
 * refusal by the driver itself surfaces as OutOfMemoryError at the next sync.
 */
export class BufferPool {
  private readonly free = new Map<number, GPUBuffer[]>();
  liveBytes = 0;
  peakBytes = 0;
  cachedBytes = 0;
  liveBuffers = 0;
  /** Tests set this: every buffer handed out is first filled with NaN, so unwritten outputs show. */
  poisonOnAcquire = false;
  /** Most bytes of live + cached buffers (null: no limit but the driver's). */
  capacityBytes: number | null = null;
  /** Where capacityBytes comes from, for messages. */
  capacitySource: string | null = null;
  constructor(private readonly dev: Device) {}

  /** The numbers an out-of-memory message reports. */
  memoryContext(): MemoryContext {
    return { liveBytes: this.liveBytes, capacityBytes: this.capacityBytes, capacitySource: this.capacitySource };
  }

  static sizeClass(bytes: number): number {
    if (bytes <= 256) return 256;
    const p = 2 ** Math.floor(Math.log2(bytes));
    const step = p / 4;
    return Math.ceil(bytes / step) * step;
  }

  acquire(bytes: number): GPUBuffer {
    const size = BufferPool.sizeClass(bytes);
    const list = this.free.get(size);
    let buf = list?.pop();
    if (buf) this.cachedBytes -= size;
    else {
      const cap = this.capacityBytes;
      if (cap !== null && this.liveBytes + this.cachedBytes + size > cap) this.trim();
      if (cap !== null && this.liveBytes + size > cap) throw new OutOfMemoryError(size, this.memoryContext());
      buf = this.dev.createBuffer(size, STORAGE_USAGE, undefined, this.memoryContext());
    }
    if (this.poisonOnAcquire) this.dev.write(buf, 0, new Uint32Array(size / 4).fill(0x7fc00000));
    this.liveBytes += size;
    this.liveBuffers++;
    if (this.liveBytes > this.peakBytes) this.peakBytes = this.liveBytes;
    return buf;
  }

  release(buf: GPUBuffer): void {
    const size = buf.size;
    this.liveBytes -= size;
    this.liveBuffers--;
    let list = this.free.get(size);
    if (!list) this.free.set(size, (list = []));
    list.push(buf);
    this.cachedBytes += size;
  }

  /** Returns cached (free) buffers to the driver. */
  trim(): void {
    this.dev.flush();
    for (const list of this.free.values()) for (const b of list) b.destroy();
    this.free.clear();
    this.dev.clearBindGroupCache();
    this.cachedBytes = 0;
  }

  resetPeak(): void {
    this.peakBytes = this.liveBytes;
  }

  stats(): { liveBytes: number; peakBytes: number; cachedBytes: number; liveBuffers: number } {
    return {
      liveBytes: this.liveBytes,
      peakBytes: this.peakBytes,
      cachedBytes: this.cachedBytes,
      liveBuffers: this.liveBuffers,
    };
  }
}

/** Storage shared by a tensor and its views; returned to the pool when the last holder releases it. */
class Storage {
  refs = 1;
  constructor(
    readonly buffer: GPUBuffer,
    readonly pool: BufferPool,
  ) {}
  retain(): void {
    if (this.refs <= 0) throw new Error('use of a freed tensor storage');
    this.refs++;
  }
  release(): void {
    if (--this.refs === 0) this.pool.release(this.buffer);
    if (this.refs < 0) throw new Error('tensor storage released twice');
  }
}

/** The engine: one device, its pool, and the tidy-scope stack. */
export class Engine {
  readonly pool: BufferPool;
  /** The device's memory as the platform tells it (null: unknown); the pool's capacity. */
  readonly memory: DeviceMemory | null;
  private scopes: Set<Tensor>[] = [];
  /**
   * An engine on `dev`. `memory` (default: what the platform tells, deviceMemory) sets the pool's
   * capacity; `pool` replaces the plain pool (e.g. one that also records where its peak was).
   */
  constructor(
    readonly dev: Device,
    opts: { memory?: DeviceMemory | null; pool?: BufferPool } = {},
  ) {
    this.pool = opts.pool ?? new BufferPool(dev);
    this.memory = opts.memory === undefined ? deviceMemory(dev.info) : opts.memory;
    if (this.memory) {
      this.pool.capacityBytes = this.memory.availableBytes ?? this.memory.totalBytes;
      this.pool.capacitySource = this.memory.source;
    }
  }
  track(t: Tensor): void {
    this.scopes[this.scopes.length - 1]?.add(t);
  }
  untrack(t: Tensor): void {
    for (let i = this.scopes.length - 1; i >= 0; i--) if (this.scopes[i]!.delete(t)) return;
  }
  pushScope(): void {
    this.scopes.push(new Set());
  }
  popScope(keep: Iterable<Tensor>): void {
    const scope = this.scopes.pop();
    if (!scope) throw new Error('popScope without pushScope');
    const kept = new Set(keep);
    for (const t of scope) {
      if (kept.has(t))
        this.track(t); // hand over to the enclosing scope
      else if (!t.disposed && !t.isKept) t.dispose();
    }
  }
}

let engineSingleton: Engine | null = null;
let enginePromise: Promise<Engine> | null = null;

/** Initializes (once) and returns the process-wide engine. */
export async function initEngine(): Promise<Engine> {
  if (!enginePromise) enginePromise = getDevice().then((d) => (engineSingleton = new Engine(d)));
  return enginePromise;
}

/** The engine, which must already be initialized with `await initEngine()`. */
export function engine(): Engine {
  if (!engineSingleton) throw new Error('finllm engine not initialized: call `await initEngine()` first');
  return engineSingleton;
}

/**
 * Runs `fn` (synchronous) with `e` as the process-wide engine, then restores the engine before it:
 * the tensors `fn` makes live on `e` (e.g. an engine on a MetaDevice, which only counts).
 */
export function withEngine<T>(e: Engine, fn: () => T): T {
  const previous = engineSingleton;
  engineSingleton = e;
  try {
    const result = fn();
    if (result instanceof Promise) throw new Error('withEngine() takes a synchronous function');
    return result;
  } finally {
    engineSingleton = previous;
  }
}

/** Anything that collects tensors: plain arrays, objects, maps, nested. */
export type TensorContainer =
  | Tensor
  | null
  | undefined
  | void
  | number
  | string
  | boolean
  | TensorContainer[]
  | { [k: string]: TensorContainer };

function collect(value: unknown, out: Set<Tensor>, seen = new Set<unknown>()): void {
  if (value instanceof Tensor) out.add(value);
  else if (value && typeof value === 'object' && !seen.has(value)) {
    seen.add(value);
    if (Array.isArray(value)) for (const v of value) collect(v, out, seen);
    else if (value instanceof Map) for (const v of value.values()) collect(v, out, seen);
    else if (Object.getPrototypeOf(value) === Object.prototype)
      for (const v of Object.values(value)) collect(v, out, seen);
  }
}

/**
 * Runs `fn` and disposes every tensor created inside it except those it returns (found in arrays,
 * plain objects and maps) and those marked `keep()`. Scopes nest; returned tensors move to the
 * enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  const e = engine();
  e.pushScope();
  let result: T;
  try {
    result = fn();
  } catch (err) {
    e.popScope([]);
    throw err;
  }
  if (result instanceof Promise) throw new Error('tidy() takes a synchronous function; await outside it');
  const keep = new Set<Tensor>();
  collect(result, keep);
  e.popScope(keep);
  return result;
}

export class Tensor {
  readonly shape: readonly number[];
  readonly dtype: DType;
  readonly numel: number;
  /** Null only for an unbound tensor (see `Tensor.unbound`) until it is bound. */
  private storage: Storage | null;
  disposed = false;
  /** Exempt from tidy scopes (parameters, optimizer state, caches). */
  isKept = false;
  /** Set on leaves that collect gradients (LoRA parameters); never on frozen weights. */
  requiresGrad = false;
  grad: Tensor | null = null;
  /** Autograd node that produced this tensor (null for leaves and no-grad results). */
  gradFn: import('./autograd.js').GradNode | null = null;
  name?: string;

  constructor(shape: readonly number[], dtype: DType, storage?: Storage | null) {
    const e = engine();
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.numel = numelOf(shape);
    this.storage =
      storage === undefined ? new Storage(e.pool.acquire(storageBytes(dtype, this.numel)), e.pool) : storage;
    e.track(this);
  }

  get buffer(): GPUBuffer {
    if (this.disposed)
      throw new Error(`use of a disposed tensor${this.name ? ` '${this.name}'` : ''} [${this.shape.join(', ')}]`);
    if (!this.storage)
      throw new Error(
        `use of an unbound tensor [${this.shape.join(', ')}] (a recomputed saved tensor read outside its backward rule)`,
      );
    return this.storage.buffer;
  }

  /**
   * A tensor with a shape but no storage yet: autograd hands these to backward rules in place of
   * saved tensors it recomputes instead of keeping, and binds them just before the rule runs.
   */
  static unbound(shape: readonly number[], dtype: DType): Tensor {
    return new Tensor(shape, dtype, null);
  }

  /** Makes this (unbound) tensor share `src`'s storage; `src` must have the same byte size. */
  bindStorage(src: Tensor): void {
    if (this.storage) throw new Error('bindStorage on a tensor that already has storage');
    if (src.byteSize !== this.byteSize) throw new RangeError(`bindStorage: ${src} into ${this}`);
    const storage = src.storage!;
    storage.retain();
    this.storage = storage;
  }

  /** Identity of the storage this tensor shares with its views (null while unbound). */
  get storageKey(): object | null {
    return this.storage;
  }

  /** The binding covering exactly this tensor's bytes (pool buffers may be larger), named as the tensor is. */
  get binding(): BufferBinding {
    const b: BufferBinding = { buffer: this.buffer, offset: 0, size: storageBytes(this.dtype, this.numel) };
    if (this.name) {
      b.name = this.name;
      b.dtype = this.dtype;
    }
    return b;
  }

  get byteSize(): number {
    return storageBytes(this.dtype, this.numel);
  }

  static empty(shape: readonly number[], dtype: DType = 'f32'): Tensor {
    return new Tensor(shape, dtype);
  }

  /** Uploads CPU data. 16-bit dtypes take the raw u16 bit patterns (Uint16Array). */
  static from(
    data: Float32Array | Int32Array | Uint32Array | Uint16Array | number[],
    shape: readonly number[],
    dtype?: DType,
  ): Tensor {
    const dt: DType = dtype ?? (data instanceof Int32Array ? 'i32' : data instanceof Uint32Array ? 'u32' : 'f32');
    const n = numelOf(shape);
    if (data.length !== n)
      throw new RangeError(`Tensor.from: ${data.length} values for shape [${shape.join(', ')}] (${n} elements)`);
    let view: ArrayBufferView;
    if (Array.isArray(data))
      view = dt === 'i32' ? Int32Array.from(data) : dt === 'u32' ? Uint32Array.from(data) : Float32Array.from(data);
    else view = data;
    if ((dt === 'bf16' || dt === 'f16') !== view instanceof Uint16Array) {
      throw new TypeError(
        `Tensor.from: dtype ${dt} needs ${dt === 'bf16' || dt === 'f16' ? 'a Uint16Array of raw bits' : 'a 32-bit array'}`,
      );
    }
    const t = new Tensor(shape, dt);
    engine().dev.write(t.buffer, 0, view);
    return t;
  }

  /** A view with another shape over the same storage (no copy). */
  reshape(shape: readonly number[]): Tensor {
    const resolved = [...shape];
    const infer = resolved.indexOf(-1);
    if (infer >= 0) {
      const rest = numelOf(resolved.filter((_, i) => i !== infer));
      resolved[infer] = rest === 0 ? 0 : this.numel / rest;
    }
    if (numelOf(resolved) !== this.numel)
      throw new RangeError(`reshape [${this.shape.join(', ')}] -> [${shape.join(', ')}]: element counts differ`);
    const storage = this.storage;
    if (!storage) throw new Error(`reshape of an unbound tensor [${this.shape.join(', ')}]`);
    storage.retain();
    return new Tensor(resolved, this.dtype, storage);
  }

  /**
   * A view of this tensor's first numel(shape) elements (no copy), e.g. the leading rows of a
   * batch: kernels bind exactly those bytes.
   */
  front(shape: readonly number[]): Tensor {
    if (numelOf(shape) > this.numel)
      throw new RangeError(`front [${shape.join(', ')}] of a [${this.shape.join(', ')}] tensor: too many elements`);
    const storage = this.storage;
    if (!storage) throw new Error(`front of an unbound tensor [${this.shape.join(', ')}]`);
    storage.retain();
    return new Tensor(shape, this.dtype, storage);
  }

  keep(): this {
    this.isKept = true;
    engine().untrack(this);
    return this;
  }

  /**
   * Returns the storage to the pool once no view holds it. `gradFn` stays: a disposed intermediate
   * is still an edge of the autograd graph (the nodes that need its values saved their own views).
   */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.storage?.release();
  }

  /** Reads the tensor back (flushes recorded work). f32 → Float32Array; i32/u32 as such; 16-bit → Uint16Array bits. */
  async read(): Promise<Float32Array | Int32Array | Uint32Array | Uint16Array> {
    const raw = await engine().dev.read(this.buffer, 0, this.numel * bytesPerElement(this.dtype));
    switch (this.dtype) {
      case 'f32':
        return new Float32Array(raw);
      case 'i32':
        return new Int32Array(raw);
      case 'u32':
        return new Uint32Array(raw);
      default:
        return new Uint16Array(raw);
    }
  }

  async toFloat32(): Promise<Float32Array> {
    if (this.dtype !== 'f32') throw new TypeError(`toFloat32 on a ${this.dtype} tensor; convert it first`);
    return (await this.read()) as Float32Array;
  }

  /** The single value of a one-element f32 tensor. */
  async item(): Promise<number> {
    if (this.numel !== 1) throw new RangeError(`item() on a tensor of ${this.numel} elements`);
    return (await this.toFloat32())[0]!;
  }

  toString(): string {
    return `Tensor(${this.name ? this.name + ', ' : ''}[${this.shape.join(', ')}], ${this.dtype})`;
  }
}

/** dst ← src (same byte size), recorded in order with the dispatches around it. */
export function copyInto(dst: Tensor, src: Tensor): void {
  if (dst.byteSize !== src.byteSize) throw new RangeError(`copyInto: ${src} into ${dst}`);
  engine().dev.commandEncoder().copyBufferToBuffer(src.buffer, 0, dst.buffer, 0, dst.byteSize);
}
