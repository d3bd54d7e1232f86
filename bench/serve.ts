// Load test of `finllm serve` over loopback: the server in this process on 127.0.0.1 (a free
// port), clients sending streaming /v1/completions with finance prompts of varied length.
//
//   npm run bench:serve -- [--model DIR | --preset 1.1b] [--requests 32] [--concurrency 8]
//                          [--max-tokens 16] [--batch 8] [--time-limit 120]
//
// Two phases on the same warm server: one request at a time (no batching possible), then
// `concurrency` clients at once (continuous batching). Each reports requests/s, generated tokens/s,
// p50/p99 end-to-end latency and time to first token, and the mean decode batch occupancy (from
// /metrics). Bounded: at most `requests` per phase, and a phase stops sending after `time-limit`
// seconds and aborts what is still running 30 s later. Results: a table and
// bench/results/serve-<time>.json. Greedy decoding, EOS ignored by the token budget only (a request
// may stop early at EOS; tokens/s counts what was generated).
import { mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng } from '../src/engine/random.js';
import { engine, initEngine } from '../src/engine/tensor.js';
import { initModel } from '../src/llama/init.js';
import { disposeServingModels, loadServingModels } from '../src/serve/load.js';
import { FinllmServer } from '../src/serve/server.js';

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : fallback;
}

const e = await initEngine();
const software = e.dev.info.isSoftware;
const preset = arg('preset', '');
const requests = Number(arg('requests', software ? '32' : '256'));
const concurrency = Number(arg('concurrency', '8'));
const maxTokens = Number(arg('max-tokens', software ? '16' : '128'));
const batch = Number(arg('batch', String(concurrency)));
const timeLimitS = Number(arg('time-limit', '120'));

let modelDir = arg('model', join(process.cwd(), 'models/tiny-fin'));
let tmp: string | null = null;
if (preset) {
  tmp = mkdtempSync(join(tmpdir(), 'finllm-bench-serve-'));
  await initModel(tmp, { preset, tokenizerDir: join(process.cwd(), 'models/tiny-fin'), seed: 0 });
  modelDir = tmp;
}
const models = await loadServingModels({ modelDir, maxModelLen: 512 });
if (tmp) rmSync(tmp, { recursive: true, force: true });
const server = new FinllmServer({
  host: '127.0.0.1',
  port: 0,
  baseId: 'bench',
  maxBatchSize: batch,
  maxQueue: requests,
});
const url = await server.listen();
server.setReady(models);

const PHRASES = [
  'Revenue rose 9% to $2.31 billion',
  'Net interest margin narrowed by 12 basis points as deposit costs rose, while loan growth',
  'The board declared a quarterly dividend of $0.52 per share',
  'Guidance for fiscal 2027',
  'Operating expenses fell 3% year over year, driven by lower headcount and the completion of the integration program announced last spring',
  'Free cash flow',
  'Management expects gross margin to',
  'Credit quality remained stable; net charge-offs were 0.41% of average loans, compared with',
];
const rng = new Rng(1);
const prompts = Array.from({ length: requests }, () => PHRASES[rng.int(PHRASES.length)]!);

interface Sample {
  latencyMs: number;
  ttftMs: number;
  tokens: number;
}

/** One streaming completion; resolves with its timings, or null when aborted. */
async function one(prompt: string, signal: AbortSignal): Promise<Sample | null> {
  const t0 = performance.now();
  let ttft = NaN;
  let tokens = 0;
  try {
    const res = await fetch(`${url}/v1/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        model: 'bench',
        prompt,
        max_tokens: maxTokens,
        temperature: 0,
        stream: true,
        stream_options: { include_usage: true },
      }),
      signal,
    });
    if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}: ${await res.text()}`);
    const decoder = new TextDecoder();
    let buf = '';
    for await (const bytes of res.body) {
      buf += decoder.decode(bytes as Uint8Array, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n\n')) >= 0) {
        const event = buf.slice(0, nl);
        buf = buf.slice(nl + 2);
        if (!event.startsWith('data: ') || event === 'data: [DONE]') continue;
        const chunk = JSON.parse(event.slice(6)) as {
          choices: { text: string }[];
          usage?: { completion_tokens: number } | null;
          error?: unknown;
        };
        if (chunk.error) throw new Error(JSON.stringify(chunk.error));
        if (Number.isNaN(ttft) && chunk.choices[0]?.text) ttft = performance.now() - t0;
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
      }
    }
  } catch (err) {
    if (signal.aborted) return null;
    throw err;
  }
  return { latencyMs: performance.now() - t0, ttftMs: ttft, tokens };
}

function percentile(xs: number[], p: number): number {
  const s = xs.filter((x) => !Number.isNaN(x)).sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!; // nearest rank
}

async function metricValue(name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

async function phase(label: string, n: number, clients: number) {
  const steps0 = await metricValue('finllm_decode_steps_total');
  const rows0 = await metricValue('finllm_decode_rows_total');
  const abort = new AbortController();
  const deadline = performance.now() + timeLimitS * 1000;
  const hardStop = setTimeout(() => abort.abort(), (timeLimitS + 30) * 1000);
  const samples: Sample[] = [];
  let next = 0;
  let aborted = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (next < n && performance.now() < deadline) {
        const s = await one(prompts[next++ % prompts.length]!, abort.signal);
        if (s) samples.push(s);
        else aborted++;
      }
    }),
  );
  clearTimeout(hardStop);
  const wallS = (performance.now() - t0) / 1000;
  const steps = (await metricValue('finllm_decode_steps_total')) - steps0;
  const rows = (await metricValue('finllm_decode_rows_total')) - rows0;
  const lat = samples.map((s) => s.latencyMs);
  const ttft = samples.map((s) => s.ttftMs);
  const tokens = samples.reduce((a, s) => a + s.tokens, 0);
  return {
    phase: label,
    concurrency: clients,
    requests: samples.length,
    aborted,
    wall_s: wallS,
    requests_per_s: samples.length / wallS,
    generated_tok_per_s: tokens / wallS,
    latency_ms_p50: percentile(lat, 50),
    latency_ms_p99: percentile(lat, 99),
    ttft_ms_p50: percentile(ttft, 50),
    ttft_ms_p99: percentile(ttft, 99),
    mean_batch_rows: steps ? rows / steps : 0,
  };
}

console.log(`adapter: ${e.dev.name}`);
console.log(
  `model: ${preset ? `preset ${preset} (random init)` : modelDir}; ${batch} decode slots; ${maxTokens} new tokens per request (greedy); loopback ${url}`,
);
await one(PHRASES[0]!, new AbortController().signal); // warm-up: pipelines compile
const results = [await phase('sequential', Math.min(8, requests), 1), await phase('concurrent', requests, concurrency)];

const cols: [string, (r: (typeof results)[number]) => string][] = [
  ['phase', (r) => r.phase],
  ['clients', (r) => String(r.concurrency)],
  ['requests', (r) => String(r.requests)],
  ['req/s', (r) => r.requests_per_s.toFixed(2)],
  ['gen tok/s', (r) => r.generated_tok_per_s.toFixed(1)],
  ['latency p50 ms', (r) => r.latency_ms_p50.toFixed(0)],
  ['latency p99 ms', (r) => r.latency_ms_p99.toFixed(0)],
  ['TTFT p50 ms', (r) => r.ttft_ms_p50.toFixed(0)],
  ['TTFT p99 ms', (r) => r.ttft_ms_p99.toFixed(0)],
  ['mean batch', (r) => r.mean_batch_rows.toFixed(2)],
];
console.log(cols.map(([h]) => h).join(' | '));
for (const r of results) console.log(cols.map(([, f]) => f(r)).join(' | '));

const out = {
  adapter: e.dev.name,
  model: preset ? `preset ${preset}` : modelDir,
  batch,
  max_tokens: maxTokens,
  results,
  date: new Date().toISOString(),
};
const resDir = join(process.cwd(), 'bench', 'results');
mkdirSync(resDir, { recursive: true });
const file = join(resDir, `serve-${out.date.replace(/[:.]/g, '-')}.json`);
writeFileSync(`${file}.tmp`, JSON.stringify(out, null, 2));
renameSync(`${file}.tmp`, file);
console.log(`wrote ${file}`);
await server.shutdown(0);
disposeServingModels(models);
engine().dev.destroy();
