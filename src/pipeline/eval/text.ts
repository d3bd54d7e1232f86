// Shared token helpers for the lexicon-based financial metrics: rouge-score tokenization with
// Porter stemming, and matching of (possibly multi-word) stemmed phrases.
import { porterStem } from './porter.js';
import { rougeTokenize } from './rouge.js';

/** rouge-score tokens, all stemmed (short words too, so lexicon entries match uniformly). */
export function stemTokens(text: string): string[] {
  return rougeTokenize(text, false).map((t) => porterStem(t));
}

export function stemPhrase(phrase: string): string[] {
  return stemTokens(phrase);
}

/** Start offsets of every occurrence of `phrase` (stemmed tokens) in `tokens`. */
export function findPhrase(tokens: string[], phrase: string[]): number[] {
  const hits: number[] = [];
  if (phrase.length === 0) return hits;
  outer: for (let i = 0; i + phrase.length <= tokens.length; i++) {
    for (let j = 0; j < phrase.length; j++) if (tokens[i + j] !== phrase[j]) continue outer;
    hits.push(i);
  }
  return hits;
}
