// Shared set-up for the finllm serve tests: a copy of the bundled tiny model with a chat template,
// a LoRA adapter for it with non-zero B (so it changes the output), and /metrics reading.
import { symlinkSync, writeFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach } from 'vitest';
import type { ServeCliOptions } from '../../src/cli/serve.js';
import { Rng } from '../../src/engine/random.js';
import { LlamaModel } from '../../src/llama/model.js';
import { writeAdapter } from '../../src/llama/peft.js';
import type { ServingModels } from '../../src/serve/load.js';
import { FinllmServer, type ServerOptions } from '../../src/serve/server.js';

export const ROOT = join(import.meta.dirname, '..', '..');
export const TINY = join(ROOT, 'models', 'tiny-fin');
export const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');

/**
 * The servers of a test file: the function returned starts one on `options`, listening on
 * loopback, ready with `ready` unless that is null; every server started is shut down after each test.
 */
export function useServers(): (
  options: ServerOptions,
  ready: ServingModels | null,
) => Promise<{ server: FinllmServer; url: string }> {
  const servers: FinllmServer[] = [];
  afterEach(async () => {
    for (const s of servers.splice(0)) await s.shutdown(0);
  });
  return async (options, ready) => {
    const server = new FinllmServer(options);
    servers.push(server);
    const url = await server.listen();
    if (ready) server.setReady(ready);
    return { server, url };
  };
}

/** `finllm serve` options of the tiny model on any free local port, small limits; `o` overrides or adds flags. */
export function serveFlags(o: Partial<ServeCliOptions> = {}): ServeCliOptions {
  return {
    model: TINY,
    adapter: [],
    route: [],
    host: '127.0.0.1',
    port: '0',
    maxBatchSize: '8',
    maxQueue: '64',
    maxBodyBytes: '1000',
    drainTimeout: '1',
    ...o,
  };
}

/** A zephyr-style template (the bundled tokenizer has none). */
export const CHAT_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}";

/** The tiny model's files linked into a fresh folder, plus chat_template.jinja. */
export async function tinyModelWithChatTemplate(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'finllm-serve-model-'));
  for (const f of [
    'config.json',
    'generation_config.json',
    'model.safetensors',
    'tokenizer.json',
    'tokenizer_config.json',
  ])
    symlinkSync(join(TINY, f), join(dir, f));
  writeFileSync(join(dir, 'chat_template.jinja'), CHAT_TEMPLATE);
  return dir;
}

/** A PEFT adapter for the tiny model with random A and B (the engine must be initialized). */
export async function randomAdapter(modelDir: string, seed: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'finllm-serve-adapter-'));
  const model = await LlamaModel.load(modelDir);
  try {
    model.initLora({ r: 4, loraAlpha: 8 }, seed);
    const adapter = await model.adapter();
    const rng = new Rng(seed + 1);
    for (const w of adapter.weights.values()) for (let i = 0; i < w.B.length; i++) w.B[i] = 0.3 * rng.normal();
    await writeAdapter(dir, adapter);
  } finally {
    model.dispose();
  }
  return dir;
}

/** One sample of a Prometheus text exposition (0 when absent); `labels` must all match. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  let found = false;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      total += Number(m[3]);
      found = true;
    }
  }
  return found ? total : 0;
}

export async function waitFor(cond: () => Promise<boolean>, what: string, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
