// The device's largest storage binding (its maxStorageBufferBindingSize) in the trainer's memory
// handling, as its largest buffer (memory-buffer-limit.test.ts): a step that binds more at one
// binding cannot run with any amount of memory, so the estimate (a meta device with the GPU
// device's limits refuses the dispatch as the GPU device does) says so, batch_size: auto passes it
// over, the advice offers what fits (16-bit storage where a weight is bound whole) and a run
// configured with it stops with the out-of-memory message. The bundled tiny model binds little: the
// test lowers the GPU device's limit to between what the micro-batches bind.
import { beforeAll, describe, expect, it } from 'vitest';
import { formatBytes } from '../../../src/engine/device-memory.js';
import { engine } from '../../../src/engine/tensor.js';
import { RuntimeFailure } from '../../../src/errors.js';
import { loadLlamaConfig } from '../../../src/llama/config.js';
import type { ResolvedConfig } from '../../../src/pipeline/config.js';
import { describeMemory, estimateStep, memoryAdvice, trialStep } from '../../../src/pipeline/train/memory.js';
import { TrainingRun } from '../../../src/pipeline/train/trainer.js';
import { useEngine } from '../../helpers/index.js';
import { oneStepConfig, sampleSlice, withDeviceLimits } from './helpers.js';

useEngine();

const SEQ = 64;
let dataDir = '';
beforeAll(() => {
  dataDir = sampleSlice(16, 4);
});

const config = (extra: string[]): ResolvedConfig => oneStepConfig(dataDir, SEQ, extra);

/** The error a run configured with `cfg` stops with, setting up or at its first step. */
async function runError(cfg: ResolvedConfig): Promise<Error> {
  let run: TrainingRun | null = null;
  try {
    run = await TrainingRun.setup(cfg, { quiet: true });
    await run.train();
  } catch (e) {
    return e as Error;
  } finally {
    run?.dispose();
  }
  throw new Error('the run did not stop');
}

/** The sizes of a refusal as its message writes them: exact bytes where they round to the same figure. */
const sizes = (bound: number, limit: number): [string, string] =>
  formatBytes(bound) === formatBytes(limit)
    ? [`${bound} bytes`, `${limit} bytes`]
    : [formatBytes(bound), formatBytes(limit)];

describe("the device's largest storage binding (maxStorageBufferBindingSize) in the memory estimate", () => {
  it('an activation: batch_size: auto passes over micro-batches that bind more; the trial step on the GPU device is refused alike; a fixed run stops with the advice', async () => {
    const auto = config(['training.batch_size=auto', 'training.effective_batch_size=8', 'model.quantize=none']);
    const llama = await loadLlamaConfig(auto.model.path);
    const mode = auto.training.grad_checkpointing;
    // SwiGLU's [tokens, intermediate] f32 activation: bound whole by its kernels and the down
    // projection. Micro-batch 4's is one word above the limit, micro-batch 2's half of it; the loss
    // head's logits chunks shrink to the limit, and every weight binds less.
    const swiglu = (b: number) => b * SEQ * llama.intermediateSize * 4;
    const limit = swiglu(4) - 4;
    expect(llama.vocabSize * llama.hiddenSize * 4).toBeLessThan(limit);

    await withDeviceLimits({ maxStorageBufferBindingSize: limit }, async () => {
      const refused = estimateStep(auto, llama, 4, mode, 2);
      expect(refused.total).toBe(Number.POSITIVE_INFINITY);
      const [bound, max] = sizes(swiglu(4), limit);
      const why = `binds ${bound} at @binding(`;
      expect(refused.refused).toMatch(/^GPU out of memory: kernel '[a-z.]+:\{.*\}' binds /);
      expect(refused.refused).toContain(why);
      expect(refused.refused).toContain(
        `more than the device's largest storage binding (its maxStorageBufferBindingSize, ${max})`,
      );
      expect(estimateStep(auto, llama, 8, mode, 1).total).toBe(Number.POSITIVE_INFINITY);
      expect(Number.isFinite(estimateStep(auto, llama, 2, mode, 4).total)).toBe(true);

      // batch_size: auto picks 2 (the pool's 1 GiB would hold 8), and that step runs on the GPU device.
      const run = await TrainingRun.setup(auto, { quiet: true });
      try {
        expect([run.cfg.training.batch_size, run.cfg.training.grad_accum]).toEqual([2, 4]);
        expect((await run.train()).steps).toBe(1);
        // Micro-batch 4 on the GPU device: refused before Dawn (useEngine fails the test on any
        // uncaptured GPU error), as out of memory; what its forward had saved is released.
        await engine().dev.sync();
        const live = engine().pool.liveBytes;
        expect(await trialStep(run.model, 4, SEQ, mode)).toBeNull();
        await engine().dev.sync();
        expect(engine().pool.liveBytes).toBe(live);
      } finally {
        run.dispose();
      }

      // A fixed micro-batch of 4: the printout says it cannot run and why; the run stops with the advice.
      const fixed = config(['training.batch_size=4', 'model.quantize=none']);
      const [line] = describeMemory(fixed, llama, 4, null);
      expect(line).toContain(
        `memory: micro-batch 4 × ${SEQ} tokens, grad_checkpointing ${mode}, cannot run on this device`,
      );
      expect(line).toContain(why);
      const advice = memoryAdvice(fixed, llama, 4);
      expect(advice).toContain('training.batch_size (now 4): 2 needs ~');
      const err = await runError(fixed);
      expect(err).toBeInstanceOf(RuntimeFailure);
      expect(err.message).toMatch(/^GPU out of memory: kernel '[a-z.]+:\{.*\}' binds /);
      expect(err.message).toContain(why);
      expect(err.message).toContain('at step 1.');
      expect(err.message).toContain(
        'The estimated peak of this configuration is more than the device allows (a buffer above its maxBufferSize or a binding above its maxStorageBufferBindingSize)',
      );
      expect(err.message).toContain(advice);
      expect(err.message).not.toContain('\n');
    });
  });

  it('a weight bound whole (the f32 embedding table): every micro-batch is refused, the advice names model.storage: bf16, and with it the run trains', async () => {
    const fixed = config(['training.batch_size=2']); // QLoRA: nf4 decoder layers, the embedding at model.storage f32
    const llama = await loadLlamaConfig(fixed.model.path);
    const mode = fixed.training.grad_checkpointing;
    const tableBytes = llama.vocabSize * llama.hiddenSize * 4;
    const limit = tableBytes - 4;

    await withDeviceLimits({ maxStorageBufferBindingSize: limit }, async () => {
      const [bound, max] = sizes(tableBytes, limit);
      // Named as the checkpoint names it, with what 16-bit storage does to it.
      const table = `weight model.embed_tokens.weight (f32, ${bound}; 16-bit storage halves it)`;
      const e = estimateStep(fixed, llama, 1, mode, 1);
      expect(e.total).toBe(Number.POSITIVE_INFINITY);
      // The forward's first dispatch, the embedding gather, binds the table T at @binding(2).
      expect(e.refused).toBe(
        `GPU out of memory: kernel 'embedding:{"tType":"f32"}' binds ${table} at @binding(2), more than the device's largest storage binding (its maxStorageBufferBindingSize, ${max})`,
      );
      const advice = memoryAdvice(fixed, llama, 2);
      expect(advice).toMatch(/^To fit, change one of: model\.storage: bf16 \(now f32\) needs ~[0-9.]+ [KMG]iB\.$/);
      // The run stops before its first step: loading checks each weight for non-finite values with
      // a kernel that binds the whole tensor, and is refused on the table the same way.
      const err = await runError(fixed);
      expect(err).toBeInstanceOf(RuntimeFailure);
      expect(err.message).toBe(
        `GPU out of memory: kernel 'finite.count:{}' binds ${table} at @binding(1), more than the device's largest storage binding (its maxStorageBufferBindingSize, ${max}) while loading the model. ` +
          'The estimated peak of this configuration is more than the device allows (a buffer above its maxBufferSize or a binding above its maxStorageBufferBindingSize) ' +
          `(micro-batch 2 × ${SEQ} tokens, grad_checkpointing ${mode}). ${advice} No checkpoint was written yet; nothing in the run folder needs cleaning up.`,
      );

      const bf16 = config(['training.batch_size=2', 'model.storage=bf16']);
      expect(Number.isFinite(estimateStep(bf16, llama, 2, mode, 1).total)).toBe(true);
      const run = await TrainingRun.setup(bf16, { quiet: true });
      try {
        expect((await run.train()).steps).toBe(1);
      } finally {
        run.dispose();
      }
    });
  });
});
