// Where a training step's CPU time goes, kernel family by kernel family, on a software adapter
// (lavapipe runs every kernel on the CPU, so its "GPU time" is process CPU time).
//
//   node dist/bench/profile-step.js --preset fin-s --method full --vocab 2048 --batch 8 --seq 256 [--reps 3]
//
// Captures every dispatch of one training step (after two warm-up steps), then replays the
// captured dispatches of each family (the pipeline key's part before ':') on their own, `reps` times
// in a row, and reads the process CPU time (user + system, all threads: lavapipe's included) around
// each replay. Families are replayed interleaved (all families once, then again) so that a change
// in the machine's other load spreads over all of them. The replays reuse the step's buffers, whose
// contents by then are whatever the step left: timings only, nothing is read back. A replay of a
// family that updates the weights (AdamW) changes them; the model is not used afterwards.
// Also reported: the step's own CPU time, and what is left over beside the kernels (the host side:
// autograd, recording, submits, readbacks, and the sync of each replay, measured on its own).
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DispatchSpec } from '../src/engine/device.js';
import { Rng } from '../src/engine/random.js';
import { initEngine } from '../src/engine/tensor.js';
import { AdamW } from '../src/kernels/optim.js';
import { initModel } from '../src/llama/init.js';
import { LlamaModel } from '../src/llama/model.js';
import type { Batch } from '../src/pipeline/data/index.js';
import { wholeRowsBatch } from '../src/pipeline/data/loader.js';
import { trainStep } from '../src/pipeline/train/trainer.js';
import { shapeOverrides, TOKENIZER_DIR } from './random-model.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const e = await initEngine();
const dev = e.dev;
const preset = arg('preset', 'fin-s');
const B = Number(arg('batch', '8'));
const T = Number(arg('seq', '256'));
const reps = Number(arg('reps', '3'));
const rounds = Number(arg('rounds', '2'));
const method = arg('method', 'full');
const overrides = shapeOverrides((flag) => arg(flag, ''));
const outDir = arg('out', join(process.cwd(), 'bench', 'results'));

const dir = mkdtempSync(join(tmpdir(), 'finllm-profile-'));
await initModel(dir, { preset, tokenizerDir: TOKENIZER_DIR, seed: 0, overrides });
const model = await LlamaModel.load(dir, { storage: 'f32' });
rmSync(dir, { recursive: true, force: true });
if (method === 'full') model.enableFullTraining();
else model.initLora({ r: 16, loraAlpha: 32, loraDropout: 0 }, 0);
const opt = new AdamW(model.trainableParameters(), { lr: 2e-4 });
const rng = new Rng(0);
const V = model.config.vocabSize;
const batch: Batch = wholeRowsBatch(
  Int32Array.from({ length: B * T }, () => rng.int(V)),
  B,
  T,
);
let stepIndex = 0;
const step = () =>
  trainStep(model, opt, [batch], {
    lr: 2e-4,
    stepIndex: stepIndex++,
    seed: 0,
    maxGradNorm: 1.0,
    gradientCheckpointing: 'none',
  });
const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

console.log(
  `adapter: ${dev.name}; cpu kernels: ${dev.info.cpuKernels}; preset ${preset}, ${method}, batch ${B} x ${T}, vocab ${V}`,
);
for (let i = 0; i < 2; i++) await step(); // warm-up: pipelines compile, pool fills

// The step itself, then the same step captured.
const c0 = process.cpuUsage();
const d0 = dev.stats.dispatches;
await step();
const stepCpu = cpuMs(process.cpuUsage(c0));
const dispatchesPerStep = dev.stats.dispatches - d0;
const captured: DispatchSpec[] = [];
dev.onDispatch = (s) => captured.push({ ...s, uniforms: s.uniforms?.slice(0) });
await step();
dev.onDispatch = null;

const families = new Map<string, DispatchSpec[]>();
for (const s of captured) {
  const fam = s.pipeline.label.split(':')[0]!;
  let list = families.get(fam);
  if (!list) families.set(fam, (list = []));
  list.push(s);
}

// The cost of a sync with nothing to run (subtracted from each replay).
await dev.sync();
const s0 = process.cpuUsage();
for (let i = 0; i < 20; i++) await dev.sync();
const syncCpu = cpuMs(process.cpuUsage(s0)) / 20;

const spent = new Map<string, number[]>();
for (let r = 0; r < rounds; r++) {
  for (const [fam, list] of families) {
    const t0 = process.cpuUsage();
    for (let k = 0; k < reps; k++) {
      for (const s of list) dev.dispatch(s);
      await dev.sync();
    }
    const ms = (cpuMs(process.cpuUsage(t0)) - reps * syncCpu) / reps;
    let l = spent.get(fam);
    if (!l) spent.set(fam, (l = []));
    l.push(ms);
  }
}

const rows = [...families].map(([fam, list]) => {
  const ms = spent.get(fam)!;
  return {
    family: fam,
    dispatches: list.length,
    pipelines: new Set(list.map((s) => s.pipeline.label)).size,
    cpu_ms: ms.reduce((a, b) => a + b, 0) / ms.length,
    cpu_ms_rounds: ms,
  };
});
rows.sort((a, b) => b.cpu_ms - a.cpu_ms);
const kernels = rows.reduce((a, r) => a + r.cpu_ms, 0);
console.log(
  `step: ${stepCpu.toFixed(0)} CPU-ms, ${dispatchesPerStep} dispatches; kernels replayed alone: ${kernels.toFixed(0)} CPU-ms; rest (host side): ${(stepCpu - kernels).toFixed(0)} CPU-ms`,
);
console.log('| family | dispatches | pipelines | CPU ms / step | share of step |');
console.log('|---|---|---|---|---|');
for (const r of rows)
  console.log(
    `| ${r.family} | ${r.dispatches} | ${r.pipelines} | ${r.cpu_ms.toFixed(1)} | ${((100 * r.cpu_ms) / stepCpu).toFixed(1)}% |`,
  );
const result = {
  adapter: dev.name,
  cpu_kernels: dev.info.cpuKernels,
  preset,
  method,
  batch: B,
  seq: T,
  vocab: V,
  reps,
  rounds,
  step_cpu_ms: stepCpu,
  dispatches_per_step: dispatchesPerStep,
  sync_cpu_ms: syncCpu,
  kernels_cpu_ms: kernels,
  families: rows,
  date: new Date().toISOString(),
};
mkdirSync(outDir, { recursive: true });
const file = join(outDir, `profile-step-${preset}-${result.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(`${file}.tmp`, JSON.stringify(result, null, 2));
renameSync(`${file}.tmp`, file);
console.log(`wrote ${file}`);
e.pool.trim();
