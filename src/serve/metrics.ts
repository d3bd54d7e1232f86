// The server's Prometheus metrics (GET /metrics, text exposition format), on a registry of its own
// so several servers in one process (tests) do not share counters.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { BatchScheduler } from './scheduler.js';

export class ServeMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<'endpoint' | 'model' | 'status'>;
  readonly cancelled: Counter<'model'>;
  readonly promptTokens: Counter<'model'>;
  readonly generationTokens: Counter<'model'>;
  readonly routed: Counter<'route' | 'arm'>;
  readonly timeToFirstToken: Histogram<'model'>;
  readonly timePerOutputToken: Histogram<'model'>;
  readonly requestDuration: Histogram<'model'>;
  private scheduler: BatchScheduler | null = null;

  constructor() {
    const registers = [this.registry];
    this.requests = new Counter({
      name: 'finllm_requests_total',
      help: 'HTTP requests by endpoint, model and status code',
      labelNames: ['endpoint', 'model', 'status'],
      registers,
    });
    this.cancelled = new Counter({
      name: 'finllm_requests_cancelled_total',
      help: 'Generation requests whose client went away before the end',
      labelNames: ['model'],
      registers,
    });
    this.promptTokens = new Counter({
      name: 'finllm_prompt_tokens_total',
      help: 'Prompt tokens of admitted generation requests',
      labelNames: ['model'],
      registers,
    });
    this.generationTokens = new Counter({
      name: 'finllm_generation_tokens_total',
      help: 'Tokens generated',
      labelNames: ['model'],
      registers,
    });
    this.routed = new Counter({
      name: 'finllm_route_requests_total',
      help: 'Requests to an A/B route, by the arm chosen',
      labelNames: ['route', 'arm'],
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: 'finllm_time_to_first_token_seconds',
      help: 'From the request arriving to its first generated token (queueing and prefill included)',
      labelNames: ['model'],
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.timePerOutputToken = new Histogram({
      name: 'finllm_time_per_output_token_seconds',
      help: 'Between consecutive generated tokens of a request',
      labelNames: ['model'],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers,
    });
    this.requestDuration = new Histogram({
      name: 'finllm_request_duration_seconds',
      help: 'From the request arriving to its last generated token',
      labelNames: ['model'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers,
    });
    const self = this;
    new Gauge({
      name: 'finllm_queue_depth',
      help: 'Requests waiting for a decode slot',
      registers,
      collect() {
        this.set(self.scheduler?.queueDepth ?? 0);
      },
    });
    new Gauge({
      name: 'finllm_running_requests',
      help: 'Requests holding a decode slot',
      registers,
      collect() {
        this.set(self.scheduler?.running ?? 0);
      },
    });
    const counter = (name: string, help: string, read: (s: BatchScheduler) => number) =>
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(self.scheduler ? read(self.scheduler) : 0);
        },
      });
    counter('finllm_decode_steps_total', 'Batched decode steps run', (s) => s.stats.decodeSteps);
    counter(
      'finllm_decode_rows_total',
      'Sum over decode steps of the rows holding a request (mean batch occupancy = rows / steps)',
      (s) => s.stats.decodeRows,
    );
    counter('finllm_prefills_total', 'Prompt prefills run', (s) => s.stats.prefills);
    counter('finllm_kv_cache_compactions_total', 'KV-cache compactions', (s) => s.stats.compactions);
    collectDefaultMetrics({ register: this.registry, prefix: 'finllm_' });
  }

  /** The scheduler whose queue and batch the gauges read. */
  attach(scheduler: BatchScheduler | null): void {
    this.scheduler = scheduler;
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
