import { spawnSync } from 'node:child_process';
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeSystemError, InputError } from '../../src/errors.js';
import {
  removeStaleTemps,
  writeFileAtomic,
  writeFileAtomicStreaming,
  writeFileAtomicSync,
  writeFolderAtomic,
} from '../../src/io/atomic.js';
import { useTempDirs } from './helpers.js';

const tempDir = useTempDirs();

describe('atomic writes', () => {
  it('creates and replaces files with exactly the given contents', async () => {
    const dir = await tempDir();
    const path = join(dir, 'a.json');
    await writeFileAtomic(path, '{"v": 1}');
    await writeFileAtomic(path, new Uint8Array([0xe2, 0x82, 0xac]));
    expect(await readFile(path, 'utf8')).toBe('€');
    expect(await readdir(dir)).toEqual(['a.json']);
  });

  it('streams chunks in order and reports the running size', async () => {
    const dir = await tempDir();
    const path = join(dir, 'stream.bin');
    const sizes: number[] = [];
    await writeFileAtomicStreaming(path, async (sink) => {
      for (let i = 0; i < 4; i++) {
        await sink.write(new Uint8Array(3).fill(i));
        sizes.push(sink.bytesWritten);
      }
    });
    expect(sizes).toEqual([3, 6, 9, 12]);
    expect(Array.from(await readFile(path))).toEqual([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]);
  });

  it('on failure keeps the old file and removes the temp file', async () => {
    const dir = await tempDir();
    const path = join(dir, 'keep.txt');
    await writeFile(path, 'old');
    await expect(
      writeFileAtomicStreaming(path, async (sink) => {
        await sink.write(new TextEncoder().encode('half of the new'));
        throw new Error('producer failed');
      }),
    ).rejects.toThrow('producer failed');
    expect(await readFile(path, 'utf8')).toBe('old');
    expect(await readdir(dir)).toEqual(['keep.txt']);
  });

  it('creates a missing destination folder', async () => {
    const dir = await tempDir();
    await writeFileAtomic(join(dir, 'missing', 'deeper', 'x.txt'), 'x');
    expect(await readdir(join(dir, 'missing', 'deeper'))).toEqual(['x.txt']);
  });

  it('fails cleanly when the destination folder cannot exist (a file is in the way)', async () => {
    const dir = await tempDir();
    await writeFileAtomic(join(dir, 'blocker'), 'a file, not a folder');
    await expect(writeFileAtomic(join(dir, 'blocker', 'x.txt'), 'x')).rejects.toThrow(InputError);
    await expect(writeFileAtomic(join(dir, 'blocker', 'x.txt'), 'x')).rejects.toThrow(
      /blocker: cannot create this folder: a file is in the way/,
    );
    expect(await readdir(dir)).toEqual(['blocker']);
  });

  it('refuses to write a file over a folder, naming the path', async () => {
    const dir = await tempDir();
    await mkdir(join(dir, 'out.json'));
    await expect(writeFileAtomic(join(dir, 'out.json'), '{}')).rejects.toThrow(
      /out\.json: is a folder; expected the path of a file to write/,
    );
    expect(() => writeFileAtomicSync(join(dir, 'out.json'), '{}')).toThrow(InputError);
    expect(await readdir(dir)).toEqual(['out.json']);
  });

  it("removes temps of the same destination left by a killed process, keeps other files and live writers' temps", async () => {
    const dir = await tempDir();
    // A process id that no longer runs: a child that has exited.
    const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
    await writeFile(join(dir, `.report.json.tmp-${dead}-0badc0de`), 'half');
    await mkdir(join(dir, `.merged.tmp-${dead}-01234567`));
    await writeFile(join(dir, `.merged.tmp-${dead}-01234567`, 'model.safetensors'), 'half');
    await writeFile(join(dir, `.report.json.tmp-${process.ppid}-00000000`), 'a live process');
    await writeFile(join(dir, `.other.json.tmp-${dead}-11111111`), 'another destination');
    await writeFileAtomic(join(dir, 'report.json'), '{}');
    writeFileAtomicSync(join(dir, 'report.json'), '{}');
    await writeFolderAtomic(join(dir, 'merged'), async (tmp) => writeFile(join(tmp, 'a'), 'a'));
    expect((await readdir(dir)).sort()).toEqual([
      `.other.json.tmp-${dead}-11111111`,
      `.report.json.tmp-${process.ppid}-00000000`,
      'merged',
      'report.json',
    ]);
    expect(removeStaleTemps(join(dir, 'other.json'))).toEqual([join(dir, `.other.json.tmp-${dead}-11111111`)]);
  });
});

describe('errors of atomic writes name the destination, never the temp (issue 20, item 21)', () => {
  /** What a write(2) on a full disk gives Node: a system error with no path. */
  const diskFull = () =>
    Object.assign(new Error('ENOSPC: no space left on device, write'), {
      code: 'ENOSPC',
      errno: -28,
      syscall: 'write',
    });

  it('a full disk during a streamed write: the error carries the destination path, and describeSystemError says it', async () => {
    const dir = await tempDir();
    const dest = join(dir, 'report.json');
    const err = await writeFileAtomicStreaming(dest, async (sink) => {
      await sink.write(new Uint8Array(10));
      throw diskFull();
    }).catch((e: unknown) => e);
    expect(describeSystemError(err)).toEqual({
      message: `${dest}: no space left on device (write)`,
      inputProblem: false,
    });
    expect(await readdir(dir)).toEqual([]);
  });

  it('a full disk while filling an atomic folder: the file named is the one under the final folder', async () => {
    const dir = await tempDir();
    const out = join(dir, 'tok');
    const err = await writeFolderAtomic(out, async (tmp) => {
      await writeFileAtomic(join(tmp, 'a.json'), '{}');
      await writeFileAtomicStreaming(join(tmp, 'tokenizer.json'), async () => {
        throw diskFull();
      });
    }).catch((e: unknown) => e);
    expect(describeSystemError(err)?.message).toBe(`${join(out, 'tokenizer.json')}: no space left on device (write)`);
    expect((err as Error).message).not.toContain('.tmp-');
    expect(await readdir(dir)).toEqual([]);
  });

  it('a destination folder where files cannot be created (read-only, or no permission): the destination is named', async () => {
    const dir = await tempDir();
    // Root may write anywhere, so a refused create is made the way the kernel reports it (the real
    // read-only file system is in tests/cli/reliability-3.test.ts).
    const err = await writeFolderAtomic(join(dir, 'out'), async (tmp) => {
      const inner = join(tmp, 'model.safetensors');
      throw Object.assign(new Error(`EROFS: read-only file system, open '${inner}'`), {
        code: 'EROFS',
        errno: -30,
        syscall: 'open',
        path: inner,
      });
    }).catch((e: unknown) => e);
    expect(describeSystemError(err)?.message).toBe(
      `${join(dir, 'out', 'model.safetensors')}: read-only file system (open)`,
    );
    expect((err as Error).message).toBe(
      `EROFS: read-only file system, open '${join(dir, 'out', 'model.safetensors')}'`,
    );
  });

  it.skipIf(process.getuid?.() === 0)(
    'a folder without write permission: the error names the destination file (not root)',
    async () => {
      const dir = await tempDir();
      await chmod(dir, 0o500);
      try {
        const err = await writeFileAtomic(join(dir, 'x.json'), '{}').catch((e: unknown) => e);
        expect(describeSystemError(err)?.message).toBe(`${join(dir, 'x.json')}: permission denied (open)`);
      } finally {
        await chmod(dir, 0o700);
      }
    },
  );
});
