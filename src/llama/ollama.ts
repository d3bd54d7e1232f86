// An Ollama Modelfile for an exported GGUF: FROM the file, the TEMPLATE (Go text/template) translated
// from the model's Jinja chat template, and the stop tokens.
//
// Jinja cannot be translated in general, so the template is measured instead: it is rendered for an
// empty chat, a one-message chat per role and the generation prompt, which gives each role's text
// before and after its content. Those pieces are assembled into a `range .Messages` template, and
// the translation is only used when it reproduces the Jinja rendering of a multi-turn test chat
// exactly (templates that merge the system prompt into the first user turn, or number turns, do not
// pass, and the Modelfile then has no TEMPLATE line). BOS is left out: llama.cpp adds it itself when
// the file says tokenizer.ggml.add_bos_token.
import type { ChatMessage, LlamaTokenizer } from './tokenizer.js';

export interface RoleWrap {
  before: string;
  after: string;
}

export interface ChatTemplatePieces {
  /** What an empty chat renders to (typically BOS, or nothing). */
  start: string;
  roles: Record<'system' | 'user' | 'assistant', RoleWrap>;
  generationPrompt: string;
}

const MARK = '\u0001content\u0001';
const ROLES = ['system', 'user', 'assistant'] as const;

/** A chat that exercises every role, several turns and text that needs no escaping. */
export const PROBE_CHAT: ChatMessage[] = [
  { role: 'system', content: 'You are a careful financial analyst.' },
  { role: 'user', content: 'What was Q3 revenue?' },
  { role: 'assistant', content: 'Revenue was $4.5bn, up 12%.' },
  { role: 'user', content: 'And the margin?' },
];

function stripPrefix(s: string, prefix: string): string | null {
  return s.startsWith(prefix) ? s.slice(prefix.length) : null;
}

/** The per-role pieces of `tok`'s chat template, or null when it is not a plain per-message wrap. */
export function chatTemplatePieces(tok: LlamaTokenizer): ChatTemplatePieces | null {
  try {
    const start = tok.applyChatTemplate([]);
    const roles = {} as ChatTemplatePieces['roles'];
    for (const role of ROLES) {
      const one = stripPrefix(tok.applyChatTemplate([{ role, content: MARK }]), start);
      const parts = one?.split(MARK);
      if (parts?.length !== 2) return null;
      roles[role] = { before: parts[0]!, after: parts[1]! };
    }
    const generationPrompt = stripPrefix(tok.applyChatTemplate([], { addGenerationPrompt: true }), start);
    if (generationPrompt === null) return null;
    return { start, roles, generationPrompt };
  } catch {
    return null;
  }
}

/** Renders `messages` the way the Go template built from `pieces` does (start included). */
export function renderPieces(
  p: ChatTemplatePieces,
  messages: readonly ChatMessage[],
  addGenerationPrompt: boolean,
): string {
  let s = p.start;
  for (const m of messages) {
    const w = p.roles[m.role as keyof ChatTemplatePieces['roles']];
    if (!w) throw new RangeError(`role ${m.role}`);
    s += w.before + m.content + w.after;
  }
  return addGenerationPrompt ? s + p.generationPrompt : s;
}

/** A Go template string literal body: Go text/template copies text outside {{ }} verbatim. */
function goText(s: string): string {
  // "{{" in literal text would open an action: emit it through a string constant instead.
  return s.split('{{').join('{{ "{{" }}');
}

/**
 * The Go template for Ollama: `start` minus a leading BOS (llama.cpp adds BOS), each message wrapped
 * by role, then the generation prompt (Ollama always renders the prompt for the next answer).
 */
export function goTemplate(p: ChatTemplatePieces, bosText: string | null): string {
  const start = bosText && p.start.startsWith(bosText) ? p.start.slice(bosText.length) : p.start;
  const branch = (role: (typeof ROLES)[number]) =>
    `${goText(p.roles[role].before)}{{ .Content }}${goText(p.roles[role].after)}`;
  return `${goText(start)}{{ range .Messages }}{{ if eq .Role "system" }}${branch('system')}{{ else if eq .Role "user" }}${branch('user')}{{ else if eq .Role "assistant" }}${branch('assistant')}{{ end }}{{ end }}${goText(p.generationPrompt)}`;
}

export interface Modelfile {
  text: string;
  /** Null when the chat template could not be translated (or the model has none). */
  template: string | null;
  stops: string[];
  /** Why there is no TEMPLATE, for the user. */
  note: string | null;
}

/** The Modelfile for `ggufName` (a path relative to the Modelfile's folder). */
export function buildModelfile(
  ggufName: string,
  tok: LlamaTokenizer,
  bosText: string | null,
  eosText: string,
): Modelfile {
  const stops = new Set<string>([eosText]);
  let template: string | null = null;
  let note: string | null = null;
  if (!tok.hasChatTemplate) {
    note = 'the model has no chat template';
  } else {
    const pieces = chatTemplatePieces(tok);
    const matches =
      pieces !== null &&
      [false, true].every(
        (gen) =>
          renderPieces(pieces, PROBE_CHAT, gen) === tok.applyChatTemplate(PROBE_CHAT, { addGenerationPrompt: gen }),
      );
    if (pieces && matches) {
      template = goTemplate(pieces, bosText);
      // The text that closes an assistant turn ends the answer (e.g. <|eot_id|>, <|im_end|>).
      const end = pieces.roles.assistant.after.trim();
      if (end) stops.add(end);
    } else {
      note = 'the chat template is not a plain per-message wrap; write TEMPLATE by hand';
    }
  }
  const lines = [`FROM ./${ggufName}`];
  if (template !== null) lines.push(`TEMPLATE """${template}"""`);
  for (const s of stops) lines.push(`PARAMETER stop ${JSON.stringify(s)}`);
  return { text: `${lines.join('\n')}\n`, template, stops: [...stops], note };
}
