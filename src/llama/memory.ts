// Memory model of a training step: the engine pool's peak for given shapes, before anything is
// allocated. Every term mirrors a buffer the code makes, rounded to the pool's size class:
//
//   persistent  weights (dense f32/bf16/f16 or NF4 codes + absmax), LoRA A/B, AdamW moments (flat
//               chunks, kernels/optim.ts), RoPE tables
//   activations what the forward keeps for backward (see decoder-layer.ts): per layer, per mode
//   gradients   the trainable parameters' .grad (LoRA A/B, or every weight under full training)
//   workspace   what is alive on top of that at the step's peak: activation gradients, the fused
//               loss head's chunk, dW before it is added to .grad, a re-run layer's temporaries
//
// Shapes: B rows of T tokens (N = B·T), D hidden, Dq = Hq·Dh, Dkv = Hkv·Dh, F MLP, V vocabulary,
// L layers, r LoRA rank.
//
// Precision: under fp16-mixed the GEMM inputs kept for backward (the norm outputs, the attention
// output, the SwiGLU output, LoRA's u; kernels/activations.ts), attention's q, k, v and SwiGLU's
// gate, up are 2 bytes per element; the residual stream (the norms' inputs), the norms' rstd,
// attention's lse, every gradient and the weights' f32 parts are 4 as in fp32. The f32 originals
// of the f16 tensors live only through their stage of the layer's forward.
//
// LoRA (method 'lora'): the gradients are small, so the peak is where the most activations meet
// the largest backward temporaries: the loss head's backward, the last layer's MLP backward, or
// under full checkpointing a layer's re-run; closed forms for each, the largest wins.
// Full training (method 'full'): every weight is an f32 leaf, so each linear layer's backward also
// makes dW = dYᵀ·X, copies it into a new .grad (or adds it to the existing one), and the
// gradients pile up layer by layer while the activations are freed: the peak can be anywhere from
// the loss head (large vocabulary) to the embedding's backward (large weights, small batch). The
// step is replayed buffer by buffer in the order the autograd engine runs it (fullTrainingPeak),
// and the largest live set is the estimate. Tests check both against the measured pool peak.
import type { Precision } from '../engine/precision.js';
import { BufferPool, storageBytes, type DType } from '../engine/tensor.js';
import { NF4_BLOCK, NF4_DQ_BLOCK, lossChunkRows } from '../kernels/index.js';
import type { LlamaConfig } from './config.js';
import type { CheckpointMode } from './ops.js';
import { LINEAR_MODULES, expectedTensors, linearShape, type LinearModule } from './weights.js';

export interface TrainingMemoryShape {
  config: LlamaConfig;
  batchSize: number;
  seqLen: number;
  /**
   * What the step trains: LoRA adapters on the frozen base (default), or every weight ('full': f32
   * master weights, so quantize 'none' and storage 'f32'; `lora` is ignored).
   */
  method?: 'lora' | 'full';
  /** NF4 for the decoder linear layers (QLoRA) or dense at `storage`. */
  quantize: 'nf4' | 'none';
  storage: 'f32' | 'bf16' | 'f16';
  doubleQuant?: boolean;
  /** LoRA rank and the modules it targets (null: no adapter). */
  lora: { r: number; targetModules: readonly LinearModule[] } | null;
  checkpointing: CheckpointMode;
  /** The device's largest storage binding (optimizer state chunks, loss chunk); default 128 MiB. */
  maxBindingBytes?: number;
  /**
   * Gradient accumulation (more than one micro-batch per step): from the second micro-batch on,
   * every trainable gradient exists throughout, and new ones are added to them in place.
   */
  accumulating?: boolean;
  /** The compute precision (default fp32): fp16-mixed keeps GEMM inputs and attention's q/k/v in f16. */
  precision?: Precision;
}

export interface TrainingMemoryEstimate {
  weights: number;
  /** LoRA A and B. */
  adapters: number;
  /** AdamW moments (m and v). */
  optimizer: number;
  /** RoPE cos/sin tables. */
  ropeTables: number;
  /** Activations alive at the peak: kept (or rebuilt) for backward, and the batch's token ids. */
  activations: number;
  /** Parameter gradients (.grad) alive at the peak. */
  gradients: number;
  /** Everything else alive at the peak (activation gradients, loss chunk, dW, re-run temporaries). */
  workspace: number;
  /** The estimated pool peak: the sum of the above. */
  total: number;
  /** Kept activation bytes per token per layer (for the printout). */
  activationsPerTokenPerLayer: number;
  /** Rows per chunk of the fused loss head. */
  lossChunkRows: number;
  /** When in the step the peak is (e.g. "the loss head's backward", "layer 3's backward", "the embedding's backward"). */
  peakAt: string;
}

const cls = (bytes: number): number => BufferPool.sizeClass(Math.max(4, bytes));
/** Pool bytes of one tensor of `numel` elements of `dtype`. */
const buf = (numel: number, dtype: DType = 'f32'): number => cls(storageBytes(dtype, numel));
/** Pool bytes of a GEMM input or attention input kept for backward: f16 under fp16-mixed, else f32. */
const kept = (s: TrainingMemoryShape, numel: number): number => buf(numel, s.precision === 'fp16-mixed' ? 'f16' : 'f32');

/** Pool bytes of a decoder linear weight as loaded (weights.ts, kernels/nf4.ts). */
function linearWeightBytes(numel: number, s: TrainingMemoryShape): number {
  if (s.quantize !== 'nf4') return buf(numel, s.storage);
  const blocks = Math.ceil(numel / NF4_BLOCK);
  const codes = cls(Math.ceil(numel / 8) * 4);
  if (!s.doubleQuant) return codes + buf(blocks);
  return codes + cls(Math.ceil(blocks / 4) * 4) + buf(Math.ceil(blocks / NF4_DQ_BLOCK)) + buf(1);
}

/** Element counts of the trainable parameters in the optimizer's order (model.ts trainableParameters). */
function trainableNumels(s: TrainingMemoryShape): number[] {
  const c = s.config;
  // Full training: every weight in HF order, tied embeddings once (weights.ts namedWeights).
  if (s.method === 'full') return [...expectedTensors(c).values()].map((shape) => shape.reduce((a, b) => a * b, 1));
  const out: number[] = [];
  if (!s.lora) return out;
  for (let l = 0; l < c.numHiddenLayers; l++) {
    for (const mod of LINEAR_MODULES) {
      if (!s.lora.targetModules.includes(mod)) continue;
      const [o, inF] = linearShape(c, mod);
      out.push(s.lora.r * inF, o * s.lora.r);
    }
  }
  return out;
}

function persistent(s: TrainingMemoryShape): { weights: number; adapters: number; optimizer: number; ropeTables: number } {
  const c = s.config;
  const { hiddenSize: d, vocabSize: v, numHiddenLayers: layers } = c;
  let weights = buf(v * d, s.storage) * (c.tieWordEmbeddings ? 1 : 2) + buf(d) * (2 * layers + 1);
  for (const mod of LINEAR_MODULES) {
    const [out, inF] = linearShape(c, mod);
    weights += layers * linearWeightBytes(out * inF, s);
  }
  const trainable = trainableNumels(s);
  const adapters = s.method === 'full' ? 0 : trainable.reduce((a, k) => a + buf(k), 0);
  // AdamW packs m and v of consecutive parameters into chunks of ≤ one binding (kernels/optim.ts).
  const maxHalf = Math.floor((s.maxBindingBytes ?? 128 * 2 ** 20) / 8);
  let optimizer = 0;
  let n = 0;
  for (const k of trainable) {
    if (n > 0 && n + k > maxHalf) {
      optimizer += buf(2 * n);
      n = 0;
    }
    n += k;
  }
  if (trainable.length > 0) optimizer += buf(2 * Math.max(n, 1));
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
  // its weight for dX, so linear() and nf4Linear() keep no input.
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
  if (k.norm1 && !recompute) bytes += kept(s, n * d);
  if (k.attention) bytes += kept(s, n * dq) + 2 * kept(s, n * dkv) + buf(n * c.numAttentionHeads);
  // The attention output: kept by attention's backward (for D) and o_proj's (as its input), one copy.
  if (k.attnOut) bytes += kept(s, n * dq);
  if (k.mid) bytes += nd + buf(n); // x' and its norm's rstd
  if (k.norm2 && !recompute) bytes += kept(s, n * d);
  if (k.swiglu) bytes += kept(s, n * f) * (k.up ? 2 : 1);
  if (k.act && !recompute) bytes += kept(s, n * f);
  bytes += k.loraProducts * kept(s, n * (s.lora?.r ?? 0));
  return bytes;
}

/** The bytes alive at one point of the step, by what they hold (persistent bytes excluded). */
interface LiveSet {
  activations: number;
  gradients: number;
  workspace: number;
  /** Where in the step this is. */
  at: string;
}

const liveBytes = (p: LiveSet): number => p.activations + p.gradients + p.workspace;
const largest = (sets: LiveSet[]): LiveSet => sets.reduce((a, b) => (liveBytes(b) > liveBytes(a) ? b : a));

/** The LoRA step's candidate peaks (closed forms; see the header). */
function loraPeak(s: TrainingMemoryShape, p: ReturnType<typeof persistent>, keeps: LayerKeep[], headSaved: number, headWork: number): LiveSet[] {
  const c = s.config;
  const layers = c.numHiddenLayers;
  const n = s.batchSize * s.seqLen;
  const { hiddenSize: d, intermediateSize: f } = c;
  const nd = buf(n * d);
  const recompute = s.checkpointing === 'selective';
  const layerSaved = keeps.map((k) => layerBytes(s, k, recompute));
  // MLP backward: incoming residual gradient, dAct, then dGate and dUp while dAct is alive.
  const mlpWork = nd + 3 * buf(n * f);
  const loraGradsPerLayer = p.adapters / Math.max(layers, 1);
  // By a layer's swiglu backward only the down projection's LoRA gradients of that layer exist
  // (all of them from the second micro-batch of an accumulated step on).
  const downGrads = s.lora?.targetModules.includes('down_proj') ? buf(s.lora.r * f) + buf(d * s.lora.r) : 0;
  const heldGrads = s.accumulating ? p.adapters : 0;
  // After backward: every LoRA gradient at once for clipping and the AdamW update.
  const sets: LiveSet[] = [{ activations: 0, gradients: p.adapters, workspace: 0, at: 'the optimizer step' }];
  if (s.checkpointing !== 'full') {
    const all = layerSaved.reduce((a, b) => a + b, 0);
    const last = keeps[layers - 1]!;
    // In the last layer's MLP backward its act (kept or rebuilt) is gone and the head is done.
    const lastAct = last.act && !recompute ? kept(s, n * f) : 0;
    sets.push({ activations: all + headSaved, gradients: heldGrads, workspace: headWork, at: "the loss head's backward" });
    sets.push({ activations: all - lastAct, gradients: Math.max(downGrads, heldGrads), workspace: mlpWork, at: `layer ${layers - 1}'s backward` });
  } else {
    // Each recorded layer keeps its input; backward re-runs one layer at a time and keeps what that
    // layer would keep without checkpointing, while the LoRA gradients of the later layers exist.
    const inputs = keeps.map((k) => (k.input || (s.lora?.targetModules.length ?? 0) > 0 ? nd : 0));
    const allInputs = inputs.reduce((a, b) => a + b, 0);
    sets.push({ activations: allInputs + headSaved, gradients: heldGrads, workspace: headWork, at: "the loss head's backward" });
    for (let l = 0; l < layers; l++) {
      const before = inputs.slice(0, l + 1).reduce((a, b) => a + b, 0);
      // The re-run keeps what the layer keeps without checkpointing, and its output; its act is
      // gone by the MLP backward.
      const rerun = layerBytes(s, keeps[l]!, false) - (keeps[l]!.act ? kept(s, n * f) : 0) + nd;
      const laterGrads = Math.max((layers - l - 1) * loraGradsPerLayer + downGrads, heldGrads);
      sets.push({ activations: before + rerun, gradients: laterGrads, workspace: mlpWork, at: `layer ${l}'s backward (re-run)` });
    }
  }
  return sets;
}

/** Pool bytes alive through a replayed sequence of allocations and frees, and the largest set. */
class Ledger {
  private live: LiveSet = { activations: 0, gradients: 0, workspace: 0, at: '' };
  peak: LiveSet = { ...this.live };
  /** Where the allocations that follow happen. */
  at = '';
  alloc(kind: Exclude<keyof LiveSet, 'at'>, bytes: number): void {
    this.live[kind] += bytes;
    if (liveBytes(this.live) > liveBytes(this.peak)) this.peak = { ...this.live, at: this.at };
  }
  free(kind: Exclude<keyof LiveSet, 'at'>, bytes: number): void {
    this.live[kind] -= bytes;
  }
}

/**
 * The largest live set of a full-training step, replayed buffer by buffer in the order the engine
 * runs it: the forward (each layer keeps what decoderLayer's ops save), the fused loss head, the
 * final norm, each layer's backward in reverse (model.ts runs autograd in reverse topological
 * order: the MLP block, then attention), the embedding's scatter-add. Every weight's backward
 * allocates dW and then either copies it into a new .grad (first micro-batch) or adds it to the
 * existing one (later micro-batches of an accumulated step, where every .grad exists from the
 * start). Under selective checkpointing the norm outputs and the SwiGLU output are rebuilt just
 * before their first reader in backward and freed after their last; under full checkpointing each
 * layer keeps its input and is re-run (with its output) before its backward.
 */
function fullTrainingPeak(s: TrainingMemoryShape, headSaved: number, chunk: number): LiveSet {
  const c = s.config;
  const L = c.numHiddenLayers;
  const n = s.batchSize * s.seqLen;
  const { hiddenSize: d, intermediateSize: f, vocabSize: v } = c;
  const dq = c.numAttentionHeads * c.headDim;
  const dkv = c.numKeyValueHeads * c.headDim;
  const [nd, nq, nkv, nf, rstd, lse] = [buf(n * d), buf(n * dq), buf(n * dkv), buf(n * f), buf(n), buf(n * c.numAttentionHeads)];
  const vd = buf(v * d);
  const mode = s.checkpointing;
  const held = s.accumulating === true;
  const led = new Ledger();
  if (held) led.alloc('gradients', trainableNumels(s).reduce((a, k) => a + buf(k), 0));
  /** dW of a weight of `numel` elements, then into .grad: a new copy, or added in place. */
  const weightGrad = (numel: number) => {
    led.alloc('workspace', buf(numel));
    if (!held) led.alloc('gradients', buf(numel));
    led.free('workspace', buf(numel));
  };
  const linearGrad = (m: LinearModule) => weightGrad(linearShape(c, m).reduce((a, b) => a * b, 1));
  // What a layer keeps for backward besides its input x (the previous layer's output): always the
  // first norm's rstd, q and k (rotated), v, the attention output and its lse, x' and its rstd,
  // gate and up; the norm outputs h1, h2 and the SwiGLU output only without checkpointing (under
  // selective they are rebuilt in backward). Full checkpointing keeps x alone and re-runs the rest.
  // Under fp16-mixed q, k, v, the attention output, gate, up and the kept h1, h2, SwiGLU output
  // are f16 (hq, hkv, hf, hd) made from f32 originals that live only through their stage of the layer.
  const half = s.precision === 'fp16-mixed';
  const selective = mode === 'selective';
  const [hd, hq, hkv, hf] = [kept(s, n * d), kept(s, n * dq), kept(s, n * dkv), kept(s, n * f)];
  // h1, h2 and the SwiGLU output: kept (f16 copies or the f32 tensors themselves) unless selective;
  // their f32 originals are stage temporaries under fp16-mixed or selective checkpointing.
  const [normKept, actKept] = selective ? [0, 0] : [hd, hf];
  const [normScoped, actScoped] = half || selective ? [nd, nf] : [0, 0];
  // Under fp16-mixed v, the attention output, gate and up are f16 too: their f32 originals are temporaries.
  const [vScoped, outScoped, gateUpScoped] = half ? [nkv, nq, 2 * nf] : [0, 0, 0];
  const keptByLayer = rstd + normKept + hq + 2 * hkv + hq + lse + nd + rstd + normKept + 2 * hf + actKept;
  // h1, h2 and the SwiGLU output as backward reads them: rebuilt in f32 (selective) or kept.
  const [h1, act] = selective ? [nd, nf] : [hd, hf];
  /**
   * A layer's forward, stage by stage as decoder-layer.ts scopes it: each stage's temporaries are
   * freed when it ends; the layer's output (the next layer's input, or x_L) stays.
   */
  const layerForward = () => {
    // rmsnorm, the q/k/v projections, RoPE (q, k) and v's cast: q and k before RoPE are temporaries.
    led.alloc('activations', rstd + normKept + hq + 2 * hkv);
    led.alloc('workspace', normScoped + nq + nkv + vScoped);
    led.free('workspace', normScoped + nq + nkv + vScoped);
    // Attention, o_proj (its input freed after it), the residual add: x' and its norm's rstd.
    led.alloc('activations', hq + lse);
    led.alloc('workspace', outScoped + nd);
    led.free('workspace', outScoped);
    led.alloc('activations', nd + rstd);
    led.free('workspace', nd);
    // rmsnorm, gate/up (h2 freed after them); SwiGLU, down_proj (its input freed after it); the add.
    led.alloc('activations', normKept + 2 * hf);
    led.alloc('workspace', normScoped + gateUpScoped);
    led.free('workspace', normScoped + gateUpScoped);
    led.alloc('activations', actKept);
    led.alloc('workspace', actScoped + nd);
    led.free('workspace', actScoped);
    led.alloc('activations', nd);
    led.free('workspace', nd);
  };

  led.at = 'the forward';
  led.alloc('activations', 3 * buf(n, 'i32') + nd); // ids, positions, segments; the embedding output
  for (let l = 0; l < L; l++) {
    // The layer, then its output (the next layer's input, or x_L kept by the final norm).
    layerForward();
    if (mode === 'full') led.free('activations', keptByLayer);
  }
  // The head keeps h, the final norm's rstd, the labelled rows' indices, labels, lse and count
  // (headSaved counts x_L too, allocated above); the loss chunk is recomputed in backward.
  led.at = "the loss head's forward";
  led.alloc('activations', headSaved - nd);
  led.alloc('workspace', buf(chunk * d) + buf(chunk * v));
  led.free('workspace', buf(chunk * d) + buf(chunk * v));

  // Fused head backward, per chunk: the chunk's rows, its logits turned into dlogits, dh rows
  // (scattered into dh), then dW += dlogitsᵀ·rows through a [V, D] product.
  led.at = "the loss head's backward";
  led.alloc('workspace', nd + vd); // dh, dW
  led.alloc('workspace', buf(chunk * d) + buf(chunk * v));
  led.alloc('workspace', buf(chunk * d));
  led.free('workspace', buf(chunk * d));
  led.alloc('workspace', vd);
  led.free('workspace', vd + buf(chunk * d) + buf(chunk * v));
  if (!held) led.alloc('gradients', vd); // the LM head's (or the tied embedding's) .grad
  led.free('activations', headSaved - nd - rstd); // h, rows, labels, lse, count
  led.free('workspace', vd);

  led.at = "the final norm's backward";
  led.alloc('workspace', nd); // dx: the residual stream's gradient from here down
  weightGrad(d);
  led.free('activations', nd + rstd); // x_L
  led.free('workspace', nd); // dh

  for (let l = L - 1; l >= 0; l--) {
    led.at = `layer ${l}'s backward`;
    if (mode === 'full') {
      // The re-run: the layer's kept tensors, its temporaries until its scope ends, and its output.
      layerForward();
    }
    const rebuilt = (bytes: number) => (mode === 'selective' ? led.alloc('activations', bytes) : undefined);
    // MLP block. The residual add hands its gradient to x' and a copy to the down projection.
    led.alloc('workspace', nd);
    rebuilt(nf); // SwiGLU output
    led.alloc('workspace', nf); // dAct
    linearGrad('down_proj');
    led.free('activations', act);
    led.free('workspace', nd);
    led.alloc('workspace', 2 * nf); // dGate, dUp
    led.free('activations', 2 * hf); // gate, up
    led.free('workspace', nf); // dAct
    rebuilt(nd); // h2
    led.alloc('workspace', nd); // dh2 (from up_proj)
    linearGrad('up_proj');
    led.free('workspace', nf); // dUp
    led.alloc('workspace', nd); // gate_proj's dx, added to dh2
    linearGrad('gate_proj');
    led.free('activations', h1); // h2 (its size)
    led.free('workspace', nf + nd); // dGate, gate_proj's dx
    led.alloc('workspace', nd); // dx'
    weightGrad(d);
    led.free('activations', nd + rstd); // x'
    led.free('workspace', 2 * nd); // dh2, dx' (added to the residual gradient)
    // Attention block. Under full checkpointing the layer's input is the re-run's leaf: its
    // gradient is a new buffer, and the o projection reads the residual gradient itself.
    led.alloc('workspace', nd);
    led.alloc('workspace', nq); // o_proj's dx
    linearGrad('o_proj');
    if (mode !== 'full') led.free('workspace', nd);
    led.alloc('workspace', lse); // rowsum(dO·O), shaped like lse
    led.alloc('workspace', nq + 2 * nkv); // dq, dk, dv
    led.free('workspace', lse);
    led.free('activations', hq + 2 * hkv + hq + lse); // q, k, v, attention output and lse
    led.free('workspace', nq);
    rebuilt(nd); // h1
    led.alloc('workspace', nd); // dh1 (from v_proj)
    linearGrad('v_proj');
    led.free('workspace', nkv); // dv
    led.alloc('workspace', nkv); // RoPE backward of dk
    led.free('workspace', nkv);
    led.alloc('workspace', nd);
    linearGrad('k_proj');
    led.free('workspace', nkv + nd);
    led.alloc('workspace', nq); // RoPE backward of dq
    led.free('workspace', nq);
    led.alloc('workspace', nd);
    linearGrad('q_proj');
    led.free('activations', h1); // h1
    led.free('workspace', nq + nd);
    led.alloc('workspace', nd); // dx
    weightGrad(d);
    led.free('activations', nd + rstd); // the input and rstd
    led.free('workspace', 2 * nd); // dh1, dx
    if (mode === 'full') {
      led.free('activations', nd); // the re-run's output
      led.free('workspace', nd); // the outer residual gradient: the leaf's gradient replaces it
    }
  }
  // The embedding's backward scatter-adds into a zeroed [V, D] through [2N] row links; untied, it
  // becomes the embedding's .grad (tied: added to the LM head's).
  led.at = "the embedding's backward";
  led.alloc('workspace', vd + buf(2 * n, 'u32'));
  led.free('workspace', buf(2 * n, 'u32'));
  if (!held && !c.tieWordEmbeddings) led.alloc('gradients', vd);
  return led.peak;
}

/** Estimated pool peak of one training step (forward + backward + optimizer) for these shapes. */
export function estimateTrainingMemory(shape: TrainingMemoryShape): TrainingMemoryEstimate {
  const full = shape.method === 'full';
  if (full && (shape.quantize !== 'none' || shape.storage !== 'f32')) {
    throw new RangeError(`full training keeps f32 master weights: quantize must be 'none' and storage 'f32' (got ${shape.quantize}, ${shape.storage})`);
  }
  const s: TrainingMemoryShape = full ? { ...shape, lora: null } : shape;
  const c = s.config;
  const layers = c.numHiddenLayers;
  const n = s.batchSize * s.seqLen;
  const { hiddenSize: d, vocabSize: v } = c;
  const nd = buf(n * d);
  const p = persistent(s);

  const keeps: LayerKeep[] = [];
  let grad = full; // the embedding output needs a gradient only when the table is trained
  for (let l = 0; l < layers; l++) {
    keeps.push(layerKeeps(s, grad));
    grad = keeps[l]!.outGrad;
  }
  const lossGrad = grad;
  // What the head keeps: x_L and rstd (final norm), h (fused loss), row indices, labels, lse, count.
  const headSaved = (lossGrad ? nd + buf(n) + nd : 0) + 4 * buf(n) + buf(1);
  const chunk = lossChunkRows(n, v, s.maxBindingBytes ?? Infinity);
  // Head backward: dh, the chunk's rows, its logits (turned into dlogits in place), its dh rows.
  const headWork = lossGrad ? nd + 2 * buf(chunk * d) + buf(chunk * v) : buf(chunk * d) + buf(chunk * v);

  let peak: LiveSet;
  if (full) peak = fullTrainingPeak(s, headSaved, chunk);
  else {
    peak = largest(loraPeak(s, p, keeps, headSaved, headWork));
    peak = { ...peak, activations: peak.activations + 3 * buf(n, 'i32') }; // the batch: ids, positions, segments
  }
  const recompute = s.checkpointing === 'selective';
  const perLayer = s.checkpointing === 'full' ? nd : layerBytes(s, keeps[layers - 1]!, recompute);
  const { activations, gradients, workspace } = peak;
  const total = p.weights + p.adapters + p.optimizer + p.ropeTables + activations + gradients + workspace;
  return { ...p, activations, gradients, workspace, total, activationsPerTokenPerLayer: perLayer / n, lossChunkRows: chunk, peakAt: peak.at };
}
