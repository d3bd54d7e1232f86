// The InputError a call raises, for tests that check its message: anything else thrown, or nothing
// thrown, fails the test.
import { expect } from 'vitest';
import { InputError } from '../../src/errors.js';

/** The InputError `fn` throws. */
export function inputErrorOf(fn: () => unknown): InputError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return e as InputError;
  }
  throw new Error('expected an InputError');
}

/** The InputError `p` rejects with. */
export async function inputErrorFrom(p: Promise<unknown>): Promise<InputError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(InputError);
    return e as InputError;
  }
  throw new Error('expected an InputError');
}
