// Typed errors shared by every module. The CLI (src/cli/common.ts) maps them to exit codes:
// InputError → 1, Interrupted → 128 + signal number, RuntimeFailure → 2 (one line, no stack trace),
// an operating-system error about a path → 1 or 2 by its code, anything else → 2 with the stack
// trace (that is a bug).

/** Where in the user's input a problem is: any of file, row (1-based), config key path, command-line flag. */
export interface InputLocation {
  file?: string;
  row?: number;
  key?: string;
  /** A command-line flag, named without or with its dashes ('port' or '--port'); printed as --port. */
  flag?: string;
}

// C0 controls except tab and newline, DEL, C1 controls, and the bidirectional overrides/isolates
// that reorder how a line is displayed.
const CONTROL_CHARS = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * Text from an input file made safe to print on a terminal: control characters (ESC, BEL, CR, C1,
 * bidi overrides ...) become visible escapes such as `\x1b`, so a data row cannot move the cursor,
 * retitle the window or hide text. Tabs and newlines stay.
 */
export function escapeControl(text: string): string {
  return text.replace(CONTROL_CHARS, (c) => {
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/**
 * A problem with what the user gave us (a file, a row, a config key, a flag). The message must say
 * where it is and what was expected versus what was found, so the user can fix it without a debugger.
 * Messages quote input, so control characters in them are escaped (see escapeControl).
 */
export class InputError extends Error {
  override name = 'InputError';
  readonly location: InputLocation;
  constructor(message: string, location: InputLocation = {}) {
    const where = [
      location.file,
      location.row !== undefined ? `row ${location.row}` : undefined,
      location.key !== undefined ? `key '${location.key}'` : undefined,
      // A message that already opens with the flag ("--data is required") is not prefixed with it again.
      location.flag !== undefined && !message.startsWith(`--${location.flag.replace(/^-+/, '')}`)
        ? `--${location.flag.replace(/^-+/, '')}`
        : undefined,
    ]
      .filter(Boolean)
      .join(', ');
    super(escapeControl(where ? `${where}: ${message}` : message));
    this.location = location;
  }
}

/**
 * A failure that is not bad input but is understood: the message says what happened and what to
 * try (no GPU adapter, a training step with a non-finite loss, a full disk). Exit code 2, printed
 * as the message alone.
 */
export class RuntimeFailure extends Error {
  override name = 'RuntimeFailure';
  constructor(message: string, options?: { cause?: unknown }) {
    super(escapeControl(message), options);
  }
}

/** The values of a computation were not finite (NaN or ±Inf): a runtime failure with a cause to name. */
export class NonFiniteError extends RuntimeFailure {
  override name = 'NonFiniteError';
}

/** A command stopped by SIGINT / SIGTERM after saving what it could. Exit code 128 + the signal number. */
export class Interrupted extends Error {
  override name = 'Interrupted';
  constructor(
    readonly signal: 'SIGINT' | 'SIGTERM',
    message: string,
  ) {
    super(message);
  }
  get exitCode(): number {
    return this.signal === 'SIGINT' ? 130 : 143;
  }
}

/** Node system-error codes about a path that the user can fix (wrong path, permissions, a file where a folder belongs). */
const PATH_PROBLEMS: Record<string, string> = {
  ENOENT: 'not found',
  EISDIR: 'is a folder, expected a file',
  ENOTDIR: 'a part of the path is not a folder',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EEXIST: 'already exists',
  ENOTEMPTY: 'folder is not empty',
  EROFS: 'read-only file system',
  ENAMETOOLONG: 'name too long',
  ELOOP: 'too many levels of symbolic links',
  EXDEV: 'cannot move across file systems',
  ENXIO: 'no such device or address',
};

/** System-error codes about the machine rather than the path (exit 2, but still one clear line). */
const MACHINE_PROBLEMS: Record<string, string> = {
  ENOSPC: 'no space left on device',
  EDQUOT: 'disk quota exceeded',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  EIO: 'input/output error',
  ENOMEM: 'out of memory',
  EFBIG: 'file too large',
};

export interface SystemErrorInfo {
  message: string;
  /** True when the user can fix it by giving another path (exit 1); false: the machine (exit 2). */
  inputProblem: boolean;
}

/** Describes a Node system error (fs) as "PATH: reason (syscall)"; null for any other error. */
export function describeSystemError(err: unknown): SystemErrorInfo | null {
  const e = err as NodeJS.ErrnoException | null;
  if (!e || typeof e !== 'object' || typeof e.code !== 'string' || typeof e.syscall !== 'string') return null;
  const reason = PATH_PROBLEMS[e.code] ?? MACHINE_PROBLEMS[e.code];
  if (reason === undefined) return null;
  const path = e.path ?? '';
  const dest = (e as { dest?: string }).dest;
  const where = dest ? `${path} -> ${dest}` : path;
  return {
    message: escapeControl(`${where ? `${where}: ` : ''}${reason} (${e.syscall})`),
    inputProblem: e.code in PATH_PROBLEMS,
  };
}

/**
 * The error to throw when reading the user's file `file` failed with `err`: an InputError saying
 * why ("not found", "is a folder, expected a file", "permission denied") for a path problem, a
 * RuntimeFailure for a machine problem, `err` itself for anything else.
 */
export function readFailure(err: unknown, file: string, what = 'file'): Error {
  const info = describeSystemError(err);
  if (!info) return err instanceof Error ? err : new Error(String(err));
  const code = (err as NodeJS.ErrnoException).code!;
  const reason = PATH_PROBLEMS[code] ?? MACHINE_PROBLEMS[code]!;
  const message = code === 'ENOENT' ? `${what} not found` : `cannot read ${what}: ${reason}`;
  return info.inputProblem ? new InputError(message, { file }) : new RuntimeFailure(`${file}: ${message}`);
}
