// Lexicon-based financial sentiment (lexicon and its provenance in lexicon.ts).
// Scoring: text -> stemmed rouge-score tokens; lexicon phrases are matched longest first and a
// token belongs to at most one hit; a hit preceded within three tokens by a negator ("not",
// "no", "without", ...) counts for the other side. score = (pos - neg) / (pos + neg), 0 with no
// hits; label positive if score > 0, negative if < 0, neutral otherwise.
import { NEGATIVE_TERMS, NEGATORS, POSITIVE_TERMS, type SentimentLabel } from './lexicon.js';
import { findPhrase, stemPhrase, stemTokens } from './text.js';

interface Entry {
  tokens: string[];
  polarity: 1 | -1;
}

let entries: Entry[] | undefined;
function lexicon(): Entry[] {
  if (!entries) {
    const seen = new Set<string>();
    const all: Entry[] = [];
    for (const [list, polarity] of [
      [POSITIVE_TERMS, 1],
      [NEGATIVE_TERMS, -1],
    ] as const) {
      for (const phrase of list) {
        const tokens = stemPhrase(phrase);
        const key = tokens.join(' ');
        if (tokens.length === 0 || seen.has(key)) continue;
        seen.add(key);
        all.push({ tokens, polarity });
      }
    }
    all.sort((a, b) => b.tokens.length - a.tokens.length);
    entries = all;
  }
  return entries;
}

const negators = new Set(NEGATORS.flatMap((w) => stemPhrase(w)));

export interface LexiconSentiment {
  positive: number;
  negative: number;
  /** (positive - negative) / (positive + negative), 0 with no hits. */
  score: number;
  label: SentimentLabel;
  /** The phrases that matched, with their final polarity. */
  hits: { phrase: string; polarity: 1 | -1 }[];
}

export function lexiconSentiment(text: string): LexiconSentiment {
  const tokens = stemTokens(text);
  const used = new Array<boolean>(tokens.length).fill(false);
  let positive = 0;
  let negative = 0;
  const hits: LexiconSentiment['hits'] = [];
  for (const e of lexicon()) {
    for (const start of findPhrase(tokens, e.tokens)) {
      let free = true;
      for (let k = start; k < start + e.tokens.length; k++) if (used[k]) free = false;
      if (!free) continue;
      for (let k = start; k < start + e.tokens.length; k++) used[k] = true;
      let polarity = e.polarity;
      for (let k = Math.max(0, start - 3); k < start; k++) {
        if (negators.has(tokens[k]!)) {
          polarity = polarity === 1 ? -1 : 1;
          break;
        }
      }
      if (polarity === 1) positive++;
      else negative++;
      hits.push({ phrase: e.tokens.join(' '), polarity });
    }
  }
  const score = positive + negative > 0 ? (positive - negative) / (positive + negative) : 0;
  const label: SentimentLabel = score > 0 ? 'positive' : score < 0 ? 'negative' : 'neutral';
  return { positive, negative, score, label, hits };
}

/** 1 when the lexicon gives prediction and reference the same label, else 0. */
export function sentimentAgreement(prediction: string, reference: string): number {
  return lexiconSentiment(prediction).label === lexiconSentiment(reference).label ? 1 : 0;
}

/** Accuracy of the lexicon's labels against gold labels (how far to trust sentimentAgreement). */
export function lexiconLabelAccuracy(texts: string[], gold: SentimentLabel[]): number {
  if (texts.length !== gold.length) throw new Error('lexiconLabelAccuracy: length mismatch');
  if (texts.length === 0) return NaN;
  let ok = 0;
  texts.forEach((t, i) => {
    if (lexiconSentiment(t).label === gold[i]) ok++;
  });
  return ok / texts.length;
}
