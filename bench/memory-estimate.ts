// How long the training-step memory estimate takes (src/pipeline/train/memory.ts: one step of
// the library's code run on a MetaDevice, counted), at model presets' shapes, for LoRA, QLoRA and
// full training in each checkpointing mode: the time of each estimate (each shape counted once: the
// estimates are kept per shape; one estimate at another batch size first warms the JIT), the
// estimate, and the GPU device's counters across all of it (no buffer created, nothing written or
// dispatched). Results: a table and <out>/memory-estimate-<time>.json (default bench/results).
//
//   npm run bench:memory -- [--presets tiny,1.1b] [--batch 4] [--seq 512] [--precision fp32|fp16-mixed] [--out dir]
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import type { Precision } from '../src/engine/precision.js';
import { initEngine } from '../src/engine/tensor.js';
import { llamaPreset } from '../src/llama/config.js';
import { CHECKPOINT_MODES } from '../src/llama/model.js';
import { LINEAR_MODULES } from '../src/llama/weights.js';
import { formatBytes } from '../src/pipeline/train/logging.js';
import { estimateTrainingMemory, type TrainingMemoryShape } from '../src/pipeline/train/memory.js';

const { values } = parseArgs({
  options: {
    presets: { type: 'string', default: 'tiny,160m,1.1b' },
    batch: { type: 'string', default: '4' },
    seq: { type: 'string', default: '512' },
    precision: { type: 'string', default: 'fp32' },
    out: { type: 'string', default: 'bench/results' },
  },
});

const e = await initEngine();
const dev = e.dev;
const before = { ...dev.stats, live: e.pool.liveBytes, peak: e.pool.peakBytes };
const B = Number(values.batch);
const T = Number(values.seq);
const precision = values.precision as Precision;
const rows: Record<string, string | number>[] = [];
for (const preset of values.presets!.split(',')) {
  const config = llamaPreset(preset);
  const methods: { name: string; shape: Omit<TrainingMemoryShape, 'checkpointing'> }[] = [
    {
      name: 'lora r16',
      shape: {
        config,
        batchSize: B,
        seqLen: T,
        quantize: 'none',
        storage: 'bf16',
        lora: { r: 16, targetModules: LINEAR_MODULES },
        precision,
      },
    },
    {
      name: 'qlora r16',
      shape: {
        config,
        batchSize: B,
        seqLen: T,
        quantize: 'nf4',
        storage: 'bf16',
        doubleQuant: true,
        lora: { r: 16, targetModules: LINEAR_MODULES },
        precision,
      },
    },
    {
      name: 'full',
      shape: {
        config,
        batchSize: B,
        seqLen: T,
        method: 'full',
        quantize: 'none',
        storage: 'f32',
        lora: null,
        precision,
      },
    },
  ];
  for (const m of methods) {
    for (const mode of CHECKPOINT_MODES) {
      const shape: TrainingMemoryShape = { ...m.shape, checkpointing: mode };
      if (rows.length === 0) estimateTrainingMemory({ ...shape, batchSize: B + 1 });
      const t0 = performance.now();
      const est = estimateTrainingMemory(shape);
      const ms = performance.now() - t0;
      const [total, peakAt] = [est.total, est.peakAt];
      rows.push({
        preset,
        method: m.name,
        checkpointing: mode,
        estimate_bytes: total,
        estimate: formatBytes(total),
        peak_at: peakAt,
        ms: Number(ms.toFixed(1)),
      });
      console.log(
        `${preset.padEnd(6)} ${m.name.padEnd(10)} ${mode.padEnd(9)} ${formatBytes(total).padStart(11)}  ${ms.toFixed(1).padStart(8)} ms  (peak during ${peakAt})`,
      );
    }
  }
}
const after = { ...dev.stats, live: e.pool.liveBytes, peak: e.pool.peakBytes };
const device = {
  buffers_created: after.buffersCreated - before.buffersCreated,
  dispatches: after.dispatches - before.dispatches,
  writes: after.writes - before.writes,
  pool_live_bytes: after.live - before.live,
  pool_peak_bytes: after.peak - before.peak,
};
console.log(`on ${dev.name}: ${JSON.stringify(device)}`);
mkdirSync(values.out!, { recursive: true });
const file = join(values.out!, `memory-estimate-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
writeFileSync(
  file,
  JSON.stringify({ device: dev.name, batch: B, seq: T, precision, rows, device_counters: device }, null, 2) + '\n',
);
console.log(`wrote ${file}`);
