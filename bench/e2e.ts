// End-to-end benchmark with the exact shapes of the HF + PEFT peer the GPU benchmark runs beside it
// (bench/peer/peer_peft.py) so the two can be compared as a ratio on one card: a random-init Llama
// at a preset's shapes with the peer's vocabulary of 32000 (not the bundled tokenizer's 600: the LM
// head would be 50x cheaper), LoRA r=16 alpha 32 on all linear layers, AdamW, batch B × T random
// tokens, once per checkpointing mode; then greedy decoding with the LoRA installed (64-token
// prompts, 128 new tokens) at batch 1 and batch 8, and the time to first token of a 512-token prompt. --precision fp16-mixed trains with f16 GEMM operands at a loss scale of 2^16
// (GradScaler's initial scale); steps skipped for inf/NaN gradients are counted.
//
//   npm run bench:e2e -- --preset 1.1b [--quantize nf4] [--storage bf16] [--batch 8] [--seq 512]
//                        [--precision fp32|fp16-mixed|auto] [--checkpointing none,selective,full]
//                        [--hidden 256 --layers 4 --vocab 8000 ...] [--tag name] [--out dir]
//                        [--skip-train] [--skip-decode] [--new-tokens 128] [--ttft-prompt 512]
//                        [--steps 10] [--model-cache DIR]
//   npm run bench:e2e -- --preset fin-s --method full --vocab 2048 --batch 16 --seq 256   # pretraining shapes
//
// --method full trains every weight instead of LoRA (f32 storage). The process CPU time per step is
// reported too: on a shared CPU (lavapipe) wall time depends on the other load, CPU time much less.
//
// Per mode: throughput is wall-clock over steps that each end with a GPU sync (the same as the
// peer's torch.cuda.synchronize around its loop); memory is the engine pool's peak live bytes
// during the timed steps, next to the memory estimate and, on NVIDIA, what nvidia-smi
// reports in use on the card after the steps (the pool's cached buffers included; the pool is
// emptied between modes). Results: a table and <out>/e2e-<tag or preset>-<time>.json (default out:
// bench/results; bench/gpu.ts passes --tag and reads them into the GPU summary), written when
// training is done (decode figures null) and again at the end, so a run stopped during decoding keeps
// its training figures (`complete: false` until the end).
//
// --model-cache DIR keeps the random checkpoint in DIR (bench/random-model.ts) and reuses it in later
// runs at the same shapes: drawing the 1.1B one costs minutes of CPU time, loading it seconds.
//
// Decode figures come from bench/decode.ts (per step after the first token): tokens/s, and the
// per-step CPU time (wall − GPU time of the step's passes, from timestamp queries) with dispatches,
// submits and readbacks per step, so a CPU-only machine shows the overhead even though its "GPU"
// times mean nothing. The JSON's `decode` block carries the GPU summary's keys for the run's weights
// (b1_nf4_tok_s / b8_nf4_tok_s with --quantize nf4, b1_bf16_tok_s / b8_bf16_tok_s with --storage
// bf16, ttft_512_ms).
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  PRECISION_SETTINGS,
  type PrecisionSetting,
  precisionUnsupported,
  resolvePrecision,
  setComputePrecision,
} from '../src/engine/precision.js';
import { Rng } from '../src/engine/random.js';
import { engine, initEngine } from '../src/engine/tensor.js';
import { AdamW } from '../src/kernels/optim.js';
import { initModel } from '../src/llama/init.js';
import { CHECKPOINT_MODES, type CheckpointMode, LlamaModel } from '../src/llama/model.js';
import { LINEAR_MODULES } from '../src/llama/weights.js';
import type { Batch } from '../src/pipeline/data/index.js';
import { wholeRowsBatch } from '../src/pipeline/data/loader.js';
import { estimateTrainingMemory } from '../src/pipeline/train/memory.js';
import { trainStep } from '../src/pipeline/train/trainer.js';
import { type DecodeMeasurement, formatDecode, measureDecode, measureTtft } from './decode.js';
import { randomModel, shapeOverrides, TOKENIZER_DIR } from './random-model.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

/** Memory in use on the card per nvidia-smi (bytes), or null without it. */
function nvidiaUsedBytes(): number | null {
  try {
    const out = execFileSync('nvidia-smi', ['--query-gpu=memory.used', '--format=csv,noheader,nounits'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    return Number(out.trim().split('\n')[0]) * 2 ** 20;
  } catch {
    return null;
  }
}

const e = await initEngine();
const software = e.dev.info.isSoftware;
const preset = arg('preset', software ? 'tiny' : '1.1b');
const B = Number(arg('batch', software ? '2' : '8'));
const T = Number(arg('seq', software ? '64' : '512'));
const steps = Number(arg('steps', software ? '3' : '10'));
const quantize = arg('quantize', 'none');
const storage = arg('storage', software ? 'f32' : 'bf16') as 'f32' | 'bf16' | 'f16';
const newTokens = Number(arg('new-tokens', software ? '16' : '128'));
const ttftPrompt = Number(arg('ttft-prompt', '512'));
const skipTrain = process.argv.includes('--skip-train');
const skipDecode = process.argv.includes('--skip-decode');
const modelCache = arg('model-cache', '');
const method = arg('method', 'lora');
// Checked before anything is measured: decoding measures tokens 1 .. n−2 (bench/decode.ts).
if (!skipDecode && !(newTokens >= 5))
  throw new Error(`--new-tokens: at least 5 (or --skip-decode), got ${arg('new-tokens', '')}`);
const modes = arg('checkpointing', CHECKPOINT_MODES.join(',')).split(',') as CheckpointMode[];
for (const m of modes)
  if (!CHECKPOINT_MODES.includes(m))
    throw new Error(`--checkpointing: '${m}' is not one of ${CHECKPOINT_MODES.join(', ')}`);
// Shape overrides (a "bigger small" model on a software adapter, say); vocabulary 32000, the peer's.
const overrides = shapeOverrides((flag) => arg(flag, ''));
const tag = arg('tag', '');
const outDir = arg('out', join(process.cwd(), 'bench', 'results'));
const precisionSetting = arg('precision', 'auto') as PrecisionSetting;
if (!PRECISION_SETTINGS.includes(precisionSetting))
  throw new Error(`--precision: expected ${PRECISION_SETTINGS.join(', ')}, got ${precisionSetting}`);
const precision = resolvePrecision(precisionSetting, e.dev);
const unsupported = precisionUnsupported(precision, e.dev);
if (unsupported) throw new Error(unsupported);
setComputePrecision(precision);
const lossScale = precision === 'fp16-mixed' ? 2 ** 16 : undefined;

const usedAtStart = nvidiaUsedBytes();
console.log(`adapter: ${e.dev.name}`);
const tModel = performance.now();
let dir: string;
if (modelCache) {
  const cached = await randomModel(modelCache, preset, overrides);
  dir = cached.dir;
  console.log(`random checkpoint: ${cached.made ? 'drawn into' : 'reused from'} ${dir}`);
} else {
  dir = mkdtempSync(join(tmpdir(), 'finllm-bench-'));
  await initModel(dir, { preset, tokenizerDir: TOKENIZER_DIR, seed: 0, overrides });
}
const model = await LlamaModel.load(dir, { storage, ...(quantize === 'nf4' ? { quantize: 'nf4' as const } : {}) });
if (!modelCache) rmSync(dir, { recursive: true, force: true });
console.log(`model ready in ${((performance.now() - tModel) / 1000).toFixed(1)} s`);
const c = model.config;
console.log(
  `model: preset ${preset} (random init; D ${c.hiddenSize}, L ${c.numHiddenLayers}, F ${c.intermediateSize}, V ${c.vocabSize}), storage ${storage}, quantize ${quantize}, precision ${precision}; ${method === 'full' ? 'full training' : 'LoRA r=16 all linear'}; batch ${B} x ${T}`,
);
if (method === 'full') model.enableFullTraining();
else model.initLora({ r: 16, loraAlpha: 32, loraDropout: 0 }, 0);
const opt = new AdamW(model.trainableParameters(), { lr: 2e-4 });
const rng = new Rng(0);
const V = c.vocabSize;
const batch: Batch = wholeRowsBatch(
  Int32Array.from({ length: B * T }, () => rng.int(V)),
  B,
  T,
);

interface ModeResult {
  checkpointing: CheckpointMode;
  step_ms: number;
  train_tok_s: number;
  cpu_ms_per_step: number;
  train_tok_per_cpu_s: number;
  peak_mem_gb: number;
  /** The memory estimate (src/pipeline/train/memory.ts). */
  estimate_gb: number;
  device_used_gb: number | null;
  loss: number;
  /** fp16-mixed: timed steps skipped for inf/NaN gradients. */
  skipped_steps: number;
}
const results: ModeResult[] = [];
const weights = quantize === 'nf4' ? 'nf4' : storage;
const result = {
  adapter: e.dev.name,
  tag: tag || null,
  preset,
  precision,
  method,
  overrides,
  params: [...(method === 'full' ? model.namedWeights().values() : [])].reduce((n, t) => n + t.numel, 0) || null,
  storage,
  quantize,
  batch: B,
  seq: T,
  steps,
  modes: results,
  decode_tok_s: null as number | null,
  decode: null as Record<string, unknown> | null,
  date: new Date().toISOString(),
  complete: false,
};
mkdirSync(outDir, { recursive: true });
const file = join(outDir, `e2e-${tag || preset}-${result.date.replace(/[:.]/g, '-')}.json`);
/** Writes the results so far (temp file, then rename). */
function save(): void {
  writeFileSync(`${file}.tmp`, JSON.stringify(result, null, 2));
  renameSync(`${file}.tmp`, file);
}
let stepIndex = 0;
for (const mode of skipTrain ? [] : modes) {
  let skipped = 0;
  const step = async () => {
    const r = await trainStep(model, opt, [batch], {
      lr: 2e-4,
      stepIndex: stepIndex++,
      seed: 0,
      maxGradNorm: 1.0,
      gradientCheckpointing: mode,
      ...(lossScale ? { lossScale } : {}),
    });
    if (r.skipped) skipped++;
    return r;
  };
  e.pool.trim(); // each mode starts from an empty cache, so the device's number is this mode's
  for (let i = 0; i < 2; i++) await step(); // warm-up: pipelines compile, pool fills
  e.pool.resetPeak();
  skipped = 0;
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  let loss = NaN;
  for (let i = 0; i < steps; i++) loss = (await step()).loss;
  const stepMs = (performance.now() - t0) / steps;
  const cpu = process.cpuUsage(cpu0);
  const cpuStepMs = (cpu.user + cpu.system) / 1000 / steps;
  const used = nvidiaUsedBytes();
  const estimate = estimateTrainingMemory({
    config: c,
    batchSize: B,
    seqLen: T,
    method: method === 'full' ? 'full' : 'lora',
    quantize: quantize === 'nf4' ? 'nf4' : 'none',
    storage,
    lora: { r: 16, targetModules: LINEAR_MODULES },
    checkpointing: mode,
    maxBindingBytes: e.dev.limits.maxStorageBufferBindingSize,
    precision,
  });
  const r: ModeResult = {
    checkpointing: mode,
    step_ms: stepMs,
    train_tok_s: (B * T) / (stepMs / 1000),
    cpu_ms_per_step: cpuStepMs,
    train_tok_per_cpu_s: (B * T) / (cpuStepMs / 1000),
    peak_mem_gb: e.pool.stats().peakBytes / 1e9,
    estimate_gb: estimate.total / 1e9,
    device_used_gb: used !== null && usedAtStart !== null ? (used - usedAtStart) / 1e9 : null,
    loss,
    skipped_steps: skipped,
  };
  results.push(r);
  save();
  const device = r.device_used_gb !== null ? `, nvidia-smi +${r.device_used_gb.toFixed(2)} GB` : '';
  console.log(
    `train ${mode.padEnd(9)}: ${r.step_ms.toFixed(1)} ms/step, ${r.train_tok_s.toFixed(0)} tok/s (CPU ${r.cpu_ms_per_step.toFixed(0)} ms/step), pool peak ${r.peak_mem_gb.toFixed(4)} GB (estimate ${r.estimate_gb.toFixed(4)} GB${device}), loss ${loss.toFixed(5)}`,
  );
}

model.training = false;
const perStep = (m: DecodeMeasurement) => ({
  tok_s: m.tokS,
  ms_per_step: m.msPerStep,
  gpu_ms_per_step: m.gpuMsPerStep,
  cpu_ms_per_step: m.cpuMsPerStep,
  dispatches_per_step: m.perStep.dispatches,
  submits_per_step: m.perStep.submits,
  readbacks_per_step: m.perStep.readbacks,
  readback_bytes_per_step: m.perStep.readBytes,
  bind_groups_per_step: m.perStep.bindGroups,
  buffers_created_per_step: m.perStep.buffersCreated,
});
if (!skipDecode) {
  const decodeRuns: DecodeMeasurement[] = [];
  for (const b of [1, 8]) {
    await measureDecode(model, { batch: b, promptTokens: 64, newTokens: 5 }); // warm-up: pipelines compile
    decodeRuns.push(await measureDecode(model, { batch: b, promptTokens: 64, newTokens }));
  }
  const [b1, b8] = decodeRuns as [DecodeMeasurement, DecodeMeasurement];
  let ttft: number | null = null;
  if (ttftPrompt > 0) {
    await measureTtft(model, ttftPrompt);
    ttft = await measureTtft(model, ttftPrompt);
  }
  result.decode_tok_s = b1.tokS;
  result.decode = {
    [`b1_${weights}_tok_s`]: b1.tokS,
    [`b8_${weights}_tok_s`]: b8.tokS,
    ttft_512_ms: ttftPrompt === 512 ? ttft : null,
    ttft_ms: ttft,
    ttft_prompt_tokens: ttftPrompt,
    prompt_tokens: 64,
    new_tokens: newTokens,
    b1: perStep(b1),
    b8: perStep(b8),
  };
  console.log(`decode (LoRA r16, 64-token prompts, ${newTokens} new tokens):`);
  console.log(`  ${formatDecode(b1)}`);
  console.log(`  ${formatDecode(b8)}`);
  if (ttft !== null) console.log(`time to first token, ${ttftPrompt}-token prompt: ${ttft.toFixed(1)} ms`);
}
result.complete = true;
save();
console.log(`wrote ${file}`);
opt.dispose();
model.dispose();
engine().dev.destroy();
