// The device's largest storage binding (its maxStorageBufferBindingSize): a dispatch that binds more
// is refused by the engine with one line naming the kernel, the binding, the size and the limit,
// before Dawn sees it (Dawn would report only an uncaptured validation error and skip the work), by
// the GPU device and by the meta device standing in for it alike; a binding of exactly the limit runs.
import { afterAll, describe, expect, it } from 'vitest';
import { reportError } from '../../src/cli/common.js';
import {
  BindingTooLargeError,
  type BufferBinding,
  type Device,
  GpuDevice,
  OutOfMemoryError,
  storageBindingLimit,
} from '../../src/engine/device.js';
import { MetaDevice } from '../../src/engine/meta-device.js';
import { Engine, engine, Tensor, withEngine } from '../../src/engine/tensor.js';
import { useEngine } from '../helpers/index.js';

useEngine();

const KEY = 'test.binding-limit';
/** Y[0] = X[last] (X's length is the bound range's): one thread, so a binding of hundreds of MiB costs nothing to run. */
const CODE = () => /* wgsl */ `
struct P { _a: u32, _b: u32, _c: u32, _d: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> Y: array<f32>;
@group(0) @binding(2) var<storage, read> X: array<f32>;
@compute @workgroup_size(1)
fn main() { Y[0] = X[arrayLength(&X) - 1u]; }`;

const STORAGE = () => GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Records the kernel on `dev` binding `y` and `x`; the error it throws, or null. */
function dispatch(dev: Device, y: BufferBinding, x: BufferBinding): unknown {
  try {
    dev.dispatch({
      pipeline: dev.pipeline(KEY, CODE),
      buffers: [y, x],
      uniforms: new ArrayBuffer(16),
      workgroups: [1],
    });
    return null;
  } catch (e) {
    return e;
  }
}

/** Every uncaptured GPU error `dev` reports while `fn` runs and the device syncs after it. */
async function uncapturedDuring(dev: GpuDevice, fn: () => void): Promise<string[]> {
  const seen: string[] = [];
  const listen = (ev: Event) => seen.push((ev as GPUUncapturedErrorEvent).error.message);
  dev.device.addEventListener('uncapturederror', listen);
  try {
    fn();
    await dev.sync();
  } finally {
    dev.device.removeEventListener('uncapturederror', listen);
  }
  return seen;
}

const message = (kernel: string, binding: number, size: string, limit: string) =>
  `GPU out of memory: kernel '${kernel}' binds ${size} at @binding(${binding}), more than the device's largest storage binding (its maxStorageBufferBindingSize, ${limit})`;

describe("the device's largest storage binding", () => {
  it("the GPU device at its adapter's limit: a binding one word above it is refused with one line and Dawn reports nothing; one of exactly the limit runs", async (ctx) => {
    const dev = engine().dev as GpuDevice;
    const limit = storageBindingLimit(dev.limits);
    // A binding can only exceed the limit from a buffer larger than it.
    if (limit + 256 > dev.limits.maxBufferSize) ctx.skip('the adapter binds whole buffers of its largest size');
    const big = dev.createBuffer(limit + 256, STORAGE());
    const y = dev.createBuffer(256, STORAGE());
    try {
      const bindGroups = dev.stats.bindGroups;
      let err: unknown = null;
      const over = await uncapturedDuring(dev, () => {
        err = dispatch(dev, { buffer: y }, { buffer: big, offset: 0, size: limit + 4 });
      });
      expect(err).toBeInstanceOf(BindingTooLargeError);
      expect(err).toBeInstanceOf(OutOfMemoryError); // what the trainer and the batch-size trial catch
      expect((err as Error).message).toBe(message(KEY, 2, `${limit + 4} bytes`, `${limit} bytes`));
      expect((err as BindingTooLargeError).binding).toBe(2);
      expect(over).toEqual([]);
      expect(dev.stats.bindGroups).toBe(bindGroups); // refused before a bind group was made
      // The whole buffer (no size: the rest of it from the offset) is the same question.
      expect(dispatch(dev, { buffer: y }, { buffer: big })).toBeInstanceOf(BindingTooLargeError);

      // Exactly the limit, at an offset: Dawn accepts it and the kernel sees the range's last word.
      dev.write(big, 256 + limit - 4, new Float32Array([7.25]));
      dev.write(y, 0, new Float32Array([Number.NaN]));
      const at = await uncapturedDuring(dev, () => {
        expect(dispatch(dev, { buffer: y }, { buffer: big, offset: 256, size: limit })).toBeNull();
      });
      expect(at).toEqual([]);
      expect(new Float32Array(await dev.read(y, 0, 4))[0]).toBe(7.25);
    } finally {
      big.destroy();
      y.destroy();
    }
  });

  describe('a GPU device created with a lower maxStorageBufferBindingSize', () => {
    let small: GpuDevice | null = null;
    afterAll(() => small?.destroy());

    it('reports it, refuses a dispatch above it with the same error and runs one at it', async () => {
      const limit = 1 << 20;
      small = await GpuDevice.create({ maxStorageBufferBindingSize: limit });
      const dev = small;
      expect(dev.limits.maxStorageBufferBindingSize).toBe(limit);
      expect(storageBindingLimit(dev.limits)).toBe(limit);
      const x = dev.createBuffer(2 * limit, STORAGE());
      const y = dev.createBuffer(256, STORAGE());
      const refused = await uncapturedDuring(dev, () => {
        const err = dispatch(dev, { buffer: y }, { buffer: x, offset: 256, size: limit + 256 });
        expect(err).toBeInstanceOf(BindingTooLargeError);
        expect((err as Error).message).toBe(message(KEY, 2, '1048832 bytes', '1048576 bytes'));
      });
      expect(refused).toEqual([]);
      dev.write(x, 256 + limit - 4, new Float32Array([-3.5]));
      dev.write(y, 0, new Float32Array([Number.NaN]));
      const ran = await uncapturedDuring(dev, () => {
        expect(dispatch(dev, { buffer: y }, { buffer: x, offset: 256, size: limit })).toBeNull();
      });
      expect(ran).toEqual([]);
      expect(new Float32Array(await dev.read(y, 0, 4))[0]).toBe(-3.5);
      // Its meta device (as the memory estimate builds it) has the same limit and says the same.
      const meta = new MetaDevice(dev);
      const big = meta.createBuffer(2 * limit, STORAGE());
      const err = dispatch(
        meta,
        { buffer: meta.createBuffer(256, STORAGE()) },
        { buffer: big, offset: 256, size: limit + 256 },
      );
      expect((err as Error).message).toBe(message(KEY, 2, '1048832 bytes', '1048576 bytes'));
    });
  });

  it('names a weight it binds (what 16-bit storage halves); a command that meets it exits with code 2 and the one line, no stack trace', () => {
    const embedding = 'embedding:{"tType":"f32"}';
    const err = new BindingTooLargeError(embedding, 2, 2101346304, 2 ** 30, {
      name: 'model.embed_tokens.weight',
      dtype: 'f32',
    });
    const line = `GPU out of memory: kernel '${embedding}' binds weight model.embed_tokens.weight (f32, 1.96 GiB; 16-bit storage halves it) at @binding(2), more than the device's largest storage binding (its maxStorageBufferBindingSize, 1.00 GiB)`;
    expect(err.message).toBe(line);
    expect(reportError(err)).toEqual({ exitCode: 2, message: line });
    const bf16 = new BindingTooLargeError(embedding, 2, 2101346304 / 2, 2 ** 29, {
      name: 'model.embed_tokens.weight',
      dtype: 'bf16',
    });
    expect(bf16.message).toContain(' binds weight model.embed_tokens.weight (bf16, 1002.0 MiB) at @binding(2), ');

    // A named tensor's binding carries its name to the message, on the GPU device and the meta device alike.
    const meta = new MetaDevice(engine().dev, { maxStorageBufferBindingSize: 1 << 20 });
    const t = withEngine(new Engine(meta, { memory: null }), () => {
      const w = Tensor.empty([(1 << 18) + 1], 'f32');
      w.name = 'lm_head.weight';
      return w;
    });
    expect(dispatch(meta, { buffer: meta.createBuffer(256, STORAGE()) }, t.binding)).toMatchObject({
      message: message(KEY, 2, 'weight lm_head.weight (f32, 1048580 bytes; 16-bit storage halves it)', '1048576 bytes'),
    });
  });

  it('the meta device refuses what the GPU device refuses, with the same error, binding by binding', () => {
    const real = engine().dev;
    const limit = storageBindingLimit(real.limits);
    const meta = new MetaDevice(real);
    const y = meta.createBuffer(256, STORAGE());
    // Sizes the GPU device refuses (its maxBufferSize permitting a buffer above the binding limit).
    if (limit + 256 <= real.limits.maxBufferSize) {
      const err = dispatch(meta, { buffer: y }, { buffer: meta.createBuffer(limit + 256, STORAGE()) });
      expect(err).toBeInstanceOf(BindingTooLargeError);
      expect((err as Error).message).toBe(message(KEY, 2, `${limit + 256} bytes`, `${limit} bytes`));
    }
    // With a lower limit, as the estimate asks for one: the first binding above it is named, with
    // the binding numbers of the WGSL (storage from 1 with a uniform block, from 0 without).
    const low = new MetaDevice(real, { maxStorageBufferBindingSize: 3 << 20 });
    const x = low.createBuffer(8 << 20, STORAGE());
    const pipeline = low.pipeline(KEY, CODE);
    const refuse = (buffers: BufferBinding[], uniforms?: ArrayBuffer) => {
      try {
        low.dispatch({ pipeline, buffers, uniforms, workgroups: [1] });
      } catch (e) {
        expect(e).toBeInstanceOf(BindingTooLargeError);
        return (e as Error).message;
      }
      return 'no error';
    };
    expect(
      refuse(
        [
          { buffer: x, size: 3 << 20 },
          { buffer: x, offset: 256 },
        ],
        new ArrayBuffer(16),
      ),
    ).toBe(message(KEY, 2, '8.0 MiB', '3.0 MiB'));
    expect(
      refuse([
        { buffer: x, offset: 5 << 20 },
        { buffer: x, size: (3 << 20) + 4 },
      ]),
    ).toBe(message(KEY, 1, '3145732 bytes', '3145728 bytes'));
    expect(
      refuse([
        { buffer: x, offset: 5 << 20 },
        { buffer: x, offset: 256, size: 3 << 20 },
      ]),
    ).toBe('no error');
    // An empty grid binds nothing on the GPU device: nothing to refuse.
    expect(() => low.dispatch({ pipeline, buffers: [{ buffer: x }], workgroups: [0] })).not.toThrow();
  });
});
