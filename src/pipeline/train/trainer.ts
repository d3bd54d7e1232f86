// The LoRA / QLoRA training recipe: setup → train → save → cleanup.
//
// Loss accounting: the loss of one optimizer step is the mean token NLL over every counted target
// token of its micro-batches (Σ_i n_i·loss_i / Σ_i n_i). Each micro-batch's mean loss is scaled by
// n_i / N before backward, so gradients and the reported loss do not depend on how a step is split
// into micro-batches (gradient accumulation).
//
// Determinism: the data order is a function of (seed, epoch); LoRA dropout masks are a function of
// (seed, step, micro-batch); kernels are deterministic (no float atomics). A run resumed from a
// checkpoint therefore reproduces the loss sequence of an uninterrupted run exactly.
//
// Precision (training.precision, src/engine/precision.ts): fp32, or fp16-mixed with dynamic loss
// scaling (loss-scale.ts): the loss is multiplied by the scale before backward, the step reads the
// gradient norm back first, skips the update when it is inf/NaN and otherwise unscales inside the
// AdamW update (grad · clip / scale). Non-finite steps go through one check (stepHealth): skipped
// under loss scaling, a stop with a message in fp32.
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { backward, noGrad, zeroGrad } from '../../engine/autograd.js';
import { engine, initEngine, Tensor, tidy } from '../../engine/tensor.js';
import { computePrecision, precisionUnsupported, resolvePrecision, setComputePrecision, type Precision } from '../../engine/precision.js';
import { DynamicLossScaler, stepHealth, type LossScalerState } from './loss-scale.js';
import { scale } from '../../kernels/elementwise.js';
import { AdamW, gradNormCoef } from '../../kernels/optim.js';
import { InputError } from '../../errors.js';
import { LlamaModel } from '../../llama/model.js';
import { LlamaTokenizer } from '../../llama/tokenizer.js';
import { readSafetensorsF32, writeSafetensors } from '../../io/safetensors.js';
import { saveResolvedConfig, type ResolvedConfig } from '../config.js';
import { createDataLoader, prepareData, saveReport, formatReport, type Batch, type DataLoader, type DataLoaderState, type PreparedData, type TokenizedExample } from '../data/index.js';
import { latestCheckpoint, readJsonSync, saveCheckpoint, writeJsonSync } from './checkpoint.js';
import { ConsoleProgress, JsonlMetrics, formatBytes, type MetricRecord, type ScalarSink } from './logging.js';
import { lrAt, resolveWarmup, type ScheduleSpec } from './schedule.js';
import { TensorBoardWriter } from '../../io/tfevents.js';

export interface TrainOptions {
  /** Continue from the latest checkpoint in the run folder (also when config says resume: never). */
  resume?: boolean;
  /** Print progress to stderr (default: config.logging.console). */
  quiet?: boolean;
  /** Called after each optimizer step (tests, the pipeline). */
  onStep?: (rec: StepRecord) => void;
}

export interface StepRecord {
  step: number;
  loss: number;
  lr: number;
  gradNorm: number | null;
  tokens: number;
  /** fp16-mixed: the loss scale this step ran with, and whether its update was skipped (inf/NaN gradients). */
  lossScale?: number;
  skipped?: boolean;
}

export interface TrainResult {
  runDir: string;
  steps: number;
  losses: StepRecord[];
  valLosses: { step: number; loss: number }[];
  finalValLoss: number | null;
  initialValLoss: number | null;
  stoppedEarly: boolean;
  interrupted: boolean;
  adapterDir: string;
  mergedDir: string | null;
  tokensPerSecond: number;
  peakGpuBytes: number;
  precision: Precision;
  /** fp16-mixed: the final loss scale and the steps skipped for inf/NaN gradients. */
  lossScaling: { scale: number; skippedSteps: number } | null;
}

interface TrainerState {
  version: 1;
  step: number;
  totalSteps: number;
  loader: DataLoaderState;
  bestValLoss: number | null;
  badEvals: number;
  losses: StepRecord[];
  valLosses: { step: number; loss: number }[];
  initialValLoss: number | null;
  tokensSeen: number;
  /** The precision the run trains in (absent in checkpoints written before it existed: fp32). */
  precision?: Precision;
  /** fp16-mixed: the dynamic loss scaler's state. */
  lossScaler?: LossScalerState | null;
}

/** Mixes (seed, step, micro-batch) into the LoRA dropout seed of that forward pass. */
export function dropoutSeed(seed: number, step: number, micro: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  for (const v of [step, micro]) {
    h = Math.imul(h ^ v, 0x85ebca6b) >>> 0;
    h = (h ^ (h >>> 13)) >>> 0;
  }
  return h;
}

export interface StepOptions {
  lr: number;
  /** 0-based optimizer step (feeds the dropout seed). */
  stepIndex: number;
  seed: number;
  /** Clip the global gradient norm to this (null: no clipping). */
  maxGradNorm: number | null;
  gradientCheckpointing?: boolean;
  /**
   * Dynamic loss scaling (fp16-mixed): the loss is multiplied by this before backward; the update
   * is skipped when the gradients are inf/NaN and otherwise applied to grad / lossScale.
   */
  lossScale?: number;
}

export interface StepResult {
  /** Token-weighted mean loss over all micro-batches, before the update. */
  loss: number;
  /** Global gradient norm before clipping, unscaled (null when clipping is off without loss scaling). */
  gradNorm: number | null;
  /** Tokens processed (batch × sequence, padding included). */
  tokens: number;
  /** With loss scaling: the gradients were inf/NaN and the update was skipped. */
  skipped: boolean;
}

/**
 * One optimizer step over `batches` (the micro-batches of gradient accumulation): forward and
 * backward of each micro-batch with its loss weighted by its share of the step's target tokens,
 * then clipping, the AdamW update and zeroing of the gradients.
 */
export async function trainStep(model: LlamaModel, optimizer: AdamW, batches: Batch[], o: StepOptions): Promise<StepResult> {
  const total = batches.reduce((s, b) => s + b.numTargetTokens, 0);
  if (total === 0) throw new InputError(`step ${o.stepIndex + 1}: every label in the batch is masked (-100); check response_only_loss and max_seq_len`, { key: 'data' });
  model.training = true;
  const params = model.loraParameters();
  const weighted: Tensor[] = [];
  const lossScale = o.lossScale ?? 1;
  batches.forEach((b, micro) => {
    model.setDropoutSeed(dropoutSeed(o.seed, o.stepIndex, micro));
    const w = tidy(() => {
      const loss = model.loss(b, { gradientCheckpointing: o.gradientCheckpointing ?? false });
      backward(scale(loss, (lossScale * b.numTargetTokens) / total));
      return noGrad(() => scale(loss, b.numTargetTokens / total));
    });
    weighted.push(w);
  });
  const readLoss = async () => {
    let loss = 0;
    for (const w of weighted) {
      loss += await w.item();
      w.dispose();
    }
    return loss;
  };
  const tokens = batches.reduce((s, b) => s + b.batchSize * b.seqLen, 0);
  if (o.lossScale !== undefined) {
    // Loss scaling: the (scaled) gradient norm decides on the CPU whether the step happens at all.
    const { norm, coef } = gradNormCoef(params, o.maxGradNorm ?? 3.4e38);
    coef.dispose();
    const scaledNorm = await norm.item();
    norm.dispose();
    const loss = await readLoss();
    const gradNorm = scaledNorm / lossScale;
    if (!Number.isFinite(scaledNorm) || !Number.isFinite(loss)) {
      zeroGrad(params);
      return { loss, gradNorm, tokens, skipped: true };
    }
    // torch: unscale_ (× 1/scale, exact for a power of two) then clip; here both in one factor.
    const clipCoef = o.maxGradNorm !== null ? Math.min(1, o.maxGradNorm / (gradNorm + 1e-6)) : 1;
    const gradScale = Tensor.from(new Float32Array([clipCoef / lossScale]), [1]);
    optimizer.step(o.lr, { gradScale });
    gradScale.dispose();
    zeroGrad(params);
    return { loss, gradNorm, tokens, skipped: false };
  }
  // Clipping folded into the update: the step scales each gradient by min(1, max/‖g‖) on the GPU.
  const clip = o.maxGradNorm !== null ? gradNormCoef(params, o.maxGradNorm) : null;
  optimizer.step(o.lr, clip ? { gradScale: clip.coef } : {});
  clip?.coef.dispose();
  zeroGrad(params);
  const loss = await readLoss();
  let gradNorm: number | null = null;
  if (clip) {
    gradNorm = await clip.norm.item();
    clip.norm.dispose();
  }
  return { loss, gradNorm, tokens, skipped: false };
}

export class LoraTrainer {
  private stopRequested = false;
  private metrics: JsonlMetrics | null = null;
  private tb: ScalarSink | null = null;
  private progress: ConsoleProgress;
  private state: TrainerState;
  private startTime = Date.now();
  /** fp16-mixed: the dynamic loss scaler (null in fp32). */
  private scaler: DynamicLossScaler | null;
  private readonly previousPrecision: Precision;
  private constructor(
    readonly cfg: ResolvedConfig,
    readonly runDir: string,
    readonly tokenizer: LlamaTokenizer,
    readonly data: PreparedData,
    readonly model: LlamaModel,
    readonly optimizer: AdamW,
    readonly loader: DataLoader,
    readonly schedule: ScheduleSpec,
    private readonly opts: TrainOptions,
    readonly precision: Precision,
  ) {
    this.progress = new ConsoleProgress(schedule.totalSteps, !opts.quiet && cfg.logging.console);
    const ls = cfg.training.loss_scaling;
    this.scaler =
      precision === 'fp16-mixed'
        ? new DynamicLossScaler({ initScale: ls.init_scale, growthFactor: ls.growth_factor, backoffFactor: ls.backoff_factor, growthInterval: ls.growth_interval })
        : null;
    // The precision is process-wide (the engine's GEMMs read it); dispose() puts the previous one back.
    this.previousPrecision = computePrecision();
    setComputePrecision(precision);
    this.state = {
      version: 1,
      step: 0,
      totalSteps: schedule.totalSteps,
      loader: loader.state(),
      bestValLoss: null,
      badEvals: 0,
      losses: [],
      valLosses: [],
      initialValLoss: null,
      tokensSeen: 0,
      precision,
      lossScaler: this.scaler?.state() ?? null,
    };
  }

  /** Loads tokenizer, data, model (+ fresh LoRA), optimizer; restores the latest checkpoint when resuming. */
  static async setup(cfg: ResolvedConfig, opts: TrainOptions = {}): Promise<LoraTrainer> {
    const { dev } = await initEngine();
    const precision = resolvePrecision(cfg.training.precision, dev);
    const unsupported = precisionUnsupported(precision, dev);
    if (unsupported) throw new InputError(`${unsupported}; set training.precision: fp32 (or auto)`, { key: 'training.precision' });
    const runDir = cfg.output.dir;
    mkdirSync(runDir, { recursive: true });
    saveResolvedConfig(cfg, runDir);
    const log = (m: string) => (!opts.quiet && cfg.logging.console ? process.stderr.write(m + '\n') : undefined);

    const tokenizer = await LlamaTokenizer.load(cfg.model.path);
    const data = await prepareData(cfg, tokenizer);
    saveReport(data.report, join(runDir, 'data-report.json'));
    log(formatReport(data.report));
    if (data.val.length === 0) log('warning: no validation examples (set data.val or data.val_split); validation is skipped');

    const model = await LlamaModel.load(cfg.model.path, { quantize: cfg.model.quantize === 'nf4' ? 'nf4' : undefined, storage: cfg.model.storage });
    if (data.train.some((e) => e.inputIds.some((id) => id >= model.config.vocabSize))) {
      throw new InputError(`the tokenizer produces ids outside the model's vocabulary (${model.config.vocabSize})`, { file: join(cfg.model.path, 'tokenizer.json') });
    }
    model.initLora(
      { r: cfg.lora.r, loraAlpha: cfg.lora.alpha, useRslora: cfg.lora.rslora, targetModules: cfg.lora.target_modules, loraDropout: cfg.lora.dropout, baseModelNameOrPath: cfg.model.path },
      cfg.training.seed,
    );
    model.gradientCheckpointing = cfg.training.grad_checkpointing;
    log(`precision: ${precision}${cfg.training.precision === 'auto' ? ` (auto: ${dev.hasF16SubgroupMatrix() ? 'the adapter has f16 subgroup matrices' : 'no f16 subgroup matrices on this adapter'})` : ''}`);
    if (precision === 'fp16-mixed' && model.weights.outOfF16Range.length) {
      log(`fp16-mixed: ${model.weights.outOfF16Range.length} weight(s) exceed the f16 range (|w| > 65504) and stay on the f32 GEMM path: ${model.weights.outOfF16Range.join(', ')}`);
    }
    const params = model.loraParameters();
    const optimizer = new AdamW(params, { lr: cfg.training.lr, weightDecay: cfg.training.weight_decay });
    const loader = createDataLoader(data.train, cfg, tokenizer, 'train');
    const t = cfg.training;
    const batchesPerEpoch = loader.batchesInEpoch(0);
    const totalSteps = t.max_steps ?? Math.max(1, Math.ceil((batchesPerEpoch * t.epochs) / t.grad_accum));
    const schedule: ScheduleSpec = { kind: t.schedule, baseLr: t.lr, warmupSteps: resolveWarmup(totalSteps, t.warmup_steps, t.warmup_ratio), totalSteps };
    const trainer = new LoraTrainer(cfg, runDir, tokenizer, data, model, optimizer, loader, schedule, opts, precision);

    const latest = latestCheckpoint(runDir);
    if (latest && (opts.resume || t.resume === 'auto')) await trainer.restore(latest.dir);
    else if (latest) {
      throw new InputError(`${runDir} already holds checkpoints (latest step ${latest.step}); pass --resume, set training.resume: auto, or choose another output.dir`, { key: 'output.dir' });
    } else {
      // A fresh run: drop logs of an earlier run in the same folder.
      rmSync(join(runDir, 'metrics.jsonl'), { force: true });
      rmSync(join(runDir, 'tensorboard'), { recursive: true, force: true });
    }
    trainer.openLogs();
    return trainer;
  }

  private openLogs(): void {
    if (this.cfg.logging.jsonl) this.metrics = new JsonlMetrics(this.runDir);
    if (this.cfg.logging.tensorboard) this.tb = new TensorBoardWriter(join(this.runDir, 'tensorboard'));
  }

  private log(rec: { step: number } & Record<string, number | null>): void {
    const full: MetricRecord = { ...rec, time: (Date.now() - this.startTime) / 1000 };
    this.metrics?.write(full);
    for (const [k, v] of Object.entries(rec)) if (k !== 'step' && typeof v === 'number') this.tb?.scalar(k, v, rec.step);
  }

  /** Requests a clean stop: the current step finishes, a checkpoint is written, train() returns. */
  requestStop(): void {
    this.stopRequested = true;
  }

  /** Token-weighted mean loss over the validation set (no gradients, fixed order). */
  async validate(examples: readonly TokenizedExample[] = this.data.val): Promise<number | null> {
    if (examples.length === 0) return null;
    const loader = createDataLoader(examples, this.cfg, this.tokenizer, 'val');
    const wasTraining = this.model.training;
    this.model.training = false;
    let sum = 0;
    let count = 0;
    try {
      for (let i = 0, n = loader.batchesInEpoch(0); i < n; i++) {
        const b = loader.next();
        const per = await this.model.tokenLosses(b);
        for (let j = 0; j < per.length; j++) if (b.labels[j]! !== -100) sum += per[j]!;
        count += b.numTargetTokens;
      }
    } finally {
      this.model.training = wasTraining;
    }
    return count > 0 ? sum / count : null;
  }

  /** One optimizer step (see the free function `trainStep`), at the loss scaler's scale in fp16-mixed. */
  async trainStep(batches: Batch[], lr: number, stepIndex: number): Promise<StepResult> {
    return trainStep(this.model, this.optimizer, batches, {
      lr,
      stepIndex,
      seed: this.cfg.training.seed,
      maxGradNorm: this.cfg.training.max_grad_norm,
      gradientCheckpointing: this.cfg.training.grad_checkpointing,
      ...(this.scaler ? { lossScale: this.scaler.scale } : {}),
    });
  }

  /** fp16-mixed: the loss scale now and the steps skipped so far (null in fp32). */
  lossScaling(): { scale: number; skippedSteps: number } | null {
    return this.scaler ? { scale: this.scaler.scale, skippedSteps: this.scaler.skippedSteps } : null;
  }

  async train(): Promise<TrainResult> {
    const t = this.cfg.training;
    const st = this.state;
    const onSignal = () => {
      if (this.stopRequested) process.exit(130);
      this.progress.message('interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)');
      this.requestStop();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    let stoppedEarly = false;
    const runStart = Date.now();
    const tokensAtStart = st.tokensSeen;
    try {
      if (st.step === 0 && st.initialValLoss === null) {
        st.initialValLoss = await this.validate();
        if (st.initialValLoss !== null) {
          this.log({ step: 0, val_loss: st.initialValLoss });
          this.progress.message(`step 0: validation loss ${st.initialValLoss.toFixed(4)}`);
        }
      }
      if (st.step >= st.totalSteps) this.progress.message(`the run in ${this.runDir} is already complete (step ${st.step}/${st.totalSteps}); nothing to train`);
      while (st.step < st.totalSteps && !this.stopRequested) {
        const lr = lrAt(this.schedule, st.step);
        const batches = Array.from({ length: t.grad_accum }, () => this.loader.next());
        const lossScale = this.scaler?.scale;
        const r = await this.trainStep(batches, lr, st.step);
        const health = stepHealth(st.step + 1, r.loss, r.gradNorm, this.scaler);
        if (health.action === 'stop') throw new Error(health.message);
        if (health.action === 'skip') this.progress.message(health.message!);
        this.scaler?.update(r.skipped || health.action === 'skip');
        st.lossScaler = this.scaler?.state() ?? null;
        st.step++;
        st.tokensSeen += r.tokens;
        const rec: StepRecord = { step: st.step, loss: r.loss, lr, gradNorm: r.gradNorm, tokens: r.tokens, ...(this.scaler ? { lossScale, skipped: r.skipped } : {}) };
        st.losses.push(rec);
        this.opts.onStep?.(rec);
        const elapsed = (Date.now() - runStart) / 1000;
        const tokPerSec = (st.tokensSeen - tokensAtStart) / Math.max(elapsed, 1e-9);
        const mem = engine().pool.stats();
        if (st.step % t.log_every === 0 || st.step === st.totalSteps || r.skipped) {
          const scaling: Record<string, number> = this.scaler ? { loss_scale: lossScale!, skipped_steps: this.scaler.skippedSteps } : {};
          this.log({ step: st.step, loss: r.loss, lr, grad_norm: r.gradNorm, tokens_per_sec: tokPerSec, gpu_live_bytes: mem.liveBytes, gpu_peak_bytes: mem.peakBytes, ...scaling });
        }
        this.progress.update({ step: st.step, loss: r.loss, lr, tokensPerSec: tokPerSec, elapsed, memBytes: mem.liveBytes, gradNorm: r.gradNorm, ...(this.scaler ? { lossScale: this.scaler.scale } : {}) });
        this.warnMemory(mem.peakBytes);

        const evalNow = this.data.val.length > 0 && ((t.eval_every > 0 && st.step % t.eval_every === 0) || st.step === st.totalSteps);
        if (evalNow) {
          const vl = (await this.validate())!;
          st.valLosses.push({ step: st.step, loss: vl });
          this.log({ step: st.step, val_loss: vl });
          this.progress.message(`step ${st.step}: validation loss ${vl.toFixed(4)}`);
          if (t.early_stopping) {
            if (st.bestValLoss === null || vl < st.bestValLoss - t.early_stopping.min_delta) {
              st.bestValLoss = vl;
              st.badEvals = 0;
            } else if (++st.badEvals >= t.early_stopping.patience) {
              this.progress.message(`early stopping: no improvement of validation loss for ${st.badEvals} evaluations`);
              stoppedEarly = true;
            }
          }
        }
        if ((t.save_every > 0 && st.step % t.save_every === 0) || this.stopRequested || stoppedEarly) await this.checkpoint();
        if (stoppedEarly) break;
      }
      if (!this.stopRequested && !stoppedEarly && latestCheckpoint(this.runDir)?.step !== st.step) await this.checkpoint();
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      this.progress.done();
      this.tb?.close();
    }
    const adapterDir = join(this.runDir, 'adapter');
    await this.model.saveAdapter(adapterDir);
    let mergedDir: string | null = null;
    if (this.cfg.output.export_merged && !this.stopRequested) {
      mergedDir = join(this.runDir, 'merged');
      const { exportMerged } = await import('../../llama/merge.js');
      await exportMerged(this.model, this.cfg.model.path, mergedDir);
    }
    const elapsed = (Date.now() - runStart) / 1000;
    const result: TrainResult = {
      runDir: this.runDir,
      steps: st.step,
      losses: st.losses,
      valLosses: st.valLosses,
      finalValLoss: st.valLosses.length ? st.valLosses[st.valLosses.length - 1]!.loss : null,
      initialValLoss: st.initialValLoss,
      stoppedEarly,
      interrupted: this.stopRequested,
      adapterDir,
      mergedDir,
      tokensPerSecond: (st.tokensSeen - tokensAtStart) / Math.max(elapsed, 1e-9),
      peakGpuBytes: engine().pool.stats().peakBytes,
      precision: this.precision,
      lossScaling: this.lossScaling(),
    };
    writeJsonSync(join(this.runDir, 'train-summary.json'), { ...result, losses: undefined });
    return result;
  }

  private warnedMemory = false;
  private warnMemory(peak: number): void {
    const limit = engine().dev.limits.maxBufferSize;
    // Dawn exposes no total-memory query; warn when the pool's peak nears the largest allocation the adapter allows.
    if (!this.warnedMemory && peak > 0.9 * limit) {
      this.warnedMemory = true;
      this.progress.message(`warning: GPU memory in use (${formatBytes(peak)}) is near the adapter's limit; consider quantize: nf4, a smaller batch or grad_checkpointing`);
    }
  }

  /** Writes a checkpoint of everything needed to continue exactly where this step ends. */
  async checkpoint(): Promise<string> {
    const st = this.state;
    st.loader = this.loader.state();
    const named = this.model.namedLoraParameters();
    const opt = await this.optimizer.exportState();
    const dir = await saveCheckpoint(this.runDir, st.step, this.cfg.training.keep_last_checkpoints, async (tmp) => {
      await this.model.saveAdapter(join(tmp, 'adapter'));
      const entries: { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[] = [];
      const names = [...named.keys()];
      opt.moments.forEach((m, i) => {
        const name = names[i]!;
        entries.push({ name: `${name}.exp_avg`, dtype: 'F32', shape: [m.expAvg.length], data: m.expAvg });
        entries.push({ name: `${name}.exp_avg_sq`, dtype: 'F32', shape: [m.expAvgSq.length], data: m.expAvgSq });
      });
      await writeSafetensors(join(tmp, 'optimizer.safetensors'), entries, { step: String(opt.step) });
      writeJsonSync(join(tmp, 'trainer_state.json'), st);
    });
    this.progress.message(`checkpoint: ${dir}`);
    return dir;
  }

  private async restore(dir: string): Promise<void> {
    const st = readJsonSync<TrainerState>(join(dir, 'trainer_state.json'));
    if (st.version !== 1) throw new InputError(`unsupported trainer_state version ${st.version}`, { file: join(dir, 'trainer_state.json') });
    const savedPrecision = st.precision ?? 'fp32';
    if (savedPrecision !== this.precision) {
      throw new InputError(
        `checkpoint was trained in precision ${savedPrecision}, the config now gives ${this.precision}${this.cfg.training.precision === 'auto' ? ' (auto on this adapter)' : ''}; resume with training.precision: ${savedPrecision}`,
        { file: join(dir, 'trainer_state.json') },
      );
    }
    if (st.totalSteps !== this.schedule.totalSteps) {
      throw new InputError(`checkpoint was made for ${st.totalSteps} total steps but the config now gives ${this.schedule.totalSteps}; resume with the same training settings`, { file: join(dir, 'trainer_state.json') });
    }
    // Weights go into the existing LoRA tensors: the optimizer holds references to them.
    const named = this.model.namedLoraParameters();
    const adapterFile = join(dir, 'adapter', 'adapter_model.safetensors');
    const saved = await readSafetensorsF32(adapterFile);
    for (const [name, t] of named) {
      const data = saved.get(name);
      if (!data || data.length !== t.numel) throw new InputError(`checkpoint adapter lacks '${name}' with ${t.numel} values (LoRA settings changed?)`, { file: adapterFile });
      engine().dev.write(t.buffer, 0, data);
    }
    const names = [...named.keys()];
    const tensors = await readSafetensorsF32(join(dir, 'optimizer.safetensors'));
    const meta = tensors.metadata;
    this.optimizer.importState({
      step: Number(meta.step),
      moments: names.map((n) => {
        const m = tensors.get(`${n}.exp_avg`);
        const v = tensors.get(`${n}.exp_avg_sq`);
        if (!m || !v) throw new InputError(`optimizer state for '${n}' is missing`, { file: join(dir, 'optimizer.safetensors') });
        return { expAvg: m, expAvgSq: v };
      }),
    });
    this.loader.restore(st.loader);
    if (this.scaler && st.lossScaler) this.scaler = new DynamicLossScaler(this.scaler.opts, st.lossScaler);
    this.state = st;
    // Metrics logged after this checkpoint by the interrupted run are dropped, so the log reads as one run.
    const metricsPath = join(this.runDir, 'metrics.jsonl');
    if (existsSync(metricsPath)) {
      const kept = readFileSync(metricsPath, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '')
        .filter((l) => {
          try {
            return (JSON.parse(l) as MetricRecord).step <= st.step;
          } catch {
            return false;
          }
        });
      const { writeFileAtomic } = await import('../../io/atomic.js');
      await writeFileAtomic(metricsPath, kept.map((l) => l + '\n').join(''));
    }
    this.progress.message(`resumed from ${dir} (step ${st.step}/${st.totalSteps})`);
  }

  dispose(): void {
    this.model.dispose();
    this.optimizer.dispose?.();
    setComputePrecision(this.previousPrecision);
  }
}

/** `finllm train`: runs the whole recipe. */
export async function runTraining(cfg: ResolvedConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const trainer = await LoraTrainer.setup(cfg, opts);
  try {
    return await trainer.train();
  } finally {
    trainer.dispose();
  }
}
