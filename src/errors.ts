// Typed errors shared by every module. The CLI maps InputError to exit code 1 and anything else
// to exit code 2 (see src/cli/common.ts).

/** Where in the user's input a problem is: any of file, row (1-based), key path. */
export interface InputLocation {
  file?: string;
  row?: number;
  key?: string;
}

/**
 * A problem with what the user gave us (a file, a row, a config key, a flag). The message must say
 * where it is and what was expected versus what was found, so the user can fix it without a debugger.
 */
export class InputError extends Error {
  override name = 'InputError';
  readonly location: InputLocation;
  constructor(message: string, location: InputLocation = {}) {
    const where = [
      location.file,
      location.row !== undefined ? `row ${location.row}` : undefined,
      location.key !== undefined ? `key '${location.key}'` : undefined,
    ].filter(Boolean).join(', ');
    super(where ? `${where}: ${message}` : message);
    this.location = location;
  }
}

/**
 * A runtime failure the user can act on (out of memory, ...): its message says what happened and
 * what to change. The CLI prints the message alone (no stack trace) and exits with code 2.
 */
export class RuntimeFailure extends Error {
  override name = 'RuntimeFailure';
}
