// A bare prompt laid out with a training template (src/pipeline/data/prompt-layout.ts): the prompt
// of the training record that holds it in the template's main field, cut where the response
// starts; which templates a server can take a bare prompt with, and where a refusal points.
import { describe, expect, it } from 'vitest';
import { InputError } from '../../../src/errors.js';
import { type ColumnMapping, DEFAULT_COLUMNS } from '../../../src/pipeline/config.js';
import { DEFAULT_PREPROCESS } from '../../../src/pipeline/data/preprocess.js';
import { layOutPrompt, type PromptSettings, servingPromptLayout } from '../../../src/pipeline/data/prompt-layout.js';
import { applyTemplate, type ConcreteTemplate } from '../../../src/pipeline/data/templates.js';

const PROMPT = 'Revenue rose 9% to $2.31 billion.';
const settings = (template: PromptSettings['template'], columns: Partial<ColumnMapping> = {}): PromptSettings => ({
  template,
  columns: { ...DEFAULT_COLUMNS, ...columns },
  preprocess: DEFAULT_PREPROCESS,
});

/** Full training records with PROMPT in the main field (and a response), per template. */
const RECORDS: Record<Exclude<ConcreteTemplate, 'qa'>, Record<string, unknown>> = {
  financial_analysis: { text: PROMPT, analysis: 'Strong quarter.' },
  transcript_completion: { text: PROMPT, continuation: 'Thank you.' },
  summarization: { text: PROMPT, summary: 'Revenue up.' },
  completion: { prompt: PROMPT, response: 'Margins held.' },
  alpaca: { instruction: PROMPT, output: 'Up 9%.' },
  chat: {
    messages: [
      { role: 'user', content: PROMPT },
      { role: 'assistant', content: 'Up 9%.' },
    ],
  },
};

describe('prompt layout', () => {
  it('each one-field template: the training prompt of the record holding the prompt (the server layout and layOutPrompt agree)', () => {
    for (const [template, record] of Object.entries(RECORDS) as [
      Exclude<ConcreteTemplate, 'qa'>,
      Record<string, unknown>,
    ][]) {
      const training = applyTemplate(record, { ...settings(template), tokenizer: null }, 'train.jsonl', 1);
      const laid = layOutPrompt({ ...settings(template), template }, null, PROMPT);
      expect(laid, template).toEqual({ prompt: training.prompt, rendered: false });
      expect(laid.prompt, template).toContain(PROMPT);
      expect(servingPromptLayout(settings(template))!.completion(PROMPT), template).toEqual(laid);
    }
    const chat = servingPromptLayout(settings('chat'))!.chat([{ role: 'user', content: PROMPT }]);
    expect(chat.prompt).toBe(layOutPrompt({ ...settings('chat'), template: 'chat' }, null, PROMPT).prompt);
  });

  it('mapped columns: the prompt goes to the column data.columns names for the main field', () => {
    const s = settings('alpaca', { instruction: 'question_text', output: 'reply' });
    const training = applyTemplate({ question_text: PROMPT, reply: 'x' }, { ...s, tokenizer: null }, 'train.jsonl', 1);
    expect(servingPromptLayout(s)!.completion(PROMPT).prompt).toBe(training.prompt);
  });

  it('qa takes its question as another field; a server cannot take a bare prompt with it, and says where the template came from', () => {
    const training = applyTemplate(
      { text: PROMPT, question: 'What was revenue?', answer: 'x' },
      { ...settings('qa'), tokenizer: null },
      'train.jsonl',
      1,
    );
    expect(
      layOutPrompt({ ...settings('qa'), template: 'qa' }, null, PROMPT, { question: 'What was revenue?' }).prompt,
    ).toBe(training.prompt);
    expect(servingPromptLayout(settings('auto'))).toBeNull();
    expect(() => servingPromptLayout(settings('qa'))).toThrow(
      /^--template: the qa template cannot lay out a bare prompt: a served prompt fills only its text field/,
    );
    let err: unknown;
    try {
      servingPromptLayout(settings('qa'), { file: 'runs/x/resolved-config.yaml', key: 'data.template' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(/^runs\/x\/resolved-config\.yaml, key 'data\.template': the qa template/);
  });
});
