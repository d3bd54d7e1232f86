// Memory model of a training step: the engine pool's peak for given shapes, before anything is
// allocated. Every term mirrors a buffer the code makes, rounded to the pool's size class:
//
//   persistent  weights (dense f32/bf16/f16 or NF4 codes + absmax), LoRA A/B, AdamW moments (flat
//               chunks), RoPE tables
//   activations what the forward keeps for backward (see decoder-layer.ts): per layer, per mode
//   workspace   what is alive on top of that at the step's peak: the fused loss head's backward
//               (dh, one chunk of logits) or the last layer's MLP backward (three [N, F] gradients),
//               whichever is larger, and under full checkpointing one layer's re-run
//
// Shapes: B rows of T tokens (N = B·T), D hidden, Dq = Hq·Dh, Dkv = Hkv·Dh, F MLP, V vocabulary,
// L layers, r LoRA rank. The peak is taken over the phases where it can occur (head backward,
// last layer's MLP backward, and for full checkpointing each layer's re-run); tests check the
// estimate against the measured pool peak.
import { BufferPool, storageBytes, type DType } from '../engine/tensor.js';
import { NF4_BLOCK, NF4_DQ_BLOCK, lossChunkRows } from '../kernels/index.js';
import type { LlamaConfig } from './config.js';
import type { CheckpointMode } from './ops.js';
import { LINEAR_MODULES, linearShape, type LinearModule } from './weights.js';

export interface TrainingMemoryShape {
  config: LlamaConfig;
  batchSize: number;
  seqLen: number;
  /** NF4 for the decoder linear layers (QLoRA) or dense at `storage`. */
  quantize: 'nf4' | 'none';
  storage: 'f32' | 'bf16' | 'f16';
  doubleQuant?: boolean;
  /** LoRA rank and the modules it targets (null: no adapter). */
  lora: { r: number; targetModules: readonly LinearModule[] } | null;
  checkpointing: CheckpointMode;
  /** The device's largest storage binding (optimizer state chunks, loss chunk); default 128 MiB. */
  maxBindingBytes?: number;
  /** Gradient accumulation (more than one micro-batch per step): every LoRA gradient exists throughout. */
  accumulating?: boolean;
}

export interface TrainingMemoryEstimate {
  weights: number;
  /** LoRA A and B. */
  adapters: number;
  /** AdamW moments (m and v). */
  optimizer: number;
  /** RoPE cos/sin tables. */
  ropeTables: number;
  /** Kept for backward at the peak. */
  activations: number;
  /** Alive on top of the kept activations at the peak (gradients, loss chunk, re-run layer). */
  workspace: number;
  /** The estimated pool peak: the sum of the above. */
  total: number;
  /** Kept activation bytes per token per layer (for the printout). */
  activationsPerTokenPerLayer: number;
  /** Rows per chunk of the fused loss head. */
  lossChunkRows: number;
}

const cls = (bytes: number): number => BufferPool.sizeClass(Math.max(4, bytes));
/** Pool bytes of one tensor of `numel` elements of `dtype`. */
const buf = (numel: number, dtype: DType = 'f32'): number => cls(storageBytes(dtype, numel));

/** Pool bytes of a decoder linear weight as loaded (weights.ts, kernels/nf4.ts). */
function linearWeightBytes(numel: number, s: TrainingMemoryShape): number {
  if (s.quantize !== 'nf4') return buf(numel, s.storage);
  const blocks = Math.ceil(numel / NF4_BLOCK);
  const codes = cls(Math.ceil(numel / 8) * 4);
  if (!s.doubleQuant) return codes + buf(blocks);
  return codes + cls(Math.ceil(blocks / 4) * 4) + buf(Math.ceil(blocks / NF4_DQ_BLOCK)) + buf(1);
}

function persistent(s: TrainingMemoryShape): { weights: number; adapters: number; optimizer: number; ropeTables: number } {
  const c = s.config;
  const { hiddenSize: d, vocabSize: v, numHiddenLayers: layers } = c;
  let weights = buf(v * d, s.storage) * (c.tieWordEmbeddings ? 1 : 2) + buf(d) * (2 * layers + 1);
  for (const mod of LINEAR_MODULES) {
    const [out, inF] = linearShape(c, mod);
    weights += layers * linearWeightBytes(out * inF, s);
  }
  let adapters = 0;
  const loraNumel: number[] = [];
  if (s.lora) {
    for (let l = 0; l < layers; l++) {
      for (const mod of LINEAR_MODULES) {
        if (!s.lora.targetModules.includes(mod)) continue;
        const [out, inF] = linearShape(c, mod);
        adapters += buf(s.lora.r * inF) + buf(out * s.lora.r);
        loraNumel.push(s.lora.r * inF, out * s.lora.r);
      }
    }
  }
  // AdamW packs m and v of consecutive parameters into chunks of ≤ one binding (kernels/optim.ts).
  const maxHalf = Math.floor((s.maxBindingBytes ?? 128 * 2 ** 20) / 8);
  let optimizer = 0;
  let n = 0;
  for (const k of loraNumel) {
    if (n > 0 && n + k > maxHalf) {
      optimizer += buf(2 * n);
      n = 0;
    }
    n += k;
  }
  if (loraNumel.length > 0) optimizer += buf(2 * Math.max(n, 1));
  // The tables cover at least max_position_embeddings positions (model.ts ropeFor).
  const positions = Math.max(c.maxPositionEmbeddings, s.seqLen);
  const ropeTables = 2 * buf((positions * c.headDim) / 2);
  return { weights, adapters, optimizer, ropeTables };
}

/** Which tensors of one decoder layer the forward keeps, by the rules of the kernels. */
interface LayerKeep {
  input: boolean;
  norm1: boolean;
  attention: boolean;
  attnOut: boolean;
  mid: boolean;
  norm2: boolean;
  swiglu: boolean;
  up: boolean;
  act: boolean;
  /** LoRA down products u [N, r] (one per targeted module). */
  loraProducts: number;
  /** Whether this layer's output needs a gradient (the next layer's input does). */
  outGrad: boolean;
}

function layerKeeps(s: TrainingMemoryShape, inGrad: boolean): LayerKeep {
  const lora = (m: LinearModule) => s.lora?.targetModules.includes(m) ?? false;
  // A projection keeps its input when it has LoRA (for dA); a frozen base (dense or NF4) needs only
  // its weight for dX, so linear() and nf4Linear() keep no input. (fp32 sizes: in fp16-mixed the
  // kept GEMM inputs are f16, kernels/activations.ts, which this model does not count yet.)
  const keepsInput = (m: LinearModule) => lora(m);
  const projGrad = (m: LinearModule, inputGrad: boolean) => inputGrad || lora(m);
  const h1Grad = inGrad;
  const qkvGrad = (['q_proj', 'k_proj', 'v_proj'] as const).some((m) => projGrad(m, h1Grad));
  const oGrad = projGrad('o_proj', qkvGrad);
  const midGrad = inGrad || oGrad;
  const gateGrad = projGrad('gate_proj', midGrad);
  const upGrad = projGrad('up_proj', midGrad);
  const swigluRec = gateGrad || upGrad;
  const downGrad = projGrad('down_proj', swigluRec);
  return {
    input: inGrad,
    norm1: (['q_proj', 'k_proj', 'v_proj'] as const).some((m) => keepsInput(m)),
    attention: qkvGrad,
    attnOut: qkvGrad || keepsInput('o_proj'),
    mid: midGrad,
    norm2: (['gate_proj', 'up_proj'] as const).some((m) => keepsInput(m)),
    swiglu: swigluRec,
    up: swigluRec && gateGrad,
    act: keepsInput('down_proj'),
    loraProducts: LINEAR_MODULES.filter(lora).length,
    outGrad: midGrad || downGrad,
  };
}

/** Bytes one layer keeps for backward under `mode` ('full' keeps only the input; see fullLayer). */
function layerBytes(s: TrainingMemoryShape, k: LayerKeep, recompute: boolean): number {
  const c = s.config;
  const n = s.batchSize * s.seqLen;
  const { hiddenSize: d, intermediateSize: f } = c;
  const dq = c.numAttentionHeads * c.headDim;
  const dkv = c.numKeyValueHeads * c.headDim;
  const nd = buf(n * d);
  let bytes = 0;
  // The input (the previous layer's output) is kept by the first norm's backward; under selective
  // checkpointing also by the rebuild of the norm output, so even when the norm is not recorded.
  if (k.input || (recompute && k.norm1)) bytes += nd + (k.input ? buf(n) : 0);
  if (k.norm1 && !recompute) bytes += nd;
  if (k.attention) bytes += buf(n * dq) + 2 * buf(n * dkv) + buf(n * c.numAttentionHeads);
  if (k.attnOut) bytes += buf(n * dq);
  if (k.mid) bytes += nd + buf(n); // x' and its norm's rstd
  if (k.norm2 && !recompute) bytes += nd;
  if (k.swiglu) bytes += buf(n * f) * (k.up ? 2 : 1);
  if (k.act && !recompute) bytes += buf(n * f);
  bytes += k.loraProducts * buf(n * (s.lora?.r ?? 0));
  return bytes;
}

/** Estimated pool peak of one training step (forward + backward + optimizer) for these shapes. */
export function estimateTrainingMemory(s: TrainingMemoryShape): TrainingMemoryEstimate {
  const c = s.config;
  const layers = c.numHiddenLayers;
  const n = s.batchSize * s.seqLen;
  const { hiddenSize: d, intermediateSize: f, vocabSize: v } = c;
  const nd = buf(n * d);
  const p = persistent(s);

  const keeps: LayerKeep[] = [];
  let grad = false; // the embedding output needs no gradient (frozen table)
  for (let l = 0; l < layers; l++) {
    keeps.push(layerKeeps(s, grad));
    grad = keeps[l]!.outGrad;
  }
  const lossGrad = grad;
  const recompute = s.checkpointing === 'selective';
  const layerSaved = keeps.map((k) => layerBytes(s, k, recompute));
  // Batch tensors (ids, positions, segments) and what the head keeps: x_L and rstd (final norm),
  // h (fused loss), row indices, labels, lse, count.
  const batch = 3 * buf(n, 'i32');
  const headSaved = (lossGrad ? nd + buf(n) + nd : 0) + 4 * buf(n) + buf(1);
  const chunk = lossChunkRows(n, v, s.maxBindingBytes ?? Infinity);
  // Head backward: dh, the chunk's rows, its logits (turned into dlogits in place), its dh rows.
  const headWork = lossGrad ? nd + 2 * buf(chunk * d) + buf(chunk * v) : buf(chunk * d) + buf(chunk * v);
  // MLP backward: incoming residual gradient, dAct, then dGate and dUp while dAct is alive.
  const mlpWork = nd + 3 * buf(n * f);
  const loraGradsPerLayer = p.adapters / Math.max(layers, 1);
  // By a layer's swiglu backward only the down projection's LoRA gradients of that layer exist
  // (all of them from the second micro-batch of an accumulated step on).
  const downGrads = s.lora?.targetModules.includes('down_proj') ? buf(s.lora.r * f) + buf(d * s.lora.r) : 0;
  const heldGrads = s.accumulating ? p.adapters : 0;

  let activations: number;
  let workspace: number;
  if (s.checkpointing !== 'full') {
    const all = layerSaved.reduce((a, b) => a + b, 0);
    const last = keeps[layers - 1]!;
    // In the last layer's MLP backward its act (kept or rebuilt) is gone and the head is done.
    const lastAct = last.act ? buf(n * f) : 0;
    const atHead = all + headSaved + headWork + heldGrads;
    const atMlp = all - (recompute ? 0 : lastAct) + mlpWork + Math.max(downGrads, heldGrads);
    activations = all + headSaved;
    workspace = Math.max(atHead, atMlp) - activations;
  } else {
    // Each recorded layer keeps its input; backward re-runs one layer at a time and keeps what that
    // layer would keep without checkpointing, while the LoRA gradients of the later layers exist.
    const inputs = keeps.map((k) => (k.input || (s.lora?.targetModules.length ?? 0) > 0 ? nd : 0));
    const allInputs = inputs.reduce((a, b) => a + b, 0);
    const atHead = allInputs + headSaved + headWork + heldGrads;
    let atLayer = 0;
    for (let l = 0; l < layers; l++) {
      const before = inputs.slice(0, l + 1).reduce((a, b) => a + b, 0);
      // The re-run keeps what the layer keeps without checkpointing, and its output; its act is
      // gone by the MLP backward.
      const rerun = layerBytes(s, keeps[l]!, false) - (keeps[l]!.act ? buf(n * f) : 0) + nd;
      const laterGrads = Math.max((layers - l - 1) * loraGradsPerLayer + downGrads, heldGrads);
      atLayer = Math.max(atLayer, before + rerun + mlpWork + laterGrads);
    }
    activations = allInputs + headSaved;
    workspace = Math.max(atHead, atLayer) - activations;
  }
  // After backward: every LoRA gradient at once for clipping and the AdamW update.
  workspace = Math.max(workspace, p.adapters - activations);
  activations += batch;
  const total = p.weights + p.adapters + p.optimizer + p.ropeTables + activations + workspace;
  const perLayer = s.checkpointing === 'full' ? nd : layerSaved[layers - 1]!;
  return { ...p, activations, workspace, total, activationsPerTokenPerLayer: perLayer / n, lossChunkRows: chunk };
}
