// `finllm serve --model DIR [--adapter NAME=DIR ...] [--route NAME=A:W,B:W] [--host] [--port]
//  [--run DIR | --template NAME]`: an OpenAI-compatible HTTP server (src/serve/) over the base model
// and its LoRA adapters. This file parses the flags; src/serve/lifecycle.ts runs the server.
import { stat } from 'node:fs/promises';
import { isIP } from 'node:net';
import { basename } from 'node:path';
import type { Command } from 'commander';
import { InputError } from '../errors.js';
import { servingPromptLayout } from '../pipeline/data/prompt-layout.js';
import { runServer } from '../serve/lifecycle.js';
import { defaultModelId } from '../serve/load.js';
import { parseAdapterSpec, parseRouteSpec } from '../serve/routing.js';
import { checkApiKey } from '../serve/server.js';
import { collect } from './common.js';
import { addDataOptions, type DataCliOptions, dataSettings, describeSettings } from './data-options.js';
import {
  applyPrecision,
  checkDir,
  KV_CACHE_HELP,
  MODEL_HELP,
  modelLoadOptions,
  numberOption,
  PRECISION_HELP,
} from './model-options.js';

export interface ServeCliOptions extends DataCliOptions {
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

export async function serveAction(
  o: ServeCliOptions,
  say: (line: string) => void = (l) => void process.stderr.write(`${l}\n`),
): Promise<void> {
  const { dir, load, precision, kvCache } = await modelLoadOptions({
    model: o.model,
    quantize: o.quantize,
    storage: o.storage,
    precision: o.precision,
    kvCache: o.kvCache,
  });
  const adapters = o.adapter.map((spec) =>
    spec.includes('=') ? parseAdapterSpec(spec) : parseAdapterSpec(`${basename(spec)}=${spec}`),
  );
  for (const a of adapters) await checkDir(a.dir, `adapter ${a.name}`);
  if (o.chatTemplate !== undefined) {
    if (
      !(await stat(o.chatTemplate).then(
        (s) => s.isFile(),
        () => false,
      ))
    )
      throw new InputError('chat template file not found', { file: o.chatTemplate });
  }
  // The prompt layout the model was trained with: --run's (or the run beside the first adapter or
  // the model), then --template and --column.
  const settings = dataSettings(o, [adapters[0]?.dir, o.model]);
  let promptLayout: ReturnType<typeof servingPromptLayout>;
  try {
    promptLayout = servingPromptLayout(
      settings,
      o.template !== undefined || settings.from === null
        ? { flag: 'template' }
        : { file: settings.from, key: 'data.template' },
    );
  } catch (err) {
    // A run folder found beside the model whose template takes more than a prompt: served as given.
    if (!(err instanceof InputError) || o.template !== undefined || o.run !== undefined) throw err;
    say(`finllm serve: warning: ${err.message}; prompts are served as given (--template to choose one)`);
    promptLayout = null;
  }
  const port = numberOption(o.port, 'port', true)!;
  if (port < 0 || port > 65535)
    throw new InputError(`expected a port number in [0, 65535], got ${port}`, { flag: 'port' });
  const drainTimeout = numberOption(o.drainTimeout, 'drain-timeout')!;
  if (!(drainTimeout >= 0))
    throw new InputError(`expected seconds >= 0, got ${drainTimeout}`, { flag: 'drain-timeout' });
  // An empty or blank key is refused, never read as "no key" (checkApiKey).
  const apiKey = o.apiKey ?? process.env.FINLLM_API_KEY ?? null;
  if (apiKey !== null) checkApiKey(apiKey, o.apiKey !== undefined ? 'api-key' : 'FINLLM_API_KEY');
  // Four dot-separated numbers are meant as an IPv4 address: one that is not (999.1.1.1) would
  // otherwise go to the resolver as a host name.
  if (/^\d+(\.\d+){3}$/.test(o.host) && isIP(o.host) !== 4)
    throw new InputError(
      `expected an IP address or a host name, got ${JSON.stringify(o.host)}, which is not a valid IPv4 address`,
      { flag: 'host' },
    );
  const maxModelLen = positiveInt(o.maxModelLen, 'max-model-len');
  const note = describeSettings(settings);
  if (note) say(note);
  await runServer({
    server: {
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
      promptLayout,
    },
    models: {
      modelDir: dir,
      load,
      adapters,
      ...(o.chatTemplate !== undefined ? { chatTemplateFile: o.chatTemplate } : {}),
      ...(maxModelLen !== undefined ? { maxModelLen } : {}),
    },
    drainTimeout,
    beforeLoad: () => applyPrecision(precision),
    say,
  });
}

export function register(program: Command): void {
  addDataOptions(program.command('serve'))
    .description(
      'serve the model and its LoRA adapters over an OpenAI-compatible HTTP API (continuous batching, A/B routes)',
    )
    .requiredOption('-m, --model <dir>', MODEL_HELP)
    .option(
      '-a, --adapter <name=dir>',
      'serve a PEFT LoRA adapter over the base as model id NAME (repeatable; a bare DIR is named after its folder)',
      collect,
      [],
    )
    .option(
      '--served-model-name <id>',
      'model id of the base model (default: the model folder name; "base" always works too)',
    )
    .option(
      '--route <name=model:weight,...>',
      'A/B route: requests to model NAME go to one of the models, chosen by weight (repeatable)',
      collect,
      [],
    )
    .option('--route-seed <n>', 'seed of the A/B choice (default 0); a request with a `user` always gets the same arm')
    .option('--host <addr>', 'address to bind', '127.0.0.1')
    .option('-p, --port <n>', 'TCP port (0 = any free port)', '8000')
    .option(
      '--api-key <key>',
      'require "Authorization: Bearer KEY" on every path but /health and /metrics (or set FINLLM_API_KEY, which keeps it out of the process list); printable ASCII, not empty',
    )
    .option('--quantize <kind>', 'quantize the base decoder linear layers at load time: nf4')
    .option('--storage <dtype>', 'GPU storage of the other base weights: f32, bf16 or f16', 'f32')
    .option('--precision <mode>', PRECISION_HELP, 'fp32')
    .option('--kv-cache <dtype>', KV_CACHE_HELP)
    .option(
      '--max-model-len <n>',
      'context length: prompt + generated tokens per request (default: min(max_position_embeddings, 4096))',
    )
    .option(
      '--max-batch-size <n>',
      'decode slots per model: requests decoded together (refused at startup beyond what the GPU memory holds)',
      '8',
    )
    .option('--max-queue <n>', 'requests waiting for a slot before new ones get 429', '64')
    .option('--max-body-bytes <n>', 'largest request body (413 beyond)', String(1 << 20))
    .option(
      '--drain-timeout <s>',
      'on SIGTERM, SIGINT or SIGHUP, how long in-flight requests may take to finish (/health answers 503 meanwhile)',
      '30',
    )
    .option('--chat-template <file>', "Jinja chat template replacing the tokenizer's (for /v1/chat/completions)")
    .option('--log-requests', 'log every request (JSON lines on stdout)')
    .addHelpText(
      'after',
      `
Endpoints: POST /v1/completions, POST /v1/chat/completions (stream: true for server-sent events),
GET /v1/models, GET /health, GET /metrics (Prometheus). Example:

  finllm serve --model ~/models/TinyLlama-1.1B --adapter ft=runs/llama-1b-qlora/adapter --route ab=base:50,ft:50
  finllm serve --model runs/default/stages/train/model      # the default pipeline's fully trained model
  curl http://127.0.0.1:8000/v1/completions -H 'content-type: application/json' \\
    -d '{"model": "ab", "prompt": "Revenue rose", "max_tokens": 16, "temperature": 0}'

Prompts are laid out as the model was trained: with --template (or the data.template of --run's
resolved-config.yaml, or of the one beside the first --adapter or the --model folder) a completion's
prompt fills the template's main field (text; instruction for alpaca; prompt for completion) and
the model sees exactly the training prompt; under the chat template it is a user message, and chat
requests use the training layout of chat records when the tokenizer has no chat template. Without
one (template auto) prompts are tokenized as given.

Sampling: temperature 0 is greedy; temperature and repetition_penalty below 1e-5 are refused (400),
as are seeds outside [0, 4294967295]. Chat templates render within a size and time limit.

Exit codes: 0 stopped by a signal (SIGTERM, SIGINT, SIGHUP) after draining, 1 bad input,
2 runtime failure.`,
    )
    .action(async (o: ServeCliOptions) => {
      await serveAction(o);
    });
}
