// The device's per-dispatch bookkeeping: bind groups cached by (pipeline, buffer ranges) with the
// uniform block at a dynamic offset, content-addressed uniform blocks (results stay right when the uniform buffer wraps),
// reused staging buffers for readbacks, and the per-pass GPU timing used by the decode benchmark.
import { describe, expect, it } from 'vitest';
import { engine, Tensor } from '../../src/engine/tensor.js';
import { scale } from '../../src/kernels/index.js';
import { testRng, useEngine } from '../helpers/index.js';

useEngine();

describe('GpuDevice bookkeeping', () => {
  it('a repeated dispatch creates no bind group and writes no uniforms; new uniform values are one write, no bind group', async () => {
    const dev = engine().dev;
    const pool = engine().pool;
    pool.poisonOnAcquire = false; // poisoning writes every buffer handed out: counted writes
    const rng = testRng('device-cache');
    const data = rng.normalArray(37);
    const x = Tensor.from(data, [37]);
    const y1 = scale(x, 3);
    await dev.sync();
    // Same input, output from the pool (the freed y1 comes back), same factor: all cached.
    y1.dispose();
    const before = { ...dev.stats };
    const y2 = scale(x, 3);
    expect(dev.stats.bindGroups - before.bindGroups).toBe(0);
    await dev.sync();
    expect(dev.stats.writes - before.writes).toBe(0);
    const got = (await y2.read()) as Float32Array;
    for (let i = 0; i < 37; i++) expect(got[i]).toBe(Math.fround(data[i]! * 3));
    // Another factor: a new uniform block (one write at the submit), the same bind group (the
    // block's place comes as a dynamic offset).
    y2.dispose();
    const b2 = { ...dev.stats };
    const y3 = scale(x, -2);
    expect(dev.stats.bindGroups - b2.bindGroups).toBe(0);
    const got3 = (await y3.read()) as Float32Array;
    expect(dev.stats.writes - b2.writes).toBe(1);
    for (let i = 0; i < 37; i++) expect(got3[i]).toBe(Math.fround(data[i]! * -2));
    x.dispose();
    y3.dispose();
    pool.poisonOnAcquire = true;
  });

  it('results stay right when the uniform buffer wraps in the middle of recorded work', async () => {
    const dev = engine().dev;
    // 4096 slots: 5000 distinct factors recorded without a sync force a wrap (flush + restart).
    // Poisoning is off so that nothing else submits in between.
    engine().pool.poisonOnAcquire = false;
    const x = Tensor.from(Float32Array.from([1, 2, 3]), [3]);
    const outs: Tensor[] = [];
    const submits = dev.stats.submits;
    for (let i = 0; i < 5000; i++) outs.push(scale(x, i + 0.5));
    expect(dev.stats.submits - submits).toBe(1);
    engine().pool.poisonOnAcquire = true;
    for (const i of [0, 1, 4095, 4096, 4097, 4999]) {
      const v = (await outs[i]!.read()) as Float32Array;
      expect(Array.from(v)).toEqual([1, 2, 3].map((k) => Math.fround(k * (i + 0.5))));
    }
    for (const t of outs) t.dispose();
    x.dispose();
  }, 600_000);

  it('readbacks reuse staging buffers; pass timing sums timestamped passes', async () => {
    const dev = engine().dev;
    const x = Tensor.from(Float32Array.from([1, 2, 3, 4, 5]), [5]);
    await x.read();
    const before = dev.stats.buffersCreated;
    for (let i = 0; i < 5; i++) expect(Array.from((await x.read()) as Float32Array)).toEqual([1, 2, 3, 4, 5]);
    expect(dev.stats.buffersCreated).toBe(before);
    if (dev.startPassTiming()) {
      const y = scale(x, 2);
      dev.flush();
      const z = scale(y, 2);
      const t = await dev.stopPassTiming();
      expect(t!.passes).toBe(2);
      expect(t!.seconds).toBeGreaterThan(0);
      expect(Array.from((await z.read()) as Float32Array)).toEqual([4, 8, 12, 16, 20]);
      y.dispose();
      z.dispose();
    }
    x.dispose();
  });
});
