// GGUF files made by llama.cpp's own HF converter (convert_hf_to_gguf.py) and quantizer, which carry
// no HF tokenizer. tests/fixtures/gguf-foreign (make_foreign_gguf_fixtures.py) holds them with the HF
// tokenizer's ids and transformers' per-text losses:
//   spm-f32.gguf   gqa-f32's weights, a SentencePiece BPE tokenizer.model (tokenizer.ggml.model "llama")
//   spm-f16.gguf   the same converted --outtype f16
//   bpe-bf16.gguf  mqa-bf16-tied-llama3rope (Llama 3 byte-level BPE, "gpt2" / "llama-bpe", tied
//                  embeddings, llama3 RoPE as the rope_freqs tensor only)
//   bpe-q4_1.gguf, bpe-q5_1.gguf  bpe-bf16.gguf through llama.cpp's quantizer (Q4_1 / Q5_1 weights,
//                  the tied embedding Q8_0)
//   kq-q2_k.gguf, kq-q3_k_m.gguf  a seeded random model with rows that are multiples of 256 (hidden 256,
//                  intermediate 512, one layer, MQA, tied embeddings, bpe-bf16's tokenizer) through the
//                  quantizer as q2_k / q3_k_m: the Q2_K / Q3_K mixes with Q3_K..Q6_K around them
// Checked: the tokenizer rebuilt from the metadata gives the HF ids on every text (unicode, digit
// runs, whitespace runs, the empty text, special tokens spelled in text) and llama.cpp's
// (node-llama-cpp) on those and ≥ 200 more; the weights read back are the checkpoint's exactly (so
// the converter's q/k RoPE permutation is undone) and the config is the checkpoint's; another
// tokenizer model or pre-tokenizer is a one-line error. Losses: spm-f32 and bpe-bf16 hold the
// checkpoint's weights exactly (f32 from f32, bf16 from bf16), so their per-text losses equal
// transformers' on the checkpoint up to float32 evaluation order: within 3e-6, the bound finllm's
// fp32 parity holds. For spm-f16 and the quantized files the reference is transformers with each
// weight replaced by gguf-py's dequantization of the file's tensor: finllm's decoders are ggml's bit
// for bit (tests/io/ggml-quants*) and gguf-py's numpy ones compute the same f32 products, so both
// sides run the same weights and the same 3e-6 holds. For the kq files the maker also asserts that
// gguf-py's dequantization of every tensor is ggml's own (dequantize_row_*) bit for bit, and records
// transformers' greedy continuations on those weights, which finllm must reproduce token for token;
// llama.cpp's log-probabilities on the kq files are compared with finllm's too (tolerance below).
// (Measured on the kq files, losses ≈ 7: max 1.4e-6 (q2_k), 9.5e-7 (q3_k_m), i.e. 2-3 float32 ulps
// of the loss itself, 4.8e-7 at 7; the quantization itself moves them by up to 0.27 and 0.09.)
import { existsSync, readFileSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { evalAction } from '../../src/cli/eval.js';
import { InputError } from '../../src/errors.js';
import { GgufFile, type GgufMetadata, writeGguf } from '../../src/io/gguf.js';
import { Checkpoint } from '../../src/io/safetensors.js';
import { type LlamaConfig, loadLlamaConfig } from '../../src/llama/config.js';
import { generate } from '../../src/llama/generate.js';
import { ggufToHfFolder, llama3RopeFactors, llama3ScalingFromRopeFreqs, modelFolderFor } from '../../src/llama/gguf.js';
import { sentencePieceMerges } from '../../src/llama/gguf-tokenizer.js';
import { LlamaModel } from '../../src/llama/model.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { sequenceLosses } from '../../src/pipeline/eval/perplexity.js';
import { expectClose, useEngine } from '../helpers/index.js';
import { type FixtureName, modelDir, tokenizationCorpus, useTempDir } from './helpers.js';
import { finllmLogProbs, llamaCppLogProbs, NODE_LLAMA_CPP, useLlamaCpp } from './llamacpp.js';

useEngine();
const tempDir = useTempDir();

const FOREIGN = join(import.meta.dirname, '..', 'fixtures', 'gguf-foreign');
interface ForeignReference {
  token_ids: number[][];
  loss: (number | null)[];
}
interface KQuantReference extends ForeignReference {
  /** gguf-py's type name for every tensor of the file. */
  tensor_types: Record<string, string>;
  /** transformers' greedy continuation of each prompt (12 tokens, no stop) and its smallest top-1 logit margin. */
  greedy: { prompt: number[]; tokens: number[]; min_margin: number }[];
}
const fixture = JSON.parse(readFileSync(join(FOREIGN, 'foreign.json'), 'utf8')) as {
  texts: string[];
  chat_template: string;
  'spm-f32': ForeignReference;
  'bpe-bf16': ForeignReference;
  'spm-f16': ForeignReference;
  'bpe-q4_1': ForeignReference;
  'bpe-q5_1': ForeignReference;
  'kq-f32': ForeignReference;
  'kq-q2_k': KQuantReference;
  'kq-q3_k_m': KQuantReference;
};
const FILES: { name: 'spm-f32' | 'bpe-bf16'; source: FixtureName }[] = [
  { name: 'spm-f32', source: 'gqa-f32' },
  { name: 'bpe-bf16', source: 'mqa-bf16-tied-llama3rope' },
];
/** Per-text loss bound: the same weights evaluated in float32 by finllm and by PyTorch. */
const LOSS_TOL = 3e-6;

/**
 * `model`'s per-text losses on the texts transformers scored (`ref.loss` not null), required within
 * LOSS_TOL of transformers'; returns those texts' indices and finllm's losses.
 */
async function expectTransformersLosses(
  model: LlamaModel,
  ref: ForeignReference,
  label: string,
): Promise<{ idx: number[]; losses: number[] }> {
  const idx = ref.loss.flatMap((l, i) => (l === null ? [] : [i]));
  const losses = (
    await sequenceLosses(
      model,
      idx.map((i) => ref.token_ids[i]!),
    )
  ).map((e) => e.loss);
  expectClose(
    losses,
    idx.map((i) => ref.loss[i]!),
    { atol: LOSS_TOL },
    `${label} losses`,
  );
  return { idx, losses };
}

/**
 * `finllm eval --json` (perplexity) on `file` over the first six texts transformers scored: its
 * per-example losses within LOSS_TOL of transformers'.
 */
async function expectEvalLosses(file: string, ref: ForeignReference): Promise<void> {
  const data = join(await tempDir(), 'd.jsonl');
  const idx = ref.loss.flatMap((l, i) => (l === null ? [] : [i])).slice(0, 6);
  await writeFile(data, `${idx.map((i) => JSON.stringify({ text: fixture.texts[i] })).join('\n')}\n`);
  let printed = '';
  await evalAction({ model: file, data, json: true, metrics: 'perplexity' }, (s) => (printed += s));
  const out = JSON.parse(printed) as { per_example: { loss: number }[] };
  expectClose(
    out.per_example.map((e) => e.loss),
    idx.map((i) => ref.loss[i]!),
    { atol: LOSS_TOL },
    'eval per-example losses',
  );
}

/** `file` with the length-prefixed metadata string `from` replaced by `to` (a GGUF string is u64 length + bytes). */
async function withMetadataString(file: string, from: string, to: string, out: string): Promise<void> {
  const bytes = Buffer.from(await readFile(file));
  const lenPrefixed = (s: string) => {
    const b = Buffer.alloc(8 + Buffer.byteLength(s));
    b.writeBigUInt64LE(BigInt(Buffer.byteLength(s)));
    b.write(s, 8);
    return b;
  };
  const at = bytes.indexOf(lenPrefixed(from));
  expect(at).toBeGreaterThan(0);
  await writeFile(
    out,
    Buffer.concat([bytes.subarray(0, at), lenPrefixed(to), bytes.subarray(at + 8 + Buffer.byteLength(from))]),
  );
}

describe("GGUF files from llama.cpp's converter", () => {
  for (const { name, source } of FILES) {
    describe(name, () => {
      const ref = fixture[name];
      let dir: string;
      beforeAll(async () => {
        dir = join(await tempDir(), 'hf');
        await ggufToHfFolder(join(FOREIGN, `${name}.gguf`), dir);
      });

      it("the tokenizer rebuilt from tokenizer.ggml.* gives the HF tokenizer's ids on every text", async () => {
        const tok = await LlamaTokenizer.load(dir);
        const want = await LlamaTokenizer.load(modelDir(source));
        expect(fixture.texts.length).toBe(ref.token_ids.length);
        fixture.texts.forEach((text, i) => {
          expect(tok.encode(text), JSON.stringify(text)).toEqual(ref.token_ids[i]);
          // Decoding gives the text back (not the last one: its special tokens are dropped).
          if (i < fixture.texts.length - 1)
            expect(tok.decode(tok.encode(text), { skipSpecialTokens: true }), JSON.stringify(text)).toBe(text);
        });
        expect([tok.bosId, tok.eosId]).toEqual([want.bosId, want.eosId]);
        if (name === 'bpe-bf16') {
          // Its HF tokenizer is the source checkpoint's: the same ids on ≥ 200 more texts.
          const corpus = tokenizationCorpus();
          expect(corpus.length).toBeGreaterThanOrEqual(200);
          for (const text of corpus) expect(tok.encode(text), JSON.stringify(text)).toEqual(want.encode(text));
        }
        if (name === 'spm-f32') {
          expect(tok.unkId).toBe(0);
          expect(tok.chatTemplateSource).toBe(fixture.chat_template);
          expect(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true })).toBe(
            '<s>[user] Hi</s>[assistant] ',
          );
        } else {
          expect(tok.hasChatTemplate).toBe(false);
        }
      });

      it("the weights are the checkpoint's exactly (q/k rows back in HF's layout) and the config its own", async () => {
        const want = await Checkpoint.open(modelDir(source));
        const got = await Checkpoint.open(dir);
        try {
          expect(got.names().sort()).toEqual(want.names().sort());
          for (const n of want.names()) expect(await got.readF32(n), n).toEqual(await want.readF32(n));
        } finally {
          await want.close();
          await got.close();
        }
        const a = await loadLlamaConfig(modelDir(source));
        const b = await loadLlamaConfig(dir);
        const { rope: ra, ...restA } = a;
        const { rope: rb, ...restB } = b;
        expect({ ...restB, torchDtype: null }).toEqual({ ...restA, torchDtype: null });
        expect(rb.theta).toBe(ra.theta);
        expect(rb.scaling === null).toBe(ra.scaling === null);
        if (ra.scaling) {
          // The converter keeps only the divisors: parameters giving the same ones (float64 formula,
          // the file's values are its f32 roundings).
          expectClose(llama3RopeFactors(b), llama3RopeFactors(a), { rtol: 2 ** -23 }, 'rope factors');
          // Here no frequency is blended; Llama 3's high_freq_factor 4 and the power-of-two context fit
          // the gap, which are also the checkpoint's own.
          expect(rb.scaling).toEqual(ra.scaling);
        }
      });

      it(`per-text losses equal transformers' on the checkpoint within ${LOSS_TOL}`, async () => {
        const model = await LlamaModel.load(await modelFolderFor(join(FOREIGN, `${name}.gguf`)));
        try {
          const { idx } = await expectTransformersLosses(model, ref, name);
          expect(idx.length).toBeGreaterThanOrEqual(12);
        } finally {
          model.dispose();
        }
      });
    });
  }

  for (const { name, type, embedding, exact } of [
    { name: 'spm-f16', type: 'F16', embedding: 'F16', exact: 'spm-f32' },
    { name: 'bpe-q4_1', type: 'Q4_1', embedding: 'Q8_0', exact: 'bpe-bf16' },
    { name: 'bpe-q5_1', type: 'Q5_1', embedding: 'Q8_0', exact: 'bpe-bf16' },
  ] as const) {
    it(`${name}: ${type} weights read back give transformers' losses on the file's dequantized weights within ${LOSS_TOL}`, async () => {
      const file = join(FOREIGN, `${name}.gguf`);
      const g = await GgufFile.open(file);
      try {
        expect(g.tensors.get('blk.0.ffn_down.weight')!.type).toBe(type);
        expect(g.tensors.get('blk.1.attn_q.weight')!.type).toBe(type);
        expect(g.tensors.get('token_embd.weight')!.type).toBe(embedding);
      } finally {
        await g.close();
      }
      const dir = await modelFolderFor(file);
      const tok = await LlamaTokenizer.load(dir);
      for (const [i, text] of fixture.texts.entries())
        expect(tok.encode(text), JSON.stringify(text)).toEqual(fixture[name].token_ids[i]);
      const model = await LlamaModel.load(dir);
      try {
        const ref = fixture[name];
        const { idx, losses } = await expectTransformersLosses(model, ref, name);
        // The rounded weights were really read: the losses moved from the exact file's by more than the tolerance.
        const moved = Math.max(...idx.map((i, k) => Math.abs(losses[k]! - fixture[exact].loss[i]!)));
        expect(moved).toBeGreaterThan(3 * LOSS_TOL);
      } finally {
        model.dispose();
      }
    });
  }

  it('finllm eval --model FILE.gguf on a converted, llama.cpp-quantized file: the per-text losses above', async () => {
    await expectEvalLosses(join(FOREIGN, 'bpe-q4_1.gguf'), fixture['bpe-q4_1']);
  });

  it("metadata llama.cpp writes and finllm's files lack: EOT joins the eos ids; other RoPE scaling is a one-line error", async () => {
    const dir = await tempDir();
    /** bpe-bf16.gguf rewritten (weights f32) with metadata `edit`. */
    const variant = async (out: string, edit: (md: GgufMetadata) => void) => {
      const g = await GgufFile.open(join(FOREIGN, 'bpe-bf16.gguf'));
      try {
        const md: GgufMetadata = new Map(g.metadata);
        edit(md);
        const tensors = [...g.tensors.values()].map((t) => ({
          name: t.name,
          shape: t.shape,
          type: 'F32' as const,
          data: () => g.readF32(t.name),
        }));
        await writeGguf(out, md, tensors);
      } finally {
        await g.close();
      }
    };
    const eot = join(dir, 'eot.gguf');
    await variant(eot, (md) => md.set('tokenizer.ggml.eot_token_id', { type: 'u32', value: 2 }));
    await ggufToHfFolder(eot, join(dir, 'eot'));
    expect((await loadLlamaConfig(join(dir, 'eot'))).eosTokenIds).toEqual([1, 2]);
    const yarn = join(dir, 'yarn.gguf');
    await variant(yarn, (md) => md.set('llama.rope.scaling.type', { type: 'string', value: 'yarn' }));
    await expect(ggufToHfFolder(yarn, join(dir, 'yarn'))).rejects.toThrow(
      /yarn\.gguf.*llama\.rope\.scaling\.type.*RoPE scaling "yarn" is not supported; finllm reads llama3 scaling$/,
    );
  });

  it('another tokenizer model or pre-tokenizer is a one-line error naming the file, the key and the value', async () => {
    const dir = await tempDir();
    const bert = join(dir, 'bert.gguf');
    await withMetadataString(join(FOREIGN, 'bpe-bf16.gguf'), 'gpt2', 'bert', bert);
    const err = await ggufToHfFolder(bert, join(dir, 'a')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(
      /bert\.gguf.*tokenizer\.ggml\.model.*tokenizer model "bert" is not supported; finllm reads 'llama' \(SentencePiece BPE\) and 'gpt2' with pre 'llama-bpe' \(Llama 3\)$/,
    );
    expect((err as Error).message).not.toContain('\n');
    const commandR = join(dir, 'command-r.gguf');
    await withMetadataString(join(FOREIGN, 'bpe-bf16.gguf'), 'llama-bpe', 'command-r', commandR);
    await expect(ggufToHfFolder(commandR, join(dir, 'b'))).rejects.toThrow(
      /command-r\.gguf.*tokenizer\.ggml\.pre.*pre-tokenizer "command-r" is not supported; finllm reads 'llama-bpe' \(Llama 3, also named 'llama3', 'llama-v3'\)$/,
    );
  });

  it('SentencePiece merges: every two-token split of a token, highest-scoring token first, then by id and left length', () => {
    // '▁a' comes last by id but scores highest of the merged tokens: SentencePiece merges it first.
    const tokens = ['<unk>', 'a', 'b', 'c', 'ab', 'bc', 'abc', '▁', '▁a'];
    const scores = [0, -1, -2, -3, -10, -11, -12, -4, -5];
    expect(sentencePieceMerges(tokens, scores)).toEqual([
      ['▁', 'a'],
      ['a', 'b'],
      ['b', 'c'],
      ['a', 'bc'],
      ['ab', 'c'],
    ]);
    // Equal scores (llama.cpp's converter writes -1000 for every token of a tokenizer.json-only model): by id.
    expect(sentencePieceMerges(['x', 'y', 'yx', 'xy'], [-1000, -1000, -1000, -1000])).toEqual([
      ['y', 'x'],
      ['x', 'y'],
    ]);
  });
});

// Smallest top-1 logit margin a greedy reference step may have: finllm and transformers run the same f32
// weights and differ by float32 evaluation order only, so their log-probabilities agree to ~1e-6 (the
// losses above); a margin of 1e-4 cannot flip the argmax. (The recorded margins are ≥ 9e-3.)
const GREEDY_MARGIN = 1e-4;

describe('K-quant files (rows multiples of 256) from llama-quantize: q2_k and q3_k_m mixes', () => {
  for (const { name, low, types } of [
    { name: 'kq-q2_k', low: 'Q2_K', types: ['Q2_K', 'Q3_K', 'Q4_K', 'Q6_K'] },
    { name: 'kq-q3_k_m', low: 'Q3_K', types: ['Q3_K', 'Q4_K', 'Q5_K', 'Q6_K'] },
  ] as const) {
    const ref = fixture[name];
    const file = join(FOREIGN, `${name}.gguf`);

    it(`${name}: finllm reads the tensor types gguf-py reports (${types.join(', ')}; ${low} the lowest)`, async () => {
      const g = await GgufFile.open(file);
      try {
        const got = Object.fromEntries([...g.tensors.values()].map((t) => [t.name, t.type]));
        expect(got).toEqual(ref.tensor_types);
        expect(new Set(Object.values(got).filter((t) => t !== 'F32'))).toEqual(new Set(types));
        expect(g.tensors.get('blk.0.attn_q.weight')!.type).toBe(low);
        expect(g.tensors.get('blk.0.ffn_up.weight')!.type).toBe(low);
      } finally {
        await g.close();
      }
    });

    it(`${name}: per-text losses equal transformers' on the file's dequantized weights within ${LOSS_TOL}; greedy continuations identical`, async () => {
      const dir = await modelFolderFor(file);
      const tok = await LlamaTokenizer.load(dir);
      for (const [i, text] of fixture.texts.entries())
        expect(tok.encode(text), JSON.stringify(text)).toEqual(ref.token_ids[i]);
      const model = await LlamaModel.load(dir);
      try {
        const { idx, losses } = await expectTransformersLosses(model, ref, name);
        expect(idx.length).toBeGreaterThanOrEqual(12);
        // The K-quant weights were really read: the losses moved from the unquantized model's.
        const moved = Math.max(...idx.map((i, k) => Math.abs(losses[k]! - fixture['kq-f32'].loss[i]!)));
        expect(moved).toBeGreaterThan(3 * LOSS_TOL);
        expect(ref.greedy.length).toBe(3);
        for (const g of ref.greedy) {
          expect(g.min_margin).toBeGreaterThan(GREEDY_MARGIN);
          const out = await generate(model, g.prompt, { maxNewTokens: g.tokens.length, eosTokenIds: [] });
          expect(out.tokens, JSON.stringify(g.prompt)).toEqual(g.tokens);
        }
      } finally {
        model.dispose();
      }
    });

    it(`finllm eval --model ${name}.gguf: the per-text losses above`, async () => {
      await expectEvalLosses(file, ref);
    });
  }
});

// ---------------------------------------------------------------------------------------------

/**
 * llama.cpp vs finllm on the kq files, max |Δ log p| per token. llama.cpp's CPU path rounds the
 * activations to 8 bits (Q8_K) for every K-quant dot product, so it cannot agree to f32 rounding:
 * measured 0.073 (q2_k) and 0.060 (q3_k_m) over the fixture texts, as 0.070 for the 256-wide q4_k_m
 * file in gguf-llamacpp.test.ts; the tolerance is twice that (its 0.14). finllm on the other kq file is
 * 1.55 away from llama.cpp: the check tells the two files' weights apart.
 */
const LLAMACPP_K_LOGP_TOL = 0.14;

describe.skipIf(!existsSync(NODE_LLAMA_CPP))('the same files in llama.cpp (node-llama-cpp 3.21.1, CPU build)', () => {
  const llama = useLlamaCpp();

  for (const { name } of FILES) {
    it(`${name}: llama.cpp tokenizes every text (the fixture's and ≥ 200 more) to finllm's ids (BOS as the file says)`, async () => {
      const dir = join(await tempDir(), 'hf');
      await ggufToHfFolder(join(FOREIGN, `${name}.gguf`), dir);
      const tok = await LlamaTokenizer.load(dir);
      const model = await llama().loadModel({ modelPath: join(FOREIGN, `${name}.gguf`) });
      try {
        const bad: string[] = [];
        // Not the last fixture text: it spells special tokens, which HF (and finllm) match in text and
        // llama.cpp's plain tokenize does not.
        const texts = [...fixture.texts.slice(0, -1), ...tokenizationCorpus()];
        for (const text of texts) {
          const ours = tok.encode(text, { addSpecialTokens: false });
          const theirs = Array.from(model.tokenize(text));
          if (JSON.stringify(ours) !== JSON.stringify(theirs))
            bad.push(`${JSON.stringify(text)}: finllm ${ours.join(',')} llama.cpp ${theirs.join(',')}`);
        }
        expect(bad).toEqual([]);
        expect([model.tokens.bos, model.tokens.eos]).toEqual([tok.bosId, tok.eosId]);
        expect(model.tokens.shouldPrependBosToken).toBe(tok.encode('x')[0] === tok.bosId);
      } finally {
        await model.dispose();
      }
    });
  }

  for (const [name, other] of [
    ['kq-q2_k', 'kq-q3_k_m'],
    ['kq-q3_k_m', 'kq-q2_k'],
  ] as const) {
    it(`${name}: llama.cpp's per-token log-probs within ${LLAMACPP_K_LOGP_TOL} of finllm reading the same file`, async () => {
      const ours = await LlamaModel.load(await modelFolderFor(join(FOREIGN, `${name}.gguf`)));
      const wrong = await LlamaModel.load(await modelFolderFor(join(FOREIGN, `${other}.gguf`)));
      const theirs = await llama().loadModel({ modelPath: join(FOREIGN, `${name}.gguf`) });
      try {
        let worst = 0;
        let worstOther = 0;
        const texts = fixture[name].token_ids.filter((ids) => ids.length >= 2);
        expect(texts.length).toBeGreaterThanOrEqual(12);
        for (const ids of texts) {
          const a = await finllmLogProbs(ours, ids);
          const o = await finllmLogProbs(wrong, ids);
          const b = await llamaCppLogProbs(theirs, ids);
          for (let t = 0; t < a.length; t++) {
            worst = Math.max(worst, Math.abs(a[t]! - b[t]!));
            worstOther = Math.max(worstOther, Math.abs(o[t]! - b[t]!));
          }
        }
        console.log(
          `${name}: max |log p(finllm) - log p(llama.cpp)| = ${worst.toExponential(2)}; finllm on ${other} ${worstOther.toExponential(2)}`,
        );
        expect(worst).toBeLessThanOrEqual(LLAMACPP_K_LOGP_TOL);
        expect(worstOther).toBeGreaterThan(3 * LLAMACPP_K_LOGP_TOL);
      } finally {
        ours.dispose();
        wrong.dispose();
        await theirs.dispose();
      }
    });
  }
});

describe('llama3 RoPE read back from rope_freqs alone', () => {
  const llama = (theta: number, headDim: number, scaling: NonNullable<LlamaConfig['rope']['scaling']>) =>
    ({ headDim, rope: { theta, scaling } }) as LlamaConfig;
  it("Llama 3.1 / 3.2's divisors (f32, as the converter writes them) give back their parameters", () => {
    for (const factor of [8, 32]) {
      const scaling = {
        type: 'llama3' as const,
        factor,
        lowFreqFactor: 1,
        highFreqFactor: 4,
        originalMaxPositionEmbeddings: 8192,
      };
      for (const headDim of [64, 128]) {
        const freqs = Float32Array.from(llama3RopeFactors(llama(500000, headDim, scaling)));
        expect(
          llama3ScalingFromRopeFreqs(freqs, 500000, headDim, 'x.gguf'),
          `factor ${factor}, head ${headDim}`,
        ).toEqual(scaling);
      }
    }
  });

  it('divisors all 1 are no scaling; divisors no llama3 scaling gives are a one-line error', () => {
    expect(llama3ScalingFromRopeFreqs(new Float32Array(8).fill(1), 10000, 16, 'x.gguf')).toBeNull();
    const wrong = Float32Array.from([1, 1, 1, 4, 2, 8, 8, 8]); // not monotone
    expect(() => llama3ScalingFromRopeFreqs(wrong, 10000, 16, 'x.gguf')).toThrow(
      /x\.gguf.*rope_freqs \(1, 1, 1, 4, 2, 8, 8, 8\) cannot be read as llama3 RoPE scaling/,
    );
  });
});
