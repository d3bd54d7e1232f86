// Chat templates (Jinja, interpreted by @huggingface/jinja) rendered within limits.
//
// A chat template is code that comes with a model folder (or --chat-template). Rendered as is, a
// template that loops for ever stalls the process, and one that builds a large list kills it: V8
// aborts the whole process when an array outgrows its maximum size ("invalid size error"), which no
// try/catch and no worker thread contains. So rendering here runs the library's interpreter with:
//   - a size limit on every string and list a template expression makes (its output included);
//   - `range()` refusing more than that many items before it builds them;
//   - a time limit, checked every few evaluation steps (an expression, or a loop body's run; a for
//     loop prepares all its items before its first body runs, so a render may overrun by the time
//     that takes for maxItems items).
// The one render fails with ChatTemplateLimitError; nothing else is affected. Globals are the ones
// @huggingface/jinja's Template.render provides (its setupGlobals is not exported), range bounded.
import * as jinja from '@huggingface/jinja';

// The package's declarations use extension-less relative imports, which NodeNext resolution does
// not follow, so its classes arrive untyped: the parts used here, typed.
interface RuntimeValue {
  type: string;
  value: unknown;
}
interface JinjaEnvironment {
  set(name: string, value: unknown): RuntimeValue;
}
interface JinjaInterpreter {
  run(program: unknown): RuntimeValue;
  evaluate(node: unknown, environment: JinjaEnvironment): RuntimeValue;
  /** Runs a list of statements (a loop's body, once per iteration; a macro's; the program's). */
  evaluateBlock(statements: unknown[], environment: JinjaEnvironment): RuntimeValue;
}
const { Environment, Interpreter, Template } = jinja as unknown as {
  Environment: new (parent?: JinjaEnvironment) => JinjaEnvironment;
  Interpreter: new (env: JinjaEnvironment) => JinjaInterpreter;
  Template: new (source: string) => { parsed: unknown };
};

export interface ChatTemplateLimits {
  /** Longest string (in UTF-16 code units) any expression, and the output, may make. */
  maxChars: number;
  /** Most items a list (or range()) may hold. */
  maxItems: number;
  /** Wall-clock time for one render, in milliseconds. */
  timeoutMs: number;
}

/** Generous limits for rendering data and prompts (a real template renders in well under a millisecond). */
export const DEFAULT_CHAT_TEMPLATE_LIMITS: ChatTemplateLimits = {
  maxChars: 16 * 2 ** 20,
  maxItems: 2 ** 20,
  timeoutMs: 10_000,
};

/** Which limit stopped a render. */
export type ChatTemplateLimit = 'chars' | 'items' | 'time';

/** A render stopped by a limit; `limit` says which one. */
export class ChatTemplateLimitError extends Error {
  override name = 'ChatTemplateLimitError';
  constructor(
    readonly limit: ChatTemplateLimit,
    message: string,
  ) {
    super(message);
  }
}

/** Evaluation steps between two looks at the clock. */
const CLOCK_EVERY = 32;

class BoundedInterpreter extends Interpreter {
  private steps = 0;
  private readonly deadline: number;

  constructor(
    env: JinjaEnvironment,
    private readonly limits: ChatTemplateLimits,
  ) {
    super(env);
    this.deadline = performance.now() + limits.timeoutMs;
  }

  override evaluate(statement: unknown, environment: JinjaEnvironment): RuntimeValue {
    this.tick();
    const v = super.evaluate(statement, environment);
    this.check(v);
    return v;
  }

  // A loop whose body is empty evaluates no expression per iteration, but runs its body block.
  override evaluateBlock(statements: unknown[], environment: JinjaEnvironment): RuntimeValue {
    this.tick();
    const v = super.evaluateBlock(statements, environment);
    this.check(v);
    return v;
  }

  private tick(): void {
    if (++this.steps % CLOCK_EVERY === 0 && performance.now() > this.deadline) {
      throw new ChatTemplateLimitError('time', `rendering took longer than ${this.limits.timeoutMs} ms`);
    }
  }

  check(v: RuntimeValue): void {
    const x = v.value;
    if (typeof x === 'string' && x.length > this.limits.maxChars) {
      throw new ChatTemplateLimitError(
        'chars',
        `the template made a string of ${x.length} characters, more than ${this.limits.maxChars}`,
      );
    }
    if (Array.isArray(x) && x.length > this.limits.maxItems) {
      throw new ChatTemplateLimitError(
        'items',
        `the template made a list of ${x.length} items, more than ${this.limits.maxItems}`,
      );
    }
  }
}

/** Python's range(), refusing to build more than `maxItems` items. */
function boundedRange(maxItems: number) {
  return (start: number, stop?: number, step = 1): number[] => {
    if (stop === undefined) {
      stop = start;
      start = 0;
    }
    for (const [name, x] of [
      ['start', start],
      ['stop', stop],
      ['step', step],
    ] as const) {
      if (!Number.isInteger(x)) throw new Error(`range() ${name} must be an integer, got ${String(x)}`);
    }
    if (step === 0) throw new Error('range() step must not be zero');
    const count = Math.max(0, Math.ceil((stop - start) / step));
    if (count > maxItems) throw new ChatTemplateLimitError('items', `range() of ${count} items, more than ${maxItems}`);
    return Array.from({ length: count }, (_, i) => start + i * step);
  };
}

/** strftime_now(format) as @huggingface/jinja provides it (%Y %m %d %b %B %H %M %%, local time). */
function strftimeNow(format: string): string {
  const date = new Date();
  const pad2 = (n: number) => String(n).padStart(2, '0');
  return String(format).replace(/%[YmdbBHM%]/g, (token) => {
    switch (token) {
      case '%Y':
        return String(date.getFullYear());
      case '%m':
        return pad2(date.getMonth() + 1);
      case '%d':
        return pad2(date.getDate());
      case '%b':
        return new Intl.DateTimeFormat(undefined, { month: 'short' }).format(date);
      case '%B':
        return new Intl.DateTimeFormat(undefined, { month: 'long' }).format(date);
      case '%H':
        return pad2(date.getHours());
      case '%M':
        return pad2(date.getMinutes());
      default:
        return '%';
    }
  });
}

/** A parsed chat template (parsing throws on a syntax error). */
export class ChatTemplate {
  private readonly template: { parsed: unknown };

  constructor(source: string) {
    this.template = new Template(source);
  }

  /**
   * Renders with `variables`. Throws ChatTemplateLimitError past a limit, and the interpreter's
   * own errors (raise_exception, unknown filters, ...) as they are.
   */
  render(variables: Record<string, unknown>, limits: ChatTemplateLimits = DEFAULT_CHAT_TEMPLATE_LIMITS): string {
    const globals = new Environment();
    for (const [k, v] of Object.entries({ false: false, true: true, none: null, False: false, True: true, None: null }))
      globals.set(k, v);
    globals.set('raise_exception', (message: unknown) => {
      throw new Error(String(message));
    });
    globals.set('range', boundedRange(limits.maxItems));
    globals.set('strftime_now', strftimeNow);
    const env = new Environment(globals);
    for (const [k, v] of Object.entries(variables)) env.set(k, v);
    const interpreter = new BoundedInterpreter(env, limits);
    const out = interpreter.run(this.template.parsed);
    interpreter.check(out);
    return String(out.value);
  }
}
