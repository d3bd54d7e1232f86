// Shared CLI plumbing: exit codes and turning typed errors into one clear line on stderr.
import type { Command } from 'commander';
import { InputError, RuntimeFailure } from '../errors.js';

/** Exit codes: 0 done, 1 bad input (the message says what and where), 2 runtime failure. */
export const EXIT_OK = 0;
export const EXIT_BAD_INPUT = 1;
export const EXIT_RUNTIME = 2;

/** Commander accumulator for a repeatable option. */
export const collect = (value: string, previous: string[]): string[] => [...previous, value];


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
    if (err instanceof InputError) {
      process.stderr.write(`finllm: ${err.message}\n`);
      process.exit(EXIT_BAD_INPUT);
    }
    if (err instanceof RuntimeFailure) {
      process.stderr.write(`finllm: ${err.message}\n`);
      process.exit(EXIT_RUNTIME);
    }
    process.stderr.write(`finllm: runtime failure: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT_RUNTIME);
  }
}
