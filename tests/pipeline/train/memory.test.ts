// The trainer's memory handling on the bundled tiny model: batch_size: auto against a small device
// capacity (LoRA and full training), the out-of-memory advice under full training, and running
// out of memory mid-run (a clear message, exit code 2 from the CLI, the last checkpoint intact and
// the run folder resumable).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { computePrecision, resolvePrecision } from '../../../src/engine/precision.js';
import { engine } from '../../../src/engine/tensor.js';
import { RuntimeFailure } from '../../../src/errors.js';
import { loadLlamaConfig } from '../../../src/llama/config.js';
import { LlamaModel } from '../../../src/llama/model.js';
import { loadConfig, type ResolvedConfig } from '../../../src/pipeline/config.js';
import { createDataLoader } from '../../../src/pipeline/data/index.js';
import { formatBytes } from '../../../src/pipeline/train/logging.js';
import {
  AUTO_BATCH_HEADROOM,
  describeMemory,
  estimateStep,
  memoryAdvice,
  trialStep,
} from '../../../src/pipeline/train/memory.js';
import { runTraining, TrainingRun } from '../../../src/pipeline/train/trainer.js';
import { requireFeature, useEngine } from '../../helpers/index.js';
import { CLI, ROOT, sampleSlice } from './helpers.js';

useEngine();

let dataDir = '';

beforeAll(() => {
  dataDir = sampleSlice(16, 4);
});

function settings(outDir: string, extra: string[] = []): string[] {
  return [
    `output.dir=${outDir}`,
    `data.train=${join(dataDir, 'train.jsonl')}`,
    `data.val=${join(dataDir, 'val.jsonl')}`,
    'data.max_seq_len=64',
    'data.response_only_loss=false', // 64 tokens leave no response of some rows: train on every token
    'training.batch_size=2',
    'training.max_steps=4',
    'training.warmup_steps=0',
    'training.eval_every=0',
    'training.save_every=2',
    'training.log_every=1',
    'logging.console=false',
    ...extra,
  ];
}

const config = (outDir: string, extra: string[] = []): ResolvedConfig =>
  loadConfig({ file: join(ROOT, 'configs/tiny-sample.yaml'), sets: settings(outDir, extra) });

/** Runs `fn` with the pool's capacity set to `bytes` (a fake small device), restoring it after. */
async function withCapacity<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
  const pool = engine().pool;
  const [cap, source] = [pool.capacityBytes, pool.capacitySource];
  pool.capacityBytes = bytes;
  pool.capacitySource = 'the test';
  try {
    return await fn();
  } finally {
    pool.capacityBytes = cap;
    pool.capacitySource = source;
  }
}

describe('batch_size: auto', () => {
  it('picks the largest divisor of the effective batch that fits a small device, raises grad_accum, saves both in the resolved config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-auto-'));
    const cfg = config(dir, ['training.batch_size=auto', 'training.effective_batch_size=8', 'training.max_steps=1']);
    const llama = await loadLlamaConfig(cfg.model.path);
    // A device between what micro-batch 4 and micro-batch 8 need (with the headroom).
    const est = (b: number) => estimateStep(cfg, llama, b, 'none', 8 / b).total;
    expect(est(8)).toBeGreaterThan(est(4));
    const capacity = Math.floor((est(4) + est(8)) / 2 / AUTO_BATCH_HEADROOM);
    expect(est(4)).toBeLessThanOrEqual(AUTO_BATCH_HEADROOM * capacity);
    expect(est(8)).toBeGreaterThan(AUTO_BATCH_HEADROOM * capacity);
    await withCapacity(capacity, async () => {
      const trainer = await TrainingRun.setup(cfg, { quiet: true });
      try {
        expect(trainer.cfg.training.batch_size).toBe(4);
        expect(trainer.cfg.training.grad_accum).toBe(2);
        // The loaders follow the resolved micro-batch.
        expect(createDataLoader(trainer.data.train, trainer.cfg, trainer.tokenizer, 'train').next().batchSize).toBe(4);
        const r = await trainer.train();
        expect(r.steps).toBe(1);
      } finally {
        trainer.dispose();
      }
    });
    const resolved = readFileSync(join(dir, 'resolved-config.yaml'), 'utf8');
    expect(resolved).toMatch(
      /# batch_size: auto -> 4 x grad_accum 2 = 8 sequences per step \(estimate [0-9.]+ [KM]iB, trial step [0-9.]+ [KM]iB\)/,
    );
    expect(resolved).toMatch(/\n {2}batch_size: 4\n/);
    expect(resolved).toMatch(/\n {2}grad_accum: 2\n/);
    // The saved file is itself a valid config that reproduces the choice.
    expect(loadConfig({ file: join(dir, 'resolved-config.yaml') }).training.batch_size).toBe(4);
    // Resuming keeps the run's choice even on a device where 8 would fit (same data order, same steps).
    const resumed = await withCapacity(4 * capacity, () => TrainingRun.setup(cfg, { quiet: true, resume: true }));
    try {
      expect([resumed.cfg.training.batch_size, resumed.cfg.training.grad_accum]).toEqual([4, 2]);
    } finally {
      resumed.dispose();
    }
  });

  it('the trial step that confirms a choice: null when it runs out of memory, else its pool peak', async () => {
    const model = await LlamaModel.load(join(ROOT, 'models/tiny-fin'));
    try {
      model.initLora({ r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj', 'down_proj'] }, 1);
      const pool = engine().pool;
      const peak = await trialStep(model, 2, 32, 'none');
      expect(peak).toBeGreaterThan(pool.liveBytes);
      for (const p of model.loraParameters()) expect(p.grad).toBeNull(); // no trace left
      const fits = await withCapacity(peak!, () => trialStep(model, 2, 32, 'none'));
      expect(fits).toBe(peak);
      expect(await withCapacity(pool.liveBytes + 1024, () => trialStep(model, 2, 32, 'none'))).toBeNull();
      for (const p of model.loraParameters()) expect(p.grad).toBeNull();
    } finally {
      model.dispose();
    }
  });

  it('under training.precision fp16-mixed the estimate and the trial step are fp16-mixed ones (both below fp32)', async (ctx) => {
    requireFeature(ctx, 'shader-f16');
    const dir = mkdtempSync(join(tmpdir(), 'finllm-auto16-'));
    const [c32, c16] = ['fp32', 'fp16-mixed'].map((p) => config(dir, [`training.precision=${p}`]));
    const llama = await loadLlamaConfig(c32!.model.path);
    expect(estimateStep(c16!, llama, 2).total).toBeLessThan(estimateStep(c32!, llama, 2).total);
    const model = await LlamaModel.load(join(ROOT, 'models/tiny-fin'));
    try {
      model.initLora(
        { r: 8, loraAlpha: 16, targetModules: ['q_proj', 'v_proj', 'gate_proj', 'up_proj', 'down_proj'] },
        1,
      );
      const p32 = await trialStep(model, 2, 64, 'none', 'fp32');
      const p16 = await trialStep(model, 2, 64, 'none', 'fp16-mixed');
      expect(p16!).toBeLessThan(p32!);
      expect(computePrecision()).toBe('fp32'); // the trial's precision does not leak
    } finally {
      model.dispose();
    }
  });

  it('without a known device memory it asks for FINLLM_GPU_MEMORY', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-auto-'));
    const pool = engine().pool;
    const cap = pool.capacityBytes;
    pool.capacityBytes = null;
    try {
      await expect(TrainingRun.setup(config(dir, ['training.batch_size=auto']), { quiet: true })).rejects.toThrow(
        /training\.batch_size.*auto needs the device memory.*FINLLM_GPU_MEMORY/,
      );
    } finally {
      pool.capacityBytes = cap;
    }
  });
});

describe('full training (training.method full)', () => {
  const FULL = ['model.quantize=none', 'training.method=full'];

  it('batch_size: auto picks by the full-training estimate, and its trial step leaves no gradient behind: the steps match an explicit run', async () => {
    const cfg = config(mkdtempSync(join(tmpdir(), 'finllm-auto-full-')), [
      ...FULL,
      'training.batch_size=auto',
      'training.effective_batch_size=8',
      'training.max_steps=2',
    ]);
    const llama = await loadLlamaConfig(cfg.model.path);
    const est = (b: number) => estimateStep(cfg, llama, b, 'none', 8 / b).total;
    // Full training needs more than LoRA on the same model: the capacity must come from this estimate.
    const lora = loadConfig({
      file: join(ROOT, 'configs/tiny-sample.yaml'),
      sets: settings(cfg.output.dir, ['model.quantize=none']),
    });
    expect(est(4)).toBeGreaterThan(estimateStep(lora, llama, 4, 'none', 2).total);
    const capacity = Math.floor((est(4) + est(8)) / 2 / AUTO_BATCH_HEADROOM);
    expect(est(4)).toBeLessThanOrEqual(AUTO_BATCH_HEADROOM * capacity);
    expect(est(8)).toBeGreaterThan(AUTO_BATCH_HEADROOM * capacity);
    const auto = await withCapacity(capacity, async () => {
      const trainer = await TrainingRun.setup(cfg, { quiet: true });
      try {
        expect([trainer.cfg.training.batch_size, trainer.cfg.training.grad_accum]).toEqual([4, 2]);
        for (const [name, t] of trainer.model.namedTrainableParameters()) expect(t.grad, name).toBeNull();
        return await trainer.train();
      } finally {
        trainer.dispose();
      }
    });
    const explicit = await runTraining(
      config(mkdtempSync(join(tmpdir(), 'finllm-auto-full-')), [
        ...FULL,
        'training.batch_size=4',
        'training.grad_accum=2',
        'training.max_steps=2',
      ]),
      { quiet: true },
    );
    // Step 2's loss follows step 1's update: a gradient left by the trial step would change it.
    expect(auto.losses).toEqual(explicit.losses);
  });

  it('the estimate printed and the out-of-memory advice: full training parts, only changes full training accepts, each with its estimate', async () => {
    const cfg = config(mkdtempSync(join(tmpdir(), 'finllm-advice-full-')), FULL);
    const llama = await loadLlamaConfig(cfg.model.path);
    const needs = (c: ResolvedConfig, b: number, mode = c.training.grad_checkpointing, accum = 1) =>
      `needs ~${formatBytes(estimateStep(c, llama, b, mode, accum).total)}`;
    const [line] = describeMemory(cfg, llama, 2, null);
    const e = estimateStep(cfg, llama, 2);
    expect(line).toContain(
      `memory: estimated peak ${formatBytes(e.total)} for micro-batch 2 × 64 tokens, full training, ${resolvePrecision(cfg.training.precision, engine().dev)}, grad_checkpointing none (trained f32 weights ${formatBytes(e.weights)}, AdamW ${formatBytes(e.optimizer)}, `,
    );
    expect(line).toContain(e.gradients > 0 ? `, gradients ${formatBytes(e.gradients)}, ` : ', no gradient yet, ');
    expect(line).toContain(`peak during ${e.peakAt}`);

    const advice = memoryAdvice(cfg, llama, 2);
    const lora: ResolvedConfig = { ...cfg, training: { ...cfg.training, method: 'lora' } };
    for (const tip of [
      `training.batch_size (now 2): 1 ${needs(cfg, 1, 'none', 2)}`, // with grad_accum 2, as the tip says
      `data.max_seq_len (now 64): 32 ${needs({ ...cfg, data: { ...cfg.data, max_seq_len: 32 } }, 2)}`,
      `training.grad_checkpointing: selective (now none) ${needs(cfg, 2, 'selective')}`,
      `training.grad_checkpointing: full (now none) ${needs(cfg, 2, 'full')}`,
      `training.method: lora (now full: adapters on the frozen model instead of training every weight) ${needs(lora, 2)}`,
    ]) {
      expect(advice).toContain(tip);
    }
    expect(advice).not.toMatch(/model\.quantize: nf4 \(now/); // full training refuses NF4

    // One short row: the weights and their gradients set the peak, so checkpointing (and a smaller
    // batch) cannot help and is not offered; a shorter max_seq_len or LoRA still can.
    const small: ResolvedConfig = { ...cfg, data: { ...cfg.data, max_seq_len: 16 } };
    for (const mode of ['selective', 'full'] as const)
      expect(estimateStep(small, llama, 1, mode).total).toBeGreaterThanOrEqual(estimateStep(small, llama, 1).total);
    const tight = memoryAdvice(small, llama, 1);
    expect(tight).not.toContain('grad_checkpointing');
    expect(tight).not.toContain('batch_size');
    expect(tight).toContain('data.max_seq_len (now 16): 8 needs ~');
    expect(tight).toContain('training.method: lora (now full');
  });
});

describe('out of memory', () => {
  it('mid-run: a message with the buffer, live bytes, estimate and what to change; the last checkpoint intact; --resume finishes the run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-oom-'));
    const cfg = config(dir, ['model.quantize=none']);
    const pool = engine().pool;
    const [cap, source] = [pool.capacityBytes, pool.capacitySource];
    let err: unknown;
    try {
      // After step 3 the device "shrinks" to what is live and the cache is returned: step 4 cannot allocate.
      const shrink = (step: number) => {
        if (step !== 3) return;
        pool.trim();
        pool.capacityBytes = pool.liveBytes + 4096;
        pool.capacitySource = 'the test';
      };
      await runTraining(cfg, { quiet: true, onStep: (rec) => shrink(rec.step) });
    } catch (e) {
      err = e;
    } finally {
      pool.capacityBytes = cap;
      pool.capacitySource = source;
    }
    expect(err).toBeInstanceOf(RuntimeFailure);
    const msg = (err as Error).message;
    expect(msg).toMatch(
      /^GPU out of memory: a [0-9.]+ [KM]iB buffer did not fit \([0-9.]+ [KM]iB already in use by finllm's buffers of [0-9.]+ [KM]iB device memory, from the test\) at step 4\./,
    );
    expect(msg).toMatch(
      /The estimated peak of this configuration is [0-9.]+ [KM]iB \(micro-batch 2 × 64 tokens, grad_checkpointing none\)/,
    );
    for (const key of [
      'training.batch_size (now 2): 1 needs ~',
      'data.max_seq_len (now 64): 32 needs ~',
      'training.grad_checkpointing: selective (now none) needs ~',
      'training.grad_checkpointing: full',
      'model.quantize: nf4 (now none) needs ~',
    ]) {
      expect(msg).toContain(key);
    }
    // Nothing half-written: step 2's checkpoint is complete and is the latest; no adapter was exported.
    const checkpoints = readdirSync(join(dir, 'checkpoints'));
    expect(checkpoints).toHaveLength(1);
    const last = join(dir, 'checkpoints', checkpoints[0]!);
    expect(msg).toContain(`The last checkpoint (${last}) is intact: change the config and run again with --resume.`);
    expect(JSON.parse(readFileSync(join(last, 'trainer_state.json'), 'utf8')).step).toBe(2);
    expect(existsSync(join(dir, 'adapter'))).toBe(false);
    const r = await runTraining(cfg, { quiet: true, resume: true });
    expect(r.steps).toBe(4);
    expect(r.losses.map((l) => l.step)).toEqual([1, 2, 3, 4]);
  });

  it('while loading the model: the buffer, the estimate of the configuration, what to change, no checkpoint yet', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-oom-load-'));
    const cfg = config(dir, ['model.quantize=none']);
    // 64 KiB: less than the tiny model's embedding (600 × 64 f32), so loading cannot allocate it; buffers
    // cached by earlier tests go back first (a cached buffer is reused without asking the capacity).
    engine().pool.trim();
    const err = await withCapacity(65536, () => runTraining(cfg, { quiet: true })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RuntimeFailure);
    const msg = (err as Error).message;
    expect(msg).toMatch(
      /^GPU out of memory: a [0-9.]+ [KM]iB buffer did not fit \(.* of 64 KiB device memory, from the test\) while loading the model\. The estimated peak of this configuration is [0-9.]+ [KM]iB \(micro-batch 2 × 64 tokens, grad_checkpointing none\)/,
    );
    expect(msg).toContain('model.quantize: nf4 (now none) needs ~');
    expect(msg).toContain('No checkpoint was written yet; nothing in the run folder needs cleaning up.');
    expect(existsSync(join(dir, 'checkpoints'))).toBe(false);
    expect(existsSync(join(dir, 'adapter'))).toBe(false);
  });

  it('from the CLI: exit code 2, the message without a stack trace, and the folder trains after the fix', () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-oom-cli-'));
    const args = [
      CLI,
      'train',
      '--config',
      join(ROOT, 'configs/tiny-sample.yaml'),
      ...settings(dir, ['training.max_steps=2']).flatMap((s) => ['--set', s]),
    ];
    const failed = spawnSync(process.execPath, args, {
      encoding: 'utf8',
      env: { ...process.env, FINLLM_GPU_MEMORY: '1MB' },
    });
    expect(failed.status, failed.stderr).toBe(2);
    expect(failed.stderr).toMatch(
      /finllm: GPU out of memory: a [0-9.]+ [KM]iB buffer did not fit \(.* of 977 KiB device memory, from FINLLM_GPU_MEMORY\)/,
    );
    expect(failed.stderr).toMatch(/The estimated peak of this configuration is/);
    expect(failed.stderr).toMatch(/To fit, change one of: /);
    expect(failed.stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(existsSync(join(dir, 'adapter'))).toBe(false);
    const ok = spawnSync(process.execPath, [...args, '--resume'], { encoding: 'utf8' });
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toMatch(/steps: 2/);
  });
});

describe('advice against a memory budget, and batches larger than the data (issue 20, item 24)', () => {
  /** Every "~12.3 MiB" in a message, in bytes (rounded as printed: compare with the printing's slack). */
  const sizes = (msg: string) =>
    [...msg.matchAll(/~([0-9.]+) (KiB|MiB|GiB)/g)].map(
      (m) => Number(m[1]) * { KiB: 1024, MiB: 1 << 20, GiB: 1 << 30 }[m[2] as 'KiB'],
    );
  const slack = (bytes: number) => bytes * 1.001 + 512;

  it('with a budget, only changes that fit are offered; none fits alone: the changes together; nothing fits: it says so', async () => {
    const cfg = config(mkdtempSync(join(tmpdir(), 'finllm-advice-budget-')), [
      'model.quantize=none',
      'training.batch_size=4',
    ]);
    const llama = await loadLlamaConfig(cfg.model.path);
    const est = (over: {
      b?: number;
      accum?: number;
      mode?: 'none' | 'selective' | 'full';
      seq?: number;
      nf4?: boolean;
    }) =>
      estimateStep(
        {
          ...cfg,
          data: { ...cfg.data, max_seq_len: over.seq ?? 64 },
          model: { ...cfg.model, quantize: over.nf4 ? 'nf4' : 'none' },
        },
        llama,
        over.b ?? 4,
        over.mode ?? 'none',
        over.accum ?? 1,
      ).total;
    const now = est({});
    const singles = [
      est({ b: 1, accum: 4 }),
      est({ b: 2, accum: 2 }),
      est({ seq: 32 }),
      est({ seq: 16 }),
      est({ seq: 8 }),
      est({ mode: 'selective' }),
      est({ mode: 'full' }),
      est({ nf4: true }),
    ];
    const best = Math.min(...singles);
    expect(best).toBeLessThan(now);

    // A budget the best single change fits, but not the current configuration.
    const some = (best + now) / 2;
    const a = memoryAdvice(cfg, llama, 4, some);
    expect(a).toMatch(/^To fit in [0-9.]+ [KM]iB, change one of: /);
    expect(sizes(a).length).toBeGreaterThan(0);
    for (const s of sizes(a)) expect(s, a).toBeLessThanOrEqual(slack(some));

    // Below every single change, above the changes together.
    const together = est({ b: 1, accum: 4, mode: 'full', nf4: true, seq: 8 });
    expect(together).toBeLessThan(best);
    const tight = (together + best) / 2;
    const b = memoryAdvice(cfg, llama, 4, tight);
    expect(b).toMatch(
      /^No single change fits in [0-9.]+ [KM]iB; together, training\.batch_size: 1 with training\.grad_accum: 4, .*model\.quantize: nf4.* need ~/,
    );
    for (const s of sizes(b)) expect(s, b).toBeLessThanOrEqual(slack(tight));

    // Nothing fits.
    const c = memoryAdvice(cfg, llama, 4, 1024);
    expect(c).toMatch(
      /^Not even the smallest configuration finllm can run here \(.*\) fits in 1 KiB: it needs ~[0-9.]+ [KM]iB; a device with more memory is needed\.$/,
    );

    // Without a budget (after an out-of-memory stop the estimate is known to be short) every change that lowers it is listed.
    expect(memoryAdvice(cfg, llama, 4)).toContain(
      `training.batch_size (now 4): 2 needs ~${formatBytes(est({ b: 2, accum: 2 }))}`,
    );
  });

  it('batch_size: auto on a device too small for micro-batch 1: the advice only names settings whose estimate fits', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-auto-small-'));
    const cfg = config(dir, [
      'model.quantize=none',
      'training.batch_size=auto',
      'training.effective_batch_size=4',
      'training.max_steps=1',
    ]);
    const llama = await loadLlamaConfig(cfg.model.path);
    const one = estimateStep(cfg, llama, 1, 'none', 4).total;
    const capacity = Math.floor((0.8 * one) / AUTO_BATCH_HEADROOM);
    const err = await withCapacity(capacity, () =>
      TrainingRun.setup(cfg, { quiet: true }).then(
        () => null,
        (e: unknown) => e,
      ),
    );
    expect(err).toBeInstanceOf(RuntimeFailure);
    const msg = (err as Error).message;
    expect(msg).toMatch(/batch_size: auto: not even a micro-batch of 1 × 64 tokens fits/);
    const advice = msg.slice(msg.indexOf('device memory'));
    const offered = sizes(advice.slice(advice.indexOf(')') + 1));
    expect(offered.length, msg).toBeGreaterThan(0);
    for (const s of offered) expect(s, msg).toBeLessThanOrEqual(slack(AUTO_BATCH_HEADROOM * capacity));
  });

  it('training.batch_size (or, with auto, effective_batch_size) above the number of training examples is refused before the model loads', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-batch-data-'));
    await expect(TrainingRun.setup(config(dir, ['training.batch_size=1000000000']), { quiet: true })).rejects.toThrow(
      "key 'training.batch_size': 1000000000 is more than the 16 training examples; set it to at most 16 (or add data)",
    );
    await expect(
      TrainingRun.setup(config(dir, ['training.batch_size=auto', 'training.effective_batch_size=17']), { quiet: true }),
    ).rejects.toThrow("key 'training.effective_batch_size': 17 is more than the 16 training examples");
    expect(existsSync(join(dir, 'checkpoints'))).toBe(false);
  });
});
