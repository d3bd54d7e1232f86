import { describe, expect, it } from 'vitest';
import { configSchema } from '../../../src/pipeline/config.js';
import { DEFAULT_PREPROCESS } from '../../../src/pipeline/data/preprocess.js';
import { applyTemplate, type TemplateContext, TemplateProblem } from '../../../src/pipeline/data/templates.js';
import { tokenizeExample } from '../../../src/pipeline/data/tokenize.js';
import { IGNORE_INDEX } from '../../../src/pipeline/data/types.js';
import { tinyChatTokenizer, tinyTokenizer } from './helpers.js';

const columns = configSchema.parse({ model: { path: 'm' }, data: { train: 't.jsonl' } }).data.columns;
const tok = tinyTokenizer();
const ctx = (over: Partial<TemplateContext> = {}): TemplateContext => ({
  columns,
  template: 'auto',
  preprocess: DEFAULT_PREPROCESS,
  tokenizer: tok,
  ...over,
});
const apply = (fields: Record<string, unknown>, c = ctx()) => applyTemplate(fields, c, 'f.jsonl', 7);
const problem = (fields: Record<string, unknown>, c = ctx()): TemplateProblem => {
  try {
    apply(fields, c);
  } catch (e) {
    expect(e).toBeInstanceOf(TemplateProblem);
    return e as TemplateProblem;
  }
  throw new Error('expected a TemplateProblem');
};

describe('templates', () => {
  const text = 'Revenue rose 12.8% to $2.31 billion.';

  it('render each task as {prompt, response}', () => {
    const qa = apply({ task: 'qa', text, question: 'What was revenue?', answer: '$2.31 billion.' });
    expect(qa.task).toBe('qa');
    expect(qa.prompt).toBe(
      `### Instruction:\nAnswer the question from the passage, quoting figures exactly.\n\n### Input:\n${text}\n\nQuestion: What was revenue?\n\n### Response:\n`,
    );
    expect(qa.response).toBe('$2.31 billion.');

    const sum = apply({ task: 'summarization', source: 'news', text, summary: 'Revenue up.' });
    expect(sum.prompt).toContain('Summarize this news article');
    expect(sum.response).toBe('Revenue up.');

    const fa = apply({ task: 'financial_analysis', text, sentiment: 'positive' });
    expect(fa.prompt).toContain('Analyze this financial passage');
    expect(fa.response).toBe('Sentiment: positive.');
    expect(apply({ task: 'analysis', text, sentiment: 'x', analysis: 'Detailed.' }).response).toBe('Detailed.');

    const tc = apply({
      task: 'transcript_completion',
      text: 'Operator: Welcome.\nJohn Smith -- CFO: Revenue was $2.31 billion.',
    });
    expect(tc.prompt).toContain('### Input:\nOperator: Welcome.\n\n### Response:\n');
    expect(tc.response).toBe('John Smith (CFO): Revenue was $2.31 billion.');

    const comp = apply({ text });
    expect(comp).toMatchObject({ task: 'completion', prompt: '', response: text });
    expect(apply({ prompt: 'Q: ', response: 'A' })).toMatchObject({ task: 'completion', prompt: 'Q: ', response: 'A' });
  });

  it('auto picks a template from the available fields when there is no task', () => {
    expect(apply({ text, question: 'q', answer: 'a' }).task).toBe('qa');
    expect(apply({ text, summary: 's' }).task).toBe('summarization');
    expect(apply({ text, sentiment: 'neutral' }).task).toBe('financial_analysis');
    expect(
      apply({
        messages: [
          { role: 'user', content: 'hi' },
          { role: 'assistant', content: 'yo' },
        ],
      }).task,
    ).toBe('chat');
  });

  it('uses the column mapping', () => {
    const c = ctx({ columns: { ...columns, text: 'body', summary: 'abstract' }, template: 'summarization' });
    expect(apply({ body: text, abstract: 'Short.' }, c).response).toBe('Short.');
    expect(problem({ text, abstract: 'Short.' }, c).message).toMatch(
      /missing field 'body' \(mapped from 'text'\) required by template summarization/,
    );
  });

  it('reports missing, empty, non-text and encoding problems', () => {
    expect(problem({ task: 'qa', text, question: 'q' })).toMatchObject({ kind: 'missing_field' });
    expect(problem({ task: 'qa', text: '   ', question: 'q', answer: 'a' })).toMatchObject({ kind: 'empty_field' });
    expect(problem({ task: 'summarization', text: { a: 1 }, summary: 's' })).toMatchObject({ kind: 'non_text' });
    expect(problem({ task: 'summarization', text: 'bad \uFFFD text', summary: 's' })).toMatchObject({
      kind: 'replacement_char',
    });
    expect(problem({ task: 'summarization', text: 'bell \u0007', summary: 's' }).message).toMatch(
      /control character U\+0007/,
    );
    expect(problem({ task: 'nonsense', text }).message).toMatch(/unknown task "nonsense"/);
    expect(problem({ messages: [{ role: 'user', content: 'hi' }] }).message).toMatch(/end with an assistant message/);
  });

  it('reads task names, ShareGPT speakers and source kinds from their tables only (no inherited names)', () => {
    for (const name of ['__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
      expect(problem({ task: name, text }).message).toMatch(new RegExp(`unknown task "${name}"`));
      expect(
        problem({
          conversations: [
            { from: name, value: 'hi' },
            { from: 'gpt', value: 'hello' },
          ],
        }).message,
      ).toMatch(new RegExp(`from' is "${name}"; expected one of system, human, gpt`));
      expect(apply({ task: 'summarization', source: name, text, summary: 's' }).prompt).toContain(
        'Summarize this passage in one sentence',
      );
    }
  });

  it('chat: fallback format without a chat template', () => {
    const ex = apply({
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'EPS?' },
        { role: 'assistant', content: '€0.52' },
      ],
    });
    expect(ex.prompt).toBe('### System:\nBe brief.\n\n### User:\nEPS?\n\n### Assistant:\n');
    expect(ex.response).toBe('€0.52');
    expect(ex.rendered).toBe(false);
  });

  it("chat: uses the tokenizer's chat template when it has one", () => {
    const ex = apply(
      {
        messages: [
          { role: 'user', content: 'EPS?' },
          { role: 'assistant', content: '€0.52' },
        ],
      },
      ctx({ tokenizer: tinyChatTokenizer() }),
    );
    expect(ex.rendered).toBe(true);
    expect(ex.prompt).toBe('<s><|user|>\nEPS?</s>\n<|assistant|>\n');
    expect(ex.response).toBe('€0.52</s>\n');
  });
});

describe('tokenization and response-only loss', () => {
  it('masks the prompt, appends EOS, shifts labels', () => {
    const ex = apply({ task: 'qa', text: 'Margin was (3.2)%.', question: 'Margin?', answer: '(3.2)%' });
    const t = tokenizeExample(ex, tok, { maxSeqLen: 4096, responseOnlyLoss: true });
    const ids = Array.from(t.inputIds);
    expect(ids[0]).toBe(1); // BOS from the post-processor
    expect(ids[ids.length - 1]).toBe(2); // EOS appended
    expect(t.truncated).toBe(false);
    expect(t.fullLength).toBe(ids.length);
    // the text of the targets is the response + EOS
    const targets = Array.from(t.labels).filter((l) => l !== IGNORE_INDEX);
    expect(targets.length).toBe(t.numTargets);
    expect(targets[targets.length - 1]).toBe(2);
    expect(tok.decode(targets.slice(0, -1)).replace(/\s+/g, '')).toBe('(3.2)%');
    // shifted: labels[i] = ids[i+1] wherever set; the last position is never a target
    for (let i = 0; i < ids.length; i++) if (t.labels[i] !== IGNORE_INDEX) expect(t.labels[i]).toBe(ids[i + 1]);
    expect(t.labels[ids.length - 1]).toBe(IGNORE_INDEX);
    // prompt positions are masked
    const prompt = tok.encode(ex.prompt, { addSpecialTokens: true });
    for (let i = 0; i + 1 < prompt.length; i++) expect(t.labels[i]).toBe(IGNORE_INDEX);
  });

  it('without response-only loss every next token is a target', () => {
    const ex = apply({ task: 'qa', text: 'x', question: 'q', answer: 'a' });
    const t = tokenizeExample(ex, tok, { maxSeqLen: 4096, responseOnlyLoss: false });
    expect(t.numTargets).toBe(t.inputIds.length - 1);
  });

  it('truncates from the right and reports it; all-masked examples have zero targets', () => {
    const ex = apply({
      task: 'qa',
      text: 'Revenue rose 12.8% to $2.31 billion. '.repeat(3),
      question: 'Revenue?',
      answer: '$2.31 billion',
    });
    const full = tokenizeExample(ex, tok, { maxSeqLen: 4096, responseOnlyLoss: true });
    const cut = tokenizeExample(ex, tok, { maxSeqLen: full.inputIds.length - 3, responseOnlyLoss: true });
    expect(cut.truncated).toBe(true);
    expect(cut.fullLength).toBe(full.inputIds.length);
    expect(cut.inputIds.length).toBe(full.inputIds.length - 3);
    expect(Array.from(cut.inputIds)).toEqual(Array.from(full.inputIds.subarray(0, cut.inputIds.length)));
    expect(cut.numTargets).toBe(full.numTargets - 3);
    const masked = tokenizeExample(ex, tok, { maxSeqLen: 20, responseOnlyLoss: true });
    expect(masked.numTargets).toBe(0);
  });

  it('chat-template text is encoded without adding a second BOS', () => {
    const chatTok = tinyChatTokenizer();
    const ex = apply(
      {
        messages: [
          { role: 'user', content: 'EPS?' },
          { role: 'assistant', content: 'up' },
        ],
      },
      ctx({ tokenizer: chatTok }),
    );
    const t = tokenizeExample(ex, chatTok, { maxSeqLen: 4096, responseOnlyLoss: true });
    expect(t.inputIds[0]).toBe(1);
    expect(t.inputIds[1]).not.toBe(1);
    expect(t.numTargets).toBeGreaterThan(0);
  });
});
