// A bare prompt laid out as training laid out a template's records: what `generate --template`
// and `serve --template` (or a run's data.template) do with the text they are given. The prompt
// fills the template's main field (text; instruction for alpaca; prompt for completion; the
// user's message for chat), further fields come from the caller, and the result is exactly the
// training prompt up to where the response starts.
import { InputError, type InputLocation } from '../../errors.js';
import type { ColumnMapping, TemplateName } from '../config.js';
import type { PreprocessOptions } from './preprocess.js';
import { type ConcreteTemplate, PRIMARY_FIELD, renderPrompt, TemplateProblem } from './templates.js';
import type { ChatMessage, TextTokenizer } from './types.js';

/** The data settings a model was trained with (data.template, data.columns, data.preprocess). */
export interface PromptSettings {
  template: TemplateName;
  columns: ColumnMapping;
  preprocess: PreprocessOptions;
}

/** A rendered prompt: its text, and whether a chat template already wrote its special tokens (then no BOS is added). */
export interface LaidOutPrompt {
  prompt: string;
  rendered: boolean;
}

/** The record fields of `prompt` under `template`: the main field, then `extra` (field name → text). */
export function promptFields(
  template: ConcreteTemplate,
  columns: ColumnMapping,
  prompt: string,
  extra: Readonly<Record<string, string>> = {},
): Record<string, unknown> {
  const fields: Record<string, unknown> = {};
  if (template === 'chat') fields[columns.messages] = [{ role: 'user', content: prompt }];
  else fields[columns[PRIMARY_FIELD[template]]] = prompt;
  for (const [name, text] of Object.entries(extra)) fields[columns[name as keyof ColumnMapping]] = text;
  return fields;
}

/** Lays out one prompt (TemplateProblem when the template needs fields that were not given). */
export function layOutPrompt(
  s: PromptSettings & { template: ConcreteTemplate },
  tokenizer: TextTokenizer | null,
  prompt: string,
  extra: Readonly<Record<string, string>> = {},
): LaidOutPrompt {
  return renderPrompt(
    promptFields(s.template, s.columns, prompt, extra),
    { columns: s.columns, template: s.template, preprocess: s.preprocess, tokenizer },
    s.template,
  );
}

/**
 * What a server does with the training template: lay out a completion's prompt, or chat messages.
 * Both use the training layout of the records (no tokenizer chat template: where the tokenizer has
 * one, the server renders chat with it, within its limits).
 */
export interface PromptLayout {
  template: ConcreteTemplate;
  /** A completion request's prompt as the template's main field. */
  completion(prompt: string): LaidOutPrompt;
  /** Chat messages in the training layout of chat records (for template chat). */
  chat(messages: readonly ChatMessage[]): LaidOutPrompt;
}

/**
 * The layout of a server's prompts under `s.template`, or null for `auto` (prompts as given). A
 * template whose prompt needs more than one field (qa needs a question) cannot take a bare prompt:
 * an InputError at `where` (the flag or the config that chose the template).
 */
export function servingPromptLayout(
  s: PromptSettings,
  where: InputLocation = { flag: 'template' },
): PromptLayout | null {
  if (s.template === 'auto') return null;
  const t = { ...s, template: s.template };
  try {
    layOutPrompt(t, null, 'probe');
  } catch (err) {
    if (!(err instanceof TemplateProblem)) throw err;
    throw new InputError(
      `the ${s.template} template cannot lay out a bare prompt: a served prompt fills only its ${PRIMARY_FIELD[s.template]} field (${err.message})`,
      where,
    );
  }
  return {
    template: t.template,
    completion: (prompt) => layOutPrompt(t, null, prompt),
    chat: (messages) => {
      const fields = { [s.columns.messages]: [...messages] };
      return renderPrompt(
        fields,
        { columns: s.columns, template: 'chat', preprocess: s.preprocess, tokenizer: null },
        'chat',
      );
    },
  };
}
