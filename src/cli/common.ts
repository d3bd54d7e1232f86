// Shared CLI plumbing: exit codes and turning typed errors into one clear line on stderr.
import type { Command } from 'commander';

/** Exit codes: 0 done, 1 bad input (the message says what and where), 2 runtime failure. */
export const EXIT_OK = 0;
export const EXIT_BAD_INPUT = 1;
export const EXIT_RUNTIME = 2;

/** An error in what the user gave us (a file, a row, a key): exit code 1, message only. */
export class UserInputError extends Error {
  override name = 'UserInputError';
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
    if (err instanceof UserInputError || (err instanceof Error && (err as { userInput?: boolean }).userInput)) {
      process.stderr.write(`finllm: ${err.message}\n`);
      process.exit(EXIT_BAD_INPUT);
    }
    process.stderr.write(`finllm: runtime failure: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT_RUNTIME);
  }
}
