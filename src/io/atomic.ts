// Atomic file and folder writes: everything goes to a hidden temp path in the destination's folder
// (same filesystem, so rename is atomic) and is renamed over the destination only once fully
// written and synced. A failure at any point removes the temp path, so readers never see a
// half-written file.
//
// Temp paths are `.<name>.tmp-<pid>-<random>`. A process killed mid-write (SIGKILL, power loss)
// cannot remove its temp; the next write to the same destination removes the temps of processes
// that no longer run. SIGINT / SIGTERM during a write remove the temps in progress before the
// process dies, unless another handler (the trainer's graceful stop) takes the signal.

import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { type FileHandle, mkdir, open, readdir, rename, rm, rmdir, stat } from 'node:fs/promises';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { describeSystemError, InputError } from '../errors.js';

/** Sequential writer handed to a streaming callback. */
export interface ByteSink {
  /** Appends bytes at the current end of the temp file. */
  write(chunk: Uint8Array): Promise<void>;
  /** Bytes written so far. */
  readonly bytesWritten: number;
}

const TEMP_INFIX = '.tmp-';

/** A temp path next to `path`, unique per process and call, hidden so globbing tools skip it. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}${TEMP_INFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
}

// ---------------------------------------------------------------------------------------------
// Temps in progress: removed on SIGINT / SIGTERM, never mistaken for stale ones.

const active = new Set<string>();
const SIGNALS = ['SIGINT', 'SIGTERM'] as const;

function onSignal(signal: NodeJS.Signals): void {
  // Another listener (the trainer) stops gracefully and lets its writes finish: leave it to that.
  if (process.listenerCount(signal) > 1) return;
  for (const p of active) rmSync(p, { recursive: true, force: true });
  active.clear();
  for (const s of SIGNALS) process.off(s, onSignal);
  // No listener left: the default action ends the process, with the status a shell reports as 128 + n.
  process.kill(process.pid, signal);
}

function track(path: string): void {
  if (active.size === 0) for (const s of SIGNALS) process.on(s, onSignal);
  active.add(path);
}

function untrack(path: string): void {
  active.delete(path);
  if (active.size === 0) for (const s of SIGNALS) process.off(s, onSignal);
}

/** Whether a process with this id runs on this host (one of another user's counts). */
export function processRuns(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Removes the temp files and folders of `path` left by earlier writers that were killed: those of
 * processes that no longer run, and those of this process id that this process did not make
 * (a container restarts with the same pid). Temps of a live writer of the same destination stay.
 */
export function removeStaleTemps(path: string): string[] {
  const dir = dirname(path);
  const prefix = `.${basename(path)}${TEMP_INFIX}`;
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(prefix)) continue;
    const m = /^(\d+)-[0-9a-f]+$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const full = join(dir, name);
    const pid = Number(m[1]);
    if (pid === process.pid ? active.has(full) : processRuns(pid)) continue;
    rmSync(full, { recursive: true, force: true });
    removed.push(full);
  }
  return removed;
}

/**
 * A system error met while writing the temp path `temp` (or a file inside a temp folder) for
 * `dest`, re-aimed at the destination: the user never asked for the temp and cannot act on its
 * name. ENOSPC from a write has no path at all; EROFS / EACCES name the temp being created; a
 * failed rename names both. Other errors pass unchanged.
 */
function aboutDestination(err: unknown, temp: string, dest: string): unknown {
  const e = err as (NodeJS.ErrnoException & { dest?: string }) | null;
  if (!e || typeof e !== 'object' || typeof e.code !== 'string' || typeof e.syscall !== 'string') return err;
  const map = (p: string) => (p === temp ? dest : p.startsWith(temp + sep) ? dest + p.slice(temp.length) : p);
  const path = e.path === undefined ? dest : map(e.path);
  const other = e.dest === undefined ? undefined : map(e.dest);
  e.message = e.message.split(temp).join(dest);
  e.path = path;
  if (other === undefined || other === path) delete e.dest;
  else e.dest = other;
  return e;
}

// ---------------------------------------------------------------------------------------------
// Destinations

/** The InputError for a destination folder that cannot be created (a file in the way, permissions). */
function cannotCreate(folder: string, err: unknown): Error {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EEXIST' || code === 'ENOTDIR')
    return new InputError(
      'cannot create this folder: a file is in the way (it or a parent exists and is not a folder)',
      { file: folder },
    );
  if (code === 'ENOENT')
    return new InputError('cannot create this folder: the file system refused (no such file or directory)', {
      file: folder,
    });
  const info = describeSystemError(err);
  if (info?.inputProblem)
    return new InputError(`cannot create this folder: ${info.message.replace(/^.*?: /, '')}`, { file: folder });
  return err instanceof Error ? err : new Error(String(err));
}

/** The folders to create for `folder` to exist, outermost first (Node's recursive mkdir loops forever on e.g. /proc/x/y). */
function missingFolders(folder: string, exists: (p: string) => boolean): string[] {
  const chain: string[] = [];
  for (let p = resolve(folder); !exists(p); p = dirname(p)) {
    chain.push(p);
    if (dirname(p) === p) break;
  }
  return chain.reverse();
}

function existsSyncStrict(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Creates `folder` and its parents; a path that cannot be a folder is an InputError naming it. */
export function ensureFolderSync(folder: string): void {
  try {
    for (const p of missingFolders(folder, existsSyncStrict)) {
      try {
        mkdirSync(p);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
    }
    if (!statSync(folder).isDirectory()) throw Object.assign(new Error('not a folder'), { code: 'ENOTDIR' });
  } catch (err) {
    throw cannotCreate(folder, err);
  }
}

/** Async twin of ensureFolderSync (the checks are the same few stat calls). */
export async function ensureFolder(folder: string): Promise<void> {
  ensureFolderSync(folder);
}

/**
 * Fails early, before any work, when `folder` cannot be created or used: its nearest existing
 * ancestor (or itself) is not a folder.
 */
export function checkFolderDestination(folder: string): void {
  for (let p = resolve(folder); ; p = dirname(p)) {
    let isDirectory: boolean | null;
    try {
      isDirectory = statSync(p).isDirectory();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOTDIR') throw cannotCreate(folder, err);
      if (code !== 'ENOENT') throw cannotCreate(folder, err);
      isDirectory = null;
    }
    if (isDirectory === false)
      throw new InputError(
        'cannot create this folder: a file is in the way (it or a parent exists and is not a folder)',
        { file: folder },
      );
    if (isDirectory === true || dirname(p) === p) return;
  }
}

/** Fails early, before any work, when `path` cannot be written as a file (a folder is there, or a file blocks its folder). */
export function checkFileDestination(path: string): void {
  let isDirectory = false;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch {
    // absent (or unreachable: the folder check says why)
  }
  refuseFolderAt(path, isDirectory);
  checkFolderDestination(dirname(path));
}

function refuseFolderAt(path: string, isDirectory: boolean): void {
  if (isDirectory) throw new InputError('is a folder; expected the path of a file to write', { file: path });
}

// ---------------------------------------------------------------------------------------------
// Files

// Large chunks are split so a single write never exceeds what one write(2) call moves on Linux.
const MAX_WRITE_BYTES = 1 << 30;

async function writeFully(handle: FileHandle, chunk: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < chunk.byteLength) {
    const length = Math.min(chunk.byteLength - done, MAX_WRITE_BYTES);
    const { bytesWritten } = await handle.write(chunk, done, length, position + done);
    if (bytesWritten <= 0) throw new Error(`write returned ${bytesWritten} bytes`);
    done += bytesWritten;
  }
}

/**
 * Creates `path` (and its folder) by streaming bytes through `produce` into a temp file, then renames it into place.
 * If `produce` throws, the temp file is removed and the destination is left untouched.
 */
export async function writeFileAtomicStreaming(
  path: string,
  produce: (sink: ByteSink) => Promise<void>,
): Promise<void> {
  await ensureFolder(dirname(path));
  refuseFolderAt(path, (await stat(path).catch(() => null))?.isDirectory() ?? false);
  removeStaleTemps(path);
  const tempPath = tempPathFor(path);
  const handle = await open(tempPath, 'wx').catch((err: unknown) => {
    throw aboutDestination(err, tempPath, path);
  });
  track(tempPath);
  let closed = false;
  try {
    let position = 0;
    const sink: ByteSink = {
      async write(chunk: Uint8Array) {
        await writeFully(handle, chunk, position);
        position += chunk.byteLength;
      },
      get bytesWritten() {
        return position;
      },
    };
    await produce(sink);
    await handle.sync();
    await handle.close();
    closed = true;
    await rename(tempPath, path);
  } catch (err) {
    if (!closed) await handle.close().catch(() => undefined);
    await rm(tempPath, { force: true }).catch(() => undefined);
    throw aboutDestination(err, tempPath, path);
  } finally {
    untrack(tempPath);
  }
}

/** Writes `data` (a string is UTF-8 encoded) to `path` atomically. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  await writeFileAtomicStreaming(path, (sink) => sink.write(bytes));
}

/** Synchronous twin of writeFileAtomic (creates the folder if needed), for small files written in sync code paths. */
export function writeFileAtomicSync(path: string, data: string | Uint8Array): void {
  ensureFolderSync(dirname(path));
  let isDirectory = false;
  try {
    isDirectory = statSync(path).isDirectory();
  } catch {
    // does not exist yet
  }
  refuseFolderAt(path, isDirectory);
  removeStaleTemps(path);
  const tempPath = tempPathFor(path);
  track(tempPath);
  try {
    writeFileSync(tempPath, data, { flag: 'wx' });
    renameSync(tempPath, path);
  } catch (err) {
    rmSync(tempPath, { force: true });
    throw aboutDestination(err, tempPath, path);
  } finally {
    untrack(tempPath);
  }
}

// ---------------------------------------------------------------------------------------------
// Folders

/** Refuses an output folder that exists and is not empty; returns whether an empty one exists. */
async function checkOutputFolder(out: string): Promise<boolean> {
  const s = await stat(out).catch(() => null);
  if (!s) return false;
  if (!s.isDirectory()) throw new InputError('output path exists and is not a folder', { file: out });
  if ((await readdir(out)).length > 0)
    throw new InputError('output folder exists and is not empty; choose a new folder', { file: out });
  return true;
}

/**
 * Writes `out` as a complete folder produced by `fill(tmpDir)`, atomically: `fill` writes into a
 * hidden temp folder next to `out`, which is renamed to `out` only when it succeeded. `out` must
 * not exist or be an empty folder, unless `replace` is set: then an existing folder steps aside
 * only once the new one is complete (a crash in between leaves both as temps, never a half-written
 * folder under the final name).
 */
export async function writeFolderAtomic(
  dest: string,
  fill: (dir: string) => Promise<void>,
  opts: { replace?: boolean } = {},
): Promise<void> {
  const out = resolve(dest);
  const replacing = opts.replace === true && (await stat(out).catch(() => null))?.isDirectory() === true;
  const emptyExists = replacing ? false : await checkOutputFolder(out);
  await ensureFolder(dirname(out));
  removeStaleTemps(out);
  const tmp = tempPathFor(out);
  await mkdir(tmp).catch((err: unknown) => {
    throw aboutDestination(err, tmp, out);
  });
  track(tmp);
  try {
    await fill(tmp);
    if (emptyExists) await rmdir(out);
    if (replacing) {
      const old = tempPathFor(out);
      track(old);
      try {
        await rename(out, old);
        await rename(tmp, out);
        await rm(old, { recursive: true, force: true });
      } finally {
        untrack(old);
      }
    } else {
      await rename(tmp, out);
    }
  } catch (err) {
    await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    throw aboutDestination(err, tmp, out);
  } finally {
    untrack(tmp);
  }
}
