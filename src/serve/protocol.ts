// The OpenAI HTTP API as finllm serves it: request bodies (validated with zod), error bodies, and
// the response and stream-chunk shapes of /v1/completions and /v1/chat/completions.
//
// Unknown request fields are ignored (clients and SDKs send extras); known fields for features
// finllm does not have (n > 1, logprobs, echo, suffix, best_of > 1, tools, JSON response formats)
// are refused with a 400 that names the field, rather than silently ignored.
import { z } from 'zod';
import { MAX_SEED, MIN_REPETITION_PENALTY, MIN_TEMPERATURE } from '../llama/generate.js';

/** An error answered as OpenAI does: `{ error: { message, type, param, code } }` with its status. */
export class ApiError extends Error {
  override name = 'ApiError';
  constructor(
    readonly status: number,
    message: string,
    readonly type: string = 'invalid_request_error',
    readonly code: string | null = null,
    readonly param: string | null = null,
    /** Extra response headers (retry-after, www-authenticate). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

const nonNegInt = z.number().int().nonnegative();

/** Fields shared by both endpoints. */
const common = {
  model: z.string().min(1),
  max_tokens: z.number().int().positive().nullish(),
  /** 0 is greedy decoding; (0, MIN_TEMPERATURE) is refused (it underflows on the GPU), as `generate` does. */
  temperature: z
    .number()
    .min(0)
    .max(2)
    .refine((t) => t === 0 || t >= MIN_TEMPERATURE, {
      error: `expected 0 (greedy) or a number in [${MIN_TEMPERATURE}, 2]: smaller ones underflow on the GPU`,
    })
    .nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  /** Not OpenAI's (vLLM's extension): keep the k most likely tokens; 0 or -1 = off. */
  top_k: z.number().int().min(-1).nullish(),
  /** Not OpenAI's (vLLM's extension): transformers' repetition penalty over prompt + output. */
  repetition_penalty: z
    .number()
    .min(MIN_REPETITION_PENALTY, {
      error: `expected a number in [${MIN_REPETITION_PENALTY}, 10] (1 = off): smaller ones underflow on the GPU`,
    })
    .max(10)
    .nullish(),
  presence_penalty: z.number().min(-2).max(2).nullish(),
  frequency_penalty: z.number().min(-2).max(2).nullish(),
  logit_bias: z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100).max(100)).nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullish(),
  /** The sampler's seeds are u32: a larger seed would repeat a smaller one's draws. */
  seed: z
    .number()
    .int()
    .min(0)
    .max(MAX_SEED, { error: `expected an integer in [0, ${MAX_SEED}]` })
    .nullish(),
  n: z.literal(1, { error: 'only n = 1 is supported' }).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.object({ include_usage: z.boolean().nullish() }).nullish(),
  user: z.string().nullish(),
};

export const completionRequest = z.object({
  ...common,
  prompt: z.union([
    z.string(),
    z.array(z.string()).length(1, 'one prompt per request (batch prompts are not supported)'),
    z.array(nonNegInt).min(1),
    z.array(z.array(nonNegInt).min(1)).length(1, 'one prompt per request'),
  ]),
  echo: z.literal(false, { error: 'echo is not supported' }).nullish(),
  logprobs: z.null({ error: 'logprobs are not supported' }).optional(),
  best_of: z.literal(1, { error: 'best_of > 1 is not supported' }).nullish(),
  suffix: z.null({ error: 'suffix is not supported' }).optional(),
});
export type CompletionRequest = z.infer<typeof completionRequest>;

const textPart = z.object({
  type: z.literal('text', { error: 'only text content parts are supported' }),
  text: z.string(),
});

export const chatRequest = z.object({
  ...common,
  messages: z
    .array(
      z.object({
        role: z.enum(['system', 'developer', 'user', 'assistant'], {
          error: 'role must be system, developer, user or assistant (tools are not supported)',
        }),
        content: z.union([z.string(), z.array(textPart), z.null()]),
        name: z.string().nullish(),
      }),
    )
    .min(1),
  max_completion_tokens: z.number().int().positive().nullish(),
  logprobs: z.literal(false, { error: 'logprobs are not supported' }).nullish(),
  top_logprobs: z.null({ error: 'logprobs are not supported' }).optional(),
  tools: z.array(z.unknown()).max(0, 'tools are not supported').nullish(),
  tool_choice: z.literal('none', { error: 'tools are not supported' }).nullish(),
  functions: z.array(z.unknown()).max(0, 'functions are not supported').nullish(),
  response_format: z
    .object({ type: z.literal('text', { error: 'only response_format type "text" is supported' }) })
    .nullish(),
});
export type ChatRequest = z.infer<typeof chatRequest>;

/** Parses a body; a failure becomes a 400 naming the first offending field. */
export function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  const param = issue.path.map(String).join('.') || null;
  throw new ApiError(
    400,
    param ? `${param}: ${issue.message}` : issue.message,
    'invalid_request_error',
    'invalid_value',
    param,
  );
}

/** Chat message content as plain text (text parts joined by newlines). */
export function messageText(content: ChatRequest['messages'][number]['content']): string {
  if (content === null) return '';
  if (typeof content === 'string') return content;
  return content.map((p) => p.text).join('\n');
}

export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

export function usage(prompt: number, completion: number): Usage {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/**
 * The OpenAI bodies of one generation request: the whole response (chat.completion /
 * text_completion) and, when streaming, its server-sent events.
 */
export class CompletionBodies {
  constructor(
    readonly kind: 'completion' | 'chat',
    readonly id: string,
    readonly created: number,
    readonly model: string,
    /** stream_options.include_usage: every chunk carries `usage: null`, and a last chunk the usage. */
    readonly includeUsage: boolean,
  ) {}

  /** The fields every body starts with; `chunk`: a stream event's object name, else the whole response's. */
  private head(chunk: boolean): { id: string; object: string; created: number; model: string } {
    const object = this.kind === 'chat' ? (chunk ? 'chat.completion.chunk' : 'chat.completion') : 'text_completion';
    return { id: this.id, object, created: this.created, model: this.model };
  }

  /** The event of a chunk with one choice. */
  private event(choice: Record<string, unknown>): string {
    const c = { index: 0, ...choice, logprobs: null };
    return `data: ${JSON.stringify({ ...this.head(true), choices: [c], ...(this.includeUsage ? { usage: null } : {}) })}\n\n`;
  }

  /** The stream's first event, where the protocol has one (chat: the assistant role). */
  opening(): string | null {
    return this.kind === 'chat' ? this.event({ delta: { role: 'assistant', content: '' }, finish_reason: null }) : null;
  }

  /** A text piece (`finish` null), or the last choice event with its finish reason. */
  piece(text: string, finish: string | null): string {
    return this.event(
      this.kind === 'chat'
        ? { delta: finish === null ? { content: text } : {}, finish_reason: finish }
        : { text, finish_reason: finish },
    );
  }

  /** The usage event that ends a stream with include_usage. */
  usageEvent(u: Usage): string {
    return `data: ${JSON.stringify({ ...this.head(true), choices: [], usage: u })}\n\n`;
  }

  /** The whole (non-streamed) response. */
  whole(content: string, finish: string, u: Usage): Record<string, unknown> {
    const choice =
      this.kind === 'chat'
        ? { index: 0, message: { role: 'assistant', content }, logprobs: null, finish_reason: finish }
        : { index: 0, text: content, logprobs: null, finish_reason: finish };
    return { ...this.head(false), choices: [choice], usage: u };
  }
}
