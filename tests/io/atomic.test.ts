import { spawnSync } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { removeStaleTemps, writeFileAtomic, writeFileAtomicStreaming, writeFileAtomicSync, writeFolderAtomic } from '../../src/io/atomic.js';
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
    await expect(writeFileAtomicStreaming(path, async (sink) => {
      await sink.write(new TextEncoder().encode('half of the new'));
      throw new Error('producer failed');
    })).rejects.toThrow('producer failed');
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
    await expect(writeFileAtomic(join(dir, 'blocker', 'x.txt'), 'x')).rejects.toThrow(/blocker: cannot create this folder: a file is in the way/);
    expect(await readdir(dir)).toEqual(['blocker']);
  });

  it('refuses to write a file over a folder, naming the path', async () => {
    const dir = await tempDir();
    await mkdir(join(dir, 'out.json'));
    await expect(writeFileAtomic(join(dir, 'out.json'), '{}')).rejects.toThrow(/out\.json: is a folder; expected the path of a file to write/);
    expect(() => writeFileAtomicSync(join(dir, 'out.json'), '{}')).toThrow(InputError);
    expect(await readdir(dir)).toEqual(['out.json']);
  });

  it('removes temps of the same destination left by a killed process, keeps other files and live writers\' temps', async () => {
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
    expect((await readdir(dir)).sort()).toEqual([`.other.json.tmp-${dead}-11111111`, `.report.json.tmp-${process.ppid}-00000000`, 'merged', 'report.json']);
    expect(removeStaleTemps(join(dir, 'other.json'))).toEqual([join(dir, `.other.json.tmp-${dead}-11111111`)]);
  });
});
