// Chat templates rendered within limits (src/llama/chat-template.ts): the same text as
// @huggingface/jinja's own Template.render for real templates, and a ChatTemplateLimitError (never
// a hung or aborted process) for templates that loop or grow without bound.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { describe, expect, it } from 'vitest';
import { ChatTemplate, ChatTemplateLimitError, type ChatTemplateLimits } from '../../src/llama/chat-template.js';
import { ChatTemplateError, LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { CHAT_TEMPLATE, TINY } from '../serve/helpers.js';

const LLAMA3 =
  "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
const MISTRAL =
  "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% endif %}{% endfor %}";
const GLOBALS =
  "{% set ns = namespace(n=0) %}{% for i in range(2, 11, 3) %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }} {{ range(4) | list }} {{ range(5, 0, -2) | list }} {{ True and not False }} {{ none is none }} {{ strftime_now('%Y') | length }}";

const vars = {
  messages: [
    { role: 'user', content: 'What drove the margin change?' },
    { role: 'assistant', content: 'Lower funding costs.' },
    { role: 'user', content: 'And next quarter?' },
  ],
  bos_token: '<s>',
  eos_token: '</s>',
  add_generation_prompt: true,
};

const tight: ChatTemplateLimits = { maxChars: 10_000, maxItems: 10_000, timeoutMs: 300 };

describe('ChatTemplate (bounded rendering)', () => {
  it.each([
    ['zephyr', CHAT_TEMPLATE],
    ['llama 3', LLAMA3],
    ['mistral', MISTRAL],
    ['globals', GLOBALS],
  ])('%s: the text @huggingface/jinja renders', (_name, source) => {
    const ours = new ChatTemplate(source).render(vars, tight);
    expect(ours).toBe(new Template(source).render(vars));
    expect(ours.length).toBeGreaterThan(0);
  });

  // [what, template, limit]. Unbounded, the first aborts the process (V8 "invalid size error").
  const hostile: [string, string, ChatTemplateLimitError['limit']][] = [
    ['range() past the item limit', '{% for i in range(200000000) %}x{% endfor %}', 'items'],
    [
      'a list that doubles',
      '{% set ns = namespace(a=[1]) %}{% for i in range(40) %}{% set ns.a = ns.a + ns.a %}{% endfor %}{{ ns.a | length }}',
      'items',
    ],
    [
      'a string that doubles',
      "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
      'chars',
    ],
    ['output past the size limit (pieces within it)', '{% for i in range(5) %}{{ chunk }}{% endfor %}', 'chars'],
    ['a message longer than the size limit', "{{ messages[0]['content'] }}", 'chars'],
    [
      'nested loops of 10^8 steps',
      '{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}',
      'time',
    ],
    ['a wide indent', "{{ {'a': 1} | tojson(indent=300000000) }}", 'chars'],
  ];

  it.each(hostile)('%s: ChatTemplateLimitError, and the next render works', (_name, source, limit) => {
    const big = {
      ...vars,
      messages: [{ role: 'user', content: 'x'.repeat(tight.maxChars + 1) }],
      chunk: 'x'.repeat(3000),
    };
    let err: unknown = null;
    try {
      new ChatTemplate(source).render(big, tight);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ChatTemplateLimitError);
    expect((err as ChatTemplateLimitError).limit).toBe(limit);
    expect(new ChatTemplate(CHAT_TEMPLATE).render(vars, tight)).toBe(new Template(CHAT_TEMPLATE).render(vars));
  });

  it("range() follows Python's semantics and checks its arguments", () => {
    const r = (args: string) => new ChatTemplate(`{{ range(${args}) | list }}`).render({}, tight);
    expect([r('0'), r('3'), r('-2'), r('1, 4'), r('4, 1'), r('0, 10, 4'), r('10, 0, -4'), r('3, 3, -1')]).toEqual([
      '[]',
      '[0, 1, 2]',
      '[]',
      '[1, 2, 3]',
      '[]',
      '[0, 4, 8]',
      '[10, 6, 2]',
      '[]',
    ]);
    expect(() => r('1, 5, 0')).toThrow(/step must not be zero/);
    expect(() => r('1.5')).toThrow(/must be an integer/);
  });
});

describe('LlamaTokenizer.applyChatTemplate errors', () => {
  const tokenizerJson = JSON.parse(readFileSync(join(TINY, 'tokenizer.json'), 'utf8')) as {
    model: { vocab: Record<string, number> };
    added_tokens: { content: string }[];
  };
  const config = JSON.parse(readFileSync(join(TINY, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;

  it('maxTokenChars is the longest token text, vocabulary and added tokens', async () => {
    const longest = Math.max(
      ...Object.keys(tokenizerJson.model.vocab).map((t) => t.length),
      ...tokenizerJson.added_tokens.map((t) => t.content.length),
    );
    expect((await LlamaTokenizer.load(TINY)).maxTokenChars).toBe(longest);
  });

  it("ChatTemplateError: the message names the template's file for the CLI, `reason` is the template's own words, `limit` which limit", () => {
    const withTemplate = LlamaTokenizer.fromObjects(tokenizerJson, config, {
      chatTemplate: MISTRAL,
      chatTemplateFile: '/srv/models/fin/chat_template.jinja',
    });
    let err: unknown = null;
    try {
      withTemplate.applyChatTemplate([{ role: 'assistant', content: 'hi' }]);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ChatTemplateError);
    const e = err as ChatTemplateError;
    expect(e.message).toBe(
      "/srv/models/fin/chat_template.jinja, key 'chat_template': chat template failed to render: Conversation roles must alternate user/assistant/user/assistant/...",
    );
    expect(e.reason).toBe('Conversation roles must alternate user/assistant/user/assistant/...');
    expect(e.limit).toBeNull();
    const limited = (() => {
      try {
        withTemplate.applyChatTemplate([{ role: 'user', content: 'x'.repeat(200) }], {
          limits: { maxChars: 100, maxItems: 10, timeoutMs: 1000 },
        });
      } catch (x) {
        return x as ChatTemplateError;
      }
      return null;
    })();
    expect(limited?.limit).toBe('chars');
  });
});
