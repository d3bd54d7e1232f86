// The meta device (src/engine/meta-device.ts) and engines over it: the same code allocates the same
// pool bytes as on the GPU device, while the GPU device sees nothing (no buffer, no upload, no
// dispatch, no pipeline compiled), and the process-wide engine comes back after withEngine.
import { describe, expect, it } from 'vitest';
import { backward } from '../../src/engine/autograd.js';
import { BufferTooLargeError, OutOfMemoryError } from '../../src/engine/device.js';
import { MetaDevice } from '../../src/engine/meta-device.js';
import { BufferPool, Engine, engine, Tensor, tidy, withEngine } from '../../src/engine/tensor.js';
import { linear, rmsnorm, scale, sumToSuffix, swiglu } from '../../src/kernels/index.js';
import { testRng, useEngine } from '../helpers/index.js';

useEngine();

const metaEngine = (limits: Partial<Record<keyof GPUSupportedLimits, number>> = {}) =>
  new Engine(new MetaDevice(engine().dev, limits), { memory: null });

/** A small MLP block and its backward (shapes that are not tile multiples), its leaves made by `make`; everything freed after. */
function block(make: (n: number, shape: number[]) => Tensor): void {
  const [N, D, F] = [37, 45, 77];
  const leaf = (shape: number[]) => {
    const t = make(
      shape.reduce((a, b) => a * b, 1),
      shape,
    ).keep();
    t.requiresGrad = true;
    return t;
  };
  const x = leaf([N, D]);
  const g = leaf([D]);
  const [wg, wu, wd] = [leaf([F, D]), leaf([F, D]), leaf([D, F])];
  tidy(() => {
    const h = rmsnorm(x, g, 1e-5);
    const y = linear(swiglu(linear(h, wg), linear(h, wu)), wd);
    backward(scale(sumToSuffix(y, [1]), 1 / (N * D)));
  });
  for (const t of [x, g, wg, wu, wd]) {
    t.grad?.dispose();
    t.dispose();
  }
}

describe('MetaDevice', () => {
  it("an engine over it: the pool peak of a forward and backward equals the GPU pool's, and the GPU device sees none of it", async () => {
    const rng = testRng('meta block');
    const real = engine();
    await real.dev.sync();
    const stats = { ...real.dev.stats };
    // On the GPU: the peak above what was live before.
    const base = real.pool.liveBytes;
    real.pool.resetPeak();
    block((n, shape) => Tensor.from(rng.normalArray(n), shape));
    await real.dev.sync();
    const gpuPeak = real.pool.peakBytes - base;
    expect(real.pool.liveBytes).toBe(base);
    const after = { ...real.dev.stats };
    expect(after.dispatches).toBeGreaterThan(stats.dispatches);

    const meta = metaEngine();
    withEngine(meta, () => block((n, shape) => Tensor.from(new Float32Array(n), shape)));
    expect(meta.pool.peakBytes).toBe(gpuPeak);
    expect(meta.pool.liveBytes).toBe(0);
    expect(meta.dev.stats.dispatches).toBe(after.dispatches - stats.dispatches);
    // The GPU device: nothing created, written or dispatched; its pool untouched.
    expect(real.dev.stats).toEqual(after);
    expect(real.pool.liveBytes).toBe(base);
    expect(engine()).toBe(real);
  });

  it('never compiles a pipeline (the WGSL is not even generated), reads zeros, keeps the limits it is given', async () => {
    const meta = metaEngine({ maxStorageBufferBindingSize: 1 << 20 });
    expect(meta.dev.limits.maxStorageBufferBindingSize).toBe(1 << 20);
    expect(meta.dev.limits.maxComputeWorkgroupsPerDimension).toBe(engine().dev.limits.maxComputeWorkgroupsPerDimension);
    expect(meta.dev.features).toBe(engine().dev.features);
    let generated = 0;
    const p = meta.dev.pipeline('never.compiled', () => {
      generated++;
      return 'not WGSL';
    });
    meta.dev.dispatch({ pipeline: p, buffers: [], workgroups: [1] });
    expect(generated).toBe(0);
    const t = withEngine(meta, () => Tensor.from(new Float32Array([1, 2, 3]), [3]));
    expect(meta.pool.liveBytes).toBe(BufferPool.sizeClass(12));
    expect(new Float32Array(await meta.dev.read(t.buffer, 0, 12))).toEqual(new Float32Array(3));
    // A grid the GPU device refuses is refused here too.
    const max = meta.dev.limits.maxComputeWorkgroupsPerDimension;
    expect(() => meta.dev.dispatch({ pipeline: p, buffers: [], workgroups: [max + 1] })).toThrow(/exceeds/);
    expect(() => meta.dev.device).toThrow(/no GPU device/);
  });

  it("refuses a buffer above the maxBufferSize it was given, with the GPU device's error; the pool counts nothing for it", async () => {
    const real = engine();
    const STORAGE = GPUBufferUsage.STORAGE;
    const limit = 1 << 20;
    const meta = metaEngine({ maxBufferSize: limit });
    expect(meta.dev.createBuffer(limit, STORAGE).size).toBe(limit);
    const err = (() => {
      try {
        meta.dev.createBuffer(limit + 4, STORAGE);
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(BufferTooLargeError);
    expect(err).toBeInstanceOf(OutOfMemoryError); // what the trainer and the trial step catch
    expect((err as Error).message).toBe(
      "GPU out of memory: a 1.0 MiB buffer did not fit (the device's largest buffer, its maxBufferSize, is 1.0 MiB)",
    );
    // Through the pool (size class 1.25 MiB): refused before anything is counted.
    const before = meta.pool.stats();
    expect(() => withEngine(meta, () => Tensor.from(new Float32Array((limit + 4) / 4), [(limit + 4) / 4]))).toThrow(
      BufferTooLargeError,
    );
    expect(meta.pool.stats()).toEqual(before);

    // The GPU device refuses the same size with the same error, before asking the driver (which would
    // only report a validation error later and hand back an unusable buffer); the meta device standing
    // in for it, with its limits, says the same.
    await real.dev.sync();
    const created = real.dev.stats.buffersCreated;
    const size = real.dev.limits.maxBufferSize + 256;
    const messageOf = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(BufferTooLargeError);
        return (e as Error).message;
      }
      return 'no error';
    };
    const onGpu = messageOf(() => real.dev.createBuffer(size, STORAGE, 'too large', real.pool.memoryContext()));
    expect(onGpu).toMatch(/^GPU out of memory: a [0-9.]+ [KMG]iB buffer did not fit \(the device's largest buffer/);
    expect(messageOf(() => metaEngine().dev.createBuffer(size, STORAGE))).toBe(onGpu);
    expect(real.dev.stats.buffersCreated).toBe(created);
    await real.dev.sync(); // nothing pending: no error comes later either
  });

  it('withEngine restores the engine when its function throws, and refuses an async function', () => {
    const real = engine();
    const meta = metaEngine();
    expect(() =>
      withEngine(meta, () => {
        expect(engine()).toBe(meta);
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(engine()).toBe(real);
    expect(() => withEngine(meta, async () => 1)).toThrow(/synchronous/);
    expect(engine()).toBe(real);
  });
});
