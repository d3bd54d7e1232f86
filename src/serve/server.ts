// The HTTP side of `finllm serve`: an OpenAI-compatible API on fastify over the batch scheduler.
//
//   POST /v1/completions, POST /v1/chat/completions   (stream: server-sent events, then [DONE])
//   GET  /v1/models, /v1/models/:id                    (base, adapters, A/B routes)
//   GET  /health                                       (200 ready; 503 loading / draining / failed)
//   GET  /metrics                                      (Prometheus text format)
//
// The server listens before the model is loaded and answers 503 until setReady(). Every path but
// /health and /metrics needs the API key when one is set (Bearer; compared in constant time through
// SHA-256 digests). Both the key and the 503 gate look at the route the router matched, never at
// the raw URL, which the router percent-decodes (`/%761/models` is /v1/models). shutdown() stops
// accepting (new requests and /health get 503, the listener stays open), lets queued and running
// generations finish, cancels what is left after the drain timeout, then closes.
import { createHash, randomInt, randomUUID, timingSafeEqual } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { InputError } from '../errors.js';
import type { ChatTemplateLimits } from '../llama/chat-template.js';
import { batchPadToken } from '../llama/generate.js';
import { type KvCacheDtype, type KvCacheSetting, resolveKvCacheDtype } from '../llama/model.js';
import { ChatTemplateError } from '../llama/tokenizer.js';
import type { ServingModels } from './load.js';
import { ServeMetrics } from './metrics.js';
import {
  ApiError,
  type ChatRequest,
  CompletionBodies,
  type CompletionRequest,
  chatRequest,
  completionRequest,
  messageText,
  parseBody,
  usage,
} from './protocol.js';
import { BASE_ALIAS, ModelRouter, type Resolved, type RouteSpec } from './routing.js';
import {
  BatchScheduler,
  type GenerationResult,
  maxDecodeSlots,
  QueueFullError,
  RequestCancelledError,
  SchedulerClosedError,
  type TokenSampling,
} from './scheduler.js';
import { StopTextStream } from './text.js';

export interface ServerOptions {
  host?: string;
  port?: number;
  /** Bearer key required on every path but /health and /metrics (none: open; empty or blank: refused). */
  apiKey?: string | null;
  /** Largest request body in bytes (default 1 MiB). */
  bodyLimit?: number;
  /** Decode slots per model variant (default 8). */
  maxBatchSize?: number;
  /** Requests waiting for a slot before 429 (default 64). */
  maxQueue?: number;
  /** Model ids: the base, the adapters (served once loaded), the A/B routes. */
  baseId: string;
  adapterNames?: readonly string[];
  routes?: readonly RouteSpec[];
  routeSeed?: number;
  /** fastify's request log (pino JSON lines on stdout). */
  logRequests?: boolean;
  /** Scheduler KV-cache slack (tests shrink it to exercise compaction). */
  kvSlack?: number;
  /** Storage of the KV caches: f32, f16, or auto (the default: f16 when the engine runs fp16-mixed at setReady). */
  kvCache?: KvCacheSetting;
  /** Where warnings and runtime errors go (default stderr). */
  log?: (line: string) => void;
  /**
   * The training template's layout (serve --template / --run): completion prompts fill its main
   * field; under the chat template they are a user message, and chat requests use the training
   * layout of chat records when the tokenizer has no chat template. None: prompts as given.
   */
  promptLayout?: PromptLayout | null;
}

/** A training template's layout of prompts (src/pipeline/data/prompt-layout.ts builds one). */
export interface PromptLayout {
  template: string;
  completion(prompt: string): { prompt: string; rendered: boolean };
  chat(messages: readonly { role: string; content: string }[]): { prompt: string; rendered: boolean };
}

type State = 'loading' | 'ready' | 'draining' | 'failed';

/** Per-request bookkeeping for metrics. */
interface RequestInfo {
  start: number;
  model: string;
}

const DEFAULT_COMPLETION_MAX_TOKENS = 16; // OpenAI's default for /v1/completions

/** Routes open without the API key and answered while loading or draining. */
const OPEN_ROUTES = new Set(['/health', '/metrics']);

/**
 * A chat template's render for a request: its time, and the items of any list it builds (a for
 * loop prepares all its items before the clock is looked at again). The size of its strings is
 * bounded per request by what the context can hold (see promptCharLimit).
 */
const CHAT_TEMPLATE_TIME_MS = 1000;
const CHAT_TEMPLATE_ITEMS = 1 << 16;

/**
 * Refuses an API key that would switch authentication off or lock everyone out: empty, blank,
 * surrounded by spaces (HTTP strips them from a header), or with characters a header cannot carry
 * reliably (controls, non-ASCII). `source` names the flag or variable it came from.
 */
export function checkApiKey(key: string, source = 'api-key'): void {
  const why =
    key === ''
      ? 'is empty (leave it out to run without a key)'
      : key.trim() === ''
        ? 'is blank'
        : key !== key.trim()
          ? 'starts or ends with white space, which HTTP drops from the Authorization header'
          : !/^[\x20-\x7e]+$/.test(key)
            ? 'has characters other than printable ASCII'
            : null;
  if (why) throw new InputError(`the API key ${why}`, source === 'api-key' ? { flag: source } : { key: source });
}

export class FinllmServer {
  readonly app: FastifyInstance;
  readonly metrics = new ServeMetrics();
  readonly router: ModelRouter;
  private state: State = 'loading';
  private failure = '';
  private models: ServingModels | null = null;
  private scheduler: BatchScheduler | null = null;
  private readonly keyDigest: Buffer | null;
  private readonly info = new WeakMap<FastifyRequest, RequestInfo>();
  private readonly created = Math.floor(Date.now() / 1000);
  private readonly log: (line: string) => void;

  constructor(private readonly opts: ServerOptions) {
    this.router = new ModelRouter(opts.baseId, opts.adapterNames ?? [], opts.routes ?? [], opts.routeSeed ?? 0);
    if (opts.apiKey !== undefined && opts.apiKey !== null) checkApiKey(opts.apiKey);
    this.keyDigest = opts.apiKey ? digest(opts.apiKey) : null;
    this.log = opts.log ?? ((line) => void process.stderr.write(`${line}\n`));
    this.app = Fastify({
      logger: opts.logRequests ?? false,
      bodyLimit: opts.bodyLimit ?? 1 << 20,
      return503OnClosing: false,
      forceCloseConnections: 'idle',
      // A "__proto__" or "constructor" key is dropped like any unknown field, not called invalid JSON.
      onProtoPoisoning: 'remove',
      onConstructorPoisoning: 'remove',
      // Errors raised before routing (a malformed percent-encoding) and at the HTTP parser (headers
      // too large, a malformed request) answer in OpenAI's shape too.
      frameworkErrors: (err, _request, reply) => {
        void (reply as unknown as FastifyReply)
          .code(400)
          .send(new ApiError(400, `bad request: ${err.message}`, 'invalid_request_error', 'invalid_request').body());
      },
      clientErrorHandler: (err, socket) => writeClientError(err, socket),
    });
    this.routes();
  }

  /** Starts listening; returns the base URL. */
  async listen(): Promise<string> {
    const url = await this.app.listen({ host: this.opts.host ?? '127.0.0.1', port: this.opts.port ?? 8000 });
    return url.replace('[::1]', 'localhost');
  }

  /** The port actually bound (port 0 picks a free one). */
  get port(): number {
    const a = this.app.server.address();
    return typeof a === 'object' && a ? a.port : 0;
  }

  /** Serves `models` from now on. */
  /**
   * Serves `models` from now on. A --max-batch-size whose KV caches the GPU cannot hold is an
   * InputError naming the largest that fits.
   */
  setReady(models: ServingModels): void {
    const missing = (this.opts.adapterNames ?? []).filter((n) => !models.adapters.has(n));
    if (missing.length) throw new Error(`setReady: adapters ${missing.join(', ')} were not loaded`);
    const maxBatchSize = this.opts.maxBatchSize ?? 8;
    const kvCacheDtype = resolveKvCacheDtype(this.opts.kvCache);
    const fits = maxDecodeSlots(models.model, {
      contextLength: models.contextLength,
      kvCacheDtype,
      variants: 1 + models.adapters.size,
      ...(this.opts.kvSlack !== undefined ? { slack: this.opts.kvSlack } : {}),
    });
    if (maxBatchSize > fits.slots)
      throw new InputError(
        `expected at most ${fits.slots} decode slots per model here, got ${maxBatchSize}: ${fits.why}`,
        { flag: 'max-batch-size' },
      );
    this.models = models;
    this.scheduler = new BatchScheduler(models.model, {
      maxBatchSize,
      maxQueue: this.opts.maxQueue ?? 64,
      contextLength: models.contextLength,
      padToken: batchPadToken(models.model, models.eosIds),
      ...(this.opts.kvSlack !== undefined ? { slack: this.opts.kvSlack } : {}),
      kvCacheDtype,
      onError: (err) =>
        this.log(
          `finllm serve: runtime failure in a decode step: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
        ),
    });
    this.metrics.attach(this.scheduler);
    this.state = 'ready';
  }

  /** Loading failed: /health and /v1/* answer 503 with the reason until the process exits. */
  setFailed(reason: string): void {
    this.failure = reason;
    this.state = 'failed';
  }

  get kvCache(): { positions: number; dtype: KvCacheDtype; bytesPerVariant: number } | null {
    return this.scheduler?.cacheGeometry() ?? null;
  }

  /**
   * Graceful stop: refuse new work (503), let queued and running generations finish (up to
   * `drainTimeoutMs`, then cancel them), close the listener and connections, free the KV caches.
   * The models stay loaded (the caller owns them). Resolves whether everything finished in time.
   */
  async shutdown(drainTimeoutMs = 30_000): Promise<{ drained: boolean }> {
    if (this.state === 'ready' || this.state === 'loading') this.state = 'draining';
    this.scheduler?.stopAccepting();
    // The listener stays open while draining, so /health can say so (load balancers take the
    // instance out) and new requests get a 503 rather than a refused connection.
    let drained = true;
    if (this.scheduler) {
      let timer: NodeJS.Timeout | undefined;
      drained = await Promise.race([
        this.scheduler.whenIdle().then(() => true),
        new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), drainTimeoutMs))),
      ]);
      clearTimeout(timer);
      if (!drained) this.scheduler.cancelAll('the server shut down before this request finished');
    }
    await this.app.close();
    await this.scheduler?.close();
    return { drained };
  }

  // ---- routes -------------------------------------------------------------------------------

  private routes(): void {
    const app = this.app;
    app.addHook('onRequest', async (request, reply) => {
      const info: RequestInfo = { start: performance.now(), model: '' };
      this.info.set(request, info);
      // The route the router matched (undefined: none). The raw URL is not looked at: the router
      // decodes it, so a check on request.url can be passed by spelling the path differently.
      const route = request.routeOptions.url;
      const open = route !== undefined && OPEN_ROUTES.has(route);
      reply.raw.once('close', () => {
        if (open) return;
        // A client gone before any response was sent counts as 499 (nginx's "client closed request").
        const status = reply.raw.headersSent ? String(reply.raw.statusCode) : '499';
        this.metrics.requests.inc({ endpoint: route ?? 'unmatched', model: info.model, status });
      });
      if (this.state === 'draining') void reply.header('connection', 'close');
      if (open) return;
      this.authorize(request);
      if (route !== undefined && this.state !== 'ready') throw this.unavailable();
    });

    app.setErrorHandler((err, request, reply) => {
      const e = this.toApiError(err);
      if (e.status >= 500 && e.code === 'internal_error')
        this.log(`finllm serve: ${request.method} ${request.url}: ${(err as Error).stack ?? String(err)}`);
      void reply.code(e.status).headers(e.headers).send(e.body());
    });
    app.setNotFoundHandler((request, reply) => {
      const e = new ApiError(
        404,
        `no route ${request.method} ${request.url.split('?')[0]}`,
        'invalid_request_error',
        'not_found',
      );
      void reply.code(404).send(e.body());
    });

    app.get('/health', async (_request, reply) => {
      if (this.state === 'ready') return { status: 'ok' };
      return reply
        .code(503)
        .header('retry-after', '5')
        .send({ status: this.state, ...(this.failure ? { error: this.failure } : {}) });
    });

    app.get('/metrics', async (_request, reply) => {
      const text = await this.metrics.text();
      return reply.header('content-type', this.metrics.contentType).send(text);
    });

    app.get('/v1/models', async () => ({ object: 'list', data: this.router.ids().map((m) => this.modelCard(m)) }));
    // A wildcard: model ids may contain '/' (org/name).
    app.get<{ Params: { '*': string } }>('/v1/models/*', async (request) => {
      const id = request.params['*'];
      // "base" names the base model in requests, so it does here too.
      const m = this.router.ids().find((x) => x.id === (id === BASE_ALIAS ? this.router.baseId : id));
      if (!m) throw modelNotFound(id);
      return this.modelCard(m);
    });

    app.post('/v1/completions', async (request, reply) => this.generate('completion', request, reply));
    app.post('/v1/chat/completions', async (request, reply) => this.generate('chat', request, reply));
  }

  private modelCard(m: ReturnType<ModelRouter['ids']>[number]): Record<string, unknown> {
    return {
      id: m.id,
      object: 'model',
      created: this.created,
      owned_by: 'finllm',
      root: m.kind === 'base' ? m.id : null,
      parent: m.kind === 'adapter' ? this.router.baseId : null,
      max_model_len: this.models?.contextLength ?? null,
      ...(m.route ? { route: { arms: m.route.arms } } : {}),
    };
  }

  private authorize(request: FastifyRequest): void {
    if (!this.keyDigest) return;
    const header = request.headers.authorization;
    const challenge = { 'www-authenticate': 'Bearer' };
    const m = typeof header === 'string' ? /^Bearer\s+(.+)$/i.exec(header.trim()) : null;
    if (!m)
      throw new ApiError(
        401,
        'missing API key: send it as "Authorization: Bearer KEY"',
        'invalid_request_error',
        'invalid_api_key',
        null,
        challenge,
      );
    // Equal-length digests, so timingSafeEqual's time does not depend on where the keys differ.
    if (!timingSafeEqual(digest(m[1]!), this.keyDigest))
      throw new ApiError(401, 'incorrect API key', 'invalid_request_error', 'invalid_api_key', null, challenge);
  }

  private unavailable(): ApiError {
    const why =
      this.state === 'loading'
        ? 'the model is still loading'
        : this.state === 'draining'
          ? 'the server is shutting down'
          : `the model failed to load: ${this.failure}`;
    return new ApiError(
      503,
      why,
      'service_unavailable',
      this.state === 'loading' ? 'model_loading' : 'unavailable',
      null,
      this.state === 'loading' ? { 'retry-after': '5' } : {},
    );
  }

  private toApiError(err: unknown): ApiError {
    if (err instanceof ApiError) return err;
    if (err instanceof InputError) return new ApiError(400, err.message);
    const e = err as { statusCode?: number; code?: string; message?: string };
    if (typeof e.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
      // fastify's own: malformed JSON (400), body over the limit (413), unsupported media type (415)…
      const code =
        e.code === 'FST_ERR_CTP_BODY_TOO_LARGE'
          ? 'request_too_large'
          : e.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE'
            ? 'unsupported_media_type'
            : 'invalid_request';
      return new ApiError(e.statusCode, e.message ?? 'bad request', 'invalid_request_error', code);
    }
    return new ApiError(500, 'internal server error', 'server_error', 'internal_error');
  }

  // ---- generation ---------------------------------------------------------------------------

  private async generate(kind: 'completion' | 'chat', request: FastifyRequest, reply: FastifyReply): Promise<unknown> {
    const models = this.models!;
    const info = this.info.get(request)!;
    const body = kind === 'chat' ? parseBody(chatRequest, request.body) : parseBody(completionRequest, request.body);
    const resolved = this.router.resolve(body.model, body.user);
    if (!resolved) throw modelNotFound(body.model);
    info.model = resolved.model;
    const id = `${kind === 'chat' ? 'chatcmpl' : 'cmpl'}-${randomUUID().replaceAll('-', '')}`;
    const headers = { 'x-request-id': id, ...routeHeaders(resolved) };
    if (resolved.route) this.metrics.routed.inc({ route: resolved.route.name, arm: resolved.route.arm });

    const { promptIds, maxTokens } = this.admit(kind, body);
    const sampling = this.sampling(body);
    const stops =
      body.stop === undefined || body.stop === null ? [] : typeof body.stop === 'string' ? [body.stop] : body.stop;
    const text = new StopTextStream(models.tokenizer.streamDecoder(), stops);
    const stream = body.stream === true;
    const bodies = new CompletionBodies(
      kind,
      id,
      Math.floor(Date.now() / 1000),
      resolved.model,
      stream && body.stream_options?.include_usage === true,
    );
    const abort = new AbortController();
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) abort.abort();
    });

    const model = { model: resolved.model };
    let last = 0;
    let generated = 0;
    const onToken = (tokenId: number): void | 'stop' => {
      const now = performance.now();
      if (generated === 0) this.metrics.timeToFirstToken.observe(model, (now - info.start) / 1000);
      else this.metrics.timePerOutputToken.observe(model, (now - last) / 1000);
      last = now;
      generated++;
      this.metrics.generationTokens.inc(model);
      const t = text.push(tokenId);
      if (stream && t) reply.raw.write(bodies.piece(t, null));
      return text.stopped ? 'stop' : undefined;
    };
    const done = this.submit({
      variant: { name: resolved.model, lora: resolved.adapter ? models.adapters.get(resolved.adapter)! : null },
      promptIds,
      maxTokens,
      sampling,
      seed: body.seed ?? randomInt(2 ** 31),
      eosIds: new Set(models.eosIds),
      signal: abort.signal,
      onToken,
    });
    this.metrics.promptTokens.inc(model, promptIds.length);
    const finished = (r: GenerationResult) => {
      this.metrics.requestDuration.observe(model, (performance.now() - info.start) / 1000);
      // A stop sequence ends generation as EOS does.
      return {
        finish: text.stopped ? 'stop' : r.finishReason,
        rest: text.finish(),
        usage: usage(promptIds.length, r.tokens.length),
      };
    };
    const cancelled = (err: unknown): boolean => {
      if (!(err instanceof RequestCancelledError && abort.signal.aborted)) return false;
      this.metrics.cancelled.inc(model);
      return true;
    };

    if (!stream) {
      let r: GenerationResult;
      try {
        r = await done;
      } catch (err) {
        if (cancelled(err)) return reply.hijack();
        if (err instanceof RequestCancelledError)
          throw new ApiError(503, err.message, 'service_unavailable', 'unavailable');
        throw err;
      }
      const f = finished(r);
      void reply.headers(headers);
      return bodies.whole(text.fullText, f.finish, f.usage);
    }

    reply.hijack();
    reply.raw.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      ...headers,
    });
    const opening = bodies.opening();
    if (opening) reply.raw.write(opening);
    try {
      const f = finished(await done);
      if (f.rest) reply.raw.write(bodies.piece(f.rest, null));
      reply.raw.write(bodies.piece('', f.finish));
      if (bodies.includeUsage) reply.raw.write(bodies.usageEvent(f.usage));
      reply.raw.write('data: [DONE]\n\n');
    } catch (err) {
      if (!cancelled(err)) {
        const e =
          err instanceof RequestCancelledError
            ? new ApiError(503, err.message, 'service_unavailable', 'unavailable')
            : this.toApiError(err);
        if (e.code === 'internal_error')
          this.log(`finllm serve: ${request.method} ${request.url}: ${(err as Error).stack ?? String(err)}`);
        reply.raw.write(`data: ${JSON.stringify(e.body())}\n\n`);
        reply.raw.write('data: [DONE]\n\n');
      }
    }
    reply.raw.end();
    return undefined;
  }

  /** The request's prompt tokens and how many to generate, refused where they do not fit the context. */
  private admit(
    kind: 'completion' | 'chat',
    body: ChatRequest | CompletionRequest,
  ): { promptIds: number[]; maxTokens: number } {
    const C = this.models!.contextLength;
    const promptIds =
      kind === 'chat' ? this.chatPrompt(body as ChatRequest) : this.completionPrompt(body as CompletionRequest);
    const P = promptIds.length;
    if (P >= C) {
      throw new ApiError(
        413,
        `the prompt is ${P} tokens; this server's context is ${C} tokens (--max-model-len), leaving no room to generate`,
        'invalid_request_error',
        'context_length_exceeded',
        kind === 'chat' ? 'messages' : 'prompt',
      );
    }
    const asked = kind === 'chat' ? ((body as ChatRequest).max_completion_tokens ?? body.max_tokens) : body.max_tokens;
    const maxTokens = asked ?? (kind === 'chat' ? C - P : Math.min(DEFAULT_COMPLETION_MAX_TOKENS, C - P));
    if (P + maxTokens > C) {
      throw new ApiError(
        400,
        `the context is ${C} tokens; the request asks for ${P + maxTokens} (${P} in the prompt, ${maxTokens} to generate)`,
        'invalid_request_error',
        'context_length_exceeded',
        'max_tokens',
      );
    }
    return { promptIds, maxTokens };
  }

  /** Queues a generation; a full queue is 429 (retry after a second), a closing scheduler 503. */
  private submit(request: Parameters<BatchScheduler['submit']>[0]): Promise<GenerationResult> {
    let done: Promise<GenerationResult>;
    try {
      done = this.scheduler!.submit(request);
    } catch (err) {
      if (err instanceof QueueFullError)
        throw new ApiError(429, `${err.message}; retry later`, 'rate_limit_error', 'queue_full', null, {
          'retry-after': '1',
        });
      if (err instanceof SchedulerClosedError) throw this.unavailable();
      throw err;
    }
    done.catch(() => undefined); // handled where it is awaited; never an unhandled rejection
    return done;
  }

  /**
   * The longest text that can still fit the context: a text of L characters has at least
   * L / maxTokenChars tokens (LlamaTokenizer.maxTokenChars), and a prompt needs fewer than C tokens.
   * Longer text is refused before tokenizing, which is slow (seconds per megabyte) and would hold
   * the event loop, /health and every stream with it.
   */
  private promptCharLimit(): number {
    return (this.models!.contextLength - 1) * this.models!.tokenizer.maxTokenChars;
  }

  private promptTooLong(chars: number, param: 'prompt' | 'messages'): ApiError {
    const { contextLength: C, tokenizer } = this.models!;
    const what = param === 'prompt' ? 'the prompt has' : 'the chat prompt (the messages in the chat template) has';
    return new ApiError(
      413,
      `${what} ${chars} characters or more, so at least ${Math.ceil(chars / tokenizer.maxTokenChars)} tokens (no token is longer than ${tokenizer.maxTokenChars} characters); this server's context is ${C} tokens (--max-model-len), leaving no room to generate`,
      'invalid_request_error',
      'context_length_exceeded',
      param,
    );
  }

  private encodeBounded(text: string): number[] {
    if (text.length > this.promptCharLimit()) throw this.promptTooLong(text.length, 'prompt');
    const layout = this.opts.promptLayout;
    if (!layout) return this.models!.tokenizer.encode(text);
    if (layout.template === 'chat' && this.models!.tokenizer.hasChatTemplate)
      return this.encodeChatMessages([{ role: 'user', content: text }], 'prompt');
    // The layout adds a bounded amount of template text around the prompt.
    const r = this.laidOut(() => layout.completion(text), 'prompt');
    if (r.prompt.length > this.promptCharLimit()) throw this.promptTooLong(r.prompt.length, 'prompt');
    return r.rendered
      ? this.models!.tokenizer.encode(r.prompt, { addSpecialTokens: false })
      : this.models!.tokenizer.encode(r.prompt);
  }

  private completionPrompt(body: CompletionRequest): number[] {
    const p = body.prompt;
    if (typeof p === 'string') return this.encodeBounded(p);
    const first = p[0]!;
    if (typeof first === 'string') return this.encodeBounded(first);
    const ids = typeof first === 'number' ? (p as number[]) : (first as number[]);
    const V = this.models!.model.config.vocabSize;
    const bad = ids.findIndex((t) => t >= V);
    if (bad >= 0)
      throw new ApiError(
        400,
        `prompt token ${ids[bad]} at position ${bad} is outside the vocabulary (size ${V})`,
        'invalid_request_error',
        'invalid_value',
        'prompt',
      );
    return [...ids];
  }

  private chatPrompt(body: ChatRequest): number[] {
    const tok = this.models!.tokenizer;
    const layout = this.opts.promptLayout;
    const trainingLayout = !tok.hasChatTemplate && layout?.template === 'chat';
    if (!tok.hasChatTemplate && !trainingLayout) {
      throw new ApiError(
        400,
        `model ${body.model} has no chat template: start the server with --chat-template FILE, or use /v1/completions`,
        'invalid_request_error',
        'no_chat_template',
        'messages',
      );
    }
    // OpenAI's "developer" role is the newer name of "system"; chat templates know only the latter.
    const messages = body.messages.map((m) => ({
      role: m.role === 'developer' ? 'system' : m.role,
      content: messageText(m.content),
    }));
    if (trainingLayout) {
      const chars = messages.reduce((n, m) => n + m.content.length, 0);
      if (chars > this.promptCharLimit()) throw this.promptTooLong(chars, 'messages');
      const r = this.laidOut(() => layout!.chat(messages), 'messages');
      if (r.prompt.length > this.promptCharLimit()) throw this.promptTooLong(r.prompt.length, 'messages');
      return r.rendered ? tok.encode(r.prompt, { addSpecialTokens: false }) : tok.encode(r.prompt);
    }
    return this.encodeChatMessages(messages, 'messages');
  }

  /** A prompt through the training layout; a record it cannot lay out is the request's fault (400). */
  private laidOut(
    render: () => { prompt: string; rendered: boolean },
    param: 'prompt' | 'messages',
  ): { prompt: string; rendered: boolean } {
    try {
      return render();
    } catch (err) {
      throw new ApiError(
        400,
        `the ${this.opts.promptLayout!.template} training template cannot lay out the ${param}: ${(err as Error).message}`,
        'invalid_request_error',
        'template_error',
        param,
      );
    }
  }

  /** Messages through the tokenizer's chat template, within the size, item and time limits. */
  private encodeChatMessages(messages: { role: string; content: string }[], param: 'prompt' | 'messages'): number[] {
    const tok = this.models!.tokenizer;
    const limits: ChatTemplateLimits = {
      maxChars: this.promptCharLimit(),
      maxItems: CHAT_TEMPLATE_ITEMS,
      timeoutMs: CHAT_TEMPLATE_TIME_MS,
    };
    try {
      // The render's output is bounded by maxChars, so what gets tokenized is within promptCharLimit.
      return tok.encodeChat(messages, { addGenerationPrompt: true, limits });
    } catch (err) {
      if (!(err instanceof ChatTemplateError)) throw err;
      if (err.limit === 'chars') throw this.promptTooLong(limits.maxChars, param);
      // The operator needs the template's file; the client gets the reason alone.
      if (err.limit !== null) this.log(`finllm serve: ${err.message}`);
      throw new ApiError(
        400,
        `the chat template failed to render the messages: ${err.reason}`,
        'invalid_request_error',
        'chat_template_error',
        param,
      );
    }
  }

  /**
   * Sampling settings: the request's, else generation_config.json's values, else OpenAI's defaults
   * (temperature 1, top_p 1; no top-k, no penalties). temperature 0 is greedy decoding.
   */
  private sampling(body: CompletionRequest | ChatRequest): TokenSampling {
    const gen = this.models!.generation;
    const V = this.models!.model.config.vocabSize;
    const temperature = body.temperature ?? gen.temperature ?? 1;
    const topK = body.top_k === undefined || body.top_k === null ? (gen.topK ?? 0) : Math.max(0, body.top_k);
    const s: TokenSampling = {
      greedy: temperature === 0,
      temperature: temperature === 0 ? 1 : temperature,
      topK,
      topP: body.top_p ?? gen.topP ?? 1,
      repetitionPenalty: body.repetition_penalty ?? gen.repetitionPenalty ?? 1,
      presencePenalty: body.presence_penalty ?? 0,
      frequencyPenalty: body.frequency_penalty ?? 0,
    };
    if (body.logit_bias) {
      const bias = new Map<number, number>();
      for (const [k, v] of Object.entries(body.logit_bias)) {
        const tokenId = Number(k);
        if (tokenId >= V)
          throw new ApiError(
            400,
            `logit_bias: token ${tokenId} is outside the vocabulary (size ${V})`,
            'invalid_request_error',
            'invalid_value',
            'logit_bias',
          );
        bias.set(tokenId, v);
      }
      s.logitBias = bias;
    }
    return s;
  }
}

/**
 * An error of the HTTP parser (before fastify sees a request): headers too large (431), a request
 * timeout (408), anything else malformed (400), answered in OpenAI's shape, then the connection closed.
 */
function writeClientError(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const [status, reason, message] =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', 'the request headers are too large']
      : err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? [408, 'Request Timeout', 'the request took too long to arrive']
        : [400, 'Bad Request', `malformed HTTP request (${err.code ?? 'parse error'})`];
  const body = JSON.stringify(
    new ApiError(
      status,
      message,
      'invalid_request_error',
      status === 431 ? 'headers_too_large' : 'invalid_request',
    ).body(),
  );
  socket.end(
    `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest();
}

function modelNotFound(id: string): ApiError {
  return new ApiError(
    404,
    `the model ${JSON.stringify(id)} does not exist (GET /v1/models lists them)`,
    'invalid_request_error',
    'model_not_found',
    'model',
  );
}

function routeHeaders(r: Resolved): Record<string, string> {
  return {
    'x-finllm-model': r.model,
    ...(r.route ? { 'x-finllm-route': r.route.name, 'x-finllm-route-arm': r.route.arm } : {}),
  };
}
