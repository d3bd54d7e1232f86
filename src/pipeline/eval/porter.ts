// Porter stemmer as NLTK's `PorterStemmer()` runs it in its default NLTK_EXTENSIONS mode, which is
// what Google's `rouge-score` calls when `use_stemmer=True`. Written from M. F. Porter, "An algorithm
// for suffix stripping" (1980) plus the documented NLTK departures from it:
//  - a small pool of irregular forms (skies->sky, dying->die, ...) is looked up first;
//  - words of length <= 2 are returned unchanged;
//  - step 1a: a 4-letter word ending in "ies" becomes "...ie" (ties -> tie);
//  - step 1b: "ied" -> "ie" for 4-letter words, "i" otherwise;
//  - step 1c: y -> i only when y follows a consonant that is not the first letter (happy -> happi,
//    enjoy -> enjoy, spy -> spi);
//  - step 2: "alli" -> "al" then step 2 again; "bli" -> "ble" (not "abli"); extra "fulli" -> "ful"
//    and "logi" -> "log";
//  - condition *o also holds for a 2-letter vowel+consonant stem.
// As in the reference, a rule list stops at the first rule whose suffix matches, whether or not its
// condition holds. Verified against NLTK's output in tests/pipeline/eval/porter.test.ts.

const IRREGULAR = new Map<string, string>(
  Object.entries({
    sky: 'sky',
    skies: 'sky',
    dying: 'die',
    lying: 'lie',
    tying: 'tie',
    news: 'news',
    innings: 'inning',
    inning: 'inning',
    outings: 'outing',
    outing: 'outing',
    cannings: 'canning',
    canning: 'canning',
    howe: 'howe',
    proceed: 'proceed',
    exceed: 'exceed',
    succeed: 'succeed',
  }),
);

function isConsonant(w: string, i: number): boolean {
  const c = w[i];
  if (c === 'a' || c === 'e' || c === 'i' || c === 'o' || c === 'u') return false;
  if (c === 'y') return i === 0 ? true : !isConsonant(w, i - 1);
  return true;
}

/** Porter's measure m: the number of vowel-run -> consonant-run transitions. */
function measure(stem: string): number {
  let m = 0;
  for (let i = 1; i < stem.length; i++) {
    if (!isConsonant(stem, i - 1) && isConsonant(stem, i)) m++;
  }
  return m;
}

function containsVowel(stem: string): boolean {
  for (let i = 0; i < stem.length; i++) if (!isConsonant(stem, i)) return true;
  return false;
}

function endsDoubleConsonant(w: string): boolean {
  return w.length >= 2 && w[w.length - 1] === w[w.length - 2] && isConsonant(w, w.length - 1);
}

function endsCvc(w: string): boolean {
  const n = w.length;
  if (n >= 3 && isConsonant(w, n - 3) && !isConsonant(w, n - 2) && isConsonant(w, n - 1) && !'wxy'.includes(w[n - 1]!))
    return true;
  return n === 2 && !isConsonant(w, 0) && isConsonant(w, 1);
}

type Rule = [suffix: string, replacement: string, cond: ((stem: string) => boolean) | null];
const DOUBLE = '*d';

function applyRules(word: string, rules: Rule[]): string {
  for (const [suffix, replacement, cond] of rules) {
    if (suffix === DOUBLE) {
      if (endsDoubleConsonant(word)) {
        const stem = word.slice(0, -2);
        return cond === null || cond(stem) ? stem + replacement : word;
      }
      continue;
    }
    if (word.endsWith(suffix)) {
      const stem = suffix.length === 0 ? word : word.slice(0, -suffix.length);
      return cond === null || cond(stem) ? stem + replacement : word;
    }
  }
  return word;
}

const mGt0 = (s: string): boolean => measure(s) > 0;
const mGt1 = (s: string): boolean => measure(s) > 1;

function step1a(w: string): string {
  if (w.endsWith('ies') && w.length === 4) return w.slice(0, -3) + 'ie';
  return applyRules(w, [
    ['sses', 'ss', null],
    ['ies', 'i', null],
    ['ss', 'ss', null],
    ['s', '', null],
  ]);
}

function step1b(w: string): string {
  if (w.endsWith('ied')) return w.slice(0, -3) + (w.length === 4 ? 'ie' : 'i');
  if (w.endsWith('eed')) {
    const stem = w.slice(0, -3);
    return measure(stem) > 0 ? stem + 'ee' : w;
  }
  let inter: string | undefined;
  for (const suffix of ['ed', 'ing']) {
    if (w.endsWith(suffix)) {
      const s = w.slice(0, -suffix.length);
      if (containsVowel(s)) {
        inter = s;
        break;
      }
    }
  }
  if (inter === undefined) return w;
  const last = inter[inter.length - 1] ?? '';
  return applyRules(inter, [
    ['at', 'ate', null],
    ['bl', 'ble', null],
    ['iz', 'ize', null],
    [DOUBLE, last, () => !'lsz'.includes(last)],
    ['', 'e', (s) => measure(s) === 1 && endsCvc(s)],
  ]);
}

function step1c(w: string): string {
  return applyRules(w, [['y', 'i', (s) => s.length > 1 && isConsonant(s, s.length - 1)]]);
}

function step2(w: string): string {
  if (w.endsWith('alli') && measure(w.slice(0, -4)) > 0) return step2(w.slice(0, -4) + 'al');
  return applyRules(w, [
    ['ational', 'ate', mGt0],
    ['tional', 'tion', mGt0],
    ['enci', 'ence', mGt0],
    ['anci', 'ance', mGt0],
    ['izer', 'ize', mGt0],
    ['bli', 'ble', mGt0],
    ['alli', 'al', mGt0],
    ['entli', 'ent', mGt0],
    ['eli', 'e', mGt0],
    ['ousli', 'ous', mGt0],
    ['ization', 'ize', mGt0],
    ['ation', 'ate', mGt0],
    ['ator', 'ate', mGt0],
    ['alism', 'al', mGt0],
    ['iveness', 'ive', mGt0],
    ['fulness', 'ful', mGt0],
    ['ousness', 'ous', mGt0],
    ['aliti', 'al', mGt0],
    ['iviti', 'ive', mGt0],
    ['biliti', 'ble', mGt0],
    ['fulli', 'ful', mGt0],
    // NLTK: the measure for "logi" is taken on the word less its last three letters.
    ['logi', 'log', () => measure(w.slice(0, -3)) > 0],
  ]);
}

function step3(w: string): string {
  return applyRules(w, [
    ['icate', 'ic', mGt0],
    ['ative', '', mGt0],
    ['alize', 'al', mGt0],
    ['iciti', 'ic', mGt0],
    ['ical', 'ic', mGt0],
    ['ful', '', mGt0],
    ['ness', '', mGt0],
  ]);
}

function step4(w: string): string {
  return applyRules(w, [
    ['al', '', mGt1],
    ['ance', '', mGt1],
    ['ence', '', mGt1],
    ['er', '', mGt1],
    ['ic', '', mGt1],
    ['able', '', mGt1],
    ['ible', '', mGt1],
    ['ant', '', mGt1],
    ['ement', '', mGt1],
    ['ment', '', mGt1],
    ['ent', '', mGt1],
    ['ion', '', (s) => measure(s) > 1 && (s.endsWith('s') || s.endsWith('t'))],
    ['ou', '', mGt1],
    ['ism', '', mGt1],
    ['ate', '', mGt1],
    ['iti', '', mGt1],
    ['ous', '', mGt1],
    ['ive', '', mGt1],
    ['ize', '', mGt1],
  ]);
}

function step5a(w: string): string {
  if (!w.endsWith('e')) return w;
  const stem = w.slice(0, -1);
  const m = measure(stem);
  if (m > 1) return stem;
  if (m === 1 && !endsCvc(stem)) return stem;
  return w;
}

function step5b(w: string): string {
  return applyRules(w, [['ll', 'l', () => measure(w.slice(0, -1)) > 1]]);
}

/** Stem one word exactly as `nltk.stem.porter.PorterStemmer().stem(word)` does. */
export function porterStem(word: string): string {
  const lower = word.toLowerCase();
  const irregular = IRREGULAR.get(word);
  if (irregular !== undefined) return irregular;
  if (word.length <= 2) return lower;
  let s = step1a(lower);
  s = step1b(s);
  s = step1c(s);
  s = step2(s);
  s = step3(s);
  s = step4(s);
  s = step5a(s);
  s = step5b(s);
  return s;
}
