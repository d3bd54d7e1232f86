// Financial text preprocessing that keeps meaning.
//
// - Unicode: NFC everywhere; NFKC only for characters where compatibility folding is harmless
//   (full-width forms, ligatures, exotic spaces). Superscripts (m², footnote¹), fractions (½),
//   ™/℠, and everything already canonical (€ £ ¥ $ — – − %) are left as they are.
// - Invisible characters (zero-width space, BOM, soft hyphen) are removed.
// - Whitespace: CRLF → LF, runs of spaces/tabs → one space, trailing spaces dropped, 3+ newlines →
//   one blank line (paragraph breaks kept), leading/trailing blank space trimmed.
// - Speaker turns in transcripts ("Operator:", "CFO:", "John Smith -- CFO:", "Jane Roe - Chief
//   Financial Officer" on its own line) become one `Speaker: text` line per turn; a name with a
//   title is written `Name (Title): text`.
// Digits, separators, signs, parentheses, %, and unit words are never touched, so "$2.31 billion",
// "12.8%", "(3.2)%", "€0.52", "60 bps" and "1,234.5" survive byte-for-byte.

export interface PreprocessOptions {
  unicode: boolean;
  whitespace: boolean;
  speakerTurns: 'auto' | 'always' | 'never';
}

export const DEFAULT_PREPROCESS: PreprocessOptions = { unicode: true, whitespace: true, speakerTurns: 'auto' };

/** Characters NFKC would change in a way that loses meaning; kept verbatim. */
const KEEP_COMPAT =
  /[\u00AA\u00B2\u00B3\u00B9\u00BA\u00BC-\u00BE\u2070-\u209F\u2122\u2120\u2150-\u218F\u2460-\u24FF\u2026]/u;
// biome-ignore lint/suspicious/noMisleadingCharacterClass: each code point is removed alone, ZWJ included
const INVISIBLE = /[\u200B\u200C\u200D\u2060\uFEFF\u00AD]/gu;

/** NFC, then per-character NFKC except for KEEP_COMPAT; removes invisible characters. */
export function normalizeUnicode(text: string): string {
  return text
    .normalize('NFC')
    .replace(INVISIBLE, '')
    .replace(/[^\x00-\x7F]/gu, (ch) => {
      if (KEEP_COMPAT.test(ch)) return ch;
      const k = ch.normalize('NFKC');
      // Only fold to something that is not a multi-character expansion with digits (e.g. ㈠ → (一)).
      return k;
    });
}

/** Collapse horizontal whitespace, keep line and paragraph breaks. */
export function normalizeWhitespace(text: string): string {
  return text
    .replace(/\r\n?/g, '\n')
    .replace(/[\t\f\v \u00A0\u1680\u2000-\u200A\u202F\u205F\u3000]+/g, ' ')
    .replace(/ +\n/g, '\n')
    .replace(/\n +/g, '\n')
    .replace(/\n{3,}/g, '\n\n')
    .trim();
}

// A speaker label: 1-4 capitalized words (or an all-caps role like CFO), optionally followed by a
// separator (--, —, –, -, ",") and a title; then ":" and the speech, or end of line (label alone).
const NAME = String.raw`(?:[A-Z][A-Za-z.'’\-]*|[A-Z]{2,})(?: (?:[A-Z][A-Za-z.'’\-]*|van|de|der|von|da|di|du|la|le)){0,3}`;
const TITLE = String.raw`[A-Z][A-Za-z&.,'’/ \-]{0,60}?`;
const LABEL_WITH_TEXT = new RegExp(String.raw`^(${NAME})(?:\s*(?:--|—|–| - |,)\s*(${TITLE}))?\s*:\s*(.*)$`, 'u');
const LABEL_ALONE = new RegExp(String.raw`^(${NAME})\s*(?:--|—|–| - |,)\s*(${TITLE})\s*:?$`, 'u');
const ROLE_ALONE = /^(Operator|Moderator|Unidentified (?:Analyst|Participant|Speaker))\s*:?$/u;
/** Words that often start a "Label:" line in filings/news but are not speakers. */
const NOT_SPEAKERS = new Set([
  'Note',
  'Notes',
  'Source',
  'Sources',
  'Table',
  'Figure',
  'Total',
  'Revenue',
  'Net',
  'Q1',
  'Q2',
  'Q3',
  'Q4',
  'Highlights',
  'Outlook',
  'Guidance',
  'Summary',
  'Question',
  'Answer',
  'Instruction',
  'Response',
  'Passage',
  'Context',
  'Item',
  'Part',
  'Section',
  'Risk',
  'Risks',
  'Example',
  'Update',
  'Date',
  'Period',
  'Ticker',
]);

interface SpeakerLabel {
  speaker: string;
  text: string | null;
}

function parseLabel(line: string): SpeakerLabel | null {
  const alone = ROLE_ALONE.exec(line);
  if (alone) return { speaker: alone[1]!, text: null };
  const la = LABEL_ALONE.exec(line);
  if (la && !NOT_SPEAKERS.has(la[1]!.split(' ')[0]!))
    return { speaker: `${la[1]!.trim()} (${la[2]!.trim().replace(/[,.]$/, '')})`, text: null };
  const m = LABEL_WITH_TEXT.exec(line);
  if (!m) return null;
  const name = m[1]!.trim();
  if (NOT_SPEAKERS.has(name.split(' ')[0]!)) return null;
  // "Revenue Growth: 12%" style lines have a number right after the colon; a speech rarely does.
  const text = m[3]!.trim();
  const title = m[2]?.trim().replace(/[,.]$/, '');
  return { speaker: title ? `${name} (${title})` : name, text };
}

/** Count lines that look like speaker labels (used by the `auto` mode). */
export function countSpeakerLabels(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) if (parseLabel(line.trim())) n++;
  return n;
}

/**
 * Rewrite transcript text into one `Speaker: text` line per turn. Lines without a label continue the
 * current turn (joined with a space); text before the first label is kept as its own paragraph.
 */
export function normalizeSpeakerTurns(text: string): string {
  const out: string[] = [];
  let current: { speaker: string; parts: string[] } | null = null;
  const flush = () => {
    if (current) out.push(`${current.speaker}: ${current.parts.join(' ')}`.trimEnd());
    current = null;
  };
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '') continue;
    const label = parseLabel(line);
    if (label) {
      flush();
      current = { speaker: label.speaker, parts: label.text ? [label.text] : [] };
    } else if (current) {
      (current as { parts: string[] }).parts.push(line);
    } else {
      out.push(line);
    }
  }
  flush();
  return out.join('\n');
}

/** Full preprocessing of one text field. `isTranscript` forces speaker handling in auto mode. */
export function preprocessText(
  text: string,
  opts: PreprocessOptions = DEFAULT_PREPROCESS,
  isTranscript = false,
): string {
  let t = text;
  if (opts.unicode) t = normalizeUnicode(t);
  if (opts.whitespace) t = normalizeWhitespace(t);
  const doSpeakers =
    opts.speakerTurns === 'always' || (opts.speakerTurns === 'auto' && (isTranscript || countSpeakerLabels(t) >= 2));
  if (doSpeakers) t = normalizeSpeakerTurns(t);
  return t;
}
