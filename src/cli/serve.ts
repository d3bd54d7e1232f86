// `finllm serve --model DIR [--adapter NAME=DIR ...] [--route NAME=A:W,B:W] [--host] [--port]`:
// an OpenAI-compatible HTTP server (src/serve/) over the base model and its LoRA adapters.
import { stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import { defaultModelId, disposeServingModels, loadServingModels, type ServingModels } from '../serve/load.js';
import { parseAdapterSpec, parseRouteSpec } from '../serve/routing.js';
import { FinllmServer, checkApiKey } from '../serve/server.js';
import { collect } from './common.js';
import { KV_CACHE_HELP, MODEL_HELP, PRECISION_HELP, applyPrecision, checkDir, modelLoadOptions, numberOption } from './model-options.js';

export interface ServeCliOptions {
  model?: string;
  adapter: string[];
  route: string[];
  routeSeed?: string;
  servedModelName?: string;
  host: string;
  port: string;
  apiKey?: string;
  quantize?: string;
  storage?: string;
  precision?: string;
  kvCache?: string;
  maxModelLen?: string;
  maxBatchSize: string;
  maxQueue: string;
  maxBodyBytes: string;
  drainTimeout: string;
  chatTemplate?: string;
  logRequests?: boolean;
}

function positiveInt(value: string | undefined, flag: string): number | undefined {
  const n = numberOption(value, flag, true);
  if (n !== undefined && n < 1) throw new InputError(`expected a positive integer, got ${n}`, { flag });
  return n;
}

const MiB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

export async function serveAction(o: ServeCliOptions, say: (line: string) => void = (l) => void process.stderr.write(`${l}\n`)): Promise<void> {
  const { dir, load, precision, kvCache } = await modelLoadOptions({ model: o.model, quantize: o.quantize, storage: o.storage, precision: o.precision, kvCache: o.kvCache });
  const adapters = o.adapter.map((spec) => (spec.includes('=') ? parseAdapterSpec(spec) : parseAdapterSpec(`${basename(spec)}=${spec}`)));
  for (const a of adapters) await checkDir(a.dir, `adapter ${a.name}`);
  if (o.chatTemplate !== undefined) {
    if (!(await stat(o.chatTemplate).then((s) => s.isFile(), () => false))) throw new InputError('chat template file not found', { file: o.chatTemplate });
  }
  const port = numberOption(o.port, 'port', true)!;
  if (port < 0 || port > 65535) throw new InputError(`expected a port number in [0, 65535], got ${port}`, { flag: 'port' });
  const drainTimeout = numberOption(o.drainTimeout, 'drain-timeout')!;
  if (!(drainTimeout >= 0)) throw new InputError(`expected seconds >= 0, got ${drainTimeout}`, { flag: 'drain-timeout' });
  // An empty or blank key is refused, never read as "no key" (checkApiKey).
  const apiKey = o.apiKey ?? process.env.FINLLM_API_KEY ?? null;
  if (apiKey !== null) checkApiKey(apiKey, o.apiKey !== undefined ? 'api-key' : 'FINLLM_API_KEY');
  // Four dot-separated numbers are meant as an IPv4 address: one that is not (999.1.1.1) would
  // otherwise go to the resolver as a host name.
  if (/^\d+(\.\d+){3}$/.test(o.host) && isIP(o.host) !== 4) throw new InputError(`expected an IP address or a host name, got ${JSON.stringify(o.host)}, which is not a valid IPv4 address`, { flag: 'host' });
  const maxModelLen = positiveInt(o.maxModelLen, 'max-model-len');
  const server = new FinllmServer({
    host: o.host,
    port,
    apiKey,
    baseId: o.servedModelName ?? defaultModelId(dir),
    adapterNames: adapters.map((a) => a.name),
    routes: o.route.map(parseRouteSpec),
    routeSeed: numberOption(o.routeSeed, 'route-seed', true) ?? 0,
    maxBatchSize: positiveInt(o.maxBatchSize, 'max-batch-size')!,
    maxQueue: positiveInt(o.maxQueue, 'max-queue')!,
    bodyLimit: positiveInt(o.maxBodyBytes, 'max-body-bytes')!,
    logRequests: o.logRequests ?? false,
    kvCache,
  });

  let url: string;
  try {
    url = await server.listen();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES') throw new InputError(`cannot listen on ${o.host}:${port} (${code})`, { flag: 'port' });
    // Not an address of this machine, or a name that does not resolve.
    if (code === 'EADDRNOTAVAIL' || code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NONAME' || code === 'EAI_FAIL') {
      throw new InputError(`cannot listen on ${o.host}:${port} (${code}): not an address of this machine`, { flag: 'host' });
    }
    throw err;
  }
  say(`finllm serve: listening on ${url} (loading ${dir}; requests get 503 until it is ready)`);
  if (!apiKey && !['127.0.0.1', 'localhost', '::1'].includes(o.host)) say(`finllm serve: warning: listening on ${o.host} without --api-key: anyone who can reach it can use it`);

  // Signals: the first drains (in-flight requests finish), a second one stops at once. SIGHUP (the
  // terminal closed, or a supervisor's reload) drains too: a server has nothing to reload.
  let stopping: Promise<void> | null = null;
  let stopRequested: (() => void) | null = null;
  const stopSignal = new Promise<void>((resolve) => (stopRequested = resolve));
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      say(`finllm serve: ${sig} again: exiting without waiting`);
      process.exit(130);
    }
    say(`finllm serve: ${sig}: finishing the requests in flight (up to ${drainTimeout} s), refusing new ones`);
    stopRequested!();
  };
  const signals: NodeJS.Signals[] = ['SIGTERM', 'SIGINT', 'SIGHUP'];
  for (const sig of signals) process.on(sig, onSignal);

  let models: ServingModels | null = null;
  try {
    await applyPrecision(precision);
    const loading = loadServingModels({
      modelDir: dir,
      load,
      adapters,
      ...(o.chatTemplate !== undefined ? { chatTemplateFile: o.chatTemplate } : {}),
      ...(maxModelLen !== undefined ? { maxModelLen } : {}),
    });
    const first = await Promise.race([loading.then((m) => ({ m })), stopSignal.then(() => null)]);
    if (!first) {
      // Stopped while loading: wait for the load to end, then free what it made.
      stopping = server.shutdown(0).then(() => undefined);
      await loading.then(disposeServingModels, () => undefined);
      await stopping;
      return;
    }
    models = first.m;
    server.setReady(models);
    const kv = server.kvCache!;
    const ids = server.router.ids().map((m) => (m.kind === 'route' ? `${m.id} (route: ${m.route!.arms.map((a) => `${a.model} ${a.weight}`).join(' / ')})` : m.id));
    say(`finllm serve: ready: ${ids.join(', ')}; context ${models.contextLength} tokens, ${o.maxBatchSize} decode slots per model, KV cache (${kv.dtype}) ${MiB(kv.bytesPerVariant)} per model in use`);
  } catch (err) {
    server.setFailed(err instanceof Error ? err.message : String(err));
    await server.shutdown(0);
    throw err;
  }

  await stopSignal;
  stopping = server.shutdown(drainTimeout * 1000).then(({ drained }) => {
    say(drained ? 'finllm serve: drained; stopped' : `finllm serve: drain timeout (${drainTimeout} s): cancelled the remaining requests; stopped`);
  });
  await stopping;
  disposeServingModels(models);
  for (const sig of signals) process.off(sig, onSignal);
}

export function register(program: Command): void {
  program
    .command('serve')
    .description('serve the model and its LoRA adapters over an OpenAI-compatible HTTP API (continuous batching, A/B routes)')
    .requiredOption('-m, --model <dir>', MODEL_HELP)
    .option('-a, --adapter <name=dir>', 'serve a PEFT LoRA adapter over the base as model id NAME (repeatable; a bare DIR is named after its folder)', collect, [])
    .option('--served-model-name <id>', 'model id of the base model (default: the model folder name; "base" always works too)')
    .option('--route <name=model:weight,...>', 'A/B route: requests to model NAME go to one of the models, chosen by weight (repeatable)', collect, [])
    .option('--route-seed <n>', 'seed of the A/B choice (default 0); a request with a `user` always gets the same arm')
    .option('--host <addr>', 'address to bind', '127.0.0.1')
    .option('-p, --port <n>', 'TCP port (0 = any free port)', '8000')
    .option('--api-key <key>', 'require "Authorization: Bearer KEY" on every path but /health and /metrics (or set FINLLM_API_KEY, which keeps it out of the process list); printable ASCII, not empty')
    .option('--quantize <kind>', 'quantize the base decoder linear layers at load time: nf4')
    .option('--storage <dtype>', 'GPU storage of the other base weights: f32, bf16 or f16', 'f32')
    .option('--precision <mode>', PRECISION_HELP, 'fp32')
    .option('--kv-cache <dtype>', KV_CACHE_HELP)
    .option('--max-model-len <n>', 'context length: prompt + generated tokens per request (default: min(max_position_embeddings, 4096))')
    .option('--max-batch-size <n>', 'decode slots per model: requests decoded together (refused at startup beyond what the GPU memory holds)', '8')
    .option('--max-queue <n>', 'requests waiting for a slot before new ones get 429', '64')
    .option('--max-body-bytes <n>', 'largest request body (413 beyond)', String(1 << 20))
    .option('--drain-timeout <s>', 'on SIGTERM, SIGINT or SIGHUP, how long in-flight requests may take to finish (/health answers 503 meanwhile)', '30')
    .option('--chat-template <file>', 'Jinja chat template replacing the tokenizer\'s (for /v1/chat/completions)')
    .option('--log-requests', 'log every request (JSON lines on stdout)')
    .addHelpText('after', `
Endpoints: POST /v1/completions, POST /v1/chat/completions (stream: true for server-sent events),
GET /v1/models, GET /health, GET /metrics (Prometheus). Example:

  finllm serve --model ~/models/TinyLlama-1.1B --adapter ft=runs/llama-1b-qlora/adapter --route ab=base:50,ft:50
  finllm serve --model runs/default/stages/train/model      # the default pipeline's fully trained model
  curl http://127.0.0.1:8000/v1/completions -H 'content-type: application/json' \\
    -d '{"model": "ab", "prompt": "Revenue rose", "max_tokens": 16, "temperature": 0}'

Sampling: temperature 0 is greedy; temperature and repetition_penalty below 1e-5 are refused (400),
as are seeds outside [0, 4294967295]. Chat templates render within a size and time limit.

Exit codes: 0 stopped by a signal (SIGTERM, SIGINT, SIGHUP) after draining, 1 bad input,
2 runtime failure.`)
    .action(async (o: ServeCliOptions) => {
      await serveAction(o);
    });
}
