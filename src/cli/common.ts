// Shared CLI plumbing: exit codes and turning typed errors into one clear line on stderr.
import type { Command } from 'commander';
import { describeSystemError, escapeControl, InputError, Interrupted, RuntimeFailure } from '../errors.js';

/** Exit codes: 0 done, 1 bad input (the message says what and where), 2 runtime failure, 130 / 143 stopped by SIGINT / SIGTERM. */
export const EXIT_OK = 0;
export const EXIT_BAD_INPUT = 1;
export const EXIT_RUNTIME = 2;

/** Commander accumulator for a repeatable option. */
export const collect = (value: string, previous: string[]): string[] => [...previous, value];

/** What the CLI prints and exits with for an error thrown by a verb. */
export interface ErrorReport {
  exitCode: number;
  /** The text after "finllm: " on stderr; a stack trace only for errors finllm does not know (bugs). */
  message: string;
}

/** An error finllm raised on purpose (its message is complete), as opposed to a bug. */
function isKnown(err: unknown): boolean {
  return (
    err instanceof InputError ||
    err instanceof Interrupted ||
    err instanceof RuntimeFailure ||
    describeSystemError(err) !== null
  );
}

export function reportError(err: unknown): ErrorReport {
  if (err instanceof InputError) return { exitCode: EXIT_BAD_INPUT, message: err.message };
  if (err instanceof Interrupted) return { exitCode: err.exitCode, message: escapeControl(err.message) };
  if (err instanceof RuntimeFailure) {
    // A wrapper (a pipeline stage) around a bug keeps the bug's trace.
    const cause = err.cause;
    const trace =
      cause !== undefined && !isKnown(cause) && cause instanceof Error && cause.stack
        ? `\n${escapeControl(cause.stack)}`
        : '';
    return { exitCode: EXIT_RUNTIME, message: escapeControl(err.message) + trace };
  }
  const sys = describeSystemError(err);
  if (sys) return { exitCode: sys.inputProblem ? EXIT_BAD_INPUT : EXIT_RUNTIME, message: sys.message };
  const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
  return {
    exitCode: EXIT_RUNTIME,
    message: `runtime failure (a bug: please report it with this trace): ${escapeControl(text)}`,
  };
}

export async function runCli(program: Command, argv: string[]): Promise<void> {
  program.exitOverride();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    const e = err as { code?: string; exitCode?: number; message?: string };
    if (typeof e.code === 'string' && e.code.startsWith('commander.')) {
      // help / version output is already printed; usage errors map to bad input.
      process.exit(e.code === 'commander.helpDisplayed' || e.code === 'commander.version' ? EXIT_OK : EXIT_BAD_INPUT);
    }
    const r = reportError(err);
    process.stderr.write(`finllm: ${r.message}\n`);
    process.exit(r.exitCode);
  }
}
