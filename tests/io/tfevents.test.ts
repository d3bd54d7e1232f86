import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import {
  crc32c,
  encodeEvent,
  frameRecord,
  maskedCrc32c,
  readTfEvents,
  TensorBoardWriter,
} from '../../src/io/tfevents.js';
import { useTempDirs } from './helpers.js';

const tempDir = useTempDirs();

/** Bit-at-a-time CRC32C straight from the definition, to check the table-driven one. */
function referenceCrc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0x82f63b78 & -(crc & 1));
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe('CRC32C', () => {
  it('matches the standard check value and the bitwise definition', () => {
    expect(crc32c(new TextEncoder().encode('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(0))).toBe(0);
    // RFC 3720 (iSCSI) test vector: 32 zero bytes.
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    const data = Uint8Array.from({ length: 1000 }, (_, i) => (i * 131 + 7) & 0xff);
    for (const n of [1, 7, 64, 1000]) expect(crc32c(data.subarray(0, n))).toBe(referenceCrc32c(data.subarray(0, n)));
  });

  it('masks as TFRecord does: rotate right by 15, add 0xa282ead8', () => {
    const bytes = new TextEncoder().encode('123456789');
    const crc = 0xe3069283;
    const rotated = ((crc >>> 15) | (crc << 17)) >>> 0;
    expect(maskedCrc32c(bytes)).toBe((rotated + 0xa282ead8) % 2 ** 32);
  });
});

describe('Event encoding', () => {
  it('produces the protobuf bytes assembled by hand', () => {
    const bytes = encodeEvent({ wallTime: 1.5, step: 3, scalars: [{ tag: 'a', value: 2 }] });
    expect(Array.from(bytes)).toEqual([
      0x09,
      0,
      0,
      0,
      0,
      0,
      0,
      0xf8,
      0x3f, // wall_time: double 1.5
      0x10,
      0x03, // step: varint 3
      0x2a,
      0x0a, // summary: 10 bytes
      0x0a,
      0x08, // value: 8 bytes
      0x0a,
      0x01,
      0x61, // tag "a"
      0x15,
      0,
      0,
      0,
      0x40, // simple_value: float 2
    ]);
    const versionEvent = encodeEvent({ wallTime: 0, step: 0, fileVersion: 'brain.Event:2', scalars: [] });
    expect(Array.from(versionEvent.subarray(9))).toEqual([0x1a, 13, ...new TextEncoder().encode('brain.Event:2')]);
  });

  it('frames records with length, masked CRCs and data', () => {
    const data = new TextEncoder().encode('hello');
    const record = frameRecord(data);
    const view = new DataView(record.buffer);
    expect(record.length).toBe(8 + 4 + 5 + 4);
    expect(view.getBigUint64(0, true)).toBe(5n);
    expect(view.getUint32(8, true)).toBe(maskedCrc32c(record.subarray(0, 8)));
    expect(new TextDecoder().decode(record.subarray(12, 17))).toBe('hello');
    expect(view.getUint32(17, true)).toBe(maskedCrc32c(data));
  });
});

describe('TensorBoardWriter', () => {
  it('writes a named event file that reads back scalar by scalar, flushed as it goes', async () => {
    const logDir = join(await tempDir(), 'runs', 'exp1');
    let clock = 1_764_000_000.25;
    const writer = TensorBoardWriter.create(logDir, { host: 'gpu box', now: () => clock });
    expect(readdirSync(logDir)).toEqual(['events.out.tfevents.1764000000.gpu_box']);
    writer.addScalar('train/loss', 2.5, 1);
    clock += 1;
    writer.addScalars({ 'train/loss': 2.25, 'train/lr': 1e-4 }, 2);
    // Readable before close: every event is on disk as soon as it is logged.
    expect(readTfEvents(writer.path)).toHaveLength(3);
    writer.addScalar('eval/loss', 3.125, 2 ** 40, 42);
    writer.scalar('odd', -1, -5);
    expect(() => writer.addScalar('fractional', 1, 1.5)).toThrow(/step must be an integer/);
    writer.close();
    expect(() => writer.addScalar('late', 1, 1)).toThrow(/closed/);

    const events = readTfEvents(writer.path);
    expect(events[0]).toEqual({ wallTime: 1_764_000_000.25, step: 0, fileVersion: 'brain.Event:2', scalars: [] });
    expect(events.slice(1)).toEqual([
      { wallTime: 1_764_000_000.25, step: 1, scalars: [{ tag: 'train/loss', value: 2.5 }] },
      {
        wallTime: 1_764_000_001.25,
        step: 2,
        scalars: [
          { tag: 'train/loss', value: 2.25 },
          { tag: 'train/lr', value: Math.fround(1e-4) },
        ],
      },
      { wallTime: 42, step: 2 ** 40, scalars: [{ tag: 'eval/loss', value: 3.125 }] },
      { wallTime: 1_764_000_001.25, step: -5, scalars: [{ tag: 'odd', value: -1 }] },
    ]);
  });

  it("does not overwrite another writer's file from the same second", async () => {
    const logDir = await tempDir();
    const first = TensorBoardWriter.create(logDir, { host: 'h', now: () => 100 });
    const second = new TensorBoardWriter(logDir, { host: 'h', now: () => 100 });
    first.close();
    second.close();
    expect(second.path).not.toBe(first.path);
    expect(readdirSync(logDir)).toHaveLength(2);
    expect(readdirSync(logDir).every((f) => f.startsWith('events.out.tfevents.100.h'))).toBe(true);
  });
});

describe('readTfEvents on damaged files', () => {
  async function writtenFile(): Promise<{ path: string; bytes: Buffer }> {
    const writer = TensorBoardWriter.create(await tempDir(), { host: 'h', now: () => 1 });
    writer.addScalar('loss', 1, 1);
    writer.close();
    return { path: writer.path, bytes: readFileSync(writer.path) };
  }

  function expectRefused(path: string, message: RegExp): void {
    let error: unknown;
    try {
      readTfEvents(path);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InputError);
    expect((error as Error).message).toContain(path);
    expect((error as Error).message).toMatch(message);
  }

  it('refuses a flipped data byte (data CRC)', async () => {
    const { path, bytes } = await writtenFile();
    bytes[bytes.length - 6]! ^= 0x01;
    writeFileSync(path, bytes);
    expectRefused(path, /record 1 at byte \d+: data CRC mismatch/);
  });

  it('refuses a damaged length (length CRC)', async () => {
    const { path, bytes } = await writtenFile();
    bytes[0]! ^= 0x01;
    writeFileSync(path, bytes);
    expectRefused(path, /record 0 at byte 0: length CRC mismatch/);
  });

  it('refuses a truncated file', async () => {
    const { path, bytes } = await writtenFile();
    writeFileSync(path, bytes.subarray(0, bytes.length - 3));
    expectRefused(path, /record 1 .*runs past the end of the file/);
    writeFileSync(path, bytes.subarray(0, 5));
    expectRefused(path, /record 0 .*truncated record header/);
  });
});
