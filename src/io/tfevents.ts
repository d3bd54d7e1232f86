// TensorBoard event files, written natively: TFRecord framing around hand-encoded `Event` protobufs.
//   record = uint64 length | uint32 masked_crc32c(length) | data | uint32 masked_crc32c(data)
//   Event  { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//   Summary { repeated Value value = 1; }   Value { string tag = 1; float simple_value = 2; }
// Every record is written with a synchronous write so a crashed run keeps all logged points.
import { closeSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { InputError } from '../errors.js';

// ---------------------------------------------------------------------------------------------
// CRC32C (Castagnoli), as TFRecord uses

const CRC32C_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

export function crc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) crc = CRC32C_TABLE[(crc ^ bytes[i]!) & 0xff]! ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** TFRecord stores CRCs rotated and offset, so CRCs of data containing CRCs stay well distributed. */
export function maskedCrc32c(bytes: Uint8Array): number {
  const crc = crc32c(bytes);
  return ((((crc >>> 15) | (crc << 17)) >>> 0) + 0xa282ead8) >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Protobuf encoding (only the wire types we need)

class ProtoWriter {
  private readonly parts: Uint8Array[] = [];

  private push(bytes: Uint8Array): this {
    this.parts.push(bytes);
    return this;
  }

  private varint(value: bigint): this {
    // int64 fields encode negatives as their 64-bit two's complement (10 bytes).
    let v = BigInt.asUintN(64, value);
    const out: number[] = [];
    while (v >= 0x80n) {
      out.push(Number(v & 0x7fn) | 0x80);
      v >>= 7n;
    }
    out.push(Number(v));
    return this.push(Uint8Array.from(out));
  }

  private key(field: number, wireType: number): this {
    return this.varint(BigInt((field << 3) | wireType));
  }

  double(field: number, value: number): this {
    const bytes = new Uint8Array(8);
    new DataView(bytes.buffer).setFloat64(0, value, true);
    return this.key(field, 1).push(bytes);
  }

  float(field: number, value: number): this {
    const bytes = new Uint8Array(4);
    new DataView(bytes.buffer).setFloat32(0, value, true);
    return this.key(field, 5).push(bytes);
  }

  int64(field: number, value: number | bigint): this {
    return this.key(field, 0).varint(BigInt(value));
  }

  bytes(field: number, value: Uint8Array): this {
    return this.key(field, 2).varint(BigInt(value.length)).push(value);
  }

  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }

  finish(): Uint8Array {
    const out = new Uint8Array(this.parts.reduce((n, p) => n + p.length, 0));
    let offset = 0;
    for (const part of this.parts) {
      out.set(part, offset);
      offset += part.length;
    }
    return out;
  }
}

export interface ScalarValue {
  tag: string;
  value: number;
}

export interface TfEvent {
  wallTime: number;
  step: number;
  fileVersion?: string;
  scalars: ScalarValue[];
}

/** The protobuf bytes of one Event. */
export function encodeEvent(event: TfEvent): Uint8Array {
  const writer = new ProtoWriter().double(1, event.wallTime);
  if (event.step !== 0) writer.int64(2, BigInt(event.step));
  if (event.fileVersion !== undefined) writer.string(3, event.fileVersion);
  if (event.scalars.length > 0) {
    const summary = new ProtoWriter();
    for (const { tag, value } of event.scalars)
      summary.bytes(1, new ProtoWriter().string(1, tag).float(2, value).finish());
    writer.bytes(5, summary.finish());
  }
  return writer.finish();
}

/** One TFRecord around `data`. */
export function frameRecord(data: Uint8Array): Uint8Array {
  const record = new Uint8Array(8 + 4 + data.length + 4);
  const view = new DataView(record.buffer);
  view.setBigUint64(0, BigInt(data.length), true);
  view.setUint32(8, maskedCrc32c(record.subarray(0, 8)), true);
  record.set(data, 12);
  view.setUint32(12 + data.length, maskedCrc32c(data), true);
  return record;
}

// ---------------------------------------------------------------------------------------------
// Writer

export interface TfEventsWriterOptions {
  /** Host name in the file name (default: this machine's). */
  host?: string;
  /** Clock in seconds since the epoch (tests pass a fixed one). */
  now?: () => number;
}

/** Appends scalar summaries to `<logDir>/events.out.tfevents.<secs>.<host>` (created at construction). */
export class TensorBoardWriter {
  readonly path: string;
  private readonly fd: number;
  private readonly now: () => number;
  private closed = false;

  constructor(logDir: string, options: TfEventsWriterOptions = {}) {
    this.now = options.now ?? (() => Date.now() / 1000);
    const host = (options.host ?? hostname()).replace(/[^A-Za-z0-9._-]/g, '_');
    mkdirSync(logDir, { recursive: true });
    const base = `events.out.tfevents.${Math.floor(this.now())}.${host}`;
    // Two writers started in the same second would collide: later ones get a pid/counter suffix
    // (TensorBoard reads any file whose name contains "tfevents").
    for (let attempt = 0; ; attempt++) {
      const path = join(logDir, attempt === 0 ? base : `${base}.${process.pid}.${attempt}`);
      try {
        this.fd = openSync(path, 'wx');
        this.path = path;
        break;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt >= 100) throw err;
      }
    }
    this.writeEvent({ wallTime: this.now(), step: 0, fileVersion: 'brain.Event:2', scalars: [] });
  }

  /** Same as `new TensorBoardWriter(logDir, options)`. */
  static create(logDir: string, options: TfEventsWriterOptions = {}): TensorBoardWriter {
    return new TensorBoardWriter(logDir, options);
  }

  private writeEvent(event: TfEvent): void {
    if (this.closed) throw new Error(`event file ${this.path} is closed`);
    const record = frameRecord(encodeEvent(event));
    let written = 0;
    while (written < record.length) written += writeSync(this.fd, record, written, record.length - written);
  }

  addScalar(tag: string, value: number, step: number, wallTime = this.now()): void {
    if (!Number.isSafeInteger(step)) throw new RangeError(`step must be an integer, got ${step}`);
    this.writeEvent({ wallTime, step, scalars: [{ tag, value }] });
  }

  /** Alias of addScalar. */
  scalar(tag: string, value: number, step: number, wallTime = this.now()): void {
    this.addScalar(tag, value, step, wallTime);
  }

  /** Several scalars logged at the same step, in one event. */
  addScalars(values: Record<string, number>, step: number, wallTime = this.now()): void {
    if (!Number.isSafeInteger(step)) throw new RangeError(`step must be an integer, got ${step}`);
    this.writeEvent({ wallTime, step, scalars: Object.entries(values).map(([tag, value]) => ({ tag, value })) });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

// ---------------------------------------------------------------------------------------------
// Reader (for tests and for resuming runs)

class ProtoReader {
  private offset = 0;

  constructor(
    private readonly bytes: Uint8Array,
    private readonly fail: (message: string) => never,
  ) {}

  get done(): boolean {
    return this.offset >= this.bytes.length;
  }

  varint(): bigint {
    let result = 0n;
    for (let shift = 0n; shift < 70n; shift += 7n) {
      if (this.offset >= this.bytes.length) this.fail('varint runs past the end of the message');
      const byte = this.bytes[this.offset++]!;
      result |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return result;
    }
    return this.fail('varint longer than 10 bytes');
  }

  take(length: number): Uint8Array {
    if (this.offset + length > this.bytes.length) this.fail('field runs past the end of the message');
    const out = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return out;
  }

  /** Next field as [field number, wire type, raw value]. */
  field(): [number, number, bigint | Uint8Array] {
    const key = Number(this.varint());
    const wireType = key & 7;
    switch (wireType) {
      case 0:
        return [key >>> 3, wireType, this.varint()];
      case 1:
        return [key >>> 3, wireType, this.take(8)];
      case 2:
        return [key >>> 3, wireType, this.take(Number(this.varint()))];
      case 5:
        return [key >>> 3, wireType, this.take(4)];
      default:
        return this.fail(`unsupported protobuf wire type ${wireType}`);
    }
  }
}

function littleEndian(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function decodeEvent(data: Uint8Array, fail: (message: string) => never): TfEvent {
  const event: TfEvent = { wallTime: 0, step: 0, scalars: [] };
  const reader = new ProtoReader(data, fail);
  while (!reader.done) {
    const [field, wireType, value] = reader.field();
    if (field === 1 && wireType === 1) event.wallTime = littleEndian(value as Uint8Array).getFloat64(0, true);
    else if (field === 2 && wireType === 0) event.step = Number(BigInt.asIntN(64, value as bigint));
    else if (field === 3 && wireType === 2) event.fileVersion = new TextDecoder().decode(value as Uint8Array);
    else if (field === 5 && wireType === 2) {
      const summary = new ProtoReader(value as Uint8Array, fail);
      while (!summary.done) {
        const [summaryField, summaryWire, entry] = summary.field();
        if (summaryField !== 1 || summaryWire !== 2) continue;
        const valueReader = new ProtoReader(entry as Uint8Array, fail);
        let tag = '';
        let simpleValue: number | undefined;
        while (!valueReader.done) {
          const [f, w, v] = valueReader.field();
          if (f === 1 && w === 2) tag = new TextDecoder().decode(v as Uint8Array);
          else if (f === 2 && w === 5) simpleValue = littleEndian(v as Uint8Array).getFloat32(0, true);
        }
        // Values other than simple_value (images, histograms, tensors) are not ours to decode.
        if (simpleValue !== undefined) event.scalars.push({ tag, value: simpleValue });
      }
    }
  }
  return event;
}

/** Parses every record of an event file, checking both CRCs of each. */
export function readTfEvents(path: string): TfEvent[] {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(path);
  } catch (err) {
    throw new InputError(`cannot read event file (${(err as NodeJS.ErrnoException).code ?? String(err)})`, {
      file: path,
    });
  }
  const events: TfEvent[] = [];
  let offset = 0;
  for (let index = 0; offset < bytes.length; index++) {
    const fail = (message: string): never => {
      throw new InputError(`record ${index} at byte ${offset}: ${message}`, { file: path });
    };
    if (offset + 12 > bytes.length) fail('truncated record header');
    const view = littleEndian(bytes.subarray(offset, offset + 12));
    if (maskedCrc32c(bytes.subarray(offset, offset + 8)) !== view.getUint32(8, true)) fail('length CRC mismatch');
    const length = view.getBigUint64(0, true);
    if (BigInt(offset) + 16n + length > BigInt(bytes.length))
      fail(`record of ${length} bytes runs past the end of the file`);
    const data = bytes.subarray(offset + 12, offset + 12 + Number(length));
    const storedCrc = littleEndian(bytes.subarray(offset + 12 + data.length, offset + 16 + data.length)).getUint32(
      0,
      true,
    );
    if (maskedCrc32c(data) !== storedCrc) fail('data CRC mismatch');
    events.push(decodeEvent(data, fail));
    offset += 16 + data.length;
  }
  return events;
}
