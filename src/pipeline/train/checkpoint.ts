// Training checkpoints: one folder per step under <run>/checkpoints/, written whole into a temp
// folder and renamed into place, so a crash (even SIGKILL) leaves either the old set or the new
// one, never a half-written checkpoint. The last K are kept.
//
//   checkpoints/step-00000050/
//     adapter/                    PEFT adapter (adapter_config.json + adapter_model.safetensors), LoRA
//     model/                      the whole model as an HF checkpoint (f32), full training
//     optimizer.safetensors       AdamW moments, f32, named <param>.exp_avg / .exp_avg_sq
//     trainer_state.json          step, data-loader state, scheduler, early stopping, loss history,
//                                 precision and (fp16-mixed) the loss scaler's state
//
// Only what finllm wrote is ever deleted or replaced. A `step-N` folder without trainer_state.json,
// or holding files finllm does not write, is the user's: --resume refuses to go on while one is
// there (it would otherwise be skipped, and then replaced when step N is saved again), the rotation
// of old checkpoints keeps it with a warning, and a save of step N that finds one (made while the
// run was going) moves it aside with a warning naming both paths.
import { existsSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { InputError } from '../../errors.js';
import { ensureFolderSync, writeFileAtomicSync, writeFolderAtomic } from '../../io/atomic.js';
import { describeNonFinite, nonFiniteCount } from '../../io/finite.js';
import { warn } from '../../warnings.js';
import { RESOLVED_CONFIG_NAME } from '../config.js';

export const CHECKPOINT_DIR = 'checkpoints';
const STEP_RE = /^step-(\d{8})$/;
/** Temp folders of checkpoints written by earlier versions (now atomic.ts temps, which clean themselves). */
const LEGACY_TEMP_RE = /^\.tmp-step-\d{8}-\d+$/;
/** Everything a checkpoint folder holds (the header's layout). */
const CHECKPOINT_ENTRIES = new Set([
  'adapter',
  'model',
  'optimizer.safetensors',
  'trainer_state.json',
  RESOLVED_CONFIG_NAME,
]);

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

/** Every `step-N` folder of a run, complete or not, oldest first. */
function stepFolders(runDir: string): { step: number; dir: string }[] {
  const root = join(runDir, CHECKPOINT_DIR);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => ({ m: STEP_RE.exec(name), name }))
    .filter((e) => e.m !== null)
    .map((e) => ({ step: Number(e.m![1]), dir: join(root, e.name) }))
    .sort((a, b) => a.step - b.step);
}

/** Completed checkpoints of a run, oldest first. */
export function listCheckpoints(runDir: string): { step: number; dir: string }[] {
  return stepFolders(runDir).filter((e) => existsSync(join(e.dir, 'trainer_state.json')));
}

export function latestCheckpoint(runDir: string): { step: number; dir: string } | null {
  const all = listCheckpoints(runDir);
  return all.length ? all[all.length - 1]! : null;
}

/**
 * Why `dir` is not a checkpoint as finllm writes it (missing trainer_state.json, a file finllm
 * does not write), or null when it is one. Such a folder is never deleted or replaced.
 */
export function foreignCheckpointContent(dir: string): string | null {
  let names: string[];
  try {
    if (!statSync(dir).isDirectory()) return 'it is not a folder';
    names = readdirSync(dir);
  } catch (err) {
    return `it cannot be read (${(err as NodeJS.ErrnoException).code ?? 'error'})`;
  }
  const foreign = names.filter((n) => !CHECKPOINT_ENTRIES.has(n));
  if (foreign.length > 0) {
    const shown = foreign.slice(0, 3).join(', ') + (foreign.length > 3 ? `, ... (${foreign.length - 3} more)` : '');
    return `it holds ${foreign.length === 1 ? 'a file' : 'files'} finllm does not write (${shown})`;
  }
  if (!names.includes('trainer_state.json'))
    return 'it has no trainer_state.json (finllm writes a checkpoint whole, so it was made or changed by hand)';
  return null;
}

/**
 * Refuses a run folder with a `step-N` folder that is not a complete checkpoint (no
 * trainer_state.json): --resume would skip it and step N's save would meet it. Checked before a
 * run starts or resumes, so nothing is trained in vain and nothing of the user's is touched.
 */
export function checkCheckpointFolders(runDir: string): void {
  for (const { dir } of stepFolders(runDir)) {
    if (existsSync(join(dir, 'trainer_state.json'))) continue;
    const why = foreignCheckpointContent(dir) ?? 'it has no trainer_state.json';
    throw new InputError(
      `not a complete checkpoint: ${why}. Move it out of ${join(runDir, CHECKPOINT_DIR)} (or delete it) and run again`,
      { file: dir },
    );
  }
}

/**
 * Writes a checkpoint: `write(tmpDir)` fills a temp folder, which is then renamed to its final
 * name (src/io/atomic.ts). Older checkpoints beyond `keepLast` are removed afterwards, only those
 * finllm wrote (see the header).
 */
export async function saveCheckpoint(
  runDir: string,
  step: number,
  keepLast: number,
  write: (dir: string) => Promise<void>,
): Promise<string> {
  const root = join(runDir, CHECKPOINT_DIR);
  ensureFolderSync(root);
  for (const name of readdirSync(root))
    if (LEGACY_TEMP_RE.test(name)) rmSync(join(root, name), { recursive: true, force: true });
  const final = join(root, checkpointName(step));
  if (existsSync(final)) {
    const why = foreignCheckpointContent(final);
    if (why !== null) {
      const aside = `${final}.moved-${new Date().toISOString().replace(/[:.]/g, '-')}`;
      renameSync(final, aside);
      warn(`${final} was not a checkpoint finllm wrote (${why}): moved it to ${aside} to save step ${step} there`);
    }
  }
  await writeFolderAtomic(final, write, { replace: true });
  const all = listCheckpoints(runDir);
  for (const old of all.slice(0, Math.max(0, all.length - keepLast))) {
    const why = foreignCheckpointContent(old.dir);
    if (why === null) rmSync(old.dir, { recursive: true, force: true });
    else warn(`${old.dir}: kept, although training.keep_last_checkpoints would remove it: ${why}`, `keep ${old.dir}`);
  }
  return final;
}

export function writeJsonSync(path: string, value: unknown): void {
  writeFileAtomicSync(path, JSON.stringify(value, null, 2) + '\n');
}

export function readJsonSync<T>(path: string): T {
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as T;
  } catch (err) {
    throw new InputError(`cannot read checkpoint state: ${(err as Error).message}`, { file: path });
  }
}

/** Refuses a checkpoint's tensors when any holds a NaN or Inf, naming them. */
export function refuseNonFinite(tensors: Map<string, Float32Array>, file: string): void {
  const found = [...tensors].map(([name, data]) => ({ name, count: nonFiniteCount(data) })).filter((f) => f.count > 0);
  if (found.length > 0)
    throw new InputError(
      `${describeNonFinite(found)}; the checkpoint is damaged: resume from an earlier one (delete this folder)`,
      { file },
    );
}
