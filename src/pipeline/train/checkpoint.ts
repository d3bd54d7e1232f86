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
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, readFileSync } from 'node:fs';
import { writeFileAtomicSync } from '../../io/atomic.js';
import { join } from 'node:path';
import { InputError } from '../../errors.js';

export const CHECKPOINT_DIR = 'checkpoints';
const STEP_RE = /^step-(\d{8})$/;

export function checkpointName(step: number): string {
  return `step-${String(step).padStart(8, '0')}`;
}

/** Completed checkpoints of a run, oldest first. */
export function listCheckpoints(runDir: string): { step: number; dir: string }[] {
  const root = join(runDir, CHECKPOINT_DIR);
  if (!existsSync(root)) return [];
  return readdirSync(root)
    .map((name) => ({ m: STEP_RE.exec(name), name }))
    .filter((e) => e.m && existsSync(join(root, e.name, 'trainer_state.json')))
    .map((e) => ({ step: Number(e.m![1]), dir: join(root, e.name) }))
    .sort((a, b) => a.step - b.step);
}

export function latestCheckpoint(runDir: string): { step: number; dir: string } | null {
  const all = listCheckpoints(runDir);
  return all.length ? all[all.length - 1]! : null;
}

/**
 * Writes a checkpoint: `write(tmpDir)` fills a temp folder, which is then renamed to its final
 * name. Older checkpoints beyond `keepLast` are removed afterwards. Leftover temp folders from a
 * killed run are cleaned up.
 */
export async function saveCheckpoint(runDir: string, step: number, keepLast: number, write: (dir: string) => Promise<void>): Promise<string> {
  const root = join(runDir, CHECKPOINT_DIR);
  mkdirSync(root, { recursive: true });
  for (const name of readdirSync(root)) if (name.startsWith('.tmp-')) rmSync(join(root, name), { recursive: true, force: true });
  const final = join(root, checkpointName(step));
  const tmp = join(root, `.tmp-${checkpointName(step)}-${process.pid}`);
  mkdirSync(tmp, { recursive: true });
  try {
    await write(tmp);
  } catch (err) {
    rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
  if (existsSync(final)) rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  const all = listCheckpoints(runDir);
  for (const old of all.slice(0, Math.max(0, all.length - keepLast))) rmSync(old.dir, { recursive: true, force: true });
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
