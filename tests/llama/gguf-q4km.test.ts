// q4_k_m export without llama.cpp: the per-tensor type mix and the block fallbacks are llama.cpp's.
// The expected types below are what llama.cpp's own quantizer (llama_model_quantize, LLAMA_FTYPE_
// MOSTLY_Q4_K_M, from the libllama of node-llama-cpp 3.21.1) chose for f32 GGUF files of the same
// shapes; finllm's q4_k_m files of those models were also equal to llama.cpp's, tensor for tensor,
// in type and in every decoded value (80 layers: types compared by a dry run). Unsupported ggml types
// in a file are a one-line error.
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { exportAction } from '../../src/cli/export.js';
import { GgufFile } from '../../src/io/gguf.js';
import { exportGguf, ggufTensorType, useMoreBits } from '../../src/llama/gguf.js';
import { setWarningSink } from '../../src/warnings.js';
import { modelDir, useTempDir } from './helpers.js';

const tempDir = useTempDir();
const FIN_BASE = join(import.meta.dirname, '..', '..', 'models', 'fin-base');

/** Layers whose attn_v and ffn_down llama.cpp made Q6_K (hidden 256, ffn 256, tied embeddings). */
const LLAMA_CPP_Q6K_LAYERS: Record<number, number[]> = {
  22: [0, 1, 4, 7, 10, 13, 16, 19, 20, 21],
  32: [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31],
  2: [1],
  4: [2, 3],
};
/** llama.cpp's attn_v Q6_K layers for an 80-layer GQA model (its "70B"); the other 40 attn_v are Q5_K. */
const LLAMA_CPP_70B_ATTN_V_Q6K = [
  0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36, 39, 42, 45, 48, 51, 54, 57, 60, 63, 66, 69, 70, 71,
  72, 73, 74, 75, 76, 77, 78, 79,
];

async function tensorTypes(file: string): Promise<Record<string, string>> {
  const g = await GgufFile.open(file);
  try {
    return Object.fromEntries([...g.tensors].map(([n, t]) => [n, t.type]));
  } finally {
    await g.close();
  }
}

describe("q4_k_m: llama.cpp's tensor mix", () => {
  it('attn_v and ffn_down take Q6_K on the layers llama.cpp picks; other weights Q4_K; the output Q6_K', () => {
    for (const [layers, want] of Object.entries(LLAMA_CPP_Q6K_LAYERS)) {
      const n = Number(layers);
      const picked = Array.from({ length: n }, (_, l) => l).filter((l) => useMoreBits(l, n));
      expect(picked, `${n} layers`).toEqual(want);
      for (let l = 0; l < n; l++) {
        expect(ggufTensorType('q4_k_m', [256, 256], { moreBitsCandidate: { layer: l } }, n)).toBe(
          want.includes(l) ? 'Q6_K' : 'Q4_K',
        );
        expect(ggufTensorType('q4_k_m', [256, 256], {}, n)).toBe('Q4_K');
      }
    }
    expect(ggufTensorType('q4_k_m', [2048, 256], { output: true }, 4)).toBe('Q6_K');
    for (let l = 0; l < 80; l++) {
      const attnV = ggufTensorType('q4_k_m', [128, 256], { moreBitsCandidate: { layer: l }, attnVOf70B: true }, 80);
      expect(attnV, `80 layers, attn_v ${l}`).toBe(LLAMA_CPP_70B_ATTN_V_Q6K.includes(l) ? 'Q6_K' : 'Q5_K');
    }
    expect(ggufTensorType('q4_k_m', [256], {}, 4)).toBe('F32');
  });

  it('rows that are not a multiple of 256 fall back as llama.cpp does: Q4_K → Q5_0, Q5_K → Q5_1, Q6_K → Q8_0, F16 below 32', () => {
    expect(ggufTensorType('q4_k_m', [128, 352], {}, 4)).toBe('Q5_0');
    // An 80-layer GQA model's Q5_K attn_v (layer 10 is not one of its Q6_K layers) with rows of 352.
    expect(ggufTensorType('q4_k_m', [128, 352], { moreBitsCandidate: { layer: 10 }, attnVOf70B: true }, 80)).toBe(
      'Q5_1',
    );
    expect(ggufTensorType('q4_k_m', [128, 48], { moreBitsCandidate: { layer: 10 }, attnVOf70B: true }, 80)).toBe('F16');
    expect(ggufTensorType('q4_k_m', [128, 352], { moreBitsCandidate: { layer: 3 } }, 4)).toBe('Q8_0');
    expect(ggufTensorType('q4_k_m', [2048, 128], { output: true }, 4)).toBe('Q8_0');
    expect(ggufTensorType('q4_k_m', [600, 48], { output: true }, 2)).toBe('F16');
    expect(ggufTensorType('q4_k_m', [48, 48], {}, 2)).toBe('F16');
    // The other types keep their one-step rule.
    expect(ggufTensorType('q4_0', [48, 48], {}, 2)).toBe('F16');
    expect(ggufTensorType('q8_0', [128, 352], { output: true }, 4)).toBe('Q8_0');
  });

  it("the bundled fin-base (hidden 128: every weight falls back) gets llama.cpp's types; export reports each fallback", async () => {
    const file = join(await tempDir(), 'fin.gguf');
    const warnings: string[] = [];
    setWarningSink((m) => warnings.push(m));
    try {
      await exportAction({ model: FIN_BASE, gguf: file, ggufType: 'q4_k_m' }, () => undefined);
    } finally {
      setWarningSink(null);
    }
    const types = await tensorTypes(file);
    // llama.cpp: the tied embedding (rows of 128) Q8_0; attn_v and ffn_down of layers 2 and 3 Q8_0;
    // every other 2-D weight Q5_0; norms F32.
    for (const [name, type] of Object.entries(types)) {
      const layer = /^blk\.(\d+)\./.exec(name)?.[1];
      const want = name.endsWith('norm.weight')
        ? 'F32'
        : name === 'token_embd.weight'
          ? 'Q8_0'
          : (name.includes('attn_v') || name.includes('ffn_down')) && (layer === '2' || layer === '3')
            ? 'Q8_0'
            : 'Q5_0';
      expect(type, name).toBe(want);
    }
    expect(Object.keys(types)).toHaveLength(38);
    expect(warnings).toEqual([
      '5 weight(s) have rows that do not fill whole Q6_K blocks and were written as Q8_0 instead: token_embd.weight, blk.2.attn_v.weight, blk.2.ffn_down.weight, blk.3.attn_v.weight, ...',
      '24 weight(s) have rows that do not fill whole Q4_K blocks and were written as Q5_0 instead: blk.0.attn_q.weight, blk.0.attn_k.weight, blk.0.attn_v.weight, blk.0.attn_output.weight, ...',
    ]);
  });

  it('gqa-f32 (rows of 48): F16 where rows are not a multiple of 32, as llama.cpp; general.file_type 15', async () => {
    const file = join(await tempDir(), 'gqa.gguf');
    const r = await exportGguf(modelDir('gqa-f32'), file, { type: 'q4_k_m' });
    const types = await tensorTypes(file);
    expect(types['blk.0.ffn_down.weight']).toBe('Q5_0'); // rows of 128
    expect(types['blk.1.ffn_down.weight']).toBe('Q8_0'); // a use_more_bits layer
    expect(types['output.weight']).toBe('F16');
    expect(types['token_embd.weight']).toBe('F16');
    expect(types['blk.1.attn_v.weight']).toBe('F16');
    expect(Object.values(types).filter((t) => t === 'F16')).toHaveLength(14);
    expect(r.fallbackF16).toHaveLength(14);
    const g = await GgufFile.open(file);
    try {
      expect(g.get('general.file_type')).toBe(15);
      expect(g.get('general.quantization_version')).toBe(2);
    } finally {
      await g.close();
    }
  });
});

describe('GGUF reading: ggml types finllm does not decode', () => {
  it('a tensor of another ggml type (here IQ4_NL) is a one-line error naming the file, the tensor and the type', async () => {
    const dir = await tempDir();
    const ok = join(dir, 'ok.gguf');
    await exportGguf(modelDir('gqa-f32'), ok, { type: 'q4_k_m' });
    // Rewrite blk.0.ffn_down's type id (Q5_0 = 6) in its tensor info to IQ4_NL (20): the info is the
    // name, n_dims u32, n_dims × u64 dims, then the type u32.
    const bytes = new Uint8Array(await readFile(ok));
    const name = Buffer.from('blk.0.ffn_down.weight');
    const at = Buffer.from(bytes).indexOf(name, 24);
    expect(at).toBeGreaterThan(0);
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    const nDims = view.getUint32(at + name.length, true);
    const typeAt = at + name.length + 4 + 8 * nDims;
    expect(view.getUint32(typeAt, true)).toBe(6);
    view.setUint32(typeAt, 20, true);
    const bad = join(dir, 'bad.gguf');
    await writeFile(bad, bytes);
    await expect(GgufFile.open(bad)).rejects.toThrow(
      /bad\.gguf.*tensor 'blk\.0\.ffn_down\.weight' has ggml type IQ4_NL \(20\); finllm reads F32, F16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, BF16$/,
    );
  });
});
