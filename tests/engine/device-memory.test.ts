// Device memory lookup (FINLLM_GPU_MEMORY, nvidia-smi parsing, system RAM for software adapters)
// and the pool's capacity: a buffer that does not fit raises OutOfMemoryError with the numbers.
import { totalmem } from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { OutOfMemoryError } from '../../src/engine/device.js';
import { deviceMemory, parseByteSize, parseNvidiaSmi, pickGpuRow } from '../../src/engine/device-memory.js';
import { BufferPool, engine, Tensor } from '../../src/engine/tensor.js';
import { InputError } from '../../src/errors.js';
import { useEngine } from '../helpers/index.js';

useEngine();

const saved = process.env.FINLLM_GPU_MEMORY;
afterEach(() => {
  if (saved === undefined) delete process.env.FINLLM_GPU_MEMORY;
  else process.env.FINLLM_GPU_MEMORY = saved;
});

const LAVAPIPE = { vendor: 'mesa', device: 'llvmpipe', description: 'llvmpipe: Mesa 25.0.7', isSoftware: true };
const H100 = { vendor: 'nvidia', device: '', description: 'NVIDIA H100 80GB HBM3', isSoftware: false };

describe('device memory', () => {
  it('parses sizes as people write them: GB is 10^9, GiB and G are 2^30, a bare number is bytes', () => {
    expect(parseByteSize('24GB')).toBe(24e9);
    expect(parseByteSize('80GiB')).toBe(80 * 2 ** 30);
    expect(parseByteSize('8G')).toBe(8 * 2 ** 30);
    expect(parseByteSize('512 MiB')).toBe(512 * 2 ** 20);
    expect(parseByteSize('1.5e9')).toBe(1.5e9);
    expect(parseByteSize(' 4096 ')).toBe(4096);
    for (const bad of ['lots', '-5GB', '0', '12XB', ''])
      expect(() => parseByteSize(bad), bad).toThrow(
        /not a memory size: expected a number with an optional unit, e.g. 24GB/,
      );
  });

  it('FINLLM_GPU_MEMORY wins; a bad value is bad input naming the variable', () => {
    process.env.FINLLM_GPU_MEMORY = '24GB';
    expect(deviceMemory(LAVAPIPE)).toEqual({ totalBytes: 24e9, availableBytes: 24e9, source: 'FINLLM_GPU_MEMORY' });
    expect(deviceMemory(H100)!.source).toBe('FINLLM_GPU_MEMORY');
    process.env.FINLLM_GPU_MEMORY = 'twenty';
    expect(() => deviceMemory(LAVAPIPE)).toThrow(InputError);
    expect(() => deviceMemory(LAVAPIPE)).toThrow(/FINLLM_GPU_MEMORY: "twenty" is not a memory size/);
  });

  it('a software adapter (lavapipe) has the system RAM', () => {
    delete process.env.FINLLM_GPU_MEMORY;
    const m = deviceMemory(LAVAPIPE)!;
    expect(m.totalBytes).toBe(totalmem());
    expect(m.source).toBe('system RAM (software adapter)');
    expect(m.availableBytes).toBeGreaterThan(0);
    expect(m.availableBytes!).toBeLessThanOrEqual(m.totalBytes);
  });

  it('nvidia-smi rows: MiB to bytes; the row the adapter names, else the smallest', () => {
    const rows = parseNvidiaSmi('NVIDIA A10G, 23028, 0\nNVIDIA H100 80GB HBM3, 81559, 512\n\n');
    expect(rows).toEqual([
      { name: 'NVIDIA A10G', totalBytes: 23028 * 2 ** 20, usedBytes: 0 },
      { name: 'NVIDIA H100 80GB HBM3', totalBytes: 81559 * 2 ** 20, usedBytes: 512 * 2 ** 20 },
    ]);
    expect(pickGpuRow(rows, H100)!.name).toBe('NVIDIA H100 80GB HBM3');
    expect(pickGpuRow(rows, { ...H100, description: 'some GPU' })!.name).toBe('NVIDIA A10G');
    expect(pickGpuRow([], H100)).toBeNull();
  });
});

describe('pool capacity', () => {
  it('a buffer past the capacity raises OutOfMemoryError with its size, the live bytes and the capacity; cached buffers go back first', async () => {
    const pool = engine().pool;
    const [cap, source] = [pool.capacityBytes, pool.capacitySource];
    await engine().dev.sync();
    try {
      const cached = Tensor.empty([64 * 1024]); // 256 KiB, released to the cache
      cached.dispose();
      const mib = BufferPool.sizeClass(2 ** 20);
      pool.capacityBytes = pool.liveBytes + mib + 4096;
      pool.capacitySource = 'a test';
      // Fits once the cached 256 KiB are returned to the driver.
      const fits = Tensor.empty([2 ** 18]);
      expect(pool.cachedBytes).toBe(0);
      let err: unknown;
      try {
        Tensor.empty([2 ** 18]);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(OutOfMemoryError);
      const oom = err as OutOfMemoryError;
      expect(oom.requestedBytes).toBe(mib);
      expect(oom.context).toEqual({
        liveBytes: pool.liveBytes,
        capacityBytes: pool.capacityBytes,
        capacitySource: 'a test',
      });
      expect(oom.message).toMatch(
        /^GPU out of memory: a 1\.0 MiB buffer did not fit \([0-9.]+ [KM]i?B already in use by finllm's buffers of [0-9.]+ MiB device memory, from a test\)$/,
      );
      fits.dispose();
    } finally {
      pool.capacityBytes = cap;
      pool.capacitySource = source;
    }
  });
});
