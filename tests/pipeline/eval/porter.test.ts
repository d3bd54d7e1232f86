// Porter stemmer vs NLTK 3.8's PorterStemmer() (NLTK_EXTENSIONS mode, what rouge-score uses):
// stems in reference/eval/porter_reference.json from make_porter_reference.py.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { porterStem } from '../../../src/pipeline/eval/porter.js';

const ref = JSON.parse(
  readFileSync(new URL('../../../reference/eval/porter_reference.json', import.meta.url), 'utf8'),
) as {
  stems: Record<string, string>;
};

describe('porterStem matches NLTK', () => {
  const entries = Object.entries(ref.stems);
  it('has a substantial reference list', () => {
    expect(entries.length).toBeGreaterThan(200);
  });
  it('every reference word', () => {
    const wrong = entries
      .filter(([w, s]) => porterStem(w) !== s)
      .map(([w, s]) => `${w}: got ${porterStem(w)}, nltk ${s}`);
    expect(wrong).toEqual([]);
  });
  it('classic examples from the paper', () => {
    expect(porterStem('caresses')).toBe('caress');
    expect(porterStem('relational')).toBe('relat');
    expect(porterStem('hopping')).toBe('hop');
  });
  it('does not treat Object.prototype names as irregular forms', () => {
    expect(porterStem('constructor')).toBe('constructor');
  });
});
