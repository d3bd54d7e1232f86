// finllm serve without a GPU: stop-sequence streaming, the windowed detokenizer, model ids and A/B
// routes, request validation.
import { describe, expect, it, vi } from 'vitest';
import { type ServeCliOptions, serveAction } from '../../src/cli/serve.js';
import { InputError } from '../../src/errors.js';
import { TextStreamer } from '../../src/llama/generate.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { ApiError, chatRequest, completionRequest, parseBody } from '../../src/serve/protocol.js';
import { ModelRouter, parseAdapterSpec, parseRouteSpec } from '../../src/serve/routing.js';
import { StopTextStream } from '../../src/serve/text.js';
import { testRng } from '../helpers/index.js';
import { serveFlags, TINY } from './helpers.js';

/** A fake tokenizer whose tokens are the characters of `vocab`. */
const chars = (vocab: string) => ({
  decode: (ids: readonly number[]) => ids.map((i) => vocab[i]).join(''),
  id: (c: string) => vocab.indexOf(c),
});

describe('StopTextStream (OpenAI stop semantics while streaming)', () => {
  const v = chars('abcdefgh\n#XY');
  const run = (text: string, stops: string[]) => {
    const s = new StopTextStream(v.decode, stops);
    const pieces: string[] = [];
    let i = 0;
    for (const c of text) {
      pieces.push(s.push(v.id(c)));
      i++;
      if (s.stopped) break;
    }
    pieces.push(s.finish());
    return { pieces, text: pieces.join(''), stopped: s.stopped, consumed: i, full: s.fullText };
  };

  it('ends before the first stop sequence, which is never sent, and stops at the token that completes it', () => {
    const r = run('abc\n##def', ['\n##', 'XY']);
    expect(r.text).toBe('abc');
    expect(r.full).toBe('abc');
    expect(r.stopped).toBe(true);
    expect(r.consumed).toBe(6); // the second '#' completes "\n##"
    // "\n" and "\n#" could start the stop: held back, never sent before the stop is known.
    expect(r.pieces.slice(0, 6)).toEqual(['a', 'b', 'c', '', '', '']);
  });

  it('releases a held-back prefix as soon as it can no longer become a stop', () => {
    const r = run('ab\n#cd', ['\n##']);
    expect(r.stopped).toBe(false);
    expect(r.text).toBe('ab\n#cd');
    expect(r.pieces).toEqual(['a', 'b', '', '', '\n#c', 'd', '']);
  });

  it('picks the earliest of several stops; held-back text is flushed at the end; no stops = plain streaming', () => {
    expect(run('abXYc\n##', ['\n##', 'XY']).text).toBe('ab');
    const tail = run('abc\n#', ['\n##']);
    expect(tail.pieces.at(-1)).toBe('\n#');
    expect(tail.text).toBe('abc\n#');
    expect(run('abc', []).pieces).toEqual(['a', 'b', 'c', '']);
    expect(run('abc', ['']).text).toBe('abc'); // an empty stop string never matches
  });
});

describe('TextStreamer (windowed incremental decoding)', () => {
  it('streams exactly the full decode (no space clean-up) of the tiny model tokenizer, spaces and byte fallback included', async () => {
    const tok = await LlamaTokenizer.load(TINY);
    const decode = tok.streamDecoder();
    const rng = testRng('TextStreamer vs full decode');
    const texts = ['Revenue rose 9% to $2.31 billion — up €0.52/share.  Two  spaces', 'naïve café 東京 📈', ''];
    const sequences = texts.map((t) => tok.encode(t));
    for (let k = 0; k < 100; k++) sequences.push(Array.from({ length: 1 + rng.int(40) }, () => rng.int(tok.vocabSize)));
    for (const ids of sequences) {
      const s = new TextStreamer(decode);
      let out = '';
      for (const id of ids) out += s.push(id);
      out += s.flush();
      expect(out).toBe(decode(ids));
    }
  });
});

describe('model ids and A/B routes', () => {
  it('parses --adapter and --route, refusing malformed ones with the flag named', () => {
    expect(parseAdapterSpec('ft=runs/x/adapter')).toEqual({ name: 'ft', dir: 'runs/x/adapter' });
    expect(parseRouteSpec('ab=base:50,ft:50.5')).toEqual({
      name: 'ab',
      arms: [
        { model: 'base', weight: 50 },
        { model: 'ft', weight: 50.5 },
      ],
    });
    for (const bad of ['ft', '=dir', 'bad name=dir']) expect(() => parseAdapterSpec(bad)).toThrow(InputError);
    for (const bad of ['ab', 'ab=base', 'ab=base:-1', 'ab=base:0', 'ab=base:x', 'ab=base:1,base:2']) {
      expect(() => parseRouteSpec(bad), bad).toThrow(/route/);
    }
  });

  it('resolves ids, aliases and routes; refuses clashes and unknown arms', () => {
    const r = new ModelRouter('tiny', ['ft'], [parseRouteSpec('ab=base:1,ft:1')], 7);
    expect(r.resolve('tiny')).toEqual({ model: 'tiny', adapter: null });
    expect(r.resolve('base')).toEqual({ model: 'tiny', adapter: null });
    expect(r.resolve('ft')).toEqual({ model: 'ft', adapter: 'ft' });
    expect(r.resolve('nope')).toBeNull();
    expect(r.ids().map((m) => [m.id, m.kind])).toEqual([
      ['tiny', 'base'],
      ['ft', 'adapter'],
      ['ab', 'route'],
    ]);
    expect(() => new ModelRouter('tiny', ['base'], [])).toThrow(/already taken/);
    expect(() => new ModelRouter('tiny', ['ft'], [parseRouteSpec('ft=base:1')])).toThrow(/already a model id/);
    expect(() => new ModelRouter('tiny', [], [parseRouteSpec('ab=base:1,ft:1')])).toThrow(/unknown model "ft"/);
  });

  it('splits by weight, reproducibly by seed; a user always lands on the same arm; weight 0 is never chosen', () => {
    const spec = [parseRouteSpec('ab=base:3,ft:1,off:0')];
    const make = (seed: number) => new ModelRouter('tiny', ['ft', 'off'], spec, seed);
    const draw = (router: ModelRouter, n: number) => Array.from({ length: n }, () => router.resolve('ab')!.route!.arm);
    const a = draw(make(1), 4000);
    expect(draw(make(1), 4000)).toEqual(a);
    expect(draw(make(2), 4000)).not.toEqual(a);
    const share = a.filter((x) => x === 'base').length / a.length;
    // Binomial(4000, 0.75): sd = sqrt(0.75 * 0.25 / 4000) = 0.0068; 5 sd = 0.034.
    expect(Math.abs(share - 0.75)).toBeLessThan(0.034);
    expect(a).not.toContain('off');
    const router = make(1);
    const arms = new Map<string, string>();
    for (let u = 0; u < 200; u++) arms.set(`user-${u}`, router.resolve('ab', `user-${u}`)!.route!.arm);
    for (let u = 0; u < 200; u++) expect(make(1).resolve('ab', `user-${u}`)!.route!.arm).toBe(arms.get(`user-${u}`));
    expect(new Set(arms.values())).toEqual(new Set(['base', 'ft']));
  });
});

describe('request validation', () => {
  const bad = (schema: Parameters<typeof parseBody>[0], body: unknown): ApiError => {
    try {
      parseBody(schema, body);
    } catch (e) {
      if (e instanceof ApiError) return e;
      throw e;
    }
    throw new Error(`accepted ${JSON.stringify(body)}`);
  };

  it('accepts OpenAI bodies (unknown fields ignored) and names the offending field of a bad one', () => {
    expect(
      parseBody(completionRequest, { model: 'm', prompt: 'x', max_tokens: 3, user: 'u', some_new_field: 1 }),
    ).toMatchObject({ model: 'm', prompt: 'x' });
    expect(parseBody(completionRequest, { model: 'm', prompt: [1, 2, 3] }).prompt).toEqual([1, 2, 3]);
    expect(
      parseBody(chatRequest, { model: 'm', messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }] })
        .messages,
    ).toHaveLength(1);
    const cases: [Parameters<typeof parseBody>[0], unknown, string][] = [
      [completionRequest, { model: 'm', prompt: 'x', temperature: 3 }, 'temperature'],
      [completionRequest, { model: 'm', prompt: 'x', n: 2 }, 'n'],
      [completionRequest, { model: 'm', prompt: 'x', max_tokens: 0 }, 'max_tokens'],
      [completionRequest, { model: 'm', prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e'] }, 'stop'],
      [completionRequest, { model: 'm', prompt: 'x', logprobs: 2 }, 'logprobs'],
      [completionRequest, { prompt: 'x' }, 'model'],
      [completionRequest, { model: 'm', prompt: ['a', 'b'] }, 'prompt'],
      [chatRequest, { model: 'm', messages: [] }, 'messages'],
      [chatRequest, { model: 'm', messages: [{ role: 'tool', content: 'x' }] }, 'messages.0.role'],
      [chatRequest, { model: 'm', messages: [{ role: 'user', content: 'x' }], tools: [{}] }, 'tools'],
    ];
    for (const [schema, body, param] of cases) {
      const e = bad(schema, body);
      expect(e.status, JSON.stringify(body)).toBe(400);
      expect(e.body().error).toMatchObject({ type: 'invalid_request_error', param });
      expect(e.message.startsWith(`${param}: `)).toBe(true);
    }
  });
});

describe('finllm serve flags', () => {
  it('bad flags are InputErrors (exit 1) naming the flag, raised before anything listens or loads', async () => {
    const cases: [Partial<ServeCliOptions>, RegExp][] = [
      [{ route: ['ab=base:1,nope:1'] }, /key 'route'.*unknown model "nope"/],
      [{ adapter: ['ft=/nonexistent/adapter'] }, /adapter ft folder not found/],
      [{ maxBatchSize: '0' }, /--max-batch-size: expected a positive integer/],
      [{ port: '70000' }, /--port: expected a port number/],
      [{ model: '/nonexistent/model' }, /model folder not found/],
      [{ chatTemplate: '/nonexistent/template.jinja' }, /chat template file not found/],
      [{ kvCache: 'fp8' }, /--kv-cache: expected f32, f16, auto, got "fp8"/],
      [{ precision: 'fp8' }, /--precision: expected/],
      // Issue 20, item 10: an empty or blank key is refused, not read as "no key".
      [{ apiKey: '' }, /--api-key: the API key is empty/],
      [{ apiKey: '   ' }, /--api-key: the API key is blank/],
      [{ apiKey: 'sk-x ' }, /--api-key: the API key starts or ends with white space/],
      // Item 13: a host that is no address, or not one of this machine (TEST-NET-1: bind fails locally).
      [{ host: '999.1.1.1' }, /--host: .*"999\.1\.1\.1", which is not a valid IPv4 address/],
      [{ host: '192.0.2.1' }, /--host: cannot listen on 192\.0\.2\.1:0 \(EADDRNOTAVAIL\)/],
    ];
    for (const [o, message] of cases) {
      const err = await serveAction(serveFlags(o), () => undefined).catch((e: unknown) => e);
      expect(err, JSON.stringify(o)).toBeInstanceOf(InputError);
      expect((err as Error).message).toMatch(message);
    }
  });

  it('an empty FINLLM_API_KEY is refused naming the variable (issue 20, item 10)', async () => {
    vi.stubEnv('FINLLM_API_KEY', '');
    try {
      const err = await serveAction(serveFlags(), () => undefined).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InputError);
      expect((err as Error).message).toMatch(/key 'FINLLM_API_KEY': the API key is empty/);
    } finally {
      vi.unstubAllEnvs();
    }
  });
});
