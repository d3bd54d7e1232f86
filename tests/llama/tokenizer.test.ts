import { copyFile, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { InputError } from '../../src/errors.js';
import { LlamaTokenizer } from '../../src/llama/tokenizer.js';
import { FIXTURE_MODELS, FIXTURES, useTempDirs } from '../io/helpers.js';

const tempDir = useTempDirs();
const golden = JSON.parse(await readFile(join(FIXTURES, 'golden.json'), 'utf8')) as {
  texts: string[];
  models: Record<string, { token_ids: number[][] }>;
};
const modelDir = (name: string) => join(FIXTURES, name, 'model');

async function copyTokenizer(from: string): Promise<string> {
  const dir = await tempDir();
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) await copyFile(join(from, f), join(dir, f));
  return dir;
}

describe('tokenizer vs HF golden token ids', () => {
  for (const name of FIXTURE_MODELS) {
    it(`${name}: encode reproduces HF input_ids for every golden text`, async () => {
      const tokenizer = await LlamaTokenizer.load(modelDir(name));
      const expected = golden.models[name]!.token_ids;
      expect(expected).toHaveLength(golden.texts.length);
      golden.texts.forEach((text, i) => {
        expect(tokenizer.encode(text), `text ${i}`).toEqual(expected[i]);
      });
    });
  }

  it('gqa-f32 (SentencePiece-style BPE): special ids, BOS handling and decode', async () => {
    const tokenizer = await LlamaTokenizer.load(modelDir('gqa-f32'));
    expect([tokenizer.bosId, tokenizer.eosId, tokenizer.unkId, tokenizer.padId]).toEqual([1, 2, 0, null]);
    expect(tokenizer.vocabSize).toBe(600);
    expect(tokenizer.idToToken(1)).toBe('<s>');
    expect(tokenizer.tokenToId('</s>')).toBe(2);
    for (const [i, text] of golden.texts.entries()) {
      const ids = golden.models['gqa-f32']!.token_ids[i]!;
      expect(tokenizer.encode(text, { addSpecialTokens: false })).toEqual(ids.slice(1));
      expect(tokenizer.decode(ids.slice(1))).toBe(text);
      expect(tokenizer.decode(ids)).toBe(`<s> ${text}`);
    }
  });

  it('mqa (byte-level BPE, Llama 3 style): special ids and lossless decode', async () => {
    const tokenizer = await LlamaTokenizer.load(modelDir('mqa-bf16-tied-llama3rope'));
    expect([tokenizer.bosId, tokenizer.eosId, tokenizer.padId, tokenizer.unkId]).toEqual([0, 1, null, null]);
    expect(tokenizer.vocabSize).toBe(800);
    expect(tokenizer.idToToken(2)).toBe('<|eot_id|>');
    for (const [i, text] of golden.texts.entries()) {
      const ids = golden.models['mqa-bf16-tied-llama3rope']!.token_ids[i]!;
      expect(ids[0]).toBe(tokenizer.bosId);
      expect(tokenizer.decode(ids, { skipSpecialTokens: true })).toBe(text);
      expect(tokenizer.decode(ids)).toBe(`<|begin_of_text|>${text}`);
    }
  });
});

describe('chat templates', () => {
  const template =
    "{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<|eot_id|>' }}{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}";
  const messages = [
    { role: 'system', content: 'You are a credit analyst.' },
    { role: 'user', content: 'Is leverage rising?' },
  ];

  it('fixture tokenizers have none, and say so when asked to render', async () => {
    const tokenizer = await LlamaTokenizer.load(modelDir('gqa-f32'));
    expect(tokenizer.hasChatTemplate).toBe(false);
    expect(() => tokenizer.applyChatTemplate(messages)).toThrow(InputError);
    expect(() => tokenizer.applyChatTemplate(messages)).toThrow(/tokenizer_config\.json.*no chat template/);
  });

  it('renders chat_template from tokenizer_config.json, with and without the generation prompt', async () => {
    const dir = await copyTokenizer(modelDir('mqa-bf16-tied-llama3rope'));
    const configPath = join(dir, 'tokenizer_config.json');
    const config = JSON.parse(await readFile(configPath, 'utf8'));
    await writeFile(configPath, JSON.stringify({ ...config, chat_template: template }));
    const tokenizer = await LlamaTokenizer.load(dir);
    expect(tokenizer.hasChatTemplate).toBe(true);
    const conversation =
      '<|begin_of_text|>system: You are a credit analyst.<|eot_id|>user: Is leverage rising?<|eot_id|>';
    expect(tokenizer.applyChatTemplate(messages)).toBe(conversation);
    expect(tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe(`${conversation}assistant: `);
    const ids = tokenizer.encodeChat(messages);
    expect(ids[0]).toBe(tokenizer.bosId);
    expect(ids[1]).not.toBe(tokenizer.bosId); // BOS comes from the template only, not twice
    expect(ids.filter((id) => id === tokenizer.tokenToId('<|eot_id|>'))).toHaveLength(2);
    expect(tokenizer.decode(ids)).toBe(conversation);
  });

  it('prefers chat_template.jinja and picks "default" from a list of named templates', async () => {
    const dir = await copyTokenizer(modelDir('mqa-bf16-tied-llama3rope'));
    const configPath = join(dir, 'tokenizer_config.json');
    const config = JSON.parse(await readFile(configPath, 'utf8'));
    await writeFile(
      configPath,
      JSON.stringify({
        ...config,
        chat_template: [
          { name: 'tool_use', template: 'TOOLS' },
          { name: 'default', template: 'DEFAULT {{ messages | length }}' },
        ],
      }),
    );
    expect((await LlamaTokenizer.load(dir)).applyChatTemplate(messages)).toBe('DEFAULT 2');
    await writeFile(join(dir, 'chat_template.jinja'), 'FILE {{ messages[0].role }}');
    expect((await LlamaTokenizer.load(dir)).applyChatTemplate(messages)).toBe('FILE system');
  });

  it('reports templates that do not parse or that raise, naming the file', async () => {
    const dir = await copyTokenizer(modelDir('mqa-bf16-tied-llama3rope'));
    const jinjaPath = join(dir, 'chat_template.jinja');
    await writeFile(jinjaPath, '{% for m in messages %}');
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(/chat_template\.jinja.*does not parse/);
    await writeFile(jinjaPath, "{{ raise_exception('roles must alternate') }}");
    const tokenizer = await LlamaTokenizer.load(dir);
    expect(() => tokenizer.applyChatTemplate(messages)).toThrow(/chat_template\.jinja.*roles must alternate/);
  });
});

describe('bad tokenizer folders', () => {
  it('names the missing file', async () => {
    const dir = await tempDir();
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(InputError);
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(
      new RegExp(`${join(dir, 'tokenizer.json')}.*file not found`),
    );
    await writeFile(join(dir, 'tokenizer.json'), '{}');
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(/tokenizer_config\.json.*file not found/);
  });

  it('names a corrupt tokenizer.json / tokenizer_config.json', async () => {
    const dir = await copyTokenizer(modelDir('gqa-f32'));
    const original = await readFile(join(dir, 'tokenizer.json'), 'utf8');
    await writeFile(join(dir, 'tokenizer.json'), original.slice(0, original.length / 2));
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(/tokenizer\.json.*invalid JSON/);
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify({ version: '1.0' }));
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(/tokenizer\.json.*key 'model'/);
    await writeFile(join(dir, 'tokenizer.json'), original);
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>', eos_token: '<|im_end|>' }));
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(
      /tokenizer_config\.json, key 'eos_token'.*"<\|im_end\|>" is not in the tokenizer's vocabulary/,
    );
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>' }));
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(/key 'eos_token'.*no EOS token defined/);
    await writeFile(join(dir, 'special_tokens_map.json'), '{"eos_token": ');
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(/special_tokens_map\.json.*invalid JSON/);
  });

  it('takes special tokens missing from tokenizer_config.json from special_tokens_map.json', async () => {
    const dir = await copyTokenizer(modelDir('gqa-f32'));
    await writeFile(join(dir, 'tokenizer_config.json'), JSON.stringify({ bos_token: '<s>' }));
    await writeFile(
      join(dir, 'special_tokens_map.json'),
      JSON.stringify({
        bos_token: '<unk>',
        eos_token: { content: '</s>', lstrip: false, normalized: false, rstrip: false, single_word: false },
        pad_token: '<unk>',
      }),
    );
    const tokenizer = await LlamaTokenizer.load(dir);
    expect([tokenizer.bosId, tokenizer.eosId, tokenizer.padId]).toEqual([1, 2, 0]);
  });
});

describe('tokenizer.json is validated at load (issue 20, item 6)', () => {
  const gqa = modelDir('gqa-f32');
  /** A copy of the gqa tokenizer folder with tokenizer.json passed through `edit` (and config.json when given). */
  async function edited(
    edit: (t: { model: Record<string, unknown>; added_tokens: Record<string, unknown>[] }) => void,
    withConfig = false,
  ): Promise<string> {
    const dir = await copyTokenizer(gqa);
    const t = JSON.parse(await readFile(join(dir, 'tokenizer.json'), 'utf8'));
    edit(t);
    await writeFile(join(dir, 'tokenizer.json'), JSON.stringify(t));
    if (withConfig) await copyFile(join(gqa, 'config.json'), join(dir, 'config.json'));
    return dir;
  }

  it('a WordPiece (or untyped) model is refused, naming the file and model.type', async () => {
    const dir = await edited((t) => {
      t.model = {
        type: 'WordPiece',
        unk_token: '<unk>',
        continuing_subword_prefix: '##',
        max_input_chars_per_word: 100,
        vocab: { '<unk>': 0, '<s>': 1, '</s>': 2, a: 3 },
      };
    });
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(
      `${join(dir, 'tokenizer.json')}, key 'model.type': model type "WordPiece" is not supported: finllm runs BPE tokenizers`,
    );
    const untyped = await edited((t) => void delete t.model.type);
    await expect(LlamaTokenizer.load(untyped)).rejects.toThrow(
      /key 'model\.type': model type \(none\) is not supported/,
    );
  });

  it('an empty vocabulary, a bad id or missing merges are refused', async () => {
    await expect(LlamaTokenizer.load(await edited((t) => void (t.model.vocab = {})))).rejects.toThrow(
      /tokenizer\.json, key 'model\.vocab': the vocabulary is empty/,
    );
    await expect(
      LlamaTokenizer.load(await edited((t) => void ((t.model.vocab as Record<string, unknown>)['▁the'] = -4))),
    ).rejects.toThrow(/key 'model\.vocab': token "▁the" has id -4, expected a non-negative integer/);
    await expect(LlamaTokenizer.load(await edited((t) => void delete t.model.merges))).rejects.toThrow(
      /key 'model\.merges': expected the BPE merges/,
    );
  });

  it("beside a model's config.json, ids >= vocab_size are refused, naming the tokens and both files", async () => {
    const dir = await edited((t) => {
      t.added_tokens.push({
        id: 600,
        content: '<extra>',
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      });
    }, true);
    await expect(LlamaTokenizer.load(dir)).rejects.toThrow(
      `${join(dir, 'tokenizer.json')}: 1 token id is outside the model's vocabulary (vocab_size 600 in ${join(dir, 'config.json')}): "<extra>" (600); the tokenizer does not belong to this model`,
    );
    // Without a config.json (a tokenizer folder alone) there is no vocabulary size to check against.
    await rm(join(dir, 'config.json'));
    expect((await LlamaTokenizer.load(dir)).vocabSize).toBe(601);
  });
});
