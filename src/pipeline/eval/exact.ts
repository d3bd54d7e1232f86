// Exact match after normalization (SQuAD-style, adapted so numbers survive):
// Unicode NFKC; lowercase; thousands separators inside numbers dropped ("1,200" -> "1200"); every
// character that is not a letter, digit or whitespace removed, except a '.' between two digits
// (so "1.2" stays "1.2" and does not become "12"); the articles a/an/the removed; whitespace
// collapsed and trimmed.

export function normalizeAnswer(text: string): string {
  let s = text.normalize('NFKC').toLowerCase();
  s = s.replace(/(\d),(?=\d{3}(?!\d))/g, '$1');
  s = s.replace(/(\d)\.(?=\d)/g, '$1\u0001');
  s = s.replace(/[^\p{L}\p{N}\s\u0001]/gu, ' ');
  s = s.replace(/\u0001/g, '.');
  s = s.replace(/\b(a|an|the)\b/g, ' ');
  return s.split(/\s+/).filter(Boolean).join(' ');
}

/** 1 when prediction and reference are equal after normalizeAnswer, else 0. */
export function exactMatch(prediction: string, reference: string): number {
  return normalizeAnswer(prediction) === normalizeAnswer(reference) ? 1 : 0;
}
