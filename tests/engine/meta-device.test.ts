// The meta device (src/engine/meta-device.ts) and engines over it: the same code allocates the same
// pool bytes as on the GPU device, while the GPU device sees nothing (no buffer, no upload, no
// dispatch, no pipeline compiled), and the process-wide engine comes back after withEngine.
import { describe, expect, it } from 'vitest';
import { backward } from '../../src/engine/autograd.js';
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
