// BLEU as sacrebleu (2.x) computes it with its defaults: tokenize='13a', lowercase=False,
// smooth_method='exp', max_ngram_order=4, brevity penalty over the whole corpus. Scores are 0-100.
//   corpusBleu  = sacrebleu.corpus_bleu(hyps, [refs])            (effective_order=False)
//   sentenceBleu = sacrebleu.sentence_bleu(hyp, [ref])           (effective_order=True)
// Algorithm (from sacrebleu's documentation and the mteval-v13a.pl it reproduces):
//  13a tokenizer: drop "<skipped>", join "-\n", newlines to spaces, unescape &quot; &amp; &lt; &gt;;
//  pad with spaces; put spaces around every char in { | } ~ [ \ ] ^ _ ` space ! " # $ % & ( ) * + :
//  ; < = > ? @ /; split '.' and ',' off unless both neighbours are digits ("1,200.5" stays whole);
//  split '-' after a digit; collapse whitespace. Segments are right-stripped first.
//  Statistics: for n = 1..4 clipped n-gram matches and hypothesis n-gram totals; hypothesis length
//  and the length of the reference closest in length (ties -> shorter), summed over the corpus.
//  Score: no matches at all -> 0. Else for each n (stopping at the first n with no hypothesis
//  n-grams) p_n = 100*correct/total, or when correct = 0 with exp smoothing p_n = 100/(2^k*total)
//  for the k-th such order. BLEU = BP * exp(mean of log p_n over the order used), log 0 taken as
//  -9999999999; BP = exp(1 - ref/sys) when sys < ref (0 when sys = 0), else 1.

const MAX_ORDER = 4;

/** sacrebleu's Tokenizer13a. */
export function tokenize13a(line: string): string {
  let s = line.replaceAll('<skipped>', '').replaceAll('-\n', '').replaceAll('\n', ' ');
  if (s.includes('&')) {
    s = s.replaceAll('&quot;', '"').replaceAll('&amp;', '&').replaceAll('&lt;', '<').replaceAll('&gt;', '>');
  }
  s = ` ${s} `;
  s = s.replace(/([{-~[-` -&(-+:-@/])/g, ' $1 ');
  s = s.replace(/([^0-9])([.,])/g, '$1 $2 ');
  s = s.replace(/([.,])([^0-9])/g, ' $1 $2');
  s = s.replace(/([0-9])(-)/g, '$1 $2 ');
  return s
    .split(/\s+/)
    .filter((t) => t.length > 0)
    .join(' ');
}

export interface BleuStats {
  correct: number[];
  total: number[];
  sysLen: number;
  refLen: number;
}

export interface BleuResult extends BleuStats {
  score: number;
  precisions: number[];
  bp: number;
}

/** Counts of the n-grams of each order 1..4 (index n-1); keys are the space-joined tokens, cut from one joined string. */
function ngrams(tokens: string[]): Map<string, number>[] {
  const joined = tokens.join(' ');
  const start = new Uint32Array(tokens.length + 1);
  for (let i = 0; i < tokens.length; i++) start[i + 1] = start[i]! + tokens[i]!.length + 1;
  const out: Map<string, number>[] = [];
  for (let n = 1; n <= MAX_ORDER; n++) {
    const counts = new Map<string, number>();
    for (let i = 0; i + n <= tokens.length; i++) {
      const key = joined.slice(start[i], start[i + n]! - 1);
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    out.push(counts);
  }
  return out;
}

function prep(s: string): string[] {
  const t = tokenize13a(s.trimEnd());
  return t.length === 0 ? [] : t.split(' ');
}

/** Sufficient statistics of one hypothesis against one or more references. */
export function bleuStats(hypothesis: string, references: string[]): BleuStats {
  const hyp = prep(hypothesis);
  const refs = references.map(prep);
  // Closest reference length; ties go to the shorter reference.
  let refLen = -1;
  let bestDiff = Infinity;
  const maxRef = Array.from({ length: MAX_ORDER }, () => new Map<string, number>());
  for (const r of refs) {
    const diff = Math.abs(r.length - hyp.length);
    if (diff < bestDiff || (diff === bestDiff && r.length < refLen)) {
      bestDiff = diff;
      refLen = r.length;
    }
    ngrams(r).forEach((counts, n) => {
      for (const [k, c] of counts) maxRef[n]!.set(k, Math.max(maxRef[n]!.get(k) ?? 0, c));
    });
  }
  const correct = new Array<number>(MAX_ORDER).fill(0);
  const total = new Array<number>(MAX_ORDER).fill(0);
  ngrams(hyp).forEach((counts, n) => {
    for (const [k, c] of counts) {
      correct[n]! += Math.min(c, maxRef[n]!.get(k) ?? 0);
      total[n]! += c;
    }
  });
  return { correct, total, sysLen: hyp.length, refLen: Math.max(refLen, 0) };
}

function myLog(x: number): number {
  return x === 0 ? -9999999999 : Math.log(x);
}

/** BLEU from summed statistics (sacrebleu's compute_bleu with exp smoothing). */
export function bleuFromStats(stats: BleuStats, effectiveOrder = false): BleuResult {
  const { correct, total, sysLen, refLen } = stats;
  const precisions = new Array<number>(MAX_ORDER).fill(0);
  let bp = 1;
  if (sysLen < refLen) bp = sysLen > 0 ? Math.exp(1 - refLen / sysLen) : 0;
  if (!correct.some((c) => c > 0)) return { ...stats, score: 0, precisions, bp };
  let smooth = 1;
  let order = MAX_ORDER;
  for (let n = 1; n <= MAX_ORDER; n++) {
    if (total[n - 1] === 0) break;
    if (effectiveOrder) order = n;
    if (correct[n - 1] === 0) {
      smooth *= 2;
      precisions[n - 1] = 100 / (smooth * total[n - 1]!);
    } else {
      precisions[n - 1] = (100 * correct[n - 1]!) / total[n - 1]!;
    }
  }
  let sum = 0;
  for (let i = 0; i < order; i++) sum += myLog(precisions[i]!);
  return { ...stats, score: bp * Math.exp(sum / order), precisions, bp };
}

/**
 * Corpus BLEU. `references[k][i]` is the k-th reference stream's line for hypothesis i (the same
 * layout as sacrebleu.corpus_bleu); pass `[refs]` for a single reference per hypothesis.
 */
export function corpusBleu(hypotheses: string[], references: string[][]): BleuResult {
  for (const stream of references) {
    if (stream.length !== hypotheses.length) {
      throw new Error(`corpusBleu: ${hypotheses.length} hypotheses but a reference stream of ${stream.length}`);
    }
  }
  return bleuFromStats(
    sumBleuStats(
      hypotheses.map((h, i) =>
        bleuStats(
          h,
          references.map((r) => r[i]!),
        ),
      ),
    ),
    false,
  );
}

/** Corpus statistics: the per-example statistics summed (so sentence and corpus BLEU share one pass). */
export function sumBleuStats(all: readonly BleuStats[]): BleuStats {
  const sum: BleuStats = { correct: [0, 0, 0, 0], total: [0, 0, 0, 0], sysLen: 0, refLen: 0 };
  for (const s of all) {
    for (let n = 0; n < MAX_ORDER; n++) {
      sum.correct[n]! += s.correct[n]!;
      sum.total[n]! += s.total[n]!;
    }
    sum.sysLen += s.sysLen;
    sum.refLen += s.refLen;
  }
  return sum;
}

/** Sentence BLEU (sacrebleu.sentence_bleu defaults: exp smoothing, effective order). */
export function sentenceBleu(hypothesis: string, references: string[]): BleuResult {
  return bleuFromStats(bleuStats(hypothesis, references), true);
}
