// The random-init checkpoint the end-to-end benchmark trains, made once and kept in a cache folder
// so several runs at the same shapes (bench/gpu.ts runs four) load it instead of drawing it
// again: drawing the 1.1B preset's 1.1 G normal values and writing them takes ~130 s of one CPU core
// on a 2-core VM, far longer than loading them.
//
//   node dist/bench/random-model.js --preset 1.1b --vocab 32000 --cache DIR   # prints the folder
//
// The folder is DIR/<preset>-<hash of the shape overrides>, written atomically (temp folder, then
// rename), so a run stopped half-way leaves no folder a later run would trust. Seed 0, the bundled
// tokenizer's side files (models/tiny-fin), the vocabulary size from --vocab (default 32000, the
// peer's).
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { LlamaConfig } from '../src/llama/config.js';
import { initModel } from '../src/llama/init.js';

/** The shape flags the e2e benchmark takes, and the config field each sets. */
export const SHAPE_FLAGS = [
  ['hidden', 'hiddenSize'],
  ['layers', 'numHiddenLayers'],
  ['intermediate', 'intermediateSize'],
  ['heads', 'numAttentionHeads'],
  ['kv-heads', 'numKeyValueHeads'],
  ['vocab', 'vocabSize'],
] as const;

/** Preset overrides from the shape flags (`arg(flag)` returns the flag's value or ''); vocabulary 32000 unless given. */
export function shapeOverrides(arg: (flag: string) => string): Partial<LlamaConfig> {
  const overrides: Partial<LlamaConfig> = {};
  for (const [flag, key] of SHAPE_FLAGS) {
    const v = arg(flag);
    if (!v) continue;
    const n = Number(v);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${flag}: expected a positive integer, got '${v}'`);
    overrides[key] = n;
  }
  overrides.vocabSize ??= 32000; // the peer's vocabulary
  return overrides;
}

export const TOKENIZER_DIR = join(process.cwd(), 'models/tiny-fin');

/** The cached checkpoint's folder for these shapes (it may not exist yet). */
export function randomModelDir(cacheDir: string, preset: string, overrides: Partial<LlamaConfig>): string {
  const key = createHash('sha256')
    .update(JSON.stringify({ preset, overrides, seed: 0 }))
    .digest('hex')
    .slice(0, 12);
  return join(cacheDir, `${preset}-${key}`);
}

/** The folder of the random checkpoint for these shapes, drawn and written first if the cache lacks it. */
export async function randomModel(
  cacheDir: string,
  preset: string,
  overrides: Partial<LlamaConfig>,
): Promise<{ dir: string; made: boolean }> {
  const dir = randomModelDir(cacheDir, preset, overrides);
  if (existsSync(join(dir, 'config.json'))) return { dir, made: false };
  await initModel(dir, { preset, tokenizerDir: TOKENIZER_DIR, seed: 0, overrides });
  return { dir, made: true };
}

if (process.argv[1] && basename(process.argv[1]) === 'random-model.js') {
  const argv = process.argv.slice(2);
  const arg = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? (argv[i + 1] ?? '') : '';
  };
  try {
    const cache = arg('cache');
    if (!cache)
      throw new Error('usage: random-model --cache DIR [--preset 1.1b] [--vocab 32000] [--hidden N --layers N ...]');
    const t0 = performance.now();
    const { dir, made } = await randomModel(cache, arg('preset') || '1.1b', shapeOverrides(arg));
    console.log(`${made ? 'wrote' : 'cached'} ${dir} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (err) {
    process.stderr.write(`random-model: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
