// The training loop of every method: setup → train → save → cleanup (TrainingRun), and one
// optimizer step (trainStep, its GPU work recorded by step.ts). What depends on training.method is
// a component chosen once when the run is built (methods.ts): LoRA / QLoRA adapters on a frozen
// base, which a run saves as a PEFT adapter (adapter/), or full fine-tuning of every weight, saved
// as a complete HF model (model/).
// Pretraining from scratch is full fine-tuning of a random-init model on raw text.
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
// scaling (loss-scale.ts): the loss is multiplied by the scale before backward; the step reads the
// gradient norm back first and, when nonFiniteStep finds the step non-finite, skips the update
// (where fp32 stops the run) and halves the scale; otherwise it unscales inside the AdamW update
// (grad · clip / scale). Trained weights, gradients and AdamW moments stay f32 (master weights).
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import { OutOfMemoryError } from '../../engine/device.js';
import {
  autoPrecisionReason,
  computePrecision,
  type Precision,
  precisionUnsupported,
  resolvePrecision,
  setComputePrecision,
} from '../../engine/precision.js';
import { engine, initEngine } from '../../engine/tensor.js';
import { InputError, NonFiniteError } from '../../errors.js';
import { ensureFolderSync, removeStaleTemps, writeFileAtomic } from '../../io/atomic.js';
import { describeNonFinite, nonFiniteCount } from '../../io/finite.js';
import { readSafetensorsF32, writeSafetensors } from '../../io/safetensors.js';
import { TensorBoardWriter } from '../../io/tfevents.js';
import type { AdamW } from '../../kernels/optim.js';
import { loadLlamaConfig } from '../../llama/config.js';
import type { LlamaModel } from '../../llama/model.js';
import { LlamaTokenizer } from '../../llama/tokenizer.js';
import { RESOLVED_CONFIG_NAME, type ResolvedConfig, saveResolvedConfig, withLocalModel } from '../config.js';
import {
  type Batch,
  createDataLoader,
  type DataLoader,
  formatReport,
  type PreparedData,
  prepareData,
  saveReport,
  type TokenizedExample,
} from '../data/index.js';
import {
  checkCheckpointFolders,
  latestCheckpoint,
  readJsonSync,
  refuseNonFinite,
  saveCheckpoint,
  writeJsonSync,
} from './checkpoint.js';
import { checkBatchFitsData, checkSeqLenFitsModel, describeSources, nonFiniteStep } from './checks.js';
import { ConsoleProgress, formatBytes, JsonlMetrics, type MetricRecord, type ScalarSink } from './logging.js';
import { DynamicLossScaler, skippedStep } from './loss-scale.js';
import {
  AUTO_BATCH_HEADROOM,
  chooseAutoBatch,
  describeMemory,
  estimateStep,
  memoryAdvice,
  outOfMemoryFailure,
} from './memory.js';
import { buildTrainingModel, type TrainingMethod } from './methods.js';
import { checkResumeConfig, formatDifferences, readTrainerState, type TrainerState } from './resume.js';
import { lrAt, resolveWarmup, type ScheduleSpec } from './schedule.js';
import { applyUpdate, discardStep, recordStep, type StepOptions } from './step.js';

export type { StepOptions } from './step.js';

const SUMMARY_FILE = 'train-summary.json';

export interface TrainOptions {
  /** Continue from the latest checkpoint in the run folder (also when config says resume: never). */
  resume?: boolean;
  /** Resume even when settings that affect the result differ from the checkpoint's (they are listed). */
  allowConfigChange?: boolean;
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
  /** The signal that interrupted the run (SIGINT: Ctrl-C). */
  signal?: 'SIGINT' | 'SIGTERM';
  /** The run folder held a finished run: nothing was trained or written. */
  alreadyComplete?: boolean;
  /** The PEFT adapter (training.method lora), else null. */
  adapterDir: string | null;
  /** The complete trained model, an HF folder (training.method full), else null. */
  modelDir: string | null;
  mergedDir: string | null;
  tokensPerSecond: number;
  peakGpuBytes: number;
  precision: Precision;
  /** fp16-mixed: the final loss scale and the steps skipped for inf/NaN gradients. */
  lossScaling: { scale: number; skippedSteps: number } | null;
}

export interface StepResult {
  /** Token-weighted mean loss over all micro-batches, before the update. */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number | null;
  /** Tokens processed (batch × sequence, padding included). */
  tokens: number;
  /** With loss scaling: the step was non-finite (`problem` says how) and its update was skipped. */
  skipped: boolean;
  problem?: string;
}

/**
 * One optimizer step over `batches` (the micro-batches of gradient accumulation): forward and
 * backward of each micro-batch with its loss weighted by its share of the step's target tokens
 * (recordStep, step.ts), then the loss and the global gradient norm are read back and checked
 * (nonFiniteStep: a NonFiniteError, nothing applied), then clipping, the AdamW update and zeroing
 * of the gradients (applyUpdate).
 */
export async function trainStep(
  model: LlamaModel,
  optimizer: AdamW,
  batches: Batch[],
  o: StepOptions,
): Promise<StepResult> {
  const recorded = recordStep(model, batches, o);
  const { weightedLosses, clip } = recorded;
  const lossScale = o.lossScale ?? 1;
  let loss = 0;
  for (const w of weightedLosses) {
    loss += await w.item();
    w.dispose();
  }
  // Under loss scaling the norm is the scaled gradients' (its clip coefficient is not used).
  const gradNorm = (await clip.norm.item()) / lossScale;
  clip.norm.dispose();
  const tokens = batches.reduce((s, b) => s + b.batchSize * b.seqLen, 0);
  const problem = nonFiniteStep(loss, gradNorm);
  if (problem) {
    discardStep(recorded);
    const sources = describeSources(batches);
    const where = `step ${o.stepIndex + 1}: ${problem}${sources ? ` (examples: ${sources})` : ''}`;
    // fp16-mixed: an overflow of the scaled gradients; GradScaler skips the step (the caller lowers the scale).
    if (o.lossScale !== undefined) return { loss, gradNorm, tokens, skipped: true, problem: where };
    throw new NonFiniteError(where);
  }
  if (o.lossScale !== undefined) {
    // torch: unscale_ (× 1/scale, exact for a power of two) then clip; here both in one factor.
    const clipCoef = o.maxGradNorm !== null ? Math.min(1, o.maxGradNorm / (gradNorm + 1e-6)) : 1;
    applyUpdate(optimizer, recorded, o.lr, clipCoef / lossScale);
  } else {
    applyUpdate(optimizer, recorded, o.lr, o.maxGradNorm !== null ? 'clip' : null);
  }
  return { loss, gradNorm, tokens, skipped: false };
}

/** The options of step `stepIndex` of a config at learning rate `lr`; `lossScale` under fp16-mixed. */
export function stepOptions(cfg: ResolvedConfig, lr: number, stepIndex: number, lossScale?: number): StepOptions {
  return {
    lr,
    stepIndex,
    seed: cfg.training.seed,
    maxGradNorm: cfg.training.max_grad_norm,
    gradientCheckpointing: cfg.training.grad_checkpointing,
    ...(lossScale !== undefined ? { lossScale } : {}),
  };
}

/** One training run in its run folder (output.dir): the loop, its logs and its checkpoints. */
export class TrainingRun {
  private stopRequested = false;
  /** Set by setup: the run folder holds a finished run (see isComplete). */
  complete = false;
  private stopSignal: 'SIGINT' | 'SIGTERM' | null = null;
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
    readonly method: TrainingMethod,
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
        ? new DynamicLossScaler({
            initScale: ls.init_scale,
            growthFactor: ls.growth_factor,
            backoffFactor: ls.backoff_factor,
            growthInterval: ls.growth_interval,
          })
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

  /**
   * The run ended (all steps, or early stopping) and wrote its summary and its adapter (or model),
   * which is the final checkpoint's: a re-run leaves it as it is. (Killed before that, a re-run
   * writes them.)
   */
  private isComplete(): boolean {
    const st = this.state;
    if (!(st.step >= st.totalSteps || st.stoppedEarly === true) || !existsSync(join(this.runDir, SUMMARY_FILE)))
      return false;
    const last = latestCheckpoint(this.runDir);
    if (last?.step !== st.step) return false;
    const same = (f: string) => {
      try {
        return readFileSync(join(this.runDir, f)).equals(readFileSync(join(last.dir, f)));
      } catch {
        return false;
      }
    };
    return this.method.outputFiles.every((f) => same(`${this.method.outputDir}/${f}`));
  }

  /**
   * Loads tokenizer, data, model with the method's trainable parameters, optimizer; resolves
   * batch_size: auto; prints the memory estimate; restores the latest checkpoint when resuming.
   */
  static async setup(configured: ResolvedConfig, opts: TrainOptions = {}): Promise<TrainingRun> {
    const { dev } = await initEngine();
    // A Hub id in model.path becomes its HF cache snapshot folder (the adapter still names the id).
    let cfg = await withLocalModel(configured, { quiet: opts.quiet === true || !configured.logging.console });
    const precision = resolvePrecision(cfg.training.precision, dev);
    const unsupported = precisionUnsupported(precision, dev);
    if (unsupported)
      throw new InputError(`${unsupported}; set training.precision: fp32 (or auto)`, { key: 'training.precision' });
    const runDir = cfg.output.dir;
    const modelConfig = await loadLlamaConfig(cfg.model.path);
    checkSeqLenFitsModel(cfg, modelConfig);
    ensureFolderSync(runDir);
    // Temps of a run killed while writing these (the writers clean their own too; a finished run writes none).
    for (const f of [
      'data-report.json',
      RESOLVED_CONFIG_NAME,
      SUMMARY_FILE,
      'metrics.jsonl',
      'adapter/adapter_model.safetensors',
      'adapter/adapter_config.json',
    ])
      removeStaleTemps(join(runDir, f));
    // A step-N folder that is not a complete checkpoint is refused before anything runs (checkpoint.ts).
    checkCheckpointFolders(runDir);
    const latest = latestCheckpoint(runDir);
    const resuming = latest !== null && (opts.resume === true || cfg.training.resume === 'auto');
    // A resumed auto run keeps the batch it chose.
    const chosenBefore = resuming && cfg.training.batch_size === 'auto' ? resolvedBatch(runDir) : null;
    const configNotes: string[] = [];
    const log = (m: string) => (!opts.quiet && cfg.logging.console ? process.stderr.write(m + '\n') : undefined);

    const tokenizer = await LlamaTokenizer.load(cfg.model.path);
    const data = await prepareData(cfg, tokenizer);
    checkBatchFitsData(cfg, data.train.length);
    log(formatReport(data.report));
    if (data.val.length === 0)
      log('warning: no validation examples (set data.val or data.val_split); validation is skipped');

    if (data.train.some((e) => e.inputIds.some((id) => id >= modelConfig.vocabSize))) {
      throw new InputError(`the tokenizer produces ids outside the model's vocabulary (${modelConfig.vocabSize})`, {
        file: join(cfg.model.path, 'tokenizer.json'),
      });
    }
    const { model, method, optimizer } = await buildTrainingModel(cfg).catch((err: unknown) => {
      if (!(err instanceof OutOfMemoryError)) throw err;
      const b = cfg.training.batch_size === 'auto' ? 1 : cfg.training.batch_size;
      throw outOfMemoryFailure(err, cfg, modelConfig, b, 'while loading the model', null);
    });
    log(`precision: ${precision}${cfg.training.precision === 'auto' ? ` (auto: ${autoPrecisionReason(dev)})` : ''}`);
    if (precision === 'fp16-mixed' && model.weights.outOfF16Range.length) {
      log(
        `fp16-mixed: ${model.weights.outOfF16Range.length} weight(s) exceed the f16 range (|w| > 65504) and stay on the f32 GEMM path: ${model.weights.outOfF16Range.join(', ')}`,
      );
    }
    if (cfg.training.batch_size === 'auto') {
      const picked = chosenBefore ? null : await chooseAutoBatch(cfg, model);
      const chosen = chosenBefore ?? picked!;
      cfg = {
        ...cfg,
        training: {
          ...cfg.training,
          batch_size: chosen.batchSize,
          grad_accum: chosen.gradAccum,
          effective_batch_size: null,
        },
      };
      const how = picked
        ? `estimate ${formatBytes(picked.estimate)}, trial step ${formatBytes(picked.measured)}`
        : `as chosen when ${runDir} started`;
      const note = `batch_size: auto -> ${chosen.batchSize} x grad_accum ${chosen.gradAccum} = ${chosen.batchSize * chosen.gradAccum} sequences per step (${how})`;
      log(note);
      configNotes.push(note);
    }
    for (const line of describeMemory(cfg, model.config, microBatch(cfg), engine().memory)) log(line);
    const estimate = estimateStep(cfg, model.config, microBatch(cfg)).total;
    const capacity = engine().pool.capacityBytes;
    if (capacity !== null && estimate > capacity)
      log(
        `warning: the estimate exceeds the device memory; the run will likely stop out of memory. ${memoryAdvice(cfg, model.config, microBatch(cfg), AUTO_BATCH_HEADROOM * capacity)}`,
      );
    const loader = createDataLoader(data.train, cfg, tokenizer, 'train');
    const t = cfg.training;
    const batchesPerEpoch = loader.batchesInEpoch(0);
    const totalSteps = t.max_steps ?? Math.max(1, Math.ceil((batchesPerEpoch * t.epochs) / t.grad_accum));
    const schedule: ScheduleSpec = {
      kind: t.schedule,
      baseLr: t.lr,
      warmupSteps: resolveWarmup(totalSteps, t.warmup_steps, t.warmup_ratio),
      totalSteps,
    };
    const trainer = new TrainingRun(
      cfg,
      runDir,
      tokenizer,
      data,
      model,
      method,
      optimizer,
      loader,
      schedule,
      opts,
      precision,
    );

    if (latest && resuming) await trainer.restore(latest);
    else if (latest) {
      throw new InputError(
        `${runDir} already holds checkpoints (latest step ${latest.step}); pass --resume, set training.resume: auto, or choose another output.dir`,
        { key: 'output.dir' },
      );
    } else {
      // A fresh run: drop logs of an earlier run in the same folder.
      rmSync(join(runDir, 'metrics.jsonl'), { force: true });
      rmSync(join(runDir, 'tensorboard'), { recursive: true, force: true });
    }
    trainer.complete = latest !== null && trainer.isComplete();
    if (!trainer.complete) {
      if (latest)
        trainer.progress.message(`resumed from ${latest.dir} (step ${trainer.state.step}/${trainer.state.totalSteps})`);
      // Written once the run is known to go on: a finished run folder is left as it is.
      saveResolvedConfig(cfg, runDir, configNotes);
      saveReport(data.report, join(runDir, 'data-report.json'));
      trainer.openLogs();
    }
    return trainer;
  }

  private openLogs(): void {
    if (this.cfg.logging.jsonl) this.metrics = new JsonlMetrics(this.runDir);
    if (this.cfg.logging.tensorboard) this.tb = new TensorBoardWriter(join(this.runDir, 'tensorboard'));
  }

  private log(rec: { step: number } & Record<string, number | null>): void {
    const full: MetricRecord = { ...rec, time: (Date.now() - this.startTime) / 1000 };
    this.metrics?.write(full);
    for (const [k, v] of Object.entries(rec))
      if (k !== 'step' && typeof v === 'number') this.tb?.scalar(k, v, rec.step);
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
    if (count === 0) return null;
    if (!Number.isFinite(sum))
      throw new NonFiniteError(
        `the validation loss is ${sum}: the model's forward pass overflows on the validation data`,
      );
    return sum / count;
  }

  /** One optimizer step (see the free function `trainStep`), at the loss scaler's scale in fp16-mixed. */
  async trainStep(batches: Batch[], lr: number, stepIndex: number): Promise<StepResult> {
    return trainStep(this.model, this.optimizer, batches, stepOptions(this.cfg, lr, stepIndex, this.scaler?.scale));
  }

  /** fp16-mixed: the loss scale now and the steps skipped so far (null in fp32). */
  lossScaling(): { scale: number; skippedSteps: number } | null {
    return this.scaler ? { scale: this.scaler.scale, skippedSteps: this.scaler.skippedSteps } : null;
  }

  async train(): Promise<TrainResult> {
    const t = this.cfg.training;
    const st = this.state;
    if (this.complete) return this.completedResult();
    const onSignal = (signal: 'SIGINT' | 'SIGTERM') => {
      if (this.stopRequested) process.exit(signal === 'SIGINT' ? 130 : 143);
      this.progress.message('interrupt: finishing this step and saving a checkpoint (Ctrl-C again to abort)');
      this.stopSignal = signal;
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
      while (st.step < st.totalSteps && !st.stoppedEarly && !this.stopRequested) {
        const lr = lrAt(this.schedule, st.step);
        const batches = Array.from({ length: t.grad_accum }, () => this.loader.next());
        const lossScale = this.scaler?.scale;
        const r = await this.trainStep(batches, lr, st.step).catch((err: unknown) => {
          throw err instanceof NonFiniteError ? this.stopped(err) : err;
        });
        if (r.skipped) {
          const what = skippedStep(r.problem!, this.scaler!);
          if (what.stop) throw new NonFiniteError(what.message);
          this.progress.message(what.message);
        }
        this.scaler?.update(r.skipped);
        st.lossScaler = this.scaler?.state() ?? null;
        st.step++;
        st.tokensSeen += r.tokens;
        // A skipped step's loss or norm may be inf/NaN: the record keeps finite values only (null norm).
        const rec: StepRecord = {
          step: st.step,
          loss: Number.isFinite(r.loss) ? r.loss : NaN,
          lr,
          gradNorm: r.gradNorm !== null && Number.isFinite(r.gradNorm) ? r.gradNorm : null,
          tokens: r.tokens,
          ...(this.scaler ? { lossScale, skipped: r.skipped } : {}),
        };
        if (Number.isFinite(rec.loss)) st.losses.push(rec); // a skipped step whose forward overflowed has no loss to keep
        this.opts.onStep?.(rec);
        const elapsed = (Date.now() - runStart) / 1000;
        const tokPerSec = (st.tokensSeen - tokensAtStart) / Math.max(elapsed, 1e-9);
        const mem = engine().pool.stats();
        if (st.step % t.log_every === 0 || st.step === st.totalSteps || r.skipped) {
          const scaling: Record<string, number> = this.scaler
            ? { loss_scale: lossScale!, skipped_steps: this.scaler.skippedSteps }
            : {};
          this.log({
            step: st.step,
            loss: r.loss,
            lr,
            grad_norm: r.gradNorm,
            tokens_per_sec: tokPerSec,
            gpu_live_bytes: mem.liveBytes,
            gpu_peak_bytes: mem.peakBytes,
            ...scaling,
          });
        }
        this.progress.update({
          step: st.step,
          loss: r.loss,
          lr,
          tokensPerSec: tokPerSec,
          elapsed,
          memBytes: mem.liveBytes,
          gradNorm: r.gradNorm,
          ...(this.scaler ? { lossScale: this.scaler.scale } : {}),
        });
        this.warnMemory(mem.peakBytes);

        stoppedEarly = await this.evaluate();
        if ((t.save_every > 0 && st.step % t.save_every === 0) || this.stopRequested || stoppedEarly)
          await this.checkpoint();
        if (stoppedEarly) break;
      }
      if (!this.stopRequested && !stoppedEarly && latestCheckpoint(this.runDir)?.step !== st.step)
        await this.checkpoint();
    } catch (err) {
      if (!(err instanceof OutOfMemoryError)) throw err;
      const last = latestCheckpoint(this.runDir);
      throw outOfMemoryFailure(
        err,
        this.cfg,
        this.model.config,
        microBatch(this.cfg),
        `at step ${st.step + 1}`,
        last ? last.dir : null,
      );
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      this.progress.done();
      this.tb?.close();
    }
    await this.method.save(this.model, this.cfg, join(this.runDir, this.method.outputDir), { replace: true });
    const mergedDir =
      this.cfg.output.export_merged && !this.stopRequested
        ? await this.method.exportMerged(this.model, this.cfg, this.runDir, (m) => this.progress.message(m))
        : null;
    const elapsed = (Date.now() - runStart) / 1000;
    const result: TrainResult = {
      ...this.progressFields(),
      stoppedEarly,
      interrupted: this.stopRequested,
      ...(this.stopSignal ? { signal: this.stopSignal } : {}),
      ...this.method.outputs(this.runDir),
      mergedDir,
      tokensPerSecond: (st.tokensSeen - tokensAtStart) / Math.max(elapsed, 1e-9),
      peakGpuBytes: engine().pool.stats().peakBytes,
      precision: this.precision,
      lossScaling: this.lossScaling(),
    };
    writeJsonSync(join(this.runDir, SUMMARY_FILE), { ...result, losses: undefined });
    return result;
  }

  /**
   * Validates after this step when eval_every (or the last step) says so, and keeps score for
   * early stopping: true when it ends the run here.
   */
  private async evaluate(): Promise<boolean> {
    const t = this.cfg.training;
    const st = this.state;
    const evalNow =
      this.data.val.length > 0 && ((t.eval_every > 0 && st.step % t.eval_every === 0) || st.step === st.totalSteps);
    if (!evalNow) return false;
    const vl = (await this.validate())!;
    st.valLosses.push({ step: st.step, loss: vl });
    this.log({ step: st.step, val_loss: vl });
    this.progress.message(`step ${st.step}: validation loss ${vl.toFixed(4)}`);
    if (!t.early_stopping) return false;
    if (st.bestValLoss === null || vl < st.bestValLoss - t.early_stopping.min_delta) {
      st.bestValLoss = vl;
      st.badEvals = 0;
      return false;
    }
    if (++st.badEvals < t.early_stopping.patience) return false;
    this.progress.message(`early stopping: no improvement of validation loss for ${st.badEvals} evaluations`);
    st.stoppedEarly = true;
    return true;
  }

  /** The parts of a TrainResult that come from the trainer state. */
  private progressFields(): Pick<
    TrainResult,
    'runDir' | 'steps' | 'losses' | 'valLosses' | 'finalValLoss' | 'initialValLoss'
  > {
    const st = this.state;
    return {
      runDir: this.runDir,
      steps: st.step,
      losses: st.losses,
      valLosses: st.valLosses,
      finalValLoss: st.valLosses.length ? st.valLosses[st.valLosses.length - 1]!.loss : null,
      initialValLoss: st.initialValLoss,
    };
  }

  /** The result of a finished run, from its summary; nothing is written. */
  private completedResult(): TrainResult {
    const st = this.state;
    this.progress.message(
      `the run in ${this.runDir} is already complete (step ${st.step}/${st.totalSteps}${st.stoppedEarly ? ', early stopping' : ''}); nothing to do`,
    );
    const summary = readJsonSync<Partial<TrainResult>>(join(this.runDir, SUMMARY_FILE));
    return {
      ...this.progressFields(),
      stoppedEarly: st.stoppedEarly === true,
      interrupted: false,
      alreadyComplete: true,
      ...this.method.outputs(this.runDir),
      mergedDir: typeof summary.mergedDir === 'string' ? summary.mergedDir : null,
      tokensPerSecond: typeof summary.tokensPerSecond === 'number' ? summary.tokensPerSecond : 0,
      peakGpuBytes: typeof summary.peakGpuBytes === 'number' ? summary.peakGpuBytes : 0,
      precision: this.precision,
      lossScaling: this.lossScaling(),
    };
  }

  /** The message a non-finite step ends the run with: what happened, what was kept, what to try. */
  private stopped(err: NonFiniteError): NonFiniteError {
    const last = latestCheckpoint(this.runDir);
    const kept = last ? `the last checkpoint (step ${last.step}, ${last.dir}) is kept` : 'no checkpoint was written';
    return new NonFiniteError(
      `training stopped at ${err.message}. Nothing of this step was applied or saved; ${kept}. ` +
        `Check those examples, or lower training.lr (now ${this.cfg.training.lr})${this.cfg.training.max_grad_norm === null ? ' or set training.max_grad_norm' : ''}.`,
    );
  }

  private warnedMemory = false;
  /** Warns once when the pool's peak comes within 10% of the device's memory (a longer batch may not fit). */
  private warnMemory(peak: number): void {
    const { capacityBytes: capacity, capacitySource: source } = engine().pool;
    if (!this.warnedMemory && capacity !== null && peak > 0.9 * capacity) {
      this.warnedMemory = true;
      this.progress.message(
        `warning: GPU memory in use peaked at ${formatBytes(peak)}, ${((100 * peak) / capacity).toFixed(0)}% of the device's ${formatBytes(capacity)} (${source}). ` +
          memoryAdvice(this.cfg, this.model.config, microBatch(this.cfg)),
      );
    }
  }

  /** Writes a checkpoint of everything needed to continue exactly where this step ends. */
  async checkpoint(): Promise<string> {
    const st = this.state;
    st.loader = this.loader.state();
    const named = this.model.namedTrainableParameters();
    const opt = await this.optimizer.exportState();
    const dir = await saveCheckpoint(this.runDir, st.step, this.cfg.training.keep_last_checkpoints, async (tmp) => {
      await this.method.save(this.model, this.cfg, join(tmp, this.method.outputDir));
      const entries: { name: string; dtype: 'F32'; shape: number[]; data: Float32Array }[] = [];
      const names = [...named.keys()];
      opt.moments.forEach((m, i) => {
        const name = names[i]!;
        entries.push({ name: `${name}.exp_avg`, dtype: 'F32', shape: [m.expAvg.length], data: m.expAvg });
        entries.push({ name: `${name}.exp_avg_sq`, dtype: 'F32', shape: [m.expAvgSq.length], data: m.expAvgSq });
      });
      const bad = entries.map((e) => ({ name: e.name, count: nonFiniteCount(e.data) })).filter((f) => f.count > 0);
      if (bad.length > 0)
        throw new NonFiniteError(`refusing to write checkpoint ${st.step}: ${describeNonFinite(bad)}`);
      await writeSafetensors(join(tmp, 'optimizer.safetensors'), entries, { step: String(opt.step) });
      saveResolvedConfig(this.cfg, tmp); // what resume compares its config with
      writeJsonSync(join(tmp, 'trainer_state.json'), st);
    });
    this.progress.message(`checkpoint: ${dir}`);
    return dir;
  }

  private async restore(latest: { step: number; dir: string }): Promise<void> {
    const dir = latest.dir;
    const st = readTrainerState(join(dir, 'trainer_state.json'), latest.step);
    const diffs = checkResumeConfig(this.cfg, dir, this.runDir, this.opts.allowConfigChange ?? false);
    // `auto` resolves per adapter: the same config can mean another precision on another machine.
    const savedPrecision = st.precision ?? 'fp32';
    if (savedPrecision !== this.precision && !this.opts.allowConfigChange) {
      throw new InputError(
        `checkpoint was trained in precision ${savedPrecision}, the config now gives ${this.precision}${this.cfg.training.precision === 'auto' ? ' (auto on this adapter)' : ''}; resume with training.precision: ${savedPrecision} or pass --allow-config-change`,
        { file: join(dir, 'trainer_state.json') },
      );
    }
    if (diffs.length > 0)
      this.progress.message(
        `warning: resuming with settings that differ from the checkpoint's: ${formatDifferences(diffs)}`,
      );
    if (st.totalSteps !== this.schedule.totalSteps) {
      if (!this.opts.allowConfigChange) {
        throw new InputError(
          `checkpoint was made for ${st.totalSteps} total steps but the config now gives ${this.schedule.totalSteps}; resume with the same training settings or pass --allow-config-change`,
          { file: join(dir, 'trainer_state.json') },
        );
      }
      st.totalSteps = this.schedule.totalSteps;
    }
    // Weights go into the existing parameter tensors: the optimizer holds references to them.
    await this.method.restore(this.model, dir);
    const named = this.model.namedTrainableParameters();
    const names = [...named.keys()];
    const optimizerFile = join(dir, 'optimizer.safetensors');
    const tensors = await readSafetensorsF32(optimizerFile);
    refuseNonFinite(tensors, optimizerFile);
    const optStep = Number(tensors.metadata.step);
    // Steps skipped under loss scaling did not advance the optimizer (GradScaler semantics).
    const skippedSteps = st.lossScaler?.skippedSteps ?? 0;
    if (optStep !== st.step - skippedSteps) {
      throw new InputError(
        `optimizer state is for step ${tensors.metadata.step ?? '(none)'}, trainer_state.json for step ${st.step}${skippedSteps ? ` with ${skippedSteps} skipped` : ''}`,
        { file: optimizerFile, key: '__metadata__.step' },
      );
    }
    this.optimizer.importState({
      step: optStep,
      moments: names.map((n) => {
        const m = tensors.get(`${n}.exp_avg`);
        const v = tensors.get(`${n}.exp_avg_sq`);
        if (!m || !v) throw new InputError(`optimizer state for '${n}' is missing`, { file: optimizerFile });
        if (m.length !== named.get(n)!.numel || v.length !== m.length)
          throw new InputError(`optimizer state for '${n}' has ${m.length} values, expected ${named.get(n)!.numel}`, {
            file: optimizerFile,
          });
        return { expAvg: m, expAvgSq: v };
      }),
    });
    this.loader.restore(st.loader);
    if (this.scaler && st.lossScaler) this.scaler = new DynamicLossScaler(this.scaler.opts, st.lossScaler);
    st.precision = this.precision;
    this.state = st;
    // Metrics logged after this checkpoint by the interrupted run are dropped, so the log reads as one run.
    const metricsPath = join(this.runDir, 'metrics.jsonl');
    if (existsSync(metricsPath)) {
      const lines = readFileSync(metricsPath, 'utf8')
        .split('\n')
        .filter((l) => l.trim() !== '');
      const kept = lines.filter((l) => {
        try {
          return (JSON.parse(l) as MetricRecord).step <= st.step;
        } catch {
          return false;
        }
      });
      if (kept.length !== lines.length) await writeFileAtomic(metricsPath, kept.map((l) => l + '\n').join(''));
    }
  }

  dispose(): void {
    this.model.dispose();
    this.optimizer.dispose?.();
    setComputePrecision(this.previousPrecision);
  }
}

/** The micro-batch size of a config whose batch_size is resolved (not auto). */
function microBatch(cfg: ResolvedConfig): number {
  const b = cfg.training.batch_size;
  if (b === 'auto') throw new Error('training.batch_size: auto is resolved in TrainingRun.setup');
  return b;
}

/** The batch a run started with batch_size: auto chose (from its resolved-config.yaml), or null. */
function resolvedBatch(runDir: string): { batchSize: number; gradAccum: number } | null {
  const file = join(runDir, RESOLVED_CONFIG_NAME);
  if (!existsSync(file)) return null;
  const saved = YAML.parse(readFileSync(file, 'utf8')) as {
    training?: { batch_size?: unknown; grad_accum?: unknown };
  } | null;
  const b = saved?.training?.batch_size;
  const a = saved?.training?.grad_accum;
  return typeof b === 'number' && typeof a === 'number' ? { batchSize: b, gradAccum: a } : null;
}

/** `finllm train`: runs the whole recipe. */
export async function runTraining(cfg: ResolvedConfig, opts: TrainOptions = {}): Promise<TrainResult> {
  const trainer = await TrainingRun.setup(cfg, opts);
  try {
    return await trainer.train();
  } finally {
    trainer.dispose();
  }
}
