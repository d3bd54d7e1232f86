// The BPE tokenizer trainer: its tokenizer.json loads in the HF-compatible tokenizer we use, encodes
// and decodes any text exactly (byte fallback), spells numbers digit by digit, compresses the
// corpus it was trained on, and is deterministic.

import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { tokenizerJson, trainBpe, writeTokenizerFolder } from '../../src/llama/tokenizer-train.js';
import { generateCorpus } from '../../src/pipeline/data/synthetic.js';

const corpus = [...generateCorpus({ seed: 21, documents: 400 })].map((d) => d.text);

describe('BPE tokenizer training', () => {
  it('loads, round-trips corpus and unseen text exactly, spells digits one by one, and compresses', async () => {
    const bpe = trainBpe(corpus, { vocabSize: 768 });
    expect(bpe.vocab.size).toBe(768);
    for (const [a, b] of bpe.merges) {
      expect(/\d/.test(a + b), `merge ${a} + ${b}`).toBe(false);
      expect(bpe.vocab.has(a) && bpe.vocab.has(b) && bpe.vocab.has(a + b)).toBe(true);
    }
    const dir = join(mkdtempSync(join(tmpdir(), 'finllm-tok-')), 'tok');
    await writeTokenizerFolder(dir, bpe);
    const tok = await LlamaTokenizer.load(dir);
    expect(tok.vocabSize).toBe(768);
    expect([tok.bosId, tok.eosId]).toEqual([1, 2]);
    const held = [...generateCorpus({ seed: 99, documents: 60, split: 'eval' })].map((d) => d.text);
    const odd = [
      'Umsatz: €845,2 Mio. (+12 %) — 中文 ünïcödé\ttab',
      '### Instruction:\nSummarize.\n\n### Response:\nSentiment: negative.',
      '',
    ];
    let tokens = 0;
    let chars = 0;
    for (const t of [...held, ...odd]) {
      const ids = tok.encode(t);
      expect(ids[0]).toBe(1); // <s>
      expect(tok.decode(ids, { skipSpecialTokens: true }), JSON.stringify(t.slice(0, 40))).toBe(t);
      if (held.includes(t)) [tokens, chars] = [tokens + ids.length, chars + t.length];
    }
    // Held-out documents of the same generator: ~0.3 tokens per character at 768 entries
    // (a character-level encoding would be 1.0).
    expect(tokens / chars).toBeLessThan(0.4);
    // The pre-tokenizer (split into training units) only speeds encoding up: BPE over the whole
    // text without it gives the same ids.
    const whole = join(dirname(dir), 'whole');
    mkdirSync(whole);
    writeFileSync(join(whole, 'tokenizer.json'), JSON.stringify({ ...tokenizerJson(bpe), pre_tokenizer: null }));
    copyFileSync(join(dir, 'tokenizer_config.json'), join(whole, 'tokenizer_config.json'));
    const plain = await LlamaTokenizer.load(whole);
    for (const t of [...held.slice(0, 20), ...odd]) expect(plain.encode(t)).toEqual(tok.encode(t));
    const pieces = tok.encode('revenue of $6.53 billion', { addSpecialTokens: false }).map((i) => tok.decode([i]));
    for (const d of ['6', '5', '3']) expect(pieces).toContain(d);
  });

  it('is deterministic and writes the Llama layout (byte tokens in the vocabulary, three added tokens)', async () => {
    const a = JSON.stringify(tokenizerJson(trainBpe(corpus, { vocabSize: 600 })));
    const b = JSON.stringify(tokenizerJson(trainBpe(corpus, { vocabSize: 600 })));
    expect(b).toBe(a);
    const j = JSON.parse(a) as {
      added_tokens: { content: string }[];
      model: { vocab: Record<string, number>; byte_fallback: boolean };
    };
    expect(j.added_tokens.map((t) => t.content)).toEqual(['<unk>', '<s>', '</s>']);
    expect(j.model.byte_fallback).toBe(true);
    expect(j.model.vocab['<0x0A>']).toBe(13);
    expect(() => trainBpe(corpus, { vocabSize: 100 })).toThrow(/smaller than the specials/);
    const dir = join(mkdtempSync(join(tmpdir(), 'finllm-tok2-')), 't');
    await writeTokenizerFolder(dir, trainBpe(corpus, { vocabSize: 400 }));
    expect(JSON.parse(readFileSync(join(dir, 'tokenizer_config.json'), 'utf8'))).toMatchObject({
      bos_token: '<s>',
      eos_token: '</s>',
    });
  });
});
