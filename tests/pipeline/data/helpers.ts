import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Template } from '@huggingface/jinja';
import { LlamaTokenizer } from '../../../src/llama/tokenizer.js';
import { loadConfig, type ResolvedConfig } from '../../../src/pipeline/config.js';
import type { ChatMessage, TextTokenizer } from '../../../src/pipeline/data/types.js';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const TINY_MODEL = join(ROOT, 'tests/fixtures/reference/gqa-f32/model');

/** The tiny BPE tokenizer of the reference fixture (BOS 1 added by its post-processor, EOS 2). */
export const tinyTokenizerInstance: LlamaTokenizer = await LlamaTokenizer.load(TINY_MODEL);

export function tinyTokenizer(): TextTokenizer {
  return tinyTokenizerInstance;
}

/** The tiny tokenizer plus a small Llama-3-like chat template. */
export function tinyChatTokenizer(): TextTokenizer {
  const base = tinyTokenizerInstance;
  const tpl = new Template(
    '{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}',
  );
  return {
    bosId: base.bosId,
    eosId: base.eosId,
    padId: base.padId,
    encode: (text, opts) => base.encode(text, opts),
    decode: (ids) => base.decode(ids),
    hasChatTemplate: true,
    applyChatTemplate: (messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }) =>
      tpl.render({ messages, add_generation_prompt: opts?.addGenerationPrompt ?? false, bos_token: '<s>' }),
  };
}

export function tempDir(): { dir: string; write(rel: string, text: string | Uint8Array): string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'finllm-pipeline-'));
  return {
    dir,
    write(rel, text) {
      const p = join(dir, rel);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, text);
      return p;
    },
    cleanup() {
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export function jsonl(rows: unknown[]): string {
  return rows.map((r) => JSON.stringify(r)).join('\n') + '\n';
}

/**
 * configs/tiny-sample.yaml training on `train` alone (no validation file), sequences up to 1024
 * tokens, relative paths resolved from `dir`; `extra` adds `--set` values or overrides these.
 */
export function dataConfig(dir: string, train: string, extra: string[] = []): ResolvedConfig {
  return loadConfig({
    file: join(ROOT, 'configs/tiny-sample.yaml'),
    sets: [`data.train=${train}`, 'data.val=null', 'data.max_seq_len=1024', ...extra],
    cwd: dir,
  });
}
