// Hugging Face Hub model ids (`org/name`, `org/name@revision`) as model paths: the files a Llama
// model needs are downloaded through the official @huggingface/hub client into the HF cache layout
// that transformers and huggingface_hub use (`models--org--name/{blobs,snapshots/<commit>,refs/<rev>}`),
// so either side finds what the other downloaded. Every loader calls resolveModelPath; nothing else
// talks to the Hub.
//
// Path or id: a model path that exists (a file or folder; model.path relative to its config's
// folder, --model to the current directory) is that path, whatever its shape. One that does not
// exist is a Hub id when shaped like one: `org/name`, or a single `name` for the models the Hub
// keeps without an org (`gpt2`, `distilgpt2`; cached as `models--gpt2`, as transformers does). A
// single name with a '.' is never an id, so a missing `model.gguf` or `config.yaml` is reported
// as a missing file rather than looked up on the Hub.
//
// Environment (as huggingface_hub reads it): HF_HUB_CACHE, HF_HOME, HF_TOKEN (else the token file
// HF_TOKEN_PATH or $HF_HOME/token), HF_ENDPOINT, HF_HUB_OFFLINE=1.
//
// A snapshot that is already complete in the cache is used without any request (a branch such as
// `main` is read from refs/; pin a commit with `org/name@<sha>` or delete refs/main to refresh).
//
// Processes that fetch the same file at once (two runs started together on one cache) take turns:
// a blob is downloaded under the lock `blobs/<etag>.lock` (src/io/file-lock.ts), so one process
// writes `<etag>.incomplete` and the others wait, then find the blob and link it.
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { copyFile, lstat, mkdir, open, rename, rm, symlink, truncate } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, dirname, join, relative, resolve, sep } from 'node:path';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import type { ListFileEntry } from '@huggingface/hub';
import { InputError, RuntimeFailure } from '../errors.js';
import { tempPathFor, writeFileAtomic } from './atomic.js';
import { acquireFileLock } from './file-lock.js';
import { INDEX_FILE, readShardIndex, SINGLE_FILE, shardFiles } from './safetensors.js';

export const DEFAULT_HUB_ENDPOINT = 'https://huggingface.co';
export const DEFAULT_REVISION = 'main';

/** A Hub model id as written in model.path or --model: `org/name`, `name` (no org), either with `@revision`. */
export interface HubModelId {
  repo: string;
  revision: string;
}

// Hub repo names: letters, digits, '-', '_', '.'; neither part starts with '.' or '-', no '..'.
const NAME_PART = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,95}$/;
const REVISION = /^[A-Za-z0-9_][A-Za-z0-9_./-]{0,199}$/;
const COMMIT = /^[0-9a-f]{40}$/;

/** The Hub id in `text` (`org/name[@revision]` or `name[@revision]`, see the header), or null when it is not shaped like one. */
export function parseHubId(text: string): HubModelId | null {
  const at = text.indexOf('@');
  const repo = at < 0 ? text : text.slice(0, at);
  const revision = at < 0 ? DEFAULT_REVISION : text.slice(at + 1);
  const parts = repo.split('/');
  if (parts.length > 2 || !parts.every((p) => NAME_PART.test(p) && !p.includes('..') && !p.includes('--'))) return null;
  if (parts.length === 1 && repo.includes('.')) return null;
  if (!REVISION.test(revision) || revision.includes('..')) return null;
  return { repo, revision };
}

/** Settings read from the environment (tests pass their own). */
export interface HubSettings {
  cacheDir: string;
  endpoint: string;
  token: string | undefined;
  offline: boolean;
}

const truthy = (v: string | undefined) =>
  v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());

export function hubSettings(env: NodeJS.ProcessEnv = process.env): HubSettings {
  const hfHome = env['HF_HOME'] ?? join(env['XDG_CACHE_HOME'] ?? join(homedir(), '.cache'), 'huggingface');
  const cacheDir = env['HF_HUB_CACHE'] ?? env['HUGGINGFACE_HUB_CACHE'] ?? join(hfHome, 'hub');
  let token = env['HF_TOKEN'] ?? env['HUGGING_FACE_HUB_TOKEN'];
  if (token === undefined || token.trim() === '') {
    const file = env['HF_TOKEN_PATH'] ?? join(hfHome, 'token');
    token = existsSync(file) ? readFileSync(file, 'utf8') : undefined;
  }
  token = token?.trim() || undefined;
  return {
    cacheDir,
    endpoint: (env['HF_ENDPOINT'] ?? DEFAULT_HUB_ENDPOINT).replace(/\/+$/, ''),
    token,
    offline: truthy(env['HF_HUB_OFFLINE']),
  };
}

/** The cache folder of a model repo: `<cache>/models--org--name` (`models--name` without an org). */
export function repoCacheFolder(cacheDir: string, repo: string): string {
  return join(cacheDir, `models--${repo.split('/').join('--')}`);
}

/**
 * The Hub id a cache snapshot folder belongs to (`.../models--org--name/snapshots/<commit>` →
 * `org/name`, `.../models--gpt2/snapshots/<commit>` → `gpt2`), else null.
 */
export function hubIdOfSnapshot(dir: string): string | null {
  const parts = resolve(dir).split(sep);
  const n = parts.length;
  if (n < 3 || parts[n - 2] !== 'snapshots') return null;
  const m = /^models--(.+)$/.exec(parts[n - 3]!);
  const id = m ? m[1]!.split('--').join('/') : null;
  return id !== null && parseHubId(id)?.repo === id ? id : null;
}

/** A download event, for a progress display. */
export type HubProgress =
  | { kind: 'start'; repo: string; file: string; bytes: number; total: number }
  | { kind: 'bytes'; repo: string; file: string; bytes: number; total: number }
  /** Another process is downloading the file (its pid when known): this one waits for it. */
  | { kind: 'wait'; repo: string; file: string; pid: number | null }
  | { kind: 'done'; repo: string; file: string; bytes: number; total: number; seconds: number; resumedFrom: number };

export interface ResolveOptions {
  settings?: HubSettings;
  /** Download events; default: stderrProgress(). */
  progress?: (e: HubProgress) => void;
  /** fetch for the client (tests count requests with it). */
  fetch?: typeof fetch;
}

/**
 * A local model folder for `pathOrId`: the path itself when it exists; the cache snapshot of a Hub
 * id (downloaded first when not complete in the cache); otherwise the path unchanged, for the
 * loader to report as missing.
 */
export async function resolveModelPath(pathOrId: string, opts: ResolveOptions = {}): Promise<string> {
  if (existsSync(pathOrId)) return pathOrId;
  const id = parseHubId(pathOrId);
  if (id === null) return pathOrId;
  return await hubModelFolder(id, opts);
}

/** Files of a Llama model repo that finllm reads; never *.bin or other pickles. */
const WANTED_FILES = new Set([
  'config.json',
  'generation_config.json',
  SINGLE_FILE,
  INDEX_FILE,
  'tokenizer.json',
  'tokenizer.model',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'chat_template.jinja',
  'chat_template.json',
]);

/** The snapshot folder when it holds a loadable model (config, tokenizer, every weight file), else null. */
async function completeSnapshot(dir: string): Promise<string | null> {
  const has = (f: string) => existsSync(join(dir, f));
  if (!has('config.json') || !(has('tokenizer.json') || has('tokenizer.model'))) return null;
  if (has(INDEX_FILE)) {
    try {
      return shardFiles(await readShardIndex(join(dir, INDEX_FILE))).every(has) ? dir : null;
    } catch {
      return null;
    }
  }
  return has(SINGLE_FILE) ? dir : null;
}

function cachedCommit(folder: string, revision: string): string | null {
  if (COMMIT.test(revision)) return revision;
  const ref = join(folder, 'refs', revision);
  if (!existsSync(ref)) return null;
  const commit = readFileSync(ref, 'utf8').trim();
  return COMMIT.test(commit) ? commit : null;
}

// The client is loaded on first download only: every other command starts without it.
type HubClient = typeof import('@huggingface/hub');

async function hubModelFolder(id: HubModelId, opts: ResolveOptions): Promise<string> {
  const settings = opts.settings ?? hubSettings();
  const folder = repoCacheFolder(settings.cacheDir, id.repo);
  const label = id.revision === DEFAULT_REVISION ? id.repo : `${id.repo}@${id.revision}`;
  const commit = cachedCommit(folder, id.revision);
  const cached = commit === null ? null : await completeSnapshot(join(folder, 'snapshots', commit));
  if (cached !== null) return cached;
  if (settings.offline) {
    throw new InputError(
      `Hub model '${label}' is not complete in the HF cache (${folder}) and HF_HUB_OFFLINE is set: unset HF_HUB_OFFLINE to download it, or give a local model folder (no local folder '${label}' exists)`,
    );
  }
  if (settings.token !== undefined && !settings.token.startsWith('hf_')) {
    throw new InputError(
      `HF_TOKEN (or the token file) does not look like a Hugging Face token: expected it to start with 'hf_'`,
    );
  }
  const hf: HubClient = await import('@huggingface/hub');
  const { listFiles, modelInfo } = hf;
  const client = {
    hubUrl: settings.endpoint,
    ...(settings.token ? { accessToken: settings.token } : {}),
    ...(opts.fetch ? { fetch: opts.fetch } : {}),
  };
  const call = <T>(what: string, fn: () => Promise<T>) => hubCall(hf, label, settings, what, fn);

  const info = await call('model info', () =>
    modelInfo({ ...client, name: id.repo, revision: id.revision, additionalFields: ['sha'] }),
  );
  const sha = (info as { sha?: unknown }).sha;
  if (typeof sha !== 'string' || !COMMIT.test(sha))
    throw new RuntimeFailure(`the Hub gave no commit for '${label}' (${settings.endpoint})`);
  const snapshot = join(folder, 'snapshots', sha);

  const entries = await call('file list', async () => {
    const all: ListFileEntry[] = [];
    for await (const e of listFiles({ ...client, repo: { type: 'model', name: id.repo }, revision: sha }))
      if (e.type === 'file') all.push(e);
    return all;
  });
  const byPath = new Map(entries.map((e) => [e.path, e]));
  const progress = opts.progress ?? stderrProgress();
  const fetchFile = (e: ListFileEntry) =>
    call(e.path, () => downloadToCache(hf, id.repo, sha, e, folder, client, progress));

  // Sharded weights: the index names the shards; only those are fetched (the loader reads the index first).
  const index = byPath.get(INDEX_FILE);
  const wanted = entries.filter((e) => WANTED_FILES.has(e.path) && !(index && e.path === SINGLE_FILE));
  if (index) {
    const local = await fetchFile(index);
    let shards: string[];
    try {
      shards = shardFiles(await readShardIndex(local));
    } catch {
      throw new InputError(`${INDEX_FILE} of Hub model '${label}' has no readable weight_map`, { file: local });
    }
    for (const s of shards) {
      const e = byPath.get(s);
      if (!e || s !== basename(s))
        throw new InputError(`Hub model '${label}': the index names shard '${s}', which the repo does not have`);
      if (!wanted.includes(e)) wanted.push(e);
    }
  } else if (!byPath.has(SINGLE_FILE)) {
    const pickles = entries.some((e) => /\.(bin|pt|pth|pkl|ckpt)$/.test(e.path));
    throw new InputError(
      `Hub model '${label}' has no model.safetensors (or index)${pickles ? '; finllm never loads .bin/pickle weights' : ''}`,
    );
  }
  if (!byPath.has('config.json'))
    throw new InputError(`Hub model '${label}' has no config.json: not a transformers model repo`);
  for (const e of wanted) await fetchFile(e);

  if (!COMMIT.test(id.revision)) {
    await mkdir(dirname(join(folder, 'refs', id.revision)), { recursive: true });
    // Atomic: another process resolving the same id at once reads the old ref or the new one, never an empty file.
    await writeFileAtomic(join(folder, 'refs', id.revision), sha);
  }
  const done = await completeSnapshot(snapshot);
  if (done === null) throw new InputError(`Hub model '${label}' lacks a tokenizer (tokenizer.json or tokenizer.model)`);
  return done;
}

/** The snapshot file of `entry` (`snapshots/<commit>/<path>` → `blobs/<etag>`), downloaded when missing. */
async function downloadToCache(
  hf: HubClient,
  repo: string,
  commit: string,
  entry: ListFileEntry,
  folder: string,
  client: { hubUrl: string; accessToken?: string; fetch?: typeof fetch },
  progress: (e: HubProgress) => void,
): Promise<string> {
  const pointer = join(folder, 'snapshots', commit, entry.path);
  if (existsSync(pointer)) return pointer;
  // Blob names as huggingface_hub writes them: the sha256 for LFS files, else the git blob id.
  const etag = entry.lfs?.oid ?? entry.oid;
  if (!etag || !/^[0-9a-f]{40,64}$/.test(etag))
    throw new RuntimeFailure(`the Hub listed ${entry.path} of '${repo}' without a usable id`);
  const blob = join(folder, 'blobs', etag);
  const total = entry.lfs?.size ?? entry.size;
  await mkdir(dirname(blob), { recursive: true });
  await mkdir(dirname(pointer), { recursive: true });

  const lock = await acquireFileLock(`${blob}.lock`, {
    onWait: (owner) => progress({ kind: 'wait', repo, file: entry.path, pid: owner?.pid ?? null }),
  });
  try {
    // Another process may have downloaded it while this one waited.
    if (!existsSync(blob)) await downloadBlob(hf, repo, commit, entry, blob, total, client, progress);
    if (!existsSync(pointer)) await linkBlob(blob, pointer);
  } finally {
    await lock.release();
  }
  return pointer;
}

/** Downloads `entry` into `blob` through `<blob>.incomplete` (resumed, verified); the caller holds the blob's lock. */
async function downloadBlob(
  hf: HubClient,
  repo: string,
  commit: string,
  entry: ListFileEntry,
  blob: string,
  total: number,
  client: { hubUrl: string; accessToken?: string; fetch?: typeof fetch },
  progress: (e: HubProgress) => void,
): Promise<void> {
  const incomplete = `${blob}.incomplete`;
  const started = Date.now();
  let resumedFrom = 0;
  for (let attempt = 1; ; attempt++) {
    let have = existsSync(incomplete) ? statSync(incomplete).size : 0;
    if (have > total) {
      await truncate(incomplete, 0);
      have = 0;
    }
    if (attempt === 1) resumedFrom = have;
    try {
      await fetchInto(hf, repo, commit, entry.path, incomplete, have, total, client, progress);
      break;
    } catch (err) {
      // A cut connection: try again from what arrived (three tries), then leave the partial file for the next run.
      if (attempt >= 3 || !isNetworkError(hf, err)) throw err;
    }
  }
  const size = statSync(incomplete).size;
  if (size !== total) {
    await rm(incomplete, { force: true });
    throw new RuntimeFailure(
      `download of ${entry.path} from '${repo}' has ${size} bytes, the Hub lists ${total}: removed; run again`,
    );
  }
  if (entry.lfs) {
    const got = await sha256File(incomplete);
    if (got !== entry.lfs.oid) {
      await rm(incomplete, { force: true });
      throw new RuntimeFailure(
        `download of ${entry.path} from '${repo}' has sha256 ${got}, the Hub lists ${entry.lfs.oid}: removed; run again`,
      );
    }
  }
  await rename(incomplete, blob);
  progress({
    kind: 'done',
    repo,
    file: entry.path,
    bytes: total,
    total,
    seconds: (Date.now() - started) / 1000,
    resumedFrom,
  });
}

async function fetchInto(
  hf: HubClient,
  repo: string,
  commit: string,
  path: string,
  incomplete: string,
  have: number,
  total: number,
  client: { hubUrl: string; accessToken?: string; fetch?: typeof fetch },
  progress: (e: HubProgress) => void,
): Promise<void> {
  progress({ kind: 'start', repo, file: path, bytes: have, total });
  if (have === total) return;
  const params = { ...client, repo: { type: 'model' as const, name: repo }, path, revision: commit };
  const info = await hf.fileDownloadInfo(params);
  if (info === null) throw new hf.HubApiError(`${client.hubUrl}/${repo}/resolve/${commit}/${path}`, 404);
  if (info.size !== total)
    throw new RuntimeFailure(`the Hub serves ${path} of '${repo}' with ${info.size} bytes but lists ${total}`);
  const file = await hf.downloadFile({ ...params, downloadInfo: info });
  if (file === null) throw new hf.HubApiError(info.url, 404);
  // The client's blob slice asks for the missing bytes only (an HTTP Range request).
  const source = have > 0 ? file.slice(have) : file;
  let bytes = have;
  let last = 0;
  // Each chunk is written before the next is read, and the file is closed before this returns or
  // throws: a retry after a cut connection sizes the partial file only once every byte that
  // arrived is in it (a write still in flight would land after the retry's range was chosen).
  const out = await open(incomplete, 'a');
  try {
    for await (const chunk of Readable.fromWeb(source.stream() as NodeReadableStream)) {
      const data = chunk as Uint8Array;
      for (let off = 0; off < data.length; ) off += (await out.write(data, off, data.length - off)).bytesWritten;
      bytes += data.length;
      const now = Date.now();
      if (now - last > 100) {
        last = now;
        progress({ kind: 'bytes', repo, file: path, bytes, total });
      }
    }
  } finally {
    await out.close();
  }
  progress({ kind: 'bytes', repo, file: path, bytes, total });
}

/** Points the snapshot file `pointer` at `blob` (a relative symlink, or a copy where links fail). */
export async function linkBlob(blob: string, pointer: string): Promise<void> {
  // Made under a temp name and renamed over the pointer: another process resolving the same model
  // may be reading the snapshot, and must never find a pointer it has seen missing.
  const temp = tempPathFor(pointer);
  try {
    try {
      // Relative, as huggingface_hub makes them: the cache folder can move.
      await symlink(relative(dirname(pointer), blob), temp);
    } catch {
      await copyFile(blob, temp);
    }
    await rename(temp, pointer);
  } finally {
    await rm(temp, { force: true });
  }
  await lstat(pointer);
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function errorCode(err: unknown): string | undefined {
  for (let e: unknown = err, i = 0; e && i < 5; e = (e as { cause?: unknown }).cause, i++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

function isNetworkError(hf: HubClient, err: unknown): boolean {
  if (err instanceof hf.HubApiError || err instanceof InputError || err instanceof RuntimeFailure) return false;
  const text = String((err as Error)?.message ?? err);
  return errorCode(err) !== undefined || /fetch failed|terminated|socket|network|aborted|premature close/i.test(text);
}

/** Runs one client call, turning its failures into one-line errors that say what to do. */
async function hubCall<T>(
  hf: HubClient,
  label: string,
  settings: HubSettings,
  what: string,
  fn: () => Promise<T>,
): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof InputError || err instanceof RuntimeFailure) throw err;
    if (err instanceof hf.HubApiError) {
      const status = err.statusCode;
      // The id may be a mistyped local folder: say that none of that name exists either (the Hub
      // answers 401, not 404, for a repo that does not exist when no token is sent).
      const single = !label.split('@')[0]!.includes('/');
      const noFolder =
        what === 'model info'
          ? ` (no local folder '${label}' exists either${single ? '; a model path without a / that does not exist is looked up on the Hub as a model without an org' : ''})`
          : '';
      if (status === 401 || status === 403) {
        throw new InputError(
          settings.token === undefined
            ? `Hub model '${label}': access denied (HTTP ${status}); it is gated, private or misspelled${noFolder}: set HF_TOKEN to a token with access (and accept the model's terms on its Hub page)`
            : `Hub model '${label}': access denied (HTTP ${status}) with the token from HF_TOKEN${noFolder}; accept the model's terms on its Hub page or use a token with access`,
        );
      }
      if (status === 404) {
        throw new InputError(
          what === 'model info'
            ? `Hub model '${label}' not found at ${settings.endpoint} (HTTP 404): check the id${label.includes('@') ? ' and the revision' : ''}${noFolder}`
            : `Hub model '${label}': ${what} not found at ${settings.endpoint} (HTTP 404)`,
        );
      }
      throw new RuntimeFailure(
        `Hub model '${label}': ${what} failed with HTTP ${status} from ${settings.endpoint}; try again later`,
      );
    }
    if (isNetworkError(hf, err)) {
      const code = errorCode(err);
      throw new RuntimeFailure(
        `cannot download Hub model '${label}' (${what}): ${code ?? 'network error'} talking to ${settings.endpoint}; check the network or HF_ENDPOINT, ` +
          `or set HF_HUB_OFFLINE=1 to use the HF cache (a partial file resumes on the next run)${what === 'model info' ? `; no local folder '${label}' exists either` : ''}`,
      );
    }
    throw err;
  }
}

const mb = (n: number) => `${(n / 1e6).toFixed(n < 1e7 ? 2 : 1)} MB`;

/**
 * The default progress display: on a terminal, one bar line per file redrawn in place (file, bytes,
 * rate); otherwise one plain line per finished file.
 */
export function stderrProgress(stream: NodeJS.WriteStream = process.stderr): (e: HubProgress) => void {
  const tty = stream.isTTY === true;
  let startAt = 0;
  let startBytes = 0;
  return (e) => {
    if (e.kind === 'start') {
      startAt = Date.now();
      startBytes = e.bytes;
      if (e.bytes > 0) stream.write(`${e.repo}: resuming ${e.file} at ${mb(e.bytes)}${tty ? '' : '\n'}`);
      return;
    }
    if (e.kind === 'wait') {
      const who = e.pid === null ? 'another process' : `process ${e.pid}`;
      stream.write(`${tty ? '\r\x1b[2K' : ''}${e.repo}: waiting for ${who}, which is downloading ${e.file}\n`);
      return;
    }
    if (e.kind === 'done') {
      const line = `${e.repo}: ${e.file} ${mb(e.total)} in ${e.seconds.toFixed(1)} s${e.resumedFrom > 0 ? ` (resumed at ${mb(e.resumedFrom)})` : ''}`;
      stream.write(tty ? `\r\x1b[2K${line}\n` : `${line}\n`);
      return;
    }
    if (!tty) return;
    const secs = Math.max((Date.now() - startAt) / 1000, 1e-3);
    const frac = e.total > 0 ? e.bytes / e.total : 1;
    const width = 24;
    const filled = Math.round(frac * width);
    const bar = '#'.repeat(filled) + '-'.repeat(width - filled);
    stream.write(`\r\x1b[2K${e.file} [${bar}] ${mb(e.bytes)}/${mb(e.total)} ${mb((e.bytes - startBytes) / secs)}/s`);
  };
}
