import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { bf16ArrayToF32, f16ArrayToF32, f32ArrayToBf16 } from '../../src/io/dtype.js';
import {
  Checkpoint,
  readSafetensorsF32,
  SafetensorsReader,
  writeSafetensors,
  writeShardedSafetensors,
} from '../../src/io/safetensors.js';
import { FIXTURES, seededFloats, useTempDirs } from './helpers.js';

const tempDir = useTempDirs();

/** Builds a safetensors file by hand (independent of our writer) for corruption tests. */
function rawSafetensors(
  header: unknown,
  data: Uint8Array,
  options: { headerLength?: bigint; headerText?: string } = {},
): Uint8Array {
  const json = new TextEncoder().encode(options.headerText ?? JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, options.headerLength ?? BigInt(json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

async function expectInputError(promise: Promise<unknown>, file: string, fragment: RegExp): Promise<void> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(InputError);
  expect((error as Error).message).toContain(file);
  expect((error as Error).message).toMatch(fragment);
}

describe('safetensors writer + reader', () => {
  it('round-trips F32, BF16, F16, I32 and U8 tensors with metadata', async () => {
    const dir = await tempDir();
    const path = join(dir, 'weights.safetensors');
    const f32 = seededFloats(3 * 5, 1);
    const bf16Source = seededFloats(7, 2, 100);
    const f16Bits = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7bff, 0x8000]);
    const ints = new Int32Array([-3, 0, 2 ** 31 - 1]);
    const bytes = new Uint8Array([0, 15, 255]);
    await writeSafetensors(
      path,
      [
        { name: 'u8', dtype: 'U8', shape: [3], data: bytes },
        { name: 'half', dtype: 'F16', shape: [5], data: f16Bits },
        { name: 'matrix', dtype: 'F32', shape: [3, 5], data: f32 },
        { name: 'brain', dtype: 'BF16', shape: [7], data: () => bf16Source },
        { name: 'ints', dtype: 'I32', shape: [3], data: ints },
        { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
      ],
      { format: 'pt' },
    );

    const file = await readFile(path);
    const headerLength = Number(file.readBigUInt64LE(0));
    expect(headerLength % 8).toBe(0);
    const headerText = file.subarray(8, 8 + headerLength).toString('utf8');
    expect(headerText.trimEnd().length).toBeLessThanOrEqual(headerLength);
    expect(JSON.parse(headerText).__metadata__).toEqual({ format: 'pt' });

    const reader = await SafetensorsReader.open(path);
    try {
      expect(reader.metadata).toEqual({ format: 'pt' });
      expect(reader.names().sort()).toEqual(['brain', 'empty', 'half', 'ints', 'matrix', 'u8']);
      // Every tensor starts aligned to its element size inside the file.
      for (const [, info] of reader.tensors) {
        const size = { F32: 4, I32: 4, F16: 2, BF16: 2, U8: 1 }[info.dtype as 'F32'];
        expect((reader.dataStart + info.begin) % size).toBe(0);
      }
      expect(reader.info('matrix').shape).toEqual([3, 5]);
      expect(await reader.readF32('matrix')).toEqual(f32);
      expect(await reader.readU16('brain')).toEqual(f32ArrayToBf16(bf16Source));
      expect(await reader.readF32('brain')).toEqual(bf16ArrayToF32(f32ArrayToBf16(bf16Source)));
      expect(await reader.readU16('half')).toEqual(f16Bits);
      expect(Array.from(await reader.readF32('half'))).toEqual([1, -2, 2 ** -24, 65504, -0]);
      expect(await reader.readTyped('ints')).toEqual(ints);
      expect(await reader.readTyped('u8')).toEqual(bytes);
      expect((await reader.readF32('empty')).length).toBe(0);
      const secondRow = new Float32Array((await reader.readRawRange('matrix', 5 * 4, 5 * 4)).buffer);
      expect(secondRow).toEqual(f32.subarray(5, 10));
      await expectInputError(reader.readF32('ints'), path, /dtype I32; expected a float dtype/);
      await expectInputError(reader.readU16('matrix'), path, /expected BF16 or F16/);
      await expectInputError(reader.readF32('matrx'), path, /no tensor named 'matrx'.*similar: matrix/);
    } finally {
      await reader.close();
    }
  });

  it('leaves nothing behind when a tensor fails to write, and keeps an existing file', async () => {
    const dir = await tempDir();
    const path = join(dir, 'out.safetensors');
    await writeFile(path, 'previous contents');
    await expect(
      writeSafetensors(path, [
        { name: 'ok', dtype: 'F32', shape: [2], data: new Float32Array(2) },
        { name: 'short', dtype: 'F32', shape: [4], data: new Float32Array(3) },
      ]),
    ).rejects.toThrow(/short.*3 values.*needs 4/);
    expect(await readdir(dir)).toEqual(['out.safetensors']);
    expect(await readFile(path, 'utf8')).toBe('previous contents');
    await expect(
      writeSafetensors(path, [{ name: 'x', dtype: 'F32', shape: [1], data: new Uint16Array(1) }]),
    ).rejects.toThrow(/needs Float32Array/);
    expect(await readdir(dir)).toEqual(['out.safetensors']);
  });

  it('shards by size, writes the HF index, and reads back through Checkpoint', async () => {
    const dir = await tempDir();
    const tensors = Array.from({ length: 5 }, (_, i) => ({
      name: `layer.${i}.weight`,
      data: seededFloats(100, 10 + i),
    }));
    const written = await writeShardedSafetensors(
      dir,
      tensors.map((t) => ({ name: t.name, dtype: 'F32' as const, shape: [10, 10], data: t.data })),
      { maxShardBytes: 900, metadata: { format: 'pt' } },
    );
    expect(written.map((p) => p.slice(dir.length + 1))).toEqual([
      'model-00001-of-00003.safetensors',
      'model-00002-of-00003.safetensors',
      'model-00003-of-00003.safetensors',
      'model.safetensors.index.json',
    ]);
    const index = JSON.parse(await readFile(join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(5 * 100 * 4);
    expect(index.weight_map['layer.4.weight']).toBe('model-00003-of-00003.safetensors');
    const checkpoint = await Checkpoint.open(dir);
    try {
      expect(checkpoint.names().sort()).toEqual(tensors.map((t) => t.name));
      for (const t of tensors) expect(await checkpoint.readF32(t.name, [10, 10])).toEqual(t.data);
      expect(checkpoint.fileOf('layer.2.weight')).toBe(join(dir, 'model-00002-of-00003.safetensors'));
    } finally {
      await checkpoint.close();
    }
  });

  it('reads a whole small file as f32 with metadata and shapes', async () => {
    const path = join(await tempDir(), 'optimizer.safetensors');
    const m = seededFloats(6, 5);
    const v = seededFloats(6, 6);
    await writeSafetensors(
      path,
      [
        { name: 'p.exp_avg', dtype: 'F32', shape: [2, 3], data: m },
        { name: 'p.exp_avg_sq', dtype: 'BF16', shape: [6], data: v },
      ],
      { step: '12' },
    );
    const file = await readSafetensorsF32(path);
    expect(file.metadata).toEqual({ step: '12' });
    expect(file.get('p.exp_avg')).toEqual(m);
    expect(file.get('p.exp_avg_sq')).toEqual(bf16ArrayToF32(f32ArrayToBf16(v)));
    expect(file.shapes.get('p.exp_avg')).toEqual([2, 3]);
    expect([...file.keys()].sort()).toEqual(['p.exp_avg', 'p.exp_avg_sq']);
  });

  it('writes a single model.safetensors when everything fits one shard', async () => {
    const dir = await tempDir();
    const written = await writeShardedSafetensors(
      dir,
      [{ name: 'a', dtype: 'BF16', shape: [2], data: new Float32Array([1, 2]) }],
      { maxShardBytes: 1 << 20 },
    );
    expect(written).toEqual([join(dir, 'model.safetensors')]);
    expect(await readdir(dir)).toEqual(['model.safetensors']);
  });
});

describe('reference checkpoints', () => {
  it('reads the f32 GQA checkpoint with shapes matching its config', async () => {
    const dir = join(FIXTURES, 'gqa-f32', 'model');
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    const checkpoint = await Checkpoint.open(dir);
    try {
      const {
        hidden_size: hidden,
        head_dim: headDim,
        num_attention_heads: heads,
        num_key_value_heads: kvHeads,
      } = config;
      expect(checkpoint.shape('model.layers.0.self_attn.q_proj.weight')).toEqual([heads * headDim, hidden]);
      expect(checkpoint.shape('model.layers.1.self_attn.k_proj.weight')).toEqual([kvHeads * headDim, hidden]);
      expect(checkpoint.shape('model.layers.0.mlp.down_proj.weight')).toEqual([hidden, config.intermediate_size]);
      expect(checkpoint.shape('model.embed_tokens.weight')).toEqual([config.vocab_size, hidden]);
      expect(checkpoint.has('lm_head.weight')).toBe(true);
      expect(checkpoint.dtype('model.norm.weight')).toBe('F32');
      expect(checkpoint.names()).toHaveLength(3 + 9 * config.num_hidden_layers);

      // Compare against bytes located by parsing the file here, independently of the reader.
      const file = await readFile(join(dir, 'model.safetensors'));
      const headerLength = Number(file.readBigUInt64LE(0));
      const header = JSON.parse(file.subarray(8, 8 + headerLength).toString('utf8'));
      const [begin, end] = header['model.layers.0.self_attn.v_proj.weight'].data_offsets;
      const bytes = file.subarray(8 + headerLength + begin, 8 + headerLength + end);
      const expected = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      const got = await checkpoint.readF32('model.layers.0.self_attn.v_proj.weight', [kvHeads * headDim, hidden]);
      expect(got).toEqual(expected);
      expect(got.some((v) => v !== 0)).toBe(true);
    } finally {
      await checkpoint.close();
    }
  });

  it('reads the bf16 tied checkpoint: no lm_head, BF16 decoded exactly', async () => {
    const dir = join(FIXTURES, 'mqa-bf16-tied-llama3rope', 'model');
    const config = JSON.parse(await readFile(join(dir, 'config.json'), 'utf8'));
    const checkpoint = await Checkpoint.open(dir);
    try {
      const name = 'model.layers.0.self_attn.q_proj.weight';
      expect(checkpoint.shape(name)).toEqual([config.num_attention_heads * config.head_dim, config.hidden_size]);
      expect(checkpoint.shape('model.layers.0.self_attn.k_proj.weight')).toEqual([config.head_dim, config.hidden_size]);
      expect(checkpoint.has('lm_head.weight')).toBe(false);
      expect(checkpoint.dtype(name)).toBe('BF16');
      const bits = await checkpoint.readU16(name);
      const values = await checkpoint.readF32(name);
      expect(values).toEqual(bf16ArrayToF32(bits));
      // bf16 weights have only 8 significant bits: every decoded value has zero low mantissa bits.
      expect(new Uint32Array(values.buffer).every((b) => (b & 0xffff) === 0)).toBe(true);
    } finally {
      await checkpoint.close();
    }
  });

  it('names tensor, file, expected and actual shape on mismatch, and suggests names when missing', async () => {
    const dir = join(FIXTURES, 'gqa-f32', 'model');
    const checkpoint = await Checkpoint.open(dir);
    try {
      await expectInputError(
        checkpoint.readF32('model.layers.0.self_attn.q_proj.weight', [48, 64]),
        join(dir, 'model.safetensors'),
        /'model\.layers\.0\.self_attn\.q_proj\.weight' has shape \[48, 48\], expected \[48, 64\]/,
      );
      await expectInputError(
        checkpoint.readF32('model.layers.0.self_attn.qproj.weight'),
        dir,
        /no tensor 'model\.layers\.0\.self_attn\.qproj\.weight'.*similar: model\.layers\.0\.self_attn\.q_proj\.weight/,
      );
    } finally {
      await checkpoint.close();
    }
  });

  it('refuses a folder without weights and an index pointing at a tensor its shard lacks', async () => {
    const dir = await tempDir();
    await expectInputError(Checkpoint.open(dir), dir, /no model\.safetensors or model\.safetensors\.index\.json/);
    await writeSafetensors(join(dir, 'part.safetensors'), [
      { name: 'a', dtype: 'F32', shape: [1], data: new Float32Array(1) },
    ]);
    const indexPath = join(dir, 'model.safetensors.index.json');
    await writeFile(indexPath, JSON.stringify({ weight_map: { a: 'part.safetensors', b: 'part.safetensors' } }));
    await expectInputError(
      Checkpoint.open(dir),
      indexPath,
      /'b' is in part\.safetensors, but that shard has no such tensor/,
    );
    await writeFile(indexPath, JSON.stringify({ weight_map: { a: '../part.safetensors' } }));
    await expectInputError(Checkpoint.open(dir), indexPath, /weight_map\.a.*file name in the same folder/);
  });
});

describe('corrupt safetensors files are refused with the file named', () => {
  const tensor = (dtype: string, shape: number[], offsets: [number, number]) => ({
    dtype,
    shape,
    data_offsets: offsets,
  });
  const eightBytes = new Uint8Array(8);
  const cases: [string, () => Uint8Array, RegExp][] = [
    ['a file shorter than the length prefix', () => new Uint8Array(5), /too short/],
    [
      'a header length beyond the file',
      () => rawSafetensors({}, eightBytes, { headerLength: 10_000n }),
      /header length 10000 exceeds/,
    ],
    [
      'a huge header length',
      () => rawSafetensors({}, eightBytes, { headerLength: 2n ** 63n }),
      /header length \d+ exceeds/,
    ],
    [
      'header bytes that are not JSON',
      () => rawSafetensors(null, eightBytes, { headerText: '{"a": [1, 2' }),
      /not valid JSON/,
    ],
    ['a header that is not an object', () => rawSafetensors([1, 2], eightBytes), /must be a JSON object/],
    [
      'overlapping offsets',
      () => rawSafetensors({ a: tensor('F32', [2], [0, 8]), b: tensor('F32', [1], [4, 8]) }, eightBytes),
      /overlaps tensor/,
    ],
    [
      'offsets past the end of the data',
      () => rawSafetensors({ a: tensor('F32', [4], [0, 16]) }, eightBytes),
      /end 16 is past the end of the data section \(8 bytes\)/,
    ],
    ['begin after end', () => rawSafetensors({ a: tensor('F32', [0], [8, 4]) }, eightBytes), /begin 8 is after end 4/],
    [
      'an unknown dtype',
      () => rawSafetensors({ a: tensor('F4', [2], [0, 1]) }, eightBytes),
      /key 'a'.*unknown dtype "F4"/,
    ],
    [
      'a byte length that does not match the shape',
      () => rawSafetensors({ a: tensor('F32', [3], [0, 8]) }, eightBytes),
      /byte length 8 does not match shape \[3\] x F32 = 12/,
    ],
    [
      'a negative shape',
      () => rawSafetensors({ a: tensor('F32', [-2], [0, 8]) }, eightBytes),
      /shape must be a list of non-negative integers/,
    ],
    [
      'bad metadata',
      () => rawSafetensors({ __metadata__: { n: 3 } }, eightBytes),
      /__metadata__ must map strings to strings/,
    ],
  ];
  for (const [what, build, message] of cases) {
    it(`refuses ${what}`, async () => {
      const path = join(await tempDir(), 'bad.safetensors');
      await writeFile(path, build());
      await expectInputError(SafetensorsReader.open(path), path, message);
    });
  }

  it('refuses a file truncated inside the data section', async () => {
    const dir = await tempDir();
    const path = join(dir, 'whole.safetensors');
    await writeSafetensors(path, [{ name: 'a', dtype: 'F32', shape: [16], data: seededFloats(16, 3) }]);
    const whole = await readFile(path);
    const truncated = join(dir, 'truncated.safetensors');
    await writeFile(truncated, whole.subarray(0, whole.length - 4));
    await expectInputError(SafetensorsReader.open(truncated), truncated, /past the end of the data section/);
  });

  it('refuses a missing file', async () => {
    const path = join(await tempDir(), 'nope.safetensors');
    await expectInputError(SafetensorsReader.open(path), path, /file not found/);
  });

  it('decodes F16 through readF32 the same way as the dtype helpers', async () => {
    const path = join(await tempDir(), 'h.safetensors');
    const bits = new Uint16Array([0x3555, 0x0400, 0xfc00]);
    await writeFile(path, rawSafetensors({ h: tensor('F16', [3], [0, 6]) }, new Uint8Array(bits.buffer)));
    const reader = await SafetensorsReader.open(path);
    expect(await reader.readF32('h')).toEqual(f16ArrayToF32(bits));
    await reader.close();
  });
});

describe('large files', () => {
  it('reads a tensor stored beyond the 4 GiB mark of a (sparse) file', async () => {
    const path = join(await tempDir(), 'sparse.safetensors');
    const bigBytes = 5 * 2 ** 30; // the zero-filled "big" tensor is a hole in the file, costing no disk
    const tail = new Float32Array([1.5, -2.25]);
    const headerFile = rawSafetensors(
      {
        big: { dtype: 'U8', shape: [bigBytes], data_offsets: [0, bigBytes] },
        tail: { dtype: 'F32', shape: [2], data_offsets: [bigBytes, bigBytes + 8] },
      },
      new Uint8Array(0),
    );
    const { open } = await import('node:fs/promises');
    const handle = await open(path, 'w');
    try {
      await handle.write(headerFile, 0, headerFile.length, 0);
      await handle.write(new Uint8Array(tail.buffer), 0, 8, headerFile.length + bigBytes);
    } finally {
      await handle.close();
    }
    const reader = await SafetensorsReader.open(path);
    try {
      expect(reader.dataStart + reader.info('tail').begin).toBeGreaterThan(2 ** 32);
      expect(await reader.readF32('tail')).toEqual(tail);
      const lastBytes = await reader.readRawRange('big', bigBytes - 4, 4);
      expect(Array.from(lastBytes)).toEqual([0, 0, 0, 0]);
    } finally {
      await reader.close();
    }
  });
});
