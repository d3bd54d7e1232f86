// Shared helpers for tests/llama: fixture paths, golden values, safetensors → f32 maps.
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { SafetensorsReader } from '../../src/io/safetensors.js';
import type { LlamaModel } from '../../src/llama/model.js';
import { sequenceLosses } from '../../src/pipeline/eval/perplexity.js';
import { expectClose } from '../helpers/index.js';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'reference');
export const MODEL_NAMES = ['gqa-f32', 'mqa-bf16-tied-llama3rope'] as const;
export type FixtureName = (typeof MODEL_NAMES)[number];

export interface GoldenModel {
  config: Record<string, unknown>;
  lora: { r: number; lora_alpha: number; use_rslora: boolean };
  token_ids: number[][];
  base_loss: number[];
  adapter_loss: number[];
  nf4_adapter_loss: number[];
  merged_loss: number[];
  grad_loss: number;
  greedy_prompt_ids: number[];
  greedy_base: number[];
}

export interface Golden {
  texts: string[];
  models: Record<FixtureName, GoldenModel>;
}

export const golden: Golden = JSON.parse(readFileSync(join(FIXTURES, 'golden.json'), 'utf8')) as Golden;

export const modelDir = (name: FixtureName) => join(FIXTURES, name, 'model');
export const adapterDir = (name: FixtureName) => join(FIXTURES, name, 'adapter');

/** Expects `model`'s per-text losses on the first `n` texts of fixture `name` within 1e-4 of transformers' `which`. */
export async function expectGoldenLosses(
  model: LlamaModel,
  name: FixtureName,
  which: 'base_loss' | 'adapter_loss' | 'merged_loss',
  label: string,
  n = golden.models[name].token_ids.length,
): Promise<void> {
  const per = await sequenceLosses(model, golden.models[name].token_ids.slice(0, n));
  expectClose(
    per.map((e) => e.loss),
    golden.models[name][which].slice(0, n),
    { atol: 1e-4 },
    label,
  );
}

/** Every tensor of a safetensors file as f32 (I32 as numbers too). */
export async function readAllF32(
  path: string,
): Promise<Map<string, { shape: number[]; data: Float32Array | Int32Array }>> {
  const r = await SafetensorsReader.open(path);
  const out = new Map<string, { shape: number[]; data: Float32Array | Int32Array }>();
  for (const name of r.names()) {
    const info = r.info(name);
    out.set(name, {
      shape: info.shape,
      data: info.dtype === 'I32' ? ((await r.readTyped(name)) as Int32Array) : await r.readF32(name),
    });
  }
  await r.close();
  return out;
}

/** A temp folder removed after the file's tests. */
export function useTempDir(): () => Promise<string> {
  const made: string[] = [];
  afterAll(async () => {
    await Promise.all(made.map((d) => rm(d, { recursive: true, force: true })));
  });
  return async () => {
    const d = await mkdtemp(join(tmpdir(), 'finllm-llama-'));
    made.push(d);
    return d;
  };
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** ≥ 200 texts: financial phrases with digits, currency signs, unicode, and leading/trailing spaces. */
export function tokenizationCorpus(): string[] {
  const base = [
    'Revenue rose 12% to $4.5bn in Q3 2024.',
    'EBITDA margin: 23.4% (vs. 21.9%)',
    'The bank set aside €1,250m for credit losses.',
    'Shares fell 3.2% to ¥2,480 in Tokyo.',
    'Guidance: FY25 EPS of $5.10–$5.30',
    'Net debt/EBITDA 2.1x; capex £340m',
    'naïve café résumé',
    'Zürich-based UBS AG',
    '日本銀行は金利を据え置いた。',
    'Привет, рынок!',
    '₹83.2 per US$',
    '₿ fell 5% overnight',
    'CEO said: "We\'re confident."',
    'Q4\tguidance\traised',
    'line one\nline two\n',
    '1234567890',
    '0.000123',
    '3,141,592.65',
    'yield 4.25%/yr',
    'S&P 500 +1.1%',
    'AT&T, P&G and J&J',
    'émoji 📈📉 today',
    '—dash– and “quotes”',
    'a',
    '.',
    '$',
    '  ',
  ];
  const out: string[] = [];
  for (const t of base)
    out.push(
      t,
      ` ${t}`,
      `${t} `,
      `  ${t}  `,
      `${t}\n`,
      t.toUpperCase(),
      t.replace(/\d/g, (d) => String((Number(d) + 7) % 10)),
      `${t} ${t}`,
    );
  return out.filter((t) => t.length > 0);
}
