// A Llama checkpoint as a GGUF file for llama.cpp (and Ollama / LM Studio, built on it), and back.
//
// Export: the HF weights (a LoRA adapter merged on the way, W + s·B·A in f32 as merge.ts does)
// renamed to llama.cpp's tensor names, q_proj/k_proj rows permuted from HF's rotate-half layout to
// the interleaved pairs llama.cpp's RoPE rotates (what its HF converter does), llama3 RoPE scaling
// as the `rope_freqs` tensor of per-frequency divisors, the architecture as `llama.*` metadata and
// the tokenizer as `tokenizer.ggml.*` metadata:
//   - SentencePiece-style BPE (▁ for spaces, <0xXX> byte fallback) → model "llama"; llama.cpp
//     merges the highest-scoring pair first, so a merged token's score is minus its merge rank;
//   - byte-level BPE (GPT-2 / Llama 3) → model "gpt2" with the merges and the pre-tokenizer named
//     by its split pattern (llama.cpp knows pre-tokenizers by name, not by pattern).
// The file also carries the HF tokenizer.json (`tokenizer.huggingface.json`, a GGUF standard key)
// and the llama3 RoPE parameters (`finllm.rope.llama3.*`), so finllm reads it back exactly.
//
// q4_k_m is llama.cpp's mix (llama-quant.cpp, llama_tensor_get_type): Q4_K everywhere except the
// output matrix (and the token embedding when it is tied to it) and, on the layers use_more_bits
// picks (the first and last eighth and every third between), attn_v and ffn_down, which take Q6_K
// (and an 80-layer GQA model's other attn_v, which take Q5_K).
// A tensor whose rows are not a multiple of 256 falls back as llama.cpp does: Q4_K → Q5_0,
// Q5_K → Q5_1, Q6_K → Q8_0, the output matrix straight to Q8_0, and any of them to F16 when rows are not a
// multiple of 32 either.
//
// Import: a llama GGUF file (finllm's own, or one from llama.cpp's converter and llama-quantize)
// becomes an HF model folder in a temp directory (f32 weights, dequantized, q/k rows permuted back;
// the tokenizer from tokenizer.huggingface.json or rebuilt from tokenizer.ggml.*, gguf-tokenizer.ts),
// which every verb loads as usual.
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { InputError } from '../errors.js';
import { writeFileAtomic } from '../io/atomic.js';
import { GGML_LAYOUT, type GgmlTypeName } from '../io/ggml-quants.js';
import { GgufFile, type GgufMetadata, type GgufTensorSpec, type GgufValue, writeGguf } from '../io/gguf.js';
import { readJsonFile } from '../io/json.js';
import { Checkpoint, type SafetensorsEntry, writeSafetensors } from '../io/safetensors.js';
import { type LlamaConfig, llamaConfigToHf, loadLlamaConfig } from './config.js';
import { hfTokenizerFromGguf, LLAMA3_SPLIT_PATTERN } from './gguf-tokenizer.js';
import { type LoraPair, loraKey, mergeLoraInto, readAdapter, scaling, validateAdapterAgainstModel } from './peft.js';
import { LlamaTokenizer } from './tokenizer.js';
import { checkCheckpoint, LINEAR_MODULES, type LinearModule, linearWeightName } from './weights.js';

export const GGUF_TYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k_m'] as const;
export type GgufExportType = (typeof GGUF_TYPES)[number];

/** The type of the 2-D weights (q4_k_m: before its per-tensor mix). */
const WEIGHT_TYPE: Record<GgufExportType, GgmlTypeName> = {
  f32: 'F32',
  f16: 'F16',
  bf16: 'BF16',
  q8_0: 'Q8_0',
  q4_0: 'Q4_0',
  q4_k_m: 'Q4_K',
};
/** llama_ftype of the file as a whole (general.file_type). */
const FILE_TYPE: Record<GgufExportType, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, q4_k_m: 15, bf16: 32 };

/** llama.cpp's tensor name for each decoder linear layer. */
const GGUF_LINEAR: Record<LinearModule, string> = {
  q_proj: 'attn_q',
  k_proj: 'attn_k',
  v_proj: 'attn_v',
  o_proj: 'attn_output',
  gate_proj: 'ffn_gate',
  up_proj: 'ffn_up',
  down_proj: 'ffn_down',
};

/** Token types of tokenizer.ggml.token_type (llama.cpp's llama_token_type). */
const TOKEN_TYPE = { normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;

// ---------------------------------------------------------------------------------------------
// RoPE layout

/**
 * Rows of a q_proj/k_proj weight [heads·headDim, in] from HF's layout (each head's first half are
 * the real parts, second half the imaginary parts) to interleaved pairs (re, im, re, im ...):
 * row h·d + 2i + j ← row h·d + j·d/2 + i. `inverse` undoes it.
 */
export function permuteRopeRows(w: Float32Array, heads: number, headDim: number, inverse = false): Float32Array {
  const cols = w.length / (heads * headDim);
  const out = new Float32Array(w.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < half; i++) {
      for (let j = 0; j < 2; j++) {
        const hf = h * headDim + j * half + i;
        const gg = h * headDim + 2 * i + j;
        const [from, to] = inverse ? [gg, hf] : [hf, gg];
        out.set(w.subarray(from * cols, (from + 1) * cols), to * cols);
      }
    }
  }
  return out;
}

/**
 * llama3 RoPE scaling as llama.cpp takes it: one divisor per rotary frequency (theta_i / f_i),
 * 1 for short wavelengths, `factor` for long ones, a smooth blend between (HF's
 * _compute_llama3_parameters, written as divisors).
 */
export function llama3RopeFactors(config: LlamaConfig): Float32Array {
  const s = config.rope.scaling;
  if (!s) throw new RangeError('llama3RopeFactors: the model has no llama3 RoPE scaling');
  const half = config.headDim / 2;
  const out = new Float32Array(half);
  const lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor;
  const highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor;
  for (let i = 0; i < half; i++) {
    const freq = 1 / config.rope.theta ** ((2 * i) / config.headDim);
    const wavelen = (2 * Math.PI) / freq;
    if (wavelen < highWavelen) out[i] = 1;
    else if (wavelen > lowWavelen) out[i] = s.factor;
    else {
      const smooth =
        (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor) / (s.highFreqFactor - s.lowFreqFactor);
      out[i] = 1 / ((1 - smooth) / s.factor + smooth);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

/** Byte-level split patterns llama.cpp implements, by its pre-tokenizer name. */
const KNOWN_PRE_TOKENIZERS: { pattern: string; name: string }[] = [
  { pattern: LLAMA3_SPLIT_PATTERN, name: 'llama-bpe' },
];

type Json = Record<string, unknown>;
const isObj = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

function listOf(node: unknown, key: string): Json[] {
  if (!isObj(node)) return [];
  const inner = node[key];
  return Array.isArray(inner) ? inner.filter(isObj) : [node];
}

function splitPatterns(tok: Json): string[] {
  return listOf(tok['pre_tokenizer'], 'pretokenizers')
    .filter((p) => p['type'] === 'Split' && isObj(p['pattern']) && typeof (p['pattern'] as Json)['Regex'] === 'string')
    .map((p) => (p['pattern'] as Json)['Regex'] as string);
}

function isByteLevel(tok: Json): boolean {
  return (
    listOf(tok['pre_tokenizer'], 'pretokenizers').some((p) => p['type'] === 'ByteLevel') ||
    listOf(tok['decoder'], 'decoders').some((p) => p['type'] === 'ByteLevel')
  );
}

function prependsSpace(tok: Json): boolean {
  return listOf(tok['normalizer'], 'normalizers').some((n) => n['type'] === 'Prepend' && n['prepend'] === '▁');
}

/** Special tokens the post-processor puts around a single text: [before, after]. */
function templateSpecials(tok: Json): [string[], string[]] {
  const tp = listOf(tok['post_processor'], 'processors').find((p) => p['type'] === 'TemplateProcessing');
  const single = tp && Array.isArray(tp['single']) ? (tp['single'] as Json[]) : [];
  const before: string[] = [];
  const after: string[] = [];
  let seenSeq = false;
  for (const piece of single) {
    if (isObj(piece['Sequence'])) seenSeq = true;
    else if (isObj(piece['SpecialToken']))
      (seenSeq ? after : before).push(String((piece['SpecialToken'] as Json)['id']));
  }
  return [before, after];
}

export interface GgufTokenizer {
  metadata: [string, GgufValue][];
  /** Token count written (the model's vocab size; missing ids are padded as unused tokens). */
  count: number;
}

/**
 * tokenizer.ggml.* metadata for the HF tokenizer of `dir`. Only BPE tokenizers llama.cpp can
 * reproduce are accepted: SentencePiece-style with byte fallback, or byte-level with a split
 * pattern it knows; anything else is an InputError saying so.
 */
export async function ggufTokenizerMetadata(
  dir: string,
  vocabSize: number,
  opts: { chatTemplateFile?: string } = {},
): Promise<GgufTokenizer> {
  const file = join(dir, 'tokenizer.json');
  const tokRaw = await readJsonFile(file);
  if (!isObj(tokRaw) || !isObj(tokRaw['model']))
    throw new InputError('expected a tokenizer object with a "model" section', { file, key: 'model' });
  const tok = tokRaw;
  const model = tok['model'] as Json;
  if (model['type'] !== 'BPE')
    throw new InputError(`only BPE tokenizers can be exported to GGUF, got ${JSON.stringify(model['type'])}`, {
      file,
      key: 'model.type',
    });
  const vocab = model['vocab'];
  if (!isObj(vocab)) throw new InputError('expected the BPE vocabulary as an object', { file, key: 'model.vocab' });
  const hf = await LlamaTokenizer.load(dir, opts);
  const config = ((await readJsonFile(join(dir, 'tokenizer_config.json'))) ?? {}) as Json;

  const tokens: string[] = new Array<string>(vocabSize);
  for (const [text, id] of Object.entries(vocab)) if (typeof id === 'number' && id < vocabSize) tokens[id] = text;
  const added = new Map<number, { content: string; special: boolean }>();
  for (const a of Array.isArray(tok['added_tokens']) ? (tok['added_tokens'] as Json[]) : []) {
    const id = a['id'] as number;
    if (id >= vocabSize)
      throw new InputError(
        `added token ${JSON.stringify(a['content'])} has id ${id}, beyond the model's vocab_size ${vocabSize}`,
        { file, key: 'added_tokens' },
      );
    tokens[id] = a['content'] as string;
    added.set(id, { content: a['content'] as string, special: a['special'] === true });
  }
  let highest = -1; // a loop, not Math.max(...): vocabularies of 128k entries overflow the argument list
  for (const v of Object.values(vocab)) if (typeof v === 'number' && v > highest) highest = v;
  if (highest >= vocabSize)
    throw new InputError(`the tokenizer has token id ${highest}, beyond the model's vocab_size ${vocabSize}`, {
      file,
      key: 'model.vocab',
    });

  const merges = (Array.isArray(model['merges']) ? model['merges'] : []).map((m) =>
    Array.isArray(m) ? m.join(' ') : String(m),
  );
  const byteLevel = isByteLevel(tok);
  const types: number[] = [];
  const scores: number[] = [];
  let ggmlModel: string;
  let pre: string | null = null;
  if (byteLevel) {
    ggmlModel = 'gpt2';
    const patterns = splitPatterns(tok);
    const known = KNOWN_PRE_TOKENIZERS.find((k) => patterns.length === 1 && patterns[0] === k.pattern);
    if (!known) {
      throw new InputError(
        `byte-level BPE with split pattern ${JSON.stringify(patterns)} has no llama.cpp pre-tokenizer; supported: the Llama 3 pattern`,
        { file, key: 'pre_tokenizer' },
      );
    }
    pre = known.name;
  } else {
    if (model['byte_fallback'] !== true || !prependsSpace(tok)) {
      throw new InputError(
        'only byte-level BPE (GPT-2 / Llama 3 style) or SentencePiece-style BPE (▁ spaces, byte_fallback) tokenizers can be exported to GGUF',
        { file, key: 'model' },
      );
    }
    ggmlModel = 'llama';
  }
  // SentencePiece-style: llama.cpp merges the adjacent pair whose result scores highest, so a merged
  // token scores minus the rank of the (first) merge that produces it; other tokens score 0.
  const rankOf = new Map<string, number>();
  if (!byteLevel) {
    merges.forEach((m, rank) => {
      const merged = m.replace(' ', '');
      if (!rankOf.has(merged)) rankOf.set(merged, rank);
    });
  }
  for (let id = 0; id < vocabSize; id++) {
    const text = tokens[id];
    if (text === undefined) {
      tokens[id] = `[PAD${id}]`;
      types.push(TOKEN_TYPE.unused);
      scores.push(0);
      continue;
    }
    const a = added.get(id);
    if (!byteLevel && /^<0x[0-9A-F]{2}>$/.test(text)) types.push(TOKEN_TYPE.byte);
    else if (id === hf.unkId) types.push(TOKEN_TYPE.unknown);
    else if (a) types.push(a.special ? TOKEN_TYPE.control : TOKEN_TYPE.userDefined);
    else types.push(TOKEN_TYPE.normal);
    const rank = rankOf.get(text);
    scores.push(rank === undefined ? 0 : -(rank + 1));
  }

  const [before, after] = templateSpecials(tok);
  const eosText = tokens[hf.eosId];
  const addBos =
    typeof config['add_bos_token'] === 'boolean'
      ? config['add_bos_token']
      : hf.bosId !== null && before.includes(tokens[hf.bosId]!);
  const addEos =
    typeof config['add_eos_token'] === 'boolean'
      ? config['add_eos_token']
      : eosText !== undefined && after.includes(eosText);

  const md: [string, GgufValue][] = [
    ['tokenizer.ggml.model', { type: 'string', value: ggmlModel }],
    ...(pre ? [['tokenizer.ggml.pre', { type: 'string', value: pre }] as [string, GgufValue]] : []),
    ['tokenizer.ggml.tokens', { type: 'array', itemType: 'string', value: tokens }],
    ['tokenizer.ggml.scores', { type: 'array', itemType: 'f32', value: scores }],
    ['tokenizer.ggml.token_type', { type: 'array', itemType: 'i32', value: types }],
  ];
  if (byteLevel) md.push(['tokenizer.ggml.merges', { type: 'array', itemType: 'string', value: merges }]);
  const id = (key: string, v: number | null) => {
    if (v !== null) md.push([key, { type: 'u32', value: v }]);
  };
  id('tokenizer.ggml.bos_token_id', hf.bosId);
  id('tokenizer.ggml.eos_token_id', hf.eosId);
  id('tokenizer.ggml.unknown_token_id', hf.unkId);
  id('tokenizer.ggml.padding_token_id', hf.padId);
  md.push(['tokenizer.ggml.add_bos_token', { type: 'bool', value: addBos }]);
  md.push(['tokenizer.ggml.add_eos_token', { type: 'bool', value: addEos }]);
  if (!byteLevel) md.push(['tokenizer.ggml.add_space_prefix', { type: 'bool', value: true }]);
  if (hf.chatTemplateSource !== null)
    md.push(['tokenizer.chat_template', { type: 'string', value: hf.chatTemplateSource }]);
  md.push(['tokenizer.huggingface.json', { type: 'string', value: JSON.stringify(tok) }]);
  return { metadata: md, count: vocabSize };
}

// ---------------------------------------------------------------------------------------------
// Export

export interface GgufExportOptions {
  /** PEFT adapter folder merged into the base weights on the way. */
  adapter?: string;
  type?: GgufExportType;
  /** A Jinja chat template file embedded instead of the model folder's. */
  chatTemplateFile?: string;
  /** general.name (default: the model folder's name). */
  name?: string;
}

/** Where a tensor sits in the model, for the per-tensor choices of q4_k_m. */
export interface TensorRole {
  /** The output matrix, or the token embedding when it also serves as the output. */
  output?: boolean;
  /** attn_v / ffn_down of this decoder layer. */
  moreBitsCandidate?: { layer: number };
  /** attn_v of an 80-layer GQA model (llama.cpp's LLM_TYPE_70B): Q5_K where it would be Q4_K. */
  attnVOf70B?: boolean;
}

/** llama.cpp's use_more_bits: the first and last eighth of the layers and every third one between. */
export function useMoreBits(layer: number, layers: number): boolean {
  const eighth = Math.trunc(layers / 8);
  return layer < eighth || layer >= Math.trunc((7 * layers) / 8) || (layer - eighth) % 3 === 2;
}

/** llama.cpp's replacement for a type whose block does not divide the row length (tensor_type_fallback). */
function blockFallback(type: GgmlTypeName, rowLength: number): GgmlTypeName {
  if (rowLength % GGML_LAYOUT[type].block === 0) return type;
  const next: GgmlTypeName = type === 'Q4_K' ? 'Q5_0' : type === 'Q5_K' ? 'Q5_1' : type === 'Q6_K' ? 'Q8_0' : type;
  return rowLength % GGML_LAYOUT[next].block === 0 ? next : 'F16';
}

/**
 * The tensor type of one weight: norms and RoPE factors f32; 2-D weights `type` (q4_k_m: its
 * per-tensor mix), or its fallback when their rows do not fill whole quantization blocks.
 */
export function ggufTensorType(
  type: GgufExportType,
  shape: readonly number[],
  role: TensorRole = {},
  layers = 1,
): GgmlTypeName {
  if (shape.length < 2) return 'F32';
  const rowLength = shape[shape.length - 1]!;
  return blockFallback(ggufWantedType(type, role, layers), rowLength);
}

/** The type a 2-D weight gets when its rows fill whole blocks. */
function ggufWantedType(type: GgufExportType, role: TensorRole, layers: number): GgmlTypeName {
  if (type !== 'q4_k_m') return WEIGHT_TYPE[type];
  if (role.output || (role.moreBitsCandidate && useMoreBits(role.moreBitsCandidate.layer, layers))) return 'Q6_K';
  return role.attnVOf70B ? 'Q5_K' : 'Q4_K';
}

/** A weight written in another type than its export type asks for (its rows do not fill its blocks). */
export interface GgufFallback {
  name: string;
  wanted: GgmlTypeName;
  written: GgmlTypeName;
}

/** The Modelfile-free part: builds the metadata and tensors and writes `outFile` atomically. */
export async function exportGguf(
  modelDir: string,
  outFile: string,
  opts: GgufExportOptions = {},
): Promise<{ tensors: number; fallbackF16: string[]; fallbacks: GgufFallback[] }> {
  const type = opts.type ?? 'f16';
  const config = await loadLlamaConfig(modelDir);
  // llama.cpp takes an 80-layer GQA llama for its 70B and gives its attn_v more bits.
  const is70B = config.numHiddenLayers === 80 && config.numKeyValueHeads !== config.numAttentionHeads;
  const tokenizer = await ggufTokenizerMetadata(
    modelDir,
    config.vocabSize,
    opts.chatTemplateFile ? { chatTemplateFile: opts.chatTemplateFile } : {},
  );
  const adapter = opts.adapter ? await readAdapter(opts.adapter) : null;
  if (adapter) validateAdapterAgainstModel(adapter.config, config, adapter.weights, opts.adapter);
  const ckpt = await Checkpoint.open(modelDir);
  try {
    checkCheckpoint(ckpt, config);
    const md: GgufMetadata = new Map<string, GgufValue>();
    const u32 = (v: number): GgufValue => ({ type: 'u32', value: v });
    const f32 = (v: number): GgufValue => ({ type: 'f32', value: v });
    md.set('general.architecture', { type: 'string', value: 'llama' });
    md.set('general.name', { type: 'string', value: opts.name ?? basename(modelDir.replace(/\/+$/, '')) });
    md.set('general.file_type', u32(FILE_TYPE[type]));
    if (type === 'q8_0' || type === 'q4_0' || type === 'q4_k_m') md.set('general.quantization_version', u32(2));
    md.set('llama.vocab_size', u32(config.vocabSize));
    md.set('llama.context_length', u32(config.maxPositionEmbeddings));
    md.set('llama.embedding_length', u32(config.hiddenSize));
    md.set('llama.block_count', u32(config.numHiddenLayers));
    md.set('llama.feed_forward_length', u32(config.intermediateSize));
    md.set('llama.attention.head_count', u32(config.numAttentionHeads));
    md.set('llama.attention.head_count_kv', u32(config.numKeyValueHeads));
    md.set('llama.attention.key_length', u32(config.headDim));
    md.set('llama.attention.value_length', u32(config.headDim));
    md.set('llama.rope.dimension_count', u32(config.headDim));
    md.set('llama.rope.freq_base', f32(config.rope.theta));
    md.set('llama.attention.layer_norm_rms_epsilon', f32(config.rmsNormEps));
    const s = config.rope.scaling;
    if (s) {
      md.set('finllm.rope.llama3.factor', f32(s.factor));
      md.set('finllm.rope.llama3.low_freq_factor', f32(s.lowFreqFactor));
      md.set('finllm.rope.llama3.high_freq_factor', f32(s.highFreqFactor));
      md.set('finllm.rope.llama3.original_context_length', u32(s.originalMaxPositionEmbeddings));
    }
    for (const [k, v] of tokenizer.metadata) md.set(k, v);

    const merges = new Map<string, LoraPair>();
    if (adapter) {
      for (let l = 0; l < config.numHiddenLayers; l++) {
        for (const mod of LINEAR_MODULES) {
          const pair = adapter.weights.get(loraKey(l, mod));
          if (pair) merges.set(linearWeightName(l, mod), pair);
        }
      }
    }
    const scale = adapter ? scaling(adapter.config) : 0;
    const read = async (hfName: string, shape: number[]): Promise<Float32Array> => {
      const w = await ckpt.readF32(hfName, shape);
      const pair = merges.get(hfName);
      if (pair) mergeLoraInto(w, pair, scale);
      for (let i = 0; i < w.length; i++) {
        if (!Number.isFinite(w[i]!))
          throw new InputError(
            `tensor '${hfName}' has a non-finite value at index ${i}${pair ? ' after merging the adapter' : ''}`,
            { file: ckpt.fileOf(hfName) },
          );
      }
      return w;
    };
    const fallbacks: GgufFallback[] = [];
    const tensors: GgufTensorSpec[] = [];
    const layers = config.numHiddenLayers;
    const add = (
      name: string,
      shape: number[],
      data: () => Promise<Float32Array> | Float32Array,
      role: TensorRole = {},
    ) => {
      const t = ggufTensorType(type, shape, role, layers);
      const wanted = ggufWantedType(type, role, layers);
      if (shape.length >= 2 && t !== wanted) fallbacks.push({ name, wanted, written: t });
      tensors.push({ name, shape, type: t, data });
    };
    const d = config.hiddenSize;
    // A tied embedding is also the output matrix: llama.cpp gives it the output's type.
    add('token_embd.weight', [config.vocabSize, d], () => read('model.embed_tokens.weight', [config.vocabSize, d]), {
      output: config.tieWordEmbeddings,
    });
    if (s) add('rope_freqs.weight', [config.headDim / 2], () => llama3RopeFactors(config));
    for (let l = 0; l < config.numHiddenLayers; l++) {
      add(`blk.${l}.attn_norm.weight`, [d], () => read(`model.layers.${l}.input_layernorm.weight`, [d]));
      for (const mod of LINEAR_MODULES) {
        const hfName = linearWeightName(l, mod);
        const shape = ckpt.shape(hfName);
        const heads = mod === 'q_proj' ? config.numAttentionHeads : mod === 'k_proj' ? config.numKeyValueHeads : 0;
        add(
          `blk.${l}.${GGUF_LINEAR[mod]}.weight`,
          shape,
          async () => {
            const w = await read(hfName, shape);
            return heads > 0 ? permuteRopeRows(w, heads, config.headDim) : w;
          },
          mod === 'v_proj'
            ? { moreBitsCandidate: { layer: l }, attnVOf70B: is70B }
            : mod === 'down_proj'
              ? { moreBitsCandidate: { layer: l } }
              : {},
        );
        if (mod === 'o_proj')
          add(`blk.${l}.ffn_norm.weight`, [d], () => read(`model.layers.${l}.post_attention_layernorm.weight`, [d]));
      }
    }
    add('output_norm.weight', [d], () => read('model.norm.weight', [d]));
    if (!config.tieWordEmbeddings)
      add('output.weight', [config.vocabSize, d], () => read('lm_head.weight', [config.vocabSize, d]), {
        output: true,
      });
    await writeGguf(outFile, md, tensors);
    return {
      tensors: tensors.length,
      fallbackF16: fallbacks.filter((f) => f.written === 'F16').map((f) => f.name),
      fallbacks,
    };
  } finally {
    await ckpt.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Import

function num(g: GgufFile, key: string, fallback?: number): number {
  const v = g.get(key);
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (fallback !== undefined) return fallback;
  throw new InputError(`GGUF metadata '${key}' is missing or not a number`, { file: g.path });
}

type Llama3Scaling = NonNullable<LlamaConfig['rope']['scaling']>;

/**
 * llama3 RoPE parameters that give exactly the per-frequency divisors `factors` of a rope_freqs
 * tensor (llama.cpp's converter writes only the tensor). The divisor blends 1 and `factor` by
 * smooth = clamp(orig·x / (high - low) - low / (high - low), 0, 1) of x = 1 / wavelength, so only the
 * line's slope and intercept are fixed: low_freq_factor is taken as 1 (Llama 3.1 / 3.2's value),
 * the line fitted through the blended frequencies (or, with none, put in the gap between the
 * last unscaled and the first scaled one, as Llama 3's high 4 and a power-of-two context where one fits). Null when no divisor differs from 1; the parameters are
 * checked by recomputing the divisors, and an InputError when they cannot be matched.
 */
export function llama3ScalingFromRopeFreqs(
  factors: Float32Array,
  theta: number,
  headDim: number,
  file: string,
): Llama3Scaling | null {
  let factor = 1;
  for (const f of factors) factor = Math.max(factor, f);
  if (factor === 1) return null;
  const x = Array.from(factors, (_, i) => theta ** (-(2 * i) / headDim) / (2 * Math.PI));
  const near = (a: number, b: number) => Math.abs(a - b) <= 1e-6 * Math.abs(b);
  const blended: [number, number][] = [];
  let lastUnscaled = Number.POSITIVE_INFINITY; // smallest x with divisor 1
  let firstScaled = 0; // largest x with divisor factor
  factors.forEach((d, i) => {
    if (near(d, 1)) lastUnscaled = Math.min(lastUnscaled, x[i]!);
    else if (near(d, factor)) firstScaled = Math.max(firstScaled, x[i]!);
    else blended.push([x[i]!, (factor / d - 1) / (factor - 1)]);
  });
  let slope: number;
  let intercept: number;
  if (blended.length >= 2) {
    // Least squares through the blended points (exact up to the f32 rounding of the tensor).
    const n = blended.length;
    const mx = blended.reduce((a, [xi]) => a + xi, 0) / n;
    const my = blended.reduce((a, [, yi]) => a + yi, 0) / n;
    const sxy = blended.reduce((a, [xi, yi]) => a + (xi - mx) * (yi - my), 0);
    const sxx = blended.reduce((a, [xi]) => a + (xi - mx) ** 2, 0);
    slope = sxy / sxx;
    intercept = my - slope * mx;
  } else if (blended.length === 0 && firstScaled > 0 && Number.isFinite(lastUnscaled)) {
    // smooth must reach 0 and 1 inside the gap (firstScaled, lastUnscaled). Llama 3's own choice
    // (low 1, high 4: smooth 0 at x = 1/orig, 1 at 4/orig) with the largest power-of-two context
    // that fits, else thirds of the gap.
    let x0 = firstScaled + (lastUnscaled - firstScaled) / 3;
    let x1 = firstScaled + (2 * (lastUnscaled - firstScaled)) / 3;
    const orig = 2 ** Math.floor(Math.log2(1 / firstScaled));
    if (orig < 1 / firstScaled && orig > 4 / lastUnscaled) [x0, x1] = [1 / orig, 4 / orig];
    slope = 1 / (x1 - x0);
    intercept = -slope * x0;
  } else {
    throw new InputError(`rope_freqs (${Array.from(factors).join(', ')}) cannot be read as llama3 RoPE scaling`, {
      file,
      key: 'rope_freqs',
    });
  }
  // slope = orig / (high - low), intercept = -low / (high - low), low = 1.
  const high = 1 - 1 / intercept;
  const rounded = (v: number) => (Math.abs(v - Math.round(v)) <= 1e-4 * Math.abs(v) ? Math.round(v) : v);
  const scaling: Llama3Scaling = {
    type: 'llama3',
    factor,
    lowFreqFactor: 1,
    highFreqFactor: rounded(high),
    originalMaxPositionEmbeddings: rounded(slope * (high - 1)),
  };
  const again = llama3RopeFactors({
    headDim,
    rope: { theta, scaling },
  } as LlamaConfig);
  const worst = factors.reduce((w, f, i) => Math.max(w, Math.abs(again[i]! - f) / f), 0);
  if (!(worst <= 1e-5))
    throw new InputError(
      `rope_freqs (${Array.from(factors).join(', ')}) cannot be read as llama3 RoPE scaling (best fit off by ${worst.toExponential(2)})`,
      { file, key: 'rope_freqs' },
    );
  return scaling;
}

/**
 * LlamaConfig from a GGUF file's llama.* metadata; `ropeFreqs` is its rope_freqs tensor, needed
 * when the file lacks the llama3 RoPE parameters finllm writes (files from llama.cpp's converter).
 */
export function llamaConfigFromGguf(g: GgufFile, ropeFreqs?: Float32Array): LlamaConfig {
  const arch = g.get('general.architecture');
  if (arch !== 'llama')
    throw new InputError(`only llama GGUF files are supported, got general.architecture ${JSON.stringify(arch)}`, {
      file: g.path,
      key: 'general.architecture',
    });
  const scalingType = g.get('llama.rope.scaling.type');
  if (scalingType !== undefined && scalingType !== 'none')
    throw new InputError(`RoPE scaling ${JSON.stringify(scalingType)} is not supported; finllm reads llama3 scaling`, {
      file: g.path,
      key: 'llama.rope.scaling.type',
    });
  const heads = num(g, 'llama.attention.head_count');
  const d = num(g, 'llama.embedding_length');
  const headDim = num(g, 'llama.attention.key_length', d / heads);
  const theta = Number(Math.fround(num(g, 'llama.rope.freq_base', 10000)).toPrecision(7));
  let scaling: LlamaConfig['rope']['scaling'] = null;
  if (g.tensors.has('rope_freqs.weight')) {
    if (g.get('finllm.rope.llama3.factor') !== undefined) {
      scaling = {
        type: 'llama3',
        factor: num(g, 'finllm.rope.llama3.factor'),
        lowFreqFactor: num(g, 'finllm.rope.llama3.low_freq_factor'),
        highFreqFactor: num(g, 'finllm.rope.llama3.high_freq_factor'),
        originalMaxPositionEmbeddings: num(g, 'finllm.rope.llama3.original_context_length'),
      };
    } else {
      if (!ropeFreqs) throw new RangeError('llamaConfigFromGguf: this file needs its rope_freqs tensor');
      scaling = llama3ScalingFromRopeFreqs(ropeFreqs, theta, headDim, g.path);
    }
  }
  const tokens = g.get('tokenizer.ggml.tokens');
  const vocabSize = num(g, 'llama.vocab_size', Array.isArray(tokens) ? tokens.length : undefined);
  const eos = g.get('tokenizer.ggml.eos_token_id');
  const bos = g.get('tokenizer.ggml.bos_token_id');
  const pad = g.get('tokenizer.ggml.padding_token_id');
  // llama.cpp ends generation at EOT too (Llama 3 instruct: <|eot_id|>), as HF's list of eos ids does.
  const eot = g.get('tokenizer.ggml.eot_token_id');
  const eosIds = typeof eos === 'number' ? [eos] : [];
  if (typeof eot === 'number' && !eosIds.includes(eot)) eosIds.push(eot);
  return {
    vocabSize,
    hiddenSize: d,
    intermediateSize: num(g, 'llama.feed_forward_length'),
    numHiddenLayers: num(g, 'llama.block_count'),
    numAttentionHeads: heads,
    numKeyValueHeads: num(g, 'llama.attention.head_count_kv', heads),
    headDim,
    // The file holds eps as f32: read back the decimal it was written from, not its f32 neighbour.
    rmsNormEps: Number(Math.fround(num(g, 'llama.attention.layer_norm_rms_epsilon')).toPrecision(7)),
    rope: { theta, scaling },
    maxPositionEmbeddings: num(g, 'llama.context_length'),
    tieWordEmbeddings: !g.tensors.has('output.weight'),
    bosTokenId: typeof bos === 'number' ? bos : null,
    eosTokenIds: eosIds,
    padTokenId: typeof pad === 'number' ? pad : null,
    torchDtype: 'float32',
    initializerRange: 0.02,
  };
}

/**
 * Writes the GGUF model `file` as an HF model folder `outDir` (f32 safetensors, config.json,
 * tokenizer.json, tokenizer_config.json with the special tokens and chat template).
 */
export async function ggufToHfFolder(file: string, outDir: string): Promise<void> {
  const g = await GgufFile.open(file);
  try {
    const ropeFreqs =
      g.tensors.has('rope_freqs.weight') && g.get('finllm.rope.llama3.factor') === undefined
        ? await g.readF32('rope_freqs.weight')
        : undefined;
    const config = llamaConfigFromGguf(g, ropeFreqs);
    const { tokenizerJson, tokenizerConfig } = hfTokenizerFromGguf(g);
    const entries: SafetensorsEntry[] = [];
    const hfLinear = Object.fromEntries(Object.entries(GGUF_LINEAR).map(([k, v]) => [v, k])) as Record<
      string,
      LinearModule
    >;
    const need = (name: string) => {
      if (!g.tensors.has(name)) throw new InputError(`tensor '${name}' is not in the GGUF file`, { file });
      return g.tensors.get(name)!.shape;
    };
    const dense = (hfName: string, ggName: string, transform?: (w: Float32Array) => Float32Array) => {
      entries.push({
        name: hfName,
        dtype: 'F32',
        shape: need(ggName),
        data: async () => (transform ? transform(await g.readF32(ggName)) : g.readF32(ggName)),
      });
    };
    dense('model.embed_tokens.weight', 'token_embd.weight');
    for (let l = 0; l < config.numHiddenLayers; l++) {
      dense(`model.layers.${l}.input_layernorm.weight`, `blk.${l}.attn_norm.weight`);
      dense(`model.layers.${l}.post_attention_layernorm.weight`, `blk.${l}.ffn_norm.weight`);
      for (const [gg, mod] of Object.entries(hfLinear)) {
        const heads = mod === 'q_proj' ? config.numAttentionHeads : mod === 'k_proj' ? config.numKeyValueHeads : 0;
        dense(
          linearWeightName(l, mod),
          `blk.${l}.${gg}.weight`,
          heads > 0 ? (w) => permuteRopeRows(w, heads, config.headDim, true) : undefined,
        );
      }
    }
    dense('model.norm.weight', 'output_norm.weight');
    if (!config.tieWordEmbeddings) dense('lm_head.weight', 'output.weight');
    await writeSafetensors(join(outDir, 'model.safetensors'), entries, { format: 'pt' });
    await writeFileAtomic(join(outDir, 'config.json'), `${JSON.stringify(llamaConfigToHf(config), null, 2)}\n`);
    await writeFileAtomic(join(outDir, 'tokenizer.json'), tokenizerJson);
    await writeFileAtomic(join(outDir, 'tokenizer_config.json'), `${JSON.stringify(tokenizerConfig, null, 2)}\n`);
  } finally {
    await g.close();
  }
}

const opened: string[] = [];
let cleanupHooked = false;

/**
 * An HF model folder for `modelPath`: the path itself when it is a folder; for a `.gguf` file, a
 * temp folder holding its dequantized weights and tokenizer (removed when the process exits).
 */
export async function modelFolderFor(modelPath: string): Promise<string> {
  if (!modelPath.toLowerCase().endsWith('.gguf')) return modelPath;
  const dir = await mkdtemp(join(tmpdir(), 'finllm-gguf-'));
  opened.push(dir);
  if (!cleanupHooked) {
    cleanupHooked = true;
    process.once('exit', () => {
      for (const d of opened) rmSync(d, { recursive: true, force: true });
    });
  }
  try {
    await ggufToHfFolder(modelPath, dir);
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
  return dir;
}
