// The memory of a training run: the estimate of one step's pool peak, printed before the first
// step next to the device's memory, `training.batch_size: auto`, and the out-of-memory message that
// says what to change.
//
// The estimate is not a model of the code but a run of it: the model (empty weights of the right
// shapes and dtypes, NF4-quantized where configured), the training method's trainable parameters and
// AdamW (TrainingMethod.attach, LoRA leaves without values), and one step (each micro-batch's forward
// and backward, the gradient norm, the update: step.ts, as trainStep records it) run on an engine
// over a MetaDevice (src/engine/meta-device.ts): no GPU memory is allocated, no WGSL is generated or
// compiled, nothing is dispatched, and the engine's pool counts every buffer the code makes, in the
// pool's size classes. The live peak of that pool is the estimate; a kernel that changes what it
// saves changes the estimate with it.
import { backward, releaseOnError, zeroGrad } from '../../engine/autograd.js';
import { BindingTooLargeError, BufferTooLargeError, type Device, OutOfMemoryError } from '../../engine/device.js';
import type { DeviceMemory } from '../../engine/device-memory.js';
import { MetaDevice } from '../../engine/meta-device.js';
import { type Precision, resolvePrecision, withPrecision } from '../../engine/precision.js';
import { Rng } from '../../engine/random.js';
import { BufferPool, Engine, engine, type Tensor, tidy, withEngine } from '../../engine/tensor.js';
import { InputError, RuntimeFailure } from '../../errors.js';
import { lossChunkRows } from '../../kernels/index.js';
import type { AdamW } from '../../kernels/optim.js';
import type { LlamaConfig } from '../../llama/config.js';
import { CHECKPOINT_MODES, type CheckpointMode, LlamaModel, shiftLabels } from '../../llama/model.js';
import { emptyLlamaWeights, type LinearModule } from '../../llama/weights.js';
import type { ResolvedConfig } from '../config.js';
import type { Batch } from '../data/index.js';
import { wholeRowsBatch } from '../data/loader.js';
import { formatBytes } from './logging.js';
import { TRAINING_METHODS } from './methods.js';
import { applyUpdate, recordStep } from './step.js';

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
  /** LoRA rank and the modules it targets (null: no adapter); its dropout (default 0). */
  lora: { r: number; targetModules: readonly LinearModule[]; dropout?: number } | null;
  checkpointing: CheckpointMode;
  /** The device's largest storage binding (optimizer state chunks, loss chunk); default the engine device's. */
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
  /** At the peak: what a forward made that is still alive (kept for backward), the batch's token ids included. */
  activations: number;
  /** Parameter gradients (.grad) alive at the peak. */
  gradients: number;
  /** Everything else alive at the peak (activation gradients, loss chunks, dW, re-run layers, the update's temporaries). */
  workspace: number;
  /** The estimated pool peak: the sum of the above. */
  total: number;
  /** What one decoder layer's forward keeps for backward, per token (for the printout). */
  activationsPerTokenPerLayer: number;
  /** Rows per chunk of the fused loss head. */
  lossChunkRows: number;
  /**
   * When in the step the peak is: the forward, the backward of an op (e.g. "the backward
   * (linearCrossEntropy)", the fused loss head's), or the optimizer step; "micro-batch 2's ..." under
   * gradient accumulation.
   */
  peakAt: string;
  /**
   * Set when the device refuses one of the step's buffers or bindings (above its maxBufferSize or
   * maxStorageBufferBindingSize: the message of its BufferTooLargeError or BindingTooLargeError).
   * The step cannot run with any amount of memory: `total` is Infinity.
   */
  refused?: string;
}

type Phase = 'setup' | 'forward' | 'backward' | 'update';

/**
 * The meta engine's pool: the plain pool's accounting (size classes, reuse of freed buffers, the
 * peak), and at each new peak what the live bytes were: those made by a forward, and the gradients.
 */
class CountingPool extends BufferPool {
  phase: Phase = 'setup';
  /** Where in the step the allocations that follow happen. */
  at = '';
  /** The trainable parameters, whose .grad are the gradients. */
  params: Tensor[] = [];
  atPeak = { forward: 0, gradients: 0, at: '' };
  private readonly madeIn = new WeakMap<GPUBuffer, Phase>();
  private readonly live: Record<Phase, number> = { setup: 0, forward: 0, backward: 0, update: 0 };

  override acquire(bytes: number): GPUBuffer {
    const peak = this.peakBytes;
    const buf = super.acquire(bytes);
    this.madeIn.set(buf, this.phase);
    this.live[this.phase] += buf.size;
    if (this.peakBytes > peak) {
      let gradients = 0;
      for (const p of this.params) if (p.grad && !p.grad.disposed) gradients += p.grad.buffer.size;
      this.atPeak = { forward: this.live.forward, gradients, at: this.at };
    }
    return buf;
  }

  override release(buf: GPUBuffer): void {
    this.live[this.madeIn.get(buf)!] -= buf.size;
    super.release(buf);
  }
}

/** A batch of `batchSize` rows of `seqLen` tokens, every position but each row's last labelled (as the trainer's batches, unpacked). */
function countingBatch(batchSize: number, seqLen: number): Batch {
  return wholeRowsBatch(new Int32Array(batchSize * seqLen), batchSize, seqLen);
}

/** An engine over a MetaDevice standing in for the engine's device, with a counting pool. */
function metaEngine(s: TrainingMemoryShape): { meta: Engine; pool: CountingPool } {
  const real: Device = engine().dev;
  const dev = new MetaDevice(
    real,
    s.maxBindingBytes !== undefined ? { maxStorageBufferBindingSize: s.maxBindingBytes } : {},
  );
  const pool = new CountingPool(dev);
  return { meta: new Engine(dev, { memory: null, pool }), pool };
}

/** The model of `s` on the current (meta) engine: empty weights of its shapes and dtypes. */
function countingModel(s: TrainingMemoryShape, config: LlamaConfig): LlamaModel {
  return new LlamaModel(
    config,
    emptyLlamaWeights(config, {
      storage: s.storage,
      quantize: s.quantize === 'nf4' ? 'nf4' : null,
      doubleQuant: s.doubleQuant ?? false,
    }),
  );
}

/** The method's trainable parameters (value-less LoRA leaves, or every weight) and AdamW, attached to `model`. */
function attachCounted(s: TrainingMemoryShape, model: LlamaModel): AdamW {
  const lora = s.lora && {
    r: s.lora.r,
    loraAlpha: 2 * s.lora.r,
    loraDropout: s.lora.dropout ?? 0,
    targetModules: [...s.lora.targetModules],
  };
  return TRAINING_METHODS[s.method ?? 'lora'].attach(model, { lora, seed: null });
}

/**
 * What one decoder layer's forward keeps for backward: `kept` (what a recorded forward, model.loss,
 * keeps with `s.config`'s layers) less what it keeps with one layer fewer, counted here.
 */
function keptByOneLayer(s: TrainingMemoryShape, kept: number): number {
  const layers = s.config.numHiddenLayers;
  if (layers === 0) return 0;
  const { meta, pool } = metaEngine(s);
  const fewer = withEngine(meta, () =>
    withPrecision(s.precision ?? 'fp32', () => {
      const model = countingModel(s, { ...s.config, numHiddenLayers: layers - 1 });
      attachCounted(s, model);
      model.ropeFor(s.seqLen - 1);
      model.training = true;
      const before = pool.liveBytes;
      return tidy(() => {
        model.loss(countingBatch(s.batchSize, s.seqLen), { gradientCheckpointing: s.checkpointing });
        return pool.liveBytes - before;
      });
    }),
  );
  return kept - fewer;
}

/**
 * Estimated pool peak of one training step (forward + backward + optimizer) for these shapes: the
 * step run on a MetaDevice standing in for the engine's device (see the header), counted. Needs
 * an initialized engine (its device's features and limits choose the kernels); allocates nothing
 * on it and records no GPU work.
 */
export function estimateTrainingMemory(shape: TrainingMemoryShape): TrainingMemoryEstimate {
  // The planning functions below ask for the same shapes again (the advice's alternatives, the
  // printout's other modes): each is counted once per device.
  const dev = engine().dev;
  let known = estimates.get(dev);
  if (!known) estimates.set(dev, (known = new Map()));
  const key = JSON.stringify(shape);
  const hit = known.get(key);
  if (hit) return hit;
  const e = countStepOrRefusal(shape);
  if (known.size >= 256) known.clear();
  known.set(key, e);
  return e;
}

/**
 * countStep, or for a step with a buffer or a binding the device refuses (BufferTooLargeError,
 * BindingTooLargeError) an estimate whose total is Infinity.
 */
function countStepOrRefusal(shape: TrainingMemoryShape): TrainingMemoryEstimate {
  try {
    return countStep(shape);
  } catch (err) {
    if (!(err instanceof BufferTooLargeError || err instanceof BindingTooLargeError)) throw err;
    const n = shape.batchSize * shape.seqLen;
    const maxBinding = shape.maxBindingBytes ?? engine().dev.limits.maxStorageBufferBindingSize;
    return {
      ...{ weights: 0, adapters: 0, optimizer: 0, ropeTables: 0, activations: 0, gradients: 0, workspace: 0 },
      total: Number.POSITIVE_INFINITY,
      activationsPerTokenPerLayer: 0,
      lossChunkRows: lossChunkRows(n, shape.config.vocabSize, maxBinding),
      peakAt: '',
      refused: err.message,
    };
  }
}

/** An estimate's total in a message: its bytes, or that the device refuses one of its buffers. */
function formatTotal(total: number): string {
  return Number.isFinite(total)
    ? formatBytes(total)
    : 'more than the device allows (a buffer above its maxBufferSize or a binding above its maxStorageBufferBindingSize)';
}

/** Estimates made, per device and shape. */
const estimates = new WeakMap<Device, Map<string, TrainingMemoryEstimate>>();

function countStep(shape: TrainingMemoryShape): TrainingMemoryEstimate {
  const full = shape.method === 'full';
  if (full && (shape.quantize !== 'none' || shape.storage !== 'f32')) {
    throw new RangeError(
      `full training keeps f32 master weights: quantize must be 'none' and storage 'f32' (got ${shape.quantize}, ${shape.storage})`,
    );
  }
  const s: TrainingMemoryShape = full ? { ...shape, lora: null } : shape;
  const { meta, pool } = metaEngine(s);
  const counted = withEngine(meta, () =>
    withPrecision(s.precision ?? 'fp32', () => {
      const model = countingModel(s, s.config);
      // The weights are what the pool holds before the trainable parameters and the optimizer (see `weights` below).
      const setup = { adapters: 0, optimizer: 0, ropeTables: 0 };
      const beforeAttach = pool.liveBytes;
      const optimizer = attachCounted(s, model);
      const params = [...optimizer.params];
      // LoRA leaves are new buffers; full training's are the weights.
      if (!full) setup.adapters = params.reduce((a, p) => a + p.buffer.size, 0);
      setup.optimizer = pool.liveBytes - beforeAttach - setup.adapters;
      const beforeRope = pool.liveBytes;
      model.ropeFor(s.seqLen - 1); // the tables the forward uses, made once
      setup.ropeTables = pool.liveBytes - beforeRope;

      // The step as trainStep (trainer.ts) records it (step.ts); trainStep's reads of the loss and
      // the norm would give zeros here, and the update follows them unconditionally.
      pool.params = params;
      pool.resetPeak();
      const persistent = pool.liveBytes;
      const batches = Array.from({ length: s.accumulating ? 2 : 1 }, () => countingBatch(s.batchSize, s.seqLen));
      const which = (micro: number) => (batches.length > 1 ? `micro-batch ${micro + 1}'s ` : 'the ');
      let keptByForward = 0;
      const step = recordStep(
        model,
        batches,
        { stepIndex: 0, seed: 0, maxGradNorm: 1, gradientCheckpointing: s.checkpointing },
        {
          forward: (m) => ([pool.phase, pool.at] = ['forward', `${which(m)}forward`]),
          backward: (m) => {
            if (m === 0) keptByForward = pool.liveBytes - persistent;
            [pool.phase, pool.at] = ['backward', `${which(m)}backward`];
          },
          backwardOp: (op, m) => (pool.at = `${which(m)}backward (${op})`),
          gradNorm: () => ([pool.phase, pool.at] = ['update', 'the optimizer step']),
        },
      );
      for (const w of step.weightedLosses) w.dispose();
      step.clip.norm.dispose();
      applyUpdate(optimizer, step, 1e-3, 'clip');
      return { setup, persistent, keptByForward, peak: pool.peakBytes, at: pool.atPeak };
    }),
  );
  const { setup, persistent, keptByForward, peak, at } = counted;
  const activations = at.forward;
  const gradients = at.gradients;
  const workspace = peak - persistent - activations - gradients;
  const n = s.batchSize * s.seqLen;
  const maxBinding = s.maxBindingBytes ?? engine().dev.limits.maxStorageBufferBindingSize;
  // Extra persistent bytes besides the four named parts (e.g. kernels' one-time buffers) count as weights.
  const weights = persistent - setup.adapters - setup.optimizer - setup.ropeTables;
  let perLayer: number | null = null;
  return {
    weights,
    adapters: setup.adapters,
    optimizer: setup.optimizer,
    ropeTables: setup.ropeTables,
    activations,
    gradients,
    workspace,
    total: peak,
    // A second counted forward: only when asked for.
    get activationsPerTokenPerLayer() {
      if (perLayer === null) perLayer = keptByOneLayer(s, keptByForward) / n;
      return perLayer;
    },
    lossChunkRows: lossChunkRows(n, s.config.vocabSize, maxBinding),
    peakAt: at.at,
  };
}

/** batch_size: auto picks the largest micro-batch whose estimate is within this share of the device's memory. */
export const AUTO_BATCH_HEADROOM = 0.9;
/** The effective batch of batch_size: auto without effective_batch_size: this × grad_accum. */
export const AUTO_DEFAULT_BATCH = 4;

/**
 * The estimated pool peak of one step of micro-batch `batchSize` at max_seq_len under `mode`, with
 * `gradAccum` micro-batches per step, for the configured training.method.
 */
export function estimateStep(
  cfg: ResolvedConfig,
  config: LlamaConfig,
  batchSize: number,
  mode: CheckpointMode = cfg.training.grad_checkpointing,
  gradAccum = cfg.training.grad_accum,
): TrainingMemoryEstimate {
  const method = cfg.training.method;
  return estimateTrainingMemory({
    accumulating: gradAccum > 1,
    config,
    batchSize,
    seqLen: cfg.data.max_seq_len,
    method,
    quantize: cfg.model.quantize,
    storage: cfg.model.storage,
    lora:
      method === 'full' ? null : { r: cfg.lora.r, targetModules: cfg.lora.target_modules, dropout: cfg.lora.dropout },
    checkpointing: mode,
    maxBindingBytes: engine().dev.limits.maxStorageBufferBindingSize,
    precision: resolvePrecision(cfg.training.precision, engine().dev),
  });
}

function deviceLine(memory: DeviceMemory | null): string {
  if (!memory) return 'device memory: unknown (set FINLLM_GPU_MEMORY, e.g. 24GB, to have it checked)';
  const avail =
    memory.availableBytes !== null && memory.availableBytes !== memory.totalBytes
      ? `${formatBytes(memory.availableBytes)} available of `
      : '';
  return `device memory: ${avail}${formatBytes(memory.totalBytes)}, from ${memory.source}`;
}

/** Lines printed before the first step: the estimate, its parts, the other modes, the device. */
export function describeMemory(
  cfg: ResolvedConfig,
  config: LlamaConfig,
  batchSize: number,
  memory: DeviceMemory | null,
): string[] {
  const mode = cfg.training.grad_checkpointing;
  const e = estimateStep(cfg, config, batchSize, mode);
  const others = CHECKPOINT_MODES.filter((m) => m !== mode).map(
    (m) => `${m} ${formatTotal(estimateStep(cfg, config, batchSize, m).total)}`,
  );
  if (e.refused) {
    return [
      `memory: micro-batch ${batchSize} × ${cfg.data.max_seq_len} tokens, grad_checkpointing ${mode}, cannot run on this device: ${e.refused}; other modes: ${others.join(', ')}`,
      deviceLine(memory),
    ];
  }
  const full = cfg.training.method === 'full';
  // Full training: the gradients at the peak are a main part, or (peak in the loss head) none yet.
  const gradients = e.gradients > 0 ? `, gradients ${formatBytes(e.gradients)}` : full ? ', no gradient yet' : '';
  const trained = full
    ? `trained f32 weights ${formatBytes(e.weights)}, AdamW ${formatBytes(e.optimizer)}${gradients}`
    : `weights ${formatBytes(e.weights)}, LoRA + AdamW ${formatBytes(e.adapters + e.optimizer)}${gradients}`;
  return [
    `memory: estimated peak ${formatBytes(e.total)} for micro-batch ${batchSize} × ${cfg.data.max_seq_len} tokens, ${full ? 'full training' : 'LoRA'}, ${resolvePrecision(cfg.training.precision, engine().dev)}, grad_checkpointing ${mode} ` +
      `(${trained}, activations ${formatBytes(e.activations)} [${formatBytes(e.activationsPerTokenPerLayer)} per token per layer], ` +
      `workspace ${formatBytes(e.workspace)}; peak during ${e.peakAt}); other modes: ${others.join(', ')}`,
    deviceLine(memory),
  ];
}

/**
 * What to change to need less memory, each with its estimate: only changes the configured method
 * accepts (full training cannot use NF4 or 16-bit weights, but LoRA on the same model is a way
 * out), and only those that lower the estimate (e.g. full checkpointing can need more than none
 * when the weights and their gradients dominate).
 *
 * With `budget` (the bytes a step may take, e.g. AUTO_BATCH_HEADROOM of the device's memory) only
 * changes whose estimate fits it are offered, the batch size and max_seq_len lowered as far as
 * needed; when no single change fits, the changes together; when not even that fits, it says so.
 * Without it (the estimate was already wrong, as after an out-of-memory stop) every change that
 * lowers the estimate is listed.
 */
export function memoryAdvice(
  cfg: ResolvedConfig,
  config: LlamaConfig,
  batchSize: number,
  budget: number | null = null,
): string {
  const t = cfg.training;
  type Change = {
    b?: number;
    accum?: number;
    mode?: CheckpointMode;
    seq?: number;
    nf4?: boolean;
    lora?: boolean;
    bf16?: boolean;
  };
  const estimate = (over: Change) => {
    const c: ResolvedConfig = {
      ...cfg,
      data: { ...cfg.data, max_seq_len: over.seq ?? cfg.data.max_seq_len },
      model: {
        ...cfg.model,
        quantize: over.nf4 ? 'nf4' : cfg.model.quantize,
        storage: over.bf16 ? 'bf16' : cfg.model.storage,
      },
      training: { ...t, method: over.lora ? 'lora' : t.method },
    };
    return estimateStep(c, config, over.b ?? batchSize, over.mode ?? t.grad_checkpointing, over.accum ?? t.grad_accum)
      .total;
  };
  const now = estimate({});
  const fits = (bytes: number) => budget === null || bytes <= budget;
  /** Halvings of `from` down to `min`: all of them without a budget, else the largest that fits. */
  const lowered = (from: number, min: number, at: (v: number) => number): number | null => {
    let v = Math.max(min, Math.floor(from / 2));
    if (v >= from) return null;
    if (budget === null) return v;
    while (!fits(at(v))) {
      if (v <= min) return null;
      v = Math.max(min, Math.floor(v / 2));
    }
    return v;
  };
  const tips: string[] = [];
  const tip = (what: string, over: Change, after = '') => {
    const bytes = estimate(over);
    if (bytes < now && fits(bytes)) tips.push(`${what} needs ~${formatBytes(bytes)}${after}`);
  };
  // A smaller micro-batch with grad_accum raised to keep the effective batch: every gradient then stays through the later micro-batches.
  const accumFor = (b: number) => Math.ceil((batchSize * t.grad_accum) / b);
  const b = batchSize > 1 ? lowered(batchSize, 1, (v) => estimate({ b: v, accum: accumFor(v) })) : null;
  if (b !== null)
    tip(
      `training.batch_size (now ${batchSize}): ${b}`,
      { b, accum: accumFor(b) },
      '; raise training.grad_accum to keep the effective batch, or set batch_size: auto',
    );
  const seq = lowered(cfg.data.max_seq_len, 8, (v) => estimate({ seq: v }));
  if (seq !== null) tip(`data.max_seq_len (now ${cfg.data.max_seq_len}): ${seq}`, { seq });
  for (const mode of ['selective', 'full'] as const) {
    if (CHECKPOINT_MODES.indexOf(mode) > CHECKPOINT_MODES.indexOf(t.grad_checkpointing))
      tip(`training.grad_checkpointing: ${mode} (now ${t.grad_checkpointing})`, { mode });
  }
  if (t.method === 'full') {
    const qlora = estimate({ lora: true, nf4: true });
    tip(
      'training.method: lora (now full: adapters on the frozen model instead of training every weight)',
      { lora: true },
      `, ~${formatBytes(qlora)} with model.quantize: nf4 as well`,
    );
  } else if (cfg.model.quantize !== 'nf4') tip('model.quantize: nf4 (now none)', { nf4: true });
  // Where the device refuses a buffer or a binding: 16-bit storage halves the weights nf4 leaves
  // dense (the embedding, the LM head), which their kernels bind whole. (Otherwise the changes above
  // keep the weights' precision and are offered alone.)
  const refused = !Number.isFinite(now);
  if (refused && t.method !== 'full' && cfg.model.storage === 'f32')
    tip('model.storage: bf16 (now f32)', { bf16: true });
  if (tips.length)
    return `To fit${budget === null ? '' : ` in ${formatBytes(budget)}`}, change one of: ${tips.join('; ')}.`;
  if (budget === null)
    return !refused
      ? 'This is already the smallest configuration finllm can run; a device with more memory is needed.'
      : 'No single change makes every buffer and binding fit the limits of this device; a device that allows larger ones is needed.';

  // No single change fits: every change that lowers the estimate, together, max_seq_len last and only as far as needed.
  const all: Change = {};
  const parts: string[] = [];
  const add = (over: Change, what: string) => {
    if (estimate({ ...all, ...over }) < estimate(all)) {
      Object.assign(all, over);
      parts.push(what);
    }
  };
  if (batchSize > 1)
    add({ b: 1, accum: accumFor(1) }, `training.batch_size: 1 with training.grad_accum: ${accumFor(1)}`);
  for (const mode of ['selective', 'full'] as const) {
    if (CHECKPOINT_MODES.indexOf(mode) > CHECKPOINT_MODES.indexOf(all.mode ?? t.grad_checkpointing))
      add({ mode }, `training.grad_checkpointing: ${mode}`);
  }
  if (t.method === 'full') add({ lora: true, nf4: true }, 'training.method: lora with model.quantize: nf4');
  else if (cfg.model.quantize !== 'nf4') add({ nf4: true }, 'model.quantize: nf4');
  if (refused && (t.method !== 'full' || all.lora) && cfg.model.storage === 'f32')
    add({ bf16: true }, 'model.storage: bf16');
  let s = cfg.data.max_seq_len;
  while (!fits(estimate({ ...all, seq: s })) && s > 8) s = Math.max(8, Math.floor(s / 2));
  if (s < cfg.data.max_seq_len) parts.push(`data.max_seq_len: ${s}`);
  const together = estimate({ ...all, seq: s });
  if (fits(together) && parts.length > 0) {
    return `No single change fits in ${formatBytes(budget)}; together, ${parts.join(', ')} need ~${formatBytes(together)}.`;
  }
  return `Not even the smallest configuration finllm can run here (${parts.length ? parts.join(', ') : 'the current one'}) fits in ${formatBytes(budget)}: it needs ~${formatTotal(together)}; a device with more memory is needed.`;
}

/**
 * The out-of-memory message of a run: what did not fit (buffer, pool, device), the estimate for
 * this configuration, what to change, and where the last checkpoint is.
 */
export function outOfMemoryFailure(
  err: OutOfMemoryError,
  cfg: ResolvedConfig,
  config: LlamaConfig,
  batchSize: number,
  where: string,
  lastCheckpoint: string | null,
): RuntimeFailure {
  const est = estimateStep(cfg, config, batchSize);
  const resume = lastCheckpoint
    ? `The last checkpoint (${lastCheckpoint}) is intact: change the config and run again with --resume.`
    : 'No checkpoint was written yet; nothing in the run folder needs cleaning up.';
  return new RuntimeFailure(
    `${err.message} ${where}. The estimated peak of this configuration is ${formatTotal(est.total)} ` +
      `(micro-batch ${batchSize} × ${cfg.data.max_seq_len} tokens, grad_checkpointing ${cfg.training.grad_checkpointing}). ${memoryAdvice(cfg, config, batchSize)} ${resume}`,
  );
}

/** Divisors of n, largest first. */
function divisorsDescending(n: number): number[] {
  const out: number[] = [];
  for (let d = n; d >= 1; d--) if (n % d === 0) out.push(d);
  return out;
}

export interface AutoBatch {
  batchSize: number;
  gradAccum: number;
  /** The estimate for the chosen micro-batch. */
  estimate: number;
  /** The pool peak of the trial step. */
  measured: number;
}

/**
 * batch_size: auto: the largest micro-batch that divides the effective batch, whose estimate fits
 * AUTO_BATCH_HEADROOM of the device's memory, and whose trial step (forward + backward on a
 * max_seq_len batch of random tokens, no update) runs within the pool's capacity.
 */
export async function chooseAutoBatch(cfg: ResolvedConfig, model: LlamaModel): Promise<AutoBatch> {
  const t = cfg.training;
  const capacity = engine().pool.capacityBytes;
  if (capacity === null) {
    throw new InputError(
      'batch_size: auto needs the device memory, which this platform does not report: set FINLLM_GPU_MEMORY (e.g. 24GB) or give a number',
      { key: 'training.batch_size' },
    );
  }
  const effective = t.effective_batch_size ?? AUTO_DEFAULT_BATCH * t.grad_accum;
  const estimate = (b: number) => estimateStep(cfg, model.config, b, t.grad_checkpointing, effective / b).total;
  const fitting = divisorsDescending(effective).filter((b) => estimate(b) <= AUTO_BATCH_HEADROOM * capacity);
  for (const b of fitting) {
    const measured = await trialStep(
      model,
      b,
      cfg.data.max_seq_len,
      t.grad_checkpointing,
      resolvePrecision(t.precision, engine().dev),
    );
    if (measured !== null) return { batchSize: b, gradAccum: effective / b, estimate: estimate(b), measured };
  }
  const smallest = estimate(1);
  throw new RuntimeFailure(
    `batch_size: auto: not even a micro-batch of 1 × ${cfg.data.max_seq_len} tokens fits (estimated ${formatTotal(smallest)}, ` +
      `device memory ${formatBytes(capacity)} from ${engine().pool.capacitySource}). ${memoryAdvice(cfg, model.config, 1, AUTO_BATCH_HEADROOM * capacity)}`,
  );
}

/**
 * Forward + backward of one random [batchSize, seqLen] batch in `precision` (default: the engine's
 * now), gradients dropped afterwards: the pool peak it reached (everything live included, as the
 * estimate counts it), or null when it ran out of memory.
 */
export async function trialStep(
  model: LlamaModel,
  batchSize: number,
  seqLen: number,
  mode: CheckpointMode,
  precision?: Precision,
): Promise<number | null> {
  const { dev, pool } = engine();
  const rng = new Rng(batchSize);
  const ids = Int32Array.from({ length: batchSize * seqLen }, () => rng.int(model.config.vocabSize));
  const batch = { inputIds: ids, labels: shiftLabels(ids, batchSize, seqLen), batchSize, seqLen };
  await dev.sync();
  pool.resetPeak();
  const wasTraining = model.training;
  model.training = true;
  try {
    // A trial that runs out of memory midway releases what its forward saved (releaseOnError).
    const step = () => tidy(() => releaseOnError(() => backward(model.loss(batch, { gradientCheckpointing: mode }))));
    if (precision) withPrecision(precision, step);
    else step();
    await dev.sync();
    return pool.peakBytes;
  } catch (err) {
    if (err instanceof OutOfMemoryError) return null;
    throw err;
  } finally {
    model.training = wasTraining;
    zeroGrad(model.trainableParameters()); // LoRA leaves, or every weight under full training
    pool.trim(); // what the failed or finished trial cached goes back to the driver
  }
}
