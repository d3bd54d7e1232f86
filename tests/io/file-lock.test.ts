// The inter-process file lock (src/io/file-lock.ts): one holder at a time, a waiter told who holds
// it, a lock of a dead process or one not refreshed for too long removed, the holder's refresh,
// and a release that removes only its own lock.
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { acquireFileLock, type LockOwner } from '../../src/io/file-lock.js';
import { useTempDirs } from './helpers.js';

const tempDir = useTempDirs();
const sleep = (ms: number) => new Promise<void>((ok) => setTimeout(ok, ms));

/** Whether `p` settles within `ms`. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  p.then(
    () => void (settled = true),
    () => void (settled = true),
  );
  await sleep(ms);
  return settled;
}

/** The id of a process that ran and exited (so runs no more). */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  return r.pid!;
}

describe('acquireFileLock', () => {
  it('one holder at a time: a second waits (told who holds it) until the first releases', async () => {
    const lockPath = join(await tempDir(), 'blob.lock');
    const first = await acquireFileLock(lockPath);
    const owner = JSON.parse(readFileSync(lockPath, 'utf8')) as LockOwner;
    expect(owner).toMatchObject({ pid: process.pid, host: hostname() });
    const waits: (LockOwner | null)[] = [];
    const second = acquireFileLock(lockPath, { pollMs: 20, onWait: (o) => waits.push(o) });
    expect(await settlesWithin(second, 300)).toBe(false);
    expect(waits).toEqual([owner]);
    await first.release();
    const held = await second;
    expect((JSON.parse(readFileSync(lockPath, 'utf8')) as LockOwner).token).not.toBe(owner.token);
    await held.release();
    expect(existsSync(lockPath)).toBe(false);
  });

  it('removes a lock whose owner on this host no longer runs, at once', async () => {
    const lockPath = join(await tempDir(), 'blob.lock');
    writeFileSync(lockPath, JSON.stringify({ pid: deadPid(), host: hostname(), token: 'dead' }));
    const waits: unknown[] = [];
    const lock = await acquireFileLock(lockPath, { onWait: (o) => waits.push(o) });
    expect(waits).toEqual([]);
    expect((JSON.parse(readFileSync(lockPath, 'utf8')) as LockOwner).pid).toBe(process.pid);
    await lock.release();
    expect(existsSync(`${lockPath}.break`)).toBe(false);
  });

  it('waits for a lock of another host while it is refreshed, and removes it once it is not for staleMs', async () => {
    const lockPath = join(await tempDir(), 'blob.lock');
    writeFileSync(lockPath, JSON.stringify({ pid: 1, host: 'another-host', token: 'remote' }));
    const lock = acquireFileLock(lockPath, { pollMs: 20, staleMs: 2000 });
    expect(await settlesWithin(lock, 200)).toBe(false);
    // Its owner stops refreshing it: it is stale.
    const old = new Date(Date.now() - 5000);
    utimesSync(lockPath, old, old);
    expect(await settlesWithin(lock, 300)).toBe(true);
    await (await lock).release();
    // An unreadable lock (its owner still writing it, or died doing so) is judged by age alone.
    writeFileSync(lockPath, '');
    const partial = acquireFileLock(lockPath, { pollMs: 20, staleMs: 2000 });
    expect(await settlesWithin(partial, 200)).toBe(false);
    utimesSync(lockPath, old, old);
    await (await partial).release();
  });

  it("the holder refreshes the lock's mtime, and a release removes only its own lock", async () => {
    const lockPath = join(await tempDir(), 'blob.lock');
    const lock = await acquireFileLock(lockPath, { heartbeatMs: 30 });
    const old = new Date(Date.now() - 120_000);
    utimesSync(lockPath, old, old);
    await sleep(200);
    expect(Date.now() - statSync(lockPath).mtimeMs).toBeLessThan(10_000);
    // The lock was taken over (judged stale elsewhere): releasing leaves the new owner's lock.
    const other = JSON.stringify({ pid: process.pid, host: hostname(), token: 'other' });
    writeFileSync(lockPath, other);
    await lock.release();
    expect(readFileSync(lockPath, 'utf8')).toBe(other);
  });
});
