// ROUGE / BLEU / chrF / exact match.
// No rouge-score or sacrebleu could be installed here (no PyPI access), so expected values are
// (a) published outputs of those packages for the same inputs -- the rouge-score README example,
// the sacreBLEU README corpus_bleu example, the chrF metric card values computed with sacrebleu --
// and (b) small cases worked out by hand from the documented algorithms (derivations inline).
import { describe, expect, it } from 'vitest';
import { bleuCountsRef, chrfStatsRef, lcsDp } from '../../../reference/eval/text.js';
import { bleuStats, corpusBleu, sentenceBleu, tokenize13a } from '../../../src/pipeline/eval/bleu.js';
import { chrfStats, corpusChrf, sentenceChrf } from '../../../src/pipeline/eval/chrf.js';
import { exactMatch, normalizeAnswer } from '../../../src/pipeline/eval/exact.js';
import { lcsLength, rouge, rougeL, rougeTokenize } from '../../../src/pipeline/eval/rouge.js';
import { testRng } from '../../helpers/index.js';

describe('rouge-score tokenizer', () => {
  it('lowercases, splits on non-alphanumerics and drops empties', () => {
    expect(rougeTokenize("Revenue rose 12% to $1.2B -- Q3's best!")).toEqual([
      'revenue',
      'rose',
      '12',
      'to',
      '1',
      '2b',
      'q3',
      's',
      'best',
    ]);
    expect(rougeTokenize('  ')).toEqual([]);
    expect(rougeTokenize('Éclair café')).toEqual(['clair', 'caf']);
  });
  it('stems only tokens longer than 3 characters ("was" and "has" keep their s)', () => {
    expect(rougeTokenize('The cats were running quickly; it was, it has', true)).toEqual([
      'the',
      'cat',
      'were',
      'run',
      'quickli',
      'it',
      'was',
      'it',
      'has',
    ]);
  });
});

describe('ROUGE', () => {
  it('matches the rouge-score README example', () => {
    // scorer.score('The quick brown fox jumps over the lazy dog', 'The quick brown dog jumps on the log.')
    const r = rouge('The quick brown dog jumps on the log.', 'The quick brown fox jumps over the lazy dog');
    expect(r.rouge1.precision).toBeCloseTo(0.75, 15);
    expect(r.rouge1.recall).toBeCloseTo(0.6666666666666666, 15);
    expect(r.rouge1.f1).toBeCloseTo(0.7058823529411765, 15);
    expect(r.rougeL.precision).toBeCloseTo(0.625, 15);
    expect(r.rougeL.recall).toBeCloseTo(0.5555555555555556, 15);
    expect(r.rougeL.f1).toBeCloseTo(0.5882352941176471, 15);
  });
  it('ROUGE-2 by hand', () => {
    // ref "a b c d" bigrams {ab, bc, cd}; pred "a b d c d": {ab, bd, dc, cd}; overlap ab, cd = 2.
    const r = rouge('a b d c d', 'a b c d');
    expect(r.rouge2.precision).toBeCloseTo(2 / 4, 15);
    expect(r.rouge2.recall).toBeCloseTo(2 / 3, 15);
    expect(r.rouge2.f1).toBeCloseTo((2 * 0.5 * (2 / 3)) / (0.5 + 2 / 3), 15);
  });
  it('clips repeated n-grams', () => {
    // ref "the the cat" (the:2), pred "the the the the" (the:4): overlap 2, P 2/4, R 2/3.
    const r = rouge('the the the the', 'the the cat');
    expect(r.rouge1.precision).toBeCloseTo(0.5, 15);
    expect(r.rouge1.recall).toBeCloseTo(2 / 3, 15);
  });
  it('stemming changes the match', () => {
    const plain = rouge('revenues increased', 'revenue increases');
    const stemmed = rouge('revenues increased', 'revenue increases', { useStemmer: true });
    expect(plain.rouge1.f1).toBe(0);
    expect(stemmed.rouge1.f1).toBe(1);
  });
  it('empty sides give zero', () => {
    expect(rouge('', 'something').rougeL.f1).toBe(0);
    expect(rouge('something', '...').rouge1.f1).toBe(0);
  });
  it('LCS', () => {
    expect(lcsLength(['a', 'b', 'c', 'b', 'd', 'a', 'b'], ['b', 'd', 'c', 'a', 'b', 'a'])).toBe(4);
  });
});

describe('sacrebleu 13a tokenizer', () => {
  it.each([
    ["It wasn't surprising.", "It wasn't surprising ."],
    ['Revenue of $1,200.50 (up 3%)', 'Revenue of $ 1,200.50 ( up 3 % )'],
    ['U.S. sales, 2024-25', 'U . S . sales , 2024 - 25'],
    ['a&amp;b &lt;x&gt; &quot;q&quot;', 'a & b < x > " q "'],
    ['line one-\ncontinued\nnext', 'line onecontinued next'],
    ['pay 1.5x, not 2,5', 'pay 1.5x , not 2,5'],
  ])('%j', (input, expected) => {
    expect(tokenize13a(input)).toBe(expected);
  });
});

describe('BLEU', () => {
  it('matches the sacreBLEU README corpus_bleu example (two reference streams)', () => {
    const refs = [
      ['The dog bit the man.', 'It was not unexpected.', 'The man bit him first.'],
      ['The dog had bit the man.', 'No one was surprised.', 'The man had bitten the dog.'],
    ];
    const sys = ['The dog bit the man.', "It wasn't surprising.", 'The man had just bitten him.'];
    // README: BLEU = 48.53 82.4/50.0/45.5/37.5 (BP = 0.943 ratio = 0.944 hyp_len = 17 ref_len = 18)
    const r = corpusBleu(sys, refs);
    expect(r.score.toFixed(2)).toBe('48.53');
    expect(r.precisions.map((p) => p.toFixed(1))).toEqual(['82.4', '50.0', '45.5', '37.5']);
    expect(r.bp.toFixed(3)).toBe('0.943');
    expect(r.sysLen).toBe(17);
    expect(r.refLen).toBe(18);
  });
  it('exp smoothing by hand', () => {
    // hyp "the cat sat on the mat", ref "the cat is on the mat" (6 tokens each, BP 1).
    // 1-grams 5/6, 2-grams 3/5 (the cat, on the, the mat), 3-grams 1/4 (on the mat), 4-grams 0/3
    // -> exp smoothing: 100 / (2 * 3).
    const r = corpusBleu(['the cat sat on the mat'], [['the cat is on the mat']]);
    expect(r.correct).toEqual([5, 3, 1, 0]);
    expect(r.total).toEqual([6, 5, 4, 3]);
    const expected = ((500 / 6) * 60 * 25 * (100 / 6)) ** (1 / 4);
    expect(r.score).toBeCloseTo(expected, 10);
  });
  it('brevity penalty by hand', () => {
    // hyp "the cat" vs ref "the cat sat down": p1 = 2/2, p2 = 1/1, no 3- or 4-grams in the hyp.
    // corpus_bleu (effective order off): the loop stops at n = 3 leaving p3 = p4 = 0 -> ~0.
    // sentence_bleu (effective order on): exp((ln 100 + ln 100)/2) * exp(1 - 4/2) = 100/e.
    expect(corpusBleu(['the cat'], [['the cat sat down']]).score).toBeLessThan(1e-10);
    expect(sentenceBleu('the cat', ['the cat sat down']).score).toBeCloseTo(100 * Math.exp(-1), 10);
  });
  it('identical text scores 100 and disjoint text 0', () => {
    expect(
      corpusBleu(['Net income rose 5% to $2.1 billion.'], [['Net income rose 5% to $2.1 billion.']]).score,
    ).toBeCloseTo(100, 10);
    expect(corpusBleu(['alpha beta gamma delta'], [['one two three four']]).score).toBe(0);
  });
  it('sums statistics over the corpus rather than averaging sentences', () => {
    const a = bleuStats('the cat sat on the mat', ['the cat is on the mat']);
    const b = bleuStats('a dog', ['a big dog barked']);
    const r = corpusBleu(['the cat sat on the mat', 'a dog'], [['the cat is on the mat', 'a big dog barked']]);
    expect(r.correct).toEqual(a.correct.map((x, i) => x + b.correct[i]!));
    expect(r.sysLen).toBe(8);
    expect(r.refLen).toBe(10);
  });
});

describe('chrF', () => {
  it('matches the sacrebleu-computed chrF metric card values', () => {
    expect(
      sentenceChrf(
        'The relationship between Obama and Netanyahu is not exactly friendly.',
        'The ties between Obama and Netanyahu are not particularly friendly.',
      ),
    ).toBeCloseTo(61.576379378113785, 10);
    expect(
      corpusChrf(
        [
          'The relationship between cats and dogs is not exactly friendly.',
          'a good bookshop is just a genteel black hole that knows how to read.',
        ],
        [
          'The relationship between dogs and cats is not exactly friendly.',
          'A good bookshop is just a genteel Black Hole that knows how to read.',
        ],
      ),
    ).toBeCloseTo(84.64214891738334, 10);
  });
  it('by hand on a tiny pair', () => {
    // hyp "ab c" -> "abc", ref "abd" (whitespace removed). n=1: hyp 3, ref 3, match 2 (a, b);
    // n=2: {ab, bc} vs {ab, bd}: match 1 of 2; n=3: abc vs abd: 0 of 1; n>=4: no n-grams.
    // avg P = avg R = (2/3 + 1/2 + 0)/3 = 7/18; F2 with P = R is P.
    expect(chrfStats('ab c', 'abd').slice(0, 9)).toEqual([3, 3, 2, 2, 2, 1, 1, 1, 0]);
    expect(sentenceChrf('ab c', 'abd')).toBeCloseTo((100 * 7) / 18, 12);
  });
  it('weights recall twice as much as precision (beta = 2)', () => {
    const recallHeavy = sentenceChrf('revenue grew strongly in the quarter overall', 'revenue grew');
    const precisionHeavy = sentenceChrf('revenue', 'revenue grew strongly');
    expect(recallHeavy).toBeGreaterThan(precisionHeavy);
  });
});

describe('exact match', () => {
  it('normalizes case, punctuation, articles and thousands separators but keeps decimals', () => {
    expect(normalizeAnswer('The $1,200.5 Million!')).toBe('1200.5 million');
    expect(exactMatch('  the answer is 12%', 'Answer is 12 %')).toBe(1);
    expect(exactMatch('1.2', '12')).toBe(0);
    expect(exactMatch('positive', 'negative')).toBe(0);
  });
});

describe('long texts: the fast paths compute exactly what the definitions do', () => {
  it('bit-parallel LCS = the DP table: random lengths across 32-bit words and mask blocks, small alphabets', () => {
    const rng = testRng('lcs');
    for (let t = 0; t < 400; t++) {
      const k = 1 + rng.int(8);
      const a = Array.from({ length: rng.int(200) }, () => String(rng.int(k)));
      const b = Array.from({ length: rng.int(200) }, () => String(rng.int(k)));
      const want = lcsDp(a, b);
      // Block sizes of 1-3 words exercise the carries kept between blocks.
      for (const block of [1, 2, 3, 2048])
        expect(lcsLength(a, b, block), `|a|=${a.length} |b|=${b.length} k=${k} block=${block}`).toBe(want);
    }
  });

  it('ROUGE-L past the cap uses the first maxTokens tokens of each side', () => {
    const a = ['a', 'b', 'c', 'd', 'x', 'y'];
    const b = ['a', 'c', 'b', 'd', 'y', 'x'];
    const capped = rougeL(a, b, 4);
    // First four of each: [a b c d] vs [a c b d], LCS 3: P = R = 3/4.
    expect(capped.precision).toBe(0.75);
    expect(capped.recall).toBe(0.75);
    expect(rouge('a b c d x y', 'a c b d y x', { lcsMaxTokens: 4 }).lcsTruncated).toBe(true);
    expect(rouge('a b c d x y', 'a c b d y x').lcsTruncated).toBe(false);
  });

  it('chrF statistics = string-keyed n-gram counts: small alphabets, astral code points, alphabets too large for numeric keys', () => {
    const rng = testRng('chrf-long');
    const alphabets = [
      'ab',
      'abc d',
      'ab\u{1F4B0}\u{1D11E}c',
      Array.from({ length: 600 }, (_, i) => String.fromCodePoint(0x4e00 + i)).join(''),
    ];
    for (const alphabet of alphabets) {
      const chars = Array.from(alphabet);
      for (let t = 0; t < 40; t++) {
        const text = () => Array.from({ length: rng.int(300) }, () => chars[rng.int(chars.length)]).join('');
        const h = text();
        const r = text();
        expect(chrfStats(h, r), `alphabet of ${chars.length}`).toEqual(chrfStatsRef(h, r));
      }
    }
  });

  it('BLEU n-gram statistics = plain n-gram counts on the 13a tokens', () => {
    const rng = testRng('bleu-long');
    const words = ['revenue', 'rose', '9%', 'to', '$2.31', 'billion', ',', 'the', 'the quarter', 'Q3'];
    for (let t = 0; t < 60; t++) {
      const text = () => Array.from({ length: rng.int(120) }, () => words[rng.int(words.length)]).join(' ');
      const h = text();
      const r = text();
      const tok = (s: string) => (tokenize13a(s.trimEnd()) === '' ? [] : tokenize13a(s.trimEnd()).split(' '));
      const { correct, total } = bleuStats(h, [r]);
      expect({ correct, total }).toEqual(bleuCountsRef(tok(h), tok(r)));
    }
  });
});
