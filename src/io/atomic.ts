// Atomic file writes: everything goes to a temp file in the destination's folder (same filesystem,
// so rename is atomic) and is renamed over the destination only once fully written and synced.
// A failure at any point removes the temp file, so readers never see a half-written file.
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, open, rename, rm, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';

/** Sequential writer handed to a streaming callback. */
export interface ByteSink {
  /** Appends bytes at the current end of the temp file. */
  write(chunk: Uint8Array): Promise<void>;
  /** Bytes written so far. */
  readonly bytesWritten: number;
}

/** A temp path next to `path`, unique per process and call, hidden so globbing tools skip it. */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

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
  await mkdir(dirname(path), { recursive: true });
  const tempPath = tempPathFor(path);
  const handle = await open(tempPath, 'wx');
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
    throw err;
  }
}

/** Writes `data` (a string is UTF-8 encoded) to `path` atomically. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const bytes = typeof data === 'string' ? new TextEncoder().encode(data) : data;
  await writeFileAtomicStreaming(path, (sink) => sink.write(bytes));
}

/** Synchronous twin of writeFileAtomic (creates the folder if needed), for small files written in sync code paths. */
export function writeFileAtomicSync(path: string, data: string | Uint8Array): void {
  mkdirSync(dirname(path), { recursive: true });
  const tempPath = tempPathFor(path);
  try {
    writeFileSync(tempPath, data, { flag: 'wx' });
    renameSync(tempPath, path);
  } catch (err) {
    rmSync(tempPath, { force: true });
    throw err;
  }
}
