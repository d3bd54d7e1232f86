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

/**
 * Whether `p` settles within `ms` (returning as soon as it does). A "does not settle" check waits the
 * full `ms`, so it holds however slow the machine is; a "settles" check gets a bound of seconds, far
 * above the milliseconds it takes, so a loaded machine cannot fail it while a lock that is never taken
 * still does.
 */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let settled = false;
  const done = p.then(
    () => void (settled = true),
    () => void (settled = true),
  );
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([done, new Promise<void>((ok) => (timer = setTimeout(ok, ms)))]);
  clearTimeout(timer);
  return settled;
}

/** Polls `cond` every 10 ms until it holds or `ms` pass; whether it held. */
async function holdsWithin(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(10);
  return cond();
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
    // It starts waiting (however long the first try takes on a loaded machine), and keeps waiting.
    expect(await holdsWithin(() => waits.length > 0, 30_000)).toBe(true);
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
    // staleMs is far above any stall of this process between writing the lock and the "still waiting"
    // checks, and the owner's last refresh is set far beyond it: only the judgement is tested, not speed.
    const lock = acquireFileLock(lockPath, { pollMs: 20, staleMs: 60_000 });
    expect(await settlesWithin(lock, 200)).toBe(false);
    // Its owner stops refreshing it: it is stale.
    const old = new Date(Date.now() - 180_000);
    utimesSync(lockPath, old, old);
    expect(await settlesWithin(lock, 30_000)).toBe(true);
    await (await lock).release();
    // An unreadable lock (its owner still writing it, or died doing so) is judged by age alone.
    writeFileSync(lockPath, '');
    const partial = acquireFileLock(lockPath, { pollMs: 20, staleMs: 60_000 });
    expect(await settlesWithin(partial, 200)).toBe(false);
    utimesSync(lockPath, old, old);
    await (await partial).release();
  });

  it("the holder refreshes the lock's mtime, and a release removes only its own lock", async () => {
    const lockPath = join(await tempDir(), 'blob.lock');
    const lock = await acquireFileLock(lockPath, { heartbeatMs: 30 });
    const old = new Date(Date.now() - 120_000);
    utimesSync(lockPath, old, old);
    // Refreshed within a few beats (polled: a loaded machine may run the 30 ms timer late).
    expect(await holdsWithin(() => Date.now() - statSync(lockPath).mtimeMs < 10_000, 30_000)).toBe(true);
    // The lock was taken over (judged stale elsewhere): releasing leaves the new owner's lock.
    const other = JSON.stringify({ pid: process.pid, host: hostname(), token: 'other' });
    writeFileSync(lockPath, other);
    await lock.release();
    expect(readFileSync(lockPath, 'utf8')).toBe(other);
  });
});
