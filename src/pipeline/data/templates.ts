// Instruction templates: each turns a row into {prompt, response}. The model is trained on the
// response (with response_only_loss) given the prompt.
//
// Instruction-style templates share one layout (Alpaca-like, readable by base models):
//
//   ### Instruction:
//   <what to do>
//
//   ### Input:
//   <passage>
//
//   ### Response:
//   <response>                       ← the trained part, followed by EOS
//
// `alpaca` rows ({instruction, input?, output}) use that layout with their own instruction.
//
// `chat` rows ({"messages":[{role, content}, ...]}, OpenAI style, or ShareGPT's
// {"conversations":[{from, value}, ...]} with from = system | human | gpt; last message from the
// assistant) are rendered
// with the tokenizer's chat template when it has one; the prompt is everything up to the final
// assistant message (as rendered with add_generation_prompt), the response is the rest. Without a
// chat template the documented fallback is
//
//   ### System:\n<content>\n\n### User:\n<content>\n\n### Assistant:\n<content>\n\n ... ### Assistant:\n
//
// with the last assistant message as the response. Only the last assistant turn is trained.

import { describeValue } from '../../io/json.js';
import type { ColumnMapping, TemplateName } from '../config.js';
import { type PreprocessOptions, preprocessText } from './preprocess.js';
import type { ChatMessage, ProblemKind, TextExample, TextTokenizer } from './types.js';

export type ConcreteTemplate = Exclude<TemplateName, 'auto'>;

export const TEMPLATE_DESCRIPTIONS: Record<ConcreteTemplate, string> = {
  financial_analysis:
    'text (+ analysis or sentiment): analyse a passage; response = analysis, or "Sentiment: <label>."',
  transcript_completion:
    'text (+ continuation): continue a transcript; response = continuation, or the last speaker turn of text',
  summarization: 'text + summary: summarize a passage; response = summary',
  qa: 'text + question + answer: answer a question about a passage; response = answer',
  completion: 'prompt + response, or text alone (plain language modelling on the whole text)',
  chat: 'messages: [{role, content}, ...] (OpenAI) or conversations: [{from, value}, ...] (ShareGPT), ending with the assistant',
  alpaca: 'instruction (+ input) + output (Alpaca records)',
};

/** The fields each template reads, required first (`a|b`: either), for messages about a record. */
export const TEMPLATE_FIELDS: Record<ConcreteTemplate, { required: string[]; optional: string[] }> = {
  financial_analysis: { required: ['text', 'analysis|sentiment'], optional: [] },
  transcript_completion: { required: ['text'], optional: ['continuation'] },
  summarization: { required: ['text', 'summary'], optional: [] },
  qa: { required: ['text', 'question', 'answer'], optional: [] },
  completion: { required: ['prompt', 'response'], optional: [] },
  chat: { required: ['messages|conversations'], optional: [] },
  alpaca: { required: ['instruction', 'output'], optional: ['input'] },
};

const TASK_ALIASES: Record<string, ConcreteTemplate> = {
  analysis: 'financial_analysis',
  financial_analysis: 'financial_analysis',
  sentiment: 'financial_analysis',
  understanding: 'financial_analysis',
  transcript: 'transcript_completion',
  transcript_completion: 'transcript_completion',
  continuation: 'transcript_completion',
  summary: 'summarization',
  summarization: 'summarization',
  summarize: 'summarization',
  qa: 'qa',
  question_answering: 'qa',
  qa_generation: 'qa',
  completion: 'completion',
  text: 'completion',
  pretraining: 'completion',
  chat: 'chat',
  messages: 'chat',
  conversations: 'chat',
  alpaca: 'alpaca',
  instruction: 'alpaca',
};

export class TemplateProblem extends Error {
  /** The template the row was being read with (set by applyTemplate once chosen). */
  template: ConcreteTemplate | undefined;
  constructor(
    readonly kind: ProblemKind,
    message: string,
  ) {
    super(message);
  }
}

const CONTROL = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]/u;

/** Reads canonical fields from a row through the column mapping, checking type and encoding. */
export class RowFields {
  constructor(
    private readonly fields: Record<string, unknown>,
    private readonly columns: ColumnMapping,
    private readonly pre: PreprocessOptions,
    private readonly isTranscript: () => boolean,
  ) {}

  col(name: keyof ColumnMapping): string {
    return this.columns[name];
  }

  has(name: keyof ColumnMapping): boolean {
    const v = this.fields[this.columns[name]];
    return v !== undefined && v !== null && !(typeof v === 'string' && v.trim() === '');
  }

  raw(name: keyof ColumnMapping): unknown {
    return this.fields[this.columns[name]];
  }

  /** A required text field, checked and preprocessed. */
  text(
    name: keyof ColumnMapping,
    template: string,
    speakers = false,
    keepTrailingSpace = false,
    allowScalar = false,
  ): string {
    const col = this.columns[name];
    const v = this.fields[col];
    if (v === undefined || v === null) {
      throw new TemplateProblem(
        'missing_field',
        `missing field '${col}'${col !== name ? ` (mapped from '${name}')` : ''} required by template ${template}`,
      );
    }
    const out = checkText(
      v,
      `field '${col}'`,
      template,
      (s) => preprocessText(s, this.pre, speakers && this.isTranscript()),
      allowScalar,
    );
    // A raw prompt's trailing whitespace separates it from the response: keep it.
    return keepTrailingSpace && typeof v === 'string' ? out + (/\s*$/.exec(v)?.[0] ?? '') : out;
  }

  optionalText(name: keyof ColumnMapping, template: string): string | null {
    return this.has(name) ? this.text(name, template) : null;
  }
}

export function checkText(
  v: unknown,
  what: string,
  template: string,
  pre: (s: string) => string,
  allowScalar = false,
): string {
  if (typeof v !== 'string') {
    const type = Array.isArray(v) ? 'array' : typeof v;
    // Numbers and booleans are accepted only as short labels (e.g. sentiment: 1).
    if (allowScalar && (typeof v === 'number' || typeof v === 'boolean')) return String(v);
    throw new TemplateProblem(
      'non_text',
      `${what} must be text for template ${template}, got ${type} ${describeValue(v, 60)}`,
    );
  }
  if (v.includes('\uFFFD')) {
    const at = v.indexOf('\uFFFD');
    throw new TemplateProblem(
      'replacement_char',
      `${what} contains U+FFFD replacement characters (text was decoded with the wrong encoding?) near ${JSON.stringify(v.slice(Math.max(0, at - 20), at + 20))}`,
    );
  }
  const ctl = CONTROL.exec(v);
  if (ctl) {
    throw new TemplateProblem(
      'control_char',
      `${what} contains control character U+${ctl[0].charCodeAt(0).toString(16).toUpperCase().padStart(4, '0')} at offset ${ctl.index}`,
    );
  }
  const out = pre(v);
  if (out.trim() === '') throw new TemplateProblem('empty_field', `${what} is empty (template ${template})`);
  return out;
}

function instruction(instr: string, input: string | null): string {
  return `### Instruction:\n${instr}\n\n${input !== null ? `### Input:\n${input}\n\n` : ''}### Response:\n`;
}

/** `table[key]` for the table's own keys only: a data value such as "__proto__" or "constructor" names nothing. */
function own<T>(table: Record<string, T>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

const SOURCE_NOUN: Record<string, string> = {
  earnings_call: 'earnings call excerpt',
  filing: 'filing excerpt',
  news: 'news article',
};

/** Choose the template for a row under `auto`. */
export function chooseTemplate(f: RowFields, configured: TemplateName): ConcreteTemplate {
  if (configured !== 'auto') return configured;
  const task = f.raw('task');
  if (typeof task === 'string' && task.trim() !== '') {
    const t = own(TASK_ALIASES, task.trim().toLowerCase());
    if (!t) {
      throw new TemplateProblem(
        'non_text',
        `field '${f.col('task')}' has unknown task ${JSON.stringify(task)}; expected one of ${Object.keys(TASK_ALIASES).join(', ')}`,
      );
    }
    return t;
  }
  if (f.has('messages') || f.has('conversations')) return 'chat';
  if (f.has('instruction') && f.has('output')) return 'alpaca';
  if (f.has('question') && f.has('answer')) return 'qa';
  if (f.has('summary')) return 'summarization';
  if (f.has('continuation')) return 'transcript_completion';
  if (f.has('analysis') || f.has('sentiment')) return 'financial_analysis';
  return 'completion';
}

/** ShareGPT speaker names → chat roles. */
const SHAREGPT_ROLES: Record<string, string> = {
  system: 'system',
  human: 'user',
  user: 'user',
  gpt: 'assistant',
  assistant: 'assistant',
  bot: 'assistant',
  chatgpt: 'assistant',
  model: 'assistant',
};

/**
 * The messages of a chat row: OpenAI `{role, content}` items, or ShareGPT `{from, value}` items
 * (from: system, human, gpt; user/assistant also accepted). CSV cells may hold the JSON array as text.
 */
export function parseMessages(v: unknown, col: string): ChatMessage[] {
  if (!Array.isArray(v)) {
    if (typeof v === 'string') {
      try {
        return parseMessages(JSON.parse(v) as unknown, col);
      } catch (e) {
        if (e instanceof TemplateProblem) throw e;
      }
    }
    throw new TemplateProblem(
      'non_text',
      `field '${col}' must be a list of {role, content} (or ShareGPT {from, value}) messages, got ${describeValue(v, 60)}`,
    );
  }
  return v.map((m, i) => {
    if (typeof m === 'object' && m !== null && typeof (m as { from?: unknown }).from === 'string' && !('role' in m)) {
      const msg = m as { from: string; value: unknown };
      const role = own(SHAREGPT_ROLES, msg.from.trim().toLowerCase());
      if (!role) {
        throw new TemplateProblem(
          'non_text',
          `field '${col}[${i}].from' is ${JSON.stringify(msg.from)}; expected one of system, human, gpt (ShareGPT) or user, assistant`,
        );
      }
      if (msg.value === undefined || msg.value === null)
        throw new TemplateProblem('missing_field', `field '${col}[${i}].value' is missing`);
      return { role, content: msg.value as string };
    }
    if (typeof m !== 'object' || m === null || typeof (m as ChatMessage).role !== 'string') {
      throw new TemplateProblem(
        'non_text',
        `field '${col}[${i}]' must be {role, content} (or ShareGPT {from, value}) with a text role, got ${describeValue(m, 60)}`,
      );
    }
    const msg = m as { role: string; content: unknown };
    if (msg.content === undefined || msg.content === null)
      throw new TemplateProblem('missing_field', `field '${col}[${i}].content' is missing`);
    return { role: msg.role, content: msg.content as string };
  });
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** The fallback chat format (see the header comment). */
export function renderChatFallback(messages: ChatMessage[], addGenerationPrompt: boolean): string {
  const body = messages.map((m) => `### ${capitalize(m.role)}:\n${m.content}\n\n`).join('');
  return body + (addGenerationPrompt ? '### Assistant:\n' : '');
}

export interface TemplateContext {
  columns: ColumnMapping;
  template: TemplateName;
  preprocess: PreprocessOptions;
  tokenizer: TextTokenizer | null;
}

/** Turn one row into a templated example. Throws TemplateProblem (naming the template) for unusable rows. */
export function applyTemplate(
  fields: Record<string, unknown>,
  ctx: TemplateContext,
  file: string,
  row: number,
): TextExample {
  let chosen: ConcreteTemplate | undefined;
  try {
    return renderRow(fields, ctx, file, row, (t) => (chosen = t));
  } catch (e) {
    if (e instanceof TemplateProblem) e.template ??= chosen;
    throw e;
  }
}

function renderRow(
  fields: Record<string, unknown>,
  ctx: TemplateContext,
  file: string,
  row: number,
  onChosen: (t: ConcreteTemplate) => void,
): TextExample {
  let f!: RowFields;
  const isTranscript = (): boolean => {
    const src = f.raw('source');
    return src === 'earnings_call' || src === 'transcript' || chosen === 'transcript_completion';
  };
  f = new RowFields(fields, ctx.columns, ctx.preprocess, isTranscript);
  let chosen: ConcreteTemplate | undefined;
  chosen = chooseTemplate(f, ctx.template);
  onChosen(chosen);
  const srcRaw = f.raw('source');
  const source = typeof srcRaw === 'string' && srcRaw.trim() !== '' ? srcRaw.trim() : null;
  const base = { file, row, task: chosen, source, rendered: false };
  switch (chosen) {
    case 'financial_analysis': {
      const text = f.text('text', chosen, true);
      const analysis = f.optionalText('analysis', chosen);
      let response: string;
      if (analysis !== null) response = analysis;
      else if (f.has('sentiment')) response = `Sentiment: ${f.text('sentiment', chosen, false, false, true)}.`;
      else
        throw new TemplateProblem(
          'missing_field',
          `template financial_analysis needs field '${f.col('analysis')}' or '${f.col('sentiment')}'`,
        );
      return {
        ...base,
        prompt: instruction(
          'Analyze this financial passage: give its sentiment (positive, negative or neutral) and the key figures.',
          text,
        ),
        response,
      };
    }
    case 'transcript_completion': {
      const text = f.text('text', chosen, true);
      let context = text;
      let response = f.optionalText('continuation', chosen);
      if (response === null) {
        const lines = text.split('\n');
        if (lines.length < 2) {
          throw new TemplateProblem(
            'missing_field',
            `template transcript_completion needs field '${f.col('continuation')}' or a text with at least two speaker turns`,
          );
        }
        response = lines.pop()!;
        context = lines.join('\n');
      } else {
        response = preprocessText(response, ctx.preprocess, true);
      }
      return {
        ...base,
        prompt: instruction('Continue the earnings call transcript with the next speaker turn.', context),
        response,
      };
    }
    case 'summarization': {
      const text = f.text('text', chosen, true);
      const noun = (source && own(SOURCE_NOUN, source)) || 'passage';
      return {
        ...base,
        prompt: instruction(`Summarize this ${noun} in one sentence, keeping figures exact.`, text),
        response: f.text('summary', chosen),
      };
    }
    case 'qa': {
      const text = f.text('text', chosen, true);
      const question = f.text('question', chosen);
      return {
        ...base,
        prompt: instruction(
          'Answer the question from the passage, quoting figures exactly.',
          `${text}\n\nQuestion: ${question}`,
        ),
        response: f.text('answer', chosen),
      };
    }
    case 'completion': {
      if (f.has('prompt') || f.has('response')) {
        return { ...base, prompt: f.text('prompt', chosen, false, true), response: f.text('response', chosen) };
      }
      return { ...base, prompt: '', response: f.text('text', chosen, true) };
    }
    case 'alpaca': {
      const input = f.has('input') ? f.text('input', chosen, true) : null;
      return { ...base, prompt: instruction(f.text('instruction', chosen), input), response: f.text('output', chosen) };
    }
    case 'chat': {
      const field = !f.has('messages') && f.has('conversations') ? 'conversations' : 'messages';
      const col = f.col(field);
      const raw = f.raw(field);
      if (raw === undefined || raw === null) {
        throw new TemplateProblem(
          'missing_field',
          `missing field '${f.col('messages')}' (or '${f.col('conversations')}') required by template chat`,
        );
      }
      const messages = parseMessages(raw, col).map((m, i) => ({
        role: m.role,
        content: checkText(m.content, `field '${col}[${i}].content'`, 'chat', (s) =>
          preprocessText(s, ctx.preprocess, false),
        ),
      }));
      if (messages.length < 2 || messages[messages.length - 1]!.role !== 'assistant') {
        throw new TemplateProblem(
          'missing_field',
          `field '${col}' must hold at least two messages and end with an assistant message (got roles: ${messages.map((m) => m.role).join(', ') || 'none'})`,
        );
      }
      const head = messages.slice(0, -1);
      const tok = ctx.tokenizer;
      if (tok?.hasChatTemplate) {
        const prompt = tok.applyChatTemplate(head, { addGenerationPrompt: true });
        const full = tok.applyChatTemplate(messages, { addGenerationPrompt: false });
        let cut = 0;
        while (cut < prompt.length && cut < full.length && prompt[cut] === full[cut]) cut++;
        return { ...base, prompt: full.slice(0, cut), response: full.slice(cut), rendered: true };
      }
      return { ...base, prompt: renderChatFallback(head, true), response: messages[messages.length - 1]!.content };
    }
  }
}

/** The field a single piece of user text fills in each template (`generate --template`). */
export const PRIMARY_FIELD: Record<ConcreteTemplate, keyof ColumnMapping> = {
  financial_analysis: 'text',
  transcript_completion: 'text',
  summarization: 'text',
  qa: 'text',
  completion: 'prompt',
  chat: 'messages',
  alpaca: 'instruction',
};

/** The response fields a prompt-only record may lack, per template (filled with a placeholder to render the prompt). */
const RESPONSE_FIELDS: Record<ConcreteTemplate, (keyof ColumnMapping)[]> = {
  financial_analysis: ['analysis'],
  transcript_completion: ['continuation'],
  summarization: ['summary'],
  qa: ['answer'],
  completion: ['response'],
  chat: [],
  alpaca: ['output'],
};

/**
 * The prompt a template makes of a record that has no response yet (generation): exactly the
 * prompt of training, up to where the response starts. Chat records end with the user's turn.
 */
export function renderPrompt(
  fields: Record<string, unknown>,
  ctx: TemplateContext,
  template: ConcreteTemplate,
): { prompt: string; rendered: boolean } {
  const filled: Record<string, unknown> = { ...fields };
  const c = ctx.columns;
  if (template === 'financial_analysis' && (filled[c.sentiment] !== undefined || filled[c.analysis] !== undefined)) {
    // a label or analysis given: it is the response, not part of the prompt
  } else {
    for (const f of RESPONSE_FIELDS[template])
      if (filled[c[f]] === undefined || filled[c[f]] === null || filled[c[f]] === '') filled[c[f]] = '-';
  }
  if (template === 'chat') {
    const field =
      filled[c.messages] === undefined && filled[c.conversations] !== undefined ? c.conversations : c.messages;
    const messages = parseMessages(filled[field], field);
    filled[field] = [...messages, { role: 'assistant', content: '-' }];
  }
  const ex = applyTemplate(filled, { ...ctx, template }, '', 0);
  return { prompt: ex.prompt, rendered: ex.rendered };
}
