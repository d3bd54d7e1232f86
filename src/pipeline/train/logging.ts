// Training logs: a console progress line (step, loss, lr, tokens/s, ETA, GPU memory), a JSONL file
// of every logged metric, and TensorBoard event files (written natively, see src/io/tfevents.ts).
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { formatBytes } from '../../engine/device-memory.js';

export { formatBytes };

import { escapeControl } from '../../errors.js';

export interface MetricRecord {
  step: number;
  /** Seconds since the run started. */
  time: number;
  [metric: string]: number | string | null;
}

export interface ScalarSink {
  scalar(tag: string, value: number, step: number): void;
  close(): void;
}

export class JsonlMetrics {
  readonly path: string;
  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    this.path = join(dir, 'metrics.jsonl');
  }
  write(rec: MetricRecord): void {
    // One line per record, appended whole: a crash can lose the last record but not corrupt earlier ones.
    appendFileSync(this.path, JSON.stringify(rec) + '\n');
  }
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0
    ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}`
    : `${m}:${String(sec).padStart(2, '0')}`;
}

/** A one-line progress bar on a TTY; plain lines otherwise (CI logs). */
export class ConsoleProgress {
  private readonly tty = Boolean(process.stderr.isTTY);
  constructor(
    private readonly total: number,
    private readonly enabled: boolean,
  ) {}

  update(p: {
    step: number;
    loss: number;
    lr: number;
    tokensPerSec: number;
    elapsed: number;
    memBytes: number;
    gradNorm?: number | null;
    lossScale?: number;
  }): void {
    if (!this.enabled) return;
    const frac = Math.min(1, p.step / this.total);
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = '█'.repeat(filled) + '░'.repeat(width - filled);
    const eta = p.step > 0 ? (p.elapsed / p.step) * (this.total - p.step) : NaN;
    const line =
      `${bar} step ${p.step}/${this.total} loss ${p.loss.toFixed(4)} lr ${p.lr.toExponential(2)}` +
      (p.gradNorm != null ? ` |g| ${p.gradNorm.toFixed(3)}` : '') +
      (p.lossScale !== undefined ? ` scale ${p.lossScale}` : '') +
      ` ${p.tokensPerSec.toFixed(0)} tok/s ETA ${formatDuration(eta)} mem ${formatBytes(p.memBytes)}`;
    if (this.tty) process.stderr.write(`\r${line}\x1b[K`);
    else process.stderr.write(line + '\n');
  }

  message(text: string): void {
    if (!this.enabled) return;
    // Messages quote paths and config values: their control characters are shown, not obeyed.
    process.stderr.write((this.tty ? '\r\x1b[K' : '') + escapeControl(text) + '\n');
  }

  done(): void {
    if (this.enabled && this.tty) process.stderr.write('\n');
  }
}
