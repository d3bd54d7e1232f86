// The life of a server process: listen at once (requests get 503 while the model loads), load,
// serve until a signal, drain, stop. The first SIGTERM, SIGINT or SIGHUP drains (in-flight
// requests finish within the drain timeout, new ones are refused), a second one exits at once.
// SIGHUP (the terminal closed, or a supervisor's reload) drains too: a server has nothing to reload.
import { InputError } from '../errors.js';
import { disposeServingModels, loadServingModels, type ServeModelSpec, type ServingModels } from './load.js';
import { FinllmServer, type ServerOptions } from './server.js';

export interface RunServerOptions {
  /** The HTTP server's options (host, port, keys, routes, batch and queue limits). */
  server: ServerOptions & { host: string; port: number };
  /** What to load once listening. */
  models: ServeModelSpec;
  /** Seconds in-flight requests may take to finish after the first signal. */
  drainTimeout: number;
  /** Runs before the model loads (e.g. setting the compute precision). */
  beforeLoad?: () => Promise<unknown>;
  /** Status lines (default: stderr). */
  say?: (line: string) => void;
}

const MiB = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

/** Serves until a signal has drained the server (resolves) or loading failed (rejects, after closing). */
export async function runServer(o: RunServerOptions): Promise<void> {
  const say = o.say ?? ((l: string) => void process.stderr.write(`${l}\n`));
  const { host, port } = o.server;
  const dir = o.models.modelDir;
  const drainTimeout = o.drainTimeout;
  const server = new FinllmServer(o.server);

  let url: string;
  try {
    url = await server.listen();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES')
      throw new InputError(`cannot listen on ${host}:${port} (${code})`, { flag: 'port' });
    // Not an address of this machine, or a name that does not resolve.
    if (
      code === 'EADDRNOTAVAIL' ||
      code === 'ENOTFOUND' ||
      code === 'EAI_AGAIN' ||
      code === 'EAI_NONAME' ||
      code === 'EAI_FAIL'
    ) {
      throw new InputError(`cannot listen on ${host}:${port} (${code}): not an address of this machine`, {
        flag: 'host',
      });
    }
    throw err;
  }
  say(`finllm serve: listening on ${url} (loading ${dir}; requests get 503 until it is ready)`);
  if (!o.server.apiKey && !['127.0.0.1', 'localhost', '::1'].includes(host))
    say(`finllm serve: warning: listening on ${host} without --api-key: anyone who can reach it can use it`);

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
    await o.beforeLoad?.();
    const loading = loadServingModels(o.models);
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
    const ids = server.router
      .ids()
      .map((m) =>
        m.kind === 'route'
          ? `${m.id} (route: ${m.route!.arms.map((a) => `${a.model} ${a.weight}`).join(' / ')})`
          : m.id,
      );
    say(
      `finllm serve: ready: ${ids.join(', ')}; context ${models.contextLength} tokens, ${o.server.maxBatchSize ?? 8} decode slots per model, KV cache (${kv.dtype}) ${MiB(kv.bytesPerVariant)} per model in use`,
    );
  } catch (err) {
    server.setFailed(err instanceof Error ? err.message : String(err));
    await server.shutdown(0);
    throw err;
  }

  await stopSignal;
  stopping = server.shutdown(drainTimeout * 1000).then(({ drained }) => {
    say(
      drained
        ? 'finllm serve: drained; stopped'
        : `finllm serve: drain timeout (${drainTimeout} s): cancelled the remaining requests; stopped`,
    );
  });
  await stopping;
  disposeServingModels(models);
  for (const sig of signals) process.off(sig, onSignal);
}
