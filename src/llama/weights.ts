// Loading a HF Llama checkpoint's weights onto the GPU, one tensor at a time (read → upload → drop),
// so peak host memory stays near the largest single tensor whatever the model size.
//
// Storage choices: f32 (default), packed 16-bit (bf16/f16, two per u32 word; kernels compute in
// f32), or NF4 quantized at load time for the decoder's linear layers (QLoRA: embeddings, norms and
// lm_head stay unquantized). Norm weights are always f32 (tiny, and rmsnorm reads f32).
//
// The largest magnitude of every GEMM weight is measured while it passes through the CPU: weights
// beyond the f16 range (|w| > 65504) keep the f32 GEMM path in fp16-mixed (noteWeightRange), and
// their names are listed in `outOfF16Range` so the trainer can say so.
import { Tensor } from '../engine/tensor.js';
import { InputError } from '../errors.js';
import { f32ArrayToBf16, f32ArrayToF16 } from '../io/dtype.js';
import { describeNonFinite } from '../io/finite.js';
import { Checkpoint } from '../io/safetensors.js';
import { NonFiniteCounter } from '../kernels/finite.js';
import { disposeNf4, keepNf4, type Nf4Weight, noteWeightRange, quantizeNf4 } from '../kernels/index.js';
import { warn } from '../warnings.js';
import type { LlamaConfig } from './config.js';
import { type LoraAdapter, loraKey, mergeLoraInto, scaling } from './peft.js';

/** A decoder linear weight in HF layout [out, in]: a dense tensor (f32/bf16/f16) or NF4. */
export type LinearWeight = Tensor | Nf4Weight;

export const ATTENTION_MODULES = ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as const;
export const MLP_MODULES = ['gate_proj', 'up_proj', 'down_proj'] as const;
/** Every decoder linear layer, in PEFT's module naming. */
export const LINEAR_MODULES = [...ATTENTION_MODULES, ...MLP_MODULES] as const;
export type LinearModule = (typeof LINEAR_MODULES)[number];

export interface LayerWeights {
  inputNorm: Tensor;
  postAttentionNorm: Tensor;
  linear: Record<LinearModule, LinearWeight>;
}

export interface LlamaWeights {
  embedTokens: Tensor;
  layers: LayerWeights[];
  norm: Tensor;
  /** The same tensor object as embedTokens when the embeddings are tied. */
  lmHead: Tensor;
  /** Names of GEMM weights with |w| > 65504 (they stay on the f32 GEMM path in fp16-mixed). */
  outOfF16Range: string[];
}

const F16_MAX = 65504;

/** max |x| of f32 values (NaN if any is NaN). */
export function maxAbsF32(x: Float32Array): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const a = Math.abs(x[i]!);
    if (!(a <= m)) m = a; // NaN sticks
  }
  return m;
}

/**
 * max |x| of 16-bit float bits: for bf16 and f16 alike, magnitudes order as the unsigned bits
 * without the sign (NaN patterns sort above inf), so one integer max and one decode suffice.
 */
export function maxAbs16(bits: Uint16Array, dtype: 'BF16' | 'F16'): number {
  let m = 0;
  for (let i = 0; i < bits.length; i++) {
    const b = bits[i]! & 0x7fff;
    if (b > m) m = b;
  }
  if (dtype === 'BF16') return new Float32Array(new Uint32Array([m << 16]).buffer)[0]!;
  const e = m >> 10;
  const f = m & 0x3ff;
  if (e === 31) return f ? NaN : Infinity;
  return e === 0 ? f * 2 ** -24 : (1 + f / 1024) * 2 ** (e - 15);
}

export type WeightStorage = 'f32' | 'bf16' | 'f16';

export interface LoadWeightsOptions {
  /** Dense weight storage on the GPU (default f32). */
  storage?: WeightStorage;
  /** Quantize every decoder linear layer to NF4 at load time (QLoRA). */
  quantize?: 'nf4' | null;
  /** NF4 double quantization of the block absmax values (bitsandbytes' QLoRA default is on). */
  doubleQuant?: boolean;
  /** Called after each tensor is on the GPU (progress reporting). */
  onTensor?: (name: string, index: number, total: number) => void;
  /**
   * A LoRA adapter (already validated against the model) merged into the decoder linear weights
   * while they load: W' = W + s·B·A in f32 (merge.ts), then stored or quantized like any weight.
   */
  merge?: LoraAdapter;
}

/** HF parameter name of a decoder linear layer. */
export function linearWeightName(layer: number, module: LinearModule): string {
  const block = (ATTENTION_MODULES as readonly string[]).includes(module) ? 'self_attn' : 'mlp';
  return `model.layers.${layer}.${block}.${module}.weight`;
}

/** [out, in] of a decoder linear layer. */
export function linearShape(config: LlamaConfig, module: LinearModule): [number, number] {
  const { hiddenSize: d, intermediateSize: f, numAttentionHeads: hq, numKeyValueHeads: hkv, headDim: dh } = config;
  switch (module) {
    case 'q_proj':
      return [hq * dh, d];
    case 'k_proj':
    case 'v_proj':
      return [hkv * dh, d];
    case 'o_proj':
      return [d, hq * dh];
    case 'gate_proj':
    case 'up_proj':
      return [f, d];
    case 'down_proj':
      return [d, f];
  }
}

/** Every tensor a checkpoint must hold for `config`, with its shape. */
export function expectedTensors(config: LlamaConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  m.set('model.embed_tokens.weight', [config.vocabSize, config.hiddenSize]);
  for (let l = 0; l < config.numHiddenLayers; l++) {
    m.set(`model.layers.${l}.input_layernorm.weight`, [config.hiddenSize]);
    m.set(`model.layers.${l}.post_attention_layernorm.weight`, [config.hiddenSize]);
    for (const mod of LINEAR_MODULES) m.set(linearWeightName(l, mod), linearShape(config, mod));
  }
  m.set('model.norm.weight', [config.hiddenSize]);
  if (!config.tieWordEmbeddings) m.set('lm_head.weight', [config.vocabSize, config.hiddenSize]);
  return m;
}

/**
 * Tensors ignored without a word: RoPE buffers of older checkpoints (recomputed from config.json).
 * A separate lm_head.weight under tie_word_embeddings: true is not among them: the model would use
 * the embeddings as its head and drop a head that may have been trained, so it gets the warning.
 */
function silentlyIgnored(name: string): boolean {
  return /\.rotary_emb\.inv_freq$/.test(name);
}

/**
 * Checks presence and shape of every tensor before anything is uploaded (fail fast, with names),
 * and warns, as transformers does, about tensors the model does not use (an extra layer, a stray
 * name): they usually mean config.json does not describe these weights.
 */
export function checkCheckpoint(ckpt: Checkpoint, config: LlamaConfig): void {
  const expected = expectedTensors(config);
  const unused = ckpt.names().filter((n) => !expected.has(n) && !silentlyIgnored(n));
  if (unused.length > 0) {
    const shown = unused.slice(0, 5).join(', ') + (unused.length > 5 ? `, ... (${unused.length - 5} more)` : '');
    const tiedHead =
      config.tieWordEmbeddings && unused.includes('lm_head.weight')
        ? ' (tie_word_embeddings is true, so model.embed_tokens.weight is the LM head and lm_head.weight is ignored; set it to false if lm_head.weight is the head)'
        : '';
    warn(
      `${ckpt.dir}: ${unused.length} tensor${unused.length === 1 ? ' is' : 's are'} in the checkpoint but not used by a ${config.numHiddenLayers}-layer Llama as config.json describes it: ${shown}${tiedHead}; check that config.json matches the weights`,
    );
  }
  for (const [name, shape] of expected) {
    if (!ckpt.has(name)) {
      // Checkpoint.info throws an InputError naming the tensor, the folder and similar names.
      ckpt.info(name);
    }
    ckpt.checkShape(name, shape);
    const dtype = ckpt.dtype(name);
    if (dtype !== 'F32' && dtype !== 'BF16' && dtype !== 'F16' && dtype !== 'F64') {
      throw new InputError(`tensor '${name}' has dtype ${dtype}; expected F32, BF16, F16 or F64`, {
        file: ckpt.fileOf(name),
      });
    }
  }
}

async function uploadDense(
  ckpt: Checkpoint,
  name: string,
  shape: number[],
  storage: WeightStorage,
  edit?: (w: Float32Array) => void,
): Promise<{ t: Tensor; maxAbs: number }> {
  let t: Tensor;
  let maxAbs: number;
  const src = ckpt.dtype(name);
  if (storage === 'f32') {
    const f = await ckpt.readF32(name, shape);
    edit?.(f);
    maxAbs = maxAbsF32(f);
    t = Tensor.from(f, shape);
  } else if (!edit && ((storage === 'bf16' && src === 'BF16') || (storage === 'f16' && src === 'F16'))) {
    const bits = await ckpt.readU16(name, shape);
    maxAbs = maxAbs16(bits, src);
    t = Tensor.from(bits, shape, storage); // bits as stored: no rounding
  } else {
    const f = await ckpt.readF32(name, shape);
    edit?.(f);
    maxAbs = maxAbsF32(f);
    t = Tensor.from(storage === 'bf16' ? f32ArrayToBf16(f) : f32ArrayToF16(f), shape, storage);
  }
  t.keep();
  t.name = name;
  return { t, maxAbs };
}

/**
 * Loads every weight of a Llama checkpoint folder onto the GPU. Missing tensors and shape mismatches
 * are InputErrors naming the tensor and file; the check runs before any upload. Every tensor is
 * also counted for NaN / ±Inf on the GPU as it arrives (one readback at the end): a damaged
 * checkpoint is refused with the names of the tensors, not discovered as a NaN loss later.
 */
export async function loadLlamaWeights(
  dir: string,
  config: LlamaConfig,
  opts: LoadWeightsOptions = {},
): Promise<LlamaWeights> {
  const storage = opts.storage ?? 'f32';
  const ckpt = await Checkpoint.open(dir);
  const loaded: (Tensor | Nf4Weight)[] = [];
  const nonFinite = new NonFiniteCounter();
  try {
    checkCheckpoint(ckpt, config);
    const total = expectedTensors(config).size;
    let index = 0;
    const outOfF16Range: string[] = [];
    const noteRange = (w: LinearWeight, name: string, maxAbs: number) => {
      noteWeightRange(w, maxAbs);
      if (!(maxAbs <= F16_MAX)) outOfF16Range.push(name);
    };
    const dense = async (
      name: string,
      shape: number[],
      st: WeightStorage,
      gemmWeight = false,
      edit?: (w: Float32Array) => void,
    ): Promise<Tensor> => {
      const { t, maxAbs } = await uploadDense(ckpt, name, shape, st, edit);
      nonFinite.add(t, name);
      loaded.push(t);
      if (gemmWeight) noteRange(t, name, maxAbs);
      opts.onTensor?.(name, ++index, total);
      return t;
    };
    // The embeddings are a GEMM weight when tied to the lm_head.
    const embedTokens = await dense(
      'model.embed_tokens.weight',
      [config.vocabSize, config.hiddenSize],
      storage,
      config.tieWordEmbeddings,
    );
    const layers: LayerWeights[] = [];
    for (let l = 0; l < config.numHiddenLayers; l++) {
      const inputNorm = await dense(`model.layers.${l}.input_layernorm.weight`, [config.hiddenSize], 'f32');
      const postAttentionNorm = await dense(
        `model.layers.${l}.post_attention_layernorm.weight`,
        [config.hiddenSize],
        'f32',
      );
      const linear = {} as Record<LinearModule, LinearWeight>;
      for (const mod of LINEAR_MODULES) {
        const name = linearWeightName(l, mod);
        const shape = linearShape(config, mod);
        const pair = opts.merge?.weights.get(loraKey(l, mod));
        const edit = pair ? (w: Float32Array) => mergeLoraInto(w, pair, scaling(opts.merge!.config)) : undefined;
        if (opts.quantize === 'nf4') {
          const data = await ckpt.readF32(name, shape);
          edit?.(data);
          const f = Tensor.from(data, shape);
          nonFinite.add(f, name);
          const q = quantizeNf4(f, { doubleQuant: opts.doubleQuant ?? false });
          f.dispose();
          keepNf4(q);
          loaded.push(q);
          noteRange(q, name, maxAbsF32(data)); // dequantized |w| ≤ absmax = max |w| of its block
          linear[mod] = q;
          opts.onTensor?.(name, ++index, total);
        } else {
          linear[mod] = await dense(name, shape, storage, true, edit);
        }
      }
      layers.push({ inputNorm, postAttentionNorm, linear });
    }
    const norm = await dense('model.norm.weight', [config.hiddenSize], 'f32');
    const lmHead = config.tieWordEmbeddings
      ? embedTokens
      : await dense('lm_head.weight', [config.vocabSize, config.hiddenSize], storage, true);
    const found = await nonFinite.read();
    if (found.length > 0) {
      const converted = storage !== 'f32' ? ` (as stored, or after rounding to model storage ${storage})` : '';
      throw new InputError(
        `${describeNonFinite(found.map((f) => ({ name: f.label, count: f.count })))}${converted}; the checkpoint is damaged`,
        { file: ckpt.fileOf(found[0]!.label) },
      );
    }
    return { embedTokens, layers, norm, lmHead, outOfF16Range };
  } catch (err) {
    for (const t of loaded) disposeLinear(t);
    throw err;
  } finally {
    nonFinite.dispose();
    await ckpt.close();
  }
}

/**
 * The weights loadLlamaWeights makes for `config`, with the same shapes and dtypes (dense at
 * `storage`, norms f32, decoder linear layers NF4-quantized with `quantize: 'nf4'`) but no values
 * read: for counting what a model takes on a MetaDevice (the memory estimate), not for computing.
 */
export function emptyLlamaWeights(
  config: LlamaConfig,
  opts: Pick<LoadWeightsOptions, 'storage' | 'quantize' | 'doubleQuant'> = {},
): LlamaWeights {
  const storage = opts.storage ?? 'f32';
  // Named as loaded weights are (messages name the weight a kernel binds).
  const dense = (name: string, shape: number[], st: WeightStorage) => {
    const t = Tensor.empty(shape, st).keep();
    t.name = name;
    return t;
  };
  const embedTokens = dense('model.embed_tokens.weight', [config.vocabSize, config.hiddenSize], storage);
  const layers: LayerWeights[] = [];
  for (let l = 0; l < config.numHiddenLayers; l++) {
    const inputNorm = dense(`model.layers.${l}.input_layernorm.weight`, [config.hiddenSize], 'f32');
    const postAttentionNorm = dense(`model.layers.${l}.post_attention_layernorm.weight`, [config.hiddenSize], 'f32');
    const linear = {} as Record<LinearModule, LinearWeight>;
    for (const mod of LINEAR_MODULES) {
      const shape = linearShape(config, mod);
      if (opts.quantize === 'nf4') {
        const f = Tensor.empty(shape);
        linear[mod] = keepNf4(quantizeNf4(f, { doubleQuant: opts.doubleQuant ?? false }));
        f.dispose();
      } else linear[mod] = dense(linearWeightName(l, mod), shape, storage);
    }
    layers.push({ inputNorm, postAttentionNorm, linear });
  }
  const norm = dense('model.norm.weight', [config.hiddenSize], 'f32');
  const lmHead = config.tieWordEmbeddings
    ? embedTokens
    : dense('lm_head.weight', [config.vocabSize, config.hiddenSize], storage);
  return { embedTokens, layers, norm, lmHead, outOfF16Range: [] };
}

/**
 * Every weight tensor by its HF name, in checkpoint order (embed_tokens, per layer the norms and
 * linear layers, norm, lm_head). Tied embeddings appear once, as model.embed_tokens.weight (HF does
 * not save lm_head.weight for them). NF4 weights are not dense tensors: they are an error here.
 */
export function namedWeights(config: LlamaConfig, w: LlamaWeights): Map<string, Tensor> {
  const out = new Map<string, Tensor>();
  out.set('model.embed_tokens.weight', w.embedTokens);
  w.layers.forEach((l, i) => {
    out.set(`model.layers.${i}.input_layernorm.weight`, l.inputNorm);
    out.set(`model.layers.${i}.post_attention_layernorm.weight`, l.postAttentionNorm);
    for (const mod of LINEAR_MODULES) {
      const lin = l.linear[mod];
      if (isNf4(lin))
        throw new InputError(
          `${linearWeightName(i, mod)} is NF4-quantized: it has no dense tensor (load the model with quantize none)`,
        );
      out.set(linearWeightName(i, mod), lin);
    }
  });
  out.set('model.norm.weight', w.norm);
  if (!config.tieWordEmbeddings) out.set('lm_head.weight', w.lmHead);
  return out;
}

/** The dense weights of decoder layer `l` (norms and linear layers; none when NF4). */
export function layerDenseWeights(w: LayerWeights): Tensor[] {
  const lin = LINEAR_MODULES.map((m) => w.linear[m]).filter((t): t is Tensor => !isNf4(t));
  return [w.inputNorm, w.postAttentionNorm, ...lin];
}

export function isNf4(w: LinearWeight): w is Nf4Weight {
  return !(w instanceof Tensor);
}

export function disposeLinear(w: LinearWeight): void {
  if (w instanceof Tensor) w.dispose();
  else disposeNf4(w);
}

export function disposeWeights(w: LlamaWeights): void {
  w.embedTokens.dispose();
  if (w.lmHead !== w.embedTokens) w.lmHead.dispose();
  w.norm.dispose();
  for (const l of w.layers) {
    l.inputNorm.dispose();
    l.postAttentionNorm.dispose();
    for (const mod of LINEAR_MODULES) disposeLinear(l.linear[mod]);
  }
}
