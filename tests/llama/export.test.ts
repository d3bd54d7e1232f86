// Export (merge) → reload, init-model output, adapter round trip, and the eval/export/init-model
// verbs called as the CLI calls them (output captured), including their input errors.
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type EvalCliOptions, evalAction } from '../../src/cli/eval.js';
import { exportAction } from '../../src/cli/export.js';
import { initModelAction } from '../../src/cli/init-model.js';
import { InputError } from '../../src/errors.js';
import { Checkpoint } from '../../src/io/safetensors.js';
import { loadLlamaConfig } from '../../src/llama/config.js';
import { initModel } from '../../src/llama/init.js';
import { exportMerged } from '../../src/llama/merge.js';
import { LlamaModel } from '../../src/llama/model.js';
import { readAdapter } from '../../src/llama/peft.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { sequenceLosses } from '../../src/pipeline/eval/perplexity.js';
import { expectClose, useEngine } from '../helpers/index.js';
import { adapterDir, expectGoldenLosses, golden, MODEL_NAMES, modelDir, useTempDir } from './helpers.js';

useEngine();
const tempDir = useTempDir();

describe('export: merged model', () => {
  for (const name of MODEL_NAMES) {
    it(`${name}: merged f32 export reloads with the merged losses of transformers (within 1e-4)`, async () => {
      const out = join(await tempDir(), 'merged');
      await exportMerged(adapterDir(name), modelDir(name), out, { dtype: 'f32' });
      const files = (await readdir(out)).sort();
      expect(files).toEqual([
        'config.json',
        'generation_config.json',
        'model.safetensors',
        'tokenizer.json',
        'tokenizer_config.json',
      ]);
      expect((await readdir(dirname(out))).filter((f) => f.includes('.tmp'))).toEqual([]); // temp folder renamed away
      const cfg = await loadLlamaConfig(out);
      expect(cfg.torchDtype).toBe('float32');
      const ck = await Checkpoint.open(out);
      expect(ck.has('lm_head.weight')).toBe(!cfg.tieWordEmbeddings);
      expect(new Set(ck.names().map((n) => ck.dtype(n)))).toEqual(new Set(['F32']));
      await ck.close();
      const model = await LlamaModel.load(out);
      try {
        await expectGoldenLosses(model, name, 'merged_loss', 'merged loss');
      } finally {
        model.dispose();
      }
    });
  }

  it('dtype "source" keeps bf16 for a bf16 checkpoint; an existing non-empty folder is refused', async () => {
    const name = 'mqa-bf16-tied-llama3rope';
    const out = join(await tempDir(), 'merged');
    let printed = '';
    await exportAction({ model: modelDir(name), adapter: adapterDir(name), merged: out }, (s) => (printed += s));
    expect(printed).toContain('merged model written');
    const ck = await Checkpoint.open(out);
    expect(new Set(ck.names().map((n) => ck.dtype(n)))).toEqual(new Set(['BF16']));
    await ck.close();
    expect(JSON.parse(await readFile(join(out, 'config.json'), 'utf8')).dtype).toBe('bfloat16');
    await expect(exportAction({ model: modelDir(name), adapter: adapterDir(name), merged: out })).rejects.toThrow(
      /not empty/,
    );
    await expect(
      exportAction({ model: modelDir(name), adapter: adapterDir('gqa-f32'), merged: join(out, 'x') }),
    ).rejects.toBeInstanceOf(InputError);
    await expect(
      exportAction({ model: join(out, 'missing'), adapter: adapterDir(name), merged: join(out, 'y') }),
    ).rejects.toThrow(/model folder not found/);
  });
});

describe('adapters', () => {
  it('an adapter saved by the model reads back equal to the one loaded', async () => {
    const name = 'gqa-f32';
    const model = await LlamaModel.load(modelDir(name), { adapter: adapterDir(name) });
    try {
      const out = join(await tempDir(), 'adapter');
      await model.saveAdapter(out);
      const want = await readAdapter(adapterDir(name));
      const got = await readAdapter(out);
      expect({ ...got.config, baseModelNameOrPath: null }).toEqual({ ...want.config, baseModelNameOrPath: null });
      expect([...got.weights.keys()]).toEqual([...want.weights.keys()]);
      for (const [k, p] of want.weights) {
        expect(got.weights.get(k)!.A).toEqual(p.A);
        expect(got.weights.get(k)!.B).toEqual(p.B);
      }
      // Loading into the existing leaves (resume) keeps the same tensor objects.
      const before = model.loraParameters();
      await model.loadAdapterWeightsInto(out);
      expect(model.loraParameters()).toEqual(before);
    } finally {
      model.dispose();
    }
  });
});

describe('init-model', () => {
  it('writes a seeded HF checkpoint our loader reads, initialised like transformers', async () => {
    const root = await tempDir();
    let printed = '';
    await initModelAction(
      join(root, 'a'),
      { preset: 'tiny', tokenizer: modelDir('gqa-f32'), seed: '3' },
      (s) => (printed += s),
    );
    expect(printed).toContain('vocabulary 600');
    await initModel(join(root, 'b'), { preset: 'tiny', tokenizerDir: modelDir('gqa-f32'), seed: 3 });
    await initModel(join(root, 'c'), { preset: 'tiny', tokenizerDir: modelDir('gqa-f32'), seed: 4 });
    const bytes = (d: string) => readFile(join(root, d, 'model.safetensors'));
    expect(Buffer.compare(await bytes('a'), await bytes('b'))).toBe(0);
    expect(Buffer.compare(await bytes('a'), await bytes('c'))).not.toBe(0);
    const ck = await Checkpoint.open(join(root, 'a'));
    const w = await ck.readF32('model.layers.0.mlp.up_proj.weight');
    const norm = await ck.readF32('model.layers.0.input_layernorm.weight');
    await ck.close();
    const mean = w.reduce((s, v) => s + v, 0) / w.length;
    const std = Math.sqrt(w.reduce((s, v) => s + (v - mean) ** 2, 0) / w.length);
    expect(Math.abs(mean)).toBeLessThan(0.001); // 10240 draws: std of the mean is 2e-4
    expect(Math.abs(std - 0.02)).toBeLessThan(0.001);
    expect(Array.from(norm).every((v) => v === 1)).toBe(true);
    const model = await LlamaModel.load(join(root, 'a'));
    try {
      const tok = await LlamaTokenizer.load(join(root, 'a'));
      expect(model.config.vocabSize).toBe(tok.vocabSize);
      const [r] = await sequenceLosses(model, [tok.encode(golden.texts[0]!)]);
      // Near-uniform predictions from a random init: loss ≈ ln(600) = 6.4.
      expect(Math.abs(r!.loss - Math.log(600))).toBeLessThan(0.2);
    } finally {
      model.dispose();
    }
    await expect(
      initModel(join(root, 'd'), { preset: 'huge', tokenizerDir: modelDir('gqa-f32') }),
    ).rejects.toBeInstanceOf(InputError);
    await expect(initModel(join(root, 'a'), { preset: 'tiny', tokenizerDir: modelDir('gqa-f32') })).rejects.toThrow(
      /not empty/,
    );
  });

  it('the bundled models/tiny-fin loads', async () => {
    const dir = join(import.meta.dirname, '..', '..', 'models', 'tiny-fin');
    const model = await LlamaModel.load(dir);
    try {
      expect(model.config.numHiddenLayers).toBe(2);
    } finally {
      model.dispose();
    }
  });
});

describe('finllm eval', () => {
  async function jsonl(lines: string[]): Promise<string> {
    const f = join(await tempDir(), 'data.jsonl');
    await writeFile(f, lines.join('\n') + '\n');
    return f;
  }

  for (const [label, withAdapter] of [
    ['base', false],
    ['base + adapter', true],
  ] as const) {
    it(`--json prints the golden ${label} losses (gqa-f32)`, async () => {
      const g = golden.models['gqa-f32'];
      const data = await jsonl(golden.texts.slice(0, 5).map((text) => JSON.stringify({ text })));
      let printed = '';
      const opts: EvalCliOptions = {
        model: modelDir('gqa-f32'),
        data,
        json: true,
        metrics: 'perplexity',
        ...(withAdapter ? { adapter: adapterDir('gqa-f32') } : {}),
      };
      await evalAction(opts, (s) => (printed += s));
      expect(printed.trim().split('\n')).toHaveLength(1);
      const r = JSON.parse(printed) as {
        examples: number;
        tokens: number;
        loss: number;
        perplexity: number;
        per_example: { loss: number; tokens: number }[];
      };
      const want = (withAdapter ? g.adapter_loss : g.base_loss).slice(0, 5);
      const counts = g.token_ids.slice(0, 5).map((ids) => ids.length - 1);
      expect(r.examples).toBe(5);
      expect(r.per_example.map((e) => e.tokens)).toEqual(counts);
      expect(r.tokens).toBe(counts.reduce((a, b) => a + b, 0));
      expectClose(
        r.per_example.map((e) => e.loss),
        want,
        { atol: 1e-4 },
        'per-example loss',
      );
      const mean = want.reduce((s, l, i) => s + l * counts[i]!, 0) / r.tokens;
      expect(Math.abs(r.loss - mean)).toBeLessThan(1e-4);
      expect(r.perplexity).toBeCloseTo(Math.exp(r.loss), 10);
    });
  }

  it('bad input is an InputError naming the problem', async () => {
    const model = modelDir('gqa-f32');
    const good = await jsonl([JSON.stringify({ text: 'Revenue was up.' })]);
    await expect(evalAction({ model, data: await jsonl(['{"text": "ok"}', '{broken']) })).rejects.toThrow(
      /row 2.*invalid JSON/,
    );
    await expect(evalAction({ model, data: await jsonl(['{"txt": "x"}']) })).rejects.toThrow(/row 1.*"text"/);
    await expect(evalAction({ model, data: join(dirname(good), 'none.jsonl') })).rejects.toThrow(/data file not found/);
    await expect(evalAction({ model: join(dirname(good), 'nomodel'), data: good })).rejects.toThrow(
      /model folder not found/,
    );
    await expect(evalAction({ model, data: good, metrics: 'bleu' })).rejects.toThrow(/unknown metric/);
    await expect(evalAction({ model, data: good, task: 'qa' })).rejects.toThrow(/unknown task/);
    await expect(evalAction({ model, data: good, quantize: 'int3' })).rejects.toThrow(/expected nf4/);
    await expect(
      evalAction({ model, data: good, adapter: adapterDir('mqa-bf16-tied-llama3rope') }),
    ).rejects.toBeInstanceOf(InputError);
  });
});
