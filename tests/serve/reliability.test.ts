// Issue 20, "Reliability, round 3", the server's findings: one test per item, in process, over the
// bundled tiny model (context 64) on loopback. Every request here is bounded; servers stop in afterEach.

import { writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { InputError } from '../../src/errors.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { disposeServingModels, loadServingModels, type ServingModels } from '../../src/serve/load.js';
import { FinllmServer, type ServerOptions } from '../../src/serve/server.js';
import { useEngine } from '../helpers/index.js';
import { tinyModelWithChatTemplate, useServers } from './helpers.js';

useEngine();

const CONTEXT = 64;
const KEY = 'sk-test-key';
let modelDir = '';
let models: ServingModels;
const startServer = useServers();

beforeAll(async () => {
  modelDir = await tinyModelWithChatTemplate();
  models = await loadServingModels({ modelDir, maxModelLen: CONTEXT });
});

afterAll(() => {
  if (models) disposeServingModels(models);
});

async function start(
  opts: Partial<ServerOptions> = {},
  ready: ServingModels | null = models,
): Promise<{ server: FinllmServer; url: string }> {
  return startServer({ host: '127.0.0.1', port: 0, baseId: 'tiny', ...opts }, ready);
}

interface Answer {
  status: number;
  body: unknown;
  headers: Headers;
}

/** One request with fetch (the path is sent as written: WHATWG URLs keep percent-encoding). */
async function call(url: string, method: 'GET' | 'POST', path: string, body?: unknown, key?: string): Promise<Answer> {
  const r = await fetch(`${url}${path}`, {
    method,
    headers: {
      ...(key ? { authorization: `Bearer ${key}` } : {}),
      ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
    },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(120_000),
  });
  const text = await r.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // not JSON: kept as text, and expectOpenAiError below fails on it
  }
  return { status: r.status, body: parsed, headers: r.headers };
}

/** The body is exactly OpenAI's error shape. */
function expectOpenAiError(
  a: Answer,
  status: number,
): { message: string; type: string; param: string | null; code: string | null } {
  expect(a.status, JSON.stringify(a.body)).toBe(status);
  const e = (a.body as { error: Record<string, unknown> }).error;
  expect(Object.keys(a.body as object)).toEqual(['error']);
  expect(Object.keys(e).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(typeof e['message']).toBe('string');
  return e as { message: string; type: string; param: string | null; code: string | null };
}

const completion = { model: 'tiny', prompt: 'Revenue rose', max_tokens: 1, temperature: 0 };
const chat = { model: 'tiny', messages: [{ role: 'user', content: 'Revenue rose' }], max_tokens: 1, temperature: 0 };

describe('1. the API key and the loading gate hold for percent-encoded paths', () => {
  // [method, path, body]: every spelling the router decodes to a /v1 route.
  const encoded: ['GET' | 'POST', string, unknown][] = [
    ['POST', '/%761/completions', completion],
    ['POST', '/%76%31/completions', completion],
    ['POST', '/v%31/completions', completion],
    ['POST', '/%76%31/chat/completions', chat],
    ['POST', '/v1/%63hat/completions', chat],
    ['POST', '/v1/chat/%63%6F%6D%70letions', chat],
    ['GET', '/%76%31/models', undefined],
    ['GET', '/%761/models', undefined],
    ['GET', '/%76%31/models/tiny', undefined],
    ['GET', '/%76%31/%6d%6F%64%65%6c%73', undefined],
  ];
  // Spellings that are no route: never 200 without the key either.
  const elsewhere: ['GET' | 'POST', string, unknown][] = [
    ['POST', '/v1%2Fcompletions', completion],
    ['POST', '/v1%2fcompletions', completion],
    ['GET', '/%2576%2531/models', undefined],
    ['GET', '/%56%31/models', undefined],
    ['GET', '//v1/models', undefined],
  ];

  it('without the key: 401 on every encoded spelling of a /v1 route, while loading and when ready; nothing else answers 200', async () => {
    const { server, url } = await start({ apiKey: KEY }, null);
    for (const [method, path, body] of [...encoded, ...elsewhere]) {
      const a = await call(url, method, path, body);
      expect(a.status, `${method} ${path} while loading`).toBe(401);
      expectOpenAiError(a, 401);
    }
    server.setReady(models);
    for (const [method, path, body] of [...encoded, ...elsewhere]) {
      const a = await call(url, method, path, body);
      expect(a.status, `${method} ${path} when ready`).toBe(401);
    }
    // With the key the encoded spellings are the real routes; the others are not routes at all.
    for (const [method, path, body] of encoded)
      expect((await call(url, method, path, body, KEY)).status, `${method} ${path}`).toBe(200);
    for (const [method, path, body] of elsewhere) expectOpenAiError(await call(url, method, path, body, KEY), 404);
    // /health and /metrics stay open.
    expect((await call(url, 'GET', '/health')).status).toBe(200);
    expect((await call(url, 'GET', '/%68ealth')).status).toBe(200);
    expect((await call(url, 'GET', '/metrics')).status).toBe(200);
  });

  it('while loading, with the key: 503 model_loading on every encoded spelling (never generation without a model)', async () => {
    const log: string[] = [];
    const { url } = await start({ apiKey: KEY, log: (l) => log.push(l) }, null);
    for (const [method, path, body] of encoded) {
      const e = expectOpenAiError(await call(url, method, path, body, KEY), 503);
      expect(e.code, `${method} ${path}`).toBe('model_loading');
    }
    // Without any key configured, the gate holds all the same.
    const open = await start({}, null);
    for (const [method, path, body] of encoded)
      expect(expectOpenAiError(await call(open.url, method, path, body), 503).code).toBe('model_loading');
    expect(log).toEqual([]);
  });
});

describe('2. a chat template that loops or grows without bound fails its request; the server lives', () => {
  // [what, template, status, code]. A string longer than the context can hold is a prompt too long (413).
  const hostile: [string, string, number, string][] = [
    [
      'a range too large for an array (V8 aborted the process)',
      '{% for i in range(200000000) %}x{% endfor %}',
      400,
      'chat_template_error',
    ],
    // Prints nothing, so only the time limit can stop it (with output, the size bound may trip first).
    [
      'a loop that never ends in practice',
      '{% for i in range(60000) %}{% for j in range(60000) %}{% endfor %}{% endfor %}',
      400,
      'chat_template_error',
    ],
    [
      'a list that doubles',
      '{% set ns = namespace(a=[1]) %}{% for i in range(40) %}{% set ns.a = ns.a + ns.a %}{% endfor %}{{ ns.a | length }}',
      400,
      'chat_template_error',
    ],
    [
      'a string that doubles',
      "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
      413,
      'context_length_exceeded',
    ],
  ];

  it.each(hostile)(
    '%s: an OpenAI-shaped error for that request, and the next request is served',
    async (_name, source, status, code) => {
      const file = join(await mkdtemp(join(tmpdir(), 'finllm-template-')), 'chat_template.jinja');
      writeFileSync(file, source);
      const tokenizer = await LlamaTokenizer.load(modelDir, { chatTemplateFile: file });
      const { url } = await start({}, { ...models, tokenizer });
      const e = expectOpenAiError(await call(url, 'POST', '/v1/chat/completions', chat), status);
      expect([e.code, e.param]).toEqual([code, 'messages']);
      expect(e.message).not.toContain(file); // the server's paths stay on the server
      expect((await call(url, 'GET', '/health')).status).toBe(200);
      expect((await call(url, 'POST', '/v1/completions', completion)).status).toBe(200);
    },
  );
});

describe('4. a prompt far longer than the context is refused by its length, before it is tokenized', () => {
  it('a ~0.9 MB prompt or message: 413 context_length_exceeded without tokenizing; /health answers meanwhile', async () => {
    const { url } = await start();
    const huge = 'Revenue rose nine percent and margins widened. '.repeat(19_000); // 0.9 MB
    expect(huge.length).toBeGreaterThan(880_000);
    const encode = vi.spyOn(models.tokenizer, 'encode');
    try {
      const [big, bigChat, ...health] = await Promise.all([
        call(url, 'POST', '/v1/completions', { ...completion, prompt: huge }),
        call(url, 'POST', '/v1/chat/completions', { ...chat, messages: [{ role: 'user', content: huge }] }),
        ...Array.from({ length: 4 }, () => call(url, 'GET', '/health')),
      ]);
      expect([expectOpenAiError(big!, 413).code, expectOpenAiError(big!, 413).param]).toEqual([
        'context_length_exceeded',
        'prompt',
      ]);
      expect([expectOpenAiError(bigChat!, 413).code, expectOpenAiError(bigChat!, 413).param]).toEqual([
        'context_length_exceeded',
        'messages',
      ]);
      expect(health.map((h) => h.status)).toEqual([200, 200, 200, 200]);
      expect(encode).not.toHaveBeenCalled();
      // A prompt within the bound is still tokenized and served.
      expect((await call(url, 'POST', '/v1/completions', completion)).status).toBe(200);
      expect(encode).toHaveBeenCalled();
    } finally {
      encode.mockRestore();
    }
  });
});

describe('5, 11. sampling values the GPU cannot honour, and seeds outside [0, 2^32 - 1], are refused by name', () => {
  it('temperature and repetition_penalty below 1e-5, seeds past 2^32 - 1 or negative: 400 naming the field; the edges work', async () => {
    const { url } = await start();
    const cases: [Record<string, unknown>, string][] = [
      [{ temperature: 1e-39 }, 'temperature'],
      [{ temperature: 1e-46 }, 'temperature'],
      [{ temperature: 9e-6 }, 'temperature'],
      [{ repetition_penalty: 1e-39 }, 'repetition_penalty'],
      [{ repetition_penalty: 9e-6 }, 'repetition_penalty'],
      [{ seed: 4294967297 }, 'seed'],
      [{ seed: 2 ** 32 }, 'seed'],
      [{ seed: -1 }, 'seed'],
    ];
    for (const [extra, param] of cases) {
      for (const [path, base] of [
        ['/v1/completions', completion],
        ['/v1/chat/completions', chat],
      ] as const) {
        const e = expectOpenAiError(await call(url, 'POST', path, { ...base, ...extra }), 400);
        expect([e.param, e.type], `${path} ${JSON.stringify(extra)}`).toEqual([param, 'invalid_request_error']);
      }
    }
    for (const extra of [
      { temperature: 1e-5, seed: 2 ** 32 - 1 },
      { temperature: 0 },
      { temperature: 0.7, repetition_penalty: 1e-5, seed: 0 },
    ]) {
      expect(
        (await call(url, 'POST', '/v1/completions', { ...completion, ...extra })).status,
        JSON.stringify(extra),
      ).toBe(200);
    }
  });
});

describe('10. an empty or blank API key is refused, never taken as "no key"', () => {
  it('"", spaces, a key with surrounding spaces or a control character: InputError naming --api-key', () => {
    for (const apiKey of ['', '   ', ' sk-x', 'sk-x ', 'sk\nx', 'sk-\u00e9']) {
      expect(() => new FinllmServer({ port: 0, baseId: 'tiny', apiKey }), JSON.stringify(apiKey)).toThrow(InputError);
      expect(() => new FinllmServer({ port: 0, baseId: 'tiny', apiKey }), JSON.stringify(apiKey)).toThrow(
        /--api-key: /,
      );
    }
    expect(() => new FinllmServer({ port: 0, baseId: 'tiny', apiKey: 'sk key with inner spaces' })).not.toThrow();
  });
});

describe('14. --max-batch-size beyond what the memory holds is refused at startup', () => {
  it('setReady with 100000 slots: InputError naming --max-batch-size and the largest that fits; that largest is accepted', async () => {
    const server = new FinllmServer({ port: 0, baseId: 'tiny', maxBatchSize: 100_000 });
    const err = (() => {
      try {
        server.setReady(models);
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(InputError);
    const m = /--max-batch-size: expected at most (\d+) decode slots per model here, got 100000: \S/.exec(
      (err as Error).message,
    );
    expect(m, (err as Error).message).not.toBeNull();
    const limit = Number(m![1]);
    expect(limit).toBeGreaterThanOrEqual(1);
    expect(limit).toBeLessThan(100_000);
    const fits = new FinllmServer({ port: 0, baseId: 'tiny', maxBatchSize: limit });
    expect(() => fits.setReady(models)).not.toThrow();
    expect(() => new FinllmServer({ port: 0, baseId: 'tiny', maxBatchSize: limit + 1 }).setReady(models)).toThrow(
      /max-batch-size/,
    );
    await fits.shutdown(0);
  });
});

/** A raw HTTP/1.1 request with a header of `bytes` bytes (node:http; fetch would refuse nothing but hides the socket). */
function hugeHeaderRequest(url: string, bytes: number): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      `${url}/v1/models`,
      { method: 'GET', headers: { 'x-filler': 'a'.repeat(bytes) }, timeout: 30_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

describe("18. fastify's own errors are OpenAI-shaped; a body with __proto__ is not called invalid JSON", () => {
  it('bad percent-encoding (400), headers too large (431), a __proto__ key (ignored like any unknown field)', async () => {
    const { url } = await start({ apiKey: KEY });
    for (const path of ['/v1/models/%zz', '/%', '/v1/%E0%A4%A']) {
      const e = expectOpenAiError(await call(url, 'GET', path, undefined, KEY), 400);
      expect(e.type, path).toBe('invalid_request_error');
    }
    const big = await hugeHeaderRequest(url, 64 * 1024);
    expectOpenAiError({ status: big.status, body: JSON.parse(big.body) as unknown, headers: new Headers() }, 431);
    const proto = await call(
      url,
      'POST',
      '/v1/completions',
      '{"model": "tiny", "prompt": "Revenue rose", "max_tokens": 1, "__proto__": {"x": 1}, "constructor": {"prototype": {"y": 2}}}',
      KEY,
    );
    expect(proto.status, JSON.stringify(proto.body)).toBe(200);
    expect(({} as Record<string, unknown>)['x']).toBeUndefined();
  });
});

describe('19. GET /v1/models/base answers, as "base" works as a model name in requests', () => {
  it('the base model card, under the served name', async () => {
    const { url } = await start();
    const a = await call(url, 'GET', '/v1/models/base');
    expect(a.status).toBe(200);
    expect(a.body).toMatchObject({ id: 'tiny', object: 'model', root: 'tiny' });
    expectOpenAiError(await call(url, 'GET', '/v1/models/nope'), 404);
  });
});

describe('20. draining: /health says 503 while requests in flight finish', () => {
  it('after shutdown() begins: /health 503 "draining", new requests 503, the stream in flight runs to its end', async () => {
    const { server, url } = await start();
    const prompt = 'Revenue rose';
    const maxTokens = CONTEXT - models.tokenizer.encode(prompt).length;
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'tiny',
        prompt,
        max_tokens: maxTokens,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      }),
    });
    const reader = res.body!.getReader();
    let text = new TextDecoder().decode((await reader.read()).value); // the stream has started
    const stopped = server.shutdown(60_000);
    const health = await call(url, 'GET', '/health');
    expect([health.status, health.body]).toEqual([503, { status: 'draining' }]);
    expect(expectOpenAiError(await call(url, 'POST', '/v1/completions', completion), 503).code).toBe('unavailable');
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += new TextDecoder().decode(value);
    }
    expect(text.trimEnd().endsWith('data: [DONE]')).toBe(true);
    const usage = text
      .split('\n')
      .filter((l) => l.startsWith('data: {'))
      .map((l) => JSON.parse(l.slice(6)) as { usage?: { completion_tokens: number } | null })
      .find((c) => c.usage)?.usage;
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    expect(await stopped).toEqual({ drained: true });
  });
});

describe("21. chat-template errors sent to clients do not carry the server's file paths", () => {
  it("raise_exception in the template: 400 with the template's message, without the template file's path", async () => {
    const file = join(await mkdtemp(join(tmpdir(), 'finllm-template-')), 'chat_template.jinja');
    writeFileSync(
      file,
      "{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversations must start with a system message') }}{% endif %}x",
    );
    const tokenizer = await LlamaTokenizer.load(modelDir, { chatTemplateFile: file });
    const { url } = await start({}, { ...models, tokenizer });
    const e = expectOpenAiError(await call(url, 'POST', '/v1/chat/completions', chat), 400);
    expect(e.message).toContain('Conversations must start with a system message');
    expect(e.message).not.toContain(file);
    expect(e.message).not.toContain(tmpdir());
    expect([e.code, e.param]).toEqual(['chat_template_error', 'messages']);
  });
});
