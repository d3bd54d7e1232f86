// Warnings for the user (not errors: the command goes on). One line each on stderr, prefixed like
// errors, control characters escaped (they may quote input), each kind printed once per process.
import { escapeControl } from './errors.js';

export type WarningSink = (message: string) => void;

const toStderr: WarningSink = (m) => void process.stderr.write(`finllm: warning: ${escapeControl(m)}\n`);
let sink: WarningSink = toStderr;
const seen = new Set<string>();

/** Prints `message` unless a warning with the same `key` (default: the message) was printed already. */
export function warn(message: string, key: string = message): void {
  if (seen.has(key)) return;
  seen.add(key);
  sink(message);
}

/** Redirects warnings (tests); null restores stderr. Also forgets which were printed. */
export function setWarningSink(s: WarningSink | null): void {
  sink = s ?? toStderr;
  seen.clear();
}
