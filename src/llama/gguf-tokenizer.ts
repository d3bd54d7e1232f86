// The HF tokenizer of a GGUF file that does not carry one (`tokenizer.huggingface.json`), as llama.cpp's
// converter and llama-quantize write them: tokenizer.json and tokenizer_config.json rebuilt from the
// tokenizer.ggml.* metadata, which LlamaTokenizer then loads like any HF folder (one tokenizer).
//   - model "llama" (SentencePiece BPE): the vocabulary is the token list; the merges are every split
//     of a token into two tokens of the vocabulary, the highest-scoring result first (SentencePiece
//     merges the adjacent pair whose union scores highest), ties by token id then by the left part's
//     length, as transformers converts a tokenizer.model; byte fallback <0xXX>, '▁' for spaces and
//     one prepended unless add_space_prefix is false (Llama 2's tokenizer.json on the Hub);
//   - model "gpt2" with pre "llama-bpe" (Llama 3; older files say "llama3" or "llama-v3"): byte-level BPE with the file's merges, the Llama 3
//     split pattern, and whole words found in the vocabulary taken as they are (llama.cpp's
//     ignore_merges for this pre-tokenizer, and Llama 3's tokenizer.json).
// Control and unknown tokens become special added tokens (matched in text, as HF does), user-defined
// ones plain added tokens; BOS/EOS are put
// around each text as add_bos_token / add_eos_token say (default: BOS only, as llama.cpp).
// Another tokenizer model or pre-tokenizer is an InputError naming the key and the value.
import { InputError } from '../errors.js';
import type { GgufFile } from '../io/gguf.js';

/** The split pattern of Llama 3's tokenizer.json (llama.cpp's "llama-bpe"). */
export const LLAMA3_SPLIT_PATTERN =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Names llama.cpp gives the Llama 3 pre-tokenizer (llama-vocab.cpp: older converters wrote the first two). */
const LLAMA3_PRE_NAMES = ['llama3', 'llama-v3', 'llama-bpe'];

/** tokenizer.ggml.token_type values (llama.cpp's llama_token_type). */
const UNKNOWN = 2;
const CONTROL = 3;
const USER_DEFINED = 4;

type Json = Record<string, unknown>;

export interface GgufHfTokenizer {
  /** tokenizer.json's text. */
  tokenizerJson: string;
  tokenizerConfig: Json;
}

/**
 * SentencePiece merges from a scored vocabulary: each token's splits into two tokens of the
 * vocabulary, ordered by the token's score (highest first), then its id, then the left part's length.
 */
export function sentencePieceMerges(tokens: readonly string[], scores: readonly number[]): [string, string][] {
  const ids = new Map<string, number>();
  tokens.forEach((t, id) => {
    if (!ids.has(t)) ids.set(t, id);
  });
  const merges: { left: string; right: string; score: number; id: number }[] = [];
  tokens.forEach((t, id) => {
    // Split on code points, not UTF-16 units: a piece never ends inside a surrogate pair.
    const chars = Array.from(t);
    for (let i = 1; i < chars.length; i++) {
      const left = chars.slice(0, i).join('');
      const right = chars.slice(i).join('');
      if (ids.has(left) && ids.has(right)) merges.push({ left, right, score: scores[id] ?? 0, id });
    }
  });
  merges.sort((a, b) => b.score - a.score || a.id - b.id || a.left.length - b.left.length);
  return merges.map((m) => [m.left, m.right]);
}

function stringList(g: GgufFile, key: string): string[] {
  const v = g.get(key);
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string'))
    throw new InputError(`GGUF metadata '${key}' is missing or not a list of strings`, { file: g.path, key });
  return v as string[];
}

function numberList(g: GgufFile, key: string, length: number, fallback: number): number[] {
  const v = g.get(key);
  if (v === undefined) return new Array<number>(length).fill(fallback);
  if (!Array.isArray(v) || v.length !== length || !v.every((x) => typeof x === 'number'))
    throw new InputError(`GGUF metadata '${key}' is not a list of ${length} numbers (one per token)`, {
      file: g.path,
      key,
    });
  return v as number[];
}

function flag(g: GgufFile, key: string, fallback: boolean): boolean {
  const v = g.get(key);
  return typeof v === 'boolean' ? v : fallback;
}

/** The token text at the id `key` holds, or undefined when the key is absent or out of range. */
function tokenAt(g: GgufFile, tokens: readonly string[], key: string): string | undefined {
  const v = g.get(key);
  const id = typeof v === 'bigint' ? Number(v) : v;
  if (id === undefined) return undefined;
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id >= tokens.length)
    throw new InputError(`GGUF metadata '${key}' is ${String(v)}, expected a token id below ${tokens.length}`, {
      file: g.path,
      key,
    });
  return tokens[id];
}

function specialPiece(id: string, typeId: number): Json {
  return { SpecialToken: { id, type_id: typeId } };
}

/** TemplateProcessing putting BOS / EOS around each text as the file asks. */
function postProcessor(bos: string | undefined, eos: string | undefined, tokens: readonly string[]): Json | null {
  if (bos === undefined && eos === undefined) return null;
  const single: Json[] = [];
  const pair: Json[] = [];
  const specials: Json = {};
  if (bos !== undefined) {
    single.push(specialPiece(bos, 0));
    specials[bos] = { id: bos, ids: [tokens.indexOf(bos)], tokens: [bos] };
  }
  single.push({ Sequence: { id: 'A', type_id: 0 } });
  if (eos !== undefined) {
    single.push(specialPiece(eos, 0));
    specials[eos] = { id: eos, ids: [tokens.indexOf(eos)], tokens: [eos] };
  }
  pair.push(...single);
  if (bos !== undefined) pair.push(specialPiece(bos, 1));
  pair.push({ Sequence: { id: 'B', type_id: 1 } });
  if (eos !== undefined) pair.push(specialPiece(eos, 1));
  return { type: 'TemplateProcessing', single, pair, special_tokens: specials };
}

/** tokenizer_config.json: the special tokens by their text, and the chat template. */
function tokenizerConfigOf(g: GgufFile, tokens: readonly string[]): Json {
  const config: Json = { tokenizer_class: 'PreTrainedTokenizerFast', clean_up_tokenization_spaces: false };
  for (const [hfKey, key] of [
    ['bos_token', 'bos'],
    ['eos_token', 'eos'],
    ['unk_token', 'unknown'],
    ['pad_token', 'padding'],
  ] as const) {
    const text = tokenAt(g, tokens, `tokenizer.ggml.${key}_token_id`);
    if (text !== undefined) config[hfKey] = text;
  }
  const template = g.get('tokenizer.chat_template');
  if (typeof template === 'string') config['chat_template'] = template;
  return config;
}

/**
 * tokenizer.json + tokenizer_config.json of the GGUF file `g`: its `tokenizer.huggingface.json` when
 * it has one (finllm's own files), else rebuilt from its tokenizer.ggml.* metadata.
 */
export function hfTokenizerFromGguf(g: GgufFile): GgufHfTokenizer {
  const file = g.path;
  const embedded = g.get('tokenizer.huggingface.json');
  if (typeof embedded === 'string')
    return { tokenizerJson: embedded, tokenizerConfig: tokenizerConfigOf(g, stringList(g, 'tokenizer.ggml.tokens')) };
  const model = g.get('tokenizer.ggml.model');
  const pre = g.get('tokenizer.ggml.pre');
  const isSpm = model === 'llama';
  const isLlama3 = model === 'gpt2' && typeof pre === 'string' && LLAMA3_PRE_NAMES.includes(pre);
  if (!isSpm && !isLlama3) {
    if (model === 'gpt2')
      throw new InputError(
        `byte-level BPE with pre-tokenizer ${JSON.stringify(pre ?? null)} is not supported; finllm reads 'llama-bpe' (Llama 3, also named 'llama3', 'llama-v3')`,
        { file, key: 'tokenizer.ggml.pre' },
      );
    throw new InputError(
      `tokenizer model ${JSON.stringify(model ?? null)} is not supported; finllm reads 'llama' (SentencePiece BPE) and 'gpt2' with pre 'llama-bpe' (Llama 3)`,
      { file, key: 'tokenizer.ggml.model' },
    );
  }
  const tokens = stringList(g, 'tokenizer.ggml.tokens');
  const types = numberList(g, 'tokenizer.ggml.token_type', tokens.length, 1);
  const vocab: Json = {};
  tokens.forEach((t, id) => {
    if (!(t in vocab)) vocab[t] = id;
  });
  const added: Json[] = [];
  tokens.forEach((t, id) => {
    const type = types[id];
    if (type !== UNKNOWN && type !== CONTROL && type !== USER_DEFINED) return;
    added.push({
      id,
      content: t,
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: type === USER_DEFINED && isSpm,
      special: type !== USER_DEFINED,
    });
  });

  const bos = tokenAt(g, tokens, 'tokenizer.ggml.bos_token_id');
  const eos = tokenAt(g, tokens, 'tokenizer.ggml.eos_token_id');
  const unk = tokenAt(g, tokens, 'tokenizer.ggml.unknown_token_id');
  const addBos = flag(g, 'tokenizer.ggml.add_bos_token', true);
  const addEos = flag(g, 'tokenizer.ggml.add_eos_token', false);

  let tokenizerJson: Json;
  if (isSpm) {
    const scores = numberList(g, 'tokenizer.ggml.scores', tokens.length, 0);
    const prepend = flag(g, 'tokenizer.ggml.add_space_prefix', true);
    const replace = { type: 'Replace', pattern: { String: ' ' }, content: '▁' };
    tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: {
        type: 'Sequence',
        normalizers: prepend ? [{ type: 'Prepend', prepend: '▁' }, replace] : [replace],
      },
      pre_tokenizer: null,
      post_processor: postProcessor(addBos ? bos : undefined, addEos ? eos : undefined, tokens),
      decoder: {
        type: 'Sequence',
        decoders: [
          { type: 'Replace', pattern: { String: '▁' }, content: ' ' },
          { type: 'ByteFallback' },
          { type: 'Fuse' },
          ...(prepend ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
        ],
      },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: unk ?? null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: true,
        byte_fallback: true,
        ignore_merges: false,
        vocab,
        merges: sentencePieceMerges(tokens, scores),
      },
    };
  } else {
    const merges = stringList(g, 'tokenizer.ggml.merges').map((m) => {
      const at = m.indexOf(' ');
      if (at <= 0)
        throw new InputError(`merge ${JSON.stringify(m)} is not two tokens`, { file, key: 'tokenizer.ggml.merges' });
      return [m.slice(0, at), m.slice(at + 1)];
    });
    const bosPost = addBos ? bos : undefined;
    const eosPost = addEos ? eos : undefined;
    const template = postProcessor(bosPost, eosPost, tokens);
    tokenizerJson = {
      version: '1.0',
      truncation: null,
      padding: null,
      added_tokens: added,
      normalizer: null,
      pre_tokenizer: {
        type: 'Sequence',
        pretokenizers: [
          { type: 'Split', pattern: { Regex: LLAMA3_SPLIT_PATTERN }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
        ],
      },
      post_processor: {
        type: 'Sequence',
        processors: [
          { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
          ...(template ? [template] : []),
        ],
      },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: {
        type: 'BPE',
        dropout: null,
        unk_token: null,
        continuing_subword_prefix: null,
        end_of_word_suffix: null,
        fuse_unk: false,
        byte_fallback: false,
        ignore_merges: true,
        vocab,
        merges,
      },
    };
  }

  return { tokenizerJson: JSON.stringify(tokenizerJson), tokenizerConfig: tokenizerConfigOf(g, tokens) };
}
