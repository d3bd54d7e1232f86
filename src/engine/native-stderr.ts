// Dawn prints two notices from native code straight to file descriptor 2 while it enumerates
// adapters (inside `requestAdapter()`, synchronously), on lavapipe and on NVIDIA alike:
//
//   Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.
//   Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.
//
// They describe a limit finllm never uses (dynamic buffer offsets) and there is no switch to turn
// them off (docs/platform.md). Node cannot dup2(), so `withNativeStderrFiltered` points descriptor 2 at
// an unlinked temp file for the duration of one synchronous call (close(2) then open() takes the
// lowest free descriptor), then reopens the original stderr through /proc/self/fd and replays what
// was captured minus those two lines. Only stderr kinds where reopening is exact are handled: a
// terminal, a pipe, or a file opened for appending. For anything else (a socket, as Node's
// child_process gives a child; a file opened without O_APPEND, whose offset other processes may
// share; a non-Linux system) the call runs unchanged: the CLI then relays its stderr through a
// parent process instead (src/cli/stderr-relay.ts).

import { randomBytes } from 'node:crypto';
import {
  closeSync,
  constants,
  fstatSync,
  openSync,
  readFileSync,
  readSync,
  type Stats,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The known-harmless native notices that are dropped (exactly these lines, nothing else). */
export const DAWN_LIMIT_NOTICE =
  /^Warning: maxDynamic(?:Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/;

/** `text` without the lines matching `drop`; every other byte is kept. */
export function dropLines(text: string, drop: RegExp): string {
  return text
    .split(/(?<=\n)/)
    .filter((line) => !drop.test(line.replace(/\r?\n$/, '')))
    .join('');
}

const O_APPEND = 0o2000;

/** How descriptor 2 can be reopened exactly, or null when it cannot. */
function reopenFlags(): number | null {
  if (process.platform !== 'linux') return null;
  let st: Stats;
  try {
    st = fstatSync(2);
  } catch {
    return null;
  }
  const base = constants.O_WRONLY | constants.O_NOCTTY;
  if (st.isCharacterDevice() || st.isFIFO()) return base;
  if (st.isFile()) {
    try {
      const flags = /^flags:\s*([0-7]+)/m.exec(readFileSync('/proc/self/fdinfo/2', 'utf8'))?.[1];
      if (flags !== undefined && (Number.parseInt(flags, 8) & O_APPEND) !== 0) return base | constants.O_APPEND;
    } catch {
      return null;
    }
  }
  return null;
}

/** Whether withNativeStderrFiltered can filter in this process (see the header). */
export function canFilterNativeStderr(): boolean {
  return reopenFlags() !== null;
}

/**
 * Runs `fn` (synchronous: native code writes while it runs) with descriptor 2 captured, then writes
 * what was captured, minus the lines matching `drop`, to the real stderr. Falls back to calling `fn`
 * directly where descriptor 2 cannot be swapped safely (see the header).
 */
export function withNativeStderrFiltered<T>(fn: () => T, drop: RegExp = DAWN_LIMIT_NOTICE): T {
  const flags = reopenFlags();
  if (flags === null) return fn();
  let saved: number;
  try {
    // O_NONBLOCK: a pipe whose reader is gone fails here (ENXIO) instead of blocking forever.
    saved = openSync('/proc/self/fd/2', flags | constants.O_NONBLOCK);
  } catch {
    return fn();
  }
  const capturePath = join(tmpdir(), `.finllm-stderr-${process.pid}-${randomBytes(4).toString('hex')}`);
  closeSync(2);
  let capture = -1;
  try {
    capture = openSync(capturePath, 'w+', 0o600);
  } finally {
    try {
      unlinkSync(capturePath);
    } catch {
      // already gone
    }
  }
  if (capture !== 2) {
    // Another thread took descriptor 2 in between: put stderr back as well as possible and give up filtering.
    closeSync(capture);
    restore(saved, flags);
    return fn();
  }
  let captured = '';
  try {
    return fn();
  } finally {
    try {
      const size = fstatSync(2).size;
      const buf = Buffer.alloc(size);
      if (size > 0) readSync(2, buf, 0, size, 0);
      captured = buf.toString('utf8');
    } catch {
      captured = '';
    }
    closeSync(2);
    restore(saved, flags);
    const rest = dropLines(captured, drop);
    if (rest) writeSync(2, rest);
  }
}

function restore(saved: number, flags: number): void {
  const fd = openSync(`/proc/self/fd/${saved}`, flags);
  closeSync(saved);
  if (fd !== 2) {
    // Descriptor 2 was free, so open() returns it; anything else means it was taken: keep ours open.
    process.emitWarning(`finllm: stderr could not be restored to descriptor 2 (got ${fd})`);
  }
}
