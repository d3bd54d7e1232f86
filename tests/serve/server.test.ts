// finllm serve end to end, in process, through the official `openai` client: the bundled tiny
// model (with a chat template) and a random LoRA adapter over it, context 64 tokens.
//
// Reference outputs come from `finllm generate`'s own code (generateAction, which loads the model
// afresh) or from generate() running one request alone; the server must reproduce them token for
// token while batching, with requests joining and leaving the batch and the KV cache compacting.
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { generateAction } from '../../src/cli/generate.js';
import { generate } from '../../src/llama/generate.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { disposeServingModels, loadServingModels, type ServingModels } from '../../src/serve/load.js';
import { parseRouteSpec } from '../../src/serve/routing.js';
import type { FinllmServer, ServerOptions } from '../../src/serve/server.js';
import { useEngine } from '../helpers/index.js';
import { metric, randomAdapter, TINY, tinyModelWithChatTemplate, useServers, waitFor } from './helpers.js';

useEngine();

const CONTEXT = 64;
let modelDir = '';
let adapterDir = '';
let models: ServingModels;
const startServer = useServers();

beforeAll(async () => {
  modelDir = await tinyModelWithChatTemplate();
  adapterDir = await randomAdapter(modelDir, 5);
  models = await loadServingModels({ modelDir, adapters: [{ name: 'ft', dir: adapterDir }], maxModelLen: CONTEXT });
});

afterAll(() => {
  if (models) disposeServingModels(models);
});

async function start(
  opts: Partial<ServerOptions> = {},
  ready = true,
): Promise<{ server: FinllmServer; url: string; client: OpenAI }> {
  const { server, url } = await startServer(
    { port: 0, baseId: 'tiny', adapterNames: ['ft'], routes: [parseRouteSpec('ab=base:1,ft:1')], ...opts },
    ready ? models : null,
  );
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: opts.apiKey ?? 'unused', maxRetries: 0, timeout: 120_000 });
  return { server, url, client };
}

/** What `finllm generate` prints for a prompt (without its final newline) and its token count. */
async function cliGenerate(o: {
  prompt: string;
  maxNewTokens: number;
  adapter?: string;
  chat?: boolean;
  sample?: { temperature: number; seed: number };
}): Promise<{ text: string; tokens: number }> {
  let text = '';
  const tokens = await generateAction(
    {
      model: modelDir,
      prompt: o.prompt,
      maxNewTokens: String(o.maxNewTokens),
      ...(o.adapter ? { adapter: o.adapter } : {}),
      ...(o.chat ? { chat: true } : {}),
      ...(o.sample
        ? { sample: true, temperature: String(o.sample.temperature), topK: '0', seed: String(o.sample.seed) }
        : { greedy: true }),
    },
    (s) => void (text += s),
  );
  return { text: text.replace(/\n$/, ''), tokens: tokens.length };
}

const PROMPT = 'Revenue rose 9% to $2.31 billion, and';

describe('finllm serve (OpenAI API through the openai client)', () => {
  it('answers 503 while loading, then lists the base, the adapter and the route', async () => {
    const { server, url, client } = await start({}, false);
    const err = await client.models.list().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(APIError);
    expect((err as APIError).status).toBe(503);
    expect((err as APIError).error).toMatchObject({ type: 'service_unavailable', code: 'model_loading' });
    const health = await fetch(`${url}/health`);
    expect([health.status, await health.json()]).toEqual([503, { status: 'loading' }]);
    server.setReady(models);
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const ids = [];
    for await (const m of client.models.list()) ids.push(m.id);
    expect(ids).toEqual(['tiny', 'ft', 'ab']);
    expect(await client.models.retrieve('ft')).toMatchObject({
      id: 'ft',
      object: 'model',
      parent: 'tiny',
      max_model_len: CONTEXT,
    });
  });

  it('completions and chat, streaming and not: greedy output identical to finllm generate; stop, seed', async () => {
    const { client } = await start();
    const ref = await cliGenerate({ prompt: PROMPT, maxNewTokens: 12 });
    const promptTokens = models.tokenizer.encode(PROMPT).length;

    const plain = await client.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 12, temperature: 0 });
    expect(plain.choices[0]!.text).toBe(ref.text);
    expect(plain.usage).toEqual({
      prompt_tokens: promptTokens,
      completion_tokens: ref.tokens,
      total_tokens: promptTokens + ref.tokens,
    });
    expect(plain.choices[0]!.finish_reason).toBe(ref.tokens === 12 ? 'length' : 'stop');
    expect(plain.object).toBe('text_completion');

    const stream = await client.completions.create({
      model: 'base',
      prompt: PROMPT,
      max_tokens: 12,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamed = '';
    const finishes: (string | null)[] = [];
    let streamUsage: OpenAI.CompletionUsage | null | undefined;
    for await (const c of stream) {
      if (c.usage) streamUsage = c.usage;
      for (const ch of c.choices) {
        streamed += ch.text;
        finishes.push(ch.finish_reason);
      }
    }
    expect(streamed).toBe(ref.text);
    expect(finishes.filter((f) => f !== null)).toEqual([plain.choices[0]!.finish_reason]);
    expect(finishes.at(-1)).not.toBeNull();
    expect(streamUsage).toEqual(plain.usage);

    // Chat: the tokenizer's template, as `finllm generate --chat` applies it.
    const chatRef = await cliGenerate({ prompt: PROMPT, maxNewTokens: 10, chat: true });
    const messages = [{ role: 'user' as const, content: PROMPT }];
    const chat = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 10, temperature: 0 });
    expect(chat.choices[0]!.message).toMatchObject({ role: 'assistant', content: chatRef.text });
    expect(chat.usage!.completion_tokens).toBe(chatRef.tokens);
    const chatStream = await client.chat.completions.create({
      model: 'tiny',
      messages,
      max_completion_tokens: 10,
      temperature: 0,
      stream: true,
    });
    const deltas: OpenAI.ChatCompletionChunk['choices'][number]['delta'][] = [];
    for await (const c of chatStream) for (const ch of c.choices) deltas.push(ch.delta);
    expect(deltas[0]).toEqual({ role: 'assistant', content: '' });
    expect(deltas.map((d) => d.content ?? '').join('')).toBe(chatRef.text);

    // A stop sequence taken from the middle of the greedy text: the answer ends before it.
    const words = ref.text.split(' ').filter((w) => w.length >= 3);
    expect(words.length).toBeGreaterThan(1);
    const stopWord = words[1]!;
    const cut = await client.completions.create({
      model: 'tiny',
      prompt: PROMPT,
      max_tokens: 12,
      temperature: 0,
      stop: [stopWord, 'never-there'],
    });
    expect(cut.choices[0]!.text).toBe(ref.text.slice(0, ref.text.indexOf(stopWord)));
    expect(cut.choices[0]!.finish_reason).toBe('stop');

    // Sampling with a seed draws what `finllm generate --sample --seed` draws.
    const sampledRef = await cliGenerate({ prompt: PROMPT, maxNewTokens: 8, sample: { temperature: 1.3, seed: 7 } });
    const sampled = await client.completions.create({
      model: 'tiny',
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 1.3,
      seed: 7,
    });
    expect(sampled.choices[0]!.text).toBe(sampledRef.text);
    expect(sampledRef.text).not.toBe(ref.text.slice(0, sampledRef.text.length)); // it did sample
  });

  it('serves LoRA adapters by model id over one base; A/B routes split by user, with the arm in a header and /metrics', async () => {
    const { client, url } = await start();
    const ftRef = await cliGenerate({ prompt: PROMPT, maxNewTokens: 8, adapter: adapterDir });
    const baseRef = await cliGenerate({ prompt: PROMPT, maxNewTokens: 8 });
    expect(ftRef.text).not.toBe(baseRef.text);
    const ft = await client.completions.create({ model: 'ft', prompt: PROMPT, max_tokens: 8, temperature: 0 });
    expect([ft.model, ft.choices[0]!.text]).toEqual(['ft', ftRef.text]);

    const arms = new Map<string, string>();
    for (let u = 0; u < 8; u++) {
      const { data, response } = await client.completions
        .create({ model: 'ab', prompt: PROMPT, max_tokens: 8, temperature: 0, user: `analyst-${u}` })
        .withResponse();
      const arm = response.headers.get('x-finllm-route-arm')!;
      expect(response.headers.get('x-finllm-route')).toBe('ab');
      expect(data.model).toBe(arm === 'base' ? 'tiny' : 'ft');
      expect(data.choices[0]!.text).toBe(arm === 'base' ? baseRef.text : ftRef.text);
      arms.set(`analyst-${u}`, arm);
    }
    const again = await client.completions
      .create({ model: 'ab', prompt: PROMPT, max_tokens: 1, temperature: 0, user: 'analyst-3' })
      .withResponse();
    expect(again.response.headers.get('x-finllm-route-arm')).toBe(arms.get('analyst-3'));
    expect(new Set(arms.values())).toEqual(new Set(['base', 'ft'])); // P(all 8 on one arm) = 2^-7, fixed by the seed
    const text = await (await fetch(`${url}/metrics`)).text();
    const count = (arm: string) =>
      [...arms.values()].filter((a) => a === arm).length + (arms.get('analyst-3') === arm ? 1 : 0);
    expect(metric(text, 'finllm_route_requests_total', { route: 'ab', arm: 'base' })).toBe(count('base'));
    expect(metric(text, 'finllm_route_requests_total', { route: 'ab', arm: 'ft' })).toBe(count('ft'));
    expect(metric(text, 'finllm_requests_total', { endpoint: '/v1/completions', model: 'ft', status: '200' })).toBe(
      1 + count('ft'),
    );
  });

  it('8 concurrent streaming requests (base and adapter, greedy and seeded) all match running each alone, through joins, leaves and compaction', async () => {
    const texts = [
      'Revenue rose 9% to $2.31 billion',
      'Net interest margin',
      'The board approved a dividend of $0.52 per share, payable',
      'Guidance',
      'Operating expenses fell 3% year over year while',
      'EPS',
      'Free cash flow was',
      'Loan growth in commercial real estate slowed as',
    ];
    const reqs = texts.map((prompt, i) => ({
      prompt,
      model: i % 3 === 1 ? 'ft' : 'tiny',
      max_tokens: 5 + ((i * 7) % 10),
      temperature: i === 2 || i === 5 ? 1.2 : 0,
      seed: 100 + i,
    }));
    // Each alone, first: generate() with the model's decoding defaults as the server applies them.
    const alone: { text: string; tokens: number }[] = [];
    for (const r of reqs) {
      models.model.lora = r.model === 'ft' ? models.adapters.get('ft')! : null;
      const ids = models.tokenizer.encode(r.prompt);
      const sampled = r.temperature !== 0;
      const g = await generate(models.model, ids, {
        maxNewTokens: r.max_tokens,
        greedy: !sampled,
        temperature: sampled ? r.temperature : 1,
        topK: 0,
        topP: 1,
        seed: r.seed,
        eosTokenIds: models.eosIds,
      });
      alone.push({ text: models.tokenizer.streamDecoder()(g.tokens), tokens: g.tokens.length });
    }
    models.model.lora = null;

    // 4 slots per model and a 3-position cache slack: requests queue, join the running batch as
    // others leave, and the cache compacts every 3 steps.
    const { client, url } = await start({ maxBatchSize: 4, kvSlack: 3 });
    const outs = await Promise.all(
      reqs.map(async (r, i) => {
        await new Promise((res) => setTimeout(res, 40 * i)); // staggered arrivals
        const stream = await client.completions.create({ ...r, stream: true, stream_options: { include_usage: true } });
        let text = '';
        let tokens = -1;
        let finish: string | null = null;
        for await (const c of stream) {
          if (c.usage) tokens = c.usage.completion_tokens;
          for (const ch of c.choices) {
            text += ch.text;
            finish = ch.finish_reason ?? finish;
          }
        }
        return { text, tokens, finish };
      }),
    );
    expect(outs.map(({ text, tokens }) => ({ text, tokens }))).toEqual(alone);
    expect(outs.every((o) => o.finish === 'length' || o.finish === 'stop')).toBe(true);
    const m = await (await fetch(`${url}/metrics`)).text();
    expect(metric(m, 'finllm_prefills_total')).toBe(8);
    expect(metric(m, 'finllm_kv_cache_compactions_total')).toBeGreaterThan(0);
    // Batching happened: decode steps carried more than one request on average.
    expect(metric(m, 'finllm_decode_rows_total') / metric(m, 'finllm_decode_steps_total')).toBeGreaterThan(1.5);
    expect(metric(m, 'finllm_running_requests')).toBe(0);
    expect(metric(m, 'finllm_generation_tokens_total')).toBe(alone.reduce((a, r) => a + r.tokens, 0));
    expect(metric(m, 'finllm_time_to_first_token_seconds_count')).toBe(8);
  });

  it('an f16 KV cache: half the bytes, every cache the scheduler makes is f16, greedy output identical to generate() with an f16 cache, through joins and compaction', async () => {
    const prompts = [
      'Revenue rose 9% to $2.31 billion',
      'Net interest margin',
      'The board approved a dividend of',
      'Guidance',
    ];
    const alone: string[] = [];
    models.model.lora = null; // the base, whichever variant an earlier server ran last
    for (const p of prompts) {
      const g = await generate(models.model, models.tokenizer.encode(p), {
        maxNewTokens: 8,
        greedy: true,
        eosTokenIds: models.eosIds,
        kvCache: 'f16',
      });
      alone.push(models.tokenizer.streamDecoder()(g.tokens));
    }
    const spy = vi.spyOn(models.model, 'newKvCache');
    try {
      const f32 = await start({ maxBatchSize: 2, kvSlack: 3 });
      const { server, client } = await start({ maxBatchSize: 2, kvSlack: 3, kvCache: 'f16' });
      expect(server.kvCache!.dtype).toBe('f16');
      expect(f32.server.kvCache!.dtype).toBe('f32');
      expect(2 * server.kvCache!.bytesPerVariant).toBe(f32.server.kvCache!.bytesPerVariant);
      const outs = await Promise.all(
        prompts.map(async (prompt, i) => {
          await new Promise((res) => setTimeout(res, 30 * i));
          return (await client.completions.create({ model: 'tiny', prompt, max_tokens: 8, temperature: 0 })).choices[0]!
            .text;
        }),
      );
      expect(outs).toEqual(alone);
      expect(spy.mock.calls.length).toBeGreaterThan(prompts.length); // prefills, the batch cache, compactions
      expect(spy.mock.calls.every((c) => c[3] === 'f16')).toBe(true);
    } finally {
      spy.mockRestore();
    }
  });

  it('bad parameters, unknown model, oversize prompt, wrong API key, oversize body: right status and OpenAI-shaped errors', async () => {
    const { client, url } = await start({ apiKey: 'sk-right', bodyLimit: 4096 });
    const fail = async (p: Promise<unknown>): Promise<APIError> => {
      const e = await p.catch((err: unknown) => err);
      expect(e).toBeInstanceOf(APIError);
      const err = e as APIError;
      expect(Object.keys(err.error as object).sort()).toEqual(['code', 'message', 'param', 'type']);
      return err;
    };
    const base = { model: 'tiny', prompt: 'Revenue', max_tokens: 2 };
    let e: APIError = await fail(client.completions.create({ ...base, temperature: 5 }));
    expect([e.status, e.param, e.type]).toEqual([400, 'temperature', 'invalid_request_error']);
    e = await fail(client.completions.create({ ...base, n: 2 }));
    expect([e.status, e.param]).toEqual([400, 'n']);
    e = await fail(client.completions.create({ ...base, model: 'gpt-4o' }));
    expect([e.status, e.code, e.param]).toEqual([404, 'model_not_found', 'model']);
    const long = 'revenue '.repeat(80);
    expect(models.tokenizer.encode(long).length).toBeGreaterThan(CONTEXT);
    e = await fail(client.completions.create({ ...base, prompt: long }));
    expect([e.status, e.code]).toEqual([413, 'context_length_exceeded']);
    e = await fail(client.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: long }] }));
    expect([e.status, e.param]).toEqual([413, 'messages']);
    e = await fail(client.completions.create({ ...base, max_tokens: CONTEXT }));
    expect([e.status, e.code, e.param]).toEqual([400, 'context_length_exceeded', 'max_tokens']);
    const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-wrong', maxRetries: 0 });
    e = await fail(wrong.completions.create(base));
    expect(e).toBeInstanceOf(OpenAI.AuthenticationError);
    expect([e.status, e.code]).toEqual([401, 'invalid_api_key']);
    expect((await fetch(`${url}/v1/models`)).status).toBe(401); // no key at all
    // The right key works; a prompt may be token ids (ids outside the vocabulary are refused).
    const byText = await client.completions.create({ ...base, temperature: 0 });
    const byIds = await client.completions.create({
      ...base,
      prompt: models.tokenizer.encode(base.prompt),
      temperature: 0,
    });
    expect([byIds.choices[0]!.text, byIds.usage]).toEqual([byText.choices[0]!.text, byText.usage]);
    e = await fail(client.completions.create({ ...base, prompt: [1, 100_000] }));
    expect([e.status, e.param]).toEqual([400, 'prompt']);

    const raw = async (path: string, body: string) => {
      const r = await fetch(`${url}${path}`, {
        method: 'POST',
        headers: { authorization: 'Bearer sk-right', 'content-type': 'application/json' },
        body,
      });
      return { status: r.status, body: (await r.json()) as { error: Record<string, unknown> } };
    };
    const big = await raw('/v1/completions', JSON.stringify({ ...base, prompt: 'x'.repeat(5000) }));
    expect([big.status, big.body.error.code]).toEqual([413, 'request_too_large']);
    const broken = await raw('/v1/completions', '{"model": ');
    expect([broken.status, broken.body.error.type]).toEqual([400, 'invalid_request_error']);
    const nowhere = await raw('/v1/embeddings', '{}');
    expect([nowhere.status, nowhere.body.error.code]).toEqual([404, 'not_found']);
    // /health and /metrics stay open without the key (load balancers, Prometheus).
    expect((await fetch(`${url}/health`)).status).toBe(200);
    const m = await (await fetch(`${url}/metrics`)).text();
    expect(metric(m, 'finllm_requests_total', { status: '401' })).toBe(2);
    expect(metric(m, 'finllm_requests_total', { status: '413' })).toBe(3);

    // A tokenizer without a chat template: chat is refused with the fix named, completions work.
    const plain = await start({ port: 0 }, false);
    plain.server.setReady({ ...models, tokenizer: await LlamaTokenizer.load(TINY) });
    e = await fail(
      plain.client.chat.completions.create({
        model: 'tiny',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 1,
      }),
    );
    expect([e.status, e.code]).toEqual([400, 'no_chat_template']);
    expect(e.message).toContain('--chat-template');
  });

  it('429 when the queue is full; a client that disconnects mid-stream frees its slot at once', async () => {
    const { client, url } = await start({ maxBatchSize: 1, maxQueue: 1 });
    const metrics = async () => (await fetch(`${url}/metrics`)).text();
    const prompt = 'Revenue rose';
    const long = CONTEXT - models.tokenizer.encode(prompt).length;
    const first = await client.completions.create({
      model: 'tiny',
      prompt,
      max_tokens: long,
      temperature: 0,
      stream: true,
    });
    const it = first[Symbol.asyncIterator]();
    await it.next(); // the first request holds the only slot
    const queued = client.completions.create({ model: 'tiny', prompt, max_tokens: 3, temperature: 0 });
    await waitFor(async () => metric(await metrics(), 'finllm_queue_depth') === 1, 'the second request to queue');
    const e = await client.completions.create({ model: 'tiny', prompt, max_tokens: 3 }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(OpenAI.RateLimitError);
    expect([(e as APIError).code, (e as APIError).headers?.get('retry-after')]).toEqual(['queue_full', '1']);

    first.controller.abort(); // the client goes away mid-stream
    const second = await queued; // runs only once the slot is free
    expect(second.usage!.completion_tokens).toBe(3);
    const m = await metrics();
    expect(metric(m, 'finllm_requests_cancelled_total', { model: 'tiny' })).toBe(1);
    expect(metric(m, 'finllm_running_requests')).toBe(0);
    expect(metric(m, 'finllm_queue_depth')).toBe(0);
    // The abandoned request stopped long before its max_tokens.
    expect(metric(m, 'finllm_generation_tokens_total', { model: 'tiny' }) - 3).toBeLessThan(long / 2);
  });
});
