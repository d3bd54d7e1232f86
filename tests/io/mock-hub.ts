// A loopback HTTP server (127.0.0.1, random port) that speaks the part of the Hugging Face Hub API
// the @huggingface/hub client uses to download a model: the revision endpoint
// (/api/models/{repo}/revision/{rev}), the tree listing (/api/models/{repo}/tree/{rev}), and
// /{repo}/resolve/{rev}/{file} with Range support and the ETag / X-Linked-Etag / X-Linked-Size /
// X-Repo-Commit headers (GET and HEAD). Errors are shaped as the Hub sends them: JSON body with
// `error`, X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, GatedRepo).
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface MockRepo {
  files: Map<string, Buffer>;
  /** Files stored as LFS (their etag is the sha256); the others are plain git blobs. */
  lfs: (path: string) => boolean;
  /** The commit of `main`. */
  commit: string;
  /** When set, every request needs `Authorization: Bearer <token>` (a gated repo). */
  token?: string;
}

export interface RecordedRequest {
  method: string;
  path: string;
  range: string | undefined;
  authorization: string | undefined;
}

export interface MockHub {
  url: string;
  requests: RecordedRequest[];
  /** The next `times` body responses of `file` send `bytes` body bytes, then the connection is cut. */
  cut(file: string, bytes: number, times: number): void;
  /** Body responses of `file` from now on come in `chunks` parts `ms` apart (a slow download). */
  slow(file: string, chunks: number, ms: number): void;
  /**
   * Body responses of `file` from now on wait (headers sent) until the returned function is called:
   * a download that lasts exactly until the test has seen what it waits for, however slow the machine.
   */
  hold(file: string): () => void;
  close(): Promise<void>;
}

export const gitBlobId = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

export async function startMockHub(repos: Record<string, MockRepo>): Promise<MockHub> {
  const requests: RecordedRequest[] = [];
  const cuts = new Map<string, { bytes: number; times: number }>();
  const slows = new Map<string, { chunks: number; ms: number }>();
  const holds = new Map<string, Promise<void>>();

  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'Content-Type': 'application/json', ...headers });
    res.end(JSON.stringify(body));
  };
  const fail = (res: ServerResponse, status: number, code: string, message: string) =>
    json(res, status, { error: message }, { 'X-Error-Code': code });

  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const u = new URL(req.url ?? '/', 'http://127.0.0.1');
    const path = decodeURIComponent(u.pathname);
    requests.push({
      method: req.method ?? 'GET',
      path,
      range: req.headers.range,
      authorization: req.headers.authorization,
    });
    // Repos are `org/name`, or a single `name` for the models the Hub keeps without an org (gpt2).
    const api = /^\/api\/models\/([^/]+(?:\/[^/]+)?)\/(revision|tree)\/([^/]+)$/.exec(path);
    const resolve = /^\/([^/]+(?:\/[^/]+)?)\/resolve\/([^/]+)\/(.+)$/.exec(path);
    const repoName = api?.[1] ?? resolve?.[1];
    const repo = repoName !== undefined ? repos[repoName] : undefined;
    if (repo === undefined) return fail(res, 404, 'RepoNotFound', 'Repository not found');
    if (repo.token !== undefined && req.headers.authorization !== `Bearer ${repo.token}`) {
      return fail(
        res,
        401,
        'GatedRepo',
        `Access to model ${repoName} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
      );
    }
    const rev = api?.[3] ?? resolve![2]!;
    if (rev !== 'main' && rev !== repo.commit) return fail(res, 404, 'RevisionNotFound', `Invalid rev id: ${rev}`);
    const entry = (p: string, b: Buffer) =>
      repo.lfs(p)
        ? {
            type: 'file',
            path: p,
            size: b.length,
            oid: gitBlobId(Buffer.from(`oid sha256:${sha256(b)}\nsize ${b.length}\n`)),
            lfs: { oid: sha256(b), size: b.length, pointerSize: 130 },
          }
        : { type: 'file', path: p, size: b.length, oid: gitBlobId(b) };
    if (api?.[2] === 'revision') {
      return json(res, 200, {
        _id: `id-${repoName}`,
        id: repoName,
        sha: repo.commit,
        private: false,
        gated: repo.token !== undefined ? 'manual' : false,
        downloads: 0,
        likes: 0,
        lastModified: '2026-01-01T00:00:00.000Z',
        siblings: [...repo.files.keys()].map((rfilename) => ({ rfilename })),
      });
    }
    if (api?.[2] === 'tree')
      return json(
        res,
        200,
        [...repo.files].map(([p, b]) => entry(p, b)),
      );

    const file = resolve![3]!;
    const body = repo.files.get(file);
    if (body === undefined) return fail(res, 404, 'EntryNotFound', `${file} does not exist on "${rev}"`);
    const e = entry(file, body);
    const headers: Record<string, string> = {
      'Content-Type': 'application/octet-stream',
      'Accept-Ranges': 'bytes',
      'X-Repo-Commit': repo.commit,
      ETag: `"${e.lfs?.oid ?? e.oid}"`,
      ...(e.lfs ? { 'X-Linked-Etag': `"${e.lfs.oid}"`, 'X-Linked-Size': String(body.length) } : {}),
    };
    let start = 0;
    let end = body.length - 1;
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      end = range[2] ? Math.min(Number(range[2]), body.length - 1) : body.length - 1;
      if (start > end) {
        res.writeHead(416, { 'Content-Range': `bytes */${body.length}` });
        return res.end();
      }
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${body.length}`;
    }
    const slice = body.subarray(start, end + 1);
    headers['Content-Length'] = String(slice.length);
    res.writeHead(status, headers);
    if (req.method === 'HEAD') return res.end();
    const cut = cuts.get(file);
    // The client's 1-byte size probe (bytes=0-0) is never cut; a body download is.
    if (cut && cut.times > 0 && slice.length > cut.bytes) {
      cut.times--;
      res.write(slice.subarray(0, cut.bytes), () => setTimeout(() => res.socket?.destroy(), 20));
      return;
    }
    const held = holds.get(file);
    if (held && slice.length > 1) return void held.then(() => sendBody(file, slice, res));
    sendBody(file, slice, res);
  };

  const sendBody = (file: string, slice: Buffer, res: ServerResponse) => {
    const slow = slows.get(file);
    if (slow && slice.length > 1) {
      const step = Math.ceil(slice.length / slow.chunks);
      const send = (at: number) => {
        if (at + step >= slice.length) return void res.end(slice.subarray(at));
        res.write(slice.subarray(at, at + step));
        setTimeout(() => send(at + step), slow.ms);
      };
      return send(0);
    }
    res.end(slice);
  };

  const server: Server = createServer(handle);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    cut: (file, bytes, times) => void cuts.set(file, { bytes, times }),
    slow: (file, chunks, ms) => void slows.set(file, { chunks, ms }),
    hold: (file) => {
      let release = () => {};
      holds.set(file, new Promise<void>((ok) => (release = ok)));
      return () => release();
    },
    close: () =>
      new Promise<void>((ok) => {
        server.closeAllConnections();
        server.close(() => ok());
      }),
  };
}
