// The GGUF container (llama.cpp's model file, version 3, little-endian):
//   header   "GGUF", version u32, tensor count u64, metadata count u64
//   metadata key (string) + value type u32 + value, for every key
//   infos    per tensor: name, n_dims u32, dims u64 (innermost first), ggml type u32, data offset u64
//   padding  to general.alignment (32 unless set)
//   data     every tensor at its offset (relative to the data start), each aligned
// Strings are a u64 byte length + UTF-8 bytes; arrays a value type u32 + count u64 + items.
// Tensor encodings (F32/F16/BF16, Q8_0/Q4_0/Q5_0, Q4_K/Q6_K) live in ggml-quants.ts. The writer streams one tensor
// at a time into a temp file renamed into place (atomic.ts); the reader decodes one tensor at a time.
import { type FileHandle, open } from 'node:fs/promises';
import { InputError } from '../errors.js';
import { writeFileAtomicStreaming } from './atomic.js';
import {
  decodeGgml,
  describeGgmlType,
  encodeGgml,
  GGML_TYPE,
  type GgmlTypeName,
  ggmlByteSize,
  ggmlTypeName,
} from './ggml-quants.js';

const MAGIC = 0x46554747; // "GGUF" read as a little-endian u32
const VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** GGUF metadata value types (gguf_type). */
export const GGUF_VALUE_TYPE = {
  u8: 0,
  i8: 1,
  u16: 2,
  i16: 3,
  u32: 4,
  i32: 5,
  f32: 6,
  bool: 7,
  string: 8,
  array: 9,
  u64: 10,
  i64: 11,
  f64: 12,
} as const;
export type GgufScalarType = Exclude<keyof typeof GGUF_VALUE_TYPE, 'array'>;

export type GgufValue =
  | { type: Exclude<GgufScalarType, 'string' | 'bool' | 'u64' | 'i64'>; value: number }
  | { type: 'u64' | 'i64'; value: bigint | number }
  | { type: 'bool'; value: boolean }
  | { type: 'string'; value: string }
  | { type: 'array'; itemType: GgufScalarType; value: readonly (number | bigint | boolean | string)[] };

export type GgufMetadata = Map<string, GgufValue>;

export interface GgufTensorSpec {
  name: string;
  /** Row-major shape, outermost first, as in PyTorch ([out, in] for a linear weight). */
  shape: readonly number[];
  type: GgmlTypeName;
  /** The values in f32, produced when the tensor is written (one tensor in memory at a time). */
  data: () => Promise<Float32Array> | Float32Array;
}

// ---------------------------------------------------------------------------------------------
// Writing

class ByteWriter {
  private chunks: Uint8Array[] = [];
  length = 0;
  private push(b: Uint8Array): void {
    this.chunks.push(b);
    this.length += b.byteLength;
  }
  private fixed(n: number, set: (v: DataView) => void): void {
    const b = new Uint8Array(n);
    set(new DataView(b.buffer));
    this.push(b);
  }
  u32(v: number): void {
    this.fixed(4, (d) => d.setUint32(0, v, true));
  }
  u64(v: number | bigint): void {
    this.fixed(8, (d) => d.setBigUint64(0, BigInt(v), true));
  }
  string(s: string): void {
    const b = new TextEncoder().encode(s);
    this.u64(b.byteLength);
    this.push(b);
  }
  scalar(type: GgufScalarType, v: number | bigint | boolean | string): void {
    switch (type) {
      case 'u8':
        this.fixed(1, (d) => d.setUint8(0, v as number));
        break;
      case 'i8':
        this.fixed(1, (d) => d.setInt8(0, v as number));
        break;
      case 'u16':
        this.fixed(2, (d) => d.setUint16(0, v as number, true));
        break;
      case 'i16':
        this.fixed(2, (d) => d.setInt16(0, v as number, true));
        break;
      case 'u32':
        this.fixed(4, (d) => d.setUint32(0, v as number, true));
        break;
      case 'i32':
        this.fixed(4, (d) => d.setInt32(0, v as number, true));
        break;
      case 'f32':
        this.fixed(4, (d) => d.setFloat32(0, v as number, true));
        break;
      case 'f64':
        this.fixed(8, (d) => d.setFloat64(0, v as number, true));
        break;
      case 'u64':
        this.fixed(8, (d) => d.setBigUint64(0, BigInt(v as number | bigint), true));
        break;
      case 'i64':
        this.fixed(8, (d) => d.setBigInt64(0, BigInt(v as number | bigint), true));
        break;
      case 'bool':
        this.fixed(1, (d) => d.setUint8(0, v ? 1 : 0));
        break;
      case 'string':
        this.string(v as string);
        break;
    }
  }
  value(v: GgufValue): void {
    this.u32(GGUF_VALUE_TYPE[v.type]);
    if (v.type === 'array') {
      this.u32(GGUF_VALUE_TYPE[v.itemType]);
      this.u64(v.value.length);
      for (const item of v.value) this.scalar(v.itemType, item);
    } else {
      this.scalar(v.type, v.value);
    }
  }
  pad(alignment: number): void {
    const rem = this.length % alignment;
    if (rem !== 0) this.push(new Uint8Array(alignment - rem));
  }
  bytes(): Uint8Array {
    const out = new Uint8Array(this.length);
    let o = 0;
    for (const c of this.chunks) {
      out.set(c, o);
      o += c.byteLength;
    }
    return out;
  }
}

function alignUp(n: number, alignment: number): number {
  return Math.ceil(n / alignment) * alignment;
}

function alignmentOf(metadata: GgufMetadata): number {
  const a = metadata.get('general.alignment');
  if (!a) return GGUF_DEFAULT_ALIGNMENT;
  if (a.type !== 'u32' || a.value <= 0 || a.value % 8 !== 0)
    throw new RangeError('general.alignment must be a u32 multiple of 8');
  return a.value;
}

/**
 * Writes a GGUF file atomically: metadata, tensor infos, then each tensor's data (encoded from the
 * f32 values its `data()` returns). Nothing appears at `path` unless the whole file was written.
 */
export async function writeGguf(
  path: string,
  metadata: GgufMetadata,
  tensors: readonly GgufTensorSpec[],
): Promise<void> {
  const alignment = alignmentOf(metadata);
  const head = new ByteWriter();
  head.u32(MAGIC);
  head.u32(VERSION);
  head.u64(tensors.length);
  head.u64(metadata.size);
  for (const [key, value] of metadata) {
    head.string(key);
    head.value(value);
  }
  const sizes: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const rowLength = t.shape[t.shape.length - 1] ?? 1;
    const size = ggmlByteSize(t.type, numel, rowLength);
    sizes.push(size);
    head.string(t.name);
    head.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) head.u64(t.shape[i]!); // ggml: innermost dimension first
    head.u32(GGML_TYPE[t.type]);
    head.u64(offset);
    offset = alignUp(offset + size, alignment);
  }
  head.pad(alignment);
  await writeFileAtomicStreaming(path, async (sink) => {
    await sink.write(head.bytes());
    for (let i = 0; i < tensors.length; i++) {
      const t = tensors[i]!;
      const values = await t.data();
      const bytes = encodeGgml(t.type, values, t.shape[t.shape.length - 1] ?? 1);
      if (bytes.byteLength !== sizes[i])
        throw new RangeError(`tensor ${t.name}: ${bytes.byteLength} bytes encoded, ${sizes[i]} expected`);
      await sink.write(bytes);
      const pad = alignUp(bytes.byteLength, alignment) - bytes.byteLength;
      if (pad > 0) await sink.write(new Uint8Array(pad));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Reading

export interface GgufTensorInfo {
  name: string;
  /** Row-major shape, outermost first (the reverse of the file's ggml dims). */
  shape: number[];
  type: GgmlTypeName;
  /** Absolute position of the data in the file. */
  offset: number;
  byteSize: number;
}

/** Reads a GGUF header fully into memory (headers are small next to the data). */
class ByteReader {
  pos = 0;
  private view: DataView;
  constructor(
    private readonly buf: Uint8Array,
    private readonly file: string,
  ) {
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }
  private need(n: number): void {
    if (this.pos + n > this.buf.byteLength) throw new NeedMore();
  }
  u32(): number {
    this.need(4);
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER))
      throw new InputError(`not a valid GGUF file: a length of ${v} bytes at byte ${this.pos - 8}`, {
        file: this.file,
      });
    return Number(v);
  }
  string(): string {
    const n = this.u64();
    this.need(n);
    const s = new TextDecoder('utf-8', { fatal: false }).decode(this.buf.subarray(this.pos, this.pos + n));
    this.pos += n;
    return s;
  }
  scalar(type: number): number | bigint | boolean | string {
    const d = this.view;
    const at = this.pos;
    const step = (n: number) => {
      this.need(n);
      this.pos += n;
    };
    switch (type) {
      case 0:
        step(1);
        return d.getUint8(at);
      case 1:
        step(1);
        return d.getInt8(at);
      case 2:
        step(2);
        return d.getUint16(at, true);
      case 3:
        step(2);
        return d.getInt16(at, true);
      case 4:
        step(4);
        return d.getUint32(at, true);
      case 5:
        step(4);
        return d.getInt32(at, true);
      case 6:
        step(4);
        return d.getFloat32(at, true);
      case 7:
        step(1);
        return d.getUint8(at) !== 0;
      case 8:
        return this.string();
      case 10:
        step(8);
        return d.getBigUint64(at, true);
      case 11:
        step(8);
        return d.getBigInt64(at, true);
      case 12:
        step(8);
        return d.getFloat64(at, true);
      default:
        throw new InputError(`not a valid GGUF file: unknown metadata value type ${type} at byte ${at}`, {
          file: this.file,
        });
    }
  }
}

class NeedMore extends Error {}

const TYPE_NAMES = Object.fromEntries(Object.entries(GGUF_VALUE_TYPE).map(([k, v]) => [v, k])) as Record<
  number,
  keyof typeof GGUF_VALUE_TYPE
>;

export class GgufFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly metadata: GgufMetadata,
    readonly tensors: Map<string, GgufTensorInfo>,
  ) {}

  static async open(path: string): Promise<GgufFile> {
    const handle = await open(path, 'r').catch((err: NodeJS.ErrnoException) => {
      throw new InputError(
        err.code === 'ENOENT' ? 'GGUF file not found' : `cannot read the GGUF file: ${err.message}`,
        { file: path },
      );
    });
    try {
      const size = (await handle.stat()).size;
      // Read a growing prefix until the header parses (vocabularies make headers a few MB).
      for (let want = 1 << 20; ; want *= 4) {
        const n = Math.min(want, size);
        const buf = new Uint8Array(n);
        await handle.read(buf, 0, n, 0);
        try {
          const { metadata, infos } = parseHeader(buf, path, size);
          return new GgufFile(path, handle, metadata, infos);
        } catch (err) {
          if (!(err instanceof NeedMore)) throw err;
          if (n >= size) throw new InputError('not a valid GGUF file: it ends inside its header', { file: path });
        }
      }
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** A metadata value (arrays as JS arrays); undefined when absent. */
  get(key: string): GgufValue['value'] | undefined {
    return this.metadata.get(key)?.value;
  }

  /** The tensor's values in f32, dequantized. */
  async readF32(name: string): Promise<Float32Array> {
    const info = this.tensors.get(name);
    if (!info) throw new InputError(`tensor '${name}' is not in the GGUF file`, { file: this.path });
    const buf = new Uint8Array(info.byteSize);
    const { bytesRead } = await this.handle.read(buf, 0, info.byteSize, info.offset);
    if (bytesRead !== info.byteSize)
      throw new InputError(`tensor '${name}' is cut short: the file ends ${info.byteSize - bytesRead} bytes early`, {
        file: this.path,
      });
    return decodeGgml(
      info.type,
      buf,
      info.shape.reduce((a, b) => a * b, 1),
    );
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

function parseHeader(
  buf: Uint8Array,
  file: string,
  fileSize: number,
): { metadata: GgufMetadata; infos: Map<string, GgufTensorInfo> } {
  const r = new ByteReader(buf, file);
  if (buf.byteLength < 4 || r.u32() !== MAGIC)
    throw new InputError('not a GGUF file (it does not start with "GGUF")', { file });
  const version = r.u32();
  if (version !== 2 && version !== 3)
    throw new InputError(`GGUF version ${version} is not supported; expected 2 or 3`, { file });
  const nTensors = r.u64();
  const nKv = r.u64();
  const metadata: GgufMetadata = new Map();
  for (let i = 0; i < nKv; i++) {
    const key = r.string();
    const type = r.u32();
    if (type === GGUF_VALUE_TYPE.array) {
      const itemType = r.u32();
      const n = r.u64();
      const items: (number | bigint | boolean | string)[] = [];
      for (let j = 0; j < n; j++) items.push(r.scalar(itemType));
      metadata.set(key, { type: 'array', itemType: TYPE_NAMES[itemType] as GgufScalarType, value: items });
    } else {
      const name = TYPE_NAMES[type];
      if (name === undefined)
        throw new InputError(`not a valid GGUF file: unknown value type ${type} for key '${key}'`, { file });
      metadata.set(key, { type: name, value: r.scalar(type) } as GgufValue);
    }
  }
  const alignment = alignmentOf(metadata);
  const raw: { name: string; shape: number[]; type: GgmlTypeName; rel: number }[] = [];
  for (let i = 0; i < nTensors; i++) {
    const name = r.string();
    const nDims = r.u32();
    const dims: number[] = [];
    for (let j = 0; j < nDims; j++) dims.push(r.u64());
    const typeId = r.u32();
    const type = ggmlTypeName(typeId);
    if (!type)
      throw new InputError(
        `tensor '${name}' has ggml type ${describeGgmlType(typeId)}; finllm reads ${Object.keys(GGML_TYPE).join(', ')}`,
        { file },
      );
    raw.push({ name, shape: dims.reverse(), type, rel: r.u64() });
  }
  const dataStart = alignUp(r.pos, alignment);
  const infos = new Map<string, GgufTensorInfo>();
  for (const t of raw) {
    const numel = t.shape.reduce((a, b) => a * b, 1);
    const byteSize = ggmlByteSize(t.type, numel, t.shape[t.shape.length - 1] ?? 1);
    const offset = dataStart + t.rel;
    if (offset + byteSize > fileSize)
      throw new InputError(`tensor '${t.name}' lies past the end of the file (truncated download?)`, { file });
    infos.set(t.name, { name: t.name, shape: t.shape, type: t.type, offset, byteSize });
  }
  return { metadata, infos };
}
