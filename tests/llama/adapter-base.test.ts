// An adapter applied to another base than its adapter_config.json names, or trained over an NF4
// base and merged into full-precision weights, gets a warning naming both.
import { cpSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkAdapterBase, sameBase, trainedQuantize } from '../../src/llama/adapter-base.js';
import { exportMerged } from '../../src/llama/merge.js';
import { readAdapter } from '../../src/llama/peft.js';
import { setWarningSink } from '../../src/warnings.js';

const ROOT = join(import.meta.dirname, '..', '..');
const FIXTURE = join(ROOT, 'tests', 'fixtures', 'reference', 'gqa-f32');

describe('adapter base checks', () => {
  let warnings: string[];
  let dir: string;
  beforeEach(() => {
    warnings = [];
    setWarningSink((m) => warnings.push(m));
    dir = mkdtempSync(join(tmpdir(), 'finllm-adapter-base-'));
  });
  afterEach(() => setWarningSink(null));

  it('sameBase: the same folder (through links and relative paths), or a hub id the folder is named after or cached under', () => {
    const model = join(dir, 'TinyLlama-1.1B');
    mkdirSync(model);
    expect(sameBase(model, join(dir, '.', 'TinyLlama-1.1B'))).toBe(true);
    expect(sameBase(model, join(ROOT, 'models', 'fin-base'))).toBe(false);
    expect(sameBase('TinyLlama/TinyLlama-1.1B', model)).toBe(true);
    expect(
      sameBase(
        'TinyLlama/TinyLlama-1.1B-Chat-v1.0',
        join(dir, 'hub', 'models--TinyLlama--TinyLlama-1.1B-Chat-v1.0', 'snapshots', 'abc'),
      ),
    ).toBe(true);
    expect(sameBase('meta-llama/Llama-3.2-1B', model)).toBe(false);
  });

  it('warns naming the adapter, its base and the model given; and an NF4-trained adapter merged into full precision', async () => {
    const adapterDir = join(dir, 'run', 'adapter');
    cpSync(join(FIXTURE, 'adapter'), adapterDir, { recursive: true });
    const adapter = await readAdapter(adapterDir);
    checkAdapterBase(
      { ...adapter.config, baseModelNameOrPath: 'meta-llama/Llama-3.2-1B' },
      adapterDir,
      join(ROOT, 'models', 'fin-base'),
    );
    expect(warnings).toEqual([
      `adapter ${adapterDir} was trained on base meta-llama/Llama-3.2-1B (adapter_config.json base_model_name_or_path), but is applied to ${join(ROOT, 'models', 'fin-base')}: the outputs are those of another model unless the weights are the same`,
    ]);
    warnings.length = 0;
    checkAdapterBase(
      { ...adapter.config, baseModelNameOrPath: join(FIXTURE, 'model') },
      adapterDir,
      join(FIXTURE, 'model'),
      'full',
    );
    expect(warnings).toEqual([]);
    expect(trainedQuantize(adapterDir)).toBeNull();
    writeFileSync(join(dir, 'run', 'resolved-config.yaml'), 'model:\n  path: /x\n  quantize: nf4\n');
    expect(trainedQuantize(adapterDir)).toBe('nf4');
    checkAdapterBase(
      { ...adapter.config, baseModelNameOrPath: join(FIXTURE, 'model') },
      adapterDir,
      join(FIXTURE, 'model'),
      'nf4',
    );
    expect(warnings).toEqual([]);
    checkAdapterBase(
      { ...adapter.config, baseModelNameOrPath: join(FIXTURE, 'model') },
      adapterDir,
      join(FIXTURE, 'model'),
      'full',
    );
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /^adapter .*run\/adapter was trained on an NF4-quantized base \(its run's resolved-config\.yaml: model\.quantize nf4\) and is merged into full-precision weights of .*gqa-f32\/model/,
    );
  });

  it('export --merged over another base than the adapter names warns', async () => {
    const adapterDir = join(dir, 'adapter');
    cpSync(join(FIXTURE, 'adapter'), adapterDir, { recursive: true });
    const cfgFile = join(adapterDir, 'adapter_config.json');
    const cfg = JSON.parse((await import('node:fs')).readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
    writeFileSync(cfgFile, JSON.stringify({ ...cfg, base_model_name_or_path: 'org/some-other-model' }));
    await exportMerged(adapterDir, join(FIXTURE, 'model'), join(dir, 'merged'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(
      `adapter ${adapterDir} was trained on base org/some-other-model (adapter_config.json base_model_name_or_path), but is applied to ${join(FIXTURE, 'model')}`,
    );
  });
});
