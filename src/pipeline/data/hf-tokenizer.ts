// A TextTokenizer over a Hugging Face model folder (tokenizer.json + tokenizer_config.json), used by
// the data stage when no other tokenizer is supplied (e.g. `finllm data stats`). Chat templates
// (tokenizer_config.json `chat_template`) are rendered with @huggingface/jinja.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer } from '@huggingface/tokenizers';
import { InputError } from '../../errors.js';
import type { ChatMessage, TextTokenizer } from './types.js';

function tokenString(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

export function loadHfTokenizer(modelDir: string): TextTokenizer {
  const tjPath = join(modelDir, 'tokenizer.json');
  if (!existsSync(tjPath)) {
    throw new InputError(`no tokenizer.json in the model folder (expected a Hugging Face model folder)`, { file: tjPath, key: 'model.path' });
  }
  const cfgPath = join(modelDir, 'tokenizer_config.json');
  let tj: object;
  let tc: Record<string, unknown> = {};
  try {
    tj = JSON.parse(readFileSync(tjPath, 'utf8')) as object;
    if (existsSync(cfgPath)) tc = JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>;
  } catch (e) {
    throw new InputError(`cannot parse tokenizer files: ${(e as Error).message}`, { file: modelDir });
  }
  const tok = new Tokenizer(tj, tc);
  const idOf = (key: string): number | null => {
    const s = tokenString(tc[key]);
    if (s === null) return null;
    return tok.token_to_id(s) ?? null;
  };
  const bosToken = tokenString(tc.bos_token);
  const eosToken = tokenString(tc.eos_token);
  const eosId = idOf('eos_token');
  if (eosId === null) throw new InputError('tokenizer_config.json names no eos_token found in the vocabulary', { file: cfgPath });
  const rawTemplate = tc.chat_template;
  const templateText = typeof rawTemplate === 'string' ? rawTemplate : null;
  const template = templateText ? new Template(templateText) : null;
  return {
    encode: (text, opts) => tok.encode(text, { add_special_tokens: opts?.addSpecialTokens ?? true }).ids,
    decode: (ids) => tok.decode([...ids], { skip_special_tokens: false }),
    bosId: idOf('bos_token'),
    eosId,
    padId: idOf('pad_token'),
    hasChatTemplate: template !== null,
    applyChatTemplate(messages: ChatMessage[], opts) {
      if (!template) throw new Error('tokenizer has no chat template');
      return template.render({
        messages,
        add_generation_prompt: opts?.addGenerationPrompt ?? false,
        bos_token: bosToken ?? '',
        eos_token: eosToken ?? '',
      });
    },
  };
}
