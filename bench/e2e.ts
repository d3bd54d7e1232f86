// End-to-end benchmark, shaped like ../shared/bench/peer_peft.py so the two can be compared as a
// ratio on one card: a random-init Llama at a preset's shapes, LoRA r=16 on all linear layers,
// AdamW, batch B × T random tokens; then greedy decoding with the LoRA installed (64-token prompts,
// 128 new tokens) at batch 1 and batch 8, and the time to first token of a 512-token prompt.
//
//   npm run bench:e2e -- --preset 1.1b [--quantize nf4] [--storage bf16] [--batch 8] [--seq 512]
//                        [--skip-train] [--new-tokens 128] [--ttft-prompt 512]
//
// Training throughput is wall-clock over steps that each end with a GPU sync (the same as the
// peer's torch.cuda.synchronize around its loop); peak memory is the engine pool's peak live bytes.
// Decode figures come from bench/decode.ts (per step after the first token): tokens/s, and the
// per-step CPU time (wall − GPU time of the step's passes, from timestamp queries) with dispatches,
// submits and readbacks per step, so a CPU-only machine shows the overhead even though its "GPU"
// times mean nothing. The JSON's `decode` block carries the GPU summary's keys for the run's weights
// (b1_nf4_tok_s / b8_nf4_tok_s with --quantize nf4, b1_bf16_tok_s / b8_bf16_tok_s with --storage
// bf16, ttft_512_ms). Results: a table and bench/results/e2e-<preset>-<time>.json.
import { mkdtempSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engine, initEngine } from '../src/engine/tensor.js';
import { Rng } from '../src/engine/random.js';
import { AdamW } from '../src/kernels/optim.js';
import { initModel } from '../src/llama/init.js';
import { LlamaModel, shiftLabels } from '../src/llama/model.js';
import { trainStep } from '../src/pipeline/train/trainer.js';
import { formatDecode, measureDecode, measureTtft } from './decode.js';
import type { Batch } from '../src/pipeline/data/index.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const e = await initEngine();
const software = e.dev.info.isSoftware;
const preset = arg('preset', software ? 'tiny' : '1.1b');
const B = Number(arg('batch', software ? '2' : '8'));
const T = Number(arg('seq', software ? '64' : '512'));
const steps = Number(arg('steps', software ? '3' : '10'));
const quantize = arg('quantize', 'none');
const storage = arg('storage', software ? 'f32' : 'bf16') as 'f32' | 'bf16' | 'f16';
const newTokens = Number(arg('new-tokens', software ? '32' : '128'));
const ttftPrompt = Number(arg('ttft-prompt', '512'));
const skipTrain = process.argv.includes('--skip-train');

const dir = mkdtempSync(join(tmpdir(), 'finllm-bench-'));
console.log(`adapter: ${e.dev.name}`);
console.log(`model: preset ${preset} (random init), storage ${storage}, quantize ${quantize}; LoRA r=16 all linear; batch ${B} x ${T}`);
await initModel(dir, { preset, tokenizerDir: join(process.cwd(), 'models/tiny-fin'), seed: 0 });
const model = await LlamaModel.load(dir, { storage, ...(quantize === 'nf4' ? { quantize: 'nf4' as const } : {}) });
rmSync(dir, { recursive: true, force: true });
model.initLora({ r: 16, loraAlpha: 32, loraDropout: 0 }, 0);
const opt = new AdamW(model.loraParameters(), { lr: 2e-4 });
const rng = new Rng(0);
const V = model.config.vocabSize;
const ids = Int32Array.from({ length: B * T }, () => rng.int(V));
const batch: Batch = {
  inputIds: ids,
  labels: shiftLabels(ids, B, T),
  positionIds: Int32Array.from({ length: B * T }, (_, i) => i % T),
  segmentIds: new Int32Array(B * T).fill(1),
  attentionMask: new Uint8Array(B * T).fill(1),
  batchSize: B,
  seqLen: T,
  numTargetTokens: B * (T - 1),
  numExamples: B,
};
const step = (i: number) => trainStep(model, opt, [batch], { lr: 2e-4, stepIndex: i, seed: 0, maxGradNorm: 1.0 });
let stepMs: number | null = null;
let loss = NaN;
let peak = 0;
if (!skipTrain) {
  for (let i = 0; i < 2; i++) await step(i); // warm-up: pipelines compile, pool fills
  e.pool.resetPeak();
  const t0 = performance.now();
  for (let i = 0; i < steps; i++) loss = (await step(i + 2)).loss;
  stepMs = (performance.now() - t0) / steps;
  peak = e.pool.stats().peakBytes;
}

model.training = false;
const decodeRuns = [];
for (const b of [1, 8]) {
  await measureDecode(model, { batch: b, promptTokens: 64, newTokens: 5 }); // warm-up: pipelines compile
  decodeRuns.push(await measureDecode(model, { batch: b, promptTokens: 64, newTokens }));
}
const [b1, b8] = decodeRuns as [Awaited<ReturnType<typeof measureDecode>>, Awaited<ReturnType<typeof measureDecode>>];
let ttft: number | null = null;
if (ttftPrompt > 0) {
  await measureTtft(model, ttftPrompt);
  ttft = await measureTtft(model, ttftPrompt);
}
const weights = quantize === 'nf4' ? 'nf4' : storage;
const perStep = (m: typeof b1) => ({
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

const result = {
  adapter: e.dev.name,
  preset,
  storage,
  quantize,
  batch: B,
  seq: T,
  steps,
  step_ms: stepMs,
  train_tok_s: stepMs === null ? null : (B * T) / (stepMs / 1000),
  peak_mem_gb: stepMs === null ? null : peak / 1e9,
  decode_tok_s: b1.tokS,
  decode: {
    [`b1_${weights}_tok_s`]: b1.tokS,
    [`b8_${weights}_tok_s`]: b8.tokS,
    ttft_512_ms: ttftPrompt === 512 ? ttft : null,
    ttft_ms: ttft,
    ttft_prompt_tokens: ttftPrompt,
    prompt_tokens: 64,
    new_tokens: newTokens,
    b1: perStep(b1),
    b8: perStep(b8),
  },
  loss,
  date: new Date().toISOString(),
};
if (stepMs !== null) console.log(`train: ${stepMs.toFixed(1)} ms/step, ${result.train_tok_s!.toFixed(0)} tok/s, peak ${result.peak_mem_gb!.toFixed(2)} GB (engine pool)`);
console.log(`decode (LoRA r16, 64-token prompts, ${newTokens} new tokens):`);
console.log(`  ${formatDecode(b1)}`);
console.log(`  ${formatDecode(b8)}`);
if (ttft !== null) console.log(`time to first token, ${ttftPrompt}-token prompt: ${ttft.toFixed(1)} ms`);
const resDir = join(process.cwd(), 'bench', 'results');
mkdirSync(resDir, { recursive: true });
const file = join(resDir, `e2e-${preset}-${result.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(`${file}.tmp`, JSON.stringify(result, null, 2));
renameSync(`${file}.tmp`, file);
console.log(`wrote ${file}`);
opt.dispose();
model.dispose();
engine().dev.destroy();
