// End-to-end benchmark with the exact shapes of the peer (bench/peer/peer_peft.py) so the two can be
// compared as a ratio on one card: a random-init Llama at a preset's shapes with the peer's
// vocabulary of 32000 (not the bundled tokenizer's 600: the LM head would be 50x cheaper), LoRA
// r=16 alpha 32 on all linear layers, AdamW, batch B × T random tokens; then greedy decoding
// (batch 1, 64-token prompt, 128 new tokens).
//
//   npm run bench:e2e -- --preset 1.1b [--quantize nf4] [--storage bf16] [--precision fp16-mixed]
//                        [--grad-checkpointing] [--batch 8] [--seq 512] [--vocab 32000] [--tag name] [--out dir]
//
// Throughput is wall-clock over steps that each end with a GPU sync (the same as the peer's
// torch.cuda.synchronize around its loop); peak memory is the engine pool's peak live bytes (the
// GPU session polls nvidia-smi for the device's). Results: a table and
// <out>/e2e-<tag or preset>-<time>.json (default out: bench/results).
import { mkdtempSync, mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { engine, initEngine } from '../src/engine/tensor.js';
import { PRECISION_SETTINGS, precisionUnsupported, resolvePrecision, setComputePrecision, type PrecisionSetting } from '../src/engine/precision.js';
import { Rng } from '../src/engine/random.js';
import { AdamW } from '../src/kernels/optim.js';
import { initModel } from '../src/llama/init.js';
import { LlamaModel, shiftLabels } from '../src/llama/model.js';
import { generate } from '../src/llama/generate.js';
import { trainStep } from '../src/pipeline/train/trainer.js';
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
const newTokens = Number(arg('new-tokens', software ? '16' : '128'));
const vocab = Number(arg('vocab', '32000'));
const gradCkpt = process.argv.includes('--grad-checkpointing');
const tag = arg('tag', '');
const outDir = arg('out', join(process.cwd(), 'bench', 'results'));
const precisionSetting = arg('precision', 'auto') as PrecisionSetting;
if (!PRECISION_SETTINGS.includes(precisionSetting)) throw new Error(`--precision: expected ${PRECISION_SETTINGS.join(', ')}, got ${precisionSetting}`);
const precision = resolvePrecision(precisionSetting, e.dev);
const unsupported = precisionUnsupported(precision, e.dev);
if (unsupported) throw new Error(unsupported);
setComputePrecision(precision);

const dir = mkdtempSync(join(tmpdir(), 'finllm-bench-'));
console.log(`adapter: ${e.dev.name}`);
console.log(`model: preset ${preset} (random init), vocabulary ${vocab}, storage ${storage}, quantize ${quantize}, precision ${precision}${gradCkpt ? ', gradient checkpointing' : ''}; LoRA r=16 all linear; batch ${B} x ${T}`);
await initModel(dir, { preset, tokenizerDir: join(process.cwd(), 'models/tiny-fin'), seed: 0, overrides: { vocabSize: vocab } });
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
// fp16-mixed runs with a fixed loss scale of 2^16 (GradScaler's initial scale); a skipped step is reported.
const lossScale = precision === 'fp16-mixed' ? 2 ** 16 : undefined;
let skipped = 0;
const step = async (i: number) => {
  const r = await trainStep(model, opt, [batch], { lr: 2e-4, stepIndex: i, seed: 0, maxGradNorm: 1.0, gradientCheckpointing: gradCkpt, ...(lossScale ? { lossScale } : {}) });
  if (r.skipped) skipped++;
  return r;
};
for (let i = 0; i < 2; i++) await step(i); // warm-up: pipelines compile, pool fills
e.pool.resetPeak();
const t0 = performance.now();
let loss = NaN;
for (let i = 0; i < steps; i++) loss = (await step(i + 2)).loss;
const stepMs = (performance.now() - t0) / steps;
const peak = e.pool.stats().peakBytes;

model.training = false;
const prompt = Array.from({ length: 64 }, () => rng.int(V));
await generate(model, prompt, { maxNewTokens: 4, eosTokenIds: [] });
const g0 = performance.now();
const out = await generate(model, prompt, { maxNewTokens: newTokens, eosTokenIds: [] });
const genSec = (performance.now() - g0) / 1000;

const result = {
  adapter: e.dev.name,
  tag: tag || null,
  preset,
  vocab,
  storage,
  quantize,
  precision,
  grad_checkpointing: gradCkpt,
  skipped_steps: skipped,
  batch: B,
  seq: T,
  steps,
  step_ms: stepMs,
  train_tok_s: (B * T) / (stepMs / 1000),
  peak_mem_gb: peak / 1e9,
  decode_tok_s: out.tokens.length / genSec,
  loss,
  date: new Date().toISOString(),
};
console.log(`train: ${result.step_ms.toFixed(1)} ms/step, ${result.train_tok_s.toFixed(0)} tok/s, peak ${result.peak_mem_gb.toFixed(2)} GB (engine pool)`);
console.log(`decode: ${result.decode_tok_s.toFixed(1)} tok/s (batch 1, ${out.tokens.length} new tokens after a 64-token prompt)`);
mkdirSync(outDir, { recursive: true });
const file = join(outDir, `e2e-${tag || preset}-${result.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(`${file}.tmp`, JSON.stringify(result, null, 2));
renameSync(`${file}.tmp`, file);
console.log(`wrote ${file}`);
opt.dispose();
model.dispose();
engine().dev.destroy();
