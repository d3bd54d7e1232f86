// The committed pretraining recipe (configs/pretrain-fin.yaml through scripts/pretrain-fin.sh) run
// end to end at a tiny size: corpus generation, tokenizer training, random init, a few full-training
// steps on packed raw text; the result is a model folder finllm loads and generates from.

import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LLAMA_PRESETS, loadLlamaConfig } from '../../../src/llama/config.js';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import { loadConfig } from '../../../src/pipeline/config.js';

const ROOT = process.cwd();

describe('pretraining recipe', () => {
  it('configs/pretrain-fin.yaml is full training on packed raw text with loss on every token', () => {
    const cfg = loadConfig({ file: join(ROOT, 'configs/pretrain-fin.yaml') });
    expect(cfg.training.method).toBe('full');
    expect(cfg.model.quantize).toBe('none');
    expect(cfg.data).toMatchObject({ template: 'completion', packing: true, response_only_loss: false });
  });

  it('the bundled models/fin-base is the recipe model (preset fin-s) with its own 2k tokenizer and a model card', async () => {
    const dir = join(ROOT, 'models/fin-base');
    const cfg = await loadLlamaConfig(dir);
    const preset = LLAMA_PRESETS['fin-s'];
    expect([
      cfg.numHiddenLayers,
      cfg.hiddenSize,
      cfg.numAttentionHeads,
      cfg.numKeyValueHeads,
      cfg.intermediateSize,
      cfg.tieWordEmbeddings,
    ]).toEqual([
      preset.numHiddenLayers,
      preset.hiddenSize,
      preset.numAttentionHeads,
      preset.numKeyValueHeads,
      preset.intermediateSize,
      true,
    ]);
    const tok = await LlamaTokenizer.load(dir);
    expect(tok.vocabSize).toBe(cfg.vocabSize);
    const card = readFileSync(join(dir, 'README.md'), 'utf8');
    expect(card).toMatch(/scripts\/pretrain-fin\.sh/);
    expect(card).toMatch(/machine/);
  });

  it('scripts/pretrain-fin.sh runs a few steps at a tiny size and leaves a model finllm loads and decodes with', () => {
    const out = mkdtempSync(join(tmpdir(), 'finllm-pretrain-'));
    const env = {
      ...process.env,
      OUT: out,
      DOCS: '240',
      VAL_DOCS: '12',
      TOKENIZER_DOCS: '240',
      VOCAB: '512',
      PRESET: 'fin-s',
      SEED: '3',
    };
    const sets = [
      'training.max_steps=4',
      'training.batch_size=4',
      'data.max_seq_len=128',
      'training.warmup_steps=0',
      'training.lr=0.01',
      'training.eval_every=0',
      'training.save_every=0',
      'training.log_every=1',
      'logging.console=false',
    ];
    const r = spawnSync('bash', [join(ROOT, 'scripts/pretrain-fin.sh'), ...sets.flatMap((s) => ['--set', s])], {
      env,
      encoding: 'utf8',
      timeout: 600_000,
    });
    expect(r.status, r.stderr).toBe(0);
    for (const f of [
      'corpus/train.jsonl',
      'corpus/val.jsonl',
      'tokenizer/tokenizer.json',
      'init/config.json',
      'train/model/model.safetensors',
      'train/model/tokenizer.json',
      'train/model/config.json',
    ]) {
      expect(existsSync(join(out, f)), f).toBe(true);
    }
    const summary = JSON.parse(readFileSync(join(out, 'train', 'train-summary.json'), 'utf8')) as {
      steps: number;
      initialValLoss: number;
      finalValLoss: number;
    };
    expect(summary.steps).toBe(4);
    // From ln(512) ≈ 6.24 at random init; four steps at lr 1e-2 on 512 packed tokens each fall well below it.
    expect(summary.finalValLoss).toBeLessThan(summary.initialValLoss - 0.2);
    const cfg = JSON.parse(readFileSync(join(out, 'train', 'model', 'config.json'), 'utf8')) as Record<string, unknown>;
    expect(cfg).toMatchObject({ num_hidden_layers: 4, hidden_size: 128, tie_word_embeddings: true, vocab_size: 512 });
    const gen = spawnSync(
      process.execPath,
      [
        join(ROOT, 'dist/src/cli/main.js'),
        'generate',
        '--model',
        join(out, 'train', 'model'),
        '--prompt',
        'Revenue for the quarter',
        '--max-new-tokens',
        '8',
      ],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(gen.status, gen.stderr).toBe(0);
  });
});
