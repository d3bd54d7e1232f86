// The device's largest buffer (its maxBufferSize) in the trainer's memory handling: a micro-batch
// with one buffer above it cannot run with any amount of memory, so the estimate (run on a meta
// device with the GPU device's limits) says so, batch_size: auto passes it over, the advice offers
// what fits, and a run configured with it stops with the out-of-memory message. The bundled tiny
// model's buffers are small: the test lowers the GPU device's limit to just above what micro-batch 2
// needs.
import { beforeAll, describe, expect, it, vi } from 'vitest';
import { MetaDevice } from '../../../src/engine/meta-device.js';
import { Engine, engine, withEngine } from '../../../src/engine/tensor.js';
import { RuntimeFailure } from '../../../src/errors.js';
import { loadLlamaConfig } from '../../../src/llama/config.js';
import type { ResolvedConfig } from '../../../src/pipeline/config.js';
import { formatBytes } from '../../../src/pipeline/train/logging.js';
import { describeMemory, estimateStep, memoryAdvice, trialStep } from '../../../src/pipeline/train/memory.js';
import { TrainingRun } from '../../../src/pipeline/train/trainer.js';
import { useEngine } from '../../helpers/index.js';
import { oneStepConfig, sampleSlice, withDeviceLimits } from './helpers.js';

useEngine();

let dataDir = '';
beforeAll(() => {
  dataDir = sampleSlice(16, 4);
});

const config = (extra: string[]): ResolvedConfig => oneStepConfig(dataDir, 64, extra);

describe("the device's largest buffer (maxBufferSize) in the memory estimate", () => {
  it('batch_size: auto passes over a micro-batch with a buffer the device refuses; the estimate, the advice and a fixed run say so', async () => {
    const auto = config(['training.batch_size=auto', 'training.effective_batch_size=8', 'model.quantize=none']);
    const llama = await loadLlamaConfig(auto.model.path);
    const mode = auto.training.grad_checkpointing;
    /**
     * The largest buffer a step of micro-batch `b` makes and its estimate, counted on a fresh meta
     * device standing in for the GPU device (so nothing is cached for the GPU device itself).
     */
    const count = (b: number) => {
      const spy = vi.spyOn(MetaDevice.prototype, 'createBuffer');
      try {
        const total = withEngine(new Engine(new MetaDevice(engine().dev), { memory: null }), () =>
          estimateStep(auto, llama, b, mode, 8 / b),
        ).total;
        return { total, largest: Math.max(...spy.mock.calls.map((c) => c[0])) };
      } finally {
        spy.mockRestore();
      }
    };
    const [two, four] = [count(2), count(4)];
    expect(four.largest).toBeGreaterThan(two.largest);
    const limit = two.largest; // micro-batch 2 fits exactly, 4 and 8 do not

    await withDeviceLimits({ maxBufferSize: limit }, async () => {
      // The estimate: refused above the limit, unchanged below it.
      const refused = estimateStep(auto, llama, 4, mode, 2);
      expect(refused.total).toBe(Number.POSITIVE_INFINITY);
      const why = `the device's largest buffer, its maxBufferSize, is ${formatBytes(limit)}`;
      expect(refused.refused).toContain(why);
      expect(estimateStep(auto, llama, 2, mode, 4).total).toBe(two.total);

      // batch_size: auto picks 2 (the pool's 1 GiB would hold 8), and that step runs on the GPU device.
      const run = await TrainingRun.setup(auto, { quiet: true });
      try {
        expect([run.cfg.training.batch_size, run.cfg.training.grad_accum]).toEqual([2, 4]);
        expect((await run.train()).steps).toBe(1);
        // The trial step of micro-batch 4 on the GPU device: refused as out of memory, and what its
        // forward had saved before the refusal is released (later trials and the run get it back).
        await engine().dev.sync();
        const live = engine().pool.liveBytes;
        expect(await trialStep(run.model, 4, 64, mode)).toBeNull();
        await engine().dev.sync();
        expect(engine().pool.liveBytes).toBe(live);
      } finally {
        run.dispose();
      }

      // A fixed micro-batch of 4: the printout says it cannot run, the advice names 2 with its estimate.
      const fixed = config(['training.batch_size=4', 'model.quantize=none']);
      const [line] = describeMemory(fixed, llama, 4, null);
      expect(line).toContain(
        `memory: micro-batch 4 × 64 tokens, grad_checkpointing ${mode}, cannot run on this device`,
      );
      expect(line).toContain(why);
      const advice = memoryAdvice(fixed, llama, 4);
      expect(advice).toContain('training.batch_size (now 4): 2 needs ~');
      // The run stops at its first step with the out-of-memory message and that advice.
      const stopped = await TrainingRun.setup(fixed, { quiet: true });
      let err: unknown = null;
      try {
        await stopped.train();
      } catch (e) {
        err = e;
      } finally {
        stopped.dispose();
      }
      expect(err).toBeInstanceOf(RuntimeFailure);
      const msg = (err as Error).message;
      expect(msg).toMatch(/^GPU out of memory: a [0-9.]+ [KM]iB buffer did not fit \(the device's largest buffer/);
      expect(msg).toContain('at step 1.');
      expect(msg).toContain('The estimated peak of this configuration is more than the device allows');
      expect(msg).toContain(advice);
    });
  });
});
