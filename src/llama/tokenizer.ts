// The model's tokenizer, loaded from a HF folder (`tokenizer.json` + `tokenizer_config.json`) via
// @huggingface/tokenizers, so encoding matches HF's fast tokenizer, post-processor (BOS) included.
// Chat templates are rendered with @huggingface/jinja, within limits (chat-template.ts).
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';
import { InputError, readFailure } from '../errors.js';
import { readJsonFile, readJsonFileIfExists } from '../io/json.js';
import {
  ChatTemplate,
  type ChatTemplateLimit,
  ChatTemplateLimitError,
  type ChatTemplateLimits,
} from './chat-template.js';
import { loadLlamaConfig } from './config.js';

/** No index signature on purpose: the data stage's own ChatMessage type must be assignable. */
export interface ChatMessage {
  role: string;
  content: string;
}

export interface ChatTemplateOptions {
  /** Append the header that makes the model answer as the assistant. */
  addGenerationPrompt?: boolean;
  /** Extra variables passed to the template (e.g. `tools`, `date_string`). */
  variables?: Record<string, unknown>;
  /** Size and time limits of the render (default DEFAULT_CHAT_TEMPLATE_LIMITS). */
  limits?: ChatTemplateLimits;
}

/**
 * A chat template that failed to render. The message names the template's file (for the CLI);
 * `reason` is the failure alone (for a server's clients, who have no business with its paths);
 * `limit` is set when a size or time limit stopped it.
 */
export class ChatTemplateError extends InputError {
  override name = 'ChatTemplateError';
  constructor(
    readonly reason: string,
    readonly limit: ChatTemplateLimit | null,
    file: string,
  ) {
    super(`chat template failed to render: ${reason}`, { file, key: 'chat_template' });
  }
}

const SPECIAL_TOKEN_KEYS = ['bos_token', 'eos_token', 'pad_token', 'unk_token'] as const;
type SpecialTokenKey = (typeof SPECIAL_TOKEN_KEYS)[number];

/** A special token in tokenizer_config.json is either a string or a serialised AddedToken. */
function specialTokenText(value: unknown): string | null {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object' && typeof (value as { content?: unknown }).content === 'string') {
    return (value as { content: string }).content;
  }
  return null;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** Picks the template HF would use: a plain string, or the one named "default" in a list/map. */
function selectChatTemplate(value: unknown, file: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  const named: [string, unknown][] = Array.isArray(value)
    ? value.map((t) => [String((t as { name?: unknown }).name), (t as { template?: unknown }).template])
    : isObject(value)
      ? Object.entries(value)
      : [];
  const chosen = named.find(([name]) => name === 'default');
  if (!chosen || typeof chosen[1] !== 'string') {
    throw new InputError(
      `chat_template has no string template named "default" (found: ${named.map(([n]) => n).join(', ') || 'none'})`,
      { file, key: 'chat_template' },
    );
  }
  return chosen[1];
}

/**
 * The tokenizer.json model section finllm runs: BPE (SentencePiece-style with byte fallback, or
 * byte-level as Llama 3), with a non-empty vocabulary of non-negative integer ids. Anything else
 * (WordPiece, Unigram, an empty vocabulary) would encode every text to <unk> or to made-up ids.
 */
function checkTokenizerModel(model: Record<string, unknown>, file: string): void {
  if (model['type'] !== 'BPE') {
    throw new InputError(
      `model type ${model['type'] === undefined ? '(none)' : JSON.stringify(model['type'])} is not supported: finllm runs BPE tokenizers (Llama's SentencePiece-style or byte-level)`,
      { file, key: 'model.type' },
    );
  }
  const vocab = model['vocab'];
  if (!isObject(vocab))
    throw new InputError('expected the BPE vocabulary, an object of token → id', { file, key: 'model.vocab' });
  const entries = Object.entries(vocab);
  if (entries.length === 0)
    throw new InputError('the vocabulary is empty: every text would encode to unknown tokens', {
      file,
      key: 'model.vocab',
    });
  const bad = entries.find(([, id]) => !(typeof id === 'number' && Number.isSafeInteger(id) && id >= 0));
  if (bad)
    throw new InputError(
      `token ${JSON.stringify(bad[0])} has id ${JSON.stringify(bad[1])}, expected a non-negative integer`,
      { file, key: 'model.vocab' },
    );
  if (!Array.isArray(model['merges']))
    throw new InputError('expected the BPE merges, a list', { file, key: 'model.merges' });
}

export class LlamaTokenizer {
  readonly bosId: number | null;
  /** Required: fine-tuning ends every example with EOS. */
  readonly eosId: number;
  readonly padId: number | null;
  readonly unkId: number | null;
  /** One more than the largest token id, added tokens included (HF's `len(tokenizer)`). */
  readonly vocabSize: number;
  /**
   * The longest token's text, in UTF-16 code units (added tokens included). Each token covers at
   * most this much of the (normalized) text: a byte-level token of n byte-characters stands for n
   * bytes, which are at most n code units, and a byte-fallback token for one byte. So a text of L
   * code units has at least L / maxTokenChars tokens, whatever tokenizing it would give, when the
   * normalizer does not shorten text (Llama's prepend and replace a space by '▁'; Llama 3 has none).
   */
  readonly maxTokenChars: number;
  private readonly specialTokens: Record<SpecialTokenKey, string | null>;
  private readonly chatTemplate: ChatTemplate | null;
  /** The chat template's Jinja source (null when the tokenizer has none); GGUF export writes it. */
  readonly chatTemplateSource: string | null;

  private constructor(
    private readonly tokenizer: Tokenizer,
    config: Record<string, unknown>,
    chatTemplateSource: string | null,
    /** Where the template came from, for error messages. */
    private readonly chatTemplateFile: string,
    configFile: string,
  ) {
    const vocab = tokenizer.get_vocab(true);
    // Loops, not Math.max(...spread): a 128k-entry vocabulary overflows the argument list.
    let maxId = -1;
    let longest = 1;
    for (const [piece, id] of vocab) {
      maxId = Math.max(maxId, id);
      longest = Math.max(longest, piece.length);
    }
    this.vocabSize = maxId + 1;
    this.maxTokenChars = longest;
    const specials = {} as Record<SpecialTokenKey, string | null>;
    const ids = {} as Record<SpecialTokenKey, number | null>;
    for (const key of SPECIAL_TOKEN_KEYS) {
      const text = specialTokenText(config[key]);
      specials[key] = text;
      if (text === null) {
        ids[key] = null;
        continue;
      }
      const id = tokenizer.token_to_id(text);
      if (id === undefined) {
        throw new InputError(`special token ${JSON.stringify(text)} is not in the tokenizer's vocabulary`, {
          file: configFile,
          key,
        });
      }
      ids[key] = id;
    }
    this.specialTokens = specials;
    if (ids.eos_token === null) {
      throw new InputError('no EOS token defined; fine-tuning needs one to end examples', {
        file: configFile,
        key: 'eos_token',
      });
    }
    this.bosId = ids.bos_token;
    this.eosId = ids.eos_token;
    this.padId = ids.pad_token;
    this.unkId = ids.unk_token;
    let template: ChatTemplate | null = null;
    if (chatTemplateSource !== null) {
      try {
        template = new ChatTemplate(chatTemplateSource);
      } catch (err) {
        throw new InputError(`chat template does not parse: ${(err as Error).message}`, {
          file: chatTemplateFile,
          key: 'chat_template',
        });
      }
    }
    this.chatTemplate = template;
    this.chatTemplateSource = chatTemplateSource;
  }

  /**
   * Loads a tokenizer folder. A `chat_template.jinja` file (where recent transformers save it)
   * takes precedence over `chat_template` in tokenizer_config.json, as in HF; `chatTemplateFile`
   * (a Jinja file) overrides both.
   */
  static async load(dir: string, opts: { chatTemplateFile?: string } = {}): Promise<LlamaTokenizer> {
    const tokenizer = await LlamaTokenizer.loadFolder(dir, opts);
    // Beside a model's config.json every id must be a row of its embeddings.
    const modelConfig = join(dir, 'config.json');
    if (existsSync(modelConfig))
      tokenizer.checkFitsVocabulary(
        (await loadLlamaConfig(modelConfig)).vocabSize,
        join(dir, 'tokenizer.json'),
        modelConfig,
      );
    return tokenizer;
  }

  private static async loadFolder(dir: string, opts: { chatTemplateFile?: string }): Promise<LlamaTokenizer> {
    const tokenizerFile = join(dir, 'tokenizer.json');
    const configFile = join(dir, 'tokenizer_config.json');
    const tokenizerJson = await readJsonFile(tokenizerFile);
    const config = await readJsonFile(configFile);
    if (!isObject(config)) throw new InputError('expected a JSON object', { file: configFile });
    // Older folders keep special tokens in special_tokens_map.json only; tokenizer_config wins.
    const mapFile = join(dir, 'special_tokens_map.json');
    const specialTokensMap = await readJsonFileIfExists(mapFile);
    if (isObject(specialTokensMap)) {
      for (const key of SPECIAL_TOKEN_KEYS) {
        if (specialTokenText(config[key]) === null && specialTokenText(specialTokensMap[key]) !== null)
          config[key] = specialTokensMap[key];
      }
    }
    const templateFile = opts.chatTemplateFile ?? join(dir, 'chat_template.jinja');
    let templateSource: string | null = null;
    let templateOrigin = configFile;
    try {
      templateSource = await readFile(templateFile, 'utf8');
      templateOrigin = templateFile;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || opts.chatTemplateFile !== undefined)
        throw readFailure(err, templateFile, 'chat template');
      templateSource = selectChatTemplate(config['chat_template'], configFile);
    }
    return LlamaTokenizer.fromObjects(tokenizerJson, config, {
      tokenizerFile,
      configFile,
      chatTemplate: templateSource,
      chatTemplateFile: templateOrigin,
    });
  }

  /** Builds a tokenizer from already-parsed JSON (file names are only used in error messages). */
  static fromObjects(
    tokenizerJson: unknown,
    config: Record<string, unknown>,
    origin: {
      tokenizerFile?: string;
      configFile?: string;
      chatTemplate?: string | null;
      chatTemplateFile?: string;
    } = {},
  ): LlamaTokenizer {
    const tokenizerFile = origin.tokenizerFile ?? 'tokenizer.json';
    const configFile = origin.configFile ?? 'tokenizer_config.json';
    if (!isObject(tokenizerJson) || !isObject(tokenizerJson['model'])) {
      throw new InputError('expected a tokenizer object with a "model" section', { file: tokenizerFile, key: 'model' });
    }
    checkTokenizerModel(tokenizerJson['model'], tokenizerFile);
    let tokenizer: Tokenizer;
    try {
      tokenizer = new Tokenizer(tokenizerJson, config);
    } catch (err) {
      throw new InputError(`cannot build the tokenizer: ${(err as Error).message}`, { file: tokenizerFile });
    }
    const chatTemplate =
      origin.chatTemplate !== undefined ? origin.chatTemplate : selectChatTemplate(config['chat_template'], configFile);
    return new LlamaTokenizer(tokenizer, config, chatTemplate, origin.chatTemplateFile ?? configFile, configFile);
  }

  /** Refuses a tokenizer with ids the model has no embedding for (ids >= the config's vocab_size). */
  checkFitsVocabulary(modelVocabSize: number, tokenizerFile: string, configFile: string): void {
    if (this.vocabSize <= modelVocabSize) return;
    const outside = [...this.tokenizer.get_vocab(true)]
      .filter(([, id]) => id >= modelVocabSize)
      .sort((a, b) => a[1] - b[1]);
    const shown =
      outside
        .slice(0, 3)
        .map(([t, id]) => `${JSON.stringify(t)} (${id})`)
        .join(', ') + (outside.length > 3 ? `, ... (${outside.length - 3} more)` : '');
    throw new InputError(
      `${outside.length} token id${outside.length === 1 ? ' is' : 's are'} outside the model's vocabulary (vocab_size ${modelVocabSize} in ${configFile}): ${shown}; the tokenizer does not belong to this model`,
      { file: tokenizerFile },
    );
  }

  /** Token ids as HF's `tokenizer(text).input_ids`: special tokens (BOS) added by the post-processor. */
  encode(text: string, options: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: options.addSpecialTokens ?? true }).ids;
  }

  /**
   * Text of `ids`. `cleanUpSpaces: false` turns off the clean-up of spaces before punctuation
   * (" ," → ","), which rewrites text already decoded when a later token arrives: streaming
   * decoders (TextStreamer) need it off so every piece they emit stays a prefix of the whole.
   */
  decode(ids: readonly number[], options: { skipSpecialTokens?: boolean; cleanUpSpaces?: boolean } = {}): string {
    // The tokenizers library throws on an empty list; nothing decodes to nothing.
    if (ids.length === 0) return '';
    return this.tokenizer.decode([...ids], {
      skip_special_tokens: options.skipSpecialTokens ?? false,
      ...(options.cleanUpSpaces !== undefined ? { clean_up_tokenization_spaces: options.cleanUpSpaces } : {}),
    });
  }

  /** The decoder a TextStreamer needs: special tokens dropped, no space clean-up (see decode). */
  streamDecoder(): (ids: readonly number[]) => string {
    return (ids) => this.decode(ids, { skipSpecialTokens: true, cleanUpSpaces: false });
  }

  idToToken(id: number): string | undefined {
    return this.tokenizer.id_to_token(id);
  }

  tokenToId(token: string): number | undefined {
    return this.tokenizer.token_to_id(token);
  }

  get hasChatTemplate(): boolean {
    return this.chatTemplate !== null;
  }

  /** Renders messages with the model's chat template (as HF `apply_chat_template(tokenize=False)`). */
  applyChatTemplate(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): string {
    if (!this.chatTemplate) {
      throw new InputError('this tokenizer has no chat template', {
        file: this.chatTemplateFile,
        key: 'chat_template',
      });
    }
    try {
      return this.chatTemplate.render(
        {
          ...options.variables,
          messages,
          add_generation_prompt: options.addGenerationPrompt ?? false,
          bos_token: this.specialTokens.bos_token ?? '',
          eos_token: this.specialTokens.eos_token ?? '',
          pad_token: this.specialTokens.pad_token ?? '',
          unk_token: this.specialTokens.unk_token ?? '',
        },
        options.limits,
      );
    } catch (err) {
      throw new ChatTemplateError(
        (err as Error).message,
        err instanceof ChatTemplateLimitError ? err.limit : null,
        this.chatTemplateFile,
      );
    }
  }

  /**
   * Renders and tokenizes a conversation. Special tokens are not added again, because the template
   * already writes BOS itself (what HF `apply_chat_template(tokenize=True)` does).
   */
  encodeChat(messages: readonly ChatMessage[], options: ChatTemplateOptions = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, options), { addSpecialTokens: false });
  }
}
