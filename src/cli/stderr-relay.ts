// Where Dawn's limit notices cannot be filtered inside the process (stderr is a socket, as Node's
// child_process gives a child, or a file not opened for appending: see src/engine/native-stderr.ts),
// the CLI runs itself as a child whose stderr comes through a pipe to this process, which passes
// every byte on except those two lines. The child runs in its own process group, so a Ctrl-C at a
// terminal reaches it once, forwarded here; it dies with this process (kill -9 included, through
// the IPC channel closing); its exit status or signal becomes this process's.
import { spawn } from 'node:child_process';
import { canFilterNativeStderr, DAWN_LIMIT_NOTICE } from '../engine/native-stderr.js';

const RELAYED = 'FINLLM_STDERR_RELAYED';
const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;

/** True in the parent when stderr must be relayed; the child (and in-process filtering) says false. */
export function stderrNeedsRelay(): boolean {
  return process.env[RELAYED] !== '1' && !canFilterNativeStderr();
}

/** In the relayed child: die with the parent (its IPC channel closes when it dies, even by SIGKILL). */
export function followRelayParent(): void {
  if (process.env[RELAYED] !== '1' || !process.send) return;
  process.on('disconnect', () => process.kill(process.pid, 'SIGKILL'));
  process.channel?.unref();
}

/** Splits `buf` after each newline; the last piece (no newline yet) is returned as `rest`. */
function completeLines(buf: Buffer): { lines: Buffer[]; rest: Buffer } {
  const lines: Buffer[] = [];
  let start = 0;
  for (let i = buf.indexOf(0x0a); i >= 0; i = buf.indexOf(0x0a, start)) {
    lines.push(buf.subarray(start, i + 1));
    start = i + 1;
  }
  return { lines, rest: buf.subarray(start) };
}

const isNotice = (line: Buffer) => DAWN_LIMIT_NOTICE.test(line.toString('latin1').replace(/\r?\n$/, ''));

/** Runs this command again as a child with stderr relayed through the filter; exits as the child did. */
export async function relayStderr(): Promise<never> {
  const child = spawn(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: ['inherit', 'inherit', 'pipe', 'ipc'],
    env: { ...process.env, [RELAYED]: '1' },
    detached: true,
  });
  const forward = (signal: NodeJS.Signals) => void child.kill(signal);
  for (const s of FORWARDED) process.on(s, forward);
  let pending: Buffer = Buffer.alloc(0);
  child.stderr!.on('data', (chunk: Buffer) => {
    const { lines, rest } = completeLines(Buffer.concat([pending, chunk]));
    pending = rest;
    const kept = lines.filter((l) => !isNotice(l));
    if (kept.length) process.stderr.write(Buffer.concat(kept));
  });
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((res) =>
    child.on('close', (c, s) => res([c, s])),
  );
  if (pending.length && !isNotice(pending)) process.stderr.write(pending);
  for (const s of FORWARDED) process.off(s, forward);
  if (signal) process.kill(process.pid, signal);
  process.exit(code ?? 1);
}
