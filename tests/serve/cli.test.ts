// `finllm serve` as a process (dist/, built by `npm test`'s pretest): same greedy text as the
// `finllm generate` process, SIGTERM and SIGHUP drain the request in flight (/health says 503
// meanwhile) and exit 0, and a taken port exits 1 with a clear message (bad flags are checked
// in-process in units.test.ts).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import OpenAI, { APIError } from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, tinyModelWithChatTemplate } from './helpers.js';

let modelDir = '';
const children: ChildProcess[] = [];

beforeAll(async () => {
  modelDir = await tinyModelWithChatTemplate();
});

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
});

interface Served {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  exited: Promise<number | null>;
}

/** Starts `finllm serve` and waits until it says it is ready. */
async function serve(args: string[]): Promise<Served> {
  const child = spawn(process.execPath, [CLI, 'serve', '--model', modelDir, '--port', '0', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  children.push(child);
  let err = '';
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /listening on (\S+)/.exec(err);
      if (m && err.includes('ready:')) resolve(m[1]!);
    });
    void exited.then((code) => reject(new Error(`finllm serve exited (${code}) before it was ready:\n${err}`)));
  });
  return { child, url, stderr: () => err, exited };
}

// The stream in flight when the signal lands is long: the server (its own process) keeps generating
// while this process checks /health and a refused request, and once it has drained it closes its
// listener, so those checks must come first. At ~13 ms a token on lavapipe, 200 tokens drain in
// ~2.6 s against ~60 ms for the checks (40 tokens drained in ~0.5 s: a 0.5 s stall of this process
// alone made /health a refused connection).
const CONTEXT = 256;
const DRAINED_TOKENS = 200;

describe('finllm serve (the process)', () => {
  it('answers what `finllm generate` prints; a second server on its port exits 1; SIGTERM lets the stream in flight finish, refuses new work, exits 0', async () => {
    const prompt = 'Quarterly revenue grew';
    const gen = spawnSync(
      process.execPath,
      [CLI, 'generate', '--model', modelDir, '--prompt', prompt, '-n', '10', '--greedy'],
      { encoding: 'utf8', timeout: 120_000 },
    );
    expect(gen.status, gen.stderr).toBe(0);

    const s = await serve(['--max-model-len', String(CONTEXT), '--api-key', 'sk-cli']);
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sk-cli', maxRetries: 0 });
    const done = await client.completions.create({ model: 'base', prompt, max_tokens: 10, temperature: 0 });
    expect(`${done.choices[0]!.text}\n`).toBe(gen.stdout);
    // A second server on the same port exits 1 before loading anything.
    const taken = spawnSync(process.execPath, [CLI, 'serve', '--model', modelDir, '--port', new URL(s.url).port], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(taken.status).toBe(1);
    expect(taken.stderr).toMatch(/cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/);

    const stream = await client.completions.create({
      model: 'base',
      prompt,
      max_tokens: DRAINED_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let chunks = 0;
    let afterSignal = 0;
    let signalled = false;
    let usage: OpenAI.CompletionUsage | undefined;
    let finish: string | null = null;
    for await (const c of stream) {
      chunks++;
      if (c.usage) usage = c.usage;
      finish = c.choices[0]?.finish_reason ?? finish;
      if (signalled) afterSignal++;
      if (chunks === 1) {
        s.child.kill('SIGTERM');
        await expect.poll(() => s.stderr().includes('SIGTERM: finishing'), { timeout: 30_000 }).toBe(true);
        signalled = true;
        // Draining: the listener stays open; /health says so and a new request gets a 503.
        const health = await fetch(`${s.url}/health`);
        expect([health.status, await health.json()]).toEqual([503, { status: 'draining' }]);
        const refused = await client.completions
          .create({ model: 'base', prompt, max_tokens: 1 })
          .catch((e: unknown) => e);
        expect(refused).toBeInstanceOf(APIError);
        expect((refused as APIError).status).toBe(503);
      }
    }
    expect(afterSignal).toBeGreaterThan(0); // the stream was still running when the signal landed
    // It ran to its end: DRAINED_TOKENS tokens, or fewer only if it stopped at EOS.
    expect(
      finish === 'length'
        ? usage?.completion_tokens === DRAINED_TOKENS
        : finish === 'stop' && usage!.completion_tokens <= DRAINED_TOKENS,
    ).toBe(true);
    expect(await s.exited).toBe(0);
    expect(s.stderr()).toContain('drained; stopped');
  });

  it('SIGHUP drains like SIGTERM: the stream in flight runs to its end, then exit 0 (issue 20, item 20)', async () => {
    const s = await serve(['--max-model-len', String(CONTEXT)]);
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const stream = await client.completions.create({
      model: 'base',
      prompt: 'Quarterly revenue grew',
      max_tokens: DRAINED_TOKENS,
      temperature: 0,
      stream: true,
      stream_options: { include_usage: true },
    });
    let chunks = 0;
    let afterSignal = 0;
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) {
      chunks++;
      if (c.usage) usage = c.usage;
      if (chunks > 1) afterSignal++;
      if (chunks === 1) {
        s.child.kill('SIGHUP');
        await expect.poll(() => s.stderr().includes('SIGHUP: finishing'), { timeout: 30_000 }).toBe(true);
        expect((await fetch(`${s.url}/health`)).status).toBe(503);
      }
    }
    expect(afterSignal).toBeGreaterThan(0);
    expect(usage?.completion_tokens).toBeGreaterThan(0);
    expect(await s.exited).toBe(0);
    expect(s.stderr()).toContain('drained; stopped');
  });
});
