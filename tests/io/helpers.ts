// Shared test helpers for tests/io and the llama file tests (config, PEFT, tokenizer): temp folders, fixture paths.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';

export const FIXTURES = join(import.meta.dirname, '..', 'fixtures', 'reference');
export const FIXTURE_MODELS = ['gqa-f32', 'mqa-bf16-tied-llama3rope'] as const;

/** A fresh temp folder per call, removed after the current test. */
export function useTempDirs(): () => Promise<string> {
  const made: string[] = [];
  afterEach(async () => {
    await Promise.all(made.splice(0).map((d) => rm(d, { recursive: true, force: true })));
  });
  return async () => {
    const dir = await mkdtemp(join(tmpdir(), 'finllm-io-'));
    made.push(dir);
    return dir;
  };
}

/** Deterministic pseudo-random floats (xorshift), so failures reproduce. */
export function seededFloats(n: number, seed: number, scale = 1): Float32Array {
  let state = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    out[i] = ((state / 0xffffffff) * 2 - 1) * scale;
  }
  return out;
}
