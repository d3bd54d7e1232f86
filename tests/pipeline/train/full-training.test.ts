// training.method full through the trainer and the CLI, on the bundled tiny model (quantize none,
// f32) with a slice of the bundled sample data: exact resume after SIGKILL, the exported model/
// folder evaluating in `finllm eval` to the losses the model had in memory, the config refusing
// what full training cannot do; and output.export_merged under LoRA through `finllm train`.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { LlamaModel } from '../../../src/llama/model.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import type { ResolvedConfig } from '../../../src/pipeline/config.js';
import { evaluatePerplexity } from '../../../src/pipeline/eval/perplexity.js';
import { runTraining, TrainingRun } from '../../../src/pipeline/train/trainer.js';
import { useEngine } from '../../helpers/index.js';
import {
  cliPerplexity,
  killAfterCheckpoint,
  losses,
  MODEL,
  sampleConfig,
  sampleRunSets,
  sampleSlice,
  trainArgs,
  valTexts,
  writeTexts,
} from './helpers.js';

useEngine();

let dataDir = '';

beforeAll(() => {
  dataDir = sampleSlice(24, 8);
});

function settings(outDir: string, extra: string[] = []): string[] {
  return sampleRunSets(outDir, dataDir, [
    `model.path=${MODEL}`,
    'model.quantize=none',
    'training.method=full',
    'training.max_steps=4',
    'training.lr=0.002',
    'training.weight_decay=0.1',
    'training.save_every=2',
    'training.resume=auto',
    ...extra,
  ]);
}

const config = (outDir: string, extra: string[] = []): ResolvedConfig => sampleConfig(settings(outDir, extra));

describe('full training (training.method full)', () => {
  it('a run killed with SIGKILL and resumed logs the same losses and ends with the same weights as an uninterrupted run', async () => {
    const straight = mkdtempSync(join(tmpdir(), 'finllm-full-straight-'));
    const args = (dir: string) => trainArgs(settings(dir));
    await runTraining(config(straight), { quiet: true });
    const reference = losses(straight);
    expect(reference).toHaveLength(4);

    const killed = mkdtempSync(join(tmpdir(), 'finllm-full-killed-'));
    await killAfterCheckpoint(args(killed), killed, 2, 300_000);
    expect(losses(killed).length).toBeLessThan(4);
    // The checkpoint holds the whole model as an HF folder next to the optimizer moments.
    for (const f of ['model/model.safetensors', 'model/config.json', 'model/tokenizer.json', 'optimizer.safetensors']) {
      expect(existsSync(join(killed, 'checkpoints', 'step-00000002', f)), f).toBe(true);
    }

    const resumed = spawnSync(process.execPath, [...args(killed), '--resume'], { encoding: 'utf8', timeout: 300_000 });
    expect(resumed.status, resumed.stderr).toBe(0);
    // Restored weights, moments (every parameter, embeddings and norms included) and data order.
    expect(losses(killed)).toEqual(reference);
    const a = readFileSync(join(straight, 'model', 'model.safetensors'));
    const b = readFileSync(join(killed, 'model', 'model.safetensors'));
    expect(b.equals(a), 'final model.safetensors bit-identical').toBe(true);
  });

  it('the exported model/ is a complete HF checkpoint that evaluates in `finllm eval` to the in-memory losses', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-full-export-'));
    const trainer = await TrainingRun.setup(config(dir, ['training.max_steps=3']), { quiet: true });
    try {
      const r = await trainer.train();
      expect(r.adapterDir).toBeNull();
      expect(r.modelDir).toBe(join(dir, 'model'));
      for (const f of [
        'model.safetensors',
        'config.json',
        'generation_config.json',
        'tokenizer.json',
        'tokenizer_config.json',
      ])
        expect(existsSync(join(dir, 'model', f)), f).toBe(true);
      const cfgJson = JSON.parse(readFileSync(join(dir, 'model', 'config.json'), 'utf8')) as Record<string, unknown>;
      expect(cfgJson['torch_dtype'] ?? cfgJson['dtype']).toBe('float32');
      expect(cfgJson['architectures']).toEqual(['LlamaForCausalLM']);
      const texts = valTexts(dataDir, 4);
      trainer.model.training = false;
      const inMemory = await evaluatePerplexity(trainer.model, trainer.tokenizer, texts);
      const cli = cliPerplexity(['--model', r.modelDir!], writeTexts(dir, texts));
      // Same f32 weights, same kernels: equal up to the summation order of the per-text means.
      expect(Math.abs(cli.loss - inMemory.loss)).toBeLessThan(1e-5);
      cli.per_example.forEach((e, i) => {
        expect(Math.abs(e.loss - inMemory.perExample[i]!.loss)).toBeLessThan(1e-5);
      });
      // ... and training changed the model (the base evaluates differently).
      const base = await LlamaModel.load(MODEL);
      const baseLoss = (await evaluatePerplexity(base, trainer.tokenizer, texts)).loss;
      base.dispose();
      expect(Math.abs(baseLoss - cli.loss)).toBeGreaterThan(1e-3);
    } finally {
      trainer.dispose();
    }
  });

  it('the config refuses full training of NF4 or 16-bit weights, naming the key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-full-cfg-'));
    expect(() => config(dir, ['model.quantize=nf4'])).toThrow(InputError);
    expect(() => config(dir, ['model.quantize=nf4'])).toThrow(
      /key 'model\.quantize'.*NF4-quantized weights cannot be trained/,
    );
    expect(() => config(dir, ['model.storage=bf16'])).toThrow(/key 'model\.storage'.*f32 master weights/);
    expect(() => config(dir, ['training.method=partial'])).toThrow(/key 'training\.method'.*"lora", "full"/);
    expect(config(dir).training.method).toBe('full');
  });
});

describe('output.export_merged through `finllm train` (LoRA)', () => {
  it('writes merged/, which evaluates like the base model + the adapter', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'finllm-merged-'));
    const run = spawnSync(
      process.execPath,
      trainArgs(settings(dir, ['training.method=lora', 'training.max_steps=2', 'output.export_merged=true'])),
      { encoding: 'utf8', timeout: 240_000 },
    );
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout).toMatch(/merged model: .*merged/);
    for (const f of ['model.safetensors', 'config.json', 'tokenizer.json'])
      expect(existsSync(join(dir, 'merged', f)), f).toBe(true);
    const texts = valTexts(dataDir, 3);
    const merged = cliPerplexity(['--model', join(dir, 'merged')], writeTexts(dir, texts));
    const withAdapter = await LlamaModel.load(MODEL, { adapter: join(dir, 'adapter') });
    const adapter = await evaluatePerplexity(withAdapter, await LlamaTokenizer.load(MODEL), texts);
    withAdapter.dispose();
    // W + s·B·A folded in f32 vs applied as a separate path: rounding only.
    expect(Math.abs(merged.loss - adapter.loss)).toBeLessThan(1e-4);
  });
});
