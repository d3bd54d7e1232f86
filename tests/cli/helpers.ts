// Helpers for the tests that run the `finllm` CLI as a user does (tests/cli): spawning it, checking
// a failure is one clean line, building small models/adapters/data in temp folders.
import { type SpawnSyncReturns, spawn, spawnSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import { Rng } from '../../src/engine/random.js';
import { readSafetensorsF32, writeSafetensors } from '../../src/io/safetensors.js';
import { type LoraWeights, loraKey, writeAdapter } from '../../src/llama/peft.js';

export const ROOT = join(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
export const MODEL = join(ROOT, 'models', 'tiny-fin');
const MODEL_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json'];

export function checkBuilt(): void {
  if (!existsSync(CLI)) throw new Error(`${CLI} is missing: run \`npm run build\` (npm test does it first)`);
}

const made: string[] = [];
export function tempDir(prefix = 'finllm-cli-'): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  made.push(d);
  return d;
}
export function removeTempDirs(): void {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
}

export type CliResult = Pick<SpawnSyncReturns<string>, 'status' | 'stdout' | 'stderr' | 'signal'>;

/** Runs `finllm ...args` to completion (the timeout only guards against a hang). */
export function finllm(args: string[], opts: { cwd?: string; timeoutMs?: number } = {}): CliResult {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    cwd: opts.cwd ?? ROOT,
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 240_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr, signal: r.signal };
}

/** Starts `finllm ...args` in the background (for signals). */
export function finllmAsync(args: string[], opts: { cwd?: string } = {}) {
  const child = spawn(process.execPath, [CLI, ...args], { cwd: opts.cwd ?? ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const out = { stdout: '', stderr: '' };
  child.stdout.on('data', (d) => (out.stdout += String(d)));
  child.stderr.on('data', (d) => (out.stderr += String(d)));
  const exited = new Promise<number | null>((res) => child.on('exit', (code) => res(code)));
  return { child, out, exited };
}

/** No stack trace, no raw control bytes, no Dawn notice: what every finllm run's stderr must satisfy. */
export function expectCleanStderr(r: CliResult): void {
  expect(r.stderr, 'a stack trace').not.toMatch(/^\s+at /m);
  expect(r.stderr, 'Dawn limit notices').not.toMatch(/artificially reduced/);
  // eslint-disable-next-line no-control-regex
  expect(r.stderr + r.stdout, 'raw control characters').not.toMatch(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/);
}

/** Exit `code` with a one-line `finllm: ...` message matching `message`. */
export function expectFailure(r: CliResult, code: number, message: RegExp): void {
  expect(r.status, `exit code; stderr:\n${r.stderr}`).toBe(code);
  expect(r.stderr).toMatch(message);
  const errorLines = r.stderr.split('\n').filter((l) => l.startsWith('finllm: ') && !l.startsWith('finllm: warning:'));
  expect(errorLines, r.stderr).toHaveLength(1);
  expectCleanStderr(r);
}

export function expectSuccess(r: CliResult): void {
  expect(r.status, `exit code; stderr:\n${r.stderr}`).toBe(0);
  expectCleanStderr(r);
}

/** Every file or folder under `dir` whose name marks it as a temp of an atomic write. */
export function tempsUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (name.includes('.tmp-')) out.push(p);
      if (statSync(p).isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

/** A process id that runs no longer (a child that has exited). */
export function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '0']).pid!;
}

/**
 * A copy of the tiny model in `dir`, its tensors passed through `edit` (name → data, in place;
 * return extra tensors to add) and its config.json through `editConfig`.
 */
export async function copyModel(
  dir: string,
  edit: (t: Map<string, Float32Array>) => { name: string; shape: number[]; data: Float32Array }[] | void = () =>
    undefined,
  editConfig: (c: Record<string, unknown>) => void = () => undefined,
): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const t = await readSafetensorsF32(join(MODEL, 'model.safetensors'));
  const extra = edit(t) ?? [];
  await writeSafetensors(
    join(dir, 'model.safetensors'),
    [
      ...[...t].map(([name, data]) => ({ name, dtype: 'F32' as const, shape: t.shapes.get(name)!, data })),
      ...extra.map((e) => ({ ...e, dtype: 'F32' as const })),
    ],
    { format: 'pt' },
  );
  for (const f of MODEL_FILES) copyFileSync(join(MODEL, f), join(dir, f));
  const config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
  editConfig(config);
  writeFileSync(join(dir, 'config.json'), JSON.stringify(config, null, 2));
  return dir;
}

/** A PEFT adapter for the tiny model (r = 2 on q_proj and v_proj, small seeded values); `edit` may damage it. */
export async function makeAdapter(dir: string, edit: (w: LoraWeights) => void = () => undefined): Promise<string> {
  const rng = new Rng(11);
  const weights: LoraWeights = new Map();
  for (let l = 0; l < 2; l++) {
    for (const [mod, out] of [
      ['q_proj', 64],
      ['v_proj', 32],
    ] as const) {
      weights.set(loraKey(l, mod), {
        A: rng.uniformArray(2 * 64, -0.1, 0.1),
        B: rng.uniformArray(out * 2, -0.1, 0.1),
        r: 2,
        inFeatures: 64,
        outFeatures: out,
      });
    }
  }
  edit(weights);
  await writeAdapter(dir, {
    config: {
      r: 2,
      loraAlpha: 4,
      useRslora: false,
      targetModules: ['q_proj', 'v_proj'],
      loraDropout: 0,
      baseModelNameOrPath: MODEL,
      taskType: 'CAUSAL_LM',
    },
    weights,
  });
  return dir;
}

/** Sets one f32 element of tensor `name` in a safetensors file, in place (damaging a file as a disk or a bug would). */
export function poke(file: string, name: string, index: number, value: number): void {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<
    string,
    { dtype: string; data_offsets: [number, number] }
  >;
  const info = header[name];
  if (info?.dtype !== 'F32') throw new Error(`poke: no F32 tensor ${name} in ${file}`);
  bytes.writeFloatLE(value, 8 + n + info.data_offsets[0] + 4 * index);
  writeFileSync(file, bytes);
}

/** A few short {"text"} rows from the bundled sample (no '#', which the poisoned-model test uses). */
export function sampleTexts(n: number): string[] {
  return readFileSync(join(ROOT, 'data', 'sample', 'train.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .slice(0, n)
    .map((l) => (JSON.parse(l) as { text: string }).text.slice(0, 200));
}

export function writeJsonl(file: string, rows: unknown[]): string {
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

/** Hidden size of the tiny model and the byte-fallback token of '#'. */
const TINY_D = 64;
export const HASH_TOKEN = 3 + 0x23;

/**
 * A copy of the tiny model whose hidden dimension 0 is silent for every token but '#', and whose
 * lm_head reads that dimension with weight 1e38: the logits overflow to Inf exactly at positions
 * holding '#'. Every weight is finite, so the model loads; only data with '#' break it.
 */
export function poisonedModel(dir: string): Promise<string> {
  const D = TINY_D;
  return copyModel(dir, (t) => {
    const emb = t.get('model.embed_tokens.weight')!;
    for (let r = 0; r < 600; r++) emb[r * D] = 0;
    emb.fill(0, HASH_TOKEN * D, HASH_TOKEN * D + D);
    emb[HASH_TOKEN * D] = 1;
    for (let l = 0; l < 2; l++) {
      t.get(`model.layers.${l}.self_attn.o_proj.weight`)!.fill(0, 0, D);
      t.get(`model.layers.${l}.mlp.down_proj.weight`)!.fill(0, 0, 160);
    }
    const lm = t.get('lm_head.weight')!;
    for (let r = 0; r < 600; r++) lm[r * D] = 1e38;
  });
}

/** A small training config (tiny model, a handful of short rows, no validation) for `dir`. */
export function trainConfig(dir: string, model: string, extra = ''): string {
  const file = join(dir, 'cfg.yaml');
  writeFileSync(
    file,
    `model: {path: ${model}, quantize: none}
lora: {r: 2, alpha: 4, dropout: 0.0, target_modules: [q_proj, v_proj]}
data: {train: train.jsonl, val: null, val_split: 0, max_seq_len: 64, dedup: {near: false}}
training: {max_steps: 2, batch_size: 2, lr: 1.0e-3, warmup_steps: 0, eval_every: 0, save_every: 1, log_every: 1, seed: 3}
output: {dir: run}
logging: {console: false}
${extra}`,
  );
  return file;
}
