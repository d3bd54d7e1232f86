// Hub model ids through @huggingface/hub (src/io/hub.ts), against a loopback server that speaks the
// Hub's file API (tests/io/mock-hub.ts) and serves a tiny model these tests make: the HF cache
// layout, a second resolve without a request, resume after a cut connection, the token as Bearer,
// offline mode, one-line errors, and the model loading and generating from the cache.
import { spawn } from 'node:child_process';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAction } from '../../src/cli/generate.js';
import { InputError, RuntimeFailure } from '../../src/errors.js';
import {
  type HubProgress,
  type HubSettings,
  hubIdOfSnapshot,
  hubSettings,
  linkBlob,
  parseHubId,
  repoCacheFolder,
  resolveModelPath,
  stderrProgress,
} from '../../src/io/hub.js';
import { initModel } from '../../src/llama/init.js';
import { loadConfig } from '../../src/pipeline/config.js';
import { runTraining } from '../../src/pipeline/train/trainer.js';
import { defaultModelId } from '../../src/serve/load.js';
import { sampleSlice } from '../pipeline/train/helpers.js';
import { useTempDirs } from './helpers.js';
import { gitBlobId, type MockHub, sha256, startMockHub } from './mock-hub.js';

const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli', 'main.js');
const COMMIT = 'a1b2c3d4e5f60718293a4b5c6d7e8f9012345678';
const TOKEN = 'hf_loopbacktesttoken';
const tempDir = useTempDirs();

/** Runs the CLI without blocking this process, which serves the mock Hub. */
function runCli(args: string[], env: NodeJS.ProcessEnv): Promise<{ status: number | null; stderr: string }> {
  return new Promise((ok, fail) => {
    const child = spawn(process.execPath, [CLI, ...args], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => void (stderr += d));
    child.on('error', fail);
    child.on('close', (status) => ok({ status, stderr }));
  });
}

let hub: MockHub;
let modelDir: string;
let files: Map<string, Buffer>;
let sharded: Map<string, Buffer>;

beforeAll(async () => {
  const { mkdtemp } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  modelDir = join(await mkdtemp(join(tmpdir(), 'finllm-hub-model-')), 'tiny');
  await initModel(modelDir, { preset: 'tiny', tokenizerDir: join(ROOT, 'models', 'tiny-fin'), seed: 7 });
  files = new Map(readdirSync(modelDir).map((f) => [f, readFileSync(join(modelDir, f))]));
  // A pickle beside the safetensors, as many repos have: it must never be fetched.
  files.set('pytorch_model.bin', Buffer.from('not to be downloaded'));
  files.set('README.md', Buffer.from('# tiny\n'));
  // Sharded weights: the index names two shards; the single file and a consolidated copy are not fetched.
  const shardNames = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];
  sharded = new Map([
    ['config.json', files.get('config.json')!],
    ['tokenizer.json', files.get('tokenizer.json')!],
    [
      'model.safetensors.index.json',
      Buffer.from(
        JSON.stringify({
          metadata: {},
          weight_map: { 'a.weight': shardNames[0], 'b.weight': shardNames[1], 'c.weight': shardNames[1] },
        }),
      ),
    ],
    [shardNames[0]!, Buffer.from('first shard bytes')],
    [shardNames[1]!, Buffer.from('second shard bytes')],
    ['model.safetensors', Buffer.from('single file')],
    ['consolidated.safetensors', Buffer.from('mistral-style copy')],
    ['original/model.safetensors', Buffer.from('sub-folder copy')],
  ]);
  const lfs = (p: string) => p.endsWith('.safetensors') || p.endsWith('.bin');
  hub = await startMockHub({
    'test-org/tiny': { files, lfs, commit: COMMIT },
    'test-org/gated': { files, lfs, commit: COMMIT, token: TOKEN },
    'test-org/sharded': { files: sharded, lfs, commit: COMMIT },
    'test-org/pickle': { files: new Map([...files].filter(([f]) => !f.endsWith('.safetensors'))), lfs, commit: COMMIT },
    // A model without an org, as gpt2 and distilgpt2 are on the Hub.
    tinyllama: { files, lfs, commit: COMMIT },
  });
});
afterAll(async () => {
  await hub?.close();
});

const settingsFor = (cacheDir: string, extra: Partial<HubSettings> = {}): HubSettings => ({
  cacheDir,
  endpoint: hub.url,
  token: undefined,
  offline: false,
  ...extra,
});
const quiet = () => undefined;
const requestsDuring = async <T>(fn: () => Promise<T>): Promise<{ value: T; requests: typeof hub.requests }> => {
  const before = hub.requests.length;
  const value = await fn();
  return { value, requests: hub.requests.slice(before) };
};

describe('parseHubId', () => {
  it('reads org/name, a single name (models without an org) and @revision, and nothing shaped like a path or file', () => {
    expect(parseHubId('meta-llama/Llama-3.2-1B')).toEqual({ repo: 'meta-llama/Llama-3.2-1B', revision: 'main' });
    expect(parseHubId('org/name@v1.0')).toEqual({ repo: 'org/name', revision: 'v1.0' });
    expect(parseHubId(`org/name@${COMMIT}`)).toEqual({ repo: 'org/name', revision: COMMIT });
    expect(parseHubId('gpt2')).toEqual({ repo: 'gpt2', revision: 'main' });
    expect(parseHubId('distilgpt2@v1.0')).toEqual({ repo: 'distilgpt2', revision: 'v1.0' });
    for (const notId of [
      './org/name',
      '../models/fin-base',
      '/abs/name',
      'a/b/c',
      'org/..',
      '.hidden/x',
      // A single name with a '.' is a file name, never an id (a missing file is reported as such).
      'model.gguf',
      'config.yaml',
      'Llama-3.2-1B',
      '.hidden',
      '-name',
      // '--' separates org and name in the cache folder: the Hub refuses it in names.
      'org/a--b',
      'a--b',
      'org/name@',
      'name@',
      'org/name@../x',
    ]) {
      expect(parseHubId(notId), notId).toBeNull();
    }
  });

  it('config keeps a Hub id that names no local folder, and resolves a local path', async () => {
    const dir = await tempDir();
    writeFileSync(join(dir, 'hub.yaml'), 'model:\n  path: test-org/tiny@v2\ndata:\n  train: t.jsonl\n');
    expect(loadConfig({ file: join(dir, 'hub.yaml') }).model.path).toBe('test-org/tiny@v2');
    mkdirSync(join(dir, 'test-org', 'tiny'), { recursive: true });
    expect(loadConfig({ file: join(dir, 'hub.yaml') }).model.path).toBe('test-org/tiny@v2'); // @v2 names no folder
    writeFileSync(join(dir, 'local.yaml'), 'model:\n  path: test-org/tiny\ndata:\n  train: t.jsonl\n');
    expect(loadConfig({ file: join(dir, 'local.yaml') }).model.path).toBe(join(dir, 'test-org', 'tiny'));
    // A single name: a Hub id while no file or folder of that name is next to the config, then that folder.
    writeFileSync(join(dir, 'single.yaml'), 'model:\n  path: gpt2\ndata:\n  train: t.jsonl\n');
    expect(loadConfig({ file: join(dir, 'single.yaml') }).model.path).toBe('gpt2');
    mkdirSync(join(dir, 'gpt2'));
    expect(loadConfig({ file: join(dir, 'single.yaml') }).model.path).toBe(join(dir, 'gpt2'));
    // A name with a '.' is always a path.
    writeFileSync(join(dir, 'file.yaml'), 'model:\n  path: base.gguf\ndata:\n  train: t.jsonl\n');
    expect(loadConfig({ file: join(dir, 'file.yaml') }).model.path).toBe(join(dir, 'base.gguf'));
  });
});

describe('hubSettings', () => {
  it('reads the cache, token, endpoint and offline switch as huggingface_hub does', async () => {
    const home = await tempDir();
    writeFileSync(join(home, 'token'), `${TOKEN}\n`);
    const s = hubSettings({ HF_HOME: home, HF_ENDPOINT: 'http://127.0.0.1:1/', HF_HUB_OFFLINE: '1' });
    expect(s).toEqual({ cacheDir: join(home, 'hub'), endpoint: 'http://127.0.0.1:1', token: TOKEN, offline: true });
    const t = hubSettings({ HF_HOME: home, HF_HUB_CACHE: '/elsewhere', HF_TOKEN: 'hf_fromenv' });
    expect(t).toEqual({
      cacheDir: '/elsewhere',
      endpoint: 'https://huggingface.co',
      token: 'hf_fromenv',
      offline: false,
    });
    expect(hubSettings({ XDG_CACHE_HOME: home, HF_TOKEN_PATH: join(home, 'none') }).cacheDir).toBe(
      join(home, 'huggingface', 'hub'),
    );
    expect(hubSettings({ XDG_CACHE_HOME: home, HF_TOKEN_PATH: join(home, 'none') }).token).toBeUndefined();
  });
});

describe('stderrProgress', () => {
  const sink = (isTTY: boolean) => {
    const written: string[] = [];
    return { written, stream: { isTTY, write: (s: string) => written.push(s) > 0 } as unknown as NodeJS.WriteStream };
  };
  const events: HubProgress[] = [
    { kind: 'start', repo: 'org/m', file: 'model.safetensors', bytes: 0, total: 4e6 },
    { kind: 'bytes', repo: 'org/m', file: 'model.safetensors', bytes: 2e6, total: 4e6 },
    { kind: 'done', repo: 'org/m', file: 'model.safetensors', bytes: 4e6, total: 4e6, seconds: 2, resumedFrom: 0 },
    { kind: 'start', repo: 'org/m', file: 'tokenizer.json', bytes: 5e5, total: 1e6 },
    { kind: 'done', repo: 'org/m', file: 'tokenizer.json', bytes: 1e6, total: 1e6, seconds: 0.5, resumedFrom: 5e5 },
  ];

  it('off a terminal: one plain line per file, and one for a resume', () => {
    const { written, stream } = sink(false);
    const show = stderrProgress(stream);
    for (const e of events) show(e);
    expect(written.join('')).toBe(
      'org/m: model.safetensors 4.00 MB in 2.0 s\norg/m: resuming tokenizer.json at 0.50 MB\norg/m: tokenizer.json 1.00 MB in 0.5 s (resumed at 0.50 MB)\n',
    );
  });

  it('waiting for another process: one line, off a terminal and on one', () => {
    const wait: HubProgress = { kind: 'wait', repo: 'org/m', file: 'model.safetensors', pid: 42 };
    for (const tty of [false, true]) {
      const { written, stream } = sink(tty);
      stderrProgress(stream)(wait);
      stderrProgress(stream)({ ...wait, pid: null });
      expect(written).toEqual([
        `${tty ? '\r\x1b[2K' : ''}org/m: waiting for process 42, which is downloading model.safetensors\n`,
        `${tty ? '\r\x1b[2K' : ''}org/m: waiting for another process, which is downloading model.safetensors\n`,
      ]);
    }
  });

  it('on a terminal: a bar with file, bytes and rate, redrawn in place, then the file line', () => {
    const { written, stream } = sink(true);
    const show = stderrProgress(stream);
    for (const e of events.slice(0, 3)) show(e);
    expect(written).toHaveLength(2);
    expect(written[0]).toMatch(/^\r\x1b\[2Kmodel\.safetensors \[#{12}-{12}\] 2\.00 MB\/4\.00 MB \d+\.\d+ MB\/s$/);
    expect(written[1]).toBe('\r\x1b[2Korg/m: model.safetensors 4.00 MB in 2.0 s\n');
  });
});

describe('resolveModelPath', () => {
  it('downloads the model files into the HF cache layout, then uses the cache with no request', async () => {
    const cache = await tempDir();
    const events: HubProgress[] = [];
    const { value: dir, requests } = await requestsDuring(() =>
      resolveModelPath('test-org/tiny', { settings: settingsFor(cache), progress: (e) => events.push(e) }),
    );
    const folder = repoCacheFolder(cache, 'test-org/tiny');
    expect(folder).toBe(join(cache, 'models--test-org--tiny'));
    expect(dir).toBe(join(folder, 'snapshots', COMMIT));
    expect(readFileSync(join(folder, 'refs', 'main'), 'utf8')).toBe(COMMIT);
    expect(hubIdOfSnapshot(dir)).toBe('test-org/tiny');
    expect(defaultModelId(dir)).toBe('test-org/tiny'); // finllm serve's model id, not the commit
    expect(hubIdOfSnapshot(modelDir)).toBeNull();

    const expected = [...files.keys()].filter((f) => f !== 'pytorch_model.bin' && f !== 'README.md').sort();
    expect(readdirSync(dir).sort()).toEqual(expected);
    for (const f of expected) {
      const body = files.get(f)!;
      const blobName = f.endsWith('.safetensors') ? sha256(body) : gitBlobId(body);
      // Relative symlinks into blobs/, named by sha256 (LFS) or git blob id, as huggingface_hub makes them.
      expect(lstatSync(join(dir, f)).isSymbolicLink(), f).toBe(true);
      expect(readlinkSync(join(dir, f)), f).toBe(join('..', '..', 'blobs', blobName));
      expect(readFileSync(join(dir, f)).equals(body), f).toBe(true);
    }
    expect(readdirSync(join(folder, 'blobs')).some((b) => b.endsWith('.incomplete'))).toBe(false);
    expect(requests.some((r) => r.path.endsWith('pytorch_model.bin') || r.path.endsWith('README.md'))).toBe(false);
    expect(requests.some((r) => r.path === '/api/models/test-org/tiny/revision/main')).toBe(true);
    expect(
      events
        .filter((e) => e.kind === 'done')
        .map((e) => e.file)
        .sort(),
    ).toEqual(expected);
    expect(requests.every((r) => r.authorization === undefined)).toBe(true);

    const again = await requestsDuring(() =>
      resolveModelPath('test-org/tiny', { settings: settingsFor(cache), progress: quiet }),
    );
    expect(again.value).toBe(dir);
    expect(again.requests).toEqual([]);
    const pinned = await requestsDuring(() =>
      resolveModelPath(`test-org/tiny@${COMMIT}`, { settings: settingsFor(cache), progress: quiet }),
    );
    expect(pinned.value).toBe(dir);
    expect(pinned.requests).toEqual([]);
  });

  it('uses a snapshot that huggingface_hub / transformers put in the cache, with no request', async () => {
    const cache = await tempDir();
    const folder = repoCacheFolder(cache, 'other-org/cached');
    const commit = 'f'.repeat(40);
    // The layout huggingface_hub writes: blobs by etag, relative symlinks in snapshots/<commit>, refs/main, .no_exist.
    mkdirSync(join(folder, 'blobs'), { recursive: true });
    mkdirSync(join(folder, 'snapshots', commit), { recursive: true });
    mkdirSync(join(folder, 'refs'), { recursive: true });
    mkdirSync(join(folder, '.no_exist', commit), { recursive: true });
    writeFileSync(join(folder, 'refs', 'main'), commit);
    for (const f of ['config.json', 'tokenizer.json', 'tokenizer_config.json', 'model.safetensors']) {
      const body = files.get(f)!;
      const blob = f.endsWith('.safetensors') ? sha256(body) : gitBlobId(body);
      writeFileSync(join(folder, 'blobs', blob), body);
      symlinkSync(join('..', '..', 'blobs', blob), join(folder, 'snapshots', commit, f));
    }
    const { value: dir, requests } = await requestsDuring(() =>
      resolveModelPath('other-org/cached', { settings: settingsFor(cache), progress: quiet }),
    );
    expect(dir).toBe(join(folder, 'snapshots', commit));
    expect(requests).toEqual([]);
    expect(readFileSync(join(dir, 'model.safetensors')).equals(files.get('model.safetensors')!)).toBe(true);
  });

  it('resumes a cut-off download from the .incomplete file, within a run and in the next run, and verifies it', async () => {
    const cache = await tempDir();
    const weights = files.get('model.safetensors')!;
    const blob = join(repoCacheFolder(cache, 'test-org/tiny'), 'blobs', sha256(weights));
    const chunk = 4096;
    // Three cut responses: the run's three tries each add `chunk` bytes, then the run fails.
    hub.cut('model.safetensors', chunk, 3);
    const first = resolveModelPath('test-org/tiny', { settings: settingsFor(cache), progress: quiet });
    await expect(first).rejects.toThrow(RuntimeFailure);
    await expect(first).rejects.toThrow(
      /^cannot download Hub model 'test-org\/tiny' \(model\.safetensors\): .*a partial file resumes on the next run\)$/,
    );
    expect(statSync(`${blob}.incomplete`).size).toBe(3 * chunk);
    expect(existsSync(blob)).toBe(false);

    // One more cut: the next run resumes at 3 chunks, is cut at 4, and finishes at the second try.
    hub.cut('model.safetensors', chunk, 1);
    const events: HubProgress[] = [];
    const { value: dir, requests } = await requestsDuring(() =>
      resolveModelPath('test-org/tiny', { settings: settingsFor(cache), progress: (e) => events.push(e) }),
    );
    const ranges = requests
      .filter((r) => r.path.endsWith('/model.safetensors') && r.range !== 'bytes=0-0')
      .map((r) => r.range);
    expect(ranges).toEqual([`bytes=${3 * chunk}-${weights.length - 1}`, `bytes=${4 * chunk}-${weights.length - 1}`]);
    expect(readFileSync(join(dir, 'model.safetensors')).equals(weights)).toBe(true);
    expect(existsSync(`${blob}.incomplete`)).toBe(false);
    expect(events.find((e) => e.kind === 'done' && e.file === 'model.safetensors')).toMatchObject({
      resumedFrom: 3 * chunk,
      total: weights.length,
    });
  });

  it('refuses a finished download whose sha256 differs from the listed one, and keeps nothing of it', async () => {
    const cache = await tempDir();
    const weights = files.get('model.safetensors')!;
    const blob = join(repoCacheFolder(cache, 'test-org/tiny'), 'blobs', sha256(weights));
    mkdirSync(join(repoCacheFolder(cache, 'test-org/tiny'), 'blobs'), { recursive: true });
    // A partial file whose bytes are not the model's: the resumed whole has the right size, not the hash.
    writeFileSync(`${blob}.incomplete`, Buffer.alloc(100, 0xab));
    await expect(resolveModelPath('test-org/tiny', { settings: settingsFor(cache), progress: quiet })).rejects.toThrow(
      /^download of model\.safetensors from 'test-org\/tiny' has sha256 [0-9a-f]{64}, the Hub lists [0-9a-f]{64}: removed; run again$/,
    );
    expect(existsSync(`${blob}.incomplete`)).toBe(false);
    expect(existsSync(blob)).toBe(false);
  });

  it('sends HF_TOKEN as a Bearer token; a gated repo without it is a one-line error that says to set it', async () => {
    const cache = await tempDir();
    const denied = resolveModelPath('test-org/gated', { settings: settingsFor(cache), progress: quiet });
    await expect(denied).rejects.toThrow(InputError);
    await expect(denied).rejects.toThrow(
      /^Hub model 'test-org\/gated': access denied \(HTTP 401\); it is gated, private or misspelled \(no local folder 'test-org\/gated' exists either\): set HF_TOKEN to a token with access/,
    );
    const { value: dir, requests } = await requestsDuring(() =>
      resolveModelPath('test-org/gated', { settings: settingsFor(cache, { token: TOKEN }), progress: quiet }),
    );
    expect(readFileSync(join(dir, 'config.json')).equals(files.get('config.json')!)).toBe(true);
    expect(requests.length).toBeGreaterThan(0);
    expect(requests.filter((r) => r.authorization !== `Bearer ${TOKEN}`)).toEqual([]);
    await expect(
      resolveModelPath('test-org/gated', {
        settings: settingsFor(await tempDir(), { token: 'not-a-token' }),
        progress: quiet,
      }),
    ).rejects.toThrow(/HF_TOKEN .* expected it to start with 'hf_'/);
  });

  it('offline: uses a complete cache without a request, and says what to do when the model is not there', async () => {
    const cache = await tempDir();
    const missing = await requestsDuring(() =>
      resolveModelPath('test-org/tiny', { settings: settingsFor(cache, { offline: true }), progress: quiet }).catch(
        (e: unknown) => e,
      ),
    );
    expect(missing.value).toBeInstanceOf(InputError);
    expect((missing.value as Error).message).toMatch(
      /^Hub model 'test-org\/tiny' is not complete in the HF cache \(.*models--test-org--tiny\) and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE to download it, or give a local model folder \(no local folder 'test-org\/tiny' exists\)$/,
    );
    expect(missing.requests).toEqual([]);
    const dir = await resolveModelPath('test-org/tiny', { settings: settingsFor(cache), progress: quiet });
    const offline = await requestsDuring(() =>
      resolveModelPath('test-org/tiny', { settings: settingsFor(cache, { offline: true }), progress: quiet }),
    );
    expect(offline.value).toBe(dir);
    expect(offline.requests).toEqual([]);
  });

  it('an unknown repo or revision is a 404 message; a server that does not answer is a network message', async () => {
    const cache = await tempDir();
    await expect(
      resolveModelPath('test-org/nothing', { settings: settingsFor(cache), progress: quiet }),
    ).rejects.toThrow(
      new InputError(
        `Hub model 'test-org/nothing' not found at ${hub.url} (HTTP 404): check the id (no local folder 'test-org/nothing' exists either)`,
      ),
    );
    await expect(
      resolveModelPath('test-org/tiny@v9', { settings: settingsFor(cache), progress: quiet }),
    ).rejects.toThrow(
      new InputError(
        `Hub model 'test-org/tiny@v9' not found at ${hub.url} (HTTP 404): check the id and the revision (no local folder 'test-org/tiny@v9' exists either)`,
      ),
    );
    const closed = await new Promise<number>((ok) => {
      const s = createServer();
      s.listen(0, '127.0.0.1', () => {
        const port = (s.address() as { port: number }).port;
        s.close(() => ok(port));
      });
    });
    await expect(
      resolveModelPath('test-org/tiny', {
        settings: settingsFor(cache, { endpoint: `http://127.0.0.1:${closed}` }),
        progress: quiet,
      }),
    ).rejects.toThrow(
      /^cannot download Hub model 'test-org\/tiny' \(model info\): ECONNREFUSED talking to http:\/\/127\.0\.0\.1:\d+; check the network or HF_ENDPOINT, or set HF_HUB_OFFLINE=1 .*; no local folder 'test-org\/tiny' exists either$/,
    );
  });

  it('fetches the shards the index names and nothing else; a repo with only pickle weights is refused', async () => {
    const cache = await tempDir();
    const { value: dir, requests } = await requestsDuring(() =>
      resolveModelPath('test-org/sharded', { settings: settingsFor(cache), progress: quiet }),
    );
    expect(readdirSync(dir).sort()).toEqual([
      'config.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
      'model.safetensors.index.json',
      'tokenizer.json',
    ]);
    expect(
      requests
        .filter((r) => r.path.includes('/resolve/'))
        .map((r) => r.path.split('/').slice(5).join('/'))
        .filter((f) => /^(model\.safetensors$|consolidated\.|original\/)/.test(f)),
    ).toEqual([]);
    await expect(
      resolveModelPath('test-org/pickle', { settings: settingsFor(cache), progress: quiet }),
    ).rejects.toThrow(
      new InputError(
        `Hub model 'test-org/pickle' has no model.safetensors (or index); finllm never loads .bin/pickle weights`,
      ),
    );
    expect(existsSync(join(repoCacheFolder(cache, 'test-org/pickle'), 'blobs'))).toBe(false);
  });

  it('relinking a snapshot file replaces it in one step: a reader polling it meanwhile never finds it missing', async () => {
    const dir = await tempDir();
    const blob = join(dir, 'blobs', 'a'.repeat(64));
    const pointer = join(dir, 'snapshots', COMMIT, 'tokenizer.json');
    mkdirSync(join(dir, 'blobs'));
    mkdirSync(join(dir, 'snapshots', COMMIT), { recursive: true });
    writeFileSync(blob, '{}');
    await linkBlob(blob, pointer);
    let [checks, missing, relinking] = [0, 0, true];
    const poll = (async () => {
      while (relinking) {
        checks++;
        if (!existsSync(pointer)) missing++;
        await new Promise<void>((ok) => setImmediate(ok));
      }
    })();
    for (let i = 0; i < 300; i++) await linkBlob(blob, pointer);
    relinking = false;
    await poll;
    expect(checks).toBeGreaterThan(300);
    expect(missing).toBe(0);
    expect(readlinkSync(pointer)).toBe(join('..', '..', 'blobs', 'a'.repeat(64)));
    // No temp is left beside it.
    expect(readdirSync(join(dir, 'snapshots', COMMIT))).toEqual(['tokenizer.json']);
  });

  it('two processes fetching the same model at once: both succeed, each file is downloaded once, no partial or lock file is left', async () => {
    const cache = await tempDir();
    // A Hub of its own (its requests are this test's alone) whose weights do not come until one process
    // says it waits for the other's download (or 120 s pass, and the overlap check below fails): the two
    // overlap however far apart a loaded machine starts them. Then they come slowly.
    const lfs = (p: string) => p.endsWith('.safetensors');
    const slowHub = await startMockHub({ 'test-org/tiny': { files, lfs, commit: COMMIT } });
    const release = slowHub.hold('model.safetensors');
    const releaseAfter = setTimeout(release, 120_000);
    slowHub.slow('model.safetensors', 20, 100);
    const fetchInChild = () =>
      new Promise<{ status: number | null; stdout: string; stderr: string }>((ok, fail) => {
        const script = [
          `import { resolveModelPath } from ${JSON.stringify(join(ROOT, 'dist', 'src', 'io', 'hub.js'))};`,
          `const progress = (e) => e.kind === 'wait' && console.error('waiting for', e.pid, e.file);`,
          `console.log(await resolveModelPath('test-org/tiny', { progress }));`,
        ].join('\n');
        const env: NodeJS.ProcessEnv = { ...process.env, HF_HUB_CACHE: cache, HF_ENDPOINT: slowHub.url };
        delete env.HF_TOKEN;
        delete env.HF_HUB_OFFLINE;
        const child = spawn(process.execPath, ['--input-type=module', '-e', script], { env });
        let [stdout, stderr] = ['', ''];
        child.stdout.setEncoding('utf8').on('data', (d: string) => void (stdout += d));
        child.stderr.setEncoding('utf8').on('data', (d: string) => {
          stderr += d;
          if (/waiting for \d+ model\.safetensors/.test(stderr)) release();
        });
        child.on('error', fail);
        child.on('close', (status) => ok({ status, stdout, stderr }));
      });
    try {
      const [a, b] = await Promise.all([fetchInChild(), new Promise((r) => setTimeout(r, 4000)).then(fetchInChild)]);
      expect([a.status, b.status], a.stderr + b.stderr).toEqual([0, 0]);
      const snapshot = join(repoCacheFolder(cache, 'test-org/tiny'), 'snapshots', COMMIT);
      expect([a.stdout.trim(), b.stdout.trim()]).toEqual([snapshot, snapshot]);
      // They did overlap: one waited for the other's download.
      expect(a.stderr + b.stderr).toMatch(/waiting for \d+ model\.safetensors/);
      // Each file's body came from the Hub once (the client's 1-byte size probe aside).
      const bodies = slowHub.requests
        .filter((r) => r.method === 'GET' && r.path.includes('/resolve/') && r.range !== 'bytes=0-0')
        .map((r) => r.path.split('/').slice(5).join('/'));
      expect(bodies.sort()).toEqual([...new Set(bodies)].sort());
      expect(bodies).toContain('model.safetensors');
      for (const [name, bytes] of files) {
        if (name.endsWith('.bin') || name === 'README.md') continue;
        expect(readFileSync(join(snapshot, name)).equals(bytes), name).toBe(true);
      }
      const blobs = readdirSync(join(repoCacheFolder(cache, 'test-org/tiny'), 'blobs'));
      expect(blobs.filter((f) => !/^[0-9a-f]{40,64}$/.test(f))).toEqual([]);
    } finally {
      clearTimeout(releaseAfter);
      await slowHub.close();
    }
  });

  it('a model without an org (a single name): cached as models--name, found again with no request; an existing local folder of that name wins', async () => {
    const cache = await tempDir();
    const { value: dir, requests } = await requestsDuring(() =>
      resolveModelPath('tinyllama', { settings: settingsFor(cache), progress: quiet }),
    );
    expect(dir).toBe(join(cache, 'models--tinyllama', 'snapshots', COMMIT));
    expect(requests.some((r) => r.path === '/api/models/tinyllama/revision/main')).toBe(true);
    expect(readFileSync(join(dir, 'model.safetensors')).equals(files.get('model.safetensors')!)).toBe(true);
    expect(readFileSync(join(cache, 'models--tinyllama', 'refs', 'main'), 'utf8')).toBe(COMMIT);
    expect(hubIdOfSnapshot(dir)).toBe('tinyllama');
    const again = await requestsDuring(() =>
      resolveModelPath('tinyllama', { settings: settingsFor(cache), progress: quiet }),
    );
    expect([again.value, again.requests]).toEqual([dir, []]);
    // A folder of that name in the current directory is the model, with no request.
    const cwd = process.cwd();
    const work = await tempDir();
    const emptyCache = await tempDir();
    mkdirSync(join(work, 'tinyllama'));
    process.chdir(work);
    try {
      const local = await requestsDuring(() =>
        resolveModelPath('tinyllama', { settings: settingsFor(emptyCache), progress: quiet }),
      );
      expect([local.value, local.requests]).toEqual(['tinyllama', []]);
    } finally {
      process.chdir(cwd);
    }
    // A single name the Hub does not have: the 404 says how a name without a / was read.
    await expect(resolveModelPath('nothing', { settings: settingsFor(cache), progress: quiet })).rejects.toThrow(
      new InputError(
        `Hub model 'nothing' not found at ${hub.url} (HTTP 404): check the id (no local folder 'nothing' exists either; a model path without a / that does not exist is looked up on the Hub as a model without an org)`,
      ),
    );
  });

  it('leaves an existing local path and a non-id path as they are', async () => {
    const dir = await tempDir();
    expect(await resolveModelPath(dir)).toBe(dir);
    expect(await resolveModelPath(join(dir, 'missing'))).toBe(join(dir, 'missing'));
    expect(await resolveModelPath('model.gguf')).toBe('model.gguf');
  });
});

/** Runs `fn` with the HF environment pointing at the mock Hub and `cache` (restored after). */
async function withHubEnv<T>(cache: string, fn: () => Promise<T>): Promise<T> {
  const keys = ['HF_HUB_CACHE', 'HF_ENDPOINT', 'HF_TOKEN', 'HF_HUB_OFFLINE'] as const;
  const saved = keys.map((k) => process.env[k]);
  process.env.HF_HUB_CACHE = cache;
  process.env.HF_ENDPOINT = hub.url;
  delete process.env.HF_TOKEN;
  delete process.env.HF_HUB_OFFLINE;
  try {
    return await fn();
  } finally {
    keys.forEach((k, i) => {
      if (saved[i] === undefined) delete process.env[k];
      else process.env[k] = saved[i];
    });
  }
}

describe('a Hub id as --model and model.path', () => {
  it('generate loads the model from the cache and gives the same tokens as the source folder', async () => {
    const cache = await tempDir();
    await withHubEnv(cache, async () => {
      const opts = { prompt: 'Revenue rose', maxNewTokens: '4', greedy: true };
      const fromHub = await generateAction({ model: 'test-org/tiny', ...opts }, quiet);
      const fromFolder = await generateAction({ model: modelDir, ...opts }, quiet);
      expect(fromHub.length).toBe(4);
      expect(fromHub).toEqual(fromFolder);
      expect(existsSync(join(repoCacheFolder(cache, 'test-org/tiny'), 'snapshots', COMMIT, 'model.safetensors'))).toBe(
        true,
      );
    });
  });

  it('training from a Hub id in model.path writes an adapter whose base is the Hub id', async () => {
    const cache = await tempDir();
    const out = await tempDir();
    const data = sampleSlice(4, 2);
    const cfg = loadConfig({
      file: join(ROOT, 'configs/tiny-sample.yaml'),
      sets: [
        'model.path=test-org/tiny',
        `output.dir=${out}`,
        `data.train=${join(data, 'train.jsonl')}`,
        `data.val=${join(data, 'val.jsonl')}`,
        'training.method=lora',
        'training.max_steps=1',
        'training.batch_size=2',
        'training.eval_every=0',
        'training.save_every=0',
        'logging.console=false',
      ],
    });
    expect(cfg.model.path).toBe('test-org/tiny');
    await withHubEnv(cache, () => runTraining(cfg, { quiet: true }));
    const adapterConfig = JSON.parse(readFileSync(join(out, 'adapter', 'adapter_config.json'), 'utf8')) as {
      base_model_name_or_path: string;
    };
    expect(adapterConfig.base_model_name_or_path).toBe('test-org/tiny');
    expect(readFileSync(join(out, 'resolved-config.yaml'), 'utf8')).toContain(
      join(repoCacheFolder(cache, 'test-org/tiny'), 'snapshots', COMMIT),
    );
  });

  it('the CLI prints a missing repo as one line and exits 1, and a download as one plain line per file off a terminal', async () => {
    const cache = await tempDir();
    const env = { ...process.env, HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url, HF_TOKEN: '', HF_HUB_OFFLINE: '' };
    const missing = await runCli(['export', '--model', 'test-org/nothing', '--gguf', join(cache, 'x.gguf')], env);
    expect(missing.status).toBe(1);
    expect(missing.stderr.trim().split('\n')).toEqual([
      `finllm: Hub model 'test-org/nothing' not found at ${hub.url} (HTTP 404): check the id (no local folder 'test-org/nothing' exists either)`,
    ]);
    const gated = await runCli(['export', '--model', 'test-org/gated', '--gguf', join(cache, 'x.gguf')], env);
    expect(gated.status).toBe(1);
    expect(gated.stderr.trim().split('\n')).toHaveLength(1);
    expect(gated.stderr).toMatch(/HTTP 401.*set HF_TOKEN/);
    const out = join(cache, 'tiny.gguf');
    const done = await runCli(['export', '--model', 'test-org/tiny', '--gguf', out], env);
    expect(done.stderr).not.toContain('\r');
    const lines = done.stderr.split('\n').filter((l) => l.startsWith('test-org/tiny: '));
    expect(lines.map((l) => l.split(' ')[1]).sort()).toEqual(
      [...files.keys()].filter((f) => f !== 'pytorch_model.bin' && f !== 'README.md').sort(),
    );
    for (const l of lines) expect(l).toMatch(/^test-org\/tiny: \S+ \d+\.\d+ MB in \d+\.\d s$/);
    expect(done.status, done.stderr).toBe(0);
    expect(existsSync(out)).toBe(true);
  });
});
