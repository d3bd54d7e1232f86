// Checkpoint folders (src/pipeline/train/checkpoint.ts, issue 20 item 3): only what finllm wrote
// is deleted or replaced. A step-N folder that is not a complete checkpoint is refused before a
// run; a save that finds a foreign step-N moves it aside with a warning; the rotation of old
// checkpoints keeps folders holding anything finllm does not write.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { checkCheckpointFolders, latestCheckpoint, saveCheckpoint } from '../../../src/pipeline/train/checkpoint.js';
import { setWarningSink } from '../../../src/warnings.js';

const warnings: string[] = [];
afterEach(() => {
  setWarningSink(null);
  warnings.length = 0;
});
function run(): string {
  setWarningSink((m) => warnings.push(m));
  return mkdtempSync(join(tmpdir(), 'finllm-ckpt-'));
}
const step = (runDir: string, n: number) => join(runDir, 'checkpoints', `step-${String(n).padStart(8, '0')}`);
/** What the trainer's writer puts in a checkpoint (contents stand-ins). */
const writeStep = (n: number) => async (dir: string) => {
  mkdirSync(join(dir, 'adapter'));
  writeFileSync(join(dir, 'adapter', 'adapter_model.safetensors'), `weights ${n}`);
  writeFileSync(join(dir, 'optimizer.safetensors'), `moments ${n}`);
  writeFileSync(join(dir, 'trainer_state.json'), JSON.stringify({ step: n }));
};

describe('checkpoint folders', () => {
  it('keeps the last K checkpoints, removing older ones finllm wrote; no temp is left', async () => {
    const r = run();
    for (const n of [1, 2, 3]) await saveCheckpoint(r, n, 2, writeStep(n));
    expect(readdirSync(join(r, 'checkpoints')).sort()).toEqual(['step-00000002', 'step-00000003']);
    expect(latestCheckpoint(r)?.step).toBe(3);
    expect(warnings).toEqual([]);
  });

  it('the rotation keeps an old checkpoint holding a file the user put there, with a warning naming it', async () => {
    const r = run();
    await saveCheckpoint(r, 1, 1, writeStep(1));
    writeFileSync(join(step(r, 1), 'notes.txt'), 'my notes');
    await saveCheckpoint(r, 2, 1, writeStep(2));
    expect(readFileSync(join(step(r, 1), 'notes.txt'), 'utf8')).toBe('my notes');
    expect(warnings).toEqual([
      `${step(r, 1)}: kept, although training.keep_last_checkpoints would remove it: it holds a file finllm does not write (notes.txt)`,
    ]);
  });

  it('saving step N over a step-N folder finllm did not write moves that folder aside, naming both paths', async () => {
    const r = run();
    mkdirSync(step(r, 2), { recursive: true });
    writeFileSync(join(step(r, 2), 'results.csv'), 'a,b\n1,2\n');
    await saveCheckpoint(r, 2, 5, writeStep(2));
    expect(JSON.parse(readFileSync(join(step(r, 2), 'trainer_state.json'), 'utf8'))).toEqual({ step: 2 });
    const aside = readdirSync(join(r, 'checkpoints')).filter((n) => n.startsWith('step-00000002.moved-'));
    expect(aside).toHaveLength(1);
    expect(readFileSync(join(r, 'checkpoints', aside[0]!, 'results.csv'), 'utf8')).toBe('a,b\n1,2\n');
    expect(warnings).toEqual([
      `${step(r, 2)} was not a checkpoint finllm wrote (it holds a file finllm does not write (results.csv)): moved it to ${join(r, 'checkpoints', aside[0]!)} to save step 2 there`,
    ]);
  });

  it('saving step N over a checkpoint finllm wrote replaces it whole', async () => {
    const r = run();
    await saveCheckpoint(r, 2, 5, writeStep(2));
    await saveCheckpoint(r, 2, 5, async (dir) => {
      await writeStep(2)(dir);
      writeFileSync(join(dir, 'optimizer.safetensors'), 'moments 2, again');
    });
    expect(readFileSync(join(step(r, 2), 'optimizer.safetensors'), 'utf8')).toBe('moments 2, again');
    expect(readdirSync(join(r, 'checkpoints'))).toEqual(['step-00000002']);
    expect(warnings).toEqual([]);
  });

  it('a step-N folder without trainer_state.json is refused before a run, naming it and what it holds', async () => {
    const r = run();
    await saveCheckpoint(r, 1, 5, writeStep(1));
    checkCheckpointFolders(r); // complete checkpoints pass
    mkdirSync(step(r, 3), { recursive: true });
    expect(() => checkCheckpointFolders(r)).toThrow(InputError);
    expect(() => checkCheckpointFolders(r)).toThrow(
      `${step(r, 3)}: not a complete checkpoint: it has no trainer_state.json (finllm writes a checkpoint whole, so it was made or changed by hand). Move it out of ${join(r, 'checkpoints')} (or delete it) and run again`,
    );
    writeFileSync(join(step(r, 3), 'adapter_model.safetensors'), "the user's copy");
    expect(() => checkCheckpointFolders(r)).toThrow(
      /step-00000003: not a complete checkpoint: it holds a file finllm does not write \(adapter_model\.safetensors\)/,
    );
    // The latest complete checkpoint is still step 1: the incomplete one is never resumed from.
    expect(latestCheckpoint(r)?.step).toBe(1);
  });

  it('temp folders: those of earlier versions are removed, a user folder whose name merely starts with .tmp- stays', async () => {
    const r = run();
    mkdirSync(join(r, 'checkpoints', '.tmp-step-00000004-999999'), { recursive: true });
    mkdirSync(join(r, 'checkpoints', '.tmp-mine'));
    await saveCheckpoint(r, 1, 5, writeStep(1));
    expect(readdirSync(join(r, 'checkpoints')).sort()).toEqual(['.tmp-mine', 'step-00000001']);
    expect(existsSync(join(step(r, 1), 'trainer_state.json'))).toBe(true);
  });
});
