// Streaming safetensors reader and writer (format: 8-byte little-endian header length N, N bytes of
// JSON header, then the data section; each tensor's data_offsets are relative to the data section).
// Tensors are read one at a time with positional reads, so checkpoints far larger than memory (and
// over 2 GB) work; the writer streams tensor by tensor into an atomic temp file.
import { type FileHandle, open, stat } from 'node:fs/promises';
import { endianness } from 'node:os';
import { basename, join } from 'node:path';
import { z } from 'zod';
import { InputError, readFailure } from '../errors.js';
import { type ByteSink, writeFileAtomic, writeFileAtomicStreaming } from './atomic.js';
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16, f32ArrayToF16 } from './dtype.js';
import { describeValue, parseWithSchema, readJsonFile } from './json.js';
import { similarNames } from './names.js';

if (endianness() !== 'LE') {
  // Typed-array views over file bytes assume a little-endian host, as the format is little-endian.
  throw new Error('finllm safetensors IO needs a little-endian host');
}

/** Element size in bytes of every dtype the safetensors spec defines. */
export const DTYPE_BYTES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
} as const;
export type SafetensorsDtype = keyof typeof DTYPE_BYTES;

function isKnownDtype(dtype: string): dtype is SafetensorsDtype {
  return Object.hasOwn(DTYPE_BYTES, dtype);
}

/** One tensor's header entry; `begin`/`end` are byte offsets relative to the data section. */
export interface TensorInfo {
  dtype: SafetensorsDtype;
  shape: number[];
  begin: number;
  end: number;
}

/** Refuse headers bigger than this before allocating for them (HF's own limit is 100 MB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Positional reads are issued in pieces no larger than this (read(2) moves < 2 GiB per call). */
const MAX_READ_BYTES = 1 << 30;

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((product, dim) => product * dim, 1);
}

function formatShape(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

async function readExactly(handle: FileHandle, file: string, position: number, target: Uint8Array): Promise<void> {
  let done = 0;
  while (done < target.byteLength) {
    const length = Math.min(target.byteLength - done, MAX_READ_BYTES);
    const { bytesRead } = await handle.read(target, done, length, position + done);
    if (bytesRead === 0) {
      throw new InputError(
        `file ended at byte ${position + done}, expected ${target.byteLength - done} more bytes (truncated?)`,
        { file },
      );
    }
    done += bytesRead;
  }
}

function isNonNegativeInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0;
}

/** Validates the parsed header against the data section size; every problem names the tensor. */
function parseHeader(
  header: unknown,
  file: string,
  dataBytes: number,
): { tensors: Map<string, TensorInfo>; metadata: Record<string, string> } {
  if (header === null || typeof header !== 'object' || Array.isArray(header)) {
    throw new InputError('safetensors header must be a JSON object', { file });
  }
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      const ok =
        raw !== null &&
        typeof raw === 'object' &&
        !Array.isArray(raw) &&
        Object.values(raw).every((v) => typeof v === 'string');
      if (!ok) throw new InputError('__metadata__ must map strings to strings', { file, key: name });
      metadata = { ...(raw as Record<string, string>) };
      continue;
    }
    const where = { file, key: name };
    if (raw === null || typeof raw !== 'object') throw new InputError('tensor entry must be an object', where);
    const { dtype, shape, data_offsets: offsets } = raw as Record<string, unknown>;
    if (typeof dtype !== 'string' || !isKnownDtype(dtype)) {
      throw new InputError(
        `unknown dtype ${describeValue(dtype)}; expected one of ${Object.keys(DTYPE_BYTES).join(', ')}`,
        where,
      );
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw new InputError(`shape must be a list of non-negative integers, got ${describeValue(shape)}`, where);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger)) {
      throw new InputError(`data_offsets must be [begin, end] integers, got ${describeValue(offsets)}`, where);
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) throw new InputError(`data_offsets begin ${begin} is after end ${end}`, where);
    if (end > dataBytes) {
      throw new InputError(`data_offsets end ${end} is past the end of the data section (${dataBytes} bytes)`, where);
    }
    const expectedBytes = elementCount(shape) * DTYPE_BYTES[dtype];
    if (end - begin !== expectedBytes) {
      throw new InputError(
        `byte length ${end - begin} does not match shape ${formatShape(shape)} x ${dtype} = ${expectedBytes} bytes`,
        where,
      );
    }
    tensors.set(name, { dtype, shape: [...shape], begin, end });
  }
  const byStart = [...tensors.entries()].filter(([, t]) => t.end > t.begin).sort(([, a], [, b]) => a.begin - b.begin);
  for (let i = 1; i < byStart.length; i++) {
    const [previousName, previous] = byStart[i - 1]!;
    const [name, info] = byStart[i]!;
    if (info.begin < previous.end) {
      throw new InputError(
        `data of tensor '${name}' [${info.begin}, ${info.end}) overlaps tensor '${previousName}' [${previous.begin}, ${previous.end})`,
        { file },
      );
    }
  }
  return { tensors, metadata };
}

/** Integer and float tensors as the typed array matching their dtype. */
export type TypedTensorData =
  | Float64Array
  | Float32Array
  | Uint16Array
  | Int16Array
  | Int8Array
  | Uint8Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

/** Reads tensors one at a time from a safetensors file; call `close()` when done. */
export class SafetensorsReader {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    readonly metadata: Readonly<Record<string, string>>,
    /** Absolute file position where the data section starts (8 + header length). */
    readonly dataStart: number,
  ) {}

  static async open(path: string): Promise<SafetensorsReader> {
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      throw readFailure(err, path, 'safetensors file');
    }
    try {
      const st = await handle.stat();
      if (!st.isFile())
        throw new InputError(
          `cannot read safetensors file: ${st.isDirectory() ? 'is a folder' : 'not a regular file'}, expected a file`,
          { file: path },
        );
      const fileSize = st.size;
      if (fileSize < 8)
        throw new InputError(`file is ${fileSize} bytes, too short for a safetensors header`, { file: path });
      const lengthBytes = new Uint8Array(8);
      await readExactly(handle, path, 0, lengthBytes);
      const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
      if (headerLength > BigInt(Math.min(fileSize - 8, MAX_HEADER_BYTES))) {
        throw new InputError(
          `header length ${headerLength} exceeds the ${fileSize - 8} bytes after the length prefix` +
            (headerLength > BigInt(MAX_HEADER_BYTES) ? ` (and the ${MAX_HEADER_BYTES}-byte limit)` : ''),
          { file: path },
        );
      }
      const headerBytes = new Uint8Array(Number(headerLength));
      await readExactly(handle, path, 8, headerBytes);
      let header: unknown;
      try {
        header = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(headerBytes));
      } catch (err) {
        throw new InputError(`safetensors header is not valid JSON: ${(err as Error).message}`, { file: path });
      }
      const dataStart = 8 + headerBytes.byteLength;
      const { tensors, metadata } = parseHeader(header, path, fileSize - dataStart);
      return new SafetensorsReader(path, handle, tensors, metadata, dataStart);
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** Header entry of `name`; a missing tensor is an InputError suggesting close names. */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) {
      const similar = similarNames(name, this.tensors.keys());
      throw new InputError(
        `no tensor named '${name}' (file has ${this.tensors.size} tensors${similar.length ? `; similar: ${similar.join(', ')}` : ''})`,
        { file: this.path },
      );
    }
    return info;
  }

  /** The raw little-endian bytes of one tensor, in a fresh (aligned) buffer. */
  async readRaw(name: string): Promise<Uint8Array> {
    const info = this.info(name);
    return this.readRawRange(name, 0, info.end - info.begin);
  }

  /** `byteLength` bytes of one tensor starting `byteOffset` bytes into it, e.g. a block of rows. */
  async readRawRange(name: string, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    const info = this.info(name);
    if (byteOffset < 0 || byteLength < 0 || byteOffset + byteLength > info.end - info.begin) {
      throw new RangeError(
        `range [${byteOffset}, +${byteLength}) outside tensor '${name}' (${info.end - info.begin} bytes)`,
      );
    }
    const bytes = new Uint8Array(byteLength);
    await readExactly(this.handle, this.path, this.dataStart + info.begin + byteOffset, bytes);
    return bytes;
  }

  /** A float tensor (F32, F16, BF16, F64) converted to f32; other dtypes are an InputError. */
  async readF32(name: string): Promise<Float32Array> {
    const info = this.info(name);
    const bytes = await this.readRaw(name);
    switch (info.dtype) {
      case 'F32':
        return new Float32Array(bytes.buffer, 0, bytes.byteLength / 4);
      case 'BF16':
        return bf16ArrayToF32(new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2));
      case 'F16':
        return f16ArrayToF32(new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2));
      case 'F64':
        return Float32Array.from(new Float64Array(bytes.buffer, 0, bytes.byteLength / 8));
      default:
        throw new InputError(
          `tensor '${name}' has dtype ${info.dtype}; expected a float dtype (F32, F16, BF16 or F64)`,
          { file: this.path },
        );
    }
  }

  /** The raw 16-bit words of a BF16 or F16 tensor (for keeping weights packed on the GPU). */
  async readU16(name: string): Promise<Uint16Array> {
    const info = this.info(name);
    if (info.dtype !== 'BF16' && info.dtype !== 'F16') {
      throw new InputError(`tensor '${name}' has dtype ${info.dtype}; expected BF16 or F16`, { file: this.path });
    }
    const bytes = await this.readRaw(name);
    return new Uint16Array(bytes.buffer, 0, bytes.byteLength / 2);
  }

  /** Any tensor as the typed array of its own dtype (F8 and BOOL come back as bytes). */
  async readTyped(name: string): Promise<TypedTensorData> {
    const info = this.info(name);
    const { buffer, byteLength } = await this.readRaw(name);
    const n = byteLength / DTYPE_BYTES[info.dtype];
    switch (info.dtype) {
      case 'F64':
        return new Float64Array(buffer, 0, n);
      case 'F32':
        return new Float32Array(buffer, 0, n);
      case 'F16':
      case 'BF16':
      case 'U16':
        return new Uint16Array(buffer, 0, n);
      case 'I64':
        return new BigInt64Array(buffer, 0, n);
      case 'U64':
        return new BigUint64Array(buffer, 0, n);
      case 'I32':
        return new Int32Array(buffer, 0, n);
      case 'U32':
        return new Uint32Array(buffer, 0, n);
      case 'I16':
        return new Int16Array(buffer, 0, n);
      case 'I8':
        return new Int8Array(buffer, 0, n);
      case 'U8':
      case 'BOOL':
      case 'F8_E4M3':
      case 'F8_E5M2':
        return new Uint8Array(buffer, 0, n);
    }
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** Every float tensor of a (small) file as f32, with the file's metadata and the tensor shapes. */
export interface F32TensorFile extends Map<string, Float32Array> {
  metadata: Record<string, string>;
  shapes: Map<string, number[]>;
}

/** Reads a whole small file (optimizer state, adapters, fixtures) into memory as f32 tensors. */
export async function readSafetensorsF32(path: string): Promise<F32TensorFile> {
  const reader = await SafetensorsReader.open(path);
  try {
    const tensors = new Map<string, Float32Array>();
    const shapes = new Map<string, number[]>();
    for (const [name, info] of reader.tensors) {
      tensors.set(name, await reader.readF32(name));
      shapes.set(name, [...info.shape]);
    }
    return Object.assign(tensors, { metadata: { ...reader.metadata }, shapes });
  } finally {
    await reader.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Checkpoint folders (single file or sharded with an index)

export const INDEX_FILE = 'model.safetensors.index.json';
export const SINGLE_FILE = 'model.safetensors';

const shardIndexSchema = z.object({
  metadata: z.record(z.string(), z.unknown()).optional(),
  weight_map: z.record(
    z.string(),
    z
      .string()
      .refine((f) => f === basename(f) && f !== '..' && f !== '.', 'shard must be a file name in the same folder'),
  ),
});

export type ShardIndex = z.infer<typeof shardIndexSchema>;

/** A sharded checkpoint's index (`model.safetensors.index.json`), validated: its shards are file names in its folder. */
export async function readShardIndex(path: string): Promise<ShardIndex> {
  return parseWithSchema(shardIndexSchema, await readJsonFile(path), path);
}

/** The shard files an index names, each once, in the order first named. */
export function shardFiles(index: ShardIndex): string[] {
  return [...new Set(Object.values(index.weight_map))];
}

/** A HF checkpoint folder: `model.safetensors`, or shards listed by `model.safetensors.index.json`. */
export class Checkpoint {
  private constructor(
    readonly dir: string,
    private readonly readers: ReadonlyMap<string, SafetensorsReader>,
    private readonly fileOfTensor: ReadonlyMap<string, string>,
  ) {}

  static async open(dir: string): Promise<Checkpoint> {
    const indexPath = join(dir, INDEX_FILE);
    const singlePath = join(dir, SINGLE_FILE);
    const readers = new Map<string, SafetensorsReader>();
    const fileOfTensor = new Map<string, string>();
    try {
      if (await exists(indexPath)) {
        const index = await readShardIndex(indexPath);
        for (const shard of shardFiles(index)) {
          readers.set(shard, await SafetensorsReader.open(join(dir, shard)));
        }
        for (const [name, shard] of Object.entries(index.weight_map)) {
          if (!readers.get(shard)!.has(name)) {
            throw new InputError(`weight_map says '${name}' is in ${shard}, but that shard has no such tensor`, {
              file: indexPath,
              key: `weight_map.${name}`,
            });
          }
          fileOfTensor.set(name, shard);
        }
      } else if (await exists(singlePath)) {
        const reader = await SafetensorsReader.open(singlePath);
        readers.set(SINGLE_FILE, reader);
        for (const name of reader.tensors.keys()) fileOfTensor.set(name, SINGLE_FILE);
      } else {
        throw new InputError(`no ${SINGLE_FILE} or ${INDEX_FILE} in this folder`, { file: dir });
      }
    } catch (err) {
      await Promise.all([...readers.values()].map((r) => r.close().catch(() => undefined)));
      throw err;
    }
    return new Checkpoint(dir, readers, fileOfTensor);
  }

  names(): string[] {
    return [...this.fileOfTensor.keys()];
  }

  has(name: string): boolean {
    return this.fileOfTensor.has(name);
  }

  private readerFor(name: string): SafetensorsReader {
    const file = this.fileOfTensor.get(name);
    if (file === undefined) {
      const similar = similarNames(name, this.fileOfTensor.keys());
      throw new InputError(
        `checkpoint has no tensor '${name}' (${this.fileOfTensor.size} tensors${similar.length ? `; similar: ${similar.join(', ')}` : ''})`,
        { file: this.dir },
      );
    }
    return this.readers.get(file)!;
  }

  /** Path of the file holding `name`. */
  fileOf(name: string): string {
    return this.readerFor(name).path;
  }

  info(name: string): TensorInfo {
    return this.readerFor(name).info(name);
  }

  shape(name: string): number[] {
    return [...this.info(name).shape];
  }

  dtype(name: string): SafetensorsDtype {
    return this.info(name).dtype;
  }

  /** Throws an InputError naming tensor, file, expected and actual shape when they differ. */
  checkShape(name: string, expectedShape: readonly number[]): void {
    const actual = this.info(name).shape;
    if (actual.length !== expectedShape.length || actual.some((d, i) => d !== expectedShape[i])) {
      throw new InputError(
        `tensor '${name}' has shape ${formatShape(actual)}, expected ${formatShape(expectedShape)}`,
        { file: this.fileOf(name) },
      );
    }
  }

  async readF32(name: string, expectedShape?: readonly number[]): Promise<Float32Array> {
    if (expectedShape) this.checkShape(name, expectedShape);
    return this.readerFor(name).readF32(name);
  }

  async readU16(name: string, expectedShape?: readonly number[]): Promise<Uint16Array> {
    if (expectedShape) this.checkShape(name, expectedShape);
    return this.readerFor(name).readU16(name);
  }

  async readRaw(name: string): Promise<Uint8Array> {
    return this.readerFor(name).readRaw(name);
  }

  async readRawRange(name: string, byteOffset: number, byteLength: number): Promise<Uint8Array> {
    return this.readerFor(name).readRawRange(name, byteOffset, byteLength);
  }

  async close(): Promise<void> {
    await Promise.all([...this.readers.values()].map((r) => r.close()));
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// Writer

/** Dtypes we write. Float32Array input is converted for F16/BF16; Uint16Array is taken as raw bits. */
export type WritableDtype = 'F32' | 'F16' | 'BF16' | 'I32' | 'U8';
export type WritableData = Float32Array | Uint16Array | Int32Array | Uint8Array;

export interface SafetensorsEntry {
  name: string;
  dtype: WritableDtype;
  shape: readonly number[];
  /** The values, or a producer called when this tensor is written (so only one is in memory). */
  data: WritableData | (() => Promise<WritableData> | WritableData);
}

function acceptedInputs(dtype: WritableDtype): string {
  switch (dtype) {
    case 'F32':
      return 'Float32Array';
    case 'F16':
    case 'BF16':
      return 'Float32Array or Uint16Array (raw bits)';
    case 'I32':
      return 'Int32Array';
    case 'U8':
      return 'Uint8Array';
  }
}

function dataMatchesDtype(dtype: WritableDtype, data: WritableData): boolean {
  switch (dtype) {
    case 'F32':
      return data instanceof Float32Array;
    case 'F16':
    case 'BF16':
      return data instanceof Float32Array || data instanceof Uint16Array;
    case 'I32':
      return data instanceof Int32Array;
    case 'U8':
      return data instanceof Uint8Array;
  }
}

// Tensors are streamed in pieces of this many elements so conversion buffers stay small.
const WRITE_CHUNK_ELEMENTS = 1 << 22;

function bytesOf(view: ArrayBufferView): Uint8Array {
  return new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
}

async function writeTensorData(sink: ByteSink, entry: SafetensorsEntry, data: WritableData): Promise<void> {
  const expected = elementCount(entry.shape);
  if (!dataMatchesDtype(entry.dtype, data)) {
    throw new TypeError(
      `tensor '${entry.name}' (${entry.dtype}) needs ${acceptedInputs(entry.dtype)}, got ${data.constructor.name}`,
    );
  }
  if (data.length !== expected) {
    throw new RangeError(
      `tensor '${entry.name}' has ${data.length} values, shape ${formatShape(entry.shape)} needs ${expected}`,
    );
  }
  const needsConversion = data instanceof Float32Array && (entry.dtype === 'F16' || entry.dtype === 'BF16');
  for (let start = 0; start < data.length; start += WRITE_CHUNK_ELEMENTS) {
    const end = Math.min(data.length, start + WRITE_CHUNK_ELEMENTS);
    if (needsConversion) {
      const piece = (data as Float32Array).subarray(start, end);
      const encoded = entry.dtype === 'BF16' ? f32ArrayToBf16(piece) : f32ArrayToF16(piece);
      await sink.write(bytesOf(encoded));
    } else {
      await sink.write(bytesOf(data.subarray(start, end)));
    }
  }
}

function validateEntries(entries: readonly SafetensorsEntry[]): void {
  const seen = new Set<string>();
  for (const entry of entries) {
    if (entry.name === '' || entry.name === '__metadata__') throw new Error(`invalid tensor name '${entry.name}'`);
    if (seen.has(entry.name)) throw new Error(`duplicate tensor name '${entry.name}'`);
    seen.add(entry.name);
    if (!entry.shape.every(isNonNegativeInteger)) {
      throw new Error(`tensor '${entry.name}' has invalid shape ${formatShape(entry.shape)}`);
    }
    if (!Object.hasOwn(DTYPE_BYTES, entry.dtype))
      throw new Error(`tensor '${entry.name}' has unsupported dtype ${entry.dtype}`);
  }
}

/** Encodes the header padded with spaces so the data section starts on an 8-byte boundary. */
function encodeHeader(
  layout: readonly { entry: SafetensorsEntry; begin: number; end: number }[],
  metadata?: Record<string, string>,
): Uint8Array {
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header['__metadata__'] = metadata;
  for (const { entry, begin, end } of layout) {
    header[entry.name] = { dtype: entry.dtype, shape: [...entry.shape], data_offsets: [begin, end] };
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const padded = Math.ceil(json.byteLength / 8) * 8;
  const bytes = new Uint8Array(8 + padded).fill(0x20, 8 + json.byteLength);
  new DataView(bytes.buffer).setBigUint64(0, BigInt(padded), true);
  bytes.set(json, 8);
  return bytes;
}

function layoutOf(entries: readonly SafetensorsEntry[]): { entry: SafetensorsEntry; begin: number; end: number }[] {
  // Wider dtypes first (stable otherwise), as HF does, so every tensor starts aligned to its
  // element size and memory-mapping readers can view it in place.
  const ordered = entries
    .map((entry, index) => ({ entry, index }))
    .sort((a, b) => DTYPE_BYTES[b.entry.dtype] - DTYPE_BYTES[a.entry.dtype] || a.index - b.index);
  let offset = 0;
  return ordered.map(({ entry }) => {
    const begin = offset;
    offset += elementCount(entry.shape) * DTYPE_BYTES[entry.dtype];
    return { entry, begin, end: offset };
  });
}

/** Writes a safetensors file atomically, streaming one tensor at a time. */
export async function writeSafetensors(
  path: string,
  entries: readonly SafetensorsEntry[],
  metadata?: Record<string, string>,
): Promise<void> {
  validateEntries(entries);
  const layout = layoutOf(entries);
  await writeFileAtomicStreaming(path, async (sink) => {
    await sink.write(encodeHeader(layout, metadata));
    for (const { entry } of layout) {
      const data = typeof entry.data === 'function' ? await entry.data() : entry.data;
      await writeTensorData(sink, entry, data);
    }
  });
}

export interface ShardedWriteOptions {
  /** Largest shard in bytes (tensor data only); a tensor bigger than this gets a shard of its own. */
  maxShardBytes: number;
  /** File name stem: `model` gives model.safetensors or model-00001-of-00003.safetensors + index. */
  stem?: string;
  metadata?: Record<string, string>;
}

/**
 * Writes `entries` into `dir` as HF does: one `<stem>.safetensors` when everything fits in a shard,
 * otherwise `<stem>-0000i-of-0000n.safetensors` files plus `<stem>.safetensors.index.json`
 * (written last, so a complete index never points at missing shards). Returns the files written.
 */
export async function writeShardedSafetensors(
  dir: string,
  entries: readonly SafetensorsEntry[],
  options: ShardedWriteOptions,
): Promise<string[]> {
  validateEntries(entries);
  const stem = options.stem ?? 'model';
  const shards: SafetensorsEntry[][] = [];
  let currentBytes = 0;
  let totalBytes = 0;
  for (const entry of entries) {
    const bytes = elementCount(entry.shape) * DTYPE_BYTES[entry.dtype];
    totalBytes += bytes;
    if (shards.length === 0 || (currentBytes + bytes > options.maxShardBytes && currentBytes > 0)) {
      shards.push([]);
      currentBytes = 0;
    }
    shards[shards.length - 1]!.push(entry);
    currentBytes += bytes;
  }
  if (shards.length <= 1) {
    const path = join(dir, `${stem}.safetensors`);
    await writeSafetensors(path, entries, options.metadata);
    return [path];
  }
  const width = Math.max(5, String(shards.length).length);
  const pad = (n: number) => String(n).padStart(width, '0');
  const written: string[] = [];
  const weightMap: Record<string, string> = {};
  for (const [i, shard] of shards.entries()) {
    const fileName = `${stem}-${pad(i + 1)}-of-${pad(shards.length)}.safetensors`;
    await writeSafetensors(join(dir, fileName), shard, options.metadata);
    for (const entry of shard) weightMap[entry.name] = fileName;
    written.push(join(dir, fileName));
  }
  const indexPath = join(dir, `${stem}.safetensors.index.json`);
  const sortedWeightMap = Object.fromEntries(
    Object.keys(weightMap)
      .sort()
      .map((k) => [k, weightMap[k]!]),
  );
  await writeFileAtomic(
    indexPath,
    `${JSON.stringify({ metadata: { total_size: totalBytes }, weight_map: sortedWeightMap }, null, 2)}\n`,
  );
  written.push(indexPath);
  return written;
}
