// serve with the training template (--template / --run, issue 23): a completion's prompt is laid
// out as training laid out that template's records, a chat request on a model without a chat
// template uses the training layout of chat records; checked against the training prompt
// (applyTemplate on a full record, as the data stage builds it) and against `finllm generate`.
import OpenAI from 'openai';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateAction } from '../../src/cli/generate.js';
import { serveAction } from '../../src/cli/serve.js';
import { InputError } from '../../src/errors.js';
import { DEFAULT_COLUMNS } from '../../src/pipeline/config.js';
import { DEFAULT_PREPROCESS } from '../../src/pipeline/data/preprocess.js';
import { type PromptSettings, servingPromptLayout } from '../../src/pipeline/data/prompt-layout.js';
import { applyTemplate } from '../../src/pipeline/data/templates.js';
import { disposeServingModels, loadServingModels, type ServingModels } from '../../src/serve/load.js';
import { useEngine } from '../helpers/index.js';
import { serveFlags, TINY, useServers } from './helpers.js';

useEngine();

const PROMPT = 'Summarize the quarter: revenue rose 9% to $2.31 billion.';
const settings = (template: PromptSettings['template']): PromptSettings => ({
  template,
  columns: { ...DEFAULT_COLUMNS },
  preprocess: DEFAULT_PREPROCESS,
});

let models: ServingModels;
const startServer = useServers();

beforeAll(async () => {
  models = await loadServingModels({ modelDir: TINY });
});
afterAll(() => {
  if (models) disposeServingModels(models);
});

async function client(template: PromptSettings['template'] | null): Promise<OpenAI> {
  const { url } = await startServer(
    { port: 0, baseId: 'tiny', promptLayout: template === null ? null : servingPromptLayout(settings(template)) },
    models,
  );
  return new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 120_000 });
}

async function generated(o: { template?: string; chat?: boolean }): Promise<string> {
  let text = '';
  await generateAction({ model: TINY, prompt: PROMPT, maxNewTokens: '8', greedy: true, ...o }, (s) => void (text += s));
  return text.replace(/\n$/, '');
}

describe('serve --template: prompts laid out as in training', () => {
  it('alpaca and financial_analysis: the prompt is the training prompt (token count) and the output is what generate --template gives', async () => {
    for (const [template, record] of [
      ['alpaca', { instruction: PROMPT, output: 'x' }],
      ['financial_analysis', { text: PROMPT, analysis: 'x' }],
    ] as const) {
      const training = applyTemplate(record, { ...settings(template), tokenizer: null }, 'train.jsonl', 1);
      const c = await client(template);
      const r = await c.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 8, temperature: 0 });
      expect(r.usage!.prompt_tokens, template).toBe(models.tokenizer.encode(training.prompt).length);
      expect(r.usage!.prompt_tokens, template).toBeGreaterThan(models.tokenizer.encode(PROMPT).length + 3);
      expect(r.choices[0]!.text, template).toBe(await generated({ template }));
    }
    // Without a template the prompt is tokenized as given.
    const plain = await (await client(null)).completions.create({
      model: 'tiny',
      prompt: PROMPT,
      max_tokens: 8,
      temperature: 0,
    });
    expect(plain.usage!.prompt_tokens).toBe(models.tokenizer.encode(PROMPT).length);
    expect(plain.choices[0]!.text).toBe(await generated({}));
  });

  it('chat on a model without a chat template: the training layout of chat records (as generate --chat), else 400 no_chat_template', async () => {
    const messages = [{ role: 'user' as const, content: PROMPT }];
    const none = await (await client(null)).chat.completions
      .create({ model: 'tiny', messages, max_tokens: 8, temperature: 0 })
      .catch((e: unknown) => e);
    expect((none as InstanceType<typeof OpenAI.APIError>).status).toBe(400);
    expect((none as InstanceType<typeof OpenAI.APIError>).code).toBe('no_chat_template');
    const c = await client('chat');
    const r = await c.chat.completions.create({ model: 'tiny', messages, max_tokens: 8, temperature: 0 });
    const training = applyTemplate(
      { messages: [...messages, { role: 'assistant', content: 'x' }] },
      { ...settings('chat'), tokenizer: null },
      'train.jsonl',
      1,
    );
    expect(r.usage!.prompt_tokens).toBe(models.tokenizer.encode(training.prompt).length);
    expect(r.choices[0]!.message.content).toBe(await generated({ chat: true }));
    // A completion under the chat template is the user's message.
    const completion = await c.completions.create({ model: 'tiny', prompt: PROMPT, max_tokens: 8, temperature: 0 });
    expect(completion.choices[0]!.text).toBe(r.choices[0]!.message.content);
  });

  it('a template whose prompt needs more than the prompt (qa) is refused at startup, naming --template, before anything listens', async () => {
    expect(() => servingPromptLayout(settings('qa'))).toThrow(InputError);
    const o = serveFlags({ template: 'qa' });
    const lines: string[] = [];
    const err = await serveAction(o, (l) => lines.push(l)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InputError);
    expect((err as Error).message).toMatch(
      /^--template: the qa template cannot lay out a bare prompt: a served prompt fills only its text field/,
    );
    expect(lines).toEqual([]);
    const bad = await serveAction({ ...o, template: 'nope' }, () => undefined).catch((e: unknown) => e);
    expect((bad as Error).message).toMatch(/--template: expected one of .*got "nope"/);
  });
});
