// Does fp16-mixed training follow the fp32 loss curve? Trains a config (default: configs/default.yaml,
// full fine-tuning of the bundled base model on the bundled tasks) for N steps in fp32 and in
// fp16-mixed with the same seed, data order and dropout masks, and compares the per-step losses.
//
//   npm run build && node dist/bench/precision-curve.js [--steps 200] [--config FILE] [--set key=value ...]
//
// Prints the largest and mean per-step |loss gap|, the gap of the last 10 steps' mean, the loss
// scale history and skipped steps; writes bench/results/precision-curve-<time>.json. (CI runs a
// 10-step version of this comparison in tests/pipeline/train/precision.test.ts.)
import { mkdirSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { initEngine } from '../src/engine/tensor.js';
import { loadConfig } from '../src/pipeline/config.js';
import { runTraining } from '../src/pipeline/train/trainer.js';

function args(name: string): string[] {
  const out: string[] = [];
  process.argv.forEach((a, i) => {
    if (a === `--${name}` && process.argv[i + 1] !== undefined) out.push(process.argv[i + 1]!);
  });
  return out;
}

const steps = Number(args('steps')[0] ?? 200);
const extra = args('set');
const configFile = args('config')[0] ?? join(process.cwd(), 'configs/default.yaml');
const e = await initEngine();
if (!e.dev.has('shader-f16')) {
  console.error(`this adapter (${e.dev.name}) has no shader-f16: fp16-mixed cannot run here`);
  process.exit(1);
}

interface Rec {
  step: number;
  loss?: number;
  loss_scale?: number;
  skipped_steps?: number;
}

async function run(
  precision: 'fp32' | 'fp16-mixed',
): Promise<{ losses: number[]; scales: number[]; skipped: number; seconds: number; finalVal: number | null }> {
  const dir = mkdtempSync(join(tmpdir(), `finllm-curve-${precision}-`));
  const cfg = loadConfig({
    file: configFile,
    sets: [
      `output.dir=${dir}`,
      `training.max_steps=${steps}`,
      `training.precision=${precision}`,
      'training.log_every=1',
      'training.eval_every=0',
      'training.save_every=0',
      'logging.console=false',
      ...extra,
    ],
  });
  const t0 = performance.now();
  const r = await runTraining(cfg, { quiet: true });
  const recs = readFileSync(join(dir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Rec)
    .filter((x) => x.loss !== undefined);
  return {
    losses: recs.map((x) => x.loss!),
    scales: recs.map((x) => x.loss_scale ?? NaN),
    skipped: r.lossScaling?.skippedSteps ?? 0,
    seconds: (performance.now() - t0) / 1000,
    finalVal: r.finalValLoss,
  };
}

console.log(`adapter: ${e.dev.name}; ${steps} steps of ${configFile} in fp32 and fp16-mixed`);
const a = await run('fp32');
console.log(
  `fp32: ${a.seconds.toFixed(0)} s, loss ${a.losses[0]!.toFixed(4)} -> ${a.losses[a.losses.length - 1]!.toFixed(4)}, final val ${a.finalVal?.toFixed(4)}`,
);
const b = await run('fp16-mixed');
console.log(
  `fp16-mixed: ${b.seconds.toFixed(0)} s, loss ${b.losses[0]!.toFixed(4)} -> ${b.losses[b.losses.length - 1]!.toFixed(4)}, final val ${b.finalVal?.toFixed(4)}, skipped steps ${b.skipped}`,
);
const gaps = a.losses.map((v, i) => Math.abs(v - b.losses[i]!));
const worst = Math.max(...gaps);
const worstStep = gaps.indexOf(worst) + 1;
const mean = gaps.reduce((s, g) => s + g, 0) / gaps.length;
const tail = (x: number[]) => x.slice(-10).reduce((s, v) => s + v, 0) / Math.min(10, x.length);
const tailGap = Math.abs(tail(a.losses) - tail(b.losses));
console.log(
  `largest per-step |loss gap| ${worst.toExponential(3)} (step ${worstStep}); mean ${mean.toExponential(3)}; last-10-step means differ by ${tailGap.toExponential(3)}`,
);
console.log(`final validation loss: fp32 ${a.finalVal?.toFixed(5)}, fp16-mixed ${b.finalVal?.toFixed(5)}`);

const date = new Date().toISOString();
const dir = join(process.cwd(), 'bench', 'results');
mkdirSync(dir, { recursive: true });
const file = join(dir, `precision-curve-${date.replace(/[:.]/g, '-')}.json`);
writeFileSync(
  `${file}.tmp`,
  JSON.stringify(
    {
      adapter: e.dev.name,
      date,
      config: configFile,
      steps,
      extra,
      largest_gap: worst,
      largest_gap_step: worstStep,
      mean_gap: mean,
      tail_gap: tailGap,
      fp32: a,
      fp16_mixed: b,
    },
    null,
    2,
  ),
);
renameSync(`${file}.tmp`, file);
console.log(`wrote ${file}`);
e.dev.destroy();
