// `finllm pipeline` with training.method full: the fine-tuned evaluation loads the trained model
// folder (not base + adapter), the export stage copies that complete model, and the fine-tuned
// results differ from the base model's.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/pipeline/config.js';
import { readResults } from '../../src/pipeline/eval/results.js';
import { runPipeline } from '../../src/pipeline/pipeline.js';
import { useEngine } from '../helpers/index.js';
import { removeTinyPipelines, tinyPipeline } from './tiny-pipeline.js';

useEngine();
afterAll(removeTinyPipelines);

describe('finllm pipeline with full training', () => {
  it('evaluates and exports the trained model/ folder', async () => {
    const t = tinyPipeline({ evalOverride: '  limit: 2\n' });
    const cfg = loadConfig({
      file: t.config,
      sets: ['training.method=full', 'model.quantize=none', 'training.lr=0.01', 'eval.embeddings=false'],
    });
    const r = await runPipeline(cfg, { quiet: true });
    const s = join(t.runDir, 'stages');
    expect(r.adapterDir).toBeNull();
    expect(r.modelDir).toBe(join(s, 'export', 'model'));
    expect(existsSync(join(s, 'train', 'adapter'))).toBe(false);
    for (const f of ['model.safetensors', 'config.json', 'tokenizer.json'])
      expect(existsSync(join(s, 'export', 'model', f)), f).toBe(true);
    expect(readFileSync(join(s, 'export', 'model', 'model.safetensors'))).toEqual(
      readFileSync(join(s, 'train', 'model', 'model.safetensors')),
    );
    const base = await readResults(join(s, 'baseline_eval', 'qa.results.json'));
    const tuned = await readResults(join(s, 'finetuned_eval', 'qa.results.json'));
    expect(tuned.model).toBe(join(s, 'train', 'model'));
    expect(tuned.adapter).toBeNull();
    expect(base.model).toBe(cfg.model.path);
    expect(tuned.per_example.map((e) => e.id)).toEqual(base.per_example.map((e) => e.id));
    expect(existsSync(join(s, 'compare', 'qa', 'report.html'))).toBe(true);
  });
});
