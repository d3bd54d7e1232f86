// Training a byte-fallback BPE tokenizer (the Llama / SentencePiece layout of tokenizer.json) on a
// corpus, for models pretrained from scratch. The output is a Hugging Face tokenizer folder
// (tokenizer.json, tokenizer_config.json, special_tokens_map.json) that transformers'
// PreTrainedTokenizerFast and our LlamaTokenizer load:
//
//   normalizer   prepend "▁", replace " " by "▁"             (as Llama's SentencePiece tokenizers)
//   pre-token.   split into the training units (below): same pieces, faster encoding
//   model        BPE, byte_fallback (characters outside the vocabulary become <0xNN> byte tokens)
//   post         <s> before every sequence; decoder undoes the normalizer
//
// Vocabulary: <unk> <s> </s>, the 256 byte tokens, the alphabet (printable ASCII, "▁", newline and
// every other character seen at least `minCharFrequency` times), then one token per merge.
// Merges are learned inside units (a "▁"-prefixed run of letters, a "▁"-prefixed run of other
// symbols, a run of newlines, a single digit) and never join digits: numbers are spelt digit by digit
// as in Llama, so figures like $6.53 share their tokens with every other figure. Because no learned
// pair ever spans two units, applying the merges to a whole text (no pre-tokenizer) gives the same
// pieces as applying them unit by unit. Ties between equally frequent pairs go to the pair whose
// merged string sorts first, so training is deterministic.

import { InputError } from '../errors.js';

export interface TrainBpeOptions {
  /** Total vocabulary size, specials and byte tokens included (at least 259 + the alphabet). */
  vocabSize: number;
  /** Pairs seen fewer times are not merged (default 2). */
  minPairFrequency?: number;
  /** Characters seen fewer times stay out of the alphabet (byte fallback; default 10). */
  minCharFrequency?: number;
}

export const SPECIAL_TOKENS = ['<unk>', '<s>', '</s>'] as const;
/** The largest vocabulary the trainer handles (symbol ids are packed into pair keys below 2^20). */
export const MAX_VOCAB_SIZE = 1 << 20;

/** The requested vocabulary is smaller than the specials, byte tokens and alphabet of the corpus. */
export class VocabTooSmallError extends InputError {
  override name = 'VocabTooSmallError';
  constructor(
    readonly requested: number,
    /** Specials + byte tokens + the corpus's alphabet. */
    readonly minimum: number,
    readonly alphabetSize: number,
  ) {
    super(
      `vocabulary size ${requested} is smaller than the specials, byte tokens and alphabet of this corpus: at least ${minimum} (${SPECIAL_TOKENS.length} special tokens, 256 byte tokens, ${alphabetSize} characters)`,
    );
  }
}
const BYTE_TOKENS = Array.from({ length: 256 }, (_, i) => `<0x${i.toString(16).toUpperCase().padStart(2, '0')}>`);
const UNIT = /▁?\p{L}+|▁?[^\p{L}\p{N}▁\n]+|\n+|\p{N}|▁/gu;
const DIGIT = /\p{N}/u;

export function normalizeForBpe(text: string): string {
  return '▁' + text.replaceAll(' ', '▁');
}

export interface TrainedBpe {
  vocab: Map<string, number>;
  merges: [string, string][];
}

/** Learns the vocabulary and merges from `texts` (see the header). */
export function trainBpe(texts: Iterable<string>, opts: TrainBpeOptions): TrainedBpe {
  const minPair = opts.minPairFrequency ?? 2;
  const minChar = opts.minCharFrequency ?? 10;
  const unitCounts = new Map<string, number>();
  const charCounts = new Map<string, number>();
  for (const text of texts) {
    for (const m of normalizeForBpe(text).matchAll(UNIT)) unitCounts.set(m[0], (unitCounts.get(m[0]) ?? 0) + 1);
  }
  for (const [u, n] of unitCounts) for (const ch of u) charCounts.set(ch, (charCounts.get(ch) ?? 0) + n);

  const alphabet = new Set<string>(['▁', '\n']);
  for (let c = 0x21; c < 0x7f; c++) alphabet.add(String.fromCharCode(c));
  for (const [ch, n] of charCounts) if (n >= minChar) alphabet.add(ch);
  const vocab = new Map<string, number>();
  for (const t of [...SPECIAL_TOKENS, ...BYTE_TOKENS, ...[...alphabet].sort()]) vocab.set(t, vocab.size);
  if (!(opts.vocabSize >= vocab.size)) throw new VocabTooSmallError(opts.vocabSize, vocab.size, alphabet.size);
  if (!(opts.vocabSize <= MAX_VOCAB_SIZE))
    throw new InputError(`vocabulary size ${opts.vocabSize} is larger than the trainer supports (${MAX_VOCAB_SIZE})`);
  if (!(Number.isInteger(minPair) && minPair >= 1))
    throw new InputError(`the minimum pair frequency must be an integer >= 1, got ${minPair}`);

  // Words: unique units as symbol-id sequences; characters outside the alphabet are left as
  // barriers (id -1) that never merge.
  const symbols: string[] = [...vocab.keys()];
  const words: { syms: number[]; count: number }[] = [];
  for (const [u, count] of unitCounts) words.push({ syms: [...u].map((ch) => vocab.get(ch) ?? -1), count });
  const mergeable = (id: number) => id >= 0 && !DIGIT.test(symbols[id]!);
  const key = (a: number, b: number) => a * 1_048_576 + b;
  const pairCounts = new Map<number, number>();
  const pairWords = new Map<number, Set<number>>();
  const addPairs = (w: number, sign: 1 | -1) => {
    const { syms, count } = words[w]!;
    for (let i = 0; i + 1 < syms.length; i++) {
      const a = syms[i]!;
      const b = syms[i + 1]!;
      if (!mergeable(a) || !mergeable(b)) continue;
      const k = key(a, b);
      pairCounts.set(k, (pairCounts.get(k) ?? 0) + sign * count);
      if (sign > 0) {
        let s = pairWords.get(k);
        if (!s) pairWords.set(k, (s = new Set()));
        s.add(w);
      }
    }
  };
  words.forEach((_, w) => {
    addPairs(w, 1);
  });

  const merges: [string, string][] = [];
  while (vocab.size < opts.vocabSize) {
    let best = -1;
    let bestCount = minPair - 1;
    let bestStr = '';
    for (const [k, n] of pairCounts) {
      if (n < bestCount || n <= 0) continue;
      const str = symbols[Math.floor(k / 1_048_576)]! + symbols[k % 1_048_576]!;
      if (n > bestCount || str < bestStr) [best, bestCount, bestStr] = [k, n, str];
    }
    if (best < 0) break;
    const a = Math.floor(best / 1_048_576);
    const b = best % 1_048_576;
    const merged = symbols[a]! + symbols[b]!;
    let id = vocab.get(merged);
    if (id === undefined) {
      id = symbols.length;
      symbols.push(merged);
      vocab.set(merged, id);
    }
    merges.push([symbols[a]!, symbols[b]!]);
    for (const w of pairWords.get(best) ?? []) {
      addPairs(w, -1);
      const s = words[w]!.syms;
      const out: number[] = [];
      for (let i = 0; i < s.length; i++) {
        if (i + 1 < s.length && s[i] === a && s[i + 1] === b) {
          out.push(id);
          i++;
        } else out.push(s[i]!);
      }
      words[w]!.syms = out;
      addPairs(w, 1);
    }
    pairCounts.delete(best);
    pairWords.delete(best);
  }
  return { vocab, merges };
}

/** tokenizer.json of a trained BPE, in the layout HF's tokenizers library writes for Llama-style BPE. */
export function tokenizerJson(bpe: TrainedBpe): Record<string, unknown> {
  // Only the three specials are added tokens: byte tokens live in the BPE vocabulary (as in Llama 2's
  // tokenizer.json), so decoding with skip_special_tokens keeps the characters they spell.
  const special = SPECIAL_TOKENS.map((content, id) => ({
    id,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: false,
    special: true,
  }));
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: special,
    normalizer: {
      type: 'Sequence',
      normalizers: [
        { type: 'Prepend', prepend: '▁' },
        { type: 'Replace', pattern: { String: ' ' }, content: '▁' },
      ],
    },
    // The units merges were learned in: the same pieces as BPE over the whole text (no learned pair
    // spans two units), but short words instead of one long one, which BPE encodes much faster.
    pre_tokenizer: { type: 'Split', pattern: { Regex: UNIT.source }, behavior: 'Isolated', invert: false },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'A', type_id: 0 } },
        { SpecialToken: { id: '<s>', type_id: 0 } },
        { Sequence: { id: 'B', type_id: 0 } },
      ],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        { type: 'Strip', content: ' ', start: 1, stop: 0 },
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: '<unk>',
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab: Object.fromEntries(bpe.vocab),
      merges: bpe.merges,
    },
  };
}

/** Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir` (atomically, folder included). */
export async function writeTokenizerFolder(
  dir: string,
  bpe: TrainedBpe,
  opts: { replace?: boolean } = {},
): Promise<void> {
  const { join } = await import('node:path');
  const { writeFileAtomic } = await import('../io/atomic.js');
  const { writeFolderAtomic } = await import('../io/atomic.js');
  await writeFolderAtomic(
    dir,
    async (tmp) => {
      await writeFileAtomic(join(tmp, 'tokenizer.json'), JSON.stringify(tokenizerJson(bpe), null, 1) + '\n');
      const config = {
        bos_token: '<s>',
        eos_token: '</s>',
        unk_token: '<unk>',
        model_max_length: 1_000_000,
        tokenizer_class: 'PreTrainedTokenizerFast',
        clean_up_tokenization_spaces: false,
      };
      await writeFileAtomic(join(tmp, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
      await writeFileAtomic(
        join(tmp, 'special_tokens_map.json'),
        JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }, null, 2) + '\n',
      );
    },
    opts,
  );
}
