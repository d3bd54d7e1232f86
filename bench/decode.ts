// Decode benchmark: where each generated token's time goes. Greedy decoding of random prompts
// (no EOS), batch 1 (`generate`) and batch B (`generateBatch`); the counters run from the 2nd to
// the (n−1)th token of row 0 (after the prefill, before the end), so the figures are per decode step:
//
//   tok/s            generated tokens (all rows) per wall-clock second
//   ms/step          wall time per decode step (one token for every row)
//   gpu ms/step      summed GPU time of the step's compute passes (timestamp queries)
//   cpu ms/step      wall − GPU: time the GPU waits on the CPU (recording, submits, readbacks)
//   per step         dispatches, compute passes, submits, bind groups created, buffers created,
//                    queue writes, readbacks and bytes read back
//
//   npm run bench:decode -- [--model DIR | --preset tiny|160m|1.1b] [--storage f32|bf16|f16]
//                           [--quantize nf4] [--lora] [--batch 1,8] [--prompt 64] [--new-tokens 32]
//   --peer llama.cpp     also decodes the same model (exported to GGUF f32), prompt and token count
//                        in llama.cpp (node-llama-cpp: CPU build, and Vulkan when it finds a device),
//                        prints its tok/s and the ratio finllm / llama.cpp at batch 1;
//                        --peer-threads N: llama.cpp's CPU threads (default 1, like LP_NUM_THREADS=1
//                        for lavapipe; use the core count on an idle machine)
//   --json FILE          results as JSON (default bench/results/decode-<time>.json)
//   --cpu-profile FILE   writes a V8 CPU profile of the measured steps only (the main thread:
//                        recording, submits, Dawn's polling while it waits, sampling on the CPU)
//
// Time to first token (`ttft`) is the wall time of the prefill plus the first sampled token for
// one prompt of --ttft-prompt tokens (default 512; 0 skips it).
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { DeviceStats } from '../src/engine/device.js';
import { Rng } from '../src/engine/random.js';
import { engine, initEngine } from '../src/engine/tensor.js';
import { generate, generateBatch } from '../src/llama/generate.js';
import { exportGguf } from '../src/llama/gguf.js';
import { initModel } from '../src/llama/init.js';
import { LlamaModel } from '../src/llama/model.js';
import { llamaCppDecode, type PeerDecode } from './peer/llamacpp.js';

export interface DecodeMeasurement {
  batch: number;
  promptTokens: number;
  steps: number;
  tokS: number;
  msPerStep: number;
  /** Null when the adapter has no timestamp queries. */
  gpuMsPerStep: number | null;
  cpuMsPerStep: number | null;
  perStep: Record<keyof DeviceStats, number>;
  /** With cpuProfile: the main thread's time per step. */
  mainThread: MainThreadTime | null;
}

/** The random prompts the benchmark decodes (the peer gets the same ids). */
export function decodePrompts(rng: Rng, vocabSize: number, batch: number, promptTokens: number): number[][] {
  return Array.from({ length: batch }, () => Array.from({ length: promptTokens }, () => rng.int(vocabSize)));
}

function statsDiff(a: DeviceStats, b: DeviceStats, steps: number): Record<keyof DeviceStats, number> {
  const out = {} as Record<keyof DeviceStats, number>;
  for (const k of Object.keys(a) as (keyof DeviceStats)[]) out[k] = (b[k] - a[k]) / steps;
  return out;
}

/**
 * Greedy decoding of `batch` random prompts of `promptTokens` tokens for `newTokens` tokens each;
 * measures the steps after the first token (see the header).
 */
export async function measureDecode(
  model: LlamaModel,
  opts: { batch: number; promptTokens: number; newTokens: number; seed?: number; cpuProfile?: string },
): Promise<DecodeMeasurement> {
  const dev = engine().dev;
  const rng = new Rng(opts.seed ?? 1);
  const V = model.config.vocabSize;
  const prompts = decodePrompts(rng, V, opts.batch, opts.promptTokens);
  const sampling = { maxNewTokens: opts.newTokens, eosTokenIds: [] as number[] };
  if (opts.newTokens < 5) throw new RangeError('measureDecode: at least 5 new tokens (the window is tokens 1 .. n−2)');
  // The window: from row 0's 2nd token to its (n−1)th, n − 3 steps. Between two token callbacks the
  // decoder records exactly as many steps as tokens pass, whether it runs a step ahead or not.
  const first = 1;
  const last = opts.newTokens - 2;
  const steps = last - first;
  let t0 = 0;
  let t1 = 0;
  let s0: DeviceStats | null = null;
  let s1: DeviceStats | null = null;
  let gpu = null as { seconds: number } | null;
  let timing = false;
  let profile: CpuProfile | null = null;
  const session = opts.cpuProfile ? new Session() : null;
  if (session) {
    session.connect();
    await session.post('Profiler.enable');
  }
  let seen = 0;
  const onRow0 = async () => {
    const t = seen++;
    if (t === first) {
      if (session) await session.post('Profiler.start');
      timing = dev.startPassTiming();
      s0 = { ...dev.stats };
      t0 = performance.now();
    } else if (t === last) {
      t1 = performance.now();
      s1 = { ...dev.stats };
      if (session) profile = (await session.post('Profiler.stop')).profile as CpuProfile;
      if (timing) gpu = await dev.stopPassTiming();
    }
  };
  if (opts.batch === 1) {
    await generate(model, prompts[0]!, sampling, onRow0);
  } else {
    await generateBatch(model, prompts, sampling, async (row) => {
      if (row === 0) await onRow0();
    });
  }
  let mainThread: MainThreadTime | null = null;
  if (session) {
    writeFileSync(opts.cpuProfile!, JSON.stringify(profile));
    session.disconnect();
    mainThread = mainThreadTime(profile!, steps);
  }
  const wallMs = t1 - t0;
  return {
    batch: opts.batch,
    promptTokens: opts.promptTokens,
    steps,
    tokS: (steps * opts.batch) / (wallMs / 1000),
    msPerStep: wallMs / steps,
    gpuMsPerStep: gpu ? (gpu.seconds * 1000) / steps : null,
    cpuMsPerStep: gpu ? (wallMs - gpu.seconds * 1000) / steps : null,
    perStep: statsDiff(s0!, s1!, steps),
    mainThread,
  };
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string } }[];
  samples: number[];
  timeDeltas: number[];
}

/** Main-thread time per step from a CPU profile, by what ran (ms). */
export interface MainThreadTime {
  /** Our code and the WebGPU calls it makes (recording, submits, sampling on the CPU). */
  code: number;
  gc: number;
  /** Dawn's event polling (setImmediate callbacks into native code) while a map or submit is pending. */
  polling: number;
  /** V8 internals ('(program)'). */
  program: number;
  idle: number;
}

function mainThreadTime(p: CpuProfile, steps: number): MainThreadTime {
  const byId = new Map(p.nodes.map((n) => [n.id, n.callFrame]));
  const t: MainThreadTime = { code: 0, gc: 0, polling: 0, program: 0, idle: 0 };
  p.samples.forEach((id, i) => {
    const cf = byId.get(id)!;
    const dt = (p.timeDeltas[i] ?? 0) / 1000 / steps;
    const name = cf.functionName;
    if (name === '(idle)') t.idle += dt;
    else if (name === '(garbage collector)') t.gc += dt;
    else if (name === '(program)') t.program += dt;
    else if (
      name === 'processImmediate' ||
      name === 'setImmediate' ||
      name === 'Immediate' ||
      (name === '' && cf.url === '')
    )
      t.polling += dt;
    else t.code += dt;
  });
  return t;
}

/** Wall time to the first token of one prompt of `promptTokens` tokens (prefill + first sample), ms. */
export async function measureTtft(model: LlamaModel, promptTokens: number, seed = 2): Promise<number> {
  const rng = new Rng(seed);
  const prompt = Array.from({ length: promptTokens }, () => rng.int(model.config.vocabSize));
  const t0 = performance.now();
  let first = 0;
  await generate(model, prompt, { maxNewTokens: 1, eosTokenIds: [] }, () => {
    first = performance.now();
  });
  return first - t0;
}

export function formatDecode(m: DecodeMeasurement): string {
  const f = (v: number | null, d = 2) => (v === null ? 'n/a' : v.toFixed(d));
  const p = m.perStep;
  return (
    `batch ${m.batch}: ${f(m.tokS, 1)} tok/s, ${f(m.msPerStep)} ms/step (gpu ${f(m.gpuMsPerStep)}, cpu ${f(m.cpuMsPerStep)}); per step: ` +
    `${f(p.dispatches, 1)} dispatches, ${f(p.passes, 1)} passes, ${f(p.submits, 1)} submits, ${f(p.bindGroups, 1)} bind groups, ` +
    `${f(p.buffersCreated, 1)} buffers created, ${f(p.writes, 1)} writes (${f(p.writeBytes, 0)} B), ${f(p.readbacks, 1)} readbacks (${f(p.readBytes, 0)} B)` +
    (m.mainThread
      ? `\n  main thread ms/step: our code + WebGPU calls ${f(m.mainThread.code)}, GC ${f(m.mainThread.gc)}, V8 ${f(m.mainThread.program)}, ` +
        `Dawn event polling ${f(m.mainThread.polling)}, idle ${f(m.mainThread.idle)}`
      : '')
  );
}

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

async function main(): Promise<void> {
  const e = await initEngine();
  const modelArg = arg('model', '');
  const preset = arg('preset', 'tiny');
  const storage = arg('storage', 'f32') as 'f32' | 'bf16' | 'f16';
  const quantize = arg('quantize', 'none');
  const batches = arg('batch', '1,8').split(',').map(Number);
  const promptTokens = Number(arg('prompt', '64'));
  const newTokens = Number(arg('new-tokens', '32'));
  const ttftPrompt = Number(arg('ttft-prompt', '512'));
  const cpuProfile = arg('cpu-profile', '');
  let dir = modelArg;
  let tmp: string | null = null;
  if (!dir) {
    tmp = mkdtempSync(join(tmpdir(), 'finllm-decode-'));
    dir = join(tmp, 'model');
    await initModel(dir, { preset, tokenizerDir: join(process.cwd(), 'models/tiny-fin'), seed: 0 });
  }
  const peer = arg('peer', '');
  if (peer && peer !== 'llama.cpp') throw new Error(`--peer: expected llama.cpp, got ${JSON.stringify(peer)}`);
  let gguf: string | null = null;
  if (peer) {
    gguf = join(mkdtempSync(join(tmpdir(), 'finllm-decode-gguf-')), 'model.gguf');
    await exportGguf(dir, gguf, { type: 'f32' });
  }
  const model = await LlamaModel.load(dir, { storage, ...(quantize === 'nf4' ? { quantize: 'nf4' as const } : {}) });
  if (tmp) rmSync(tmp, { recursive: true, force: true });
  if (process.argv.includes('--lora')) model.initLora({ r: 16, loraAlpha: 32, loraDropout: 0 }, 0);
  const c = model.config;
  console.log(`adapter: ${e.dev.name}`);
  console.log(
    `model: ${modelArg || `preset ${preset} (random init)`}: D ${c.hiddenSize}, ${c.numHiddenLayers} layers, vocab ${c.vocabSize}; ` +
      `storage ${storage}, quantize ${quantize}${model.lora ? ', LoRA r16 all linear' : ''}; prompt ${promptTokens}, ${newTokens} new tokens`,
  );
  const measured: DecodeMeasurement[] = [];
  for (const b of batches) {
    await measureDecode(model, { batch: b, promptTokens: 8, newTokens: 5 }); // warm-up: pipelines compile
    const prof = cpuProfile ? cpuProfile.replace(/(\.cpuprofile)?$/, `-b${b}.cpuprofile`) : undefined;
    const m = await measureDecode(model, { batch: b, promptTokens, newTokens, ...(prof ? { cpuProfile: prof } : {}) });
    measured.push(m);
    console.log(formatDecode(m));
  }
  let ttftMs: number | null = null;
  if (ttftPrompt > 0) {
    await measureTtft(model, ttftPrompt);
    ttftMs = await measureTtft(model, ttftPrompt);
    console.log(`time to first token, ${ttftPrompt}-token prompt: ${ttftMs.toFixed(1)} ms`);
  }
  model.dispose();
  let peers: (PeerDecode & { ratio: number | null })[] = [];
  if (gguf) {
    // Batch 1, the same prompt ids measureDecode used for row 0, the same number of new tokens.
    const prompt = decodePrompts(new Rng(1), c.vocabSize, 1, promptTokens)[0]!;
    const ours = measured.find((m) => m.batch === 1)?.tokS ?? null;
    peers = (await llamaCppDecode(gguf, prompt, newTokens, Number(arg('peer-threads', '1')))).map((p) => ({
      ...p,
      ratio: ours === null ? null : ours / p.tokS,
    }));
    rmSync(join(gguf, '..'), { recursive: true, force: true });
    for (const p of peers) {
      console.log(
        `llama.cpp ${p.build} (${p.device}, ${p.threads} thread${p.threads === 1 ? '' : 's'}), GGUF f32, batch 1: ${p.tokS.toFixed(1)} tok/s, ${p.msPerStep.toFixed(2)} ms/step` +
          (p.ratio === null ? '' : `; finllm / llama.cpp = ${p.ratio.toFixed(3)} (finllm ${ours!.toFixed(1)} tok/s)`),
      );
    }
  }
  const file = arg(
    'json',
    join(process.cwd(), 'bench', 'results', `decode-${new Date().toISOString().replace(/[:.]/g, '-')}.json`),
  );
  mkdirSync(join(file, '..'), { recursive: true });
  writeFileSync(
    `${file}.tmp`,
    JSON.stringify(
      {
        adapter: e.dev.name,
        model: modelArg || `preset ${preset} (random init)`,
        storage,
        quantize,
        promptTokens,
        newTokens,
        finllm: measured,
        ttftMs,
        peers,
      },
      null,
      2,
    ),
  );
  renameSync(`${file}.tmp`, file);
  console.log(`results written to ${file}`);
  e.dev.destroy();
}

if (process.argv[1]?.endsWith('decode.js')) await main();
