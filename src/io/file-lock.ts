// An inter-process lock on a file path, for work that two finllm processes may start at once on the
// same files: two runs downloading the same Hub blob into a shared HF cache. The lock is a file
// created with O_EXCL (atomic on local filesystems, Linux and macOS alike) that holds its owner's
// pid, host and a random token; the owner refreshes its mtime every few seconds while it holds it.
//
// A lock left behind by an owner that died (SIGKILL, a crash, a power cut) is stale, and the next
// process to want it removes it: when its owner ran on this host and no longer runs, or when its
// mtime has not been refreshed for `staleMs` (an owner on another host sharing the cache, or a pid
// reused since). Removing a stale lock is itself guarded by a `<lock>.break` file, so of several
// waiters that find it stale one removes it, and only if it is still the lock they judged.
import { randomBytes } from 'node:crypto';
import { open, readFile, rm, stat, utimes } from 'node:fs/promises';
import { hostname } from 'node:os';
import { processRuns } from './atomic.js';

/** Who holds a lock, as its file says. */
export interface LockOwner {
  pid: number;
  host: string;
  token: string;
}

export interface FileLockOptions {
  /** Called once, when the lock is found held by another live owner and this process starts waiting. */
  onWait?: (owner: LockOwner | null) => void;
  /** Milliseconds between tries while waiting (default 200). */
  pollMs?: number;
  /** A lock whose mtime is older than this is stale whoever holds it (default 60 000). */
  staleMs?: number;
  /** Milliseconds between the owner's mtime refreshes (default 5 000; well under staleMs). */
  heartbeatMs?: number;
}

export interface FileLock {
  readonly path: string;
  /** Removes the lock file (only if it is still this one) and stops refreshing it. */
  release(): Promise<void>;
}

const sleep = (ms: number) => new Promise<void>((ok) => setTimeout(ok, ms));
const errno = (err: unknown) => (err as NodeJS.ErrnoException).code;

/** The lock file's text and owner (null when it does not parse, e.g. its owner is still writing it), or null when it is gone. */
async function readLock(path: string): Promise<{ text: string; owner: LockOwner | null; mtimeMs: number } | null> {
  try {
    const [text, st] = await Promise.all([readFile(path, 'utf8'), stat(path)]);
    let owner: LockOwner | null = null;
    try {
      const o = JSON.parse(text) as Partial<LockOwner>;
      if (typeof o.pid === 'number' && typeof o.host === 'string' && typeof o.token === 'string')
        owner = { pid: o.pid, host: o.host, token: o.token };
    } catch {
      owner = null;
    }
    return { text, owner, mtimeMs: st.mtimeMs };
  } catch (err) {
    if (errno(err) === 'ENOENT') return null;
    throw err;
  }
}

function isStale(lock: { owner: LockOwner | null; mtimeMs: number }, staleMs: number): boolean {
  const { owner } = lock;
  if (owner && owner.host === hostname() && owner.pid !== process.pid && !processRuns(owner.pid)) return true;
  return Date.now() - lock.mtimeMs > staleMs;
}

/** Removes the stale lock whose text was `text`, unless another waiter is doing so or it changed meanwhile. */
async function breakStale(path: string, text: string, staleMs: number): Promise<void> {
  const guard = `${path}.break`;
  try {
    await (await open(guard, 'wx')).close();
  } catch (err) {
    if (errno(err) !== 'EEXIST') throw err;
    // Another waiter is breaking it (for milliseconds); a guard left by one that died goes after a while.
    const st = await stat(guard).catch(() => null);
    if (st && Date.now() - st.mtimeMs > Math.min(staleMs, 10_000)) await rm(guard, { force: true });
    return;
  }
  try {
    const now = await readLock(path);
    if (now && now.text === text && isStale(now, staleMs)) await rm(path, { force: true });
  } finally {
    await rm(guard, { force: true });
  }
}

/**
 * Takes the lock `path` (waiting while another live process holds it, removing a stale one), and
 * returns it held. The folder of `path` must exist.
 */
export async function acquireFileLock(path: string, opts: FileLockOptions = {}): Promise<FileLock> {
  const { pollMs = 200, staleMs = 60_000, heartbeatMs = 5_000 } = opts;
  const me: LockOwner = { pid: process.pid, host: hostname(), token: randomBytes(8).toString('hex') };
  let waiting = false;
  for (;;) {
    try {
      const handle = await open(path, 'wx');
      try {
        await handle.writeFile(JSON.stringify(me));
      } finally {
        await handle.close();
      }
      break;
    } catch (err) {
      if (errno(err) !== 'EEXIST') throw err;
    }
    const held = await readLock(path);
    if (held === null) continue; // released between the two calls
    if (isStale(held, staleMs)) {
      await breakStale(path, held.text, staleMs);
      continue;
    }
    if (!waiting) {
      waiting = true;
      opts.onWait?.(held.owner);
    }
    await sleep(pollMs);
  }
  const heartbeat = setInterval(() => {
    const t = new Date();
    utimes(path, t, t).catch(() => undefined);
  }, heartbeatMs);
  heartbeat.unref();
  return {
    path,
    async release() {
      clearInterval(heartbeat);
      const now = await readLock(path);
      if (now?.owner?.token === me.token) await rm(path, { force: true });
    },
  };
}
